//! `evaluator`: scores models on evaluation sets: `run` (a router checkpoint with routed
//! inference against the static model), `baseline` (a static model, any layer path, either reward
//! mode) and `grade` (the graders on outputs of any system).

mod baseline;
mod grade;
mod report;
mod routed;

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
    /// Grade model outputs: reads JSONL lines {"pred", "gold", "kind": "math"|"letter"} and writes
    /// each back with "boxed" (the extracted answer or null) and "correct".
    Grade(grade::Args),
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    drllm_core::init_cpu_threads();
    drllm_core::cli::init();
    match Cli::parse().command {
        Command::Run(a) => routed::run(a),
        Command::Baseline(a) => baseline::run(a).map(|()| std::process::ExitCode::SUCCESS),
        Command::Grade(a) => grade::run(a).map(|()| std::process::ExitCode::SUCCESS),
    }
}
