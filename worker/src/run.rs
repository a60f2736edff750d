//! `worker run`: the distributed worker. Loads the model once, registers with the coordinator
//! (which checks the protocol version and the weights' fingerprint), then leases examples,
//! searches them and submits each record, heartbeating its leases meanwhile. It retries with
//! backoff while the coordinator is away, and on SIGTERM/SIGINT (or when the coordinator asks it to
//! drain) finishes the example at hand, releases the rest of its lease and exits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::session::Session;
use anyhow::Context;
use drllm_contract::RunSettings;
use drllm_contract::SearchConfig;
use drllm_contract::SearchRecord;
use drllm_core::search::{search_example, DEFAULT_REUSE_BUDGET};
use drllm_core::tasks::reward::RewardOptions;
use drllm_proto::client::{client, Client, ConnectOptions};
use drllm_proto::convert::decode_example;
use drllm_proto::http::Health;
use drllm_proto::v1::{self, *};
use drllm_proto::PROTOCOL_VERSION;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    /// Coordinator URL, e.g. http://10.0.0.5:50051 (https:// for TLS).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    coordinator: String,
    /// This worker's name (default: host name and process id).
    #[arg(long)]
    worker_id: Option<String>,
    /// File holding the bearer token (default: $DRLLM_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the coordinator's TLS certificate.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Name the coordinator's certificate carries (default: the URL's host).
    #[arg(long)]
    tls_domain: Option<String>,
    /// Give up after the coordinator has been unreachable this long, seconds.
    #[arg(long, default_value_t = 600.0)]
    give_up_secs: f64,
    /// An example whose search fails is reported failed (never leased again); after this many
    /// failures in a row the worker assumes it is broken itself, releases its lease and exits.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    max_failures_in_a_row: u32,
    /// Serve HTTP on ADDR: /healthz (200 while the process runs), /readyz (200 once the model is
    /// loaded and the worker registered) and /metrics (Prometheus: examples, simulations).
    #[arg(long)]
    http_listen: Option<std::net::SocketAddr>,
    /// Examples searched at once, each in its own lane (lease, search, submit) sharing the loaded
    /// model: on a GPU, several lanes keep a small model's device busy.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Memory for reused prefix states, MiB (0: no reuse).
    #[arg(long, default_value_t = DEFAULT_REUSE_BUDGET >> 20)]
    reuse_budget_mib: usize,
    /// Fault tests only: submit the record of this example id with a broken field, which the
    /// coordinator must refuse (failing that example alone).
    #[arg(long, hide = true)]
    fault_corrupt_record: Option<String>,
    /// Fault tests only: pad the record of this example id past the job's message limit, which
    /// the worker must report as that example's failure instead of sending it.
    #[arg(long, hide = true)]
    fault_oversize_record: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(run_async(a))
}

/// Runs `n` lanes and sums their (examples, simulations). A lane that fails stops the others
/// after their example at hand, as one worker would stop; the first error is returned.
async fn run_lanes(s: &Session, lanes: &Arc<Lanes>, n: usize) -> anyhow::Result<(u64, usize)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (s, w) = (s.clone(), lanes.clone());
            tokio::spawn(async move {
                let r = lane(s, w.clone()).await;
                if r.is_err() {
                    w.stop.store(true, Ordering::SeqCst);
                }
                r
            })
        })
        .collect();
    let (mut done, mut sims, mut first_err) = (0u64, 0usize, None);
    for t in tasks {
        match t.await? {
            Ok((d, n)) => (done, sims) = (done + d, sims + n),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok((done, sims)),
    }
}

