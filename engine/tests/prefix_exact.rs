//! A prompt resumed after a cached prefix computes, to the bit, what running it whole computes
//! (attention sums over key blocks of fixed absolute positions), along a path and along token
//! routes of both skipped-key kinds, for short and long prefixes, on the real default model with
//! its default kernels: what makes the prefix caches of `evaluator serve`, `run`, `calibrate`
//! and `baseline` change no output.

use candle_core::Tensor;
use drllm_engine::exec::{Route, Rows};
use drllm_engine::{LayerPath, LoadOptions, Model, PathCache, SkippedKv};

/// A token gate from each row's state: every row runs the first layers, then a row runs when a
/// coordinate of its state is positive.
fn gate(layer: usize, x: &Tensor) -> drllm_engine::Result<Vec<bool>> {
    let rows = x.to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .map(|r| layer < 3 || r[layer * 7] > 0.0)
        .collect())
}

/// `ids` at positions `start ..` after what `cache` holds, along the full path (`kv`: `None`)
/// or a token route.
fn run(
    model: &Model,
    ids: &[u32],
    cache: &mut PathCache,
    start: usize,
    kv: Option<SkippedKv>,
) -> Tensor {
    let full = LayerPath::full(model.num_layers());
    let mut g = gate;
    let route = match kv {
        None => Route::Path {
            path: &full,
            from: 0,
        },
        Some(kv) => Route::Tokens { gate: &mut g, kv },
    };
    let rows = Rows::Cached { cache, start };
    model
        .run_path(model.embed(ids).unwrap(), rows, route, |_, _, _| ())
        .unwrap()
        .hidden
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
    d.max(0).unwrap().to_scalar().unwrap()
}

#[test]
fn a_prompt_resumed_after_a_cached_prefix_gives_the_rows_of_a_whole_pass() {
    let Some(lm) = drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
    else {
        return;
    };
    let model = &lm.model;
    let full = LayerPath::full(model.num_layers());
    let ids: Vec<u32> = (0..90u32).map(|i| 100 + (i * 7919) % 40000).collect();
    for kv in [None, Some(SkippedKv::Project), Some(SkippedKv::Mask)] {
        let mut whole = PathCache::new(&full);
        let want = run(model, &ids, &mut whole, 0, kv);
        for cached in [5, 25, 32, 64, 88] {
            let mut cache = PathCache::new(&full);
            run(model, &ids[..cached], &mut cache, 0, kv);
            let got = run(model, &ids[cached..], &mut cache, cached, kv);
            let d = max_diff(&want.narrow(0, cached, ids.len() - cached).unwrap(), &got);
            assert_eq!(
                d, 0.0,
                "{kv:?}, resumed after {cached} positions: {d} apart"
            );
            // The next token, one row after each, reads the same keys.
            let next = |cache: &mut PathCache| run(model, &[7], cache, ids.len(), kv);
            let d = max_diff(&next(&mut whole.clone()), &next(&mut cache));
            assert_eq!(d, 0.0, "{kv:?}, the token after a prefix of {cached}");
        }
    }
}
