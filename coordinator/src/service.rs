//! The gRPC service: registration (protocol version and model fingerprint checks), leases with
//! deadlines, heartbeats, idempotent submissions, releases and status, over the sled state. Also
//! the bearer-token check every call passes first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use drllm_proto::v1::*;
use drllm_proto::{Coordinator, PROTOCOL_VERSION};
use tonic::{Request, Response, Status};

use crate::state::{now_ms, State, StateError};

pub struct Service {
    pub state: Arc<State>,
    /// The job's run settings as the protocol carries them.
    pub settings: drllm_proto::v1::RunSettings,
    /// The model the job names.
    pub model: String,
    pub lease_ttl_ms: u64,
    pub shard_size: u32,
    pub output_dir: String,
    /// The largest message both sides accept, bytes (the job's `max_message_mib`).
    pub max_message: usize,
    /// Set on shutdown: workers are told to drain and get no new leases.
    pub draining: Arc<AtomicBool>,
}

fn internal(e: StateError) -> Status {
    tracing::error!("{e}");
    Status::internal(e.to_string())
}

impl Service {
    fn deadline(&self) -> i64 {
        now_ms() + self.lease_ttl_ms as i64
    }

    fn known(&self, worker: &str) -> Result<(), Status> {
        if self.state.is_registered(worker) {
            Ok(())
        } else {
            Err(Status::not_found(format!(
                "worker `{worker}` is not registered: call Register first"
            )))
        }
    }
}