async fn run_async(a: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let worker_id = a.worker_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let opts = ConnectOptions::from_files(
        a.token_file.as_deref(),
        a.tls_ca.as_deref(),
        a.tls_domain.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    let health = Arc::new(Health::default());
    if let Some(addr) = a.http_listen {
        drllm_proto::http::serve(addr, health.clone())
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let model = a.model.clone();
    let lm = Arc::new(tokio::task::spawn_blocking(move || model.load()).await??);
    let mut s = Session {
        client: client(&a.coordinator, &opts).map_err(anyhow::Error::msg)?,
        worker_id: worker_id.clone(),
        register: RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            worker_id: worker_id.clone(),
            model_fingerprint: lm.fingerprint.clone(),
            device: a.model.device.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        give_up: Duration::from_secs_f64(a.give_up_secs),
        max_message: drllm_proto::size::DEFAULT_MAX_MESSAGE_BYTES,
    };
    let reg = s.register().await?;
    let settings = reg
        .settings
        .as_ref()
        .context("the coordinator sent no run settings")?;
    let settings = RunSettings::try_from(settings)?;
    let cfg = settings.search.clone();
    let ropts = RewardOptions::resolve(&lm, &settings.reward)?;
    let budget = a.reuse_budget_mib << 20;
    tracing::info!(worker = %worker_id, coordinator = %a.coordinator, fingerprint = %lm.fingerprint, device = %a.model.device, "registered");
    health.set_ready(true);

    let stop = Arc::new(AtomicBool::new(false));
    let held: Arc<Mutex<Vec<u64>>> = Arc::default();
    spawn_signal_handler(stop.clone());
    let hb = tokio::spawn(heartbeats(
        s.client.clone(),
        worker_id.clone(),
        held.clone(),
        stop.clone(),
        Duration::from_millis((reg.lease_ttl_ms / 3).max(100)),
    ));
    let lanes = Arc::new(Lanes {
        lm,
        cfg,
        ropts,
        budget,
        worker_id: worker_id.clone(),
        held: held.clone(),
        stop: stop.clone(),
        failures: FailureStreak::new(a.max_failures_in_a_row),
        corrupt_record: a.fault_corrupt_record.clone(),
        oversize_record: a
            .fault_oversize_record
            .clone()
            .map(|id| (id, s.max_message)),
    });
    let joined = run_lanes(&s, &lanes, a.concurrency.max(1)).await;
    stop.store(true, Ordering::SeqCst);
    hb.abort();
    s.leave().await;
    let (done, sims) = joined?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"worker_id": worker_id, "examples": done, "simulations": sims,
            "seconds_incl_load": secs, "simulations_per_s": sims as f64 / secs})
    );
    Ok(())
}

/// What the lanes of a worker share: the model, the job's settings and the leases in hand.
struct Lanes {
    lm: Arc<drllm_engine::LoadedModel>,
    cfg: SearchConfig,
    ropts: RewardOptions,
    budget: usize,
    worker_id: String,
    held: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    failures: FailureStreak,
    /// Fault tests: the example id whose record is corrupted before it is submitted.
    corrupt_record: Option<String>,
    /// Fault tests: the example id whose record is padded past this many bytes.
    oversize_record: Option<(String, usize)>,
}

/// Failed searches in a row, across lanes: a worker whose every search fails is broken itself
/// (a bad device, a model that does not fit) and should stop rather than fail the whole job.
struct FailureStreak {
    in_a_row: AtomicU32,
    max: u32,
}

impl FailureStreak {
    fn new(max: u32) -> Self {
        FailureStreak {
            in_a_row: AtomicU32::new(0),
            max,
        }
    }

    /// A search succeeded: the streak ends.
    fn success(&self) {
        self.in_a_row.store(0, Ordering::SeqCst);
    }

    /// A search failed: the failures in a row now, and whether that is the limit (the worker
    /// gives up on the `max`-th, as `--max-failures-in-a-row` says).
    fn failure(&self) -> (u32, bool) {
        let n = self.in_a_row.fetch_add(1, Ordering::SeqCst) + 1;
        (n, n >= self.max)
    }
}

