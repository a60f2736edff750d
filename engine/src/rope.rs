//! Rotary position embeddings: inverse frequencies (with Llama 3 scaling or per-frequency factors
//! from a GGUF `rope_freqs` tensor) and the cos/sin tables for a range of token positions.

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::layer::Ops;

/// Inverse frequencies of a model's rotary embedding, `head_dim / 2` of them.
#[derive(Debug, Clone)]
pub(crate) struct RopeFreqs {
    inv_freq: Tensor,
    interleaved: bool,
}

impl RopeFreqs {
    /// `factors` are GGUF `rope_freqs.weight` divisors (Llama 3 files store their scaling so).
    pub(crate) fn new(cfg: &ModelConfig, factors: Option<&[f32]>, device: &Device) -> Result<Self> {
        let hd = cfg.head_dim;
        let mut inv: Vec<f32> = (0..hd)
            .step_by(2)
            .map(|i| 1f32 / cfg.rope_theta.powf(i as f32 / hd as f32))
            .collect();
        if let Some(s) = &cfg.rope_scaling {
            let orig = s.original_max_position_embeddings as f32;
            let low_wavelen = orig / s.low_freq_factor;
            let high_wavelen = orig / s.high_freq_factor;
            for f in inv.iter_mut() {
                let wavelen = 2. * std::f32::consts::PI / *f;
                *f = if wavelen < high_wavelen {
                    *f
                } else if wavelen > low_wavelen {
                    *f / s.factor
                } else {
                    let smooth = (orig / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1. - smooth) * *f / s.factor + smooth * *f
                };
            }
        }
        if let Some(factors) = factors {
            for (f, d) in inv.iter_mut().zip(factors) {
                *f /= d;
            }
        }
        let n = inv.len();
        Ok(Self {
            inv_freq: Tensor::from_vec(inv, (1, n), device)?,
            interleaved: cfg.rope_interleaved,
        })
    }

    /// Tables for positions `start .. start + len`.
    pub(crate) fn at(&self, start: usize, len: usize) -> Result<Rope> {
        self.at_positions(&(start as u32..(start + len) as u32).collect::<Vec<_>>())
    }

    /// Tables for the given positions, one row each.
    pub(crate) fn at_positions(&self, positions: &[u32]) -> Result<Rope> {
        let pos = Tensor::new(positions, self.inv_freq.device())?
            .to_dtype(DType::F32)?
            .reshape((positions.len(), 1))?;
        let freqs = pos.broadcast_mul(&self.inv_freq)?;
        Ok(Rope {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
            interleaved: self.interleaved,
        })
    }
}

/// cos/sin tables for the positions of a pass's rows (consecutive, or per segment for fused
/// rows), shared by every layer of the pass.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    interleaved: bool,
}

impl Rope {
    /// Rotates `x` of shape `[1, heads, seq, head_dim]` (contiguous).
    pub(crate) fn apply(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        use candle_nn::rotary_emb::{rope, rope_i, rope_i_slow, rope_slow};
        let (cos, sin) = (&self.cos, &self.sin);
        Ok(match (self.interleaved, ops) {
            (true, Ops::Fused) => rope_i(x, cos, sin)?,
            (true, Ops::Autograd) => rope_i_slow(x, cos, sin)?,
            (false, Ops::Fused) => rope(x, cos, sin)?,
            (false, Ops::Autograd) => rope_slow(x, cos, sin)?,
        })
    }

    /// The tables of the rows `rows` (a `u32` index tensor), in that order.
    pub(crate) fn select(&self, rows: &Tensor) -> Result<Self> {
        Ok(Self {
            cos: self.cos.index_select(rows, 0)?,
            sin: self.sin.index_select(rows, 0)?,
            interleaved: self.interleaved,
        })
    }
}
