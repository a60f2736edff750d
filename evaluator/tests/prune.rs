//! `evaluator prune` on real ARC-Easy dev questions with the default model: the curve starts at the
//! full model's accuracy (= `evaluator baseline`), each step's path is the previous one minus the
//! removed layer and scores exactly what `evaluator baseline --path` gives it; the curve is cached
//! (a shallower request reads it, a deeper one continues it) and written as JSON, Markdown and SVG;
//! the first step's removal is the best of all thirty (checked with the plain evaluation).

use std::path::Path;
use std::process::{Command, Output};

use drllm_contract::RewardMode;
use drllm_core::tasks::reward::RewardOptions;
use drllm_core::tasks::score_example;
use drllm_engine::{LayerPath, LoadOptions};
use drllm_tasks::load_dataset;
use serde_json::Value;

const L: usize = 30;

/// Runs the evaluator with the pruning cache in `cache` (so earlier runs cannot answer for it).
fn evaluator(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evaluator"))
        .args(args)
        .env("DRLLM_CACHE", cache)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn json_out(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Greedy: no other single removal from the full path ranks higher (more correct, then a higher
/// summed gold margin, then a lower layer) than the step's, evaluated here with the plain
/// evaluation (no prefix reuse) on the same three questions.
fn first_step_is_the_best_removal(model: &str, step: &Value) {
    let lm = drllm_engine::load(model, &LoadOptions::default()).unwrap();
    let exs = load_dataset(&"arc_easy".parse().unwrap(), "dev", Some(3), false)
        .unwrap()
        .examples;
    let opts = RewardOptions::for_model(&lm, RewardMode::ChoiceLoglik);
    let score = |skip: usize| {
        let counts: Vec<u8> = (0..L).map(|l| u8::from(l != skip)).collect();
        let path = LayerPath::from_counts(&counts).unwrap();
        exs.iter().fold((0usize, 0f64), |(c, m), ex| {
            let o = score_example(&lm, ex, &path, &opts).unwrap();
            (c + usize::from(o.correct), m + o.margin.unwrap())
        })
    };
    let chosen = step["removed_layer"].as_u64().unwrap() as usize;
    let (correct, margin) = score(chosen);
    assert_eq!(step["correct"], correct);
    let mean = step["mean_margin"].as_f64().unwrap();
    assert!(
        (mean - margin / 3.0).abs() < 1e-9,
        "{mean} vs {}",
        margin / 3.0
    );
    for l in (0..L).filter(|&l| l != chosen) {
        let (c, m) = score(l);
        let ranks_lower =
            c < correct || (c == correct && (m < margin || (m == margin && l > chosen)));
        assert!(
            ranks_lower,
            "removing {l} ({c}, {m}) beats removing {chosen} ({correct}, {margin})"
        );
    }
}

fn lens(v: &Value) -> Vec<u64> {
    v["curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["len"].as_u64().unwrap())
        .collect()
}

fn path_of(p: &Value) -> Vec<u64> {
    p["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap())
        .collect()
}

/// `prev` minus `removed` (which it must hold).
fn without(prev: &[u64], removed: u64) -> Vec<u64> {
    assert!(prev.contains(&removed), "{removed} not in {prev:?}");
    prev.iter().copied().filter(|&l| l != removed).collect()
}

#[test]
fn prune_curve_agrees_with_baseline_and_is_cached() {
    let Some(model) = drllm_engine::testing::default_model_for_tests() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("out");
    let model = model.to_str().unwrap();
    let data = ["--model", model, "--dataset", "arc_easy", "--split", "dev"];
    let data = [&data[..], &["--limit", "3"]].concat();
    let prune = |down_to: &str| {
        let args = [
            &["prune"][..],
            &data,
            &["--down-to", down_to, "--out", out.to_str().unwrap()],
        ]
        .concat();
        json_out(&evaluator(&cache, &args))
    };
    let v = prune("29");
    assert_eq!(lens(&v), [30, 29]);
    assert_eq!(v["source"], "computed");
    assert_eq!(
        (v["examples"].as_u64(), v["num_layers"].as_u64()),
        (Some(3), Some(30))
    );
    let curve = v["curve"].as_array().unwrap();
    let full: Vec<u64> = (0..L as u64).collect();
    assert_eq!(path_of(&curve[0]), full);
    assert_eq!(curve[0]["removed_layer"], Value::Null);

    // The first point is the full model: exactly `evaluator baseline`.
    let base = |path: Option<String>| {
        let mut args = [&["baseline"][..], &data].concat();
        let path = path.unwrap_or_default();
        if !path.is_empty() {
            args.extend(["--path", &path]);
        }
        json_out(&evaluator(&cache, &args))
    };
    let b = base(None);
    assert_eq!(curve[0]["accuracy"], b["acc"], "{b}");
    assert_eq!(curve[0]["correct"], b["correct"]);

    // Each step: the previous path minus the removed layer, scored as the baseline scores it.
    let p29 = without(&full, curve[1]["removed_layer"].as_u64().unwrap());
    assert_eq!(path_of(&curve[1]), p29);
    let text: Vec<String> = p29.iter().map(u64::to_string).collect();
    let b = base(Some(text.join(",")));
    assert_eq!(b["path_len"], 29);
    assert_eq!(curve[1]["accuracy"], b["acc"], "{b}");
    assert_eq!(curve[1]["correct"], b["correct"]);
    assert!(curve.iter().all(|p| p["mean_margin"].is_f64()));
    first_step_is_the_best_removal(model, &curve[1]);

    // Files: the JSON is stdout's, the table lists every length, the plot is an SVG with a curve.
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("prune.json")).unwrap()).unwrap();
    assert_eq!(file["curve"], v["curve"]);
    let md = std::fs::read_to_string(out.join("prune.md")).unwrap();
    for n in ["| 30 |", "| 29 |"] {
        assert!(md.contains(n), "{md}");
    }
    let svg = std::fs::read_to_string(out.join("prune.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("full model"),
        "{}",
        &svg[..200.min(svg.len())]
    );

    // The cache: a shallower request is answered from it, a deeper one continues it.
    let cached = prune("30");
    assert_eq!(cached["source"], "cache");
    assert_eq!(cached["curve"].as_array().unwrap()[..], curve[..1]);
    let deeper = prune("28");
    assert_eq!(deeper["source"], "cache-extended");
    assert_eq!(lens(&deeper), [30, 29, 28]);
    let d = deeper["curve"].as_array().unwrap();
    assert_eq!(d[..2], curve[..]);
    assert_eq!(
        path_of(&d[2]),
        without(&p29, d[2]["removed_layer"].as_u64().unwrap())
    );
    let files = std::fs::read_dir(cache.join("prune")).unwrap().count();
    assert_eq!(files, 1, "one curve, one cache file");

    // Bad depth: refused with the reason.
    let o = evaluator(
        &cache,
        &[&["prune"][..], &data, &["--down-to", "31", "--out", "x"]].concat(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("more than the model's 30 layers"),
        "{err}"
    );
}
