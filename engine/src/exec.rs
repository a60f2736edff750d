//! The path executor: the one loop that runs hidden states along a layer path. A full forward
//! with a KV cache, the search's prefix reuse, the trainer's teacher-forced pass and routed
//! inference differ only in which rows run, where their keys and values go and who picks the
//! layers; those are the arguments here, and the loop over path positions, the path check and
//! the RoPE tables live in this file once.

use candle_core::Tensor;

use crate::cache::{KvSlot, PathCache};
use crate::error::{Error, Result};
use crate::layer::Segments;
use crate::model::Model;
use crate::path::{LayerPath, PathError};
use crate::tokens::{RowMeta, SkippedKv};

/// Who picks the layers of a pass.
pub enum Route<'a> {
    /// A fixed path, run from position `from` on; the state passed in is the one after
    /// `path[..from]` (0: the embeddings).
    Path {
        /// The layers to run.
        path: &'a LayerPath,
        /// First path position to run.
        from: usize,
    },
    /// Before layer `i`, `decide(i, state)` says how often to run it: 0 (skip), 1 (execute) or
    /// 2 (repeat). The state is every row's; routed inference reads the prompt rows of it.
    Decide(&'a mut dyn FnMut(usize, &Tensor) -> Result<u8>),
    /// A token route: before layer `i`, `gate(i, state)` says which rows run it (one flag per
    /// row of the pass); the others pass through, and `kv` says what later tokens read of them.
    /// Every layer is visited once, so the pass's path is the full one; with every flag set and
    /// a dense cache a layer runs exactly as on the full path.
    Tokens {
        /// The gate.
        gate: &'a mut dyn FnMut(usize, &Tensor) -> Result<Vec<bool>>,
        /// Keys and values of skipped tokens.
        kv: SkippedKv,
    },
}

/// The rows a pass runs and where their keys and values go.
pub enum Rows<'a> {
    /// One sequence at positions `start ..`, its keys and values appended to `cache` (which must
    /// be built for the route's path; a `start` below its length rewinds it first).
    Cached {
        /// The sequence's cache.
        cache: &'a mut PathCache,
        /// Position of the first row.
        start: usize,
    },
    /// One sequence at positions `0 ..`; keys and values are dropped after each layer.
    Uncached,
    /// A context and its continuations as fused rows ([`Segments`]); each path position's keys
    /// and values are pushed onto `slots`.
    Fused {
        /// The layout of the rows.
        segs: &'a Segments,
        /// Receives one slot per path position run, holding every row's keys and values.
        slots: &'a mut Vec<KvSlot>,
    },
}

/// What a pass leaves: the hidden rows after the last path position (before the final norm)
/// and the path it ran.
#[derive(Debug, Clone)]
pub struct Pass {
    /// `[rows, hidden]`.
    pub hidden: Tensor,
    /// The route's path, or for [`Route::Decide`] the path the decisions made.
    pub path: LayerPath,
}

impl Model {
    /// Runs `x` (`[rows, hidden]`) along `route`. After every path position, `visit(position,
    /// state, keys and values of that position)` sees the new state (the search caches prefixes
    /// with it).
    pub fn run_path(
        &self,
        x: Tensor,
        rows: Rows<'_>,
        route: Route<'_>,
        mut visit: impl FnMut(usize, &Tensor, &KvSlot),
    ) -> Result<Pass> {
        let n = x.dim(0)?;
        let (mut exec, from) = Executor::new(self, rows, &route, n)?;
        let mut x = x;
        let path = match route {
            Route::Path { path, from: _ } => {
                for (pos, &layer) in path.layers().iter().enumerate().skip(from) {
                    x = exec.step(pos, layer as usize, &x, &mut visit)?;
                }
                path.clone()
            }
            Route::Decide(decide) => {
                let mut counts = Vec::with_capacity(self.num_layers());
                let mut pos = 0;
                for layer in 0..self.num_layers() {
                    let count = decide(layer, &x)?;
                    if count > 2 {
                        return Err(PathError::BadCount { layer, count }.into());
                    }
                    for _ in 0..count {
                        x = exec.step(pos, layer, &x, &mut visit)?;
                        pos += 1;
                    }
                    counts.push(count);
                }
                LayerPath::from_counts(&counts)?
            }
            Route::Tokens { gate, kv } => {
                for layer in 0..self.num_layers() {
                    let run = gate(layer, &x)?;
                    if run.len() != n {
                        return Err(Error::GateRows {
                            layer,
                            flags: run.len(),
                            rows: n,
                        });
                    }
                    x = exec.step_tokens(layer, &x, &run, kv, &mut visit)?;
                }
                LayerPath::full(self.num_layers())
            }
        };
        exec.finish(n);
        Ok(Pass { hidden: x, path })
    }

    /// Checks a path built elsewhere against this model: the path check every pass goes through.
    /// A path is valid for the depth it was built for, so it must have been built for this one.
    pub fn check_path(&self, path: &LayerPath) -> Result<()> {
        if path.num_layers() != self.num_layers() {
            return Err(Error::PathDepthMismatch {
                path_layers: path.num_layers(),
                model_layers: self.num_layers(),
            });
        }
        Ok(())
    }
}

