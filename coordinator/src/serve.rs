//! `coordinator serve`: opens (or resumes) the job's state, reconciles the output directory,
//! serves the gRPC service and the Parquet sink, and on SIGTERM/SIGINT tells workers to drain,
//! waits for their leases, writes every remaining result and exits.
//!
//! One supervisor ([`run`]) owns the parts' lifecycle, read top to bottom: the gRPC server runs
//! until a stop signal, "every example committed" (`--exit-when-done`) or a fatal fault of the
//! sink or the state writer ([`crate::fault`]); any of these drains the workers, then the sink
//! writes what is left. A fatal fault makes the process exit non-zero with its one-line reason.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use drllm_proto::http::Health;
use drllm_proto::CoordinatorServer;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use tonic::service::interceptor::InterceptedService;

use crate::fault::Faults;
use crate::job::JobSpec;
use crate::service::{CheckToken, Service};
use crate::sink::{self, Retry, SinkConfig};
use crate::state::State;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Job spec (TOML): datasets, model, reward, search settings, output directory, leases.
    #[arg(long)]
    job: PathBuf,
    /// State directory (sled); the same directory resumes the job where it stopped.
    #[arg(long)]
    state: PathBuf,
    /// Address to serve gRPC on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// File holding the bearer token workers must send (default: $DRLLM_TOKEN; none: no auth).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key, serve TLS only.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Stop once every example is committed to Parquet (or failed), and every worker seen has
    /// heard that the job is done (see --done-grace-secs).
    #[arg(long)]
    exit_when_done: bool,
    /// With --exit-when-done: once every example has its outcome, how long to keep answering
    /// workers that have not heard so yet, seconds. A worker cut off by the network that comes
    /// back within it learns that the job is done, drops its stale results and exits 0 instead
    /// of retrying a coordinator that is gone. The coordinator stops sooner once every worker
    /// seen since it started has heard it or has stopped; only a worker that died without a word
    /// (kill -9, a lost node) makes it wait the whole grace.
    #[arg(long, default_value_t = 60.0)]
    done_grace_secs: f64,
    /// Serve HTTP on ADDR: Prometheus metrics at /metrics and the probes /healthz (200 while the
    /// process runs) and /readyz (200 while serving gRPC; 503 while opening the state or draining).
    #[arg(long, visible_alias = "http-listen")]
    metrics_listen: Option<SocketAddr>,
    /// On shutdown, how long to wait for workers to finish or release their leases, seconds.
    #[arg(long, default_value_t = 10.0)]
    drain_secs: f64,
    /// A Parquet part that cannot be written (full disk, missing folder) is retried with backoff
    /// (1 s doubling to 30 s) while the error shows in `status`, /readyz and the logs; after
    /// failing this many seconds the coordinator drains and exits non-zero (nothing is lost: a
    /// restart with the same --state writes the results).
    #[arg(long, default_value_t = 600.0)]
    sink_give_up_secs: f64,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.done_grace_secs >= 0.0 && a.done_grace_secs.is_finite(),
        "--done-grace-secs must be a number of seconds ≥ 0, got {}",
        a.done_grace_secs
    );
    let job_file = a.job.display().to_string();
    let text = std::fs::read_to_string(&a.job)
        .with_context(|| format!("reading the job file {job_file}"))?;
    let spec = JobSpec::parse(&text, &job_file)?;
    // Probes answer from the start: alive, not ready until the state is open and gRPC serves.
    let health = Arc::new(Health::default());
    if let Some(addr) = a.metrics_listen {
        drllm_proto::http::serve(addr, health.clone())
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let faults = Faults::new(health.clone());
    let state = Arc::new(State::open(
        &a.state,
        &spec,
        &job_file,
        &text,
        faults.clone(),
    )?);
    let removed = sink::recover(&state, &spec.output_dir)?;
    for p in &removed {
        tracing::warn!(file = %p.display(), "removed an uncommitted part (its results are still in the state and will be written again)");
    }
    let c = state.counts();
    tracing::info!(
        job = %spec.hash(), total = c.total, committed = c.committed, uncommitted = c.uncommitted,
        pending = c.pending, leased = c.leased, listen = %a.listen, "serving"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sink_task = tokio::spawn(sink::run(state.clone(), sink_config(&a, &spec)?, stop_rx));
    // Serve until a signal, the end of the job or a fatal fault; then drain.
    let draining = Arc::new(AtomicBool::new(false));
    let ttl_ms = spec.lease_ttl_secs * 1000;
    let reclaimer = spawn_reclaimer(state.clone(), ttl_ms);
    let shutdown = {
        let (st, ready, draining) = (state.clone(), health.clone(), draining.clone());
        let drain_secs = a.drain_secs;
        let done_grace = a
            .exit_when_done
            .then(|| Duration::from_secs_f64(a.done_grace_secs));
        let started_ms = crate::state::now_ms();
        async move {
            tokio::select! {
                () = wait_for_stop(&st, done_grace, started_ms) => {}
                reason = st.faults().wait_fatal() => tracing::error!("stopping: {reason}"),
            }
            ready.set_ready(false);
            draining.store(true, Ordering::SeqCst);
            let leases_back = st.wait_until(|s| s.counts().leased == 0);
            let drain = Duration::from_secs_f64(drain_secs);
            if tokio::time::timeout(drain, leases_back).await.is_err() {
                tracing::warn!(
                    "leases still out after --drain-secs; they are pending again on restart"
                );
            }
            tracing::info!("shutting down");
        }
    };
    let service = service(&a, &spec, &state, draining)?;
    health.set_ready(true);
    grpc_server(&a)?
        .add_service(service)
        .serve_with_incoming_shutdown(incoming(a.listen)?, shutdown)
        .await
        .context("gRPC server")?;
    // The sink writes what is left, then the first fatal fault (if any) is the exit reason.
    reclaimer.abort();
    let _ = stop_tx.send(true);
    let sunk = sink_task.await.context("sink task")?;
    let c = state.counts();
    tracing::info!(committed = c.committed, total = c.total, parts = c.parts, output = %spec.output_dir.display(), "stopped");
    if let Some(reason) = faults.fatal_reason() {
        anyhow::bail!(reason);
    }
    sunk.map_err(anyhow::Error::msg)
}

/// The sink's settings: the job's part size and flush interval, the command line's retry limit.
fn sink_config(a: &Args, spec: &JobSpec) -> anyhow::Result<SinkConfig> {
    anyhow::ensure!(
        a.sink_give_up_secs >= 0.0 && a.sink_give_up_secs.is_finite(),
        "--sink-give-up-secs must be a number of seconds ≥ 0, got {}",
        a.sink_give_up_secs
    );
    Ok(SinkConfig {
        dir: spec.output_dir.clone(),
        part_size: spec.part_size,
        every: Duration::from_secs_f64(spec.flush_secs),
        retry: Retry {
            first_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(30),
            give_up_after: Duration::from_secs_f64(a.sink_give_up_secs),
        },
    })
}

/// The gRPC service over `state`, behind the bearer-token check.
fn service(
    a: &Args,
    spec: &JobSpec,
    state: &Arc<State>,
    draining: Arc<AtomicBool>,
) -> anyhow::Result<InterceptedService<CoordinatorServer<Service>, CheckToken>> {
    let token =
        drllm_proto::client::read_token(a.token_file.as_deref()).map_err(anyhow::Error::msg)?;
    if token.is_none() {
        tracing::warn!("no token (--token-file or $DRLLM_TOKEN): every client is accepted");
    }
    let service = Service {
        state: state.clone(),
        settings: (&spec.settings()).into(),
        model: spec.model.clone(),
        lease_ttl_ms: spec.lease_ttl_secs * 1000,
        shard_size: spec.shard_size,
        output_dir: spec.output_dir.display().to_string(),
        max_message: spec.max_message_bytes(),
        draining,
    };
    // One limit both ways; workers apply the same one to their client (RegisterReply).
    let server = CoordinatorServer::new(service)
        .max_decoding_message_size(spec.max_message_bytes())
        .max_encoding_message_size(spec.max_message_bytes());
    Ok(InterceptedService::new(
        server,
        CheckToken(token.map(Arc::new)),
    ))
}

/// The server, with TLS when --tls-cert/--tls-key are given.
fn grpc_server(a: &Args) -> anyhow::Result<Server> {
    let mut server = Server::builder();
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        server = server
            .tls_config(
                ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?)),
            )
            .context("TLS configuration")?;
    }
    Ok(server)
}