/// What to do with one searched example.
enum Searched {
    /// Submit this result (a record, or the example's failure); the search ran this many
    /// simulations.
    Submit(Box<SearchResult>, usize),
    /// Too many examples failed in a row: this worker is broken itself and stops.
    GiveUp(anyhow::Error),
}

/// Searches one leased example on a blocking thread: its record, or why it failed (an example
/// that does not decode, an error or a panic in the search).
async fn search_record(
    w: &Arc<Lanes>,
    le: &LeasedExample,
) -> anyhow::Result<(SearchRecord, usize)> {
    let m = le.example.as_ref().context("the lease holds no example")?;
    let ex = decode_example(m).context("the example from the coordinator")?;
    let w2 = w.clone();
    let searched = tokio::task::spawn_blocking(move || {
        search_example(&w2.lm, &ex, &w2.cfg, &w2.ropts, w2.budget).map(|r| {
            let sims = r.outcome.simulations;
            let rec = r.record(&w2.lm, &ex, &w2.cfg, &w2.ropts, &w2.worker_id);
            (rec, sims)
        })
    })
    .await;
    let (mut rec, sims) = match searched {
        Ok(r) => r?,
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            anyhow::bail!("the search panicked: {msg}")
        }
        Err(e) => return Err(e.into()),
    };
    if w.corrupt_record.as_deref() == Some(rec.example_id.as_str()) {
        // --fault-corrupt-record: a record the coordinator must refuse (fault tests).
        rec.best_decisions.pop();
    }
    if let Some((id, limit)) = &w.oversize_record {
        if *id == rec.example_id {
            rec.best_response = Some("x".repeat(*limit + 1));
        }
    }
    Ok((rec, sims))
}

/// Searches one leased example. A failed search is reported as failed (not leased again),
/// unless it is one too many in a row.
async fn search_one(w: &Arc<Lanes>, le: &LeasedExample) -> Searched {
    match search_record(w, le).await {
        Ok((rec, n)) => {
            w.failures.success();
            metrics::counter!("drllm_worker_examples_total", "outcome" => "searched").increment(1);
            metrics::counter!("drllm_worker_simulations_total").increment(n as u64);
            let result = SearchResult {
                key: le.key,
                record: Some(v1::SearchRecord::from(&rec)),
                ..Default::default()
            };
            Searched::Submit(Box::new(result), n)
        }
        Err(e) => match w.failed(le.key, &format!("{e:#}")) {
            Some(give_up) => Searched::GiveUp(give_up),
            None => {
                let result = SearchResult {
                    key: le.key,
                    error: format!("{e:#}"),
                    ..Default::default()
                };
                Searched::Submit(Box::new(result), 0)
            }
        },
    }
}

impl Lanes {
    /// Counts a failed example (its search failed, or the coordinator refused its record): the
    /// error that stops the worker when it is one too many in a row.
    fn failed(&self, key: u64, reason: &str) -> Option<anyhow::Error> {
        let (failures, give_up) = self.failures.failure();
        metrics::counter!("drllm_worker_examples_total", "outcome" => "failed").increment(1);
        if give_up {
            return Some(anyhow::anyhow!("{failures} examples in a row failed, the last ({key}) with: {reason}; stopping (see --max-failures-in-a-row)"));
        }
        tracing::warn!(
            example = key,
            "example failed, reported to the coordinator: {reason}"
        );
        None
    }
}

/// Submits one result, retrying while the coordinator is away. A result the coordinator
/// refuses has failed its example there; it counts as a failure here. A result for an example
/// already settled (this worker's lease expired, say while it was cut off, and another worker's
/// result won) is dropped: the job has that example.
async fn submit(s: &mut Session, w: &Lanes, result: SearchResult) -> anyhow::Result<()> {
    let key = result.key;
    let reply = s.submit(result).await?;
    if reply.duplicates > 0 {
        tracing::info!(
            example = key,
            "the example was already settled elsewhere (this worker's lease had expired): result dropped"
        );
    }
    for r in reply.refused {
        if let Some(give_up) = w.failed(r.key, &r.reason) {
            return Err(give_up);
        }
    }
    Ok(())
}

