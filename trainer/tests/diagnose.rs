//! `trainer diagnose`: the per-layer regressions find signal where a label depends on the input,
//! none in noise, and say "constant" for a label with one value; on real probe records of the
//! default model the command writes its three files with keep rates that match the records, and
//! refuses records of a tree search.

use std::path::Path;
use std::process::Command;

use drllm_records::read_records;
use drllm_tasks::{load_dataset, prompts};
use drllm_trainer::diagnose::{diagnose, Options, Probed};
use rand::{Rng, SeedableRng};

#[test]
fn regressions_find_signal_in_signal_and_none_in_noise() {
    let (n, d) = (400, 32);
    let spec = "arc_easy".parse().unwrap();
    let data = load_dataset(&spec, "train", Some(n), false).unwrap();
    let records: Vec<_> = data
        .examples
        .iter()
        .map(|ex| {
            let mut r = drllm_tests::search_record(ex, "w", "fp");
            r.question = prompts::loglik_context(ex);
            r
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let x: Vec<f32> = (0..n * d).map(|_| rng.random::<f32>() - 0.5).collect();
    let (mut single, mut pair) = (Vec::new(), Vec::new());
    for q in 0..n {
        let informative = x[q * d] + 0.3 * (rng.random::<f32>() - 0.5) > 0.0;
        single.push(vec![informative, rng.random::<bool>(), true]);
        pair.push(vec![false, true]);
    }
    let p = Probed {
        records,
        layers: 3,
        single,
        pair,
    };
    let o = Options {
        folds: 5,
        resamples: 300,
        seed: 1,
    };
    let diag = diagnose(&p, &[x.clone(), x.clone(), x], d, o);
    let v: Vec<&str> = diag.per_layer.iter().map(|r| r.verdict).collect();
    assert_eq!(v, ["signal", "none", "constant"], "{diag:#?}");
    assert!(diag.per_layer[0].auc.unwrap() > 0.8, "{diag:#?}");
    // Noise: an AUC near 0.5 may still clear it by chance; the log-loss gain over the base
    // rate does not, and the verdict needs both.
    let noise = &diag.per_layer[1];
    assert!((noise.auc.unwrap() - 0.5).abs() < 0.1, "{noise:?}");
    assert!(noise.gain_ci[0] <= 0.0, "{noise:?}");
    assert_eq!(diag.per_layer[2].keep_rate, 1.0);
    assert_eq!(diag.single_skips[0], (2, 1.0));
    assert_eq!(diag.pair_skips[0], (1, 1.0));
    assert!(
        diag.verdict.contains("1 of 3 layers ([0])"),
        "{}",
        diag.verdict
    );
}

fn run(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(drllm_tests::bin(bin))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn diagnose_reads_real_probe_records_and_refuses_tree_searches() {
    drllm_engine::testing::default_model_for_tests()
        .expect("the default model is missing: run scripts/fetch-model.sh");
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let search = |out: &Path, extra: &[&str]| {
        let mut args = vec!["search", "--dataset", "arc_easy", "--out", s(out)];
        args.extend(extra);
        let o = run("worker", &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    search(
        &p("probe"),
        &[
            "--limit",
            "3",
            "--strategy",
            "probe-skips",
            "--success",
            "agree",
            "--lanes",
            "2",
        ],
    );
    let o = run(
        "trainer",
        &[
            "diagnose",
            "--records",
            s(&p("probe")),
            "--out",
            s(&p("diag")),
            "--cache-dir",
            s(&p("cache")),
            "--resamples",
            "50",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("diag/diagnosis.json")).unwrap()).unwrap();
    let layers = json["per_layer"].as_array().unwrap();
    assert_eq!((layers.len(), json["questions"].as_u64()), (30, Some(3)));
    assert_eq!(json["success"], "agree");
    let records = read_records(&p("probe")).unwrap();
    // Under `agree` the full path is always good; the record still says whether it is right.
    for r in &records {
        let margin = r.original_margin.unwrap();
        assert_eq!(r.original_correct, margin > 0.0, "{}", r.example_id);
        assert!(r.good_paths.contains(&(0..30).collect::<Vec<u16>>()));
    }
    for (l, r) in layers.iter().enumerate() {
        let without: Vec<u16> = (0..30).filter(|&k| k != l as u16).collect();
        let kept = records
            .iter()
            .filter(|r| r.good_paths.contains(&without))
            .count();
        assert_eq!(
            r["keep_rate"].as_f64().unwrap(),
            kept as f64 / 3.0,
            "layer {l}"
        );
    }
    let md = std::fs::read_to_string(p("diag/diagnosis.md")).unwrap();
    assert!(
        md.contains("| 29 |") && md.contains("Safest double skips"),
        "{md}"
    );
    assert!(std::fs::read_to_string(p("diag/diagnosis.svg"))
        .unwrap()
        .contains("<svg"));

    search(&p("mcts"), &["--limit", "1", "--num-simulations", "3"]);
    let o = run(
        "trainer",
        &[
            "diagnose",
            "--records",
            s(&p("mcts")),
            "--out",
            s(&p("diag2")),
            "--cache-dir",
            s(&p("cache")),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("arc_easy/") && err.contains("--strategy probe-skips"),
        "{err}"
    );
}
