//! Token routes against transformers itself: on tiny real-shaped checkpoints of each architecture
//! (`scripts/make-shaped-model.py`), the engine's token route (only the marked rows run a layer)
//! equals transformers' own decoder layers run on every token and mixed by the same per-token
//! masks (`scripts/torch_token_mix.py`), under both treatments of a skipped token's keys.
//!
//! Needs python3 with torch, transformers, safetensors and gguf and the default model (as the
//! transformers parity test); `DRLLM_SKIP_PYTHON_TESTS=1` skips it.

use std::process::Command;

use candle_core::Tensor;
use drllm_engine::testing::{make_shaped, max_diff_and_scale, python_prerequisites, repo, run};
use drllm_engine::{LoadOptions, Model, Route, Rows, SkippedKv};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// transformers' final hidden rows along `masks` (`[layer][row]`).
fn reference(dir: &std::path::Path, ids: &[u32], masks: &[Vec<bool>], kv: SkippedKv) -> Vec<f32> {
    let spec = serde_json::json!({
        "ids": ids,
        "kv": kv.name(),
        "masks": masks.iter().map(|m| m.iter().map(|&r| u8::from(r)).collect::<Vec<_>>()).collect::<Vec<_>>(),
    });
    let input = dir.join(format!("mix-{kv}.json"));
    std::fs::write(&input, spec.to_string()).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("scripts/torch_token_mix.py"))
        .arg("--model")
        .arg(dir)
        .arg("--input")
        .arg(&input);
    let v: serde_json::Value = serde_json::from_str(&run(&mut cmd)).expect("reference JSON");
    v["hidden"]
        .as_array()
        .expect("hidden")
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect()
}

fn routed(model: &Model, ids: &[u32], masks: &[Vec<bool>], kv: SkippedKv) -> Vec<f32> {
    let mut gate = |layer: usize, _: &Tensor| Ok(masks[layer].clone());
    let route = Route::Tokens {
        gate: &mut gate,
        kv,
    };
    let x = model.embed(ids).unwrap();
    let pass = model
        .run_path(x, Rows::Uncached, route, |_, _, _| ())
        .unwrap();
    pass.hidden.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn token_routes_match_transformers_mixing_by_the_same_masks() {
    if !python_prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for arch in ["llama3", "qwen2", "qwen3"] {
        let dir = tmp.path().join(arch);
        make_shaped(arch, "v5", "f32", false, &dir);
        let model = Model::from_hf_dir(&dir, &LoadOptions::exact()).unwrap();
        let ids: Vec<u32> = (0..24).map(|i| (i * 7919 + 13) % 49000 + 100).collect();
        let mut rng = StdRng::seed_from_u64(5);
        let masks: Vec<Vec<bool>> = (0..model.num_layers())
            .map(|l| {
                (0..ids.len())
                    .map(|_| l == 0 || rng.random_bool(0.6))
                    .collect()
            })
            .collect();
        for kv in [SkippedKv::Project, SkippedKv::Mask] {
            let want = reference(&dir, &ids, &masks, kv);
            let got = routed(&model, &ids, &masks, kv);
            let (d, scale) = max_diff_and_scale(&got, &want, 1e-6);
            assert!(d / scale < 1e-4, "{arch} {kv}: {d} of {scale}");
        }
    }
}
