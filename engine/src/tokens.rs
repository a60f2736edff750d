//! Token routes: a gate per token and layer says whether that token's row runs the layer. The
//! executor gathers the rows that run, runs the block on them alone and scatters them back, so a
//! skipped token-layer costs nothing but (under [`SkippedKv::Project`]) its keys and values. This
//! file holds what such a pass needs beyond a path: the row layout (each row's position and
//! segment), which keys a query sees, and what a skipped token leaves for the tokens after it.

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::layer::Segments;

/// What later tokens read, at a layer, of a token that skipped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum SkippedKv {
    /// Keys and values computed from the skipped token's passed-through state (norm, K/V
    /// projections, RoPE and the cache write; the rest of the layer is saved). This is what
    /// DLR's mix `g·F(x) + (1−g)·x` gives the tokens after a skipped one.
    Project,
    /// Left out of attention: later tokens do not see the token at that layer, and nothing of
    /// the layer runs for it.
    #[default]
    Mask,
}

impl SkippedKv {
    /// The name users give (`project`, `mask`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Project => "project",
            Self::Mask => "mask",
        }
    }
}

impl std::fmt::Display for SkippedKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SkippedKv {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "project" => Ok(Self::Project),
            "mask" => Ok(Self::Mask),
            other => Err(format!(
                "unknown skipped-token keys `{other}` (project, mask)"
            )),
        }
    }
}

/// Each row's token position and segment: 0 for a sequence or a fused context, `i + 1` for the
/// `i`-th continuation of fused rows. A query sees a key at an earlier or equal position of its
/// own segment or of segment 0 (cached keys are always segment 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowMeta {
    /// Token position of each row.
    pub pos: Vec<u32>,
    /// Segment of each row.
    pub seg: Vec<u32>,
}

impl RowMeta {
    /// One sequence at positions `start .. start + n`.
    pub fn sequence(start: usize, n: usize) -> Self {
        Self {
            pos: (start as u32..(start + n) as u32).collect(),
            seg: vec![0; n],
        }
    }

    /// The rows of a fused context and its continuations.
    pub fn segments(segs: &Segments) -> Self {
        let mut meta = Self::sequence(0, segs.ctx);
        for (i, &n) in segs.conts.iter().enumerate() {
            meta.pos.extend(segs.ctx as u32..(segs.ctx + n) as u32);
            meta.seg.extend(std::iter::repeat_n(i as u32 + 1, n));
        }
        meta
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.pos.len()
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.pos.is_empty()
    }

    /// The rows `rows` (indices), in that order.
    pub fn select(&self, rows: &[u32]) -> Self {
        Self {
            pos: rows.iter().map(|&r| self.pos[r as usize]).collect(),
            seg: rows.iter().map(|&r| self.seg[r as usize]).collect(),
        }
    }

    /// Cached keys at `positions` (segment 0) followed by these rows: the keys of a pass.
    pub fn after_cached(&self, positions: impl IntoIterator<Item = u32>) -> Self {
        let pos: Vec<u32> = positions
            .into_iter()
            .chain(self.pos.iter().copied())
            .collect();
        let cached = pos.len() - self.len();
        Self {
            seg: std::iter::repeat_n(0, cached)
                .chain(self.seg.iter().copied())
                .collect(),
            pos,
        }
    }

    fn sees(&self, i: usize, keys: &RowMeta, j: usize) -> bool {
        keys.pos[j] <= self.pos[i] && (keys.seg[j] == 0 || keys.seg[j] == self.seg[i])
    }
}

/// The additive attention mask `[n_rep * queries, keys]` (0 where a query sees a key, −∞ where
/// not), or `None` when every query sees every key. `hidden(query, key)` hides more keys (the
/// tokens a masked route skipped).
pub(crate) fn visibility_mask(
    queries: &RowMeta,
    keys: &RowMeta,
    n_rep: usize,
    hidden: impl Fn(usize, usize) -> bool,
    device: &Device,
) -> Result<Option<Tensor>> {
    let (t, total) = (queries.len(), keys.len());
    let mut row = Vec::with_capacity(t * total);
    let mut all = true;
    for i in 0..t {
        for j in 0..total {
            let seen = queries.sees(i, keys, j) && !hidden(i, j);
            all &= seen;
            row.push(if seen { 0f32 } else { f32::NEG_INFINITY });
        }
    }
    if all {
        return Ok(None);
    }
    let mut m = Vec::with_capacity(n_rep * row.len());
    for _ in 0..n_rep {
        m.extend_from_slice(&row);
    }
    Ok(Some(Tensor::from_vec(m, (n_rep * t, total), device)?))
}

/// The indices of the rows that run (`run[i]`), and the gather order that puts a layer's outputs
/// back: row `i` comes from `x` (`i`) when skipped, from the run rows' outputs (`n + rank`) when
/// run, for `cat([x, y]).index_select(order)`.
pub(crate) fn run_rows(run: &[bool]) -> (Vec<u32>, Vec<u32>) {
    let n = run.len() as u32;
    let mut rows = Vec::new();
    let order = run
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            if r {
                rows.push(i as u32);
                n + rows.len() as u32 - 1
            } else {
                i as u32
            }
        })
        .collect();
    (rows, order)
}
