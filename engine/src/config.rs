//! Model hyper-parameters, read from a Hugging Face `config.json` or from GGUF metadata, in one
//! shape the decoder understands.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Decoder families drllm runs. All are Llama-shaped; they differ in small details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, SmolLM2 and other `LlamaForCausalLM` checkpoints.
    Llama,
    /// Qwen2 / Qwen2.5: bias on the q, k and v projections.
    Qwen2,
    /// Qwen3: RMSNorm on each head of q and k before RoPE.
    Qwen3,
}

impl Arch {
    /// The family of a `model_type` or GGUF `general.architecture` name (case-insensitive;
    /// `smollm`/`smollm2` are Llama).
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "llama" | "smollm" | "smollm2" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            other => Err(Error::UnknownArchitecture(other.to_string())),
        }
    }
}

/// Llama 3 style RoPE frequency scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Llama3RopeScaling {
    /// Divisor of the low frequencies.
    pub factor: f32,
    /// Frequencies whose wavelength exceeds `original_max_position_embeddings / low_freq_factor`
    /// are divided by `factor`.
    pub low_freq_factor: f32,
    /// Frequencies whose wavelength is below `original_max_position_embeddings /
    /// high_freq_factor` are kept; between the two bounds the divisor is interpolated.
    pub high_freq_factor: f32,
    /// The context length the model was pre-trained with, in positions.
    pub original_max_position_embeddings: usize,
}

/// Everything the decoder needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The decoder family.
    pub arch: Arch,
    /// Number of token ids (rows of the embedding).
    pub vocab_size: usize,
    /// Width `d` of the hidden states.
    pub hidden_size: usize,
    /// Width of the MLP's gate and up projections.
    pub intermediate_size: usize,
    /// Number of decoder layers `L`.
    pub num_layers: usize,
    /// Query heads per layer.
    pub num_heads: usize,
    /// Key/value heads per layer (grouped-query attention; divides `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one attention head (even).
    pub head_dim: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// RoPE base θ.
    pub rope_theta: f32,
    /// Llama 3 RoPE scaling from `config.json`; `None` for none (GGUF files carry theirs as the
    /// `rope_freqs.weight` tensor instead).
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// GGUF files of the llama architecture store q/k permuted for interleaved RoPE.
    pub rope_interleaved: bool,
    /// Context length: positions a sequence may occupy.
    pub max_position_embeddings: usize,
    /// The LM head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// The q, k and v projections have biases (Qwen2, or `attention_bias`).
    pub qkv_bias: bool,
    /// RMSNorm on each q and k head before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Beginning-of-sequence token, when the model names one.
    pub bos_token_id: Option<u32>,
    /// Tokens that end generation (EOS, and for GGUF also EOT/EOM); may be empty.
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    /// Validates relations between fields that would otherwise fail deep inside a forward pass.
    pub(crate) fn check(&self, origin: &Path) -> Result<()> {
        let bad = |reason: String| Error::Config {
            path: origin.to_path_buf(),
            reason,
        };
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(bad(format!("{name} is 0")));
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads, self.num_kv_heads
            )));
        }
        if self.head_dim % 2 != 0 {
            return Err(bad(format!(
                "head_dim {} is odd; RoPE needs pairs",
                self.head_dim
            )));
        }
        if self.num_layers > u16::MAX as usize {
            return Err(bad(format!(
                "{} layers is more than drllm supports",
                self.num_layers
            )));
        }
        Ok(())
    }

    /// Reads the hyper-parameters a GGUF file's metadata holds. `tensor_dims` gives the shapes of
    /// the tensors (vocabulary size, tied head and bias presence are read off the tensors).
    pub(crate) fn from_gguf(
        path: &Path,
        md: &HashMap<String, Value>,
        tensor_dims: &dyn Fn(&str) -> Option<Vec<usize>>,
    ) -> Result<Self> {
        let bad = |reason: String| Error::Gguf {
            path: path.to_path_buf(),
            reason,
        };
        let arch_name = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .ok_or_else(|| bad("metadata key `general.architecture` is missing".into()))?
            .clone();
        let arch = Arch::parse(&arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let get_u = |k: &str| -> Result<usize> {
            let full = key(k);
            let v = md
                .get(&full)
                .ok_or_else(|| bad(format!("metadata key `{full}` is missing")))?;
            value_as_u64(v)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("metadata key `{full}` is not an integer")))
        };
        let get_f = |k: &str| -> Option<f64> { md.get(&key(k)).and_then(value_as_f64) };
        let hidden_size = get_u("embedding_length")?;
        let num_heads = get_u("attention.head_count")?;
        let num_kv_heads = get_u("attention.head_count_kv").unwrap_or(num_heads);
        let head_dim = get_u("attention.key_length").unwrap_or(hidden_size / num_heads.max(1));
        let embed = tensor_dims("token_embd.weight")
            .ok_or_else(|| bad("tensor `token_embd.weight` is missing".into()))?;
        let token_id = |k: &str| md.get(k).and_then(value_as_u64).map(|v| v as u32);
        let mut eos_token_ids = Vec::new();
        for k in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(id) = token_id(k) {
                if !eos_token_ids.contains(&id) {
                    eos_token_ids.push(id);
                }
            }
        }
        let cfg = Self {
            arch,
            vocab_size: embed[0],
            hidden_size,
            intermediate_size: get_u("feed_forward_length")?,
            num_layers: get_u("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: get_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: get_f("rope.freq_base").unwrap_or(10_000.0) as f32,
            // Llama 3 GGUF files carry their RoPE scaling as the `rope_freqs.weight` tensor.
            rope_scaling: None,
            rope_interleaved: arch == Arch::Llama,
            max_position_embeddings: get_u("context_length")?,
            tie_word_embeddings: tensor_dims("output.weight").is_none(),
            qkv_bias: tensor_dims("blk.0.attn_q.bias").is_some(),
            qk_norm: tensor_dims("blk.0.attn_q_norm.weight").is_some(),
            bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
            eos_token_ids,
        };
        cfg.check(path)?;
        Ok(cfg)
    }
}

pub(crate) fn value_as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

fn value_as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::F32(x) => Some(*x as f64),
        Value::F64(x) => Some(*x),
        other => value_as_u64(other).map(|x| x as f64),
    }
}