#[tonic::async_trait]
impl Coordinator for Service {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let r = req.into_inner();
        if r.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version {} is not the coordinator's {PROTOCOL_VERSION}: run the same drllm release on both sides",
                r.protocol_version
            )));
        }
        if r.worker_id.is_empty() {
            return Err(Status::invalid_argument("worker_id is empty"));
        }
        self.state
            .register(&r.worker_id, &r.device, &r.model_fingerprint)
            .map_err(Status::failed_precondition)?;
        self.state.persist().await.map_err(internal)?;
        tracing::info!(worker = %r.worker_id, device = %r.device, version = %r.version, "worker registered");
        Ok(Response::new(RegisterReply {
            lease_ttl_ms: self.lease_ttl_ms,
            settings: Some(self.settings),
            model: self.model.clone(),
            max_message_bytes: self.max_message as u64,
        }))
    }

    async fn lease(&self, req: Request<LeaseRequest>) -> Result<Response<LeaseReply>, Status> {
        let t = Instant::now();
        let r = req.into_inner();
        self.known(&r.worker_id)?;
        let draining = self.draining.load(Ordering::SeqCst);
        // 0: the job's shard size (what `worker run` asks for); never more than it.
        let shard = self.shard_size.max(1);
        let max = match r.max_examples {
            0 => shard,
            n => n.min(shard),
        } as usize;
        let deadline = self.deadline();
        let got = if draining {
            Vec::new()
        } else {
            self.state
                .lease(&r.worker_id, max, deadline)
                .map_err(internal)?
        };
        crate::metrics::leased(got.len(), t.elapsed().as_secs_f64());
        let c = self.state.counts();
        let job_done = c.pending == 0 && c.leased == 0;
        if job_done {
            self.state.told_done(&r.worker_id);
        }
        Ok(Response::new(LeaseReply {
            examples: got,
            deadline_unix_ms: deadline,
            job_done,
            retry_after_ms: if draining { 0 } else { 1000 },
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let r = req.into_inner();
        self.known(&r.worker_id)?;
        let deadline = self.deadline();
        let lost = self.state.heartbeat(&r.worker_id, &r.keys, deadline);
        Ok(Response::new(HeartbeatReply {
            deadline_unix_ms: deadline,
            drain: self.draining.load(Ordering::SeqCst),
            lost,
        }))
    }

    async fn submit(&self, req: Request<SubmitRequest>) -> Result<Response<SubmitReply>, Status> {
        let r = req.into_inner();
        // Decided result by result and made durable by the state's writer before the reply.
        let s = self
            .state
            .submit(r.worker_id, r.results)
            .await
            .map_err(internal)?
            .map_err(Status::invalid_argument)?;
        crate::metrics::submitted(s.accepted, s.duplicates, s.refused.len());
        Ok(Response::new(SubmitReply {
            accepted: s.accepted,
            duplicates: s.duplicates,
            refused: s.refused,
        }))
    }

    async fn release(
        &self,
        req: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseReply>, Status> {
        let r = req.into_inner();
        let released = self.state.release(&r.worker_id, &r.keys);
        if r.leaving {
            // Nothing to wait for once the job is done: this worker is gone.
            self.state.told_done(&r.worker_id);
            tracing::info!(worker = %r.worker_id, "worker stopped");
        }
        self.state.persist().await.map_err(internal)?;
        crate::metrics::released(released);
        Ok(Response::new(ReleaseReply { released }))
    }

    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(self.status_reply()))
    }
}

impl Service {
    /// The job's progress: counts, workers (lost ones flagged), failures with reasons, problems,
    /// and the ETA at the live workers' rate.
    fn status_reply(&self) -> StatusReply {
        let c = self.state.counts();
        let now = now_ms();
        let ttl = self.lease_ttl_ms;
        let workers: Vec<WorkerStatus> = (self.state.workers().into_iter())
            .map(|(id, w, leased)| {
                let secs = ((w.last_seen_ms - w.first_seen_ms).max(1)) as f64 / 1000.0;
                let age = (now - w.last_seen_ms).max(0) as u64;
                WorkerStatus {
                    worker_id: id,
                    device: w.device,
                    done: w.done,
                    examples_per_s: w.done as f64 / secs,
                    last_seen_unix_ms: w.last_seen_ms,
                    leased,
                    lost: age > ttl,
                    last_seen_age_ms: age,
                }
            })
            .collect();
        let mut problems = self.state.faults().problems();
        let done = c.committed + c.uncommitted;
        let left = c.total - done - c.failed;
        for w in workers.iter().filter(|w| w.lost && left > 0) {
            problems.push(format!(
                "worker {} lost: last heard from {:.0} s ago (lease TTL {} s)",
                w.worker_id,
                w.last_seen_age_ms as f64 / 1000.0,
                ttl / 1000
            ));
        }
        let live = workers.iter().filter(|w| !w.lost);
        let (n_live, rate) = live.fold((0, 0.0), |(n, r), w| (n + 1, r + w.examples_per_s));
        let (eta_seconds, eta_note) = match (left, n_live) {
            (0, _) => (0.0, ""),
            (_, 0) if workers.is_empty() => (-1.0, "no worker has registered yet"),
            (_, 0) => (-1.0, "no live worker"),
            _ if rate > 0.0 => (left as f64 / rate, ""),
            _ => (-1.0, "no example finished yet"),
        };
        if eta_note == "no live worker" {
            problems.push(format!(
                "no live worker: {left} examples wait and nothing searches them"
            ));
        }
        let eta_note = eta_note.to_string();
        StatusReply {
            total: c.total,
            pending: c.pending,
            leased: c.leased,
            done,
            failed: c.failed,
            uncommitted: c.uncommitted,
            workers,
            eta_seconds,
            eta_note,
            output_dir: self.output_dir.clone(),
            parts: c.parts,
            failures: self.listed_failures(&mut problems),
            problems,
        }
    }

    /// Every failed example with its reason, as many as half the message limit carries (a job
    /// can have more failures than one reply holds); a problem line counts the rest.
    fn listed_failures(&self, problems: &mut Vec<String>) -> Vec<FailedExample> {
        let all = self.state.failures();
        let (n, mut bytes, mut out) = (all.len(), 0, Vec::new());
        for (key, example_id, reason) in all {
            let f = FailedExample {
                key,
                example_id,
                reason,
            };
            bytes += drllm_proto::size::as_field(prost::Message::encoded_len(&f));
            if bytes > self.max_message / 2 {
                break;
            }
            out.push(f);
        }
        if out.len() < n {
            problems.push(format!(
                "{} more failed examples than this reply can list: the log names each, and \
                 `coordinator summarize --state` lists all once the coordinator has stopped",
                n - out.len()
            ));
        }
        out
    }
}

/// Refuses calls without `authorization: Bearer <token>` (when the coordinator has a token).
#[derive(Clone)]
pub struct CheckToken(pub Option<Arc<String>>);

impl tonic::service::Interceptor for CheckToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else {
            return Ok(req);
        };
        let got = req
            .metadata()
            .get(drllm_proto::AUTH_HEADER)
            .and_then(|v| v.to_str().ok());
        match got.and_then(|v| v.strip_prefix("Bearer ")) {
            Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => Ok(req),
            Some(_) => Err(Status::unauthenticated("wrong bearer token")),
            None => Err(Status::unauthenticated(
                "missing bearer token: set DRLLM_TOKEN or --token-file",
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
