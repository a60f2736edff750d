//! One transformer block: pre-norm grouped-query attention with RoPE, then a pre-norm SwiGLU MLP.
//! q/k/v and gate/up are fused into single matrices so a block runs five matmuls.

use candle_core::{Device, Tensor};
use candle_nn::ops::{rms_norm, silu, softmax_last_dim};

use crate::cache::KvSlot;
use crate::error::Result;
use crate::linear::{KernelPolicy, Linear};
use crate::rope::Rope;

#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub(crate) attn_norm: Tensor,
    /// `[q; k; v]` stacked along the output dimension.
    pub(crate) qkv: Linear,
    pub(crate) q_norm: Option<Tensor>,
    pub(crate) k_norm: Option<Tensor>,
    pub(crate) o: Linear,
    pub(crate) ffn_norm: Tensor,
    /// `[gate; up]` stacked along the output dimension.
    pub(crate) gate_up: Linear,
    pub(crate) down: Linear,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) intermediate: usize,
    pub(crate) eps: f32,
}

impl DecoderLayer {
    /// Runs the block on `x` (`[seq, hidden]`, positions given by `rope`), appending this
    /// position's keys and values to `slot`.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        slot: &mut KvSlot,
        policy: KernelPolicy,
    ) -> Result<Tensor> {
        let h = rms_norm(x, &self.attn_norm, self.eps)?;
        let attn = self.attention(&h, rope, slot, policy)?;
        let x = (x + attn)?;
        let h = rms_norm(&x, &self.ffn_norm, self.eps)?;
        let gu = self.gate_up.forward(&h, policy)?;
        let gate = gu.narrow(1, 0, self.intermediate)?;
        let up = gu.narrow(1, self.intermediate, self.intermediate)?;
        let mlp = self.down.forward(&(silu(&gate)? * up)?, policy)?;
        Ok((x + mlp)?)
    }

    fn attention(
        &self,
        x: &Tensor,
        rope: &Rope,
        slot: &mut KvSlot,
        policy: KernelPolicy,
    ) -> Result<Tensor> {
        let t = x.dim(0)?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let n_rep = nh / nkv;
        let qkv = self.qkv.forward(x, policy)?;
        // [seq, heads * hd] -> [1, heads, seq, hd]
        let heads = |start: usize, n: usize, norm: &Option<Tensor>| -> Result<Tensor> {
            let mut y = qkv.narrow(1, start * hd, n * hd)?.reshape((t, n, hd))?;
            if let Some(w) = norm {
                y = rms_norm(&y.contiguous()?, w, self.eps)?;
            }
            Ok(y.transpose(0, 1)?.contiguous()?.unsqueeze(0)?)
        };
        let q = rope.apply(&heads(0, nh, &self.q_norm)?)?;
        let k = rope.apply(&heads(nh, nkv, &self.k_norm)?)?;
        let v = heads(nh + nkv, nkv, &None)?;
        let (k, v) = slot.append(&k, &v)?;
        let total = k.dim(2)?;
        let start = total - t;
        // Grouped-query attention without copying k/v: the n_rep query heads that share a kv head
        // are adjacent, so view q as [kv_heads, n_rep * seq, hd].
        let q = q.reshape((nkv, n_rep * t, hd))?;
        let k = k.squeeze(0)?;
        let v = v.squeeze(0)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut att = (q.matmul(&k.t()?)? * scale)?;
        if t > 1 {
            att = att.broadcast_add(&causal_mask(t, n_rep, start, total)?)?;
        }
        let att = softmax_last_dim(&att)?;
        let y = att.matmul(&v)?; // [kv_heads, n_rep * seq, hd]
        let y = y
            .reshape((nh, t, hd))?
            .transpose(0, 1)?
            .reshape((t, nh * hd))?;
        self.o.forward(&y, policy)
    }

    /// Bytes held by the block's weights.
    pub fn size_in_bytes(&self) -> usize {
        let norms = [&self.attn_norm, &self.ffn_norm]
            .into_iter()
            .chain(self.q_norm.iter())
            .chain(self.k_norm.iter())
            .map(|t| t.elem_count() * 4)
            .sum::<usize>();
        norms
            + self.qkv.size_in_bytes()
            + self.o.size_in_bytes()
            + self.gate_up.size_in_bytes()
            + self.down.size_in_bytes()
    }
}

/// `[n_rep * seq, total]` additive mask: query `i` (absolute position `start + i`) sees keys
/// `0 ..= start + i`.
fn causal_mask(t: usize, n_rep: usize, start: usize, total: usize) -> Result<Tensor> {
    let mut m = Vec::with_capacity(n_rep * t * total);
    for _ in 0..n_rep {
        for i in 0..t {
            m.extend((0..total).map(|j| {
                if j <= start + i {
                    0f32
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
    }
    Ok(Tensor::from_vec(m, (n_rep * t, total), &Device::Cpu)?)
}
