//! Path rewards for one example during a search, with computation shared across paths: the hidden
//! states and KV slots of the example's rows (the prompt and, for choice-loglik, every choice's
//! continuation, run together) after every path prefix are kept (memory-bounded, least recently
//! used first out), so a path runs only the layers after its longest cached prefix. Each layer sees
//! exactly the rows a plain pass gives it, so rewards are bit-identical with and without reuse;
//! counters say how much work was done.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::error::Result;
use crate::tasks::reward::{prepare, Outcome, Prepared, RewardOptions, Scoring};
use drllm_contract::Example;
use drllm_engine::cache::KvSlot;
use drllm_engine::exec::Route;
use drllm_engine::loader::LoadedModel;
use drllm_engine::path::LayerPath;

/// Work done by an evaluator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Paths whose reward was computed.
    pub paths: u64,
    /// Tokens × layers actually executed.
    pub layer_executions: u64,
}

/// The example's rows after a path prefix and the KV slot of the prefix's last position.
struct Entry {
    x: Tensor,
    slot: KvSlot,
    last_used: u64,
    bytes: usize,
}

/// Rewards of paths for one example.
pub struct PathJudge<'a> {
    lm: &'a LoadedModel,
    ex: &'a Example,
    opts: RewardOptions,
    prep: Prepared,
    /// `None`: no reuse, every path runs in full.
    prefixes: Option<HashMap<Vec<u16>, Entry>>,
    budget_bytes: usize,
    used_bytes: usize,
    clock: u64,
    /// Work done so far, over every path evaluated.
    pub counters: Counters,
}

impl<'a> PathJudge<'a> {
    /// `reuse_budget_bytes`: memory for cached prefix states (0 disables reuse).
    pub fn new(
        lm: &'a LoadedModel,
        ex: &'a Example,
        opts: RewardOptions,
        reuse_budget_bytes: usize,
    ) -> Result<Self> {
        Ok(Self {
            prep: prepare(lm, ex, &opts)?,
            lm,
            ex,
            opts,
            prefixes: (reuse_budget_bytes > 0).then(HashMap::new),
            budget_bytes: reuse_budget_bytes,
            used_bytes: 0,
            clock: 0,
            counters: Counters::default(),
        })
    }

    /// The reward of `path` (and everything the grader saw). With a reuse budget only the
    /// positions after the longest cached prefix run; without, the whole path.
    pub fn evaluate(&mut self, path: &LayerPath) -> Result<Outcome> {
        let layers = path.layers();
        let mut slots = Vec::with_capacity(path.len());
        let mut x = None;
        if let Some(map) = self.prefixes.as_mut() {
            self.clock += 1;
            for j in 1..=layers.len() {
                let Some(e) = map.get_mut(&layers[..j]) else {
                    break;
                };
                e.last_used = self.clock;
                slots.push(e.slot.clone());
                x = Some(e.x.clone());
            }
        }
        let from = slots.len();
        let x = match x {
            Some(x) => x,
            None => self.prep.embed(self.lm)?,
        };
        let mut fresh = Vec::new();
        let caching = self.prefixes.is_some();
        let rows = self.prep.rows(&mut slots);
        let route = Route::Path { path, from };
        let x = (self.lm.model)
            .run_path(x, rows, route, |pos, y, s| {
                if caching {
                    fresh.push((pos, y.clone(), s.clone()));
                }
            })?
            .hidden;
        for (pos, y, slot) in fresh {
            self.remember(&layers[..=pos], y, slot);
        }
        // `Scoring::finish` counts every row at every position; the reused ones did not run.
        let scoring = Scoring {
            lm: self.lm,
            ex: self.ex,
            prep: &self.prep,
            opts: &self.opts,
        };
        let (o, execs) = scoring.finish(path, &x, slots)?;
        let reused = (self.prep.segments().rows() * from) as u64;
        self.counters.layer_executions += execs - reused;
        self.counters.paths += 1;
        Ok(o)
    }

    fn remember(&mut self, prefix: &[u16], x: Tensor, slot: KvSlot) {
        let Some(map) = self.prefixes.as_mut() else {
            return;
        };
        let bytes = (x.elem_count() + slot.elem_count()) * 4;
        while self.used_bytes + bytes > self.budget_bytes && !map.is_empty() {
            // Evict the least recently used prefix.
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
                .expect("map is not empty");
            if let Some(e) = map.remove(&oldest) {
                self.used_bytes -= e.bytes;
            }
        }
        if self.used_bytes + bytes <= self.budget_bytes {
            self.used_bytes += bytes;
            map.insert(
                prefix.to_vec(),
                Entry {
                    x,
                    slot,
                    last_used: self.clock,
                    bytes,
                },
            );
        }
    }
}
