//! One transformer block: pre-norm grouped-query attention with RoPE, then a pre-norm SwiGLU MLP.
//! q/k/v and gate/up are fused into single matrices so a block runs five matmuls. A block runs
//! on all its rows, on the rows of a token route only ([`DecoderLayer::forward_tokens`]), or on
//! all rows mixed by a gate ([`DecoderLayer::forward_mixed`], the token trainer's pass).

use candle_core::{Device, Tensor, D};
use candle_nn::ops::{rms_norm, rms_norm_slow, silu, softmax, softmax_last_dim};

use crate::cache::KvSlot;
use crate::error::Result;
use crate::group::{Member, TokenRows};
use crate::linear::{KernelPolicy, Kernels, Linear, WeightBytes};
use crate::rope::Rope;
use crate::tokens::{visibility_mask, RowMeta, SkippedKv};

/// Which kernels a block's norms, RoPE and softmax use: candle's fused kernels, or compositions of
/// primitive ops that candle's autograd differentiates (the fused kernels have no backward).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ops {
    /// candle's fused kernels: inference.
    #[default]
    Fused,
    /// Differentiable compositions: training through the frozen block.
    Autograd,
}

impl Ops {
    pub(crate) fn norm(self, x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
        Ok(match self {
            Self::Fused => rms_norm(x, w, eps)?,
            Self::Autograd => rms_norm_slow(x, w, eps)?,
        })
    }

    fn softmax(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Fused => softmax_last_dim(x)?,
            Self::Autograd => softmax(x, D::Minus1)?,
        })
    }
}

/// One decoder block's weights (f32 norms, fused [`Linear`] projections) and head layout.
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

/// The rows of a fused call (see [`DecoderLayer::forward_fused`]): a context of `ctx` rows followed
/// by independent continuations of it, `conts[i]` rows each. A continuation attends to the context
/// and to its own earlier rows, never to another continuation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    /// Rows of the shared context.
    pub ctx: usize,
    /// Rows of each continuation, in order.
    pub conts: Vec<usize>,
}

impl Segments {
    /// All rows.
    pub fn rows(&self) -> usize {
        self.ctx + self.conts.iter().sum::<usize>()
    }

