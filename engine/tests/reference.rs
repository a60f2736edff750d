//! The default model (SmolLM2-135M-Instruct Q4_1) against the reference outputs in
//! tests/data/smollm2_135m_q4_1.json: tokenizer ids and chat template exactly; logits and greedy
//! tokens under three layer paths, in exact f32 mode (tight) and in the default fast mode (the
//! tolerances the reference states for engines that quantize activations).
//!
//! Needs the model (`scripts/fetch-model.sh`; `.ci/run` fetches it). Without it the test fails
//! under CI and skips loudly elsewhere.

use std::collections::HashMap;

use drllm_engine::reference::{check, last_logits, top, RefPrompt};
use drllm_engine::{greedy, LayerPath, LoadOptions, LoadedModel};

fn prompts() -> Vec<RefPrompt> {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/smollm2_135m_q4_1.json"
    );
    drllm_engine::reference::read(p.as_ref()).unwrap()
}

fn load(opts: &LoadOptions) -> Option<LoadedModel> {
    drllm_engine::testing::load_default_model_for_tests(opts)
}

/// The reference's tolerance for engines that quantize activations.
fn assert_close_top10(what: &str, ours: &[f32], reference: &[(u32, f32)]) {
    let mine = top(ours, 10);
    let ref_top3: Vec<u32> = reference.iter().take(3).map(|p| p.0).collect();
    assert!(
        ref_top3.contains(&mine[0].0),
        "{what}: our top-1 {:?} not in reference top-3 {ref_top3:?}",
        mine[0]
    );
    let ref_map: HashMap<u32, f32> = reference.iter().copied().collect();
    let common: Vec<u32> = mine
        .iter()
        .map(|p| p.0)
        .filter(|id| ref_map.contains_key(id))
        .collect();
    assert!(
        common.len() >= 6,
        "{what}: only {} of the top-10 ids agree",
        common.len()
    );
    for id in common {
        let d = (ours[id as usize] - ref_map[&id]).abs();
        assert!(d < 1.5, "{what}: id {id} logit differs by {d}");
    }
}

#[test]
fn tokenizer_and_chat_template_reproduce_reference_ids() {
    let Some(lm) = load(&LoadOptions::default()) else {
        return;
    };
    for p in prompts() {
        assert_eq!(
            lm.tokenizer.encode(&p.text, false).unwrap(),
            p.ids,
            "{}",
            p.name
        );
        assert_eq!(
            lm.tokenizer.decode(&p.ids).unwrap(),
            p.text,
            "{}: decode",
            p.name
        );
    }
    let chat = lm
        .tokenizer
        .apply_chat("What is the capital of France?")
        .unwrap();
    let reference = prompts()
        .into_iter()
        .find(|p| p.name == "chat_capital")
        .unwrap();
    assert_eq!(chat, reference.text);

    // The same tokenizer as a Hugging Face folder (tokenizer.json + tokenizer_config.json).
    let dir = tempfile::tempdir().unwrap();
    lm.tokenizer.save_hf_dir(dir.path()).unwrap();
    let hf = drllm_engine::TextTokenizer::from_hf_dir(dir.path()).unwrap();
    for p in prompts() {
        assert_eq!(
            hf.encode(&p.text, false).unwrap(),
            p.ids,
            "{} via tokenizer.json",
            p.name
        );
    }
    assert_eq!(
        hf.apply_chat("What is the capital of France?").unwrap(),
        reference.text
    );
    // A folder that cannot be made (a file stands in its way): a write error naming it.
    let blocked = dir.path().join("tokenizer.json").join("sub");
    let err = lm.tokenizer.save_hf_dir(&blocked).unwrap_err();
    assert!(matches!(err, drllm_engine::Error::Write { .. }), "{err}");
    assert!(
        err.to_string().starts_with("cannot write") && err.to_string().contains("sub"),
        "{err}"
    );
}

#[test]
fn exact_mode_matches_reference_logits_and_greedy_tokens() {
    let Some(lm) = load(&LoadOptions::exact()) else {
        return;
    };
    let reports = check(&lm, &prompts()).unwrap();
    assert_eq!(
        reports.len(),
        prompts().iter().map(|p| p.paths.len()).sum::<usize>()
    );
    for r in &reports {
        // Same arithmetic as the reference (f32, dequantized weights): only summation order
        // differs, so every reference logit is reproduced to a few hundredths.
        assert!(r.passes(0.02), "{r:?}");
    }
}

#[test]
fn the_check_catches_a_wrong_engine() {
    let Some(lm) = load(&LoadOptions::exact()) else {
        return;
    };
    // The same prompts with every reference logit moved by 0.1 and another greedy token: an
    // engine that far off must fail.
    let mut bad = prompts();
    for p in &mut bad {
        for r in &mut p.paths {
            r.exact_top10.iter_mut().for_each(|t| t.1 += 0.1);
            match r.exact_greedy8.first_mut() {
                Some(t) => *t += 1,
                None => r.exact_greedy8.push(7), // the reference stopped at EOS at once
            }
        }
    }
    for r in check(&lm, &bad).unwrap() {
        assert!(
            r.max_logit_diff > 0.05 && !r.greedy_match && !r.passes(0.02),
            "{r:?}"
        );
    }
}

#[test]
fn fast_mode_is_within_the_reference_tolerances() {
    let Some(fast) = load(&LoadOptions::default()) else {
        return;
    };
    let Some(exact) = load(&LoadOptions::exact()) else {
        return;
    };
    let l = fast.model.num_layers();
    for p in prompts() {
        let full = LayerPath::full(l);
        assert_close_top10(
            &format!("{} vs llama.cpp", p.name),
            &last_logits(&fast.model, &p.ids, &full).unwrap(),
            &p.llama_cpp_top10,
        );
        for r in &p.paths {
            let what = format!("{} / {}", p.name, r.name);
            let path = LayerPath::new(r.path.clone(), l).unwrap();
            assert_close_top10(
                &what,
                &last_logits(&fast.model, &p.ids, &path).unwrap(),
                &r.exact_top10,
            );
            // Greedy agrees with the reference until the first near-tie: where the tokens first
            // differ, the exact logits of the two candidates must be close.
            let g = greedy(&fast.model, &p.ids, &path, 8, |_| false)
                .unwrap()
                .tokens;
            if let Some(i) = g.iter().zip(&r.exact_greedy8).position(|(a, b)| a != b) {
                let prefix: Vec<u32> = p.ids.iter().chain(&r.exact_greedy8[..i]).copied().collect();
                let ex = last_logits(&exact.model, &prefix, &path).unwrap();
                let gap = (ex[g[i] as usize] - ex[r.exact_greedy8[i] as usize]).abs();
                assert!(
                    gap < 1.0,
                    "{what}: step {i} differs ({} vs {}) with gap {gap}",
                    g[i],
                    r.exact_greedy8[i]
                );
            }
        }
    }
}
