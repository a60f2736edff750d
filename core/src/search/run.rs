//! One example's search on a real model: the MCTS of [`super::mcts`] with rewards from a
//! [`PathJudge`], plus what a record needs (best response, counters, time).

use std::collections::HashMap;
use std::time::Instant;

use super::judge::{Counters, PathJudge};
use super::mcts::{Judged, Mcts, SearchOutcome};
use crate::error::{Error, Result};
use crate::tasks::reward::{Outcome, RewardOptions};
use drllm_contract::Example;
use drllm_contract::RewardMode;
use drllm_contract::{RunSettings, SearchRecord};
use drllm_contract::{SearchConfig, SuccessRule};
use drllm_engine::loader::LoadedModel;
use drllm_tasks::prompts;

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
    /// Whether the full model's answer is right (under `agree` the full path is always good,
    /// so the outcome's `original_good` says nothing about the gold answer).
    pub full_correct: bool,
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
    let mut eval = PathJudge::new(lm, ex, *opts, reuse_budget)?;
    let mut responses: HashMap<Vec<u16>, Option<String>> = HashMap::new();
    // The full path is judged first: its outcome is the bar for the others.
    let mut original: Option<Outcome> = None;
    let (outcome, _tree) =
        Mcts::for_example(lm.model.num_layers(), cfg.clone(), &ex.id).run(|path| {
            let mut o = eval.evaluate(path)?;
            let full = original.get_or_insert_with(|| o.clone());
            let good = judge(cfg, &o, full, opts.length_normalized);
            responses.insert(path.layers().to_vec(), o.response.take());
            Ok::<_, Error>(Judged {
                good,
                margin: o.margin,
            })
        })?;
    let best_response = responses.remove(outcome.best_path.layers()).flatten();
    Ok(ExampleSearch {
        full_correct: original.is_some_and(|o| o.correct),
        outcome,
        best_response,
        counters: eval.counters,
        wall_seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Whether a path with outcome `o` is good under `cfg`'s success rule, given the full path's
/// outcome `full` (the full path itself is judged against its own). `length_normalized`: choices
/// are compared per byte (`acc_norm`).
pub fn judge(cfg: &SearchConfig, o: &Outcome, full: &Outcome, length_normalized: bool) -> bool {
    match cfg.success {
        SuccessRule::Correct => o.correct,
        SuccessRule::Margin => match (o.margin, full.margin) {
            (Some(m), Some(m0)) if m0 > 0.0 => m >= m0,
            (Some(m), Some(_)) => m >= cfg.min_margin.max(f64::MIN_POSITIVE),
            _ => o.correct,
        },
        SuccessRule::Agree => agrees(o, full, cfg.agree_fraction, length_normalized),
    }
}

/// The path keeps the full model's answer: choice-loglik, the same pick by at least `kappa` ×
/// the full model's own margin; generate, the same extracted answer.
pub fn agrees(o: &Outcome, full: &Outcome, kappa: f64, length_normalized: bool) -> bool {
    if full.choice_logprobs.is_empty() {
        return o.extracted == full.extracted;
    }
    let pick = |x: &Outcome| {
        if length_normalized {
            x.pick_norm
        } else {
            x.pick
        }
    };
    match (pick(o), pick(full)) {
        (Some(p), Some(q)) if p == q => {
            own_margin(o, p, length_normalized) >= kappa * own_margin(full, p, length_normalized)
        }
        _ => false,
    }
}

/// Choice `c`'s score minus the best other choice's (summed log-prob, or per byte).
fn own_margin(o: &Outcome, c: usize, length_normalized: bool) -> f64 {
    let score = |i: usize| {
        let lp = o.choice_logprobs[i];
        if length_normalized {
            lp / o.choice_bytes[i].max(1) as f64
        } else {
            lp
        }
    };
    let best_other = (0..o.choice_logprobs.len())
        .filter(|&i| i != c)
        .map(score)
        .fold(f64::NEG_INFINITY, f64::max);
    score(c) - best_other
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
            original_correct: self.full_correct,
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
