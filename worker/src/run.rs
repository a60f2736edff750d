//! `worker run`: the distributed worker. Loads the model once, registers with the coordinator
//! (which checks the protocol version and the weights' fingerprint), then leases examples,
//! searches them and submits each record, heartbeating its leases meanwhile. It retries with
//! backoff while the coordinator is away, and on SIGTERM/SIGINT (or when the coordinator asks it to
//! drain) finishes the example at hand, releases the rest of its lease and exits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use drllm_core::search::{search_example, SearchConfig, DEFAULT_REUSE_BUDGET};
use drllm_core::tasks::reward::RewardOptions;
use drllm_core::tasks::{Example, RewardMode};
use drllm_proto::client::{client, Client, ConnectOptions};
use drllm_proto::v1::*;
use drllm_proto::PROTOCOL_VERSION;
use tonic::{Code, Status};

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
    /// Device description reported to the coordinator.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Give up after the coordinator has been unreachable this long, seconds.
    #[arg(long, default_value_t = 600.0)]
    give_up_secs: f64,
    /// An example whose search fails is reported failed (never leased again); after this many
    /// failures in a row the worker assumes it is broken itself, releases its lease and exits.
    #[arg(long, default_value_t = 3)]
    max_failures_in_a_row: u32,
    /// Memory for reused prefix states, MiB (0: no reuse).
    #[arg(long, default_value_t = DEFAULT_REUSE_BUDGET >> 20)]
    reuse_budget_mib: usize,
}

/// Is a failed call worth retrying (the coordinator away or restarting)?
fn transient(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
    )
}

struct Session {
    client: Client,
    worker_id: String,
    register: RegisterRequest,
    give_up: Duration,
}