    /// `(first row, row count)` of each continuation, in order.
    pub fn cont_offsets(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.conts.iter().scan(self.ctx, |at, &n| {
            let off = *at;
            *at += n;
            Some((off, n))
        })
    }
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
        let ops = Ops::Fused;
        let h = ops.norm(x, &self.attn_norm, self.eps)?;
        let qkv = self.qkv.forward(&h, policy)?;
        let y = self.attend_sequence(&qkv, rope, slot)?;
        self.finish(x, &y, Kernels::All(policy), ops)
    }

    /// Causal attention of one sequence's new rows (`qkv`: their projections) after the keys
    /// `slot` holds, to which theirs are appended.
    pub(crate) fn attend_sequence(
        &self,
        qkv: &Tensor,
        rope: &Rope,
        slot: &mut KvSlot,
    ) -> Result<Tensor> {
        let ops = Ops::Fused;
        let (q, k, v) = self.split_heads(qkv, rope, ops)?;
        let (k, v) = slot.append(&k, &v)?;
        self.attend_causal(&q, &k, &v, ops)
    }

    /// Causal attention of the last `t` positions (`q`: `[1, heads, t, hd]`) over every
    /// position's keys and values (`[1, kv_heads, total, hd]`), in blocks of [`KEY_BLOCK`]
    /// absolute positions: the queries of block `b` attend to the keys `0 .. (b + 1) · KEY_BLOCK`,
    /// zero keys masked out past the last position. So a query's sums run over the same keys in
    /// the same order whatever comes after it in its pass: a prompt resumed after a cached
    /// prefix computes, to the bit, what running it whole computes (and a continuation after
    /// its context, what a fused pass computes). Blocks past a query are never computed.
    fn attend_causal(&self, q: &Tensor, k: &Tensor, v: &Tensor, ops: Ops) -> Result<Tensor> {
        let (t, total) = (q.dim(2)?, k.dim(2)?);
        if t == 0 {
            return self.attend(q, k, v, None, ops);
        }
        let start = total - t;
        let mut ys = Vec::with_capacity(t / KEY_BLOCK + 1);
        let mut p = start;
        while p < total {
            let end = (p / KEY_BLOCK + 1) * KEY_BLOCK;
            let rows = end.min(total) - p;
            let (k, v) = (padded(k, end)?, padded(v, end)?);
            let mask = causal_mask(rows, self.n_rep(), p, end, q.device())?;
            let q = q.narrow(2, p - start, rows)?;
            ys.push(self.attend(&q, &k, &v, Some(&mask), ops)?);
            p += rows;
        }
        Ok(Tensor::cat(&ys, 0)?)
    }

    /// Runs the block on the rows of a context and its continuations at once (`x`: `[rows,
    /// hidden]` laid out as `segs` says, `rope`: each row's position). The matmuls see all rows
    /// together; attention runs per segment. Returns the output and the keys and values of every
    /// row (in `x`'s order). The result equals running the context first and then each
    /// continuation on a copy of its cache where the matmul kernels' results do not depend on
    /// the row count (dense ones from 2 rows).
    pub fn forward_fused(
        &self,
        x: &Tensor,
        rope: &Rope,
        segs: &Segments,
        policy: KernelPolicy,
    ) -> Result<(Tensor, KvSlot)> {
        let ops = Ops::Fused;
        let h = ops.norm(x, &self.attn_norm, self.eps)?;
        let (q, k, v) = self.qkv_heads(&h, rope, policy, ops)?;
        let rows = |t: &Tensor, off: usize, n: usize| t.narrow(2, off, n);
        let (kc, vc) = (rows(&k, 0, segs.ctx)?, rows(&v, 0, segs.ctx)?);
        let causal = |q: &Tensor, k: &Tensor, v: &Tensor| self.attend_causal(q, k, v, ops);
        let mut ys = vec![causal(&rows(&q, 0, segs.ctx)?, &kc, &vc)?];
        for (off, n) in segs.cont_offsets() {
            let k_i = Tensor::cat(&[&kc, &rows(&k, off, n)?], 2)?;
            let v_i = Tensor::cat(&[&vc, &rows(&v, off, n)?], 2)?;
            ys.push(causal(&rows(&q, off, n)?, &k_i, &v_i)?);
        }
        let mut slot = KvSlot::new();
        slot.append(&k, &v)?;
        Ok((
            self.finish(x, &Tensor::cat(&ys, 0)?, Kernels::All(policy), ops)?,
            slot,
        ))
    }

    /// Runs the block on the rows of `x` that `run` marks (a token route); the others pass
    /// through unchanged. `meta` gives every row's position and segment, `rope` every row's
    /// tables. The new rows' keys and values go to `slot` after the ones it holds: every row's
    /// under [`SkippedKv::Project`] (a skipped row's from its passed-through state), only the
    /// run rows' under [`SkippedKv::Mask`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_tokens(
        &self,
        x: &Tensor,
        run: &[bool],
        meta: &RowMeta,
        rope: &Rope,
        slot: &mut KvSlot,
        kv: SkippedKv,
        policy: KernelPolicy,
    ) -> Result<Tensor> {
        let n = run.len();
        let mut one = [Member {
            at: 0,
            n,
            rope,
            slot,
            decode: policy.decode_copy(n),
            tokens: Some(TokenRows { run, meta, kv }),
        }];
        self.forward_group(x, &mut one)
    }

    /// Runs the block on every row of `x` (positions from 0, laid out as `meta` says) and mixes
    /// by `gate` (`[rows, 1]`, 1 = run): `x + gate · (F(x) − x)`, DLR's way. Under
    /// [`SkippedKv::Mask`] a query does not see the keys of the rows `run` leaves out (but its
    /// own). With hard gates this is the slow reference of [`DecoderLayer::forward_tokens`]; with
    /// straight-through gates and [`Ops::Autograd`] it is the token trainer's pass.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_mixed(
        &self,
        x: &Tensor,
        meta: &RowMeta,
        rope: &Rope,
        gate: &Tensor,
        run: &[bool],
        kv: SkippedKv,
        ops: Ops,
    ) -> Result<Tensor> {
        let policy = KernelPolicy::Dense;
        let h = ops.norm(x, &self.attn_norm, self.eps)?;
        let (q, k, v) = self.qkv_heads(&h, rope, policy, ops)?;
        let hidden = |i: usize, j: usize| kv == SkippedKv::Mask && !run[j] && i != j;
        let mask = visibility_mask(meta, meta, self.n_rep(), hidden, x.device())?;
        let y = self.attend(&q, &k, &v, mask.as_ref(), ops)?;
        let y = self.finish(x, &y, Kernels::All(policy), ops)?;
        Ok((x + (y - x)?.broadcast_mul(gate)?)?)
    }

    pub(crate) fn n_rep(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// q, k, v of the normed rows `h`, as `[1, heads, seq, head_dim]`, RoPE applied.
    fn qkv_heads(
        &self,
        h: &Tensor,
        rope: &Rope,
        policy: KernelPolicy,
        ops: Ops,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        self.split_heads(&self.qkv.forward(h, policy)?, rope, ops)
    }

    /// q, k, v from the rows' fused projections `qkv`, as `[1, heads, seq, head_dim]`, RoPE
    /// applied.
    pub(crate) fn split_heads(
        &self,
        qkv: &Tensor,
        rope: &Rope,
        ops: Ops,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let t = qkv.dim(0)?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // [seq, heads * hd] -> [1, heads, seq, hd]
        let heads = |start: usize, n: usize, norm: &Option<Tensor>| -> Result<Tensor> {
            let mut y = qkv.narrow(1, start * hd, n * hd)?.reshape((t, n, hd))?;
            if let Some(w) = norm {
                y = ops.norm(&y.contiguous()?, w, self.eps)?;
            }
            Ok(y.transpose(0, 1)?.contiguous()?.unsqueeze(0)?)
        };
        let q = rope.apply(&heads(0, nh, &self.q_norm)?, ops)?;
        let k = rope.apply(&heads(nh, nkv, &self.k_norm)?, ops)?;
        let v = heads(nh + nkv, nkv, &None)?;
        Ok((q, k, v))
    }

    /// Attention of the queries `q` (`[1, heads, t, hd]`) over `k`, `v` (`[1, kv_heads, total,
    /// hd]`) under the additive `mask` (`[n_rep * t, total]`; `None`: every key is seen);
    /// returns `[t, heads * hd]`.
    pub(crate) fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        ops: Ops,
    ) -> Result<Tensor> {
        let t = q.dim(2)?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let n_rep = nh / nkv;
        // Grouped-query attention without copying k/v: the n_rep query heads that share a kv head
        // are adjacent, so view q as [kv_heads, n_rep * seq, hd].
        let q = q.contiguous()?.reshape((nkv, n_rep * t, hd))?;
        let k = k.squeeze(0)?.contiguous()?;
        let v = v.squeeze(0)?.contiguous()?;
        // The matmul kernels give a row what they give it in any taller call only from
        // MIN_ATTN_ROWS rows on: fewer query rows run padded with zero rows (dropped after).
        let m = n_rep * t;
        let pad = MIN_ATTN_ROWS.saturating_sub(m);
        let q = match pad {
            0 => q,
            _ => Tensor::cat(
                &[&q, &Tensor::zeros((nkv, pad, hd), q.dtype(), q.device())?],
                1,
            )?,
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let mut att = (q.matmul(&k.t()?)? * scale)?;
        if let Some(mask) = mask {
            let mask = match pad {
                0 => mask.clone(),
                _ => mask.pad_with_zeros(0, 0, pad)?,
            };
            att = att.broadcast_add(&mask)?;
        }
        let att = ops.softmax(&att)?;
        let y = att.matmul(&v)?.narrow(1, 0, m)?; // [kv_heads, n_rep * seq, hd]
        Ok(y.reshape((nh, t, hd))?
            .transpose(0, 1)?
            .reshape((t, nh * hd))?)
    }

    /// Output projection, residual, then the MLP with its residual.
    pub(crate) fn finish(
        &self,
        x: &Tensor,
        attn: &Tensor,
        kernels: Kernels,
        ops: Ops,
    ) -> Result<Tensor> {
        let x = (x + self.o.forward_rows(attn, kernels)?)?;
        let h = ops.norm(&x, &self.ffn_norm, self.eps)?;
        let gu = self.gate_up.forward_rows(&h, kernels)?;
        let gate = gu.narrow(1, 0, self.intermediate)?;
        let up = gu.narrow(1, self.intermediate, self.intermediate)?;
        let mlp = self.down.forward_rows(&(silu(&gate)? * up)?, kernels)?;
        Ok((x + mlp)?)
    }

    /// Bytes held by the block's weights.
    pub fn memory(&self) -> WeightBytes {
        let norms = [&self.attn_norm, &self.ffn_norm]
            .into_iter()
            .chain(self.q_norm.iter())
            .chain(self.k_norm.iter())
            .map(|t| t.elem_count() * 4)
            .sum::<usize>();
        WeightBytes {
            weights: norms,
            decode_copy: 0,
        } + self.qkv.memory()
            + self.o.memory()
            + self.gate_up.memory()
            + self.down.memory()
    }
}

/// Query rows (heads × tokens per kv head) below which attention's matmuls run padded.
const MIN_ATTN_ROWS: usize = 16;

/// Positions per key block of causal attention ([`DecoderLayer::attend_causal`]).
pub(crate) const KEY_BLOCK: usize = 32;

/// The keys (or values) `x` (`[1, kv_heads, total, hd]`) of positions `0 .. len`, zeros past
/// `total`.
pub(crate) fn padded(x: &Tensor, len: usize) -> Result<Tensor> {
    let (b, h, total, hd) = x.dims4()?;
    if len <= total {
        return Ok(x.narrow(2, 0, len)?);
    }
    let zeros = Tensor::zeros((b, h, len - total, hd), x.dtype(), x.device())?;
    Ok(Tensor::cat(&[x, &zeros], 2)?)
}

/// `[n_rep * seq, total]` additive mask: query `i` (absolute position `start + i`) sees keys
/// `0 ..= start + i`.
fn causal_mask(
    t: usize,
    n_rep: usize,
    start: usize,
    total: usize,
    device: &Device,
) -> Result<Tensor> {
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
    Ok(Tensor::from_vec(m, (n_rep * t, total), device)?)
}
