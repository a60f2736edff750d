//! Key/value caches. Each *path position* owns a slot, so a repeated layer keeps two separate
//! caches (DESIGN.md "Layer paths"). Slots are immutable tensors that are replaced on append, so a
//! clone of a cache (or of one slot) can be shared by paths with a common prefix without copying.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::path::LayerPath;

/// Keys and values of one path position, `[1, kv_heads, seq, head_dim]` each.
#[derive(Debug, Clone, Default)]
pub struct KvSlot {
    kv: Option<(Tensor, Tensor)>,
}

impl KvSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dims()[2])
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
        let (k, v) = match &self.kv {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2)?, Tensor::cat(&[pv, v], 2)?),
        };
        self.kv = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Drops every position from `len` on.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len == 0 {
            self.kv = None;
        } else if len < self.len() {
            let (k, v) = self.kv.take().expect("len > 0 implies a cache");
            self.kv = Some((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?));
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
