//! The router inputs the trainer trains on equal what the routers read at evaluation, for the same
//! question and path. The trainer tokenizes a search record's prompt, runs a teacher-forced pass
//! over the prompt alone and stores the window means in its feature cache (f16); the evaluator's
//! routed pass runs the prompt and every choice's continuation as one fused batch and shows the
//! routers the prompt rows. Checked on records from a real search on the default model, with a
//! path that skips, executes and repeats layers.

use candle_core::{DType, Tensor};
use drllm_contract::RewardMode;
use drllm_contract::SearchConfig;
use drllm_contract::{PromptStyle, RewardSettings};
use drllm_core::router::{evaluate_routed, window_means, Targets, DEFAULT_WINDOWS};
use drllm_core::search::{search_example, DEFAULT_REUSE_BUDGET};
use drllm_core::tasks::reward::RewardOptions;
use drllm_engine::LoadOptions;
use drllm_tasks::load_dataset;

#[test]
fn the_trainers_cached_router_inputs_equal_what_the_routers_see_at_evaluation() {
    let Some(lm) = drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
    else {
        return;
    };
    let layers = lm.model.num_layers();
    let opts = RewardOptions::for_model(&lm, RewardMode::ChoiceLoglik);
    let cfg = SearchConfig {
        num_simulations: 4,
        ..Default::default()
    };
    // Skip layer 3, repeat layer 7, execute the rest.
    let decisions: Vec<u8> = (0..layers)
        .map(|l| match l {
            3 => 0,
            7 => 2,
            _ => 1,
        })
        .collect();
    let examples = load_dataset(&"arc_easy".parse().unwrap(), "train", Some(3), false)
        .unwrap()
        .examples;
    for ex in &examples {
        let search = search_example(&lm, ex, &cfg, &opts, DEFAULT_REUSE_BUDGET).unwrap();
        let mut record = search.record(&lm, ex, &cfg, &opts, "test");
        record.best_decisions = decisions.clone();
        // The trainer: its example from the record, through its feature cache.
        let e = drllm_trainer::data::example(&lm, &record, Targets::Best).unwrap();
        assert_eq!(e.target, decisions);
        let root = tempfile::tempdir().unwrap();
        let (features, _) = drllm_trainer::feature_cache::open_or_build(
            root.path(),
            &lm.model,
            &lm.fingerprint,
            std::slice::from_ref(&e),
            DEFAULT_WINDOWS,
            false,
        )
        .unwrap();
        let (cached, mask) = features.batch(&[0]).unwrap();
        // The evaluator: what the routers read before each layer of the routed pass.
        let mut seen = Vec::new();
        let (_, path) = evaluate_routed(&lm, ex, &opts, |layer, rows| {
            seen.push(window_means(rows, DEFAULT_WINDOWS)?);
            Ok(decisions[layer])
        })
        .unwrap();
        assert_eq!(path.counts(), decisions, "{}", ex.id);
        assert_eq!(seen.len(), layers);
        let windows = seen[0].dim(0).unwrap();
        let mask: Vec<f32> = mask.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(mask.iter().filter(|&&m| m == 1.0).count(), windows);
        for (layer, s) in seen.iter().enumerate() {
            let c = cached
                .get(layer)
                .unwrap()
                .get(0)
                .unwrap()
                .narrow(0, 0, windows);
            let (diff, scale) = (max_abs(&(c.unwrap() - s).unwrap()), max_abs(s));
            // f16 storage rounds to 2^-11 relative; the fused batch may sum in another order.
            assert!(
                diff <= 2e-3 * scale,
                "{} layer {layer}: |Δ| {diff} vs max |x| {scale}",
                ex.id
            );
        }
    }
}

fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// The trainer tokenizes each record as its search did: the recorded reward mode and prompt
/// style decide the tokens (generate + instruct: through the chat template; base: plain), records
/// without a style (schema 1–2) get the model's default, and the checkpoint records the settings
/// only when all records agree.
#[test]
fn records_are_tokenized_with_their_recorded_settings() {
    let Some(lm) = drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
    else {
        return;
    };
    let ex = &load_dataset(&"arc_easy".parse().unwrap(), "train", Some(1), false)
        .unwrap()
        .examples[0];
    let with = |style: Option<PromptStyle>| {
        let mut r = drllm_tests::search_record(ex, "w", &lm.fingerprint);
        r.settings.reward = RewardSettings {
            style,
            ..RewardSettings::new(RewardMode::Generate)
        };
        r
    };
    let ids = |r: &drllm_contract::SearchRecord| {
        drllm_trainer::data::example(&lm, r, Targets::Best)
            .unwrap()
            .prompt_ids
    };
    let (base, instruct, unset) = (
        with(Some(PromptStyle::Base)),
        with(Some(PromptStyle::Instruct)),
        with(None),
    );
    let chat = lm.tokenizer.apply_chat(&ex.question).unwrap();
    assert_eq!(ids(&base), lm.tokenizer.encode(&ex.question, true).unwrap());
    assert_eq!(ids(&instruct), lm.tokenizer.encode(&chat, false).unwrap());
    assert_ne!(ids(&base), ids(&instruct));
    assert_eq!(ids(&unset), ids(&instruct), "SmolLM2's default is instruct");
    let common =
        |rs: &[drllm_contract::SearchRecord]| drllm_trainer::data::common_reward(&lm, rs).unwrap();
    assert_eq!(
        common(&[instruct.clone(), unset.clone()]).map(|s| (s.mode, s.style)),
        Some((RewardMode::Generate, Some(PromptStyle::Instruct)))
    );
    assert_eq!(common(&[instruct, base]), None);
}
