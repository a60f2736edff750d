//! Token routes (`Route::Tokens`): with every token run they are bit-identical to the full path;
//! with tokens skipped they equal the slow reference that runs every layer on every row and
//! mixes by the mask (`Model::run_mixed`, DLR's way), under both treatments of a skipped token's
//! keys, on one sequence, on fused rows and token by token through the cache (prefill, then
//! decode with each new token's own gates). On tiny random models of each architecture and on
//! the default model.

mod common;

use candle_core::{DType, Tensor};
use common::{ids, max_abs_diff, max_diff_and_scale, Tiny};
use drllm_engine::layer::Segments;
use drllm_engine::{
    Error, LayerPath, LoadOptions, Model, Ops, PathCache, Route, RowMeta, Rows, SkippedKv,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn tiny_model(tiny: &Tiny) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    tiny.write_hf(dir.path(), &tiny.weights(11), DType::F32, 1);
    let m = Model::from_hf_dir(dir.path(), &LoadOptions::exact()).unwrap();
    (dir, m)
}

/// `masks[layer][row]`: layer 0 runs every row, the others a random share `p` of them.
fn random_masks(layers: usize, rows: usize, p: f64, seed: u64) -> Vec<Vec<bool>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..layers)
        .map(|l| (0..rows).map(|_| l == 0 || rng.random_bool(p)).collect())
        .collect()
}

/// The fast token route on `rows`.
fn routed(model: &Model, x: Tensor, rows: Rows<'_>, masks: &[Vec<bool>], kv: SkippedKv) -> Tensor {
    let mut gate = |layer: usize, _: &Tensor| Ok(masks[layer].clone());
    let route = Route::Tokens {
        gate: &mut gate,
        kv,
    };
    model.run_path(x, rows, route, |_, _, _| ()).unwrap().hidden
}

/// The slow reference along the same masks.
fn mixed(model: &Model, x: Tensor, meta: &RowMeta, masks: &[Vec<bool>], kv: SkippedKv) -> Tensor {
    mixed_with(model, x, meta, masks, kv, Ops::Fused)
}

fn mixed_with(
    model: &Model,
    x: Tensor,
    meta: &RowMeta,
    masks: &[Vec<bool>],
    kv: SkippedKv,
    ops: Ops,
) -> Tensor {
    let dev = x.device().clone();
    model
        .run_mixed(x, meta, kv, ops, |layer, _| {
            let run = masks[layer].clone();
            let g: Vec<f32> = run.iter().map(|&r| r as u8 as f32).collect();
            let n = g.len();
            Ok(Some((Tensor::from_vec(g, (n, 1), &dev)?, run)))
        })
        .unwrap()
}

/// The largest |want − got| relative to the largest |want| (at least 1: the default model's
/// residual stream reaches ~10²), and that scale.
fn relative_diff(want: &Tensor, got: &Tensor) -> (f32, f32) {
    let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (d, scale) = max_diff_and_scale(&v(got), &v(want), 1.0);
    (d / scale, scale)
}

const KVS: [SkippedKv; 2] = [SkippedKv::Project, SkippedKv::Mask];

#[test]
fn every_token_run_is_bit_identical_to_the_full_path() {
    let tiny = Tiny::qwen3();
    let (_dir, model) = tiny_model(&tiny);
    let seq = ids(10, tiny.vocab, 1);
    let full = LayerPath::full(tiny.layers);
    let all = vec![vec![true; seq.len()]; tiny.layers];
    let x = model.embed(&seq).unwrap();
    let route = Route::Path {
        path: &full,
        from: 0,
    };
    let want = model
        .run_path(x.clone(), Rows::Uncached, route, |_, _, _| ())
        .unwrap();
    for kv in KVS {
        let got = routed(&model, x.clone(), Rows::Uncached, &all, kv);
        assert_eq!(max_abs_diff(&want.hidden, &got), 0.0, "{kv}");
        let mut cache = PathCache::new(&full);
        let rows = Rows::Cached {
            cache: &mut cache,
            start: 0,
        };
        let got = routed(&model, x.clone(), rows, &all, kv);
        assert_eq!(max_abs_diff(&want.hidden, &got), 0.0, "{kv} cached");
        assert_eq!(cache.len(), seq.len());
    }
}

