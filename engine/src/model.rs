//! The decoder: loads weights from any [`crate::weights`] source and runs token ids along any
//! [`LayerPath`]. The layer-level primitives (`embed`, `run_layer`, `head`) are public so the search
//! can keep hidden states after a shared path prefix and run only what differs.

use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use candle_nn::ops::rms_norm;

use crate::cache::{KvSlot, PathCache};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::exec::{Route, Rows};
use crate::layer::{DecoderLayer, Segments};
use crate::linear::{KernelPolicy, Linear};
use crate::path::{LayerPath, PathError};
use crate::rope::{Rope, RopeFreqs};
use crate::weights::{Key, Source};

/// How to hold the weights in memory.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Quantized copy of every matrix for single-row (decode) matmuls; `None` keeps only f32.
    /// CPU only: on a GPU every matmul uses the f32 weights.
    pub decode_dtype: Option<GgmlDType>,
    /// Which copy each matmul uses.
    pub policy: KernelPolicy,
    /// Where the weights live and the model runs.
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            decode_dtype: Some(GgmlDType::Q8_0),
            policy: KernelPolicy::default(),
            device: Device::Cpu,
        }
    }
}

impl LoadOptions {
    /// f32 weights only, f32 arithmetic everywhere: the exact reference behaviour.
    pub fn exact() -> Self {
        Self {
            decode_dtype: None,
            policy: KernelPolicy::Dense,
            device: Device::Cpu,
        }
    }

    /// The same options on `device`.
    pub fn on(self, device: Device) -> Self {
        Self { device, ..self }
    }
}

/// Which positions a forward pass returns logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position: `[1, vocab]`.
    Last,
    /// Positions `from ..` of the call's tokens (0-based within the call): `[n - from, vocab]`.
    From(usize),
}

/// A loaded decoder: embeddings, layers, final norm, LM head and RoPE frequencies, on one
/// device. Runs token ids along any [`LayerPath`].
#[derive(Debug, Clone)]
pub struct Model {
    cfg: ModelConfig,
    /// `[vocab, hidden]` f32.
    embed: Tensor,
    layers: Vec<DecoderLayer>,
    final_norm: Tensor,
    head: Linear,
    rope: RopeFreqs,
    policy: KernelPolicy,
    device: Device,
}

impl Model {
    pub(crate) fn load(source: &mut Source, cfg: ModelConfig, opts: &LoadOptions) -> Result<Self> {
        let dev = &opts.device;
        // Quantized copies serve the CPU's single-row kernels only.
        let dq = opts.decode_dtype.filter(|_| dev.is_cpu());
        let put = |t: Tensor| -> Result<Tensor> { Ok(t.to_device(dev)?) };
        let embed = put(source.require(Key::Embed, 0, &cfg)?)?;
        let head = match source.get(Key::Head, 0, &cfg)? {
            Some(w) if !cfg.tie_word_embeddings => put(w)?,
            _ => embed.clone(),
        };
        let factors = match source.get(Key::RopeFreqs, 0, &cfg)? {
            Some(t) => Some(t.to_vec1::<f32>()?),
            None => None,
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let mut req = |k: Key| source.require(k, i, &cfg).and_then(put);
            let (q, k, v) = (req(Key::Q)?, req(Key::K)?, req(Key::V)?);
            let o = req(Key::O)?;
            let (gate, up, down) = (req(Key::Gate)?, req(Key::Up)?, req(Key::Down)?);
            let (attn_norm, ffn_norm) = (req(Key::AttnNorm)?, req(Key::FfnNorm)?);
            let qkv_bias = if cfg.qkv_bias {
                let b = [Key::QBias, Key::KBias, Key::VBias]
                    .into_iter()
                    .map(|k| source.require(k, i, &cfg).and_then(put))
                    .collect::<Result<Vec<_>>>()?;
                Some(Tensor::cat(&b, 0)?)
            } else {
                None
            };
            let (q_norm, k_norm) = if cfg.qk_norm {
                (
                    Some(put(source.require(Key::QNorm, i, &cfg)?)?),
                    Some(put(source.require(Key::KNorm, i, &cfg)?)?),
                )
            } else {
                (None, None)
            };
            layers.push(DecoderLayer {
                attn_norm,
                qkv: Linear::new(Tensor::cat(&[q, k, v], 0)?, qkv_bias, dq)?,
                q_norm,
                k_norm,
                o: Linear::new(o, None, dq)?,
                ffn_norm,
                gate_up: Linear::new(Tensor::cat(&[gate, up], 0)?, None, dq)?,
                down: Linear::new(down, None, dq)?,
                num_heads: cfg.num_heads,
                num_kv_heads: cfg.num_kv_heads,
                head_dim: cfg.head_dim,
                intermediate: cfg.intermediate_size,
                eps: cfg.rms_norm_eps as f32,
            });
        }
        Ok(Self {
            final_norm: put(source.require(Key::FinalNorm, 0, &cfg)?)?,
            head: Linear::new(head, None, dq)?,
            rope: RopeFreqs::new(&cfg, factors.as_deref(), dev)?,
            embed,
            layers,
            policy: opts.policy,
            device: dev.clone(),
            cfg,
        })
    }

    /// Loads a GGUF file (weights only; see [`crate::load`] for model + tokenizer).
    pub fn from_gguf(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let mut source = Source::open_gguf(path)?;
        let cfg = crate::loader::gguf_config(&source)?;
        Self::load(&mut source, cfg, opts)
    }

