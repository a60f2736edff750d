//! One block over the rows of several sequences at once, each under its own route: the rows of
//! every sequence that executes this layer at this step of a batch go through the block's
//! matmuls together, while attention runs per sequence on its own key/value slot. A sequence
//! may run all its rows (a layer path, a per-input router's decision) or, under a token route,
//! only the rows its gate marks. A lone token-route pass is the same call with one sequence, so
//! batched and lone passes share every line of arithmetic.
//!
//! Each sequence's rows keep the kernels of their own pass ([`Member::decode`]): the caller
//! orders the decode-copy sequences first, and every matmul splits its rows once there.

use candle_core::Tensor;

use crate::cache::KvSlot;
use crate::error::Result;
use crate::layer::{padded, DecoderLayer, Ops, KEY_BLOCK};
use crate::linear::Kernels;
use crate::rope::Rope;
use crate::tokens::{run_rows, visibility_mask, RowMeta, SkippedKv};

/// One sequence's part of a grouped block call.
pub(crate) struct Member<'s> {
    /// Its first row in the call's input.
    pub(crate) at: usize,
    /// Its rows.
    pub(crate) n: usize,
    /// Its rows' RoPE tables.
    pub(crate) rope: &'s Rope,
    /// Its keys and values at this path position, extended by the call.
    pub(crate) slot: &'s mut KvSlot,
    /// Its rows multiply with the decode copy (it is a one-row pass of its own).
    pub(crate) decode: bool,
    /// Under a token route: which of its rows run and their layout; `None`: every row runs.
    pub(crate) tokens: Option<TokenRows<'s>>,
}

/// A token route's rows at one layer.
#[derive(Clone, Copy)]
pub(crate) struct TokenRows<'s> {
    /// One flag per row: it runs the layer.
    pub(crate) run: &'s [bool],
    /// Every row's position and segment.
    pub(crate) meta: &'s RowMeta,
    /// What later tokens read of a skipped row.
    pub(crate) kv: SkippedKv,
}

/// The rows of a member, local to it: those that need keys and values, those that run the rest.
struct MemberRows {
    kv: Vec<u32>,
    run: Vec<u32>,
}

impl Member<'_> {
    fn rows(&self) -> MemberRows {
        let all = || (0..self.n as u32).collect::<Vec<_>>();
        match &self.tokens {
            None => MemberRows {
                kv: all(),
                run: all(),
            },
            Some(t) => {
                let (run, _) = run_rows(t.run);
                let kv = match t.kv {
                    SkippedKv::Project => all(),
                    SkippedKv::Mask => run.clone(),
                };
                MemberRows { kv, run }
            }
        }
    }
}

