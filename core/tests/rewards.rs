//! Rewards on the real default model: choice-loglik's shared context pass equals scoring every
//! choice from scratch; early stop of generation never changes a verdict and does save tokens.

use drllm_contract::RewardMode;
use drllm_core::tasks::reward::{score_example, RewardOptions};
use drllm_engine::{LayerPath, LoadOptions, LoadedModel, Logits, PathCache};
use drllm_tasks::{load_dataset, prompts, DatasetSpec};

fn model(opts: &LoadOptions) -> Option<LoadedModel> {
    drllm_engine::testing::load_default_model_for_tests(opts)
}

#[test]
fn choice_loglik_shared_context_equals_scoring_each_choice_from_scratch() {
    let Some(lm) = model(&LoadOptions::exact()) else {
        return;
    };
    let path = LayerPath::from_counts(&[
        1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ])
    .unwrap();
    let opts = RewardOptions::for_model(&lm, RewardMode::ChoiceLoglik);
    let exs = load_dataset(&DatasetSpec::ArcEasy, "test", Some(4), false)
        .unwrap()
        .examples;
    for ex in &exs {
        let o = score_example(&lm, ex, &path, &opts).unwrap();
        let ctx = prompts::loglik_context(ex);
        let ctx_ids = lm.tokenizer.encode(&ctx, true).unwrap();
        for (i, cont) in prompts::loglik_continuations(ex).iter().enumerate() {
            // From scratch: the whole sequence in one pass, log-probs of the continuation tokens.
            let whole = lm.tokenizer.encode(&format!("{ctx}{cont}"), true).unwrap();
            let mut cache = PathCache::new(&path);
            let logits = lm
                .model
                .forward(
                    &whole[..whole.len() - 1],
                    &path,
                    &mut cache,
                    0,
                    Logits::From(ctx_ids.len() - 1),
                )
                .unwrap();
            let lp = candle_nn::ops::log_softmax(&logits, 1)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let naive: f64 = whole[ctx_ids.len()..]
                .iter()
                .zip(&lp)
                .map(|(&t, row)| row[t as usize] as f64)
                .sum();
            let d = (naive - o.choice_logprobs[i]).abs();
            assert!(
                d < 1e-3,
                "{} choice {i}: shared {} vs scratch {naive}",
                ex.id,
                o.choice_logprobs[i]
            );
            assert_eq!(o.choice_bytes[i], cont.len());
        }
        assert_eq!(o.correct, o.correct_acc.unwrap());
    }
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
