//! Linear layers that keep two copies of their weight: dense f32 for batched work (prefill,
//! several positions at once) and, optionally, a quantized copy for single-row work (decode),
//! where reading fewer bytes per weight wins. A [`KernelPolicy`] picks one per call.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Tensor};

use crate::error::Result;

/// Which weights a linear layer multiplies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPolicy {
    /// Always the dense f32 weights: exact float32 arithmetic (tests, parity checks).
    Dense,
    /// The quantized weights whenever an input has at most this many rows, dense otherwise.
    QuantizedUpTo(usize),
}

impl Default for KernelPolicy {
    fn default() -> Self {
        KernelPolicy::QuantizedUpTo(1)
    }
}

/// A linear layer `y = x Wᵀ + b` holding a dense f32 weight and optionally a quantized copy of
/// it; a [`KernelPolicy`] picks which one a call uses.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`, f32.
    dense: Tensor,
    quant: Option<QMatMul>,
    bias: Option<Tensor>,
}

impl Linear {
    /// Builds a layer from an f32 `[out, in]` weight; `decode_dtype` adds a quantized copy.
    pub fn new(
        dense: Tensor,
        bias: Option<Tensor>,
        decode_dtype: Option<GgmlDType>,
    ) -> Result<Self> {
        let quant = match decode_dtype {
            Some(dt) if quantizable(&dense, dt) => {
                Some(QMatMul::from_qtensor(QTensor::quantize(&dense, dt)?)?)
            }
            _ => None,
        };
        Ok(Self { dense, quant, bias })
    }

    /// The dense `[out, in]` weight.
    pub fn weight(&self) -> &Tensor {
        &self.dense
    }

    /// Output width (`out`).
    pub fn out_features(&self) -> usize {
        self.dense.dims()[0]
    }

    /// `x` is `[rows, in]`; returns `[rows, out]`.
    pub fn forward(&self, x: &Tensor, policy: KernelPolicy) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let y = match (&self.quant, policy) {
            (Some(q), KernelPolicy::QuantizedUpTo(max)) if rows <= max => q.forward(x)?,
            _ => x.matmul(&self.dense.t()?)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// Bytes held by this layer's weights (dense + quantized + bias).
    pub fn size_in_bytes(&self) -> usize {
        let q = match &self.quant {
            Some(QMatMul::QTensor(t)) => t.storage_size_in_bytes(),
            Some(QMatMul::Tensor(t)) | Some(QMatMul::TensorF16(t)) => {
                t.elem_count() * t.dtype().size_in_bytes()
            }
            None => 0,
        };
        self.dense.elem_count() * 4 + q + self.bias.as_ref().map_or(0, |b| b.elem_count() * 4)
    }
}

/// Quantized formats need the row length to be a multiple of their block size.
fn quantizable(w: &Tensor, dt: GgmlDType) -> bool {
    matches!(dt, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
        || w.dims().last().is_some_and(|k| k % dt.block_size() == 0)
}
