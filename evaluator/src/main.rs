//! `evaluator`: scores models on evaluation sets. Today: `baseline` (a static model, any layer
//! path, either reward mode) and `grade` (the graders on outputs of any system).

mod baseline;
mod grade;

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
    /// Accuracy of the model along one layer path (default: all layers) on a dataset.
    Baseline(baseline::Args),
    /// Grade model outputs: reads JSONL lines {"pred", "gold", "kind": "math"|"letter"} and writes
    /// each back with "boxed" (the extracted answer or null) and "correct".
    Grade(grade::Args),
}

fn main() -> anyhow::Result<()> {
    drllm_core::cli::init();
    match Cli::parse().command {
        Command::Baseline(a) => baseline::run(a),
        Command::Grade(a) => grade::run(a),
    }
}