/// Runs `call` until it answers, retrying transient failures (the coordinator away or
/// restarting) with backoff for up to `give_up`. `Ok(Err(status))`: the coordinator answered with
/// an error for the caller to interpret; `Err`: it stayed unreachable.
async fn with_backoff<T, F, Fut>(
    client: &Client,
    give_up: Duration,
    what: &str,
    mut call: F,
) -> anyhow::Result<Result<T, Status>>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    let start = Instant::now();
    let mut wait = Duration::from_millis(200);
    loop {
        match call(client.clone()).await {
            Ok(r) => return Ok(Ok(r.into_inner())),
            Err(s) if transient(&s) && start.elapsed() < give_up => {
                tracing::warn!(
                    call = what,
                    "coordinator unreachable ({}); retrying in {wait:?}",
                    s.message()
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(s) if transient(&s) => bail!(
                "{what}: the coordinator stayed unreachable for {:.0?} ({}); --give-up-secs sets how long to wait",
                start.elapsed(),
                s.message()
            ),
            Err(s) => return Ok(Err(s)),
        }
    }
}

impl Session {
    /// Runs `call` until it succeeds (see [`with_backoff`]), registering again when the
    /// coordinator forgot this worker (it restarted).
    async fn call<T, F, Fut>(&mut self, what: &str, mut call: F) -> anyhow::Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        loop {
            match with_backoff(&self.client, self.give_up, what, &mut call).await? {
                Ok(v) => return Ok(v),
                Err(s) if s.code() == Code::NotFound => {
                    tracing::info!("coordinator forgot this worker; registering again");
                    self.register().await?;
                }
                Err(s) => bail!("{what}: {} ({:?})", s.message(), s.code()),
            }
        }
    }

    async fn register(&mut self) -> anyhow::Result<RegisterReply> {
        let req = self.register.clone();
        let reply = with_backoff(&self.client, self.give_up, "register", |mut c| {
            let req = req.clone();
            async move { c.register(req).await }
        })
        .await?;
        reply.map_err(|s| {
            anyhow::anyhow!(
                "the coordinator refused this worker: {} ({:?})",
                s.message(),
                s.code()
            )
        })
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(run_async(a))
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
    let model = a.model.clone();
    let lm = Arc::new(tokio::task::spawn_blocking(move || model.load()).await??);
    let mut s = Session {
        client: client(&a.coordinator, &opts).map_err(anyhow::Error::msg)?,
        worker_id: worker_id.clone(),
        register: RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            worker_id: worker_id.clone(),
            model_fingerprint: lm.fingerprint.clone(),
            device: a.device.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        give_up: Duration::from_secs_f64(a.give_up_secs),
    };
    let reg = s.register().await?;
    let job: serde_json::Value =
        serde_json::from_str(&reg.job_json).context("the coordinator's job description")?;
    let mode: RewardMode = job["reward"]
        .as_str()
        .unwrap_or("choice-loglik")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let cfg: SearchConfig =
        serde_json::from_value(job["search"].clone()).context("the job's search configuration")?;
    let ropts = RewardOptions::for_model(&lm, mode);
    let budget = a.reuse_budget_mib << 20;
    tracing::info!(worker = %worker_id, coordinator = %a.coordinator, fingerprint = %lm.fingerprint, "registered");

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
    let (mut done, mut sims, mut failures_in_a_row) = (0u64, 0usize, 0u32);
    'outer: while !stop.load(Ordering::SeqCst) {
        let id = worker_id.clone();
        let lease = s
            .call("lease", move |mut c| {
                let id = id.clone();
                async move {
                    c.lease(LeaseRequest {
                        worker_id: id,
                        max_examples: 0,
                    })
                    .await
                }
            })
            .await?;
        if lease.examples.is_empty() {
            if lease.job_done || lease.retry_after_ms == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(lease.retry_after_ms)).await;
            continue;
        }
        *held.lock().unwrap() = lease.examples.iter().map(|e| e.key).collect();
        for (i, le) in lease.examples.iter().enumerate() {
            if stop.load(Ordering::SeqCst) {
                let rest: Vec<u64> = lease.examples[i..].iter().map(|e| e.key).collect();
                release(&mut s, rest).await?;
                break 'outer;
            }
            let ex: Example = serde_json::from_str(&le.example_json)
                .with_context(|| format!("example {} from the coordinator", le.key))?;
            let (lm2, cfg2, id) = (lm.clone(), cfg.clone(), worker_id.clone());
            let rec = tokio::task::spawn_blocking(move || {
                search_example(&lm2, &ex, &cfg2, &ropts, budget).map(|r| {
                    let sims = r.outcome.simulations;
                    (r.record(&lm2, &ex, &cfg2, &ropts, &id), sims)
                })
            })
            .await?;
            let result = match rec {
                Ok((rec, n)) => {
                    sims += n;
                    failures_in_a_row = 0;
                    SearchResult {
                        key: le.key,
                        record_json: serde_json::to_string(&rec)?,
                        ..Default::default()
                    }
                }
                Err(e) => {
                    // Reported as failed (not leased again); a worker that fails on every
                    // example is broken itself and stops instead of failing the whole job.
                    failures_in_a_row += 1;
                    if failures_in_a_row > a.max_failures_in_a_row {
                        let keys = held.lock().unwrap().clone();
                        release(&mut s, keys).await?;
                        bail!("{failures_in_a_row} examples in a row failed, the last ({}) with: {e:#}; stopping (see --max-failures-in-a-row)", le.key);
                    }
                    tracing::warn!(example = le.key, "search failed, reporting it: {e:#}");
                    SearchResult {
                        key: le.key,
                        error: format!("{e:#}"),
                        ..Default::default()
                    }
                }
            };
            let id = worker_id.clone();
            s.call("submit", move |mut c| {
                let (id, result) = (id.clone(), result.clone());
                async move {
                    c.submit(SubmitRequest {
                        worker_id: id,
                        results: vec![result],
                    })
                    .await
                }
            })
            .await?;
            held.lock().unwrap().retain(|k| *k != le.key);
            done += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    hb.abort();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"worker_id": worker_id, "examples": done, "simulations": sims,
            "seconds_incl_load": secs, "simulations_per_s": sims as f64 / secs})
    );
    Ok(())
}

async fn release(s: &mut Session, keys: Vec<u64>) -> anyhow::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let id = s.worker_id.clone();
    let r = s
        .call("release", move |mut c| {
            let (id, keys) = (id.clone(), keys.clone());
            async move {
                c.release(ReleaseRequest {
                    worker_id: id,
                    keys,
                })
                .await
            }
        })
        .await?;
    tracing::info!(released = r.released, "released the rest of the lease");
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
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping: finishing the example at hand, then releasing the rest");
        stop.store(true, Ordering::SeqCst);
    });
}
