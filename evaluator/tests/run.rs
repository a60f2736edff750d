//! Routed inference on the real default model: routers forced to execute every layer give exactly
//! the static model's outcome; routers that skip layer k give exactly the static outcome of the
//! path without k (so k is never computed into it); the budget's extremes skip or repeat every
//! layer. `evaluator run` writes its report (with the oracle accuracy of given search records)
//! and paired intervals, and exits 2 below `--min-routed-accuracy`; bad checkpoints (missing,
//! another model's, another depth) are refused with a clear message. `--prune-split` adds the
//! static-pruned baseline (the greedy-pruned path of the routers' length, chosen on another split,
//! which must differ from the evaluated one).

use std::process::Command;

use drllm_contract::{Example, RewardMode};
use drllm_contract::{PromptStyle, RewardSettings};
use drllm_core::router::{evaluate_routed, Budget, RouterConfig, Routers};
use drllm_core::tasks::reward::RewardOptions;
use drllm_core::tasks::score_example;
use drllm_engine::{LayerPath, LoadOptions, LoadedModel};
use drllm_tasks::load_dataset;

const L: usize = 30;
const D: usize = 576;

fn model() -> Option<LoadedModel> {
    drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
}

fn examples(n: usize) -> Vec<Example> {
    load_dataset(&"arc_easy".parse().unwrap(), "test", Some(n), false)
        .unwrap()
        .examples
}

fn constant_routers(skip: &[usize]) -> Routers {
    drllm_tests::constant_routers(L, D, skip)
}

fn routed(
    lm: &LoadedModel,
    ex: &Example,
    opts: &RewardOptions,
    r: &Routers,
    b: Budget,
) -> (drllm_core::tasks::Outcome, LayerPath) {
    evaluate_routed(lm, ex, opts, |layer, x| r.decide(layer, x, 8, b)).unwrap()
}

#[test]
fn forced_paths_equal_the_static_model_on_them() {
    let Some(lm) = model() else { return };
    let trained_like = Routers::init(L, D, 7).unwrap();
    let skip7 = constant_routers(&[7]);
    let without7: Vec<u8> = (0..L).map(|l| u8::from(l != 7)).collect();
    let without7 = LayerPath::from_counts(&without7).unwrap();
    for mode in [RewardMode::ChoiceLoglik, RewardMode::Generate] {
        let opts = RewardOptions::for_model(&lm, mode);
        for ex in examples(3) {
            // Budget 0.5 executes every layer whatever the routers say: the static model.
            let (o, path) = routed(&lm, &ex, &opts, &trained_like, Budget(0.5));
            assert_eq!(path, LayerPath::full(L));
            let s = score_example(&lm, &ex, &path, &opts).unwrap();
            assert_eq!(format!("{o:?}"), format!("{s:?}"), "{} {mode}", ex.id);
            // Routers that skip layer 7: exactly the path without it.
            let (o, path) = routed(&lm, &ex, &opts, &skip7, Budget::default());
            assert_eq!(path, without7);
            let s = score_example(&lm, &ex, &without7, &opts).unwrap();
            assert_eq!(format!("{o:?}"), format!("{s:?}"), "{} {mode}", ex.id);
        }
    }
    // The budget's extremes: every layer skipped, every layer repeated.
    let opts = RewardOptions::for_model(&lm, RewardMode::ChoiceLoglik);
    let ex = &examples(1)[0];
    let (_, p) = routed(&lm, ex, &opts, &trained_like, Budget(-1.0));
    assert!(p.is_empty(), "{p}");
    let (_, p) = routed(&lm, ex, &opts, &trained_like, Budget(1.0));
    assert_eq!(p.counts(), vec![2u8; L]);
}

