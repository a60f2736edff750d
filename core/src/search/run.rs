//! One example's search on a real model: the MCTS of [`super::mcts`] with rewards from a
//! [`PathEvaluator`], plus what a record needs (best response, counters, time).

use std::collections::HashMap;
use std::time::Instant;

use super::evaluator::{Counters, PathEvaluator};
use super::mcts::{Mcts, SearchConfig, SearchOutcome};
use crate::error::Result;
use crate::loader::LoadedModel;
use crate::tasks::reward::RewardOptions;
use crate::tasks::Example;

/// Default memory for cached prefix states per example (hidden states and KV slots).
pub const DEFAULT_REUSE_BUDGET: usize = 512 << 20;

/// The result of searching one example.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleSearch {
    pub outcome: SearchOutcome,
    /// generate mode: the response under the best path.
    pub best_response: Option<String>,
    pub counters: Counters,
    pub wall_seconds: f64,
}

/// Searches `ex`. `reuse_budget` bytes of prefix states are kept (0: every path runs in full).
pub fn search_example(
    lm: &LoadedModel,
    ex: &Example,
    cfg: &SearchConfig,
    opts: &RewardOptions,
    reuse_budget: usize,
) -> Result<ExampleSearch> {
    let t0 = Instant::now();
    let mut eval = PathEvaluator::new(lm, ex, *opts, reuse_budget)?;
    let mut responses: HashMap<Vec<u16>, Option<String>> = HashMap::new();
    let (outcome, _tree) = Mcts::new(lm.model.num_layers(), cfg.clone()).run(|path| {
        let o = if reuse_budget > 0 {
            eval.evaluate(path)?
        } else {
            eval.evaluate_plain(path)?
        };
        responses.insert(path.layers().to_vec(), o.response);
        Ok::<_, crate::Error>(o.correct)
    })?;
    let best_response = responses.remove(outcome.best_path.layers()).flatten();
    Ok(ExampleSearch {
        outcome,
        best_response,
        counters: eval.counters,
        wall_seconds: t0.elapsed().as_secs_f64(),
    })
}