#[test]
fn skipped_tokens_equal_the_mixing_reference_on_every_architecture() {
    for tiny in [Tiny::llama(), Tiny::qwen2(), Tiny::qwen3()] {
        let (_dir, model) = tiny_model(&tiny);
        let seq = ids(12, tiny.vocab, 2);
        let meta = RowMeta::sequence(0, seq.len());
        for (seed, p) in [(3, 0.7), (4, 0.3), (5, 0.0)] {
            let masks = random_masks(tiny.layers, seq.len(), p, seed);
            for kv in KVS {
                let x = model.embed(&seq).unwrap();
                let want = mixed(&model, x.clone(), &meta, &masks, kv);
                let got = routed(&model, x, Rows::Uncached, &masks, kv);
                let d = max_abs_diff(&want, &got);
                assert!(d < 1e-4, "{} p={p} {kv}: {d}", tiny.arch);
            }
        }
    }
}

#[test]
fn the_two_treatments_of_skipped_keys_differ() {
    // Guards the reference itself: masking a skipped token's keys must change later tokens.
    let tiny = Tiny::llama();
    let (_dir, model) = tiny_model(&tiny);
    let seq = ids(12, tiny.vocab, 6);
    let masks = random_masks(tiny.layers, seq.len(), 0.5, 7);
    let x = model.embed(&seq).unwrap();
    let a = routed(
        &model,
        x.clone(),
        Rows::Uncached,
        &masks,
        SkippedKv::Project,
    );
    let b = routed(&model, x, Rows::Uncached, &masks, SkippedKv::Mask);
    assert!(max_abs_diff(&a, &b) > 1e-3);
}

#[test]
fn fused_rows_equal_the_reference_with_segments() {
    let tiny = Tiny::qwen2();
    let (_dir, model) = tiny_model(&tiny);
    let segs = Segments {
        ctx: 7,
        conts: vec![3, 1, 4],
    };
    let seq = ids(segs.rows(), tiny.vocab, 8);
    let meta = RowMeta::segments(&segs);
    let masks = random_masks(tiny.layers, seq.len(), 0.6, 9);
    for kv in KVS {
        let x = model.embed(&seq).unwrap();
        let want = mixed(&model, x.clone(), &meta, &masks, kv);
        let mut slots = Vec::new();
        let rows = Rows::Fused {
            segs: &segs,
            slots: &mut slots,
        };
        let got = routed(&model, x, rows, &masks, kv);
        assert!(max_abs_diff(&want, &got) < 1e-4, "{kv}");
        assert_eq!(slots.len(), tiny.layers, "one slot per layer");
    }
}

/// Prefill `prompt` rows, then feed the rest one token at a time, each with its own gates; the
/// hidden rows of every call, in order, against the reference on the whole sequence.
fn check_decode(model: &Model, seq: &[u32], prompt: usize, masks: &[Vec<bool>], kv: SkippedKv) {
    let layers = model.num_layers();
    let meta = RowMeta::sequence(0, seq.len());
    let want = mixed(model, model.embed(seq).unwrap(), &meta, masks, kv);
    let mut cache = PathCache::new(&LayerPath::full(layers));
    let mut start = 0;
    let mut got = Vec::new();
    while start < seq.len() {
        let n = if start == 0 { prompt } else { 1 };
        let part: Vec<Vec<bool>> = masks.iter().map(|m| m[start..start + n].to_vec()).collect();
        let x = model.embed(&seq[start..start + n]).unwrap();
        let rows = Rows::Cached {
            cache: &mut cache,
            start,
        };
        got.push(routed(model, x, rows, &part, kv));
        start += n;
    }
    assert_eq!(cache.len(), seq.len());
    let got = Tensor::cat(&got, 0).unwrap();
    let (d, scale) = relative_diff(&want, &got);
    assert!(
        d < 2e-5,
        "{kv}: decode against the reference differs by {d} of {scale}"
    );
}

