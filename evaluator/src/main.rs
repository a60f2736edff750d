//! `evaluator`: scores models on evaluation sets: `run` (a router checkpoint with routed
//! inference against the static model), `baseline` (a static model, any layer path, either reward
//! mode), `prune` (the greedy layer-pruning curve, the static baseline at every depth) and `grade`
//! (the graders on outputs of any system).

mod baseline;
mod grade;
mod prune;
mod prune_cmd;
mod report;
mod routed;
mod stats;

use clap::{Parser, Subcommand};

/// drllm evaluator: accuracy of models on ARC / DART / JSONL sets, and the graders as a tool.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score a router checkpoint: routed inference against the static model on a dataset, with a
    /// report (JSON, Markdown, decision plot) in --out. Exit code 2: below --min-routed-accuracy.
    Run(routed::Args),
    /// Accuracy of the model along one layer path (default: all layers) on a dataset.
    Baseline(baseline::Args),
    /// Greedy layer pruning: from the full path, repeatedly remove the layer whose removal keeps
    /// the accuracy on --split highest, down to --down-to layers; writes prune.json, prune.md and
    /// prune.svg in --out.
    ///
    /// Ties go to the higher summed gold margin (choice-loglik), then to the lower layer. The curve
    /// is cached under <cache>/prune/ (~/.cache/drllm, or $DRLLM_CACHE), keyed by a blake3 hash of
    /// the model fingerprint, dataset, split, limit, reward mode, length normalization, prompt
    /// style, numerics (--exact, --decode-weights, --device) and the examples' content: a later
    /// call (here or `evaluator run --prune-split`) that needs the curve down to a length n ≥ the
    /// cached curve's last length (its down_to) reuses it without running the model; a smaller n
    /// continues the cached curve from its end (a greedy step depends only on the path so far).
    Prune(prune_cmd::Args),
    /// Grade model outputs: reads JSONL lines {"pred", "gold", "kind": "math"|"letter"} and writes
    /// each back with "boxed" (the extracted answer or null) and "correct".
    Grade(grade::Args),
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    drllm_engine::init_cpu_threads();
    drllm_core::cli::init();
    match Cli::parse().command {
        Command::Run(a) => routed::run(a),
        Command::Baseline(a) => baseline::run(a).map(|()| std::process::ExitCode::SUCCESS),
        Command::Prune(a) => prune_cmd::run(a).map(|()| std::process::ExitCode::SUCCESS),
        Command::Grade(a) => grade::run(a).map(|()| std::process::ExitCode::SUCCESS),
    }
}
