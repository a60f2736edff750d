//! `evaluator baseline`: accuracy of a model along one fixed layer path on a dataset, with either
//! reward mode. The summary is one JSON object on stdout; `--records` keeps every example's outcome.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use drllm_core::tasks::prompts::PromptStyle;
use drllm_core::tasks::reward::RewardOptions;
use drllm_core::tasks::{evaluate, load_dataset, DatasetSpec, RewardMode};
use drllm_core::{LayerPath, PathSpec, StopReason};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    /// arc_easy, arc_challenge, dart, dart-1 … dart-5, or a .jsonl file (see README).
    #[arg(long)]
    dataset: DatasetSpec,
    /// train, dev or test for ARC; train or validation for DART.
    #[arg(long, default_value = "test")]
    split: String,
    /// Only the first N examples.
    #[arg(long)]
    limit: Option<usize>,
    /// generate (greedy + the paper's grader) or choice-loglik (multiple choice only).
    #[arg(long, default_value = "choice-loglik")]
    reward: RewardMode,
    /// Layer path, e.g. `0,1,1,2,4`; default: every layer once.
    #[arg(long)]
    path: Option<PathSpec>,
    /// Prompt style for generate: instruct (chat template) or base; default from the model.
    #[arg(long, value_parser = ["instruct", "base"])]
    style: Option<String>,
    /// Generate every token up to the budget even when the verdict is already fixed.
    #[arg(long)]
    no_early_stop: bool,
    /// Skip (and count) invalid dataset lines instead of stopping.
    #[arg(long)]
    skip_invalid: bool,
    /// Write one JSON line per example (id, correct, response, choice log-probs) here.
    #[arg(long)]
    records: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let data = load_dataset(&a.dataset, &a.split, a.limit, a.skip_invalid)?;
    for e in &data.skipped {
        eprintln!("skipped: {e}");
    }
    anyhow::ensure!(!data.examples.is_empty(), "no examples to evaluate");
    let lm = a.model.load()?;
    let path = match &a.path {
        Some(p) => p.resolve(lm.model.num_layers()).context("--path")?,
        None => LayerPath::full(lm.model.num_layers()),
    };
    let mut opts = RewardOptions::for_model(&lm, a.reward);
    opts.early_stop = !a.no_early_stop;
    if let Some(s) = &a.style {
        opts.style = if s == "base" {
            PromptStyle::Base
        } else {
            PromptStyle::Instruct
        };
    }
    let mut records = match &a.records {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let bar = ProgressBar::new(data.examples.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    let t0 = Instant::now();
    let (mut acc, mut acc_norm, mut early, mut tokens) = (0usize, 0usize, 0usize, 0usize);
    for (i, ex) in data.examples.iter().enumerate() {
        let o = evaluate(&lm, ex, &path, &opts).with_context(|| format!("example {}", ex.id))?;
        acc += usize::from(o.correct_acc.unwrap_or(o.correct));
        acc_norm += usize::from(o.correct_acc_norm.unwrap_or(o.correct));
        early += usize::from(o.stop == Some(StopReason::Predicate));
        tokens += o.tokens_generated;
        if let Some(w) = records.as_mut() {
            let line = json!({
                "id": ex.id, "gold": ex.answer, "correct": o.correct, "response": o.response,
                "extracted": o.extracted, "tokens": o.tokens_generated,
                "stop": o.stop.map(|s| format!("{s:?}")), "choice_logprobs": o.choice_logprobs,
                "pick": o.pick, "pick_norm": o.pick_norm,
            });
            writeln!(w, "{line}")?;
        }
        bar.inc(1);
        bar.set_message(format!("acc {:.1}%", 100.0 * acc as f64 / (i + 1) as f64));
    }
    bar.finish_and_clear();
    if let Some(mut w) = records {
        w.flush()?;
    }
    let n = data.examples.len();
    let secs = t0.elapsed().as_secs_f64();
    let mut summary = json!({
        "model": lm.id, "dataset": a.dataset.name(), "split": a.split, "reward": a.reward.to_string(),
        "path_len": path.len(), "examples": n, "skipped_lines": data.skipped.len(),
        "acc": acc as f64 / n as f64, "correct": acc, "seconds": secs,
    });
    if a.reward == RewardMode::ChoiceLoglik {
        summary["acc_norm"] = json!(acc_norm as f64 / n as f64);
    } else {
        summary["stopped_early"] = json!(early);
        summary["tokens_generated"] = json!(tokens);
    }
    println!("{summary}");
    Ok(())
}
