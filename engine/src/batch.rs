//! Several sequences at once, each under its own route: the rows of every sequence in a step of
//! a server's continuous batch (prompts being prefilled, tokens being decoded) run each layer
//! together, grouped by the layer they execute. Layers are visited in order; at each one, every
//! sequence says how often it runs it (its path's count, a per-input router's decision, or once
//! for the rows a token gate marks), and each round of that layer runs the rows of the sequences
//! still due, in one grouped block call ([`crate::group`]). The matmuls see many rows instead of
//! one sequence's few; attention stays per sequence, on its own cache.
//!
//! Each row keeps the arithmetic of its own pass: a sequence that is a one-row pass alone (a
//! generated token) multiplies with the decode copy, the others with the dense weights, whose
//! results do not depend on the row count from 2 rows on.

use candle_core::Tensor;

use crate::cache::{KvSlot, PathCache};
use crate::error::{Error, Result};
use crate::group::{Member, TokenRows};
use crate::model::Model;
use crate::path::{LayerPath, PathError};
use crate::rope::Rope;
use crate::tokens::{RowMeta, SkippedKv};

/// A per-input decision: how often to run layer `i` given the sequence's rows entering it.
pub type Decider<'a> = Box<dyn FnMut(usize, &Tensor) -> Result<u8> + 'a>;

/// A token gate: which rows of the sequence run layer `i`, given its rows entering it.
pub type TokenGateFn<'a> = Box<dyn FnMut(usize, &Tensor) -> Result<Vec<bool>> + 'a>;

/// Who picks a batched sequence's layers.
pub enum SeqRoute<'a> {
    /// The path its cache was built for.
    Path,
    /// Before layer `i`, `decide(i, rows)` says how often to run it (0, 1 or 2), from the
    /// sequence's rows entering it; the sequence must start at position 0, and its cache is
    /// replaced by one built for the path the decisions made.
    Decide(Decider<'a>),
    /// A token route on a cache of the full path: before layer `i`, `gate(i, rows)` says which
    /// rows run it; `kv` what later tokens read of the others.
    Tokens {
        /// The gate.
        gate: TokenGateFn<'a>,
        /// Keys and values of skipped tokens.
        kv: SkippedKv,
    },
}

/// One sequence of a batch: new tokens `ids` at positions `start ..`, after the first `start`
/// positions `cache` holds (later ones are dropped first).
pub struct BatchSeq<'a> {
    /// The new tokens.
    pub ids: &'a [u32],
    /// The sequence's cache.
    pub cache: &'a mut PathCache,
    /// Where the new tokens start.
    pub start: usize,
    /// Who picks its layers.
    pub route: SeqRoute<'a>,
}

/// A sequence's state through one batched pass.
struct Lane<'b, 'a> {
    seq: &'b mut BatchSeq<'a>,
    /// Its index in the caller's order.
    index: usize,
    /// Its first row in the batch.
    at: usize,
    rope: Rope,
    /// Row layout (token routes).
    meta: Option<RowMeta>,
    decode: bool,
    /// Per-layer counts of a fixed path.
    counts: Vec<u8>,
    /// Next path position.
    pos: usize,
    /// A per-input route's decisions and slots so far.
    slots: Vec<KvSlot>,
    /// This layer: how often it runs, and (token routes) which rows.
    count: u8,
    run: Option<Vec<bool>>,
}

impl Lane<'_, '_> {
    fn n(&self) -> usize {
        self.seq.ids.len()
    }

    /// Asks the route how often the sequence runs `layer`, given the batch's state `x`.
    fn decide(&mut self, layer: usize, x: &Tensor) -> Result<()> {
        let n = self.n();
        let rows = || x.narrow(0, self.at, n);
        (self.count, self.run) = match &mut self.seq.route {
            SeqRoute::Path => (self.counts[layer], None),
            SeqRoute::Decide(decide) => {
                let count = decide(layer, &rows()?)?;
                if count > 2 {
                    return Err(PathError::BadCount { layer, count }.into());
                }
                self.counts.push(count);
                (count, None)
            }
            SeqRoute::Tokens { gate, .. } => {
                let run = gate(layer, &rows()?)?;
                if run.len() != n {
                    return Err(Error::GateRows {
                        layer,
                        flags: run.len(),
                        rows: n,
                    });
                }
                (1, Some(run))
            }
        };
        Ok(())
    }

