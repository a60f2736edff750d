//! Path rewards for one example during a search, with computation shared across paths: the hidden
//! states and KV slots after every path prefix — of the prompt and, for choice-loglik, of every
//! choice's continuation — are kept (memory-bounded, least recently used first out), so a path
//! runs only the layers after its longest cached prefix. Each layer sees exactly the rows a plain
//! forward pass gives it, so rewards are bit-identical with and without reuse; counters say how
//! much work was done.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::cache::{KvSlot, PathCache};
use crate::error::Result;
use crate::loader::LoadedModel;
use crate::model::Logits;
use crate::path::LayerPath;
use crate::tasks::reward::{
    finish, head_rows, prepare, score_choices, Outcome, Prepared, RewardOptions,
};
use crate::tasks::Example;

/// Work done by an evaluator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Paths whose reward was computed.
    pub paths: u64,
    /// Tokens × layers actually executed.
    pub layer_executions: u64,
}

/// A sequence's hidden state after a path prefix and the KV slot of the prefix's last position.
#[derive(Clone)]
struct State {
    x: Tensor,
    slot: KvSlot,
}

impl State {
    fn bytes(&self) -> usize {
        (self.x.elem_count() + self.slot.elem_count()) * 4
    }
}

struct Entry {
    /// The prompt after this prefix, `[prompt tokens, hidden]`.
    ctx: State,
    /// choice-loglik: each choice's continuation (but its last token) after this prefix; its slot
    /// holds the prompt's keys and values followed by the continuation's.
    conts: Vec<Option<State>>,
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

    /// The reward of `path` (and everything the grader saw); without a reuse budget, the same as
    /// [`Self::evaluate_plain`].
    pub fn evaluate(&mut self, path: &LayerPath) -> Result<Outcome> {
        if self.prefixes.is_none() {
            return self.evaluate_plain(path);
        }
        let model = &self.lm.model;
        let t = self.prep.prompt_ids.len();
        model.check_span(0, t)?;
        let rope = model.rope(0, t)?;
        // choice-loglik continuations run alongside the prompt (all but their last token).
        let conts: Vec<Vec<u32>> = match self.prep.gen {
            Some(_) => Vec::new(),
            None => self
                .prep
                .continuations()
                .map(|c| c[..c.len() - 1].to_vec())
                .collect(),
        };
        let cont_ropes = conts
            .iter()
            .map(|c| {
                if c.is_empty() {
                    Ok(None)
                } else {
                    model.rope(t, c.len()).map(Some)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let layers = path.layers();
        // Longest prefix whose every position is cached.
        let mut slots = Vec::with_capacity(path.len());
        let mut cont_slots: Vec<Vec<KvSlot>> = vec![Vec::with_capacity(path.len()); conts.len()];
        let mut cur: Option<(State, Vec<Option<State>>)> = None;
        if let Some(map) = self.prefixes.as_mut() {
            self.clock += 1;
            for j in 1..=layers.len() {
                let Some(e) = map.get_mut(&layers[..j]) else {
                    break;
                };
                e.last_used = self.clock;
                slots.push(e.ctx.slot.clone());
                for (cs, c) in cont_slots.iter_mut().zip(&e.conts) {
                    if let Some(c) = c {
                        cs.push(c.slot.clone());
                    }
                }
                cur = Some((e.ctx.clone(), e.conts.clone()));
            }
        }
        let (mut x, mut xc): (Tensor, Vec<Option<Tensor>>) = match cur {
            Some((ctx, cs)) => (ctx.x, cs.into_iter().map(|c| c.map(|c| c.x)).collect()),
            None => (
                model.embed(&self.prep.prompt_ids)?,
                conts
                    .iter()
                    .map(|c| {
                        if c.is_empty() {
                            Ok(None)
                        } else {
                            model.embed(c).map(Some)
                        }
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        for j in slots.len()..layers.len() {
            let layer = layers[j] as usize;
            let mut slot = KvSlot::new();
            x = model.run_layer(layer, &x, &rope, &mut slot)?;
            self.counters.layer_executions += t as u64;
            let mut states = Vec::with_capacity(conts.len());
            for (i, xi) in xc.iter_mut().enumerate() {
                match (xi.as_mut(), &cont_ropes[i]) {
                    (Some(xi), Some(r)) => {
                        let mut cs = slot.clone();
                        *xi = model.run_layer(layer, xi, r, &mut cs)?;
                        self.counters.layer_executions += conts[i].len() as u64;
                        cont_slots[i].push(cs.clone());
                        states.push(Some(State {
                            x: xi.clone(),
                            slot: cs,
                        }));
                    }
                    _ => states.push(None),
                }
            }
            self.remember(
                &layers[..=j],
                State {
                    x: x.clone(),
                    slot: slot.clone(),
                },
                states,
            );
            slots.push(slot);
        }
        let last = model.head(&x.narrow(0, t - 1, 1)?)?;
        self.counters.paths += 1;
        if self.prep.gen.is_none() {
            let rests = head_rows(self.lm, &xc)?;
            return score_choices(&self.prep, &self.opts, &last, &rests);
        }
        let cache = PathCache::from_slots(path, slots, t)?;
        self.finish(cache, &last)
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
        self.finish(cache, &last)
    }

    fn finish(&mut self, cache: PathCache, last: &Tensor) -> Result<Outcome> {
        let execs = &mut self.counters.layer_executions;
        finish(self.lm, self.ex, &self.prep, &self.opts, cache, last, execs)
    }

    fn remember(&mut self, prefix: &[u16], ctx: State, conts: Vec<Option<State>>) {
        let Some(map) = self.prefixes.as_mut() else {
            return;
        };
        let bytes = ctx.bytes() + conts.iter().flatten().map(State::bytes).sum::<usize>();
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
            let last_used = self.clock;
            map.insert(
                prefix.to_vec(),
                Entry {
                    ctx,
                    conts,
                    last_used,
                    bytes,
                },
            );
        }
    }
}
