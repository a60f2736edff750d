//! Path execution on a tiny random model: incremental decoding with the per-position cache equals
//! a full recompute without cache for skips, repeats and paths up to 2L long; greedy generation
//! honours its stop conditions; a context and its continuations run as one fused batch equal
//! separate runs; bad calls give typed errors, and a path built for another depth is refused.

mod common;

use candle_core::{DType, Tensor};
use common::{ids, max_abs_diff, Tiny};
use drllm_engine::{
    greedy, Error, LayerPath, LoadOptions, Logits, Model, PathCache, Route, Rows, StopReason,
};

const TOL: f32 = 1e-4;

fn tiny_model(tiny: &Tiny, seed: u64) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    tiny.write_hf(dir.path(), &tiny.weights(seed), DType::F32, 1);
    let m = Model::from_hf_dir(dir.path(), &LoadOptions::exact()).unwrap();
    (dir, m)
}

/// The hidden state after every position of `path`, run from the embeddings `x` through the
/// executor on `rows`.
fn states(model: &Model, path: &LayerPath, x: Tensor, rows: Rows<'_>) -> Vec<Tensor> {
    let mut out = Vec::new();
    let route = Route::Path { path, from: 0 };
    model
        .run_path(x, rows, route, |_, y, _| out.push(y.clone()))
        .unwrap();
    out
}

fn paths(l: usize) -> Vec<LayerPath> {
    let mut out = vec![
        LayerPath::full(l),
        LayerPath::from_counts(&[1, 0, 1, 1]).unwrap(),
        LayerPath::from_counts(&[2, 1, 0, 2]).unwrap(),
        LayerPath::from_counts(&[2, 2, 2, 2]).unwrap(), // 2L positions
        LayerPath::from_counts(&[0, 2, 0, 0]).unwrap(),
        LayerPath::from_counts(&[0, 0, 0, 0]).unwrap(), // embeddings straight to the head
    ];
    out.retain(|p| p.num_layers() == l);
    out
}

#[test]
fn incremental_decoding_equals_full_recompute_on_every_path() {
    for tiny in [Tiny::llama(), Tiny::qwen2(), Tiny::qwen3()] {
        let (_dir, model) = tiny_model(&tiny, 21);
        let seq = ids(12, tiny.vocab, 22);
        for path in paths(tiny.layers) {
            // Full recompute: every position's logits from one pass, no cache reuse.
            let mut fresh = PathCache::new(&path);
            let full = model
                .forward(&seq, &path, &mut fresh, 0, Logits::From(0))
                .unwrap();
            // Prefill 5 tokens, then one token at a time with the cache.
            let mut cache = PathCache::new(&path);
            let pre = model
                .forward(&seq[..5], &path, &mut cache, 0, Logits::From(0))
                .unwrap();
            let d = max_abs_diff(&pre, &full.narrow(0, 0, 5).unwrap());
            assert!(d < TOL, "{} path {path}: prefill diff {d}", tiny.arch);
            for t in 5..seq.len() {
                let step = model
                    .forward(&seq[t..t + 1], &path, &mut cache, t, Logits::Last)
                    .unwrap();
                let d = max_abs_diff(&step, &full.narrow(0, t, 1).unwrap());
                assert!(d < TOL, "{} path {path}: token {t} diff {d}", tiny.arch);
            }
            assert_eq!(cache.len(), seq.len());
        }
    }
}

#[test]
fn paths_change_the_output_and_repeats_are_not_reruns_of_one_slot() {
    let tiny = Tiny::llama();
    let (_dir, model) = tiny_model(&tiny, 23);
    let seq = ids(8, tiny.vocab, 24);
    let last = |p: &LayerPath| {
        let mut c = PathCache::new(p);
        model.forward(&seq, p, &mut c, 0, Logits::Last).unwrap()
    };
    let full = last(&LayerPath::full(4));
    let skip = last(&LayerPath::from_counts(&[1, 0, 1, 1]).unwrap());
    let rep = last(&LayerPath::from_counts(&[1, 2, 1, 1]).unwrap());
    assert!(max_abs_diff(&full, &skip) > 1e-3);
    assert!(max_abs_diff(&full, &rep) > 1e-3);

    // A repeat is two separate executions of the layer, each with its own cache: chaining
    // one-layer passes, each with fresh keys and values, gives the same hidden state as the path.
    let mut x = model.embed(&seq).unwrap();
    for layer in [0u16, 1, 1, 2, 3] {
        let one = LayerPath::new(vec![layer], tiny.layers).unwrap();
        let route = Route::Path {
            path: &one,
            from: 0,
        };
        x = model
            .run_path(x, Rows::Uncached, route, |_, _, slot| {
                assert_eq!(slot.len(), seq.len())
            })
            .unwrap()
            .hidden;
    }
    let by_hand = model.head(&x.narrow(0, seq.len() - 1, 1).unwrap()).unwrap();
    assert!(max_abs_diff(&by_hand, &rep) < TOL);
}

