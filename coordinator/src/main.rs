//! `coordinator`: serves a search job to workers over gRPC (`serve`), with the job's state in sled
//! and results in Parquet parts, reports progress (`status`), summarizes records (`summarize`)
//! and writes them in the official Dr.LLM format (`export`).

mod export;
mod fault;
mod job;
mod metrics;
mod serve;
mod service;
mod sink;
mod state;
mod status;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "drllm coordinator: shards search jobs across workers"
)]
struct Cli {
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a job, or resume it from its state directory, and serve it until it is done or stopped
    Serve(serve::Args),
    /// Progress of a running coordinator: pending / leased / done / failed, workers, ETA
    Status(status::Args),
    /// Summary of a job's Parquet parts (or any record files): found rate, fixes, path lengths
    Summarize {
        /// A folder of Parquet parts (a job's output_dir) or one Parquet file.
        path: std::path::PathBuf,
        /// The job's state directory (its coordinator stopped): adds the failed examples, each
        /// with its reason, and the line "N committed, M failed".
        #[arg(long)]
        state: Option<std::path::PathBuf>,
    },
    /// Write records in another format: `--format drllm-json` is the official Dr.LLM search
    /// output, which its train.py reads
    Export(export::Args),
}

/// Errors end the process with one line on stderr (the chain of causes, no backtrace) and exit
/// code 1.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    drllm_log::init(cli.log_json, "info");
    let run = || -> anyhow::Result<()> {
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async {
            match cli.cmd {
                Cmd::Serve(a) => serve::run(a).await,
                Cmd::Status(a) => status::run(a).await,
                Cmd::Summarize { path, state } => summarize(&path, state.as_deref()),
                Cmd::Export(a) => export::run(a),
            }
        })
    };
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn summarize(path: &std::path::Path, state: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let records = drllm_records::read_records(path)
        .with_context(|| format!("reading records from {}", path.display()))?;
    let mut v = serde_json::to_value(drllm_records::Summary::of(&records))?;
    v["parquet"] = serde_json::json!(path.display().to_string());
    if let Some(dir) = state {
        let failures = state::read_failures(dir)
            .with_context(|| format!("reading the failed examples from {}", dir.display()))?;
        eprintln!("{} committed, {} failed", records.len(), failures.len());
        v["failed"] = serde_json::json!(failures.len());
        v["failures"] = (failures.iter())
            .map(|(key, id, reason)| serde_json::json!({"key": key, "example_id": id, "reason": reason}))
            .collect();
    }
    println!("{v}");
    Ok(())
}