impl DecoderLayer {
    /// Runs the block on `members`' rows of `x` (`[rows, hidden]`; members in order, decode-copy
    /// ones first, rows of `x` no member names passing through): rows that run go through the
    /// matmuls together, attention runs per member on its slot. Rows a token route skips pass
    /// through unchanged.
    pub(crate) fn forward_group(&self, x: &Tensor, members: &mut [Member<'_>]) -> Result<Tensor> {
        let ops = Ops::Fused;
        let total = x.dim(0)?;
        let (mut kv_rows, mut run_rows) = (Vec::new(), Vec::new());
        let (mut kv_decode, mut run_decode) = (0, 0);
        let mut kv_counts = Vec::with_capacity(members.len());
        for m in members.iter() {
            let r = m.rows();
            if m.decode {
                kv_decode += r.kv.len();
                run_decode += r.run.len();
            }
            kv_counts.push(r.kv.len());
            kv_rows.extend(r.kv.iter().map(|&i| m.at as u32 + i));
            run_rows.extend(r.run.iter().map(|&i| m.at as u32 + i));
        }
        let qkv = match kv_rows.is_empty() {
            true => None,
            false => {
                let h = ops.norm(&gather(x, &kv_rows, total)?, &self.attn_norm, self.eps)?;
                let kernels = Kernels::Split {
                    decode_rows: kv_decode,
                };
                Some(self.qkv.forward_rows(&h, kernels)?)
            }
        };
        let mut ys = Vec::with_capacity(members.len());
        let mut at = 0;
        for (m, &k) in members.iter_mut().zip(&kv_counts) {
            let part = match &qkv {
                Some(qkv) if k > 0 => Some(qkv.narrow(0, at, k)?),
                _ => None,
            };
            ys.extend(self.attend_member(part.as_ref(), m)?);
            at += k;
        }
        if run_rows.is_empty() {
            return Ok(x.clone());
        }
        let x_run = gather(x, &run_rows, total)?;
        let kernels = Kernels::Split {
            decode_rows: run_decode,
        };
        let y = self.finish(&x_run, &Tensor::cat(&ys, 0)?, kernels, ops)?;
        scatter(x, y, &run_rows, total)
    }

    /// Attention of one member's rows (`qkv`: the projections of the rows that need keys and
    /// values; `None` when none does); `None` when none of its rows runs.
    fn attend_member(&self, qkv: Option<&Tensor>, m: &mut Member<'_>) -> Result<Option<Tensor>> {
        let Some(t) = m.tokens else {
            let qkv = qkv.expect("every row of a plain member has keys");
            return Ok(Some(self.attend_sequence(qkv, m.rope, m.slot)?));
        };
        let ops = Ops::Fused;
        let (rows, _) = run_rows(t.run);
        let n = t.run.len();
        let slot = &mut *m.slot;
        let cached = match slot.positions() {
            Some(p) => p.to_vec(),
            None => (0..slot.len() as u32).collect(),
        };
        let Some(qkv) = qkv else {
            // Masked route, no row runs: the slot only notes the positions it left out.
            slot.append_sparse(None, &[], n)?;
            return Ok(None);
        };
        let idx = Tensor::new(rows.as_slice(), qkv.device())?;
        let run_meta = t.meta.select(&rows);
        let (q, k, v) = match t.kv {
            SkippedKv::Project => {
                let (q, k, v) = self.split_heads(qkv, m.rope, ops)?;
                let (k, v) = slot.append(&k, &v)?;
                if rows.is_empty() {
                    return Ok(None);
                }
                (q.index_select(&idx, 2)?, k, v)
            }
            SkippedKv::Mask => {
                let (q, k, v) = self.split_heads(qkv, &m.rope.select(&idx)?, ops)?;
                slot.append_sparse(Some((&k, &v)), &run_meta.pos, n)?;
                let (k, v) = slot.kv().expect("keys were just appended");
                (q, k.clone(), v.clone())
            }
        };
        let keys = match t.kv {
            SkippedKv::Project => t.meta.after_cached(cached),
            SkippedKv::Mask => run_meta.after_cached(cached),
        };
        if t.meta.seg.iter().any(|&s| s != 0) {
            // Fused continuations: keys of several segments share positions.
            let mask = visibility_mask(&run_meta, &keys, self.n_rep(), |_, _| false, qkv.device())?;
            return Ok(Some(self.attend(&q, &k, &v, mask.as_ref(), ops)?));
        }
        Ok(Some(self.attend_blocked(&q, &k, &v, &run_meta, &keys)?))
    }

    /// A sequence's token-route attention in key blocks of fixed absolute positions, as
    /// [`DecoderLayer::attend_causal`] for a path: the queries (positions `queries`, ascending)
    /// of block `b` attend over the held keys (positions `keys`, ascending) before `(b + 1) ·
    /// KEY_BLOCK`, laid out on as many slots as that block has positions, those past the last
    /// key masked zeros. A query's sums then run over the same slots whatever else its pass
    /// holds: a prompt resumed after a cached prefix computes what running it whole does.
    fn attend_blocked(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        queries: &RowMeta,
        keys: &RowMeta,
    ) -> Result<Tensor> {
        let ops = Ops::Fused;
        let mut ys = Vec::new();
        let mut i = 0;
        while i < queries.len() {
            let end = (queries.pos[i] as usize / KEY_BLOCK + 1) * KEY_BLOCK;
            let rows = queries.pos[i..].partition_point(|&p| (p as usize) < end);
            let held = keys.pos.partition_point(|&p| (p as usize) < end);
            let mut slots = keys.select(&(0..held as u32).collect::<Vec<_>>());
            slots.pos.resize(end, u32::MAX); // never seen
            slots.seg.resize(end, 0);
            let group = queries.select(&(i as u32..(i + rows) as u32).collect::<Vec<_>>());
            let mask = visibility_mask(&group, &slots, self.n_rep(), |_, _| false, q.device())?;
            let (kb, vb) = (
                padded(&k.narrow(2, 0, held)?, end)?,
                padded(&v.narrow(2, 0, held)?, end)?,
            );
            ys.push(self.attend(&q.narrow(2, i, rows)?, &kb, &vb, mask.as_ref(), ops)?);
            i += rows;
        }
        Ok(Tensor::cat(&ys, 0)?)
    }
}

/// The rows `rows` of `x` (`total` rows), without a copy when they are all of them in order.
fn gather(x: &Tensor, rows: &[u32], total: usize) -> Result<Tensor> {
    if is_all(rows, total) {
        return Ok(x.clone());
    }
    Ok(x.index_select(&Tensor::new(rows, x.device())?, 0)?)
}

/// `x` with its rows `rows` replaced by those of `y`, in order.
fn scatter(x: &Tensor, y: Tensor, rows: &[u32], total: usize) -> Result<Tensor> {
    if is_all(rows, total) {
        return Ok(y);
    }
    let mut order: Vec<u32> = (0..total as u32).collect();
    for (rank, &r) in rows.iter().enumerate() {
        order[r as usize] = (total + rank) as u32;
    }
    let order = Tensor::new(order.as_slice(), x.device())?;
    Ok(Tensor::cat(&[x, &y], 0)?.index_select(&order, 0)?)
}

fn is_all(rows: &[u32], total: usize) -> bool {
    rows.len() == total && rows.iter().enumerate().all(|(i, &r)| r as usize == i)
}
