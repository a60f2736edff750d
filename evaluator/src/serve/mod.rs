//! `evaluator serve`: routed (or static) inference behind the OpenAI HTTP API, so that anything
//! that speaks it — lm-eval-harness's `local-completions`, OpenAI clients, curl — can query a
//! router checkpoint. `/v1/completions`, `/v1/chat/completions` and `/v1/models`, plus `/healthz`,
//! `/readyz` and `/metrics` as the coordinator and workers serve them.
//!
//! Prompts that start like an earlier one reuse its keys and values (an exact prefix cache,
//! `--prefix-cache-mib`, [`infer`]).
//!
//! The HTTP side parses and checks each body at once (a bad one gets its 400 without waiting),
//! then hands its prompts to one inference thread that owns the model. It batches every request
//! in flight, prompts and generated tokens, grouped by the layer each route executes
//! ([`scheduler`]), for the static model and every kind of router alike. The queue is bounded (`--max-queue`);
//! past it a request gets a 503 to retry. On SIGINT/SIGTERM the server stops accepting, answers
//! what is queued and exits.

mod api;
mod decode;
mod infer;
mod response;
mod scheduler;
mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use drllm_proto::http::Health;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{mpsc, oneshot};

use api::{ApiError, Limits};
pub use infer::{Completion, Job, ServedModel};
use response::Envelope;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    /// Router checkpoint folder (per-layer routers from `trainer train`, or a path menu from
    /// `trainer menu`); without it the static model is served.
    #[arg(long)]
    routers: Option<PathBuf>,
    /// The knob, as `evaluator run --budget`: the budget p in [-1, 1] of per-layer routers, the
    /// gate threshold τ in [0, 1] of a path menu. Default: the point `evaluator calibrate`
    /// certified, else the static model.
    #[arg(long, allow_negative_numbers = true, requires = "routers")]
    budget: Option<f32>,
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// The model name clients send (`model` field) and `/v1/models` lists; default: the
    /// --model spec, with `+routers` when routers are loaded.
    #[arg(long)]
    served_model_name: Option<String>,
    /// Requests waiting for the inference thread before new ones get a 503.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Memory for the exact prefix cache, in MiB (0: none): prompts' keys and values kept, least
    /// recently used first out, so that a prompt starting like an earlier one (a shared system
    /// prompt; lm-eval's choices after one question) computes only what follows. Serves the
    /// static model and token routers; per-input routers decide from the whole prompt and
    /// bypass it.
    #[arg(long, default_value_t = 256)]
    prefix_cache_mib: usize,
    /// Prompt tokens a batch step admits: every request in flight, prompts and generated
    /// tokens, runs in one batch grouped by the layers each route executes (the static model,
    /// a certified pruned path, per-input or token routers); at least one prompt is admitted
    /// per step whatever its length. 0: no batching, one sequence at a time.
    #[arg(long, default_value_t = 512)]
    max_batch_tokens: usize,
    /// What a batch computes with: `exact` (each row the kernels of its own pass, so an answer
    /// never depends on what else is in flight) or `throughput` (generated tokens batched on the
    /// dense weights too, whose batched matmuls run faster on the CPU than the q8_0 decode
    /// copy's dot products; answers can then differ in the last bits from one request alone).
    #[arg(long, default_value = "exact", value_parser = ["exact", "throughput"])]
    batch_kernels: String,
}

/// Work for the inference thread: a request's prompts and where to send their completions.
struct Work {
    jobs: Vec<Job>,
    reply: Reply,
}

/// Where the inference thread sends a request's results.
enum Reply {
    /// Every completion at once.
    Whole(oneshot::Sender<Result<Vec<Completion>, String>>),
    /// Each piece of generated text as it is made, then every completion.
    Stream(mpsc::UnboundedSender<StreamEvent>),
}

impl Reply {
    /// Answers the request with its completions (or why it failed).
    fn send(self, done: Result<Vec<Completion>, String>) {
        // The client may have gone; nothing to do then.
        let _ = match self {
            Reply::Whole(tx) => tx.send(done).map_err(drop),
            Reply::Stream(tx) => tx.send(StreamEvent::Done(done)).map_err(drop),
        };
    }
}

