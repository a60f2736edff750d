//! Test helpers (feature `testing`), kept out of the public loader so no binary carries them.
//! Tiny random models: the same weights written as a Hugging Face folder (safetensors +
//! config.json, any float dtype, single file or sharded) or as a GGUF file (any ggml dtype, q/k
//! permuted the way llama.cpp's converter does for the llama architecture). And the default model
//! for suites that need a real one, skipped loudly when absent (never under CI). Shared by the
//! tests of this crate, core, worker, trainer, evaluator and the end-to-end tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::loader::{default_model_path, load, LoadedModel, FETCH_COMMAND};
use crate::model::LoadOptions;

#[derive(Clone, Debug)]
pub struct Tiny {
    pub arch: &'static str,
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub tie: bool,
    pub llama3_scaling: bool,
    pub max_pos: usize,
}

impl Tiny {
    pub fn llama() -> Self {
        Self {
            arch: "llama",
            vocab: 96,
            hidden: 64,
            intermediate: 128,
            layers: 4,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            tie: false,
            llama3_scaling: false,
            max_pos: 256,
        }
    }

    /// Sizes that every ggml block format accepts (rows a multiple of 256).
    pub fn llama_k_quant() -> Self {
        Self {
            vocab: 64,
            hidden: 256,
            intermediate: 512,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            ..Self::llama()
        }
    }

    pub fn qwen2() -> Self {
        Self {
            arch: "qwen2",
            tie: true,
            ..Self::llama()
        }
    }

    pub fn qwen3() -> Self {
        Self {
            arch: "qwen3",
            head_dim: 32, // qwen3 decouples head_dim from hidden / heads
            ..Self::llama()
        }
    }

    pub fn config_json(&self) -> serde_json::Value {
        let mut c = serde_json::json!({
            "model_type": self.arch,
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "max_position_embeddings": self.max_pos,
            "tie_word_embeddings": self.tie,
            "attention_bias": false,
            "hidden_act": "silu",
            "sliding_window": 4096,
            "max_window_layers": self.layers,
            "use_sliding_window": false,
            "bos_token_id": 1,
            "eos_token_id": 2,
        });
        if self.llama3_scaling {
            c["rope_scaling"] = serde_json::json!({
                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64
            });
            c["rope_theta"] = serde_json::json!(500000.0);
        }
        c
    }