fn incoming(addr: SocketAddr) -> anyhow::Result<TcpIncoming> {
    let l = listen(addr).with_context(|| format!("listening on {addr}"))?;
    Ok(TcpIncoming::from(l).with_nodelay(Some(true)))
}

/// Resolves on SIGTERM, SIGINT, or (with `--exit-when-done`, `done_grace` set) once every example
/// has its outcome and every worker seen since `started_ms` has heard so or stopped, waiting at
/// most `done_grace` for them; meanwhile Lease answers `job_done` and a stale Submit counts as a
/// duplicate, so a worker that comes back exits cleanly instead of retrying a coordinator that
/// is gone.
async fn wait_for_stop(state: &State, done_grace: Option<Duration>, started_ms: i64) {
    let done = async {
        let Some(grace) = done_grace else {
            return std::future::pending().await;
        };
        state.wait_until(State::finished).await;
        let c = state.counts();
        tracing::info!(
            committed = c.committed,
            failed = c.failed,
            "every example has its outcome: {} committed, {} failed",
            c.committed,
            c.failed
        );
        let told = state.wait_until(|s| s.all_told_done(started_ms));
        if tokio::time::timeout(grace, told).await.is_err() {
            tracing::warn!(
                "some workers did not hear that the job is done within --done-grace-secs ({:.0} s): stopping anyway",
                grace.as_secs_f64()
            );
        }
    };
    tokio::select! {
        () = drllm_proto::http::shutdown_signal() => {}
        () = done => {}
    }
}

/// Reclaims expired leases every quarter lease (at most every second), so a dead worker's
/// examples are pending again within a lease TTL without waiting for a Lease call.
fn spawn_reclaimer(state: Arc<State>, ttl_ms: u64) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_millis((ttl_ms / 4).clamp(50, 1000));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let n = state.reclaim_expired();
            if n > 0 {
                tracing::info!(
                    examples = n,
                    "leases expired; the examples are pending again"
                );
            }
        }
    })
}

/// A listener with a deep accept queue: a thousand workers may connect at once.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
