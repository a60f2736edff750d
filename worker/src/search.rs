//! `worker search`: the search on one machine, no coordinator: every example of a dataset slice
//! searched in turn, a progress bar, and a summary (found rate, best path lengths, fixed answers,
//! simulations/s), and with `--out` the records as Parquet (README "Search records").

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use drllm_contract::SearchConfig;
use drllm_core::search::{search_example, DEFAULT_REUSE_BUDGET};
use drllm_records::{write_parquet, Summary};

use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    #[command(flatten)]
    task: drllm_core::cli::TaskArgs,
    #[arg(long, default_value = "train")]
    split: String,
    #[command(flatten)]
    search: SearchConfig,
    /// Run every path in full instead of reusing the prompt states of shared path prefixes.
    #[arg(long)]
    no_reuse: bool,
    /// Memory for reused prefix states, MiB.
    #[arg(long, default_value_t = DEFAULT_REUSE_BUDGET >> 20)]
    reuse_budget_mib: usize,
    /// Folder for the Parquet records (created if missing); one file per run.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Name recorded in every row as `worker_id`.
    #[arg(long, default_value = "local")]
    worker_id: String,
    /// Examples searched at once, each on its share of the CPU threads (small models run
    /// small matmuls that two threads barely speed up). Separate worker processes scale
    /// better: on 2 cores, 2 one-thread workers probed 1.24x faster than 2 lanes (BENCHMARKS.md).
    #[arg(long, default_value_t = 1)]
    lanes: usize,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    anyhow::ensure!(a.lanes >= 1, "--lanes must be at least 1");
    share_threads(a.lanes);
    let examples = a.task.examples(&a.split)?;
    let lm = a.model.load()?;
    let cfg = a.search.clone();
    let opts = a.task.reward_options(&lm)?;
    let budget = if a.no_reuse {
        0
    } else {
        a.reuse_budget_mib << 20
    };
    let bar = drllm_core::cli::progress_bar(examples.len());
    let found = AtomicUsize::new(0);
    let records = in_lanes(a.lanes, &examples, |ex| {
        let r = search_example(&lm, ex, &cfg, &opts, budget)
            .with_context(|| format!("example {}", ex.id))?;
        let f = found.fetch_add(usize::from(r.outcome.found), Ordering::Relaxed);
        bar.inc(1);
        bar.set_message(format!("found {}", f + usize::from(r.outcome.found)));
        Ok(r.record(&lm, ex, &cfg, &opts, &a.worker_id))
    })?;
    bar.finish_and_clear();
    let written = match &a.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let file = dir.join(format!(
                "search-{}-{}-{}.parquet",
                a.task.dataset.name().replace([':', '/'], "_"),
                a.split,
                records.first().map_or(0, |r| r.timestamp_ms)
            ));
            write_parquet(&file, &records)?;
            Some(file.display().to_string())
        }
        None => None,
    };
    let secs = t0.elapsed().as_secs_f64();
    let mut summary = serde_json::to_value(Summary::of(&records))?;
    let sims = summary["simulations"].as_f64().unwrap_or(0.0);
    for (k, v) in [
        ("model", json!(lm.id)),
        ("dataset", json!(a.task.dataset.name())),
        ("split", json!(a.split)),
        ("reward", json!(a.task.reward.to_string())),
        ("seconds_incl_load", json!(secs)),
        ("simulations_per_s", json!(sims / secs)),
        ("reuse", json!(!a.no_reuse)),
        ("early_stop", json!(!a.task.no_early_stop)),
        ("seed", json!(a.search.seed)),
        ("parquet", json!(written)),
    ] {
        summary[k] = v;
    }
    println!("{summary}");
    Ok(())
}

/// Gives each of `lanes` concurrent searches its share of candle's CPU threads (at least one).
/// Runs before any lane starts: candle reads `RAYON_NUM_THREADS` on every matmul.
fn share_threads(lanes: usize) {
    if lanes > 1 {
        let threads = drllm_engine::init_cpu_threads();
        std::env::set_var("RAYON_NUM_THREADS", (threads / lanes).max(1).to_string());
    }
}

/// `f` over `items` on `lanes` threads, results in the items' order; the first error stops
/// every lane at its next item and is returned.
fn in_lanes<T: Sync, R: Send>(
    lanes: usize,
    items: &[T],
    f: impl Fn(&T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..lanes.min(items.len()).max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() || failed.lock().expect("lane lock").is_some() {
                    return;
                }
                match f(&items[i]) {
                    Ok(r) => results.lock().expect("lane lock")[i] = Some(r),
                    Err(e) => {
                        failed.lock().expect("lane lock").get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().expect("lane lock") {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .expect("lane lock")
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect())
}
