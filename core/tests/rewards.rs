//! Rewards on the real default model: choice-loglik's shared context pass equals scoring every
//! choice from scratch; early stop of generation never changes a verdict and does save tokens.

use drllm_contract::RewardMode;
use drllm_core::tasks::reward::{score_example, RewardOptions};
use drllm_engine::{LayerPath, LoadOptions, LoadedModel, Logits, PathCache};
use drllm_tasks::{load_dataset, prompts, DatasetSpec};

fn model(opts: &LoadOptions) -> Option<LoadedModel> {
    drllm_engine::testing::load_default_model_for_tests(opts)
}

/// ARC-Easy test questions: the first four, and two whose choices are one token each (their
/// fused scoring asks the LM head for a single row, which the default options once answered
/// from the q8_0 decode copy, unlike a request of their own).
fn scored_examples() -> Vec<drllm_contract::Example> {
    let all = load_dataset(&DatasetSpec::ArcEasy, "test", None, false)
        .unwrap()
        .examples;
    let one_token = ["arc_easy/Mercury_7216668", "arc_easy/Mercury_SC_415390"];
    let mut exs: Vec<_> = all.iter().take(4).cloned().collect();
    for id in one_token {
        let ex = all.iter().find(|e| e.id == id);
        exs.push(
            ex.unwrap_or_else(|| panic!("{id} not in ARC-Easy test"))
                .clone(),
        );
    }
    exs
}

#[test]
fn choice_loglik_shared_context_equals_scoring_each_choice_from_scratch() {
    let exs = scored_examples();
    for (name, load) in [
        ("exact", LoadOptions::exact()),
        ("default", LoadOptions::default()),
    ] {
        let Some(lm) = model(&load) else {
            return;
        };
        let path = LayerPath::from_counts(&[
            1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
            1,
        ])
        .unwrap();
        for ex in &exs {
            shared_equals_scratch(&lm, ex, &path, name);
        }
    }
}

/// `ex`'s fused choice scores equal each choice run alone, as a request of its own would.
fn shared_equals_scratch(
    lm: &LoadedModel,
    ex: &drllm_contract::Example,
    path: &LayerPath,
    load: &str,
) {
    let opts = RewardOptions::for_model(lm, RewardMode::ChoiceLoglik);
    let o = score_example(lm, ex, path, &opts).unwrap();
    let ctx = prompts::loglik_context(ex);
    let ctx_ids = lm.tokenizer.encode(&ctx, true).unwrap();
    for (i, cont) in prompts::loglik_continuations(ex).iter().enumerate() {
        // From scratch, as a server's echo scores a request: the whole sequence in one pass,
        // the head over every row, the log-probs of the continuation tokens.
        let whole = lm.tokenizer.encode(&format!("{ctx}{cont}"), true).unwrap();
        let mut cache = PathCache::new(path);
        let logits = lm
            .model
            .forward(&whole, path, &mut cache, 0, Logits::From(0))
            .unwrap();
        let lp = candle_nn::ops::log_softmax(&logits, 1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let naive: f64 = (ctx_ids.len()..whole.len())
            .map(|i| lp[i - 1][whole[i] as usize] as f64)
            .sum();
        let d = (naive - o.choice_logprobs[i]).abs();
        assert!(
            d < 1e-3,
            "{load} options, {} choice {i}: shared {} vs scratch {naive}",
            ex.id,
            o.choice_logprobs[i]
        );
        assert_eq!(o.choice_bytes[i], cont.len());
    }
    assert_eq!(o.correct, o.correct_acc.unwrap());
}

#[test]
fn early_stop_never_changes_a_verdict_on_real_outputs() {
    let Some(lm) = model(&LoadOptions::default()) else {
        return;
    };
    let path = LayerPath::full(lm.model.num_layers());
    let mut with = RewardOptions::for_model(&lm, RewardMode::Generate);
    with.early_stop = true;
    let without = RewardOptions {
        early_stop: false,
        ..with
    };
    let mut exs = load_dataset(&DatasetSpec::ArcEasy, "test", Some(12), false)
        .unwrap()
        .examples;
    exs.extend(
        load_dataset(&DatasetSpec::Dart(Some(1)), "validation", Some(3), false)
            .unwrap()
            .examples,
    );
    let (mut tokens_with, mut tokens_without) = (0, 0);
    for ex in &exs {
        let a = score_example(&lm, ex, &path, &with).unwrap();
        let b = score_example(&lm, ex, &path, &without).unwrap();
        assert_eq!(
            a.correct, b.correct,
            "{}: {:?} vs {:?}",
            ex.id, a.response, b.response
        );
        // The early-stopped response is a prefix of the full one.
        assert!(b
            .response
            .as_ref()
            .unwrap()
            .starts_with(a.response.as_ref().unwrap().as_str()));
        tokens_with += a.tokens_generated;
        tokens_without += b.tokens_generated;
    }
    assert!(
        tokens_with < tokens_without,
        "early stop saved nothing: {tokens_with} vs {tokens_without}"
    );
}