    /// Loads a Hugging Face model folder (config.json + safetensors).
    pub fn from_hf_dir(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let cfg = ModelConfig::from_hf_json(&dir.join("config.json"))?;
        let mut source = Source::open_safetensors(dir)?;
        Self::load(&mut source, cfg, opts)
    }

    /// The hyper-parameters the model was loaded with.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Number of decoder layers `L`.
    pub fn num_layers(&self) -> usize {
        self.cfg.num_layers
    }

    /// Which weight copy the matmuls use.
    pub fn policy(&self) -> KernelPolicy {
        self.policy
    }

    /// Changes which weight copy the matmuls use (a policy picking quantized weights has no
    /// effect on layers loaded without a quantized copy).
    pub fn set_policy(&mut self, policy: KernelPolicy) {
        self.policy = policy;
    }

    /// Bytes held by all weights.
    pub fn size_in_bytes(&self) -> usize {
        let tied = self.head.weight().id() == self.embed.id();
        self.layers.iter().map(|l| l.size_in_bytes()).sum::<usize>()
            + self.embed.elem_count() * 4
            + self.head.size_in_bytes()
            - if tied { self.embed.elem_count() * 4 } else { 0 }
    }

    /// Checks that `start .. start + tokens` fits the context and that there is a token.
    pub fn check_span(&self, start: usize, tokens: usize) -> Result<()> {
        if tokens == 0 {
            return Err(Error::EmptyPrompt);
        }
        let max = self.cfg.max_position_embeddings;
        if start + tokens > max {
            return Err(Error::ContextOverflow {
                start,
                tokens,
                needed: start + tokens,
                max,
            });
        }
        Ok(())
    }

    /// Token embeddings, `[seq, hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let vocab = self.cfg.vocab_size;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::TokenOutOfRange { id, vocab });
        }
        let ids = Tensor::new(ids, &self.device)?;
        Ok(self.embed.index_select(&ids, 0)?)
    }

    /// RoPE tables for the positions `start .. start + len`, shared by all layers of a pass.
    pub fn rope(&self, start: usize, len: usize) -> Result<Rope> {
        self.rope.at(start, len)
    }

    /// RoPE tables for fused rows: the context at positions `0 .. ctx`, each continuation at
    /// `ctx ..`.
    pub fn rope_segments(&self, segs: &Segments) -> Result<Rope> {
        let longest = segs.conts.iter().copied().max().unwrap_or(0);
        self.check_span(0, segs.ctx)?;
        self.check_span(0, segs.ctx + longest)?;
        let mut positions: Vec<u32> = (0..segs.ctx as u32).collect();
        for &n in &segs.conts {
            positions.extend(segs.ctx as u32..(segs.ctx + n) as u32);
        }
        self.rope.at_positions(&positions)
    }

    /// Runs layer `layer` on the fused rows of a context and its continuations (see
    /// [`DecoderLayer::forward_fused`]); returns the output and the keys and values of every row.
    pub fn run_layer_fused(
        &self,
        layer: usize,
        x: &Tensor,
        rope: &Rope,
        segs: &Segments,
    ) -> Result<(Tensor, KvSlot)> {
        self.block(layer)?.forward_fused(x, rope, segs, self.policy)
    }

    fn block(&self, layer: usize) -> Result<&DecoderLayer> {
        Ok(self.layers.get(layer).ok_or(PathError::OutOfRange {
            pos: 0,
            layer,
            num_layers: self.layers.len(),
        })?)
    }

    /// Runs layer `layer` on hidden state `x` (`[seq, hidden]`), using and extending `slot`.
    pub fn run_layer(
        &self,
        layer: usize,
        x: &Tensor,
        rope: &Rope,
        slot: &mut KvSlot,
    ) -> Result<Tensor> {
        self.block(layer)?.forward(x, rope, slot, self.policy)
    }

    /// Final norm and LM head on the rows of `x` (`[rows, hidden]` → `[rows, vocab]`).
    pub fn head(&self, x: &Tensor) -> Result<Tensor> {
        let h = rms_norm(x, &self.final_norm, self.cfg.rms_norm_eps as f32)?;
        self.head.forward(&h, self.policy)
    }

    /// Runs `ids` (positions `start ..`) along `path`, using and extending `cache`. A `start`
    /// below the cached length rewinds the cache first. Returns logits as `which` asks.
    pub fn forward(
        &self,
        ids: &[u32],
        path: &LayerPath,
        cache: &mut PathCache,
        start: usize,
        which: Logits,
    ) -> Result<Tensor> {
        let x = self.forward_hidden(ids, path, cache, start)?;
        let rows = match which {
            Logits::Last => x.narrow(0, ids.len() - 1, 1)?,
            Logits::From(from) => {
                x.narrow(0, from.min(ids.len()), ids.len() - from.min(ids.len()))?
            }
        };
        self.head(&rows)
    }

    /// Like [`Model::forward`], but returns the hidden states after the last path position
    /// (`[ids, hidden]`, before the final norm), for callers that apply [`Model::head`] to rows
    /// gathered from several calls at once.
    pub fn forward_hidden(
        &self,
        ids: &[u32],
        path: &LayerPath,
        cache: &mut PathCache,
        start: usize,
    ) -> Result<Tensor> {
        let rows = Rows::Cached { cache, start };
        let route = Route::Path { path, from: 0 };
        Ok(self
            .run_path(self.embed(ids)?, rows, route, |_, _, _| ())?
            .hidden)
    }
}
