//! The engine against transformers itself, on real-shaped tiny checkpoints that the installed
//! transformers writes (`scripts/make-shaped-model.py`): every architecture (Llama 3 with llama3
//! RoPE scaling and a tied head, Qwen2 with q/k/v biases, Qwen3 with q/k norms and its own
//! head_dim) × both config forms (transformers 5's `rope_parameters`, the classic top-level keys)
//! × every weight dtype (f32, bf16, f16 safetensors and a q8_0 GGUF of the same weights), in
//! exact mode, along layer paths with skips and a repeat (`scripts/torch_path_logits.py` runs
//! transformers' own decoder layers along the same paths).
//!
//! Needs python3 with torch, transformers, safetensors and gguf (`.ci/run` installs them) and the
//! default model (its tokenizer goes into the checkpoints; `scripts/fetch-model.sh`). Missing ones
//! fail the test with the command that installs them; `DRLLM_SKIP_PYTHON_TESTS=1` skips it.

use std::path::Path;
use std::process::Command;

use drllm_engine::{DTypeChoice, LayerPath, LoadOptions, Logits, Model, ModelConfig, PathCache};

/// Layer paths of the 4-layer tiny shapes: full depth, two skips, a repeat.
const PATHS: [&[u16]; 3] = [&[0, 1, 2, 3], &[0, 2, 3], &[0, 1, 1, 2, 3]];

use drllm_engine::testing::{
    make_shaped as make, python_prerequisites as prerequisites, repo, run,
};

/// transformers' last-position logits along each of [`PATHS`], f32.
fn reference(dir: &Path, gguf: Option<&Path>, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("scripts/torch_path_logits.py"))
        .arg("--model")
        .arg(dir);
    if let Some(g) = gguf {
        cmd.arg("--gguf").arg(g);
    }
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    cmd.args(["--ids", &ids.join(",")]);
    for p in PATHS {
        let p: Vec<String> = p.iter().map(u16::to_string).collect();
        cmd.args(["--path", &p.join(",")]);
    }
    let v: serde_json::Value = serde_json::from_str(&run(&mut cmd)).expect("reference JSON");
    v["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| {
            p["logits"]
                .as_array()
                .expect("logits")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        })
        .collect()
}

/// The engine's last-position logits along each of [`PATHS`].
fn ours(model: &Model, ids: &[u32]) -> Vec<Vec<f32>> {
    PATHS
        .iter()
        .map(|p| {
            let path = LayerPath::new(p.to_vec(), model.num_layers()).unwrap();
            let mut cache = PathCache::new(&path);
            model
                .forward(ids, &path, &mut cache, 0, Logits::Last)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

/// Largest |a - b| relative to the reference's largest |logit|, and whether the argmax agrees.
fn compare(a: &[f32], b: &[f32]) -> (f32, bool) {
    assert_eq!(a.len(), b.len(), "vocabulary sizes differ");
    let (d, scale) = drllm_engine::testing::max_diff_and_scale(a, b, 1e-6);
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map(|(i, _)| i)
    };
    (d / scale, argmax(a) == argmax(b))
}

fn ids() -> Vec<u32> {
    // 40 positions: long enough for the tiny llama3 shape's RoPE scaling to matter.
    (0..40).map(|i| (i * 7919 + 13) % 49000 + 100).collect()
}

/// Every path within `tol` (relative to the largest |logit|); exact modes (`tol` ≤ 1e-4) must
/// also rank the same token first (approximate ones may swap near-ties of a random model).
fn check(label: &str, ours: &[Vec<f32>], reference: &[Vec<f32>], tol: f32) {
    for (p, (a, b)) in PATHS.iter().zip(ours.iter().zip(reference)) {
        let (d, same_top) = compare(a, b);
        eprintln!("{label} path {p:?}: max |Δ| / max |logit| = {d:.2e}, same argmax {same_top}");
        assert!(
            d < tol && (same_top || tol > 1e-4),
            "{label} path {p:?}: relative max |Δ| {d:.2e} (tolerance {tol:.0e}), same argmax {same_top}"
        );
    }
}

/// Exact mode matches transformers f32 for one architecture in every config form and dtype.
fn parity(arch: &str) {
    if !prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ids = ids();
    let mut configs = Vec::new();
    for form in ["v5", "classic"] {
        for dtype in ["f32", "bf16", "f16"] {
            let dir = tmp.path().join(format!("{arch}-{form}-{dtype}"));
            let gguf = dtype == "f32";
            make(arch, form, dtype, gguf, &dir);
            configs.push(ModelConfig::from_hf_json(&dir.join("config.json")).unwrap());
            let refs = reference(&dir, None, &ids);
            let model = Model::from_hf_dir(&dir, &LoadOptions::exact()).unwrap();
            check(
                &format!("{arch} {form} {dtype}"),
                &ours(&model, &ids),
                &refs,
                1e-5,
            );
            if dtype == "bf16" {
                // bf16 compute (weights as stored, activations rounded per matmul): near, not exact.
                let opts = LoadOptions {
                    dtype: DTypeChoice::Bf16,
                    decode_dtype: None,
                    ..LoadOptions::exact()
                };
                let model = Model::from_hf_dir(&dir, &opts).unwrap();
                check(
                    &format!("{arch} {form} bf16 compute"),
                    &ours(&model, &ids),
                    &refs,
                    3e-2,
                );
            }
            if gguf {
                let file = dir.join("model-q8_0.gguf");
                let refs = reference(&dir, Some(&file), &ids);
                let model = Model::from_gguf(&file, &LoadOptions::exact()).unwrap();
                check(
                    &format!("{arch} {form} q8_0 gguf"),
                    &ours(&model, &ids),
                    &refs,
                    1e-5,
                );
                let model = Model::from_gguf(&file, &LoadOptions::default()).unwrap();
                check(
                    &format!("{arch} {form} q8_0 gguf, default mode"),
                    &ours(&model, &ids),
                    &refs,
                    3e-2,
                );
            }
        }
    }
    // Both config forms describe the same model.
    assert!(
        configs.windows(2).all(|w| w[0] == w[1]),
        "{arch}: configs differ: {configs:#?}"
    );
}

#[test]
fn llama3_matches_transformers() {
    parity("llama3");
}

#[test]
fn qwen2_matches_transformers() {
    parity("qwen2");
}

#[test]
fn qwen3_matches_transformers() {
    parity("qwen3");
}
