//! `coordinator status`: asks a running coordinator for the job's progress and prints it (a
//! table, or JSON with `--json`).

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Context;
use drllm_proto::client::{client, ConnectOptions};
use drllm_proto::v1::StatusRequest;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Coordinator URL, e.g. http://127.0.0.1:50051 (https:// for TLS).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    coordinator: String,
    /// File holding the bearer token (default: $DRLLM_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the coordinator's TLS certificate.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// List every failed example with its reason (the table shows the first few).
    #[arg(long)]
    failed: bool,
}

/// Failed examples the table lists without --failed.
const FAILED_SHOWN: usize = 5;

pub async fn run(a: Args) -> anyhow::Result<()> {
    let opts = ConnectOptions::from_files(a.token_file.as_deref(), a.tls_ca.as_deref(), None)
        .map_err(anyhow::Error::msg)?;
    let mut c = client(&a.coordinator, &opts).map_err(anyhow::Error::msg)?;
    let s = c
        .status(StatusRequest {})
        .await
        .with_context(|| format!("asking {} for its status", a.coordinator))?
        .into_inner();
    if a.json {
        let workers: Vec<_> = s
            .workers
            .iter()
            .map(|w| {
                serde_json::json!({"worker_id": w.worker_id, "device": w.device, "done": w.done,
                    "examples_per_s": w.examples_per_s, "leased": w.leased,
                    "last_seen_unix_ms": w.last_seen_unix_ms, "lost": w.lost,
                    "last_seen_age_ms": w.last_seen_age_ms})
            })
            .collect();
        let json = serde_json::json!({"total": s.total, "pending": s.pending,
            "leased": s.leased, "done": s.done, "failed": s.failed,
            "uncommitted": s.uncommitted, "parts": s.parts, "eta_seconds": s.eta_seconds,
            "eta_note": s.eta_note,
            "output_dir": s.output_dir, "workers": workers, "problems": s.problems,
            "failures": s.failures.iter().map(|f| serde_json::json!({"key": f.key,
                "example_id": f.example_id, "reason": f.reason})).collect::<Vec<_>>()});
        return print_out(&format!("{json}\n"));
    }
    let mut out = format!(
        "examples {}: pending {}, leased {}, done {} ({} waiting for Parquet), failed {}\n",
        s.total, s.pending, s.leased, s.done, s.uncommitted, s.failed
    );
    let eta = if s.eta_seconds < 0.0 {
        format!("unknown ({})", s.eta_note)
    } else {
        format!("{:.0} s", s.eta_seconds)
    };
    writeln!(out, "parts {} in {}; ETA {eta}", s.parts, s.output_dir)?;
    for p in &s.problems {
        writeln!(out, "PROBLEM {p}")?;
    }
    let shown = if a.failed {
        s.failures.len()
    } else {
        FAILED_SHOWN
    };
    for f in s.failures.iter().take(shown) {
        writeln!(out, "FAILED {} (#{}): {}", f.example_id, f.key, f.reason)?;
    }
    if s.failures.len() > shown {
        let more = s.failures.len() - shown;
        writeln!(
            out,
            "… {more} more failed (coordinator status --failed lists them all)"
        )?;
    }
    for w in &s.workers {
        let state = if w.lost {
            format!(
                "LOST, last heard {:.0} s ago",
                w.last_seen_age_ms as f64 / 1000.0
            )
        } else {
            format!("leased {}", w.leased)
        };
        writeln!(
            out,
            "  {:<20} {:<16} done {:>6}  {:>7.3} ex/s  {state}",
            w.worker_id, w.device, w.done, w.examples_per_s
        )?;
    }
    print_out(&out)
}

/// Writes `text` to stdout; a reader that went away (`status | head -1`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