/// What a streaming request hears from the inference thread.
enum StreamEvent {
    /// New text of the choice `choice`.
    Piece { choice: usize, piece: infer::Piece },
    /// The request is done.
    Done(Result<Vec<Completion>, String>),
}

/// What the HTTP handlers share.
struct Shared {
    engine: Arc<ServedModel>,
    queue: mpsc::Sender<Work>,
    name: String,
    routers: Option<PathBuf>,
    next_id: std::sync::atomic::AtomicU64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(b) = a.budget {
        anyhow::ensure!(
            (-1.0..=1.0).contains(&b),
            "--budget must be in [-1, 1], got {b}"
        );
    }
    anyhow::ensure!(a.max_queue > 0, "--max-queue must be at least 1");
    let engine = Arc::new(load(&a)?);
    let name = a
        .served_model_name
        .clone()
        .unwrap_or_else(|| match &a.routers {
            Some(_) => format!("{}+routers", a.model.model),
            None => a.model.model.clone(),
        });
    let (tx, rx) = mpsc::channel(a.max_queue);
    let worker = {
        let engine = engine.clone();
        let opts = scheduler::BatchOptions {
            max_batch_tokens: a.max_batch_tokens,
            exact: a.batch_kernels == "exact",
        };
        std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || scheduler::run(&engine, rx, opts))?
    };
    let shared = Arc::new(Shared {
        engine,
        queue: tx,
        name,
        routers: a.routers.clone(),
        next_id: Default::default(),
    });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(serve(a.listen, shared))?;
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the inference thread panicked"))
}

/// Loads the model and, if asked, the routers (checked against the model).
fn load(a: &Args) -> anyhow::Result<ServedModel> {
    let lm = a.model.load()?;
    let routers = match &a.routers {
        Some(dir) => {
            let router = crate::router::Router::load(dir, &lm)?;
            if let Some(r) = &router.reward() {
                tracing::warn!(
                    "the routers were trained on {} prompts ({:?} style); other prompts are routed \
                     all the same",
                    r.mode,
                    r.style
                );
            }
            let op = crate::certify::operating_point(dir, &router, a.budget)?;
            tracing::info!("{} router, knob {}: {}", router.kind(), op.knob, op.source);
            Some((router, op.knob))
        }
        None => None,
    };
    let budget = a.prefix_cache_mib.saturating_mul(1 << 20);
    Ok(ServedModel::new(lm, routers, budget))
}

/// Serves until SIGINT/SIGTERM, then lets the queue drain (the handlers' senders go with the
/// server, which ends the inference loop).
async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> anyhow::Result<()> {
    let health = Arc::new(Health::default());
    let metrics = drllm_proto::http::install_recorder().map_err(anyhow::Error::msg)?;
    let app = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .with_state(shared)
        .merge(drllm_proto::http::routes(health.clone(), metrics));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    health.set_ready(true);
    // One line on stdout for scripts and tests that started us with port 0.
    println!("listening on http://{bound}");
    tracing::info!(%bound, "serving /v1/completions, /v1/chat/completions, /v1/models");
    axum::serve(listener, app)
        .with_graceful_shutdown(drllm_proto::http::shutdown_signal())
        .await
        .context("HTTP server")?;
    eprintln!("shutting down: answering the queued requests");
    Ok(())
}

/// Token-layers run and tokens seen, in `/metrics`.
fn record_completions(done: &[Completion]) {
    let execs: u64 = done.iter().map(|c| c.layer_executions).sum();
    let tokens: usize = done
        .iter()
        .map(|c| c.prompt_tokens + c.generated.len())
        .sum();
    metrics::counter!("drllm_serve_layer_executions_total").increment(execs);
    metrics::counter!("drllm_serve_tokens_total").increment(tokens as u64);
}

/// The prefix cache's counters and size in `/metrics`.
fn record_prefix_stats(s: drllm_engine::PrefixStats) {
    metrics::counter!("drllm_serve_prefix_cache_hits_total").absolute(s.hits);
    metrics::counter!("drllm_serve_prefix_cache_misses_total").absolute(s.misses);
    metrics::counter!("drllm_serve_prefix_cache_reused_tokens_total").absolute(s.reused_tokens);
    metrics::counter!("drllm_serve_prefix_cache_evictions_total").absolute(s.evictions);
    metrics::gauge!("drllm_serve_prefix_cache_entries").set(s.entries as f64);
    metrics::gauge!("drllm_serve_prefix_cache_bytes").set(s.bytes as f64);
}

