//! `evaluator baseline`: accuracy of a model along one fixed layer path on a dataset, with either
//! reward mode. The summary is one JSON object on stdout; `--records` keeps every example's outcome.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use drllm_contract::RewardMode;
use drllm_core::tasks::score_example_with;
use drllm_engine::{LayerPath, PathSpec, StopReason};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    #[command(flatten)]
    task: drllm_core::cli::TaskArgs,
    #[command(flatten)]
    prefix: drllm_core::cli::PrefixCacheArgs,
    /// train, dev or test for ARC; train or validation for DART.
    #[arg(long, default_value = "test")]
    split: String,
    /// Layer path, e.g. `0,1,1,2,4`; default: every layer once.
    #[arg(long)]
    path: Option<PathSpec>,
    /// Write one JSON line per example (id, correct, response, choice log-probs) here.
    #[arg(long)]
    records: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let examples = a.task.examples(&a.split)?;
    let lm = a.model.load()?;
    let path = match &a.path {
        Some(p) => p.resolve(lm.model.num_layers()).context("--path")?,
        None => LayerPath::full(lm.model.num_layers()),
    };
    let opts = a.task.reward_options(&lm)?;
    let mut records = match &a.records {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let prompts = a.prefix.cache();
    let bar = drllm_core::cli::progress_bar(examples.len());
    let t0 = Instant::now();
    let (mut acc, mut acc_norm, mut early, mut tokens) = (0usize, 0usize, 0usize, 0usize);
    for (i, ex) in examples.iter().enumerate() {
        let o = score_example_with(&lm, ex, &path, &opts, Some(&prompts))
            .with_context(|| format!("example {}", ex.id))?;
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
    let n = examples.len();
    let secs = t0.elapsed().as_secs_f64();
    let mut summary = json!({
        "model": lm.id, "dataset": a.task.dataset.name(), "split": a.split, "reward": a.task.reward.to_string(),
        "path_len": path.len(), "examples": n,
        "acc": acc as f64 / n as f64, "correct": acc, "seconds": secs,
    });
    if a.task.reward == RewardMode::ChoiceLoglik {
        summary["acc_norm"] = json!(acc_norm as f64 / n as f64);
    } else {
        summary["stopped_early"] = json!(early);
        summary["tokens_generated"] = json!(tokens);
        summary["prefix_cache"] = drllm_core::cli::prefix_summary(&prompts);
    }
    println!("{summary}");
    Ok(())
}
