//! The decoder: loads weights from any [`crate::weights`] source and runs token ids along any
//! [`LayerPath`]. Layers run only through the path executor ([`Model::run_path`], in
//! [`crate::exec`]), which checks every path once; the public pieces here are the two ends of a
//! pass (`embed`, `head`) and `forward`, the executor on one cached sequence. The search keeps the
//! states the executor visits after a shared path prefix and resumes from them.

use std::path::Path;

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::cache::{KvSlot, PathCache};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::exec::{Route, Rows};
use crate::layer::{DecoderLayer, Ops, Segments};
use crate::linear::{batched_int8, KernelPolicy, Kernels, Linear, WeightBytes, WeightPlan};
use crate::path::{LayerPath, PathError};
use crate::rope::{Rope, RopeFreqs};
use crate::tokens::{RowMeta, SkippedKv};
use crate::weights::{Key, Raw, Source};

/// The dtype dense matmuls compute in, as a user names it (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DTypeChoice {
    /// The fastest measured per device (BENCHMARKS.md): bf16 on CUDA (tensor cores). On the
    /// CPU, int8 where candle's batched VNNI kernel serves a matrix (weights held as q8_0, or a
    /// GGUF file's q8_0/q4_K/q6_K blocks as they are: 2.7x dense f32 at a 1B model's shapes), f32
    /// elsewhere (candle's CPU matmul widens bf16 to f32 anyway; its f16 kernel is slower).
    #[default]
    Auto,
    /// float32.
    F32,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
}

impl DTypeChoice {
    /// The dtype on `device`.
    pub fn resolve(self, device: &Device) -> DType {
        match self {
            Self::Auto if device.is_cpu() => DType::F32,
            Self::Auto | Self::Bf16 => DType::BF16,
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
        }
    }
}

impl std::str::FromStr for DTypeChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f16" | "float16" => Ok(Self::F16),
            other => Err(format!("unknown dtype `{other}` (auto, f32, bf16, f16)")),
        }
    }
}

/// How to hold the weights in memory.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// dtype of dense matmuls. Dense weights stay in their own precision on the CPU when it is
    /// f32 (widened per matmul) and are converted to it otherwise.
    pub dtype: DTypeChoice,
    /// Quantized copy of every dense matrix for single-row (decode) matmuls; `None` keeps none
    /// (the lean mode). CPU only.
    pub decode_dtype: Option<GgmlDType>,
    /// Which copy each matmul uses.
    pub policy: KernelPolicy,
    /// Where the weights live and the model runs.
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DTypeChoice::Auto,
            decode_dtype: Some(GgmlDType::Q8_0),
            policy: KernelPolicy::default(),
            device: Device::Cpu,
        }
    }
}

impl LoadOptions {
    /// Dense weights, f32 arithmetic everywhere: the exact reference behaviour.
    pub fn exact() -> Self {
        Self {
            dtype: DTypeChoice::F32,
            decode_dtype: None,
            policy: KernelPolicy::Dense,
            device: Device::Cpu,
        }
    }

    /// The same options on `device`.
    pub fn on(self, device: Device) -> Self {
        Self { device, ..self }
    }

    fn plan(&self) -> WeightPlan {
        WeightPlan {
            device: self.device.clone(),
            compute: self.dtype.resolve(&self.device),
            decode: self.decode_dtype,
            quantized: self.device.is_cpu()
                && self.dtype == DTypeChoice::Auto
                && self.policy != KernelPolicy::Dense,
        }
    }
}

/// A model's memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBreakdown {
    /// The weights that compute: dense in their precision, quantized ones, norms, biases.
    pub weights: usize,
    /// The quantized copies kept beside dense weights for single-row matmuls.
    pub decode_copy: usize,
}

/// The token embeddings: dense in their own precision, or a GGUF file's quantized rows
/// (dequantized per looked-up row).
#[derive(Debug, Clone)]
enum Embedding {
    Dense(Tensor),
    Quant(Arc<QTensor>),
}