/// One lane: lease, search each example, submit, until the job is done or the worker stops.
/// `--concurrency N` runs N lanes, so N searches share the model (and a GPU) at once. Returns the
/// examples and simulations it did.
async fn lane(mut s: Session, w: Arc<Lanes>) -> anyhow::Result<(u64, usize)> {
    let (mut done, mut sims) = (0u64, 0usize);
    'outer: while !w.stop.load(Ordering::SeqCst) {
        let lease = s.lease(0).await?;
        if lease.examples.is_empty() {
            if lease.job_done || lease.retry_after_ms == 0 {
                // The other lanes stop too instead of leasing again: the coordinator may be gone
                // once every worker has heard that the job is done.
                w.stop.store(true, Ordering::SeqCst);
                break;
            }
            tokio::time::sleep(Duration::from_millis(lease.retry_after_ms)).await;
            continue;
        }
        let keys: Vec<u64> = lease.examples.iter().map(|e| e.key).collect();
        w.held.lock().unwrap().extend(&keys);
        for (i, le) in lease.examples.iter().enumerate() {
            if w.stop.load(Ordering::SeqCst) {
                release(&mut s, &w.held, keys[i..].to_vec()).await?;
                break 'outer;
            }
            let result = match search_one(&w, le).await {
                Searched::Submit(result, n) => {
                    sims += n;
                    *result
                }
                Searched::GiveUp(e) => {
                    release(&mut s, &w.held, keys[i..].to_vec()).await?;
                    return Err(e);
                }
            };
            submit(&mut s, &w, result).await?;
            w.held.lock().unwrap().retain(|k| *k != le.key);
            done += 1;
        }
    }
    Ok((done, sims))
}

/// Gives `keys` back to the coordinator and stops heartbeating them.
async fn release(s: &mut Session, held: &Mutex<Vec<u64>>, keys: Vec<u64>) -> anyhow::Result<()> {
    held.lock().unwrap().retain(|k| !keys.contains(k));
    if keys.is_empty() {
        return Ok(());
    }
    let released = s.release(keys, false).await?;
    tracing::info!(released, "released the rest of the lease");
    Ok(())
}

/// Keeps the held leases alive; a drain request from the coordinator stops the worker after the
/// example at hand.
async fn heartbeats(
    client: Client,
    worker_id: String,
    held: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let keys = held.lock().unwrap().clone();
        let req = HeartbeatRequest {
            worker_id: worker_id.clone(),
            keys,
        };
        match client.clone().heartbeat(req).await {
            Ok(r) => {
                let r = r.into_inner();
                if r.drain && !stop.swap(true, Ordering::SeqCst) {
                    tracing::info!("the coordinator asks to drain: finishing the example at hand");
                }
                if !r.lost.is_empty() {
                    tracing::warn!(lost = ?r.lost, "leases lost (expired and taken elsewhere); results for them will count as duplicates");
                }
            }
            Err(e) => tracing::warn!("heartbeat failed: {}", e.message()),
        }
    }
}

fn spawn_signal_handler(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        drllm_proto::http::shutdown_signal().await;
        tracing::info!("stopping: finishing the example at hand, then releasing the rest");
        stop.store(true, Ordering::SeqCst);
    });
}

#[cfg(test)]
mod tests {
    use super::FailureStreak;

    #[test]
    fn the_worker_gives_up_on_the_max_th_failure_in_a_row() {
        let f = FailureStreak::new(3);
        assert_eq!(f.failure(), (1, false));
        assert_eq!(f.failure(), (2, false));
        f.success();
        assert_eq!(f.failure(), (1, false));
        assert_eq!(f.failure(), (2, false));
        assert_eq!(f.failure(), (3, true));
        // One allowed failure: the first one stops the worker.
        assert_eq!(FailureStreak::new(1).failure(), (1, true));
    }
}
