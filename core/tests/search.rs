//! The search on the real default model: prefix reuse and generation early stop change no record,
//! only the work done.

use drllm_contract::RewardMode;
use drllm_contract::SearchConfig;
use drllm_core::search::search_example;
use drllm_core::tasks::reward::RewardOptions;
use drllm_engine::{LoadOptions, LoadedModel};
use drllm_tasks::{load_dataset, DatasetSpec};

fn model() -> Option<LoadedModel> {
    drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
}

#[test]
fn prefix_reuse_gives_identical_records_with_less_work() {
    let Some(lm) = model() else { return };
    let cfg = SearchConfig {
        num_simulations: 12,
        seed: 5,
        ..Default::default()
    };
    let opts = RewardOptions::for_model(&lm, RewardMode::ChoiceLoglik);
    let exs = load_dataset(&DatasetSpec::ArcEasy, "train", Some(4), false)
        .unwrap()
        .examples;
    let (mut with, mut without) = (0, 0);
    for ex in &exs {
        let a = search_example(&lm, ex, &cfg, &opts, 256 << 20).unwrap();
        let b = search_example(&lm, ex, &cfg, &opts, 0).unwrap();
        assert_eq!(a.outcome, b.outcome, "{}", ex.id);
        assert_eq!(a.counters.paths, b.counters.paths);
        assert!(a.outcome.simulations >= 1);
        with += a.counters.layer_executions;
        without += b.counters.layer_executions;
    }
    assert!(with < without, "reuse saved nothing: {with} vs {without}");
}

#[test]
fn generation_early_stop_gives_identical_records() {
    let Some(lm) = model() else { return };
    let cfg = SearchConfig {
        num_simulations: 6,
        seed: 9,
        ..Default::default()
    };
    let on = RewardOptions::for_model(&lm, RewardMode::Generate);
    let off = RewardOptions {
        early_stop: false,
        ..on
    };
    for ex in &load_dataset(&DatasetSpec::ArcEasy, "train", Some(2), false)
        .unwrap()
        .examples
    {
        let a = search_example(&lm, ex, &cfg, &on, 256 << 20).unwrap();
        let b = search_example(&lm, ex, &cfg, &off, 0).unwrap();
        assert_eq!(a.outcome, b.outcome, "{}", ex.id);
        assert!(a.counters.layer_executions < b.counters.layer_executions);
    }
}