impl Shared {
    fn limits(&self) -> Limits<'_> {
        Limits {
            served_name: &self.name,
            tokenizer: &self.engine.lm.tokenizer,
            context: self.engine.lm.model.config().max_position_embeddings,
        }
    }

    fn envelope(&self, prefix: &str) -> Envelope {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Envelope {
            id: format!("{prefix}-{n}"),
            created: unix_seconds(),
            model: self.name.clone(),
            routed: self.engine.routers.is_some(),
            layers: self.engine.num_layers(),
        }
    }

    /// Queues `jobs` and waits for their completions; a full queue is a 503.
    async fn infer(&self, jobs: Vec<Job>) -> Result<Vec<Completion>, ApiError> {
        let (reply, done) = oneshot::channel();
        self.enqueue(jobs, Reply::Whole(reply))?;
        done.await
            .map_err(|_| api::internal("the inference thread stopped"))?
            .map_err(api::internal)
    }

    /// Queues `jobs` for streaming; a full queue is a 503.
    fn infer_streamed(&self, jobs: Vec<Job>) -> Result<UnboundedReceiver<StreamEvent>, ApiError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.enqueue(jobs, Reply::Stream(tx))?;
        Ok(rx)
    }

    fn enqueue(&self, jobs: Vec<Job>, reply: Reply) -> Result<(), ApiError> {
        self.queue
            .try_send(Work { jobs, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ApiError::status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_busy",
                    format!(
                        "{} requests are waiting: retry later (or start the server with a larger \
                         --max-queue)",
                        self.queue.max_capacity()
                    ),
                ),
                mpsc::error::TrySendError::Closed(_) => api::internal("the server is stopping"),
            })?;
        metrics::gauge!("drllm_serve_queue_depth")
            .set((self.queue.max_capacity() - self.queue.capacity()) as f64);
        Ok(())
    }
}

/// Seconds since the Unix epoch (OpenAI's `created`).
fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts the request under its endpoint and status, and turns an error into its response.
fn answer(endpoint: &'static str, r: Result<serde_json::Value, ApiError>) -> Response {
    let status = r.as_ref().map_or_else(|e| e.status, |_| StatusCode::OK);
    metrics::counter!("drllm_serve_requests_total", "endpoint" => endpoint,
        "status" => status.as_u16().to_string())
    .increment(1);
    match r {
        Ok(v) => api::json_response(StatusCode::OK, &v),
        Err(e) => {
            tracing::debug!(endpoint, status = %e.status, "{}", e.message);
            e.into_response()
        }
    }
}

async fn completions(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req = match api::completion_body(&body, &s.limits()) {
        Ok(req) => req,
        Err(e) => return answer("completions", Err(e)),
    };
    if let Some(opts) = req.decoding.stream {
        return stream::respond(
            s.clone(),
            stream::Request::completion(&req),
            opts,
            "completions",
        );
    }
    let r = async {
        let done = s.infer(req.jobs.clone()).await?;
        response::completion_body(&s.envelope("cmpl"), &req, &done, &s.engine.lm.tokenizer)
    };
    answer("completions", r.await)
}

async fn chat(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req = match api::chat_body(&body, &s.limits()) {
        Ok(req) => req,
        Err(e) => return answer("chat", Err(e)),
    };
    if let Some(opts) = req.decoding.stream {
        return stream::respond(s.clone(), stream::Request::chat(&req), opts, "chat");
    }
    let r = async {
        let done = s.infer(req.jobs.clone()).await?;
        let env = s.envelope("chatcmpl");
        response::chat_body(&env, &req, &done, &s.engine.lm.tokenizer)
    };
    answer("chat", r.await)
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    let created = unix_seconds();
    let body = json!({"object": "list", "data": [{
        "id": s.name, "object": "model", "created": created, "owned_by": "drllm",
        "drllm": {
            "model": s.engine.lm.id, "fingerprint": s.engine.lm.fingerprint,
            "routers": s.routers.as_ref().map(|p| p.display().to_string()),
            "num_layers": s.engine.num_layers(),
            "context": s.engine.lm.model.config().max_position_embeddings,
        },
    }]});
    answer("models", Ok(body))
}
