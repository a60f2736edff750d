//! Where weights come from: a GGUF file (ggml-quantized or float tensors) or a Hugging Face folder
//! of safetensors (f32/f16/bf16, single file or sharded). Both answer the same question — "give
//! me tensor X of layer i as the file holds it" — under their own naming scheme; what precision a
//! tensor is kept in is the model's decision ([`crate::model::LoadOptions`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::st_file::{StFiles, StTensor};

/// The tensors of a decoder, independent of file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Embed,
    Head,
    FinalNorm,
    RopeFreqs,
    AttnNorm,
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    QNorm,
    KNorm,
    FfnNorm,
    Gate,
    Up,
    Down,
}

impl Key {
    fn gguf_name(self, layer: usize) -> String {
        let global = match self {
            Key::Embed => Some("token_embd.weight"),
            Key::Head => Some("output.weight"),
            Key::FinalNorm => Some("output_norm.weight"),
            Key::RopeFreqs => Some("rope_freqs.weight"),
            _ => None,
        };
        if let Some(g) = global {
            return g.to_string();
        }
        let local = match self {
            Key::AttnNorm => "attn_norm.weight",
            Key::Q => "attn_q.weight",
            Key::K => "attn_k.weight",
            Key::V => "attn_v.weight",
            Key::O => "attn_output.weight",
            Key::QBias => "attn_q.bias",
            Key::KBias => "attn_k.bias",
            Key::VBias => "attn_v.bias",
            Key::QNorm => "attn_q_norm.weight",
            Key::KNorm => "attn_k_norm.weight",
            Key::FfnNorm => "ffn_norm.weight",
            Key::Gate => "ffn_gate.weight",
            Key::Up => "ffn_up.weight",
            _ => "ffn_down.weight",
        };
        format!("blk.{layer}.{local}")
    }

    fn hf_name(self, layer: usize) -> String {
        let global = match self {
            Key::Embed => Some("model.embed_tokens.weight"),
            Key::Head => Some("lm_head.weight"),
            Key::FinalNorm => Some("model.norm.weight"),
            Key::RopeFreqs => Some("rope_freqs.weight"),
            _ => None,
        };
        if let Some(g) = global {
            return g.to_string();
        }
        let local = match self {
            Key::AttnNorm => "input_layernorm.weight",
            Key::Q => "self_attn.q_proj.weight",
            Key::K => "self_attn.k_proj.weight",
            Key::V => "self_attn.v_proj.weight",
            Key::O => "self_attn.o_proj.weight",
            Key::QBias => "self_attn.q_proj.bias",
            Key::KBias => "self_attn.k_proj.bias",
            Key::VBias => "self_attn.v_proj.bias",
            Key::QNorm => "self_attn.q_norm.weight",
            Key::KNorm => "self_attn.k_norm.weight",
            Key::FfnNorm => "post_attention_layernorm.weight",
            Key::Gate => "mlp.gate_proj.weight",
            Key::Up => "mlp.up_proj.weight",
            _ => "mlp.down_proj.weight",
        };
        format!("model.layers.{layer}.{local}")
    }

    /// The shape the config implies for this tensor.
    fn expected_shape(self, c: &ModelConfig) -> Vec<usize> {
        let (d, hd) = (c.hidden_size, c.head_dim);
        match self {
            Key::Embed | Key::Head => vec![c.vocab_size, d],
            Key::FinalNorm | Key::AttnNorm | Key::FfnNorm => vec![d],
            Key::RopeFreqs => vec![hd / 2],
            Key::Q => vec![c.num_heads * hd, d],
            Key::K | Key::V => vec![c.num_kv_heads * hd, d],
            Key::O => vec![d, c.num_heads * hd],
            Key::QBias => vec![c.num_heads * hd],
            Key::KBias | Key::VBias => vec![c.num_kv_heads * hd],
            Key::QNorm | Key::KNorm => vec![hd],
            Key::Gate | Key::Up => vec![c.intermediate_size, d],
            Key::Down => vec![d, c.intermediate_size],
        }
    }
}

/// A tensor as its file holds it: dense in its own float dtype, ggml-quantized, or a safetensors
/// tensor not yet read (its consumer reads it, or maps it for a one-pass quantization).
pub(crate) enum Raw {
    /// f32, bf16 or f16.
    Dense(Tensor),
    /// A ggml block format (GGUF files only).
    Quant(QTensor),
    /// f32, bf16 or f16 in a safetensors file.
    File(StTensor),
}

impl Raw {
    /// The tensor as dense values: dense ones as they are, quantized ones dequantized to f32.
    pub(crate) fn into_dense(self) -> Result<Tensor> {
        Ok(match self {
            Raw::Dense(t) => t,
            Raw::Quant(q) => q.dequantize(&Device::Cpu)?,
            Raw::File(t) => t.read()?,
        })
    }

    /// The tensor as f32 values (norms, biases, RoPE factors).
    pub(crate) fn into_f32(self) -> Result<Tensor> {
        Ok(self.into_dense()?.to_dtype(DType::F32)?)
    }

    /// `(rows, cols)` of a 2-D tensor.
    pub(crate) fn dims2(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Raw::Dense(t) => t.dims2()?,
            Raw::Quant(q) => q.shape().dims2()?,
            Raw::File(t) => candle_core::Shape::from(t.dims()).dims2()?,
        })
    }
}

