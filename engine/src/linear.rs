//! Linear layers that keep their weight in its own precision and at most two copies of it: dense
//! (f32, bf16 or f16, as the file holds it or as the device computes) for batched work, and
//! quantized (a GGUF file's own blocks, or a copy made for single-row decode work, where reading
//! fewer bytes per weight wins). A [`KernelPolicy`] picks one per call. Inputs and outputs are
//! f32 whatever the weights are: the residual stream, norms, softmax and RoPE stay in f32, and a
//! dense matmul runs in the layer's compute dtype.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::cpu_kernels::{self, Rows};
use crate::error::Result;
use crate::st_file::Mapped;
use crate::weights::Raw;

/// Which weights a linear layer multiplies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPolicy {
    /// The dense weights whenever the layer has them: exact arithmetic in the compute dtype.
    Dense,
    /// The quantized weights whenever an input has at most this many rows, dense otherwise.
    QuantizedUpTo(usize),
}

impl Default for KernelPolicy {
    fn default() -> Self {
        KernelPolicy::QuantizedUpTo(1)
    }
}

impl KernelPolicy {
    /// The policy for every matmul of a pass of `rows` rows: the decode copy serves small
    /// passes (a generated token), never a few rows gathered or narrowed out of a larger pass (a
    /// token route's run rows, a prompt's scoring rows). So a row's arithmetic does not depend
    /// on how many other rows share its call, and scoring a choice alone or fused with the
    /// others picks the same kernels.
    pub fn for_pass(self, rows: usize) -> Self {
        match self {
            KernelPolicy::QuantizedUpTo(max) if rows > max => KernelPolicy::Dense,
            p => p,
        }
    }

    /// True when a pass of `rows` rows multiplies with the decode copy (where a layer has one).
    pub fn decode_copy(self, rows: usize) -> bool {
        matches!(self.for_pass(rows), KernelPolicy::QuantizedUpTo(max) if rows <= max)
    }
}

/// Which weight copy each row of a call multiplies with: one policy for every row, or, for a
/// batch of sequences, the decode copy for the first `decode_rows` rows (sequences that are
/// one-row passes of their own: a generated token each) and the dense weights for the rest. So
/// every row gets the arithmetic it would get in a pass of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Every row under this policy.
    All(KernelPolicy),
    /// The first rows on the decode copy (where the layer has one), the rest dense.
    Split {
        /// Rows on the decode copy.
        decode_rows: usize,
    },
}

/// How a model's matrices are held, decided once per load ([`crate::LoadOptions`] on a device).
#[derive(Debug, Clone)]
pub(crate) struct WeightPlan {
    pub(crate) device: Device,
    /// dtype of dense matmuls.
    pub(crate) compute: DType,
    /// Quantized copy for single-row work (CPU only).
    pub(crate) decode: Option<GgmlDType>,
    /// Hold matrices quantized only (a GGUF file's blocks as they are, dense ones as q8_0) where
    /// a batched int8 kernel serves every row count faster than dense f32 ([`batched_int8`]).
    pub(crate) quantized: bool,
}

impl WeightPlan {
    /// The dtype dense weights are stored in: their own on the CPU when the compute dtype is f32
    /// (widened per matmul, so a bf16 checkpoint takes half the memory of f32), else the compute
    /// dtype.
    pub(crate) fn storage_dtype(&self, own: DType) -> DType {
        if self.device.is_cpu() && self.compute == DType::F32 {
            own
        } else {
            self.compute
        }
    }
}

