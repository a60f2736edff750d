//! The bridges to the official Dr.LLM code, on the real default model:
//! - routers exported with `trainer export --format drllm` load strictly into the official router
//!   modules rebuilt in torch (tests/python/official_router.py), and decide there exactly as ours
//!   on the router inputs of real prompts (float32; bfloat16 loads too);
//! - an official search file (data_generation.py's format) imports into records that
//!   `trainer train` fits, bad paths are refused by question and field, and `coordinator export
//!   --format drllm-json` writes the fields the official train.py reads back unchanged.
//!
//! torch comes from PyPI (.ci/run installs it); without it the torch test fails under CI and
//! skips loudly elsewhere.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use candle_core::Tensor;
use drllm_contract::PromptStyle;
use drllm_contract::{Example, RewardMode};
use drllm_core::router::{evaluate_routed, Budget, RouterConfig, Routers};
use drllm_core::tasks::reward::RewardOptions;
use drllm_engine::{LoadOptions, LoadedModel};
use drllm_tasks::load_dataset;
use drllm_tasks::prompts::generation_prompt;
use serde_json::{json, Value};

const L: usize = 30;
const D: usize = 576;

fn model() -> Option<LoadedModel> {
    drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
}

fn examples(split: &str, n: usize) -> Vec<Example> {
    load_dataset(&"arc_easy".parse().unwrap(), split, Some(n), false)
        .unwrap()
        .examples
}

