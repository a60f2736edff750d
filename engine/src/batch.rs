//! Several sequences through one layer path at once: the rows of every sequence in a step of a
//! server's continuous batch (prompts being prefilled, tokens being decoded) run each layer
//! together, so the matmuls see many rows instead of one sequence's few; attention stays per
//! sequence, on its own cache. Each row keeps the arithmetic of its own pass: a sequence that is
//! a one-row pass alone (a generated token) multiplies with the decode copy, the others with the
//! dense weights, whose results do not depend on the row count from 2 rows on.

use candle_core::Tensor;

use crate::cache::PathCache;
use crate::error::{Error, Result};
use crate::linear::{KernelPolicy, Kernels};
use crate::model::Model;
use crate::path::LayerPath;

/// One sequence of a batch: new tokens `ids` at positions `start ..`, after the first `start`
/// positions `cache` holds (later ones are dropped first).
#[derive(Debug)]
pub struct BatchSeq<'a> {
    /// The new tokens.
    pub ids: &'a [u32],
    /// The sequence's cache, for the batch's path.
    pub cache: &'a mut PathCache,
    /// Where the new tokens start.
    pub start: usize,
}

impl Model {
    /// True when a pass of `rows` rows alone would multiply with the decode copy.
    pub fn uses_decode_copy(&self, rows: usize) -> bool {
        matches!(self.policy().for_pass(rows), KernelPolicy::QuantizedUpTo(max) if rows <= max)
    }

    /// Runs every sequence of `seqs` along `path` as one batch per layer, extending each cache;
    /// returns each sequence's hidden rows after the path (before the final norm), in order.
    /// With `decode_copy`, equal to running each alone ([`Model::forward_hidden`]) where the
    /// kernels' results do not depend on the row count (see the module doc); without, every row
    /// multiplies with the dense weights (batched matmuls run faster than the decode copy's
    /// row-by-row dot products, and a generated token's arithmetic then differs from its pass
    /// alone in the last bits).
    pub fn forward_batch(
        &self,
        path: &LayerPath,
        seqs: &mut [BatchSeq<'_>],
        decode_copy: bool,
    ) -> Result<Vec<Tensor>> {
        self.check_path(path)?;
        for s in seqs.iter_mut() {
            if s.cache.path() != path {
                return Err(Error::CachePathMismatch {
                    cache_path: s.cache.path().to_string(),
                    call_path: path.to_string(),
                });
            }
            self.check_span(s.start, s.ids.len())?;
            s.cache.rewind_to(s.start)?;
        }
        // Decode-copy sequences first: one split point per matmul.
        let count = seqs.len();
        let mut ordered: Vec<(usize, &mut BatchSeq<'_>)> = seqs.iter_mut().enumerate().collect();
        ordered.sort_by_key(|(_, s)| !self.uses_decode_copy(s.ids.len()));
        let decode_rows = (ordered.iter())
            .filter(|(_, s)| decode_copy && self.uses_decode_copy(s.ids.len()))
            .map(|(_, s)| s.ids.len())
            .sum();
        let ropes = (ordered.iter())
            .map(|(_, s)| self.rope(s.start, s.ids.len()))
            .collect::<Result<Vec<_>>>()?;
        let embeds = (ordered.iter())
            .map(|(_, s)| self.embed(s.ids))
            .collect::<Result<Vec<_>>>()?;
        let mut x = Tensor::cat(&embeds, 0)?;
        let kernels = Kernels::Split { decode_rows };
        for (pos, &layer) in path.layers().iter().enumerate() {
            let mut parts: Vec<_> = (ordered.iter_mut().zip(&ropes))
                .map(|((_, s), rope)| (s.ids.len(), rope, s.cache.slot_mut(pos)))
                .collect();
            x = self
                .block(layer as usize)?
                .forward_batch(&x, &mut parts, kernels)?;
        }
        let mut out = vec![None; count];
        let mut at = 0;
        for (i, s) in ordered {
            let n = s.ids.len();
            s.cache.set_len(s.start + n);
            out[i] = Some(x.narrow(0, at, n)?);
            at += n;
        }
        Ok(out
            .into_iter()
            .map(|t| t.expect("every sequence ran"))
            .collect())
    }
}