    /// Random weights under Hugging Face names, seeded.
    pub fn weights(&self, seed: u64) -> HashMap<String, Tensor> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut w = HashMap::new();
        let mut rand = |shape: &[usize], scale: f32, offset: f32| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| offset + scale * (rng.random::<f32>() * 2.0 - 1.0))
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        let (d, hd, i) = (self.hidden, self.head_dim, self.intermediate);
        let (qd, kvd) = (self.heads * hd, self.kv_heads * hd);
        w.insert(
            "model.embed_tokens.weight".into(),
            rand(&[self.vocab, d], 1.0, 0.0),
        );
        if !self.tie {
            w.insert("lm_head.weight".into(), rand(&[self.vocab, d], 0.2, 0.0));
        }
        w.insert("model.norm.weight".into(), rand(&[d], 0.2, 1.0));
        for l in 0..self.layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let ws = 1.0 / (d as f32).sqrt();
            w.insert(p("input_layernorm.weight"), rand(&[d], 0.2, 1.0));
            w.insert(p("post_attention_layernorm.weight"), rand(&[d], 0.2, 1.0));
            w.insert(p("self_attn.q_proj.weight"), rand(&[qd, d], ws * 2.0, 0.0));
            w.insert(p("self_attn.k_proj.weight"), rand(&[kvd, d], ws * 2.0, 0.0));
            w.insert(p("self_attn.v_proj.weight"), rand(&[kvd, d], ws, 0.0));
            w.insert(p("self_attn.o_proj.weight"), rand(&[d, qd], ws, 0.0));
            w.insert(p("mlp.gate_proj.weight"), rand(&[i, d], ws, 0.0));
            w.insert(p("mlp.up_proj.weight"), rand(&[i, d], ws, 0.0));
            w.insert(
                p("mlp.down_proj.weight"),
                rand(&[d, i], 1.0 / (i as f32).sqrt(), 0.0),
            );
            if self.arch == "qwen2" {
                w.insert(p("self_attn.q_proj.bias"), rand(&[qd], 0.1, 0.0));
                w.insert(p("self_attn.k_proj.bias"), rand(&[kvd], 0.1, 0.0));
                w.insert(p("self_attn.v_proj.bias"), rand(&[kvd], 0.1, 0.0));
            }
            if self.arch == "qwen3" {
                w.insert(p("self_attn.q_norm.weight"), rand(&[hd], 0.2, 1.0));
                w.insert(p("self_attn.k_norm.weight"), rand(&[hd], 0.2, 1.0));
            }
        }
        w
    }

    /// Writes config.json + model.safetensors (or `shards` shards with an index) in `dtype`.
    pub fn write_hf(&self, dir: &Path, w: &HashMap<String, Tensor>, dtype: DType, shards: usize) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), self.config_json().to_string()).unwrap();
        let conv: HashMap<String, Tensor> = w
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(dtype).unwrap()))
            .collect();
        if shards <= 1 {
            candle_core::safetensors::save(&conv, dir.join("model.safetensors")).unwrap();
            return;
        }
        let mut names: Vec<&String> = conv.keys().collect();
        names.sort();
        let mut map = serde_json::Map::new();
        for s in 0..shards {
            let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, shards);
            let part: HashMap<String, Tensor> = names
                .iter()
                .enumerate()
                .filter(|(i, _)| i % shards == s)
                .map(|(_, n)| {
                    map.insert((*n).clone(), serde_json::json!(file));
                    ((*n).clone(), conv[*n].clone())
                })
                .collect();
            candle_core::safetensors::save(&part, dir.join(&file)).unwrap();
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }

    /// Writes the weights as a GGUF file with every matrix in `dtype` (norms and biases f32).
    pub fn write_gguf(&self, path: &Path, w: &HashMap<String, Tensor>, dtype: GgmlDType) {
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        for (name, t) in w {
            let gname = gguf_name(name);
            let t = if self.arch == "llama"
                && (name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight"))
            {
                let heads = if name.ends_with("q_proj.weight") {
                    self.heads
                } else {
                    self.kv_heads
                };
                permute_for_interleaved_rope(t, heads)
            } else {
                t.clone()
            };
            let dt = if t.rank() == 1 { GgmlDType::F32 } else { dtype };
            tensors.push((gname, QTensor::quantize(&t, dt).unwrap()));
        }
        if self.llama3_scaling {
            // What llama.cpp's converter writes for Llama 3 scaling: per-frequency divisors.
            let f = llama3_rope_factors(self.head_dim, 500000.0, 8.0, 1.0, 4.0, 64.0);
            let n = f.len();
            let t = Tensor::from_vec(f, n, &Device::Cpu).unwrap();
            tensors.push((
                "rope_freqs.weight".into(),
                QTensor::quantize(&t, GgmlDType::F32).unwrap(),
            ));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let a = self.arch;
        let theta = if self.llama3_scaling {
            500000.0
        } else {
            10000.0
        };
        let u = |v: usize| gguf_file::Value::U32(v as u32);
        let md: Vec<(String, gguf_file::Value)> = vec![
            (
                "general.architecture".into(),
                gguf_file::Value::String(a.into()),
            ),
            (format!("{a}.block_count"), u(self.layers)),
            (format!("{a}.embedding_length"), u(self.hidden)),
            (format!("{a}.feed_forward_length"), u(self.intermediate)),
            (format!("{a}.attention.head_count"), u(self.heads)),
            (format!("{a}.attention.head_count_kv"), u(self.kv_heads)),
            (format!("{a}.attention.key_length"), u(self.head_dim)),
            (format!("{a}.rope.dimension_count"), u(self.head_dim)),
            (
                format!("{a}.attention.layer_norm_rms_epsilon"),
                gguf_file::Value::F32(1e-5),
            ),
            (format!("{a}.rope.freq_base"), gguf_file::Value::F32(theta)),
            (format!("{a}.context_length"), u(self.max_pos)),
            ("tokenizer.ggml.eos_token_id".into(), u(2)),
        ];
        let md_refs: Vec<(&str, &gguf_file::Value)> =
            md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut f = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
    }
}

/// Divisors of the RoPE inverse frequencies for Llama 3 scaling, computed the way llama.cpp's
/// converter does (an independent formulation of the scaling the engine applies from config.json).
fn llama3_rope_factors(
    hd: usize,
    theta: f32,
    factor: f32,
    low: f32,
    high: f32,
    orig: f32,
) -> Vec<f32> {
    (0..hd)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / theta.powf(i as f32 / hd as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < orig / high {
                1.0
            } else if wavelen > orig / low {
                factor
            } else {
                let smooth = (orig / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// llama.cpp's converter permutes q/k rows so that rotary pairs are adjacent (interleaved RoPE).
fn permute_for_interleaved_rope(w: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = w.dims2().unwrap();
    let hd = out / heads;
    w.reshape((heads, 2, hd / 2, inp))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((out, inp))
        .unwrap()
}

pub fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, local) = rest.split_once('.').unwrap();
    let local = match local {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("no GGUF name for {other}"),
    };
    format!("blk.{layer}.{local}")
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len(), "shapes differ");
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Largest |got − want| over two equally long slices, and the reference's largest |value| (at
/// least `floor`): a test asserts their ratio.
pub fn max_diff_and_scale(got: &[f32], want: &[f32], floor: f32) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(floor);
    let d = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    (d, scale)
}

/// Deterministic token ids below `vocab`.
pub fn ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// A test's prerequisite outside Rust (the default model, a Python package): `true` when
/// `present`. Missing, it is a failure that says how to get it (`how`), since README's test
/// command (`scripts/test.sh`) sets everything up; only when `DRLLM_ALLOW_SKIP` is set is the test
/// skipped instead, loudly and counted ([`skipped`]).
pub fn prerequisite(present: bool, what: &str, how: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("DRLLM_ALLOW_SKIP").is_none() {
        panic!(
            "{what} is missing: {how} (`bash scripts/test.sh` sets up every prerequisite; \
             DRLLM_ALLOW_SKIP=1 skips such tests instead)"
        );
    }
    skipped(&format!("{what} is missing ({how})"));
    false
}

/// Reports a test skipped on request: a loud line on stderr and one line in the file
/// `$DRLLM_SKIP_LOG`, which `scripts/test.sh` counts at the end of the run.
pub fn skipped(why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    eprintln!("\n!!!!!!!! SKIPPED {test}: {why} !!!!!!!!\n");
    if let Some(log) = std::env::var_os("DRLLM_SKIP_LOG") {
        use std::io::Write;
        let line = format!("{test}: {why}\n");
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log);
        if let Err(e) = file.and_then(|mut f| f.write_all(line.as_bytes())) {
            panic!("cannot count the skip in DRLLM_SKIP_LOG: {e}");
        }
    }
}

/// Whether `python3` can import `module` (a [`prerequisite`]; `pip` names its package).
pub fn python_has(module: &str, pip: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    prerequisite(
        ok,
        &format!("the Python module `{module}`"),
        &format!("python3 -m pip install {pip}"),
    )
}

/// For test suites that need the default model: its path, or `None` when it is absent and
/// skipping was asked for (see [`prerequisite`]).
pub fn default_model_for_tests() -> Option<PathBuf> {
    let path = default_model_path();
    let how = format!("run {FETCH_COMMAND}");
    let what = format!("the default model ({})", path.display());
    prerequisite(path.is_file(), &what, &how).then_some(path)
}

/// For test suites: the default model loaded with `opts`, or `None` when it is absent and skipping
/// was asked for ([`default_model_for_tests`]). A model that is there but does not
/// load is a failure.
pub fn load_default_model_for_tests(opts: &LoadOptions) -> Option<LoadedModel> {
    let path = default_model_for_tests()?;
    let spec = path.to_string_lossy();
    Some(load(&spec, opts).unwrap_or_else(|e| panic!("loading the default model: {e}")))
}

/// The repository's root (scripts live under it).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// For tests against transformers: `true` when they should run. A missing Python module or the
/// default model (its tokenizer goes into the shaped checkpoints) fails with the fix, or skips
/// (counted) when asked to (`DRLLM_SKIP_PYTHON_TESTS`, `DRLLM_ALLOW_SKIP`).
pub fn python_prerequisites() -> bool {
    if std::env::var_os("DRLLM_SKIP_PYTHON_TESTS").is_some() {
        skipped("DRLLM_SKIP_PYTHON_TESTS is set");
        return false;
    }
    ["torch", "transformers", "safetensors", "gguf"]
        .into_iter()
        .all(|m| python_has(m, "torch transformers safetensors gguf"))
        && default_model_for_tests().is_some()
}

/// Runs `cmd` and returns its stdout; a failure shows its stderr.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("python3 runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Writes a tiny checkpoint of `arch` in `form` and `dtype` (with a q8_0 GGUF when `gguf`), as
/// the installed transformers writes it (`scripts/make-shaped-model.py`).
pub fn make_shaped(arch: &str, form: &str, dtype: &str, gguf: bool, out: &Path) {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(repo().join("scripts/make-shaped-model.py")).args([
        "--arch",
        arch,
        "--size",
        "tiny",
        "--dtype",
        dtype,
        "--config-form",
        form,
        "--out",
    ]);
    cmd.arg(out);
    if gguf {
        cmd.args(["--gguf", "q8_0"]);
    }
    run(&mut cmd);
}
