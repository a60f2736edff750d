//! The evaluation prefix cache (`--prefix-cache-mib` of `run`, `calibrate`, `baseline`) changes
//! no outcome: generating examples scored with it (ARC instruct prompts under the chat template,
//! MATH base prompts after their few-shot preamble) give the same responses, verdicts and stops
//! as without, along the full path, a pruned path with a repeat and token routes of both
//! skipped-key kinds; and `evaluator baseline` writes the same records with and without it,
//! reporting the positions it reused.

use std::process::Command;

use drllm_contract::{Example, PromptStyle, RewardMode};
use drllm_core::router::{evaluate_tokens, GateInput, TokenRouter};
use drllm_core::tasks::reward::RewardOptions;
use drllm_core::tasks::{score_example, score_example_with, PromptCache};
use drllm_engine::{LayerPath, LoadOptions, LoadedModel};
use drllm_tasks::{load_dataset, DatasetSpec};
use serde_json::Value;

/// Generating examples and their options: ARC-Easy with instruct prompts, MATH with base ones.
fn cases(lm: &LoadedModel) -> Vec<(Vec<Example>, RewardOptions)> {
    let take = |spec: DatasetSpec, split: &str, n: usize| {
        load_dataset(&spec, split, Some(n), false).unwrap().examples
    };
    let mut opts = RewardOptions::for_model(lm, RewardMode::Generate);
    opts.early_stop = false;
    let arc = RewardOptions {
        style: PromptStyle::Instruct,
        ..opts
    };
    let math = RewardOptions {
        style: PromptStyle::Base,
        ..opts
    };
    vec![
        (take(DatasetSpec::ArcEasy, "test", 5), arc),
        (take(DatasetSpec::Dart(None), "validation", 4), math),
    ]
}

#[test]
fn the_prefix_cache_changes_no_outcome_on_paths_and_token_routes() {
    let Some(lm) = drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
    else {
        return;
    };
    let l = lm.model.num_layers();
    let mut counts = vec![1u8; l];
    (counts[9], counts[12], counts[20]) = (0, 2, 0);
    let paths = [LayerPath::full(l), LayerPath::from_counts(&counts).unwrap()];
    let d = lm.model.config().hidden_size;
    let routers: Vec<TokenRouter> = ["mask", "project"]
        .iter()
        .map(|kv| {
            // The random control: its gates hash each row's state bits, so any bit a hit
            // changed would change the route.
            let mut cfg =
                drllm_tests::token_router_config(&lm.fingerprint, l, d, 4, GateInput::Contextual);
            cfg.random_skip = Some(0.3);
            cfg.skipped_kv = kv.to_string();
            TokenRouter::init(cfg, 4.0).unwrap()
        })
        .collect();
    for (examples, opts) in cases(&lm) {
        // A cache serves the paths and one router's routes.
        let cache = PromptCache::new(64 << 20);
        let token_caches: Vec<PromptCache> =
            routers.iter().map(|_| PromptCache::new(64 << 20)).collect();
        for ex in &examples {
            for path in &paths {
                let want = score_example(&lm, ex, path, &opts).unwrap();
                let got = score_example_with(&lm, ex, path, &opts, Some(&cache)).unwrap();
                assert_eq!(got, want, "{} along {path}", ex.id);
            }
            for (r, cache) in routers.iter().zip(&token_caches) {
                let (mut a, mut b) = (r.gate(0.5), r.gate(0.5));
                let want = evaluate_tokens(&lm, ex, &opts, &mut a, None).unwrap();
                let got = evaluate_tokens(&lm, ex, &opts, &mut b, Some(cache)).unwrap();
                assert_eq!(got, want, "{} under a {} token route", ex.id, r.kv());
                // Reused positions report the layers they ran when computed.
                assert_eq!((b.ran, b.rows), (a.ran, a.rows), "{}: token-layers", ex.id);
            }
        }
        // Every prompt after the first of a route reuses the shared start.
        let later = examples.len() - 1;
        for (c, routes) in
            std::iter::once((&cache, paths.len())).chain(token_caches.iter().map(|c| (c, 1)))
        {
            let s = c.stats();
            assert!(s.hits as usize >= later * routes, "{s:?}");
            assert!(s.reused_tokens as usize >= 5 * later * routes, "{s:?}");
        }
    }
}

#[test]
fn baseline_writes_the_same_records_with_and_without_the_cache() {
    if drllm_engine::testing::default_model_for_tests().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| -> (Value, String) {
        let records = tmp.path().join(format!("{name}.jsonl"));
        let out = Command::new(env!("CARGO_BIN_EXE_evaluator"))
            .args(["baseline", "--dataset", "dart", "--split", "validation"])
            .args(["--limit", "6", "--reward", "generate", "--style", "base"])
            .arg("--records")
            .arg(&records)
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
        (summary, std::fs::read_to_string(&records).unwrap())
    };
    let (off, off_records) = run("off", &["--prefix-cache-mib", "0"]);
    let (on, on_records) = run("on", &[]);
    assert_eq!(on_records, off_records);
    assert_eq!(on["acc"], off["acc"]);
    assert_eq!(off["prefix_cache"]["reused_tokens"], 0, "{off}");
    let reused = on["prefix_cache"]["reused_tokens"].as_u64().unwrap();
    assert!(reused >= 5 * 20, "{on}");
}
