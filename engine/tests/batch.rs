//! A batch of sequences through one path (`Model::forward_batch`: prompts being prefilled and
//! tokens being decoded, each after its own cache) gives every sequence exactly what running it
//! alone gives, on the real default model with its decode copy (the kernels a server uses).

use drllm_engine::{BatchSeq, LayerPath, LoadOptions, PathCache};

#[test]
fn a_batch_gives_each_sequence_what_it_gets_alone() {
    let Some(lm) = drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
    else {
        return;
    };
    let model = &lm.model;
    let path = LayerPath::full(model.num_layers());
    let ids = |n: usize, salt: u32| -> Vec<u32> {
        (0..n as u32)
            .map(|i| 100 + (i * 7919 + salt * 104729) % 40000)
            .collect()
    };
    // (tokens already cached, new tokens): a fresh prompt, two decode steps, a prompt resumed
    // after a cached prefix, a two-token prompt.
    let shapes = [(0, 23), (11, 1), (30, 1), (7, 9), (0, 2)];
    let prefix = |i: usize, cached: usize| {
        let mut cache = PathCache::new(&path);
        if cached > 0 {
            model
                .forward_hidden(&ids(cached, i as u32), &path, &mut cache, 0)
                .unwrap();
        }
        cache
    };
    let news: Vec<Vec<u32>> = (0..shapes.len())
        .map(|i| ids(shapes[i].1, 50 + i as u32))
        .collect();
    let alone: Vec<_> = (shapes.iter().enumerate())
        .map(|(i, &(cached, _))| {
            let mut cache = prefix(i, cached);
            (model.forward_hidden(&news[i], &path, &mut cache, cached)).unwrap()
        })
        .collect();
    let mut caches: Vec<PathCache> = (shapes.iter().enumerate())
        .map(|(i, &(cached, _))| prefix(i, cached))
        .collect();
    let mut seqs: Vec<BatchSeq<'_>> = (caches.iter_mut().zip(&news).zip(&shapes))
        .map(|((cache, ids), &(start, _))| BatchSeq { ids, cache, start })
        .collect();
    let batched = model.forward_batch(&path, &mut seqs, true).unwrap();
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        let d = d.max(0).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(
            d, 0.0,
            "sequence {i} {:?}: batched differs by {d}",
            shapes[i]
        );
    }
    for (c, &(start, n)) in caches.iter().zip(&shapes) {
        assert_eq!(c.len(), start + n);
    }
}
