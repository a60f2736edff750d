//! A batch of sequences, each under its own route (`Model::forward_batch`: prompts being
//! prefilled and tokens being decoded, each after its own cache, along the full path, a pruned
//! path with a repeat, a per-input decision per layer, token routes of both skipped-key kinds)
//! gives every sequence exactly what running it alone gives, on the real default model with its
//! decode copy (the kernels a server uses).

use candle_core::Tensor;
use drllm_engine::exec::{Route, Rows};
use drllm_engine::layer::Segments;
use drllm_engine::{BatchSeq, LayerPath, LoadOptions, Model, PathCache, SeqRoute, SkippedKv};

/// How a test sequence routes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Full,
    Pruned,
    Decide,
    Tokens(SkippedKv),
}

/// A decision from the state alone, so that equal states decide alike: skip, run or repeat.
fn decide(layer: usize, x: &Tensor) -> drllm_engine::Result<u8> {
    let v = x.get(0)?.get(layer)?.to_scalar::<f32>()?;
    Ok(match layer {
        0 | 1 => 1,
        _ if v < -0.02 => 0,
        _ if v > 0.05 => 2,
        _ => 1,
    })
}

/// A token gate from each row's state: every row runs the first layers, then a row runs when a
/// coordinate of its state is positive.
fn gate(layer: usize, x: &Tensor) -> drllm_engine::Result<Vec<bool>> {
    let rows = x.to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .map(|r| layer < 3 || r[layer * 7] > 0.0)
        .collect())
}

fn ids(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| 100 + (i * 7919 + salt * 104729) % 40000)
        .collect()
}

/// The cache a sequence of `kind` starts from, its first `cached` tokens run alone.
fn prefix(model: &Model, kind: Kind, pruned: &LayerPath, cached: usize, salt: u32) -> PathCache {
    let full = LayerPath::full(model.num_layers());
    let mut cache = PathCache::new(match kind {
        Kind::Pruned => pruned,
        _ => &full,
    });
    if cached > 0 {
        alone(model, kind, &ids(cached, salt), &mut cache, 0);
    }
    cache
}

/// The sequence run by itself, through the path executor.
fn alone(model: &Model, kind: Kind, ids: &[u32], cache: &mut PathCache, start: usize) -> Tensor {
    let x = model.embed(ids).unwrap();
    let rows = Rows::Cached { cache, start };
    let run = |rows, route| {
        model
            .run_path(x.clone(), rows, route, |_, _, _| ())
            .unwrap()
    };
    match kind {
        Kind::Full | Kind::Pruned => {
            let path = rows_path(&rows);
            run(
                rows,
                Route::Path {
                    path: &path,
                    from: 0,
                },
            )
            .hidden
        }
        Kind::Decide => {
            let segs = Segments {
                ctx: ids.len(),
                conts: Vec::new(),
            };
            let mut slots = Vec::new();
            let fused = Rows::Fused {
                segs: &segs,
                slots: &mut slots,
            };
            let mut d = decide;
            let pass = run(fused, Route::Decide(&mut d));
            *cache_of(rows) = PathCache::from_slots(&pass.path, slots, ids.len()).unwrap();
            pass.hidden
        }
        Kind::Tokens(kv) => {
            let mut g = gate;
            run(rows, Route::Tokens { gate: &mut g, kv }).hidden
        }
    }
}

fn rows_path(rows: &Rows<'_>) -> LayerPath {
    match rows {
        Rows::Cached { cache, .. } => cache.path().clone(),
        _ => unreachable!(),
    }
}

fn cache_of<'a>(rows: Rows<'a>) -> &'a mut PathCache {
    match rows {
        Rows::Cached { cache, .. } => cache,
        _ => unreachable!(),
    }
}

#[test]
fn a_batch_of_routes_gives_each_sequence_what_it_gets_alone() {
    let Some(lm) = drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
    else {
        return;
    };
    let model = &lm.model;
    let l = model.num_layers() as u16;
    let mut pruned: Vec<u16> = (0..l).filter(|&i| i % 5 != 3).collect();
    pruned.insert(4, pruned[3]); // a repeat
    let pruned = LayerPath::new(pruned, l as usize).unwrap();
    use Kind::*;
    let (mask, project) = (Tokens(SkippedKv::Mask), Tokens(SkippedKv::Project));
    // (kind, tokens already cached, new tokens): fresh prompts, decode steps, prompts resumed
    // after a cached prefix, under every kind of route.
    let shapes = [
        (Full, 0, 23),
        (Full, 11, 1),
        (Pruned, 30, 1),
        (Pruned, 7, 9),
        (Decide, 0, 17),
        (Decide, 0, 2),
        (mask, 0, 19),
        (mask, 12, 1),
        (mask, 9, 6),
        (project, 0, 14),
        (project, 21, 1),
        (Full, 0, 2),
    ];
    let news: Vec<Vec<u32>> = (0..shapes.len())
        .map(|i| ids(shapes[i].2, 50 + i as u32))
        .collect();
    let start = |i: usize| prefix(model, shapes[i].0, &pruned, shapes[i].1, i as u32);
    let mut alone_caches: Vec<PathCache> = (0..shapes.len()).map(start).collect();
    let alone: Vec<Tensor> = (alone_caches.iter_mut().enumerate())
        .map(|(i, c)| self::alone(model, shapes[i].0, &news[i], c, shapes[i].1))
        .collect();
    let mut caches: Vec<PathCache> = (0..shapes.len()).map(start).collect();
    let mut seqs: Vec<BatchSeq<'_>> = (caches.iter_mut().zip(&news).enumerate())
        .map(|(i, (cache, ids))| BatchSeq {
            ids,
            cache,
            start: shapes[i].1,
            route: match shapes[i].0 {
                Full | Pruned => SeqRoute::Path,
                Decide => SeqRoute::Decide(Box::new(decide)),
                Tokens(kv) => SeqRoute::Tokens {
                    gate: Box::new(gate),
                    kv,
                },
            },
        })
        .collect();
    let batched = model.forward_batch(&mut seqs, true).unwrap();
    drop(seqs);
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        let d = d.max(0).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(
            d, 0.0,
            "sequence {i} {:?}: batched differs by {d}",
            shapes[i]
        );
    }
    for (i, (c, a)) in caches.iter().zip(&alone_caches).enumerate() {
        assert_eq!(c.len(), shapes[i].1 + shapes[i].2, "sequence {i}");
        assert_eq!(c.path(), a.path(), "sequence {i}: the path run");
        assert_eq!(
            c.size_in_bytes(),
            a.size_in_bytes(),
            "sequence {i}: keys kept"
        );
    }
    let decided = caches[4].path();
    assert!(
        decided.len() != decided.num_layers() || decided.counts().contains(&0),
        "the decisions should skip or repeat somewhere: {decided}"
    );
}