/// An opened weight file (or folder). Reads take `&self`, so layers can load in parallel.
pub(crate) enum Source {
    Gguf {
        path: PathBuf,
        content: gguf_file::Content,
    },
    Safetensors {
        dir: PathBuf,
        files: StFiles,
    },
}

impl Source {
    pub(crate) fn open_gguf(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| Error::Gguf {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Source::Gguf {
            path: path.to_path_buf(),
            content,
        })
    }

    /// Opens `model.safetensors` or the shards a `model.safetensors.index.json` lists.
    pub(crate) fn open_safetensors(dir: &Path) -> Result<Self> {
        let files = StFiles::open(&safetensors_files(dir)?)?;
        Ok(Source::Safetensors {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// A human-readable name for error messages.
    pub(crate) fn name(&self) -> String {
        match self {
            Source::Gguf { path, .. } => path.display().to_string(),
            Source::Safetensors { dir, .. } => dir.display().to_string(),
        }
    }

    pub(crate) fn gguf_metadata(&self) -> Option<&HashMap<String, gguf_file::Value>> {
        match self {
            Source::Gguf { content, .. } => Some(&content.metadata),
            Source::Safetensors { .. } => None,
        }
    }

    /// The config a GGUF file's metadata describes (a folder's is its `config.json`).
    pub(crate) fn gguf_config(&self) -> Result<ModelConfig> {
        let Source::Gguf { path, content } = self else {
            unreachable!("gguf_config is only called on GGUF sources")
        };
        ModelConfig::from_gguf(path, &content.metadata, &|name| self.dims_of(name))
    }

    fn tensor_name(&self, key: Key, layer: usize) -> String {
        match self {
            Source::Gguf { .. } => key.gguf_name(layer),
            Source::Safetensors { .. } => key.hf_name(layer),
        }
    }

    /// Shape of a tensor by its file name, if present.
    pub(crate) fn dims_of(&self, name: &str) -> Option<Vec<usize>> {
        match self {
            Source::Gguf { content, .. } => content
                .tensor_infos
                .get(name)
                .map(|t| t.shape.dims().to_vec()),
            Source::Safetensors { files, .. } => files.dims(name).map(<[usize]>::to_vec),
        }
    }

    /// Loads tensor `key` of `layer` as the file holds it, checking its shape against the
    /// config. `Ok(None)` when the file does not have it.
    pub(crate) fn get(&self, key: Key, layer: usize, cfg: &ModelConfig) -> Result<Option<Raw>> {
        let name = self.tensor_name(key, layer);
        let Some(dims) = self.dims_of(&name) else {
            return Ok(None);
        };
        let expected = key.expected_shape(cfg);
        if dims != expected {
            return Err(Error::ShapeMismatch {
                source_name: self.name(),
                tensor: name,
                expected,
                actual: dims,
            });
        }
        let raw = match self {
            Source::Gguf { path, content } => {
                let gguf_err = |e: &dyn std::fmt::Display| Error::Gguf {
                    path: path.clone(),
                    reason: format!("tensor `{name}`: {e}"),
                };
                let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
                let q = content
                    .tensor(&mut f, &name, &Device::Cpu)
                    .map_err(|e| gguf_err(&e))?;
                match q.dtype() {
                    GgmlDType::F32 => {
                        Raw::Dense(q.dequantize(&Device::Cpu).map_err(|e| gguf_err(&e))?)
                    }
                    GgmlDType::F16 => {
                        Raw::Dense(q.dequantize_f16(&Device::Cpu).map_err(|e| gguf_err(&e))?)
                    }
                    _ => Raw::Quant(q),
                }
            }
            Source::Safetensors { files, .. } => Raw::File(files.tensor(&name)?),
        };
        Ok(Some(raw))
    }

    /// Like [`Source::get`], but a missing tensor is an error.
    pub(crate) fn require(&self, key: Key, layer: usize, cfg: &ModelConfig) -> Result<Raw> {
        match self.get(key, layer, cfg)? {
            Some(t) => Ok(t),
            None => Err(Error::MissingTensor {
                source_name: self.name(),
                tensor: self.tensor_name(key, layer),
            }),
        }
    }

    /// Like [`Source::require`], as f32 values (norms, biases).
    pub(crate) fn require_f32(&self, key: Key, layer: usize, cfg: &ModelConfig) -> Result<Tensor> {
        self.require(key, layer, cfg)?.into_f32()
    }
}

/// `model.safetensors`, or the shards a `model.safetensors.index.json` lists.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: index.clone(),
            reason: e.to_string(),
        })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Config {
                path: index.clone(),
                reason: "`weight_map` object is missing".into(),
            })?;
        let mut shards: Vec<String> = map
            .values()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        shards.into_iter().map(|s| dir.join(s)).collect()
    } else {
        let single = dir.join("model.safetensors");
        if !single.exists() {
            return Err(Error::io(
                &single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors or model.safetensors.index.json in the folder",
                ),
            ));
        }
        vec![single]
    };
    for f in &files {
        if !f.exists() {
            return Err(Error::io(
                f,
                std::io::Error::new(std::io::ErrorKind::NotFound, "shard listed in the index"),
            ));
        }
    }
    Ok(files)
}
