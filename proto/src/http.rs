//! The HTTP side of the coordinator and the workers, for orchestrators and scrapers:
//! `/healthz` answers 200 while the process serves at all (liveness), `/readyz` 200 only while it
//! is ready for work and 503 otherwise (a coordinator opening its state, draining or with a
//! failing part — the body says which —, a worker loading its model), `/metrics` the Prometheus
//! text of everything the process recorded with the `metrics` crate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Readiness as the process knows it; starts not ready. A problem (e.g. a sink that cannot write)
/// makes the process not ready while it lasts, whatever the flag says.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    problem: Mutex<Option<String>>,
}

impl Health {
    /// Sets the ready flag (the process serves, or it does not: opening, draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Ready for work: the flag is set and there is no problem.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.problem().is_none()
    }

    /// Sets (or, with `None`, clears) the problem `/readyz` reports.
    pub fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }

    /// The current problem.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Clone)]
struct Shared {
    health: Arc<Health>,
    metrics: PrometheusHandle,
}

/// Installs the process's Prometheus recorder (once per process) and keeps its histograms
/// summarised in the background of the current tokio runtime.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        // Histograms are summarised lazily; the exporter's own listener would do this.
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(metrics)
}

/// The `/healthz`, `/readyz` and `/metrics` routes, for a server that adds its own.
pub fn routes(health: Arc<Health>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<Shared>| async move { s.metrics.render() }),
        )
        .with_state(Shared { health, metrics })
}

/// Installs the process's Prometheus recorder and serves `/healthz`, `/readyz` and `/metrics` on
/// `addr` in the background of the current tokio runtime, and logs the bound address (port 0
/// picks a free one), which it returns. Call once per process.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> Result<SocketAddr, String> {
    let metrics = install_recorder()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("HTTP endpoint on {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("HTTP endpoint on {addr}: {e}"))?;
    let app = routes(health, metrics);
    tracing::info!(addr = %bound, "HTTP: /healthz, /readyz, /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("HTTP endpoint on {bound} stopped: {e}");
        }
    });
    Ok(bound)
}

async fn readyz(State(s): State<Shared>) -> (StatusCode, String) {
    match s.health.problem() {
        Some(p) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {p}\n")),
        None if s.health.is_ready() => (StatusCode::OK, "ready\n".into()),
        None => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
    }
}

/// Resolves on SIGINT or SIGTERM (logging which): what every drllm server stops on.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            _ = term.recv() => tracing::info!("SIGTERM"),
        },
        Err(e) => {
            tracing::error!("cannot watch for SIGTERM ({e}); only SIGINT stops this process");
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("SIGINT");
        }
    }
}