/// A linear layer `y = x Wᵀ + b` (`W`: `[out, in]`).
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]` in the storage dtype; `None` for quantized-only layers.
    dense: Option<Tensor>,
    quant: Option<QMatMul>,
    /// f32.
    bias: Option<Tensor>,
    compute: DType,
}

impl Linear {
    /// Builds a layer whose weight is `parts` stacked along the output dimension (q, k, v fused;
    /// gate and up fused), with an f32 `bias`, held as `plan` says.
    pub(crate) fn build(parts: Vec<Raw>, bias: Option<Tensor>, plan: &WeightPlan) -> Result<Self> {
        let bias = bias.map(|b| b.to_device(&plan.device)).transpose()?;
        if plan.quantized {
            if let Some(q) = quantized_only(&parts)? {
                let mut layer = Self::quantized(Arc::new(q), plan)?;
                layer.bias = bias;
                return Ok(layer);
            }
        }
        let dense = parts
            .into_iter()
            .map(Raw::into_dense)
            .collect::<Result<Vec<_>>>()?;
        let own = dense[0].dtype();
        let dense = if dense.iter().all(|t| t.dtype() == own) {
            Tensor::cat(&dense, 0)?
        } else {
            let f32s = dense
                .iter()
                .map(|t| t.to_dtype(DType::F32))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&f32s, 0)?
        };
        let dense = dense.to_dtype(plan.storage_dtype(dense.dtype()))?;
        let quant = match plan.decode.filter(|_| plan.device.is_cpu()) {
            Some(dt) if quantizable(&dense, dt) => {
                Some(QMatMul::from_qtensor(quantize_rows(&dense, dt)?)?)
            }
            _ => None,
        };
        Ok(Self {
            dense: Some(dense.to_device(&plan.device)?),
            quant,
            bias,
            compute: plan.compute,
        })
    }

    /// A layer computing with quantized weights only (a GGUF file's, kept as they are).
    pub(crate) fn quantized(q: Arc<QTensor>, plan: &WeightPlan) -> Result<Self> {
        Ok(Self {
            dense: None,
            quant: Some(QMatMul::from_arc(q)?),
            bias: None,
            compute: plan.compute,
        })
    }

    /// `x` is `[rows, in]`, f32; returns `[rows, out]`, f32.
    pub fn forward(&self, x: &Tensor, policy: KernelPolicy) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let y = match (&self.dense, &self.quant) {
            (Some(w), Some(q)) => match policy {
                KernelPolicy::QuantizedUpTo(max) if rows <= max => q.forward(x)?,
                _ => self.dense_matmul(x, w)?,
            },
            (Some(w), None) => self.dense_matmul(x, w)?,
            (None, Some(q)) => q.forward(x)?,
            (None, None) => unreachable!("a linear layer holds at least one copy of its weight"),
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// [`Linear::forward`] with each row's weight copy as `kernels` says.
    pub fn forward_rows(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let decode = KernelPolicy::QuantizedUpTo(usize::MAX);
        let (n, rows) = match kernels {
            Kernels::All(policy) => return self.forward(x, policy),
            Kernels::Split { decode_rows } => (decode_rows, x.dim(0)?),
        };
        match n {
            0 => self.dense_rows(x),
            n if n >= rows => self.forward(x, decode),
            n => {
                let a = self.forward(&x.narrow(0, 0, n)?, decode)?;
                let b = self.dense_rows(&x.narrow(0, n, rows - n)?)?;
                Ok(Tensor::cat(&[a, b], 0)?)
            }
        }
    }

    /// The dense weights on rows that share a call with others in one pass and alone in
    /// another (a token route's run rows, a batch's): a single row runs as two, since the dense
    /// kernels give each row the same result from 2 rows on but another for 1.
    fn dense_rows(&self, x: &Tensor) -> Result<Tensor> {
        if x.dim(0)? != 1 {
            return self.forward(x, KernelPolicy::Dense);
        }
        let y = self.forward(&Tensor::cat(&[x, x], 0)?, KernelPolicy::Dense)?;
        Ok(y.narrow(0, 0, 1)?)
    }

    /// `x Wᵀ` in the compute dtype, f32 in and out.
    fn dense_matmul(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        if self.compute != DType::F32 {
            return Ok(x
                .to_dtype(self.compute)?
                .matmul(&w.to_dtype(self.compute)?.t()?)?
                .to_dtype(DType::F32)?);
        }
        if !w.device().is_cpu() || w.dtype() == DType::F32 {
            return Ok(x.matmul(&w.to_dtype(DType::F32)?.t()?)?);
        }
        // Weights kept in their own precision on the CPU: one row reads them as they are, more
        // rows widen them for this call only.
        if x.dim(0)? == 1 {
            return cpu_kernels::gemv(x, w);
        }
        Ok(x.matmul(&cpu_kernels::widen(w)?.t()?)?)
    }

    /// Bytes held by the dense weight, the quantized weight and the bias.
    pub fn memory(&self) -> WeightBytes {
        let dense = self
            .dense
            .as_ref()
            .map_or(0, |t| t.elem_count() * t.dtype().size_in_bytes());
        let quant = match &self.quant {
            Some(QMatMul::QTensor(t)) => t.storage_size_in_bytes(),
            Some(QMatMul::Tensor(t)) | Some(QMatMul::TensorF16(t)) => {
                t.elem_count() * t.dtype().size_in_bytes()
            }
            None => 0,
        };
        let bias = self.bias.as_ref().map_or(0, |b| b.elem_count() * 4);
        // Without a dense copy the quantized weights are the layer's weights, not a decode copy.
        match self.dense {
            Some(_) => WeightBytes {
                weights: dense + bias,
                decode_copy: quant,
            },
            None => WeightBytes {
                weights: quant + bias,
                decode_copy: 0,
            },
        }
    }
}

/// Bytes of weights, split into what computes and the CPU's quantized decode copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightBytes {
    /// The weights proper (dense or, for quantized-only layers, quantized), norms and biases.
    pub weights: usize,
    /// The quantized copy kept beside dense weights for single-row matmuls.
    pub decode_copy: usize,
}

impl std::ops::Add for WeightBytes {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            weights: self.weights + o.weights,
            decode_copy: self.decode_copy + o.decode_copy,
        }
    }
}

impl std::iter::Sum for WeightBytes {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |a, b| a + b)
    }
}

/// The parts as one quantized-only matrix when a batched int8 kernel serves it: a GGUF file's
/// blocks as they are when they all share such a format, dense parts quantized to q8_0. `None`
/// keeps the dense route (other formats, shapes the kernel does not tile, or no such kernel).
fn quantized_only(parts: &[Raw]) -> Result<Option<QTensor>> {
    let dims = parts.iter().map(Raw::dims2).collect::<Result<Vec<_>>>()?;
    let (rows, cols) = (dims.iter().map(|d| d.0).sum(), dims[0].1);
    if all_quantized_alike(parts) {
        let Raw::Quant(q) = &parts[0] else {
            unreachable!()
        };
        return batched_int8(q.dtype(), rows, cols)
            .then(|| fuse_quantized(parts))
            .transpose();
    }
    if !batched_int8(GgmlDType::Q8_0, rows, cols) {
        return Ok(None);
    }
    let sources = parts
        .iter()
        .map(|p| match p {
            Raw::Dense(t) => Ok(RowSource::Tensor(t.contiguous()?)),
            Raw::Quant(q) => Ok(RowSource::Tensor(q.dequantize(&Device::Cpu)?)),
            Raw::File(t) => Ok(match t.map()? {
                Some(m) => RowSource::Mapped(m),
                None => RowSource::Tensor(t.read()?),
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    let rows: Vec<&dyn Rows> = sources
        .iter()
        .map(|s| match s {
            RowSource::Tensor(t) => t as &dyn Rows,
            RowSource::Mapped(m) => m as &dyn Rows,
        })
        .collect();
    cpu_kernels::quantize_q8_0(&rows).map(Some)
}

/// A part about to be quantized: in memory, or mapped from its safetensors file.
enum RowSource {
    Tensor(Tensor),
    Mapped(Mapped),
}

/// True when candle's batched int8 kernel (weights repacked into 16-row tiles, AVX512-VNNI or
/// AVX-VNNI dot products, detected at run time) serves a `[rows, cols]` matrix in `dtype`: about
/// 2.7x dense f32 at a 1B model's shapes on this project's Zen 4 machine (BENCHMARKS.md).
pub(crate) fn batched_int8(dtype: GgmlDType, rows: usize, cols: usize) -> bool {
    matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q4K | GgmlDType::Q6K)
        && rows % 16 == 0
        && cols % 256 == 0
        && batched_int8_available()
}

/// True when this CPU has the int8 dot-product instructions candle's batched quantized kernel
/// uses (AVX512-VNNI or AVX-VNNI), checked once at run time: the release binaries still run on
/// AVX2-only machines, where `--dtype auto` keeps dense weights.
pub fn batched_int8_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *VNNI.get_or_init(|| {
            (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni"))
                || is_x86_feature_detected!("avxvnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// True when every part is quantized, all in one block format (not a Q4_K_M file's v in Q6_K
/// beside q and k in Q4_K).
fn all_quantized_alike(parts: &[Raw]) -> bool {
    let dtypes: Vec<GgmlDType> = parts
        .iter()
        .filter_map(|p| match p {
            Raw::Quant(q) => Some(q.dtype()),
            Raw::Dense(_) | Raw::File(_) => None,
        })
        .collect();
    dtypes.len() == parts.len() && dtypes.windows(2).all(|w| w[0] == w[1])
}

/// Quantized parts stacked into one matrix: rows are whole blocks, so stacking is concatenating
/// the bytes (one part is returned as it is).
fn fuse_quantized(parts: &[Raw]) -> Result<QTensor> {
    let (mut bytes, mut rows, mut cols, mut dtype) = (Vec::new(), 0, 0, GgmlDType::Q8_0);
    for p in parts {
        if let Raw::Quant(q) = p {
            let (r, c) = q.shape().dims2()?;
            bytes.extend_from_slice(&q.data()?);
            (rows, cols, dtype) = (rows + r, c, q.dtype());
        }
    }
    let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), &Device::Cpu, dtype)?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

/// `w` quantized to `dt`: q8_0 by [`cpu_kernels::quantize_q8_0`] (parallel, from the weights'
/// own precision); other formats per chunk of rows, so that only one chunk is ever widened to f32
/// at a time (a tied 128k-token head widened whole would be 1 GB for a moment).
fn quantize_rows(w: &Tensor, dt: GgmlDType) -> Result<QTensor> {
    let w = w.to_device(&Device::Cpu)?;
    if dt == GgmlDType::Q8_0 {
        return cpu_kernels::quantize_q8_0(&[&w.contiguous()?]);
    }
    const CHUNK: usize = 4096;
    let (rows, cols) = w.dims2()?;
    let mut bytes = Vec::with_capacity(rows * cols / dt.block_size() * dt.type_size());
    for start in (0..rows).step_by(CHUNK) {
        let n = CHUNK.min(rows - start);
        // `QTensor::quantize` reads its source's whole storage, so the chunk must own its own.
        let chunk = w.narrow(0, start, n)?;
        let chunk = match chunk.dtype() {
            DType::F32 => chunk.force_contiguous()?,
            _ => chunk.to_dtype(DType::F32)?,
        };
        let q = QTensor::quantize(&chunk, dt)?;
        bytes.extend_from_slice(&q.data()?);
    }
    let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), &Device::Cpu, dt)?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

/// Quantized formats need the row length to be a multiple of their block size.
fn quantizable(w: &Tensor, dt: GgmlDType) -> bool {
    matches!(dt, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
        || w.dims().last().is_some_and(|k| k % dt.block_size() == 0)
}
