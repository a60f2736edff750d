//! Token routers through `evaluator run` and `calibrate` on the real default model: a router
//! whose gates run every token is the static model; a random control that skips about a third
//! of the routed token-layers runs the engine's token route (the outcome the library gives for
//! the same gate) and reports its fractional layers per token; calibration certifies a point and
//! `run` then uses it; generated answers continue along token routes, each new token deciding its
//! own layers.

use std::path::Path;
use std::process::Command;

use drllm_contract::{Example, RewardMode};
use drllm_core::router::{evaluate_tokens, GateInput::Contextual, TokenRouter};
use drllm_core::tasks::reward::RewardOptions;
use drllm_engine::{LoadOptions, LoadedModel};
use serde_json::Value;

fn config(lm: &LoadedModel, random_skip: Option<f64>) -> drllm_core::router::TokenRouterConfig {
    let (layers, d) = (lm.model.num_layers(), lm.model.config().hidden_size);
    let mut cfg = drllm_tests::token_router_config(&lm.fingerprint, layers, d, 4, Contextual);
    cfg.random_skip = random_skip;
    cfg
}

fn examples(split: &str, n: usize) -> Vec<Example> {
    drllm_tasks::load_dataset(&"arc_easy".parse().unwrap(), split, Some(n), false)
        .unwrap()
        .examples
}

fn evaluator(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_evaluator"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "evaluator {args:?}: {err}");
    String::from_utf8(out.stdout).unwrap()
}

fn results(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("examples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `evaluator run --routers ckpt ARGS --out out`: its per-example results.
fn run_routers(ckpt: &Path, out: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["run", "--routers", ckpt.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend(["--out", out.to_str().unwrap()]);
    evaluator(&all);
    results(out)
}

#[test]
fn token_routers_run_and_certify_through_the_evaluator() {
    let Some(lm) = drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (all, random) = (tmp.path().join("all"), tmp.path().join("random"));
    TokenRouter::init(config(&lm, None), 30.0)
        .unwrap()
        .save(&all)
        .unwrap();
    let control = TokenRouter::init(config(&lm, Some(0.35)), 4.0).unwrap();
    control.save(&random).unwrap();
    let base = ["--dataset", "arc_easy", "--split", "test", "--limit", "4"];
    let run = |ckpt: &Path, out: &Path, knob: &[&str]| {
        run_routers(ckpt, out, &[&base[..], knob].concat())
    };
    // Gates that run every token: the static model, 30 layers per token.
    for r in run(&all, &tmp.path().join("run-all"), &["--budget", "0.5"]) {
        assert_eq!(r["routed_correct"], r["static_correct"], "{r}");
        assert_eq!(r["routed_answer"], r["static_answer"], "{r}");
        assert_eq!(r["path_len"].as_f64(), Some(30.0));
    }
    // The random control: the library's token route on the same gate, fewer layers per token.
    let opts = RewardOptions::for_model(&lm, RewardMode::ChoiceLoglik);
    let got = run(
        &random,
        &tmp.path().join("run-random"),
        &["--budget", "0.5"],
    );
    for (ex, r) in examples("test", 4).iter().zip(&got) {
        let mut gate = control.gate(0.5);
        let o = evaluate_tokens(&lm, ex, &opts, &mut gate, None).unwrap();
        assert_eq!(r["routed_correct"].as_bool(), Some(o.correct), "{}", ex.id);
        let layers = r["path_len"].as_f64().unwrap();
        let want = gate.ran as f64 * 30.0 / gate.rows as f64;
        assert!((layers - want).abs() < 1e-9, "{layers} vs {want}");
        assert!(
            layers > 30.0 - 26.0 * 0.5 && layers < 30.0 - 26.0 * 0.2,
            "{layers}"
        );
    }
    // Calibration on dev certifies a point (δ = 0.99: any drop passes); run takes it by default.
    evaluator(&[
        "calibrate",
        "--routers",
        random.to_str().unwrap(),
        "--dataset",
        "arc_easy",
        "--split",
        "dev",
        "--limit",
        "6",
        "--grid",
        "1,0.5",
        "--delta",
        "0.99",
    ]);
    let cert: Value =
        serde_json::from_str(&std::fs::read_to_string(random.join("certificate.json")).unwrap())
            .unwrap();
    assert_eq!(cert["chosen"], 1, "{cert}");
    assert!(
        cert["points"][1]["mean_layers"].as_f64().unwrap() < 29.0,
        "{cert}"
    );
    let certified = run(&random, &tmp.path().join("run-cert"), &[]);
    assert_eq!(
        certified
            .iter()
            .map(|r| r["path_len"].clone())
            .collect::<Vec<_>>(),
        got.iter()
            .map(|r| r["path_len"].clone())
            .collect::<Vec<_>>(),
        "the certified point is τ = 0.5"
    );
}

/// Generation along token routes: `evaluator run --reward generate` with gates that run every
/// token answers as the static model does; with untrained gates each generated token decides
/// its own layers (a pass of its own through the gate), and the run reports what the library
/// gives for the same gate, its layers per token counted over the prompt and the fed tokens (no
/// early stop, so that answers run to their token budget).
#[test]
fn token_routers_generate_answers_through_the_evaluator() {
    let Some(lm) = drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (all, mixed) = (tmp.path().join("all"), tmp.path().join("mixed"));
    TokenRouter::init(config(&lm, None), 30.0)
        .unwrap()
        .save(&all)
        .unwrap();
    // Untrained gates at an even bias: each token's own state decides (the random control's
    // hash of exact bits would not survive the thread counts of two processes).
    let router = TokenRouter::init(config(&lm, None), 0.0).unwrap();
    router.save(&mixed).unwrap();
    let run = |ckpt: &Path, name: &str| {
        let args = [
            "--reward",
            "generate",
            "--dataset",
            "arc_easy",
            "--split",
            "test",
        ];
        let knob = ["--limit", "3", "--budget", "0.5", "--no-early-stop"];
        run_routers(ckpt, &tmp.path().join(name), &[&args[..], &knob].concat())
    };
    for r in run(&all, "gen-all") {
        assert_eq!(r["routed_answer"], r["static_answer"], "{r}");
        assert_eq!(r["routed_tokens"], r["static_tokens"], "{r}");
        assert_eq!(r["path_len"].as_f64(), Some(30.0), "{r}");
    }
    // Without early stop every answer runs to its token budget: tokens are fed back.
    let opts = RewardOptions {
        early_stop: false,
        ..RewardOptions::for_model(&lm, RewardMode::Generate)
    };
    for (ex, r) in examples("test", 3).iter().zip(run(&mixed, "gen-mixed")) {
        let mut gate = router.gate(0.5);
        let o = evaluate_tokens(&lm, ex, &opts, &mut gate, None).unwrap();
        assert_eq!(r["routed_correct"].as_bool(), Some(o.correct), "{}", ex.id);
        assert!(o.response.is_some() && o.tokens_generated > 0, "{o:?}");
        let prompt = drllm_core::tasks::reward::prepare(&lm, ex, &opts).unwrap();
        // Every fed token passed through the gate after the prompt's rows.
        let passes = gate.rows / 30;
        assert_eq!(gate.rows % 30, 0);
        assert!(passes > prompt.prompt_ids.len() as u64, "{passes}");
        let layers = r["path_len"].as_f64().unwrap();
        let want = gate.ran as f64 / passes as f64;
        assert!(
            (layers - want).abs() < 1e-9,
            "{layers} vs {want}: {r}\n{o:?}"
        );
        assert!(layers < 29.0, "{layers}");
    }
}
