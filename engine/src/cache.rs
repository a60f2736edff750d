//! Key/value caches. Each *path position* owns a slot, so a repeated layer keeps two separate
//! caches (DESIGN.md "Layer paths"). Slots are immutable tensors that are replaced on append, so a
//! clone of a cache (or of one slot) can be shared by paths with a common prefix without copying.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::path::LayerPath;

/// Keys and values of one path position, `[1, kv_heads, keys, head_dim]` each. A slot is dense
/// (one key per token position `0 .. len`) unless a token route that masks skipped tokens left
/// some positions out; then it also records the position of each key it holds.
#[derive(Debug, Clone, Default)]
pub struct KvSlot {
    kv: Option<(Tensor, Tensor)>,
    /// `Some` once a position was left out: the positions of the keys held, ascending, and the
    /// number of positions the slot has seen.
    sparse: Option<(Vec<u32>, usize)>,
}

impl KvSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of token positions the slot has seen (held or, in a sparse slot, left out).
    pub fn len(&self) -> usize {
        match &self.sparse {
            Some((_, seen)) => *seen,
            None => self.keys(),
        }
    }

    /// Number of keys held.
    pub fn keys(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    /// The token position of each key held, or `None` for a dense slot (keys `0 .. len`).
    pub fn positions(&self) -> Option<&[u32]> {
        self.sparse.as_ref().map(|(p, _)| p.as_slice())
    }

    /// The keys and values held, if any.
    pub fn kv(&self) -> Option<(&Tensor, &Tensor)> {
        self.kv.as_ref().map(|(k, v)| (k, v))
    }

    /// True when no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of f32 values held (keys and values).
    pub fn elem_count(&self) -> usize {
        self.kv
            .as_ref()
            .map_or(0, |(k, v)| k.elem_count() + v.elem_count())
    }

    /// Bytes held (keys and values).
    pub fn size_in_bytes(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, v)| {
            (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes()
        })
    }

    /// Appends `k`, `v` for new positions and returns the keys and values of all positions.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        if let Some((held, seen)) = &mut self.sparse {
            let n = k.dims()[2];
            held.extend(*seen as u32..(*seen + n) as u32);
            *seen += n;
        }
        self.push(k, v)
    }

    /// Appends the keys and values of some of `seen` new positions: `kv` holds one key per entry
    /// of `positions` (ascending; `None` when there is none). The other positions are left out
    /// and the slot becomes sparse if it was not.
    pub fn append_sparse(
        &mut self,
        kv: Option<(&Tensor, &Tensor)>,
        positions: &[u32],
        seen: usize,
    ) -> Result<()> {
        let len = self.len();
        let (held, total) = self
            .sparse
            .get_or_insert_with(|| ((0..len as u32).collect(), len));
        held.extend_from_slice(positions);
        *total += seen;
        if let Some((k, v)) = kv {
            self.push(k, v)?;
        }
        Ok(())
    }

    fn push(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match &self.kv {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2)?, Tensor::cat(&[pv, v], 2)?),
        };
        self.kv = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Drops every position from `len` on.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        let keep = match &mut self.sparse {
            Some((held, seen)) => {
                held.retain(|&p| (p as usize) < len);
                *seen = (*seen).min(len);
                held.len()
            }
            None => len,
        };
        if keep == 0 {
            self.kv = None;
        } else if keep < self.keys() {
            let (k, v) = self.kv.take().expect("keys > 0 implies a cache");
            self.kv = Some((k.narrow(2, 0, keep)?, v.narrow(2, 0, keep)?));
        }
        Ok(())
    }
}

/// The cache of one sequence along one layer path: a slot per path position.
#[derive(Debug, Clone)]
pub struct PathCache {
    path: LayerPath,
    slots: Vec<KvSlot>,
    len: usize,
}

impl PathCache {
    /// An empty cache for `path`: one empty slot per path position.
    pub fn new(path: &LayerPath) -> Self {
        Self {
            path: path.clone(),
            slots: vec![KvSlot::new(); path.len()],
            len: 0,
        }
    }

    /// A cache assembled from slots computed elsewhere (the search's prefix cache): one slot per
    /// path position, each holding `len` positions.
    pub fn from_slots(path: &LayerPath, slots: Vec<KvSlot>, len: usize) -> Result<Self> {
        if slots.len() != path.len() || slots.iter().any(|s| s.len() != len) {
            return Err(Error::CacheGap {
                cached: slots.iter().map(KvSlot::len).min().unwrap_or(0),
                start: len,
            });
        }
        Ok(Self {
            path: path.clone(),
            slots,
            len,
        })
    }

    /// The layer path the cache was built for; only passes along it may use the cache.
    pub fn path(&self) -> &LayerPath {
        &self.path
    }

    /// Number of token positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by every slot's keys and values.
    pub fn size_in_bytes(&self) -> usize {
        self.slots.iter().map(KvSlot::size_in_bytes).sum()
    }

    /// Forgets positions from `start` on so that a call can (re)start there.
    pub(crate) fn rewind_to(&mut self, start: usize) -> Result<()> {
        if start > self.len {
            return Err(Error::CacheGap {
                cached: self.len,
                start,
            });
        }
        if start < self.len {
            for s in &mut self.slots {
                s.truncate(start)?;
            }
            self.len = start;
        }
        Ok(())
    }

    pub(crate) fn slot_mut(&mut self, pos: usize) -> &mut KvSlot {
        &mut self.slots[pos]
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }
}