#[test]
fn fused_context_and_continuations_equal_separate_runs() {
    use drllm_engine::layer::Segments;
    for tiny in [Tiny::llama(), Tiny::qwen2(), Tiny::qwen3()] {
        let (_dir, model) = tiny_model(&tiny, 31);
        let ctx = ids(7, tiny.vocab, 32);
        // Continuations of 3, 0 and 2 rows.
        let conts = [ids(3, tiny.vocab, 33), vec![], ids(2, tiny.vocab, 34)];
        let segs = Segments {
            ctx: ctx.len(),
            conts: conts.iter().map(Vec::len).collect(),
        };
        let rows: Vec<u32> = ctx.iter().chain(conts.iter().flatten()).copied().collect();
        let path = LayerPath::new(vec![0, 2, 2, 3], tiny.layers).unwrap();
        let mut slots = Vec::new();
        let x = model.embed(&rows).unwrap();
        let fused = Rows::Fused {
            segs: &segs,
            slots: &mut slots,
        };
        let fused = states(&model, &path, x, fused);
        assert_eq!(slots.len(), path.len(), "one slot per path position");
        assert!(slots.iter().all(|s| s.len() == rows.len()));
        // Separately: the context into a cache, each continuation after it on a copy.
        let mut cache = PathCache::new(&path);
        let x = model.embed(&ctx).unwrap();
        let cached = Rows::Cached {
            cache: &mut cache,
            start: 0,
        };
        let ctx_states = states(&model, &path, x, cached);
        let cont_states: Vec<Vec<Tensor>> = conts
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| {
                let mut cache = cache.clone();
                let rows = Rows::Cached {
                    cache: &mut cache,
                    start: ctx.len(),
                };
                states(&model, &path, model.embed(c).unwrap(), rows)
            })
            .collect();
        for (pos, layer) in path.layers().iter().enumerate() {
            let separate: Vec<&Tensor> = std::iter::once(&ctx_states[pos])
                .chain(cont_states.iter().map(|s| &s[pos]))
                .collect();
            let separate = Tensor::cat(&separate, 0).unwrap();
            let d = max_abs_diff(&fused[pos], &separate);
            assert!(
                d < TOL,
                "{} position {pos} (layer {layer}): fused vs separate diff {d}",
                tiny.arch
            );
        }
    }
}

#[test]
fn cache_rewind_recomputes_from_the_given_start() {
    let tiny = Tiny::llama();
    let (_dir, model) = tiny_model(&tiny, 25);
    let seq = ids(10, tiny.vocab, 26);
    let path = LayerPath::from_counts(&[2, 0, 1, 1]).unwrap();
    let mut cache = PathCache::new(&path);
    model
        .forward(&seq, &path, &mut cache, 0, Logits::Last)
        .unwrap();
    // Rewind to 6 and feed other tokens: equals a fresh run of the spliced sequence.
    let other = ids(4, tiny.vocab, 27);
    let a = model
        .forward(&other, &path, &mut cache, 6, Logits::Last)
        .unwrap();
    let spliced: Vec<u32> = seq[..6].iter().chain(&other).copied().collect();
    let mut fresh = PathCache::new(&path);
    let b = model
        .forward(&spliced, &path, &mut fresh, 0, Logits::Last)
        .unwrap();
    assert!(max_abs_diff(&a, &b) < TOL);
}

