//! Training on a tiny random model with synthetic examples whose target decisions are a function
//! of the input: the routers learn them (high validation macro-F1), and a second run reuses the
//! feature cache and ends with exactly the same weights and metrics.

use std::path::Path;

use candle_core::DType;
use drllm_core::router::{
    decision_labels, RouterConfig, Routers, Targets, TrainingConfig, CHECKPOINT_FILE,
};
use drllm_engine::testing::Tiny;
use drllm_engine::{LoadOptions, Model};
use drllm_trainer::{data::Example, feature_cache, train};
use rand::{Rng, SeedableRng};

/// Per class, the decisions of the 4 layers: prompts of class c use only tokens of band c.
const PATTERNS: [[u8; 4]; 3] = [[1, 0, 1, 1], [1, 1, 2, 1], [0, 1, 1, 2]];

fn examples(n: usize, vocab: usize, seed: u64) -> Vec<Example> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let band = vocab / 3;
    (0..n)
        .map(|i| {
            let c = i % 3;
            let len = rng.random_range(5..20);
            let ids: Vec<u32> = (0..len)
                .map(|_| (c * band + rng.random_range(0..band)) as u32)
                .collect();
            Example {
                question: format!("q{i}"),
                prompt_ids: ids,
                target: PATTERNS[c].to_vec(),
                labels: decision_labels(&PATTERNS[c]),
            }
        })
        .collect()
}

fn config(epochs: usize) -> TrainingConfig {
    TrainingConfig {
        epochs,
        batch_size: 8,
        grad_accum: 2,
        lr: 3e-3,
        weight_decay: 0.01,
        warmup_fraction: 0.05,
        focal_gamma: 2.0,
        class_beta: 0.999,
        val_fraction: 0.2,
        seed: 3,
        found_only: true,
        min_path_len: 0,
        targets: Targets::Best,
    }
}

/// One full run: features (cached under `cache_root`), then training into `out`.
fn run(
    model: &Model,
    exs: &[Example],
    cache_root: &Path,
    out: &Path,
    training: TrainingConfig,
) -> (RouterConfig, feature_cache::Built) {
    let n_train = exs.len() * 4 / 5;
    let (feats, built) =
        feature_cache::open_or_build(cache_root, model, "tiny", exs, 8, false).unwrap();
    let split = |r: std::ops::Range<usize>| train::Split {
        rows: r.clone().collect(),
        targets: exs[r].iter().map(|e| e.labels.as_slice()).collect(),
    };
    let mut cfg = RouterConfig::new("tiny", "tiny", 4, 64, 8, training);
    let routers = Routers::init(4, 64, 3).unwrap();
    train::train(
        &routers,
        &feats,
        &split(0..n_train),
        &split(n_train..exs.len()),
        &mut cfg,
        out,
        |_| {},
    )
    .unwrap();
    (cfg, built)
}