fn evaluator(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evaluator"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

#[test]
fn run_writes_the_report_and_refuses_bad_checkpoints() {
    let Some(lm) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s).to_string_lossy().to_string();
    let ckpt = dir.path().join("skip7");
    RouterConfig::new("default", &lm.fingerprint, L, D, 8, drllm_tests::training())
        .save(&ckpt, &constant_routers(&[7]))
        .unwrap();
    let base = [
        "run",
        "--dataset",
        "arc_easy",
        "--limit",
        "4",
        "--budget",
        "-0.5",
    ];
    // Search records of three of the four questions, two of them found: oracle 2/3.
    let recs: Vec<_> = examples(3)
        .iter()
        .enumerate()
        .map(|(i, ex)| {
            let mut r = drllm_tests::search_record(ex, "w", &lm.fingerprint);
            r.found = i != 1;
            r
        })
        .collect();
    drllm_records::write_parquet(&dir.path().join("oracle.parquet"), &recs).unwrap();
    let o = evaluator(
        &[
            &base[..],
            &[
                "--routers",
                &p("skip7"),
                "--out",
                &p("rep"),
                "--oracle",
                &p("oracle.parquet"),
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("rep/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["overall"]["examples"], 4);
    assert_eq!(report["overall"]["mean_path_len"], 29.0);
    assert_eq!(report["overall"]["oracle_examples"], 3);
    let oracle = report["overall"]["oracle_accuracy"].as_f64().unwrap();
    assert!((oracle - 2.0 / 3.0).abs() < 1e-9, "{oracle}");
    assert_eq!(
        report["decisions_per_layer"][7],
        serde_json::json!([4, 0, 0])
    );
    assert_eq!(
        report["decisions_per_layer"][8],
        serde_json::json!([0, 4, 0])
    );
    assert_eq!(report["static_pruned"], serde_json::Value::Null);
    assert_eq!(report["overall"]["routed_minus_static"]["n"], 4);
    assert_eq!(
        report["overall"]["routed_minus_static_pruned"],
        serde_json::Value::Null
    );
    let md = std::fs::read_to_string(dir.path().join("rep/report.md")).unwrap();
    assert!(md.contains("| arc_easy | 4 |"), "{md}");
    assert!(
        md.contains("- all: routed − static: ") && md.contains("(95% paired bootstrap, n = 4)"),
        "{md}"
    );
    let svg = std::fs::read_to_string(dir.path().join("rep/decisions.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<rect"),
        "{}",
        &svg[..200.min(svg.len())]
    );
    let lines = std::fs::read_to_string(dir.path().join("rep/examples.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4);
    // Scripted gate: exit code 2 below the wanted accuracy.
    let o = evaluator(
        &[
            &base[..],
            &[
                "--routers",
                &p("skip7"),
                "--out",
                &p("rep2"),
                "--min-routed-accuracy",
                "1.01",
            ],
        ]
        .concat(),
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let fails = |ckpt: &str, want: &str| {
        let o = evaluator(&[&base[..], &["--routers", ckpt, "--out", &p("bad")]].concat());
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            !o.status.success() && err.contains(want),
            "want `{want}` in:\n{err}"
        );
    };
    fails(&p("nothing-here"), "router_config.json is missing");
    RouterConfig::new("other", &"0".repeat(32), L, D, 8, drllm_tests::training())
        .save(&dir.path().join("foreign"), &constant_routers(&[]))
        .unwrap();
    fails(&p("foreign"), "was trained on model");
    RouterConfig::new(
        "default",
        &lm.fingerprint,
        12,
        D,
        8,
        drllm_tests::training(),
    )
    .save(
        &dir.path().join("shallow"),
        &Routers::init(12, D, 0).unwrap(),
    )
    .unwrap();
    fails(&p("shallow"), "12 layers");
    // Routers trained on generate/instruct prompts do not route choice-loglik prompts.
    let mut generate =
        RouterConfig::new("default", &lm.fingerprint, L, D, 8, drllm_tests::training());
    generate.header.reward = Some(RewardSettings {
        style: Some(PromptStyle::Instruct),
        ..RewardSettings::new(RewardMode::Generate)
    });
    generate
        .save(&dir.path().join("generate"), &constant_routers(&[]))
        .unwrap();
    fails(
        &p("generate"),
        "trained on generate / instruct prompts, this run makes choice-loglik / instruct prompts: the routers read the prompt's hidden states, so pass --reward generate --style instruct",
    );
    std::fs::remove_file(dir.path().join("skip7/routers.safetensors")).unwrap();
    fails(&p("skip7"), "routers.safetensors is missing");
}

#[test]
fn run_refuses_a_prune_split_equal_to_the_evaluated_split() {
    // Checked before anything loads: no model or checkpoint needed.
    let o = evaluator(&[
        "run",
        "--routers",
        "nowhere",
        "--dataset",
        "arc_easy",
        "--split",
        "dev",
        "--prune-split",
        "dev",
        "--out",
        "nowhere",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--prune-split dev is the evaluated split"),
        "{err}"
    );
    // The same split of another dataset is fine: it gets past the check (to the missing routers).
    let o = evaluator(&[
        "run",
        "--routers",
        "nowhere",
        "--dataset",
        "arc_challenge",
        "--split",
        "dev",
        "--prune-dataset",
        "arc_easy",
        "--prune-split",
        "dev",
        "--out",
        "nowhere",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && !err.contains("is the evaluated split"),
        "{err}"
    );
}

/// `run --prune-split dev`: routers that skip layer 7 run 29 layers, so the static-pruned path is
/// the greedy curve's 29-layer path on dev (the one `evaluator prune` reports), scored on every
/// test question exactly as the plain evaluation scores it; the report carries it with paired
/// intervals.
#[test]
fn run_with_prune_split_reports_the_static_pruned_baseline() {
    let Some(lm) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s).to_string_lossy().to_string();
    let model_path = drllm_engine::testing::default_model_for_tests().unwrap();
    RouterConfig::new("default", &lm.fingerprint, L, D, 8, drllm_tests::training())
        .save(&dir.path().join("skip7"), &constant_routers(&[7]))
        .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_evaluator"))
            .arg(args[0])
            .args(["--model", model_path.to_str().unwrap()])
            .args(&args[1..])
            .env("DRLLM_CACHE", p("cache"))
            .output()
            .unwrap()
    };
    let o = run(&[
        "run",
        "--routers",
        &p("skip7"),
        "--budget",
        "-0.5",
        "--dataset",
        "arc_easy",
        "--split",
        "test",
        "--limit",
        "4",
        "--prune-split",
        "dev",
        "--prune-limit",
        "3",
        "--out",
        &p("rep"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    let report: serde_json::Value = serde_json::from_str(&read("rep/report.json")).unwrap();
    let sp = &report["static_pruned"];
    assert_eq!(
        (sp["len"].as_u64(), sp["chosen_on_split"].as_str()),
        (Some(29), Some("dev"))
    );
    assert_eq!(
        (sp["chosen_on_examples"].as_u64(), sp["source"].as_str()),
        (Some(3), Some("computed"))
    );
    // The same path as `evaluator prune` on dev, first 3, down to 29 (now from the cache).
    let o = run(&[
        "prune",
        "--dataset",
        "arc_easy",
        "--split",
        "dev",
        "--limit",
        "3",
        "--down-to",
        "29",
        "--out",
        &p("prune"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let curve: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(curve["source"], "cache");
    assert_eq!(sp["path"], curve["curve"][1]["path"]);
    assert_eq!(
        sp["removed_layers"],
        serde_json::json!([curve["curve"][1]["removed_layer"]])
    );
    assert_eq!(sp["chosen_on_accuracy"], curve["curve"][1]["accuracy"]);

    // Per example, exactly the plain evaluation of that path; the accuracies agree with them.
    let layers: Vec<u16> = serde_json::from_value(sp["path"].clone()).unwrap();
    let path = LayerPath::new(layers, L).unwrap();
    let opts = RewardOptions::for_model(&lm, RewardMode::ChoiceLoglik);
    let lines: Vec<serde_json::Value> = read("rep/examples.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let mut correct = 0;
    for (ex, line) in examples(4).iter().zip(&lines) {
        let want = score_example(&lm, ex, &path, &opts).unwrap().correct;
        assert_eq!(line["static_pruned_correct"], want, "{}", ex.id);
        correct += usize::from(want);
    }
    let all = &report["overall"];
    assert_eq!(all["static_pruned_accuracy"], correct as f64 / 4.0);
    assert_eq!(sp["accuracy"], all["static_pruned_accuracy"]);
    // Paired differences over the 4 questions, intervals around the estimates.
    for key in ["routed_minus_static", "routed_minus_static_pruned"] {
        let d = &all[key];
        assert_eq!(d["n"], 4, "{key}");
        let (lo, diff, hi) = (
            d["lo"].as_f64().unwrap(),
            d["diff"].as_f64().unwrap(),
            d["hi"].as_f64().unwrap(),
        );
        assert!(lo <= diff && diff <= hi, "{key}: {d}");
    }
    let ci = all["static_accuracy_ci"].as_array().unwrap();
    let acc = all["static_accuracy"].as_f64().unwrap();
    assert!(ci[0].as_f64().unwrap() <= acc && acc <= ci[1].as_f64().unwrap());
    let md = read("rep/report.md");
    assert!(
        md.contains("routed − static-pruned: ") && md.contains("(95% paired bootstrap, n = 4)"),
        "{md}"
    );
    assert!(
        md.contains("Static-pruned: 29 of 30 layers, greedy pruning on arc_easy/dev, first 3"),
        "{md}"
    );

    // Out of domain: ARC-Challenge test scored against the path pruned on ARC-Easy dev (the
    // cached curve, nothing chosen on ARC-Challenge).
    let o = run(&[
        "run",
        "--routers",
        &p("skip7"),
        "--budget",
        "-0.5",
        "--dataset",
        "arc_challenge",
        "--split",
        "test",
        "--limit",
        "2",
        "--prune-dataset",
        "arc_easy",
        "--prune-split",
        "dev",
        "--prune-limit",
        "3",
        "--out",
        &p("challenge"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&read("challenge/report.json")).unwrap();
    let ood = &report["static_pruned"];
    assert_eq!(
        (ood["chosen_on_dataset"].as_str(), ood["source"].as_str()),
        (Some("arc_easy"), Some("cache"))
    );
    assert_eq!(
        (&ood["path"], &report["dataset"]),
        (&sp["path"], &"arc_challenge".into())
    );
}