#[test]
fn greedy_generation_stops_on_budget_predicate_and_eos() {
    let tiny = Tiny::llama();
    let (_dir, model) = tiny_model(&tiny, 29);
    let prompt = ids(6, tiny.vocab, 30);
    let path = LayerPath::full(4);
    let g = greedy(&model, &prompt, &path, 5, |_| false).unwrap();
    // Unless the random model emits EOS (id 2) it runs to the budget.
    match g.stop {
        StopReason::MaxTokens => assert_eq!(g.tokens.len(), 5),
        StopReason::Eos => assert!(g.tokens.len() < 5),
        other => panic!("unexpected stop {other:?}"),
    }
    // Greedy tokens are the argmax of a cached forward, step by step.
    let mut cache = PathCache::new(&path);
    let mut seq = prompt.clone();
    let mut logits = model
        .forward(&seq, &path, &mut cache, 0, Logits::Last)
        .unwrap();
    for &tok in &g.tokens {
        assert_eq!(drllm_engine::argmax(&logits).unwrap(), tok);
        seq.push(tok);
        logits = model
            .forward(&[tok], &path, &mut cache, seq.len() - 1, Logits::Last)
            .unwrap();
    }
    if !g.tokens.is_empty() {
        let p = greedy(&model, &prompt, &path, 5, |t| t.len() == 1).unwrap();
        assert_eq!(p.stop, StopReason::Predicate);
        assert_eq!(p.tokens, g.tokens[..1]);
    }
    // The max-token budget of zero generates nothing.
    assert!(greedy(&model, &prompt, &path, 0, |_| false)
        .unwrap()
        .tokens
        .is_empty());
}

#[test]
fn bad_calls_give_typed_errors() {
    let tiny = Tiny::llama();
    let (_dir, model) = tiny_model(&tiny, 31);
    let path = LayerPath::full(4);
    let mut cache = PathCache::new(&path);
    assert!(matches!(
        model.forward(&[], &path, &mut cache, 0, Logits::Last),
        Err(Error::EmptyPrompt)
    ));
    let long = ids(tiny.max_pos + 1, tiny.vocab, 32);
    assert!(matches!(
        model.forward(&long, &path, &mut cache, 0, Logits::Last),
        Err(Error::ContextOverflow { max: 256, .. })
    ));
    assert!(matches!(
        model.forward(&[1, 2], &path, &mut cache, 3, Logits::Last),
        Err(Error::CacheGap {
            cached: 0,
            start: 3
        })
    ));
    assert!(matches!(
        model.forward(&[tiny.vocab as u32], &path, &mut cache, 0, Logits::Last),
        Err(Error::TokenOutOfRange { .. })
    ));
    let other = LayerPath::from_counts(&[1, 1, 1, 0]).unwrap();
    assert!(matches!(
        model.forward(&[1], &other, &mut cache, 0, Logits::Last),
        Err(Error::CachePathMismatch { .. })
    ));
    // A path for a deeper model is refused, whatever its layers.
    let deep = LayerPath::new(vec![0, 5], 8).unwrap();
    let mut c = PathCache::new(&deep);
    assert!(matches!(
        model.forward(&[1], &deep, &mut c, 0, Logits::Last),
        Err(Error::PathDepthMismatch {
            path_layers: 8,
            model_layers: 4
        })
    ));
    // Path validation itself.
    assert!(LayerPath::new(vec![0, 4], 4).is_err());
    assert!(LayerPath::new(vec![1, 0], 4).is_err());
    assert!(LayerPath::new(vec![2, 2, 2], 4).is_err());
}

#[test]
fn paths_built_for_another_depth_are_refused_even_when_their_layers_fit() {
    let tiny = Tiny::llama();
    let (_dir, model) = tiny_model(&tiny, 35);
    let seq = ids(3, tiny.vocab, 36);
    // Layers 0..3 exist in the 4-layer model, but the paths mean other things at depths 8 and 3.
    for depth in [8, 3] {
        let other = LayerPath::new(vec![0, 1, 2], depth).unwrap();
        let mut cache = PathCache::new(&other);
        let e = model
            .forward(&seq, &other, &mut cache, 0, Logits::Last)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::PathDepthMismatch { path_layers, model_layers: 4 } if path_layers == depth
            ),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&depth.to_string()) && msg.contains('4'),
            "{msg}"
        );
        assert!(matches!(
            model.check_path(&other),
            Err(Error::PathDepthMismatch { .. })
        ));
    }
    // The same layers built for this depth run.
    let here = LayerPath::new(vec![0, 1, 2], tiny.layers).unwrap();
    model.check_path(&here).unwrap();
}