#[test]
fn decode_follows_the_same_rule_through_the_cache() {
    for tiny in [Tiny::llama(), Tiny::qwen3()] {
        let (_dir, model) = tiny_model(&tiny);
        let seq = ids(14, tiny.vocab, 10);
        let masks = random_masks(tiny.layers, seq.len(), 0.6, 11);
        for kv in KVS {
            check_decode(&model, &seq, 8, &masks, kv);
        }
    }
}

#[test]
fn a_gate_with_the_wrong_row_count_is_a_typed_error() {
    let tiny = Tiny::llama();
    let (_dir, model) = tiny_model(&tiny);
    let x = model.embed(&ids(5, tiny.vocab, 12)).unwrap();
    let mut gate = |_: usize, _: &Tensor| Ok(vec![true; 4]);
    let route = Route::Tokens {
        gate: &mut gate,
        kv: SkippedKv::Mask,
    };
    let err = model
        .run_path(x, Rows::Uncached, route, |_, _, _| ())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::GateRows {
                flags: 4,
                rows: 5,
                ..
            }
        ),
        "{err}"
    );
    // A fixed-path cache refuses a token route.
    let path = LayerPath::from_counts(&[1, 0, 1, 1]).unwrap();
    let mut cache = PathCache::new(&path);
    let x = model.embed(&ids(5, tiny.vocab, 12)).unwrap();
    let mut gate = |_: usize, _: &Tensor| Ok(vec![true; 5]);
    let route = Route::Tokens {
        gate: &mut gate,
        kv: SkippedKv::Mask,
    };
    let rows = Rows::Cached {
        cache: &mut cache,
        start: 0,
    };
    let err = model.run_path(x, rows, route, |_, _, _| ()).unwrap_err();
    assert!(matches!(err, Error::CachePathMismatch { .. }), "{err}");
}

#[test]
fn the_default_model_follows_the_reference_prefill_and_decode() {
    let Some(lm) = common::load_default_model_for_tests(&LoadOptions::exact()) else {
        return;
    };
    let model = &lm.model;
    let seq = lm
        .tokenizer
        .encode(
            "The capital of France is Paris, and the capital of Italy is",
            true,
        )
        .unwrap();
    let masks = random_masks(model.num_layers(), seq.len(), 0.7, 13);
    for kv in KVS {
        check_decode(model, &seq, seq.len() - 3, &masks, kv);
    }
}

#[test]
fn the_differentiable_pass_equals_the_fused_kernels_on_the_default_model() {
    let Some(lm) = common::load_default_model_for_tests(&LoadOptions::exact()) else {
        return;
    };
    let model = &lm.model;
    let seq = lm
        .tokenizer
        .encode(
            "Question: Which gas do plants take in?\nAnswer: carbon dioxide",
            true,
        )
        .unwrap();
    let segs = Segments {
        ctx: seq.len() - 4,
        conts: vec![2, 2],
    };
    for meta in [RowMeta::sequence(0, seq.len()), RowMeta::segments(&segs)] {
        let masks = random_masks(model.num_layers(), seq.len(), 0.8, 14);
        let x = model.embed(&seq).unwrap();
        let a = mixed_with(model, x.clone(), &meta, &masks, SkippedKv::Mask, Ops::Fused);
        let b = mixed_with(model, x, &meta, &masks, SkippedKv::Mask, Ops::Autograd);
        let (d, scale) = relative_diff(&a, &b);
        assert!(d < 2e-5, "autograd ops differ by {d} of {scale}");
    }
}