    /// The sequence's part of the next round of the current layer (advancing its path
    /// position).
    fn member(&mut self) -> Member<'_> {
        let Lane {
            seq,
            at,
            rope,
            meta,
            decode,
            pos,
            slots,
            run,
            ..
        } = self;
        let slot = match seq.route {
            SeqRoute::Decide(_) => {
                slots.push(KvSlot::new());
                slots.last_mut().expect("just pushed")
            }
            _ => seq.cache.slot_mut(*pos),
        };
        *pos += 1;
        // A token route whose rows all run on a dense slot runs the layer as a path would.
        let tokens = match (&seq.route, run.as_deref()) {
            (SeqRoute::Tokens { kv, .. }, Some(run))
                if slot.positions().is_some() || !run.iter().all(|&r| r) =>
            {
                Some(TokenRows {
                    run,
                    meta: meta.as_ref().expect("token routes lay out their rows"),
                    kv: *kv,
                })
            }
            _ => None,
        };
        Member {
            at: *at,
            n: seq.ids.len(),
            rope,
            slot,
            decode: *decode,
            tokens,
        }
    }
}

impl Model {
    /// True when a pass of `rows` rows alone would multiply with the decode copy.
    pub fn uses_decode_copy(&self, rows: usize) -> bool {
        self.policy().decode_copy(rows)
    }

    /// Runs every sequence of `seqs` along its route, grouped by layer as the module doc says,
    /// extending each cache; returns each sequence's hidden rows after its last layer (before
    /// the final norm), in order. With `decode_copy`, equal to running each alone
    /// ([`Model::run_path`]) where the kernels' results do not depend on the row count (see the
    /// module doc); without, every row multiplies with the dense weights (batched matmuls run
    /// faster than the decode copy's row-by-row dot products, and a generated token's
    /// arithmetic then differs from its pass alone in the last bits).
    pub fn forward_batch(
        &self,
        seqs: &mut [BatchSeq<'_>],
        decode_copy: bool,
    ) -> Result<Vec<Tensor>> {
        let mut lanes = self.lanes(seqs, decode_copy)?;
        let embeds = (lanes.iter())
            .map(|l| self.embed(l.seq.ids))
            .collect::<Result<Vec<_>>>()?;
        let mut x = Tensor::cat(&embeds, 0)?;
        for layer in 0..self.num_layers() {
            for lane in lanes.iter_mut() {
                lane.decide(layer, &x)?;
            }
            for round in 0..2 {
                let mut members: Vec<Member<'_>> = (lanes.iter_mut())
                    .filter(|l| l.count > round)
                    .map(|l| l.member())
                    .collect();
                if members.is_empty() {
                    break;
                }
                x = self.block(layer)?.forward_group(&x, &mut members)?;
            }
        }
        let mut out = vec![None; lanes.len()];
        for l in lanes {
            let n = l.n();
            if let SeqRoute::Decide(_) = l.seq.route {
                let path = LayerPath::from_counts(&l.counts)?;
                *l.seq.cache = PathCache::from_slots(&path, l.slots, n)?;
            } else {
                l.seq.cache.set_len(l.seq.start + n);
            }
            out[l.index] = Some(x.narrow(0, l.at, n)?);
        }
        Ok(out
            .into_iter()
            .map(|t| t.expect("every sequence ran"))
            .collect())
    }

    /// Checks each sequence against its route and lays the batch out: decode-copy sequences
    /// first (one split point per matmul), each cache rewound to its start.
    fn lanes<'b, 'a>(
        &self,
        seqs: &'b mut [BatchSeq<'a>],
        decode_copy: bool,
    ) -> Result<Vec<Lane<'b, 'a>>> {
        let full = LayerPath::full(self.num_layers());
        let mut lanes = Vec::with_capacity(seqs.len());
        for (index, seq) in seqs.iter_mut().enumerate() {
            let n = seq.ids.len();
            self.check_span(seq.start, n)?;
            let path = seq.cache.path();
            let mismatch = |call: &str| Error::CachePathMismatch {
                cache_path: path.to_string(),
                call_path: call.into(),
            };
            match seq.route {
                SeqRoute::Path => self.check_path(path)?,
                SeqRoute::Tokens { .. } if *path != full => {
                    return Err(mismatch("(a token route: the full path)"))
                }
                SeqRoute::Decide(_) if seq.start != 0 => {
                    return Err(Error::CacheGap {
                        cached: 0,
                        start: seq.start,
                    })
                }
                _ => {}
            }
            seq.cache.rewind_to(seq.start)?;
            let meta = (matches!(seq.route, SeqRoute::Tokens { .. }))
                .then(|| RowMeta::sequence(seq.start, n));
            lanes.push(Lane {
                index,
                at: 0,
                rope: self.rope(seq.start, n)?,
                meta,
                decode: decode_copy && self.uses_decode_copy(n),
                counts: match seq.route {
                    SeqRoute::Path => seq.cache.path().counts(),
                    _ => Vec::new(),
                },
                pos: 0,
                slots: Vec::new(),
                count: 0,
                run: None,
                seq,
            });
        }
        lanes.sort_by_key(|l| !l.decode);
        let mut at = 0;
        for l in lanes.iter_mut() {
            l.at = at;
            at += l.n();
        }
        Ok(lanes)
    }
}
