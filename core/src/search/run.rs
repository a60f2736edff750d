//! One example's search on a real model: the MCTS of [`super::mcts`] with rewards from a
//! [`PathEvaluator`], plus what a record needs (best response, counters, time).

use std::collections::HashMap;
use std::time::Instant;

use super::evaluator::{Counters, PathEvaluator};
use super::mcts::{Judged, Mcts, SearchConfig, SearchOutcome, SuccessRule};
use crate::error::{Error, Result};
use crate::tasks::prompts;
use crate::tasks::reward::{RewardMode, RewardOptions};
use crate::tasks::Example;
use drllm_engine::loader::LoadedModel;
use drllm_records::{RunSettings, SearchRecord};

/// Default memory for cached prefix states per example (hidden states and KV slots).
pub const DEFAULT_REUSE_BUDGET: usize = 512 << 20;

/// The result of searching one example.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleSearch {
    /// What the MCTS found.
    pub outcome: SearchOutcome,
    /// generate mode: the response under the best path.
    pub best_response: Option<String>,
    /// Work the evaluator did.
    pub counters: Counters,
    /// Wall-clock time of the whole search, in seconds.
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
    if cfg.success == SuccessRule::Margin && opts.mode != RewardMode::ChoiceLoglik {
        return Err(Error::Reward {
            id: ex.id.clone(),
            reason: format!(
                "the margin success rule needs the choice-loglik reward (this search uses {}): use success = \"correct\" with generate",
                opts.mode
            ),
        });
    }
    let mut eval = PathEvaluator::new(lm, ex, *opts, reuse_budget)?;
    let mut responses: HashMap<Vec<u16>, Option<String>> = HashMap::new();
    // The full path is judged first: its margin is the bar for the others.
    let mut original: Option<Option<f64>> = None;
    let (outcome, _tree) =
        Mcts::for_example(lm.model.num_layers(), cfg.clone(), &ex.id).run(|path| {
            let o = eval.evaluate(path)?;
            responses.insert(path.layers().to_vec(), o.response);
            let full_margin = *original.get_or_insert(o.margin);
            Ok::<_, Error>(Judged {
                good: judge(cfg, o.correct, o.margin, full_margin),
                margin: o.margin,
            })
        })?;
    let best_response = responses.remove(outcome.best_path.layers()).flatten();
    Ok(ExampleSearch {
        outcome,
        best_response,
        counters: eval.counters,
        wall_seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Whether a path whose answer is `correct` with gold margin `margin` is good under `cfg`'s success
/// rule, given the full path's margin (the full path itself is judged with its own margin).
pub fn judge(cfg: &SearchConfig, correct: bool, margin: Option<f64>, full: Option<f64>) -> bool {
    match (cfg.success, margin, full) {
        (SuccessRule::Correct, _, _) => correct,
        (SuccessRule::Margin, Some(m), Some(m0)) if m0 > 0.0 => m >= m0,
        (SuccessRule::Margin, Some(m), Some(_)) => m >= cfg.min_margin.max(f64::MIN_POSITIVE),
        (SuccessRule::Margin, _, _) => correct,
    }
}

impl ExampleSearch {
    /// The Parquet row for this search.
    pub fn record(
        &self,
        lm: &LoadedModel,
        ex: &Example,
        cfg: &SearchConfig,
        opts: &RewardOptions,
        worker_id: &str,
    ) -> SearchRecord {
        let o = &self.outcome;
        let question = match opts.mode {
            RewardMode::Generate => prompts::generation_prompt(ex, opts.style).text,
            RewardMode::ChoiceLoglik => prompts::loglik_context(ex),
        };
        SearchRecord {
            example_id: ex.id.clone(),
            dataset: ex.dataset.clone(),
            split: ex.split.clone(),
            question,
            gold: ex.answer.clone(),
            model_id: lm.id.clone(),
            model_fingerprint: lm.fingerprint.clone(),
            num_layers: lm.model.num_layers() as u16,
            original_correct: o.original_correct,
            found: o.found,
            best_path: o.best_path.layers().to_vec(),
            best_decisions: o.best_path.counts(),
            distinct_layers: o.best_path.distinct_layers() as u16,
            good_paths: o.good_paths.iter().map(|p| p.layers().to_vec()).collect(),
            // All or none: generate mode has no margins.
            good_margins: o
                .good_margins
                .iter()
                .copied()
                .collect::<Option<Vec<f64>>>()
                .unwrap_or_default(),
            original_margin: o.original_margin,
            best_response: self.best_response.clone(),
            simulations: o.simulations as u32,
            distinct_paths: o.distinct_paths as u32,
            layer_executions: self.counters.layer_executions,
            wall_seconds: self.wall_seconds,
            settings: RunSettings {
                reward: opts.settings(),
                search: cfg.clone(),
            },
            worker_id: worker_id.to_string(),
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        }
    }
}
