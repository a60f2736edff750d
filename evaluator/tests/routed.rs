//! Routed inference on the real default model: routers forced to execute every layer give exactly
//! the static model's outcome; routers that skip layer k give exactly the static outcome of the
//! path without k (so k is never computed into it); the budget's extremes skip or repeat every
//! layer. `evaluator run` writes its report (with the oracle accuracy of given search records)
//! and exits 2 below `--min-routed-accuracy`; bad checkpoints (missing, another model's, another
//! depth) are refused with a clear message.

use std::process::Command;

use candle_core::{Device, Tensor};
use drllm_core::router::{evaluate_routed, Budget, RouterConfig, Routers, TrainingConfig};
use drllm_core::tasks::reward::RewardOptions;
use drllm_core::tasks::{evaluate, load_dataset, Example, RewardMode};
use drllm_core::{LayerPath, LoadOptions, LoadedModel};

const L: usize = 30;
const D: usize = 576;

fn model() -> Option<LoadedModel> {
    let p = drllm_core::loader::default_model_for_tests()?;
    Some(drllm_core::load(p.to_str().unwrap(), &LoadOptions::default()).unwrap())
}

fn examples(n: usize) -> Vec<Example> {
    load_dataset(&"arc_easy".parse().unwrap(), "test", Some(n), false)
        .unwrap()
        .examples
}

/// Routers whose decision does not depend on the input: `skip` layers skip, the rest execute.
fn constant_routers(skip: &[usize]) -> Routers {
    let r = Routers::init(L, D, 0).unwrap();
    r.w1.set(&Tensor::zeros((L, 128, D), candle_core::DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    let b2: Vec<f32> = (0..L)
        .flat_map(|l| {
            if skip.contains(&l) {
                [9.0, 0.0, 0.0]
            } else {
                [0.0, 9.0, 0.0]
            }
        })
        .collect();
    r.b2.set(&Tensor::from_vec(b2, (L, 3), &Device::Cpu).unwrap())
        .unwrap();
    r
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
            let s = evaluate(&lm, &ex, &path, &opts).unwrap();
            assert_eq!(format!("{o:?}"), format!("{s:?}"), "{} {mode}", ex.id);
            // Routers that skip layer 7: exactly the path without it.
            let (o, path) = routed(&lm, &ex, &opts, &skip7, Budget::default());
            assert_eq!(path, without7);
            let s = evaluate(&lm, &ex, &without7, &opts).unwrap();
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

fn training() -> TrainingConfig {
    TrainingConfig {
        epochs: 1,
        batch_size: 1,
        grad_accum: 1,
        lr: 1e-3,
        weight_decay: 0.0,
        warmup_fraction: 0.0,
        focal_gamma: 2.0,
        class_beta: 0.999,
        val_fraction: 0.0,
        seed: 0,
        found_only: true,
        min_path_len: 0,
    }
}

#[test]
fn run_writes_the_report_and_refuses_bad_checkpoints() {
    let Some(lm) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s).to_string_lossy().to_string();
    let ckpt = dir.path().join("skip7");
    RouterConfig::new("default", &lm.fingerprint, L, D, 8, training())
        .save(&ckpt, &constant_routers(&[7]))
        .unwrap();
    let base = ["run", "--dataset", "arc_easy", "--limit", "4"];
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
    drllm_core::search::write_parquet(&dir.path().join("oracle.parquet"), &recs, "{}").unwrap();
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
    let md = std::fs::read_to_string(dir.path().join("rep/report.md")).unwrap();
    assert!(md.contains("| arc_easy | 4 |"), "{md}");
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
    RouterConfig::new("other", &"0".repeat(32), L, D, 8, training())
        .save(&dir.path().join("foreign"), &constant_routers(&[]))
        .unwrap();
    fails(&p("foreign"), "was trained on model");
    RouterConfig::new("default", &lm.fingerprint, 12, D, 8, training())
        .save(
            &dir.path().join("shallow"),
            &Routers::init(12, D, 0).unwrap(),
        )
        .unwrap();
    fails(&p("shallow"), "12 layers");
    std::fs::remove_file(dir.path().join("skip7/routers.safetensors")).unwrap();
    fails(&p("skip7"), "routers.safetensors is missing");
}
