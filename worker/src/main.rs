//! `worker`: the drllm worker binary: `run` joins a coordinator's search job; `search` runs the
//! search on one machine without one; `logits` and `bench` are the engine's debug and benchmark
//! commands.

mod bench;
mod logits;
mod run;
mod search;

use clap::{Parser, Subcommand};

/// drllm worker: runs layer-path searches on a model (engine debug and benchmark commands).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the prompt's token ids, the top next-token logits and a greedy continuation as JSON.
    Logits(logits::Args),
    /// Measure prefill and decode tokens/s and memory of a model on this machine.
    Bench(bench::Args),
    /// Search layer paths for a dataset slice on this machine and print a summary.
    Search(search::Args),
    /// Join a coordinator's search job: lease examples, search them, submit the records.
    Run(run::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    drllm_core::cli::init_with(cli.log_json, "warn");
    match cli.command {
        Command::Logits(a) => logits::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Search(a) => search::run(a),
        Command::Run(a) => run::run(a),
    }
}