fn trainer(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs routed inference with `routers` on real prompts; returns each router input (`p{j}.l{i}`,
/// the prompt rows entering layer i) and our decision for it.
fn routed_inputs(
    lm: &LoadedModel,
    routers: &Routers,
) -> (HashMap<String, Tensor>, HashMap<String, u8>) {
    let opts = RewardOptions::for_model(lm, RewardMode::ChoiceLoglik);
    let (mut inputs, mut ours) = (HashMap::new(), HashMap::new());
    for (j, ex) in examples("test", 4).iter().enumerate() {
        evaluate_routed(lm, ex, &opts, |layer, x| {
            let d = routers.decide(layer, x, 8, Budget::default())?;
            let key = format!("p{j}.l{layer}");
            inputs.insert(key.clone(), x.contiguous()?);
            ours.insert(key, d);
            Ok(d)
        })
        .unwrap();
    }
    (inputs, ours)
}

#[test]
fn exported_routers_decide_in_torch_as_ours() {
    let Some(lm) = model() else { return };
    if !drllm_tests::python_has("torch", "torch safetensors")
        || !drllm_tests::python_has("safetensors", "safetensors")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    // Freshly initialised routers decide all three ways on real inputs.
    let routers = Routers::init(L, D, 11).unwrap();
    RouterConfig::new("default", &lm.fingerprint, L, D, 8, drllm_tests::training())
        .save(&ckpt, &routers)
        .unwrap();
    let (inputs, ours) = routed_inputs(&lm, &routers);
    let classes: std::collections::BTreeSet<u8> = ours.values().copied().collect();
    assert!(
        classes.len() >= 2,
        "the routers decide one way only: {classes:?}"
    );
    let inputs_file = dir.path().join("inputs.safetensors");
    candle_core::safetensors::save(&inputs, &inputs_file).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/official_router.py"
    );
    for (dtype, exact) in [("f32", true), ("bf16", false)] {
        let out = dir.path().join(format!("routers-{dtype}.safetensors"));
        let o = trainer(&[
            "export",
            "--format",
            "drllm",
            s(&ckpt),
            "--out",
            s(&out),
            "--dtype",
            dtype,
        ]);
        assert!(o.status.success());
        let o = Command::new("python3")
            .args([script, s(&out), s(&inputs_file)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let theirs = v["decisions"].as_object().unwrap();
        assert_eq!(theirs.len(), ours.len());
        let same = ours
            .iter()
            .filter(|(k, &d)| theirs[k.as_str()].as_u64() == Some(u64::from(d)))
            .count();
        eprintln!(
            "{dtype} ({}): {same} of {} decisions equal",
            v["dtype"],
            ours.len()
        );
        if exact {
            assert_eq!(
                same,
                ours.len(),
                "float32 routers must decide exactly as ours"
            );
        } else {
            assert_eq!(v["dtype"], "torch.bfloat16");
        }
    }
}

/// An official search file over real ARC-Easy train questions for this model: question 0's best
/// path skips layer 5, question 1's repeats layer 9, question 2's runs layer 3 three times
/// (which neither our engine nor the official train.py's 3-way labels can hold).
fn official_file(lm: &LoadedModel) -> Value {
    let exs = examples("train", 3);
    let full: Vec<u16> = (0..L as u16).collect();
    let skip5: Vec<u16> = full.iter().copied().filter(|&l| l != 5).collect();
    let rep9: Vec<u16> = full
        .iter()
        .flat_map(|&l| if l == 9 { vec![9, 9] } else { vec![l] })
        .collect();
    let rep3x3: Vec<u16> = full
        .iter()
        .flat_map(|&l| if l == 3 { vec![3, 3, 3] } else { vec![l] })
        .collect();
    let _ = lm;
    json!({
        "exp": "mcts_parallel", "num_simulations": 200, "exploration_constant": 1.8,
        "length_penalty": 3.0, "random_prob": 0.1, "max_path_length": 40, "world_size": 1,
        "num_samples": 3, "timestamp": "2025-11-30 21:15:00",
        "model_name": "HuggingFaceTB/SmolLM2-135M-Instruct", "dataset": "arc_easy",
        "visited_samples": 3, "skip_size": [1, 2], "repeat_size": [1], "repeat_count": [0, 1],
        "original_correct": [1, 0, 1], "mcts_correct": [1, 1, 1],
        "improved_cases": [false, true, false], "path_lengths": [29, 31, 32],
        "unique_layers": [29, 30, 30],
        "best_path": [skip5, rep9, rep3x3],
        "good_paths": [[full, skip5], [rep9], [full, rep3x3]],
        "best_response": exs.iter().map(|e| e.answer.clone()).collect::<Vec<_>>(),
        "questions": exs.iter().map(|e| generation_prompt(e, PromptStyle::Instruct).text).collect::<Vec<_>>(),
    })
}

#[test]
fn official_searches_import_train_and_export_back() {
    let Some(lm) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let file = p("arc_easy_results.json");
    let official = official_file(&lm);
    std::fs::write(&file, serde_json::to_string_pretty(&official).unwrap()).unwrap();

    // Question 2's path is refused by question and field, unless told to skip it.
    let o = trainer(&["import-drllm", s(&file), "--out", s(&p("recs"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("question 2: `best_path`"),
        "{err}"
    );
    let o = trainer(&[
        "import-drllm",
        s(&file),
        "--out",
        s(&p("recs")),
        "--skip-invalid",
    ]);
    assert!(o.status.success());
    let recs = drllm_records::read_records(&p("recs")).unwrap();
    assert_eq!(recs.len(), 2);
    for (k, r) in recs.iter().enumerate() {
        assert_eq!(r.question, official["questions"][k]);
        assert_eq!(r.gold, official["best_response"][k]);
        assert_eq!(json!(r.best_path), official["best_path"][k]);
        assert_eq!(json!(r.good_paths), official["good_paths"][k]);
        assert_eq!(r.original_correct, k == 0);
        assert_eq!(r.model_fingerprint, lm.fingerprint);
        assert_eq!(r.settings.reward.mode, RewardMode::Generate);
        assert_eq!(
            r.settings.reward.style,
            Some(drllm_contract::PromptStyle::Instruct)
        );
        assert_eq!(r.settings.search.num_simulations, 200);
    }
    assert_eq!(recs[0].best_decisions[5], 0);
    assert_eq!(recs[1].best_decisions[9], 2);

    // Our trainer fits routers from them.
    let ckpt = p("ckpt");
    let o = trainer(&[
        "train",
        "--records",
        s(&p("recs")),
        "--out",
        s(&ckpt),
        "--epochs",
        "1",
        "--val-fraction",
        "0",
        "--cache-dir",
        s(&p("cache")),
    ]);
    assert!(o.status.success());
    let (cfg, _) = RouterConfig::load(&ckpt).unwrap();
    assert_eq!(cfg.train_examples, 2);

    // And back to the official format: what train.py reads is what came in.
    let back = p("back.json");
    let o = Command::new(drllm_tests::bin("coordinator"))
        .args([
            "export",
            "--format",
            "drllm-json",
            s(&p("recs")),
            "--out",
            s(&back),
        ])
        .args(["--model-name", "HuggingFaceTB/SmolLM2-135M-Instruct"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&back).unwrap()).unwrap();
    for key in ["model_name", "dataset"] {
        assert_eq!(v[key], official[key], "{key}");
    }
    for key in [
        "questions",
        "best_path",
        "best_response",
        "original_correct",
        "good_paths",
    ] {
        let want: Vec<Value> = official[key].as_array().unwrap()[..2].to_vec();
        assert_eq!(v[key], json!(want), "{key}");
    }
    assert_eq!(v["improved_cases"], json!([false, true]));

    // A file of another format is refused with what it is missing.
    std::fs::write(p("other.json"), r#"{"records": []}"#).unwrap();
    let o = trainer(&["import-drllm", s(&p("other.json")), "--out", s(&p("x"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not an official Dr.LLM search file"),
        "{err}"
    );
}
