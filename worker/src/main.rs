//! `worker`: the drllm worker binary: `run` joins a coordinator's search job; `search` runs the
//! search on one machine without one; `logits`, `parity` and `bench` are the engine's debug, check
//! and benchmark commands.

mod bench;
mod bench_tokens;
mod logits;
mod parity;
mod run;
mod search;
mod session;

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
    /// Measure whether token routes save wall time: prefill of real task prompts along the full
    /// path against random token masks at given skip shares, realized vs structural speedup.
    BenchTokens(bench_tokens::Args),
    /// Search layer paths for a dataset slice on this machine and print a summary.
    Search(search::Args),
    /// Join a coordinator's search job: lease examples, search them, submit the records.
    Run(run::Args),
    /// Check the engine on this device against reference outputs (exit 1 when off).
    Parity(parity::Args),
}

/// Errors end the process with one line on stderr (the chain of causes, no backtrace) and exit
/// code 1.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    drllm_core::cli::init_with(cli.log_json, "warn");
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<std::process::ExitCode> {
    let ok = std::process::ExitCode::SUCCESS;
    match command {
        Command::Logits(a) => logits::run(a).map(|_| ok),
        Command::Bench(a) => bench::run(a).map(|_| ok),
        Command::BenchTokens(a) => bench_tokens::run(a).map(|_| ok),
        Command::Search(a) => search::run(a).map(|_| ok),
        Command::Run(a) => run::run(a).map(|_| ok),
        Command::Parity(a) => parity::run(a),
    }
}
