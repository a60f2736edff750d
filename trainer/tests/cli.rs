//! `trainer train` on the real default model: a short run writes the checkpoint, its config and
//! per-epoch metrics, and `--resume` continues it from the feature cache; bad inputs (missing or
//! empty files, files that are not records, records of another model, a checkpoint of another
//! model) stop with a message that names the problem.

use std::path::Path;
use std::process::{Command, Output};

use drllm_contract::SearchRecord;
use drllm_contract::{RewardMode, RewardSettings};
use drllm_core::router::{RouterConfig, Routers, TrainingConfig, CONFIG_FILE};
use drllm_records::write_parquet;
use drllm_tasks::load_dataset;

fn trainer(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .args(["--cache-dir", cache.to_str().unwrap()])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// ARC-Easy train records for the model with `fingerprint`, best paths varied per question.
fn records(n: usize, fingerprint: &str) -> Vec<SearchRecord> {
    let spec = "arc_easy".parse().unwrap();
    let data = load_dataset(&spec, "train", Some(n), false).unwrap();
    data.examples
        .iter()
        .enumerate()
        .map(|(i, ex)| {
            let mut r = drllm_tests::search_record(ex, "w", fingerprint);
            r.question = drllm_tasks::prompts::loglik_context(ex);
            let mut d = vec![1u8; 30];
            d[i % 30] = 0;
            d[(i * 7 + 3) % 30] = 2;
            r.best_path = drllm_engine::LayerPath::from_counts(&d)
                .unwrap()
                .layers()
                .to_vec();
            r.best_decisions = d;
            r
        })
        .collect()
}

fn write(path: &Path, recs: &[SearchRecord]) -> String {
    write_parquet(path, recs).unwrap();
    path.to_str().unwrap().to_string()
}

fn real_fingerprint() -> Option<String> {
    let path = drllm_engine::testing::default_model_for_tests()?;
    let loc = drllm_engine::resolve(path.to_str().unwrap()).unwrap();
    Some(drllm_engine::loader::fingerprint(&loc).unwrap())
}

#[test]
fn trains_resumes_and_refuses_bad_inputs() {
    let Some(fp) = real_fingerprint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s);
    let cache = p("cache");
    let good = write(&p("good.parquet"), &records(24, &fp));
    let out = p("ckpt");
    let outs = out.to_str().unwrap();

    // `train --records good --out ckpt` plus `extra`.
    let train = |extra: &[&str]| {
        trainer(
            &[&["train", "--records", &good, "--out", outs][..], extra].concat(),
            &cache,
        )
    };
    let o = train(&["--epochs", "2", "--val-fraction", "0.25"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["features_computed"], 24, "{summary}");
    assert_eq!(
        summary["train_examples"].as_u64().unwrap() + summary["val_examples"].as_u64().unwrap(),
        24
    );
    let (cfg, routers) = RouterConfig::load(&out).unwrap();
    assert_eq!(
        (
            cfg.header.model_fingerprint.as_str(),
            cfg.header.num_layers,
            cfg.header.model_hidden_size
        ),
        (fp.as_str(), 30, 576)
    );
    assert_eq!((cfg.history.len(), routers.num_layers()), (2, 30));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 2, "{csv}");

    // Without --resume an existing checkpoint is not overwritten; with it, training goes on
    // from the cached features.
    let o = train(&["--epochs", "3"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    let o = train(&["--epochs", "3", "--val-fraction", "0.25", "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            summary["features_computed"].as_u64(),
            summary["epochs"].as_u64()
        ),
        (Some(0), Some(3)),
        "{summary}"
    );
    let (cfg, _) = RouterConfig::load(&out).unwrap();
    assert_eq!(
        cfg.header.reward.map(|r| r.mode),
        Some(RewardMode::ChoiceLoglik),
        "the records' common reward settings are recorded"
    );
    // Records searched with another reward are tokenized differently: not resumed on.
    let mut generate = records(24, &fp);
    for r in &mut generate {
        r.settings.reward = RewardSettings::new(RewardMode::Generate);
    }
    let generate = write(&p("generate.parquet"), &generate);
    let o = trainer(
        &[
            "train",
            "--records",
            &generate,
            "--out",
            outs,
            "--epochs",
            "3",
            "--val-fraction",
            "0.25",
            "--resume",
        ],
        &cache,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("was trained on records searched with"),
        "{}",
        stderr(&o)
    );

    let fails = |args: &[&str], want: &str| {
        let o = trainer(args, &cache);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&o).contains(want),
            "{args:?}: want `{want}` in:\n{}",
            stderr(&o)
        );
    };
    let o2 = p("o2");
    let o2 = o2.to_str().unwrap();
    fails(
        &[
            "train",
            "--records",
            &p("nope").to_string_lossy(),
            "--out",
            o2,
        ],
        "no such file",
    );
    std::fs::write(p("junk.parquet"), "not parquet").unwrap();
    fails(
        &[
            "train",
            "--records",
            &p("junk.parquet").to_string_lossy(),
            "--out",
            o2,
        ],
        "junk.parquet",
    );
    // A Parquet file, but not search records.
    let batch = arrow_array::RecordBatch::try_from_iter([(
        "x",
        std::sync::Arc::new(arrow_array::Int32Array::from(vec![1, 2])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    let f = std::fs::File::create(p("table.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    fails(
        &[
            "train",
            "--records",
            &p("table.parquet").to_string_lossy(),
            "--out",
            o2,
        ],
        "schema version",
    );
    let empty = write(&p("empty.parquet"), &[]);
    fails(
        &["train", "--records", &empty, "--out", o2],
        "holds no search records",
    );
    let other = write(&p("other.parquet"), &records(3, &"0".repeat(32)));
    fails(
        &["train", "--records", &other, "--out", o2],
        "of another model",
    );
    // A checkpoint of another model is not resumed.
    let foreign = p("foreign");
    let tc: TrainingConfig = cfg.training.clone();
    RouterConfig::new("x", &"0".repeat(32), 30, 576, 8, tc)
        .save(&foreign, &Routers::init(30, 576, 0).unwrap())
        .unwrap();
    assert!(foreign.join(CONFIG_FILE).is_file());
    fails(
        &[
            "train",
            "--records",
            &good,
            "--out",
            &foreign.to_string_lossy(),
            "--resume",
        ],
        "was trained on model",
    );
}