impl Embedding {
    /// Rows `ids` as f32, `[ids, hidden]`.
    fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Dense(t) => t.index_select(ids, 0)?.to_dtype(DType::F32)?,
            Self::Quant(q) => q.embedding(ids)?,
        })
    }

    fn bytes(&self) -> usize {
        match self {
            Self::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Self::Quant(q) => q.storage_size_in_bytes(),
        }
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
    embed: Embedding,
    /// The head shares the embedding's weights.
    tied: bool,
    layers: Vec<DecoderLayer>,
    final_norm: Tensor,
    head: Linear,
    rope: RopeFreqs,
    policy: KernelPolicy,
    device: Device,
}

impl Model {
    fn load(source: &Source, cfg: ModelConfig, opts: &LoadOptions) -> Result<Self> {
        let plan = opts.plan();
        let dev = &opts.device;
        let head = match cfg.tie_word_embeddings {
            true => None,
            false => source.get(Key::Head, 0, &cfg)?,
        };
        let tied = head.is_none();
        let (embed, head) = embed_and_head(source.require(Key::Embed, 0, &cfg)?, head, &plan)?;
        let factors = match source.get(Key::RopeFreqs, 0, &cfg)? {
            Some(t) => Some(t.into_f32()?.to_vec1::<f32>()?),
            None => None,
        };
        // Layers load in parallel: reading, widening and quantizing are per layer.
        let layers = (0..cfg.num_layers)
            .into_par_iter()
            .map(|i| load_layer(source, &cfg, i, &plan))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            final_norm: source
                .require_f32(Key::FinalNorm, 0, &cfg)?
                .to_device(dev)?,
            head,
            rope: RopeFreqs::new(&cfg, factors.as_deref(), dev)?,
            embed,
            tied,
            layers,
            policy: opts.policy,
            device: dev.clone(),
            cfg,
        })
    }

    /// Loads a GGUF file (weights only; see [`crate::load`] for model + tokenizer).
    pub fn from_gguf(path: &Path, opts: &LoadOptions) -> Result<Self> {
        Self::from_gguf_source(&Source::open_gguf(path)?, opts)
    }

    /// The one GGUF load sequence: the config from the file's metadata, then the weights. The
    /// loader calls it with the source it also reads the tokenizer from.
    pub(crate) fn from_gguf_source(source: &Source, opts: &LoadOptions) -> Result<Self> {
        Self::load(source, source.gguf_config()?, opts)
    }

    /// Loads a Hugging Face model folder (config.json + safetensors).
    pub fn from_hf_dir(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let cfg = ModelConfig::from_hf_json(&dir.join("config.json"))?;
        let source = Source::open_safetensors(dir)?;
        Self::load(&source, cfg, opts)
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

    /// Bytes held by the weights, split into the weights proper and the decode copy.
    pub fn memory(&self) -> MemoryBreakdown {
        let layers: WeightBytes = self.layers.iter().map(DecoderLayer::memory).sum();
        let mut head = self.head.memory();
        if self.tied {
            // The head computes with the embedding's own weights; only its copy is extra.
            head.weights = 0;
        }
        let all = layers + head;
        MemoryBreakdown {
            weights: all.weights + self.embed.bytes() + self.final_norm.elem_count() * 4,
            decode_copy: all.decode_copy,
        }
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
        self.embed.lookup(&Tensor::new(ids, &self.device)?)
    }

    /// RoPE tables for the positions `start .. start + len`, shared by all layers of a pass.
    pub(crate) fn rope(&self, start: usize, len: usize) -> Result<Rope> {
        self.rope.at(start, len)
    }

    /// RoPE tables for fused rows: the context at positions `0 .. ctx`, each continuation at
    /// `ctx ..`.
    pub(crate) fn rope_segments(&self, segs: &Segments) -> Result<Rope> {
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
    /// Only the executor calls it.
    pub(crate) fn run_layer_fused(
        &self,
        layer: usize,
        x: &Tensor,
        rope: &Rope,
        segs: &Segments,
    ) -> Result<(Tensor, KvSlot)> {
        self.block(layer)?.forward_fused(x, rope, segs, self.policy)
    }

    /// Runs `x` (`[rows, hidden]`, positions from 0 as `meta` lays them out) through every
    /// layer, each on every row, mixed by the gate that `gate(layer, state)` gives: `None` runs
    /// the layer on all rows, `Some((g, run))` gives `x + g · (F(x) − x)` with `g` `[rows, 1]`
    /// and `run` its hard flags (under [`SkippedKv::Mask`] queries do not see the keys of rows
    /// not run). With 0/1 gates this is the slow reference of a token route; with
    /// straight-through gates and [`Ops::Autograd`] it is differentiable in the gates. Returns
    /// the hidden rows after the last layer.
    pub fn run_mixed(
        &self,
        x: Tensor,
        meta: &RowMeta,
        kv: SkippedKv,
        ops: Ops,
        mut gate: impl FnMut(usize, &Tensor) -> Result<Option<(Tensor, Vec<bool>)>>,
    ) -> Result<Tensor> {
        let n = x.dim(0)?;
        if meta.len() != n {
            return Err(Error::GateRows {
                layer: 0,
                flags: meta.len(),
                rows: n,
            });
        }
        let longest = meta.pos.iter().max().map_or(0, |&p| p as usize + 1);
        self.check_span(0, longest)?;
        let rope = self.rope.at_positions(&meta.pos)?;
        let all = vec![true; n];
        let ones = Tensor::ones((n, 1), candle_core::DType::F32, &self.device)?;
        let mut x = x;
        for layer in 0..self.num_layers() {
            let g = gate(layer, &x)?;
            let (g, run) = match &g {
                Some((g, run)) if run.len() == n => (g, run.as_slice()),
                Some((_, run)) => {
                    return Err(Error::GateRows {
                        layer,
                        flags: run.len(),
                        rows: n,
                    })
                }
                None => (&ones, all.as_slice()),
            };
            x = self.layers[layer].forward_mixed(&x, meta, &rope, g, run, kv, ops)?;
        }
        Ok(x)
    }

    /// The final norm and LM head with `ops`' norm (the token trainer differentiates through
    /// it); [`Model::head`] is this under [`Ops::Fused`].
    pub fn head_with(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        self.head_under(x, ops, self.policy)
    }

    /// [`Model::head`] with each row's weight copy as `kernels` says (a batch of sequences).
    pub fn head_rows(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let h = Ops::Fused.norm(x, &self.final_norm, self.cfg.rms_norm_eps as f32)?;
        self.head.forward_rows(&h, kernels)
    }

    fn head_under(&self, x: &Tensor, ops: Ops, policy: KernelPolicy) -> Result<Tensor> {
        let h = ops.norm(x, &self.final_norm, self.cfg.rms_norm_eps as f32)?;
        self.head.forward(&h, policy)
    }

    pub(crate) fn block(&self, layer: usize) -> Result<&DecoderLayer> {
        Ok(self.layers.get(layer).ok_or(PathError::OutOfRange {
            pos: 0,
            layer,
            num_layers: self.layers.len(),
        })?)
    }

    /// Runs layer `layer` on hidden state `x` (`[seq, hidden]`), using and extending `slot`. Only
    /// the executor calls it.
    pub(crate) fn run_layer(
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
        self.head_with(x, Ops::Fused)
    }

    /// [`Model::head`] on rows taken out of a pass of `pass_rows` rows, with the kernels the
    /// whole pass would use ([`KernelPolicy::for_pass`]): a prompt's scoring rows get the same
    /// arithmetic however few of them there are.
    pub fn head_for_pass(&self, x: &Tensor, pass_rows: usize) -> Result<Tensor> {
        self.head_under(x, Ops::Fused, self.policy.for_pass(pass_rows))
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
        self.head_for_pass(&rows, ids.len())
    }

    /// Runs `ids` (positions `start ..`) along a token route, using and extending `cache` (built
    /// for the full path); returns the logits of the last position (`[1, vocab]`).
    pub fn forward_tokens(
        &self,
        ids: &[u32],
        cache: &mut PathCache,
        start: usize,
        gate: &mut dyn FnMut(usize, &Tensor) -> Result<Vec<bool>>,
        kv: SkippedKv,
    ) -> Result<Tensor> {
        let rows = Rows::Cached { cache, start };
        let route = Route::Tokens { gate, kv };
        let x = self
            .run_path(self.embed(ids)?, rows, route, |_, _, _| ())?
            .hidden;
        self.head_for_pass(&x.narrow(0, ids.len() - 1, 1)?, ids.len())
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

/// The embedding and the LM head: shared weights when tied (a GGUF file's quantized matrix serves
/// both when kept quantized), each held as `plan` says.
fn embed_and_head(embed: Raw, head: Option<Raw>, plan: &WeightPlan) -> Result<(Embedding, Linear)> {
    if let Raw::Quant(q) = &embed {
        let (vocab, hidden) = q.shape().dims2()?;
        if plan.quantized && batched_int8(q.dtype(), vocab, hidden) {
            let Raw::Quant(q) = embed else { unreachable!() };
            let q = Arc::new(q);
            let head = match head {
                None => Linear::quantized(q.clone(), plan)?,
                Some(h) => Linear::build(vec![h], None, plan)?,
            };
            return Ok((Embedding::Quant(q), head));
        }
    }
    let e = embed.into_dense()?;
    let e = e
        .to_dtype(plan.storage_dtype(e.dtype()))?
        .to_device(&plan.device)?;
    let head = Linear::build(
        vec![head.unwrap_or_else(|| Raw::Dense(e.clone()))],
        None,
        plan,
    )?;
    Ok((Embedding::Dense(e), head))
}

/// One decoder block's weights from `source`, held as `plan` says.
fn load_layer(
    source: &Source,
    cfg: &ModelConfig,
    i: usize,
    plan: &WeightPlan,
) -> Result<DecoderLayer> {
    let req = |k: Key| source.require(k, i, cfg);
    let norm =
        |k: Key| -> Result<Tensor> { Ok(source.require_f32(k, i, cfg)?.to_device(&plan.device)?) };
    let qkv_bias = if cfg.qkv_bias {
        let b = [Key::QBias, Key::KBias, Key::VBias]
            .into_iter()
            .map(|k| source.require_f32(k, i, cfg))
            .collect::<Result<Vec<_>>>()?;
        Some(Tensor::cat(&b, 0)?)
    } else {
        None
    };
    let (q_norm, k_norm) = if cfg.qk_norm {
        (Some(norm(Key::QNorm)?), Some(norm(Key::KNorm)?))
    } else {
        (None, None)
    };
    Ok(DecoderLayer {
        attn_norm: norm(Key::AttnNorm)?,
        qkv: Linear::build(
            vec![req(Key::Q)?, req(Key::K)?, req(Key::V)?],
            qkv_bias,
            plan,
        )?,
        q_norm,
        k_norm,
        o: Linear::build(vec![req(Key::O)?], None, plan)?,
        ffn_norm: norm(Key::FfnNorm)?,
        gate_up: Linear::build(vec![req(Key::Gate)?, req(Key::Up)?], None, plan)?,
        down: Linear::build(vec![req(Key::Down)?], None, plan)?,
        num_heads: cfg.num_heads,
        num_kv_heads: cfg.num_kv_heads,
        head_dim: cfg.head_dim,
        intermediate: cfg.intermediate_size,
        eps: cfg.rms_norm_eps as f32,
    })
}
