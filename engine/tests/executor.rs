//! The path executor ([`Model::run_path`]) on a tiny random model: a route decided layer by layer
//! runs exactly the fixed path its decisions spell, on one sequence and on fused rows; resuming a
//! fixed path from a position with the state after its prefix equals running it whole; a
//! decision above 2 and a routed pass into a fixed-path cache are typed errors.

mod common;

use candle_core::{DType, Tensor};
use common::{ids, max_abs_diff, Tiny};
use drllm_engine::layer::Segments;
use drllm_engine::{
    Error, KvSlot, LayerPath, LoadOptions, Model, PathCache, PathError, Route, Rows,
};

fn tiny_model(tiny: &Tiny) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    tiny.write_hf(dir.path(), &tiny.weights(5), DType::F32, 1);
    let m = Model::from_hf_dir(dir.path(), &LoadOptions::exact()).unwrap();
    (dir, m)
}

#[test]
fn decided_routes_equal_the_fixed_paths_they_spell() {
    let tiny = Tiny::llama();
    let (_dir, model) = tiny_model(&tiny);
    let seq = ids(9, tiny.vocab, 6);
    for counts in [[1u8, 1, 1, 1], [2, 0, 1, 2], [0, 0, 0, 0], [0, 2, 2, 0]] {
        let fixed = LayerPath::from_counts(&counts).unwrap();
        let x = model.embed(&seq).unwrap();
        let route = Route::Path {
            path: &fixed,
            from: 0,
        };
        let a = model
            .run_path(x.clone(), Rows::Uncached, route, |_, _, _| ())
            .unwrap();
        let mut seen = Vec::new();
        let mut decide = |layer: usize, _: &Tensor| {
            seen.push(layer);
            Ok(counts[layer])
        };
        let mut visited = 0;
        let b = model
            .run_path(x, Rows::Uncached, Route::Decide(&mut decide), |_, _, _| {
                visited += 1
            })
            .unwrap();
        assert_eq!(seen, vec![0, 1, 2, 3], "one decision per layer, in order");
        assert_eq!(b.path, fixed, "{counts:?}");
        assert_eq!(visited, fixed.len(), "one visit per path position");
        assert_eq!(max_abs_diff(&a.hidden, &b.hidden), 0.0, "{counts:?}");
    }
}

#[test]
fn fused_rows_resume_from_a_prefix_state() {
    let tiny = Tiny::qwen2();
    let (_dir, model) = tiny_model(&tiny);
    let segs = Segments {
        ctx: 6,
        conts: vec![2, 3],
    };
    let x = model.embed(&ids(segs.rows(), tiny.vocab, 8)).unwrap();
    let path = LayerPath::from_counts(&[1, 2, 0, 1]).unwrap();
    let whole = |from: usize, x: Tensor, slots: &mut Vec<KvSlot>| {
        let rows = Rows::Fused { segs: &segs, slots };
        let mut states = Vec::new();
        let pass = model
            .run_path(x, rows, Route::Path { path: &path, from }, |pos, y, _| {
                states.push((pos, y.clone()))
            })
            .unwrap();
        (pass.hidden, states)
    };
    let mut all_slots = Vec::new();
    let (full, states) = whole(0, x, &mut all_slots);
    assert_eq!(all_slots.len(), path.len(), "one slot per path position");
    // Resume after position 1 (layers 0, 1) from the state the first pass visited there.
    let mut slots = all_slots[..2].to_vec();
    let (resumed, rest) = whole(2, states[1].1.clone(), &mut slots);
    assert_eq!(rest.iter().map(|s| s.0).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(slots.len(), path.len());
    assert!(max_abs_diff(&full, &resumed) < 1e-6);
}

#[test]
fn bad_decisions_and_routed_caches_are_typed_errors() {
    let tiny = Tiny::llama();
    let (_dir, model) = tiny_model(&tiny);
    let x = model.embed(&ids(4, tiny.vocab, 9)).unwrap();
    let mut three = |layer: usize, _: &Tensor| Ok(if layer == 2 { 3 } else { 1 });
    let e = model
        .run_path(
            x.clone(),
            Rows::Uncached,
            Route::Decide(&mut three),
            |_, _, _| (),
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::Path(PathError::BadCount { layer: 2, count: 3 })),
        "{e}"
    );
    let full = LayerPath::full(tiny.layers);
    let mut cache = PathCache::new(&full);
    let rows = Rows::Cached {
        cache: &mut cache,
        start: 0,
    };
    let mut one = |_: usize, _: &Tensor| Ok(1);
    let e = model
        .run_path(x.clone(), rows, Route::Decide(&mut one), |_, _, _| ())
        .unwrap_err();
    assert!(matches!(e, Error::CachePathMismatch { .. }), "{e}");
    // A path for a deeper model is refused.
    let deep = LayerPath::parse("0,5", 8).unwrap();
    let route = Route::Path {
        path: &deep,
        from: 0,
    };
    let e = model
        .run_path(x, Rows::Uncached, route, |_, _, _| ())
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::PathDepthMismatch {
                path_layers: 8,
                model_layers: 4
            }
        ),
        "{e}"
    );
}
