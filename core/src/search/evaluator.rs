//! Path rewards for one example during a search, with the prompt's computation shared across
//! paths: the hidden state and KV slot after every path prefix are kept (memory-bounded, least
//! recently used first out), so a path runs only the layers after its longest cached prefix. The
//! arithmetic per layer is the same as a plain forward pass, so rewards are bit-identical with and
//! without reuse; counters say how much work was done.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::cache::{KvSlot, PathCache};
use crate::error::Result;
use crate::loader::LoadedModel;
use crate::model::Logits;
use crate::path::LayerPath;
use crate::tasks::reward::{finish, prepare, Outcome, Prepared, RewardOptions};
use crate::tasks::Example;

/// Work done by an evaluator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Paths whose reward was computed.
    pub paths: u64,
    /// Tokens × layers actually executed.
    pub layer_executions: u64,
}

struct Entry {
    /// Hidden state after this prefix, `[prompt tokens, hidden]`.
    x: Tensor,
    /// KV slot of the prefix's last position.
    slot: KvSlot,
    last_used: u64,
    bytes: usize,
}

/// Rewards of paths for one example.
pub struct PathEvaluator<'a> {
    lm: &'a LoadedModel,
    ex: &'a Example,
    opts: RewardOptions,
    prep: Prepared,
    /// `None`: no reuse, every path runs in full.
    prefixes: Option<HashMap<Vec<u16>, Entry>>,
    budget_bytes: usize,
    used_bytes: usize,
    clock: u64,
    pub counters: Counters,
}

impl<'a> PathEvaluator<'a> {
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

    /// The reward of `path` (and everything the grader saw).
    pub fn evaluate(&mut self, path: &LayerPath) -> Result<Outcome> {
        let model = &self.lm.model;
        let ids = &self.prep.prompt_ids;
        let t = ids.len();
        model.check_span(0, t)?;
        let rope = model.rope(0, t)?;
        let layers = path.layers();
        // Longest prefix whose every position is cached.
        let mut slots = Vec::with_capacity(path.len());
        let mut x = None;
        if let Some(map) = self.prefixes.as_mut() {
            self.clock += 1;
            for j in 1..=layers.len() {
                match map.get_mut(&layers[..j]) {
                    Some(e) => {
                        e.last_used = self.clock;
                        slots.push(e.slot.clone());
                        x = Some(e.x.clone());
                    }
                    None => break,
                }
            }
        }
        let mut x = match x {
            Some(x) => x,
            None => model.embed(ids)?,
        };
        for j in slots.len()..layers.len() {
            let mut slot = KvSlot::new();
            x = model.run_layer(layers[j] as usize, &x, &rope, &mut slot)?;
            self.counters.layer_executions += t as u64;
            self.remember(&layers[..=j], &x, &slot);
            slots.push(slot);
        }
        let last = model.head(&x.narrow(0, t - 1, 1)?)?;
        let cache = PathCache::from_slots(path, slots, t)?;
        self.counters.paths += 1;
        finish(
            self.lm,
            self.ex,
            &self.prep,
            &self.opts,
            cache,
            &last,
            &mut self.counters.layer_executions,
        )
    }

    /// The reward when every path runs in full through the model's own forward pass (the
    /// reference the reuse must match).
    pub fn evaluate_plain(&mut self, path: &LayerPath) -> Result<Outcome> {
        let mut cache = PathCache::new(path);
        let ids = &self.prep.prompt_ids;
        let last = self
            .lm
            .model
            .forward(ids, path, &mut cache, 0, Logits::Last)?;
        self.counters.layer_executions += (ids.len() * path.len()) as u64;
        self.counters.paths += 1;
        finish(
            self.lm,
            self.ex,
            &self.prep,
            &self.opts,
            cache,
            &last,
            &mut self.counters.layer_executions,
        )
    }

    fn remember(&mut self, prefix: &[u16], x: &Tensor, slot: &KvSlot) {
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
                    x: x.clone(),
                    slot: slot.clone(),
                    last_used: self.clock,
                    bytes,
                },
            );
        }
    }
}