#[test]
fn routers_learn_input_dependent_decisions_and_cached_runs_are_identical() {
    let tiny = Tiny::llama();
    let dir = tempfile::tempdir().unwrap();
    let mdir = dir.path().join("model");
    tiny.write_hf(&mdir, &tiny.weights(5), DType::F32, 1);
    let model = Model::from_hf_dir(&mdir, &LoadOptions::exact()).unwrap();
    let exs = examples(150, tiny.vocab, 11);
    let cache_root = dir.path().join("cache");

    let (cfg, built) = run(&model, &exs, &cache_root, &dir.path().join("a"), config(30));
    assert_eq!((built.computed, built.reused), (150, 0));
    let first = cfg.history.first().unwrap().val.clone().unwrap();
    let last = cfg.history.last().unwrap().val.clone().unwrap();
    assert_eq!(cfg.history.len(), 30);
    assert!(
        last.macro_f1 > 0.95 && last.macro_f1 > first.macro_f1 + 0.2,
        "validation macro-F1 {:.3} after 30 epochs (first epoch {:.3})",
        last.macro_f1,
        first.macro_f1
    );
    assert!(
        (last.layers_pred - last.layers_target).abs() < 0.2,
        "{last:?}"
    );
    // The class weights follow the training targets' counts.
    let counts = cfg.class_counts;
    assert_eq!(counts.iter().sum::<u64>(), 120 * 4);
    assert!(
        cfg.class_weights[0] > cfg.class_weights[1],
        "{:?}",
        cfg.class_weights
    );

    // Again, from the cache: nothing recomputed, identical weights and metrics.
    let (cfg2, built2) = run(&model, &exs, &cache_root, &dir.path().join("b"), config(30));
    assert_eq!((built2.computed, built2.reused), (0, 150));
    let a = std::fs::read(dir.path().join("a").join(CHECKPOINT_FILE)).unwrap();
    let b = std::fs::read(dir.path().join("b").join(CHECKPOINT_FILE)).unwrap();
    assert!(a == b, "the checkpoints differ");
    let m = |c: &RouterConfig| {
        serde_json::to_string(
            &c.history
                .iter()
                .map(|e| (&e.train, &e.val))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    };
    assert_eq!(m(&cfg), m(&cfg2));
    // The checkpoint reads back into the same routers and refuses another model.
    let (loaded, routers) = RouterConfig::load(&dir.path().join("a")).unwrap();
    assert_eq!(routers.num_layers(), 4);
    loaded
        .header
        .check_model(&dir.path().join("a"), "tiny", 4, 64)
        .unwrap();
    let e = loaded
        .header
        .check_model(&dir.path().join("a"), "other", 4, 64)
        .unwrap_err();
    assert!(e.to_string().contains("was trained on model tiny"), "{e}");
}

#[test]
fn routers_learn_the_majority_of_soft_targets() {
    // Each class's targets: 70% its pattern, 30% the next class's. The routers should predict the
    // pattern (the weighted majority), agree with 70%+ of the target mass, and the expected target
    // layers follow the mixture.
    let tiny = Tiny::llama();
    let dir = tempfile::tempdir().unwrap();
    let mdir = dir.path().join("model");
    tiny.write_hf(&mdir, &tiny.weights(5), DType::F32, 1);
    let model = Model::from_hf_dir(&mdir, &LoadOptions::exact()).unwrap();
    let mut exs = examples(150, tiny.vocab, 11);
    for (i, e) in exs.iter_mut().enumerate() {
        let (c, n) = (i % 3, (i + 1) % 3);
        e.labels = decision_labels(&PATTERNS[c])
            .iter()
            .zip(decision_labels(&PATTERNS[n]))
            .map(|(a, b)| [0, 1, 2].map(|k| 0.7 * a[k] + 0.3 * b[k]))
            .collect();
    }
    // Equal class weights (β = 0): with the effective-number weights a rare class's 30% can
    // outweigh a common class's 70%, which moves the argmax off the majority by design.
    let equal = TrainingConfig {
        class_beta: 0.0,
        ..config(30)
    };
    let (cfg, _) = run(
        &model,
        &exs,
        &dir.path().join("cache"),
        &dir.path().join("s"),
        equal,
    );
    assert_eq!(cfg.class_weights, [1.0; 3]);
    let last = cfg.history.last().unwrap().val.clone().unwrap();
    assert!(last.accuracy > 0.95, "agreement with the majority {last:?}");
    assert!(last.agreement > 0.68 && last.agreement <= 1.0, "{last:?}");
    let expected: f64 = exs[120..]
        .iter()
        .map(|e| {
            e.labels
                .iter()
                .map(|q| (q[1] + 2.0 * q[2]) as f64)
                .sum::<f64>()
        })
        .sum::<f64>()
        / 30.0;
    assert!(
        (last.layers_target - expected).abs() < 1e-4,
        "{} vs {expected}",
        last.layers_target
    );
}