/// One pass's per-position work: the RoPE tables, the kind of rows and their key/value home.
struct Executor<'m, 'a> {
    model: &'m Model,
    rope: crate::rope::Rope,
    rows: Rows<'a>,
    start: usize,
    /// Each row's position and segment (token routes only).
    meta: Option<RowMeta>,
}

impl<'m, 'a> Executor<'m, 'a> {
    /// Validates the route against the model and the rows; returns the executor and the first
    /// path position to run.
    fn new(model: &'m Model, rows: Rows<'a>, route: &Route<'_>, n: usize) -> Result<(Self, usize)> {
        let from = match route {
            Route::Path { path, from } => {
                model.check_path(path)?;
                *from
            }
            Route::Decide(_) | Route::Tokens { .. } => 0,
        };
        let (rope, start) = match &rows {
            Rows::Cached { cache, start } => {
                match route {
                    Route::Path { path, .. } if cache.path() == *path => {}
                    Route::Path { path, .. } => {
                        return Err(Error::CachePathMismatch {
                            cache_path: cache.path().to_string(),
                            call_path: path.to_string(),
                        })
                    }
                    Route::Tokens { .. }
                        if *cache.path() == LayerPath::full(model.num_layers()) => {}
                    Route::Tokens { .. } => {
                        return Err(Error::CachePathMismatch {
                            cache_path: cache.path().to_string(),
                            call_path: "(a token route: the full path)".into(),
                        })
                    }
                    Route::Decide(_) => {
                        return Err(Error::CachePathMismatch {
                            cache_path: cache.path().to_string(),
                            call_path: "(decided layer by layer)".into(),
                        })
                    }
                }
                model.check_span(*start, n)?;
                (model.rope(*start, n)?, *start)
            }
            Rows::Uncached => {
                model.check_span(0, n)?;
                (model.rope(0, n)?, 0)
            }
            Rows::Fused { segs, .. } => (model.rope_segments(segs)?, 0),
        };
        let meta = matches!(route, Route::Tokens { .. }).then(|| match &rows {
            Rows::Fused { segs, .. } => RowMeta::segments(segs),
            _ => RowMeta::sequence(start, n),
        });
        let mut exec = Self {
            model,
            rope,
            rows,
            start,
            meta,
        };
        if let Rows::Cached { cache, start } = &mut exec.rows {
            cache.rewind_to(*start)?;
        }
        Ok((exec, from))
    }

    /// Runs `layer` at path position `pos` on `x`.
    fn step(
        &mut self,
        pos: usize,
        layer: usize,
        x: &Tensor,
        visit: &mut impl FnMut(usize, &Tensor, &KvSlot),
    ) -> Result<Tensor> {
        let (model, rope) = (self.model, &self.rope);
        match &mut self.rows {
            Rows::Cached { cache, .. } => {
                let slot = cache.slot_mut(pos);
                let y = model.run_layer(layer, x, rope, slot)?;
                visit(pos, &y, slot);
                Ok(y)
            }
            Rows::Uncached => {
                let mut slot = KvSlot::new();
                let y = model.run_layer(layer, x, rope, &mut slot)?;
                visit(pos, &y, &slot);
                Ok(y)
            }
            Rows::Fused { segs, slots } => {
                let (y, slot) = model.run_layer_fused(layer, x, rope, segs)?;
                visit(pos, &y, &slot);
                slots.push(slot);
                Ok(y)
            }
        }
    }

    /// Runs `layer` (path position `layer` of the full path) on the rows of `x` that `run`
    /// marks. With every row run and a dense slot, this is [`Executor::step`].
    fn step_tokens(
        &mut self,
        layer: usize,
        x: &Tensor,
        run: &[bool],
        kv: SkippedKv,
        visit: &mut impl FnMut(usize, &Tensor, &KvSlot),
    ) -> Result<Tensor> {
        let dense = match &mut self.rows {
            Rows::Cached { cache, .. } => cache.slot_mut(layer).positions().is_none(),
            Rows::Uncached | Rows::Fused { .. } => true,
        };
        if dense && run.iter().all(|&r| r) {
            return self.step(layer, layer, x, visit);
        }
        let (model, rope) = (self.model, &self.rope);
        let meta = self.meta.as_ref().expect("token routes lay out their rows");
        let block = model.block(layer)?;
        let mut run_on = |slot: &mut KvSlot| -> Result<Tensor> {
            let y = block.forward_tokens(x, run, meta, rope, slot, kv, model.policy())?;
            visit(layer, &y, slot);
            Ok(y)
        };
        match &mut self.rows {
            Rows::Cached { cache, .. } => run_on(cache.slot_mut(layer)),
            Rows::Uncached => run_on(&mut KvSlot::new()),
            Rows::Fused { slots, .. } => {
                let mut slot = KvSlot::new();
                let y = run_on(&mut slot)?;
                slots.push(slot);
                Ok(y)
            }
        }
    }

    /// Marks a cached sequence as extended by the `n` rows the pass ran.
    fn finish(self, n: usize) {
        if let Rows::Cached { cache, .. } = self.rows {
            cache.set_len(self.start + n);
        }
    }
}
