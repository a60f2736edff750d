//! A worker's conversation with its coordinator: registration (which also hands over the job's
//! message limit, applied to this client from then on), leases, submissions and releases, each
//! retried with backoff while the coordinator is away. No single message can stop the worker: a
//! record past the limit is reported as its example's failure instead of being sent, a result
//! the coordinator cannot take is reported the same way, and a lease that cannot be decoded is
//! asked for again one example at a time.

use std::time::{Duration, Instant};

use anyhow::bail;
use drllm_proto::client::Client;
use drllm_proto::size::{mib, DEFAULT_MAX_MESSAGE_BYTES};
use drllm_proto::v1::*;
use prost::Message;
use tonic::{Code, Status};

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

/// Did a call fail on the message itself (too large, or not decodable) rather than on the
/// coordinator's state?
fn message_error(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::OutOfRange | Code::ResourceExhausted | Code::Internal
    )
}

#[derive(Clone)]
pub struct Session {
    pub client: Client,
    pub worker_id: String,
    pub register: RegisterRequest,
    pub give_up: Duration,
    /// The largest message the job's coordinator and this worker accept.
    pub max_message: usize,
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
    /// Runs `call` until it answers (see [`with_backoff`]), registering again when the
    /// coordinator forgot this worker (it restarted). `Ok(Err(status))`: any other error the
    /// coordinator answered.
    async fn try_call<T, F, Fut>(
        &mut self,
        what: &str,
        mut call: F,
    ) -> anyhow::Result<Result<T, Status>>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        loop {
            match with_backoff(&self.client, self.give_up, what, &mut call).await? {
                Err(s) if s.code() == Code::NotFound => {
                    tracing::info!("coordinator forgot this worker; registering again");
                    self.register().await?;
                }
                answered => return Ok(answered),
            }
        }
    }

    /// [`Session::try_call`], with an error answer as the error.
    async fn call<T, F, Fut>(&mut self, what: &str, call: F) -> anyhow::Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match self.try_call(what, call).await? {
            Ok(v) => Ok(v),
            Err(s) => bail!("{what}: {} ({:?})", s.message(), s.code()),
        }
    }

    /// Registers and applies the job's message limit to this client (and its clones made
    /// afterwards).
    pub async fn register(&mut self) -> anyhow::Result<RegisterReply> {
        let req = self.register.clone();
        let reply = with_backoff(&self.client, self.give_up, "register", |mut c| {
            let req = req.clone();
            async move { c.register(req).await }
        })
        .await?
        .map_err(|s| {
            anyhow::anyhow!(
                "the coordinator refused this worker: {} ({:?})",
                s.message(),
                s.code()
            )
        })?;
        self.max_message = match reply.max_message_bytes {
            0 => DEFAULT_MAX_MESSAGE_BYTES,
            n => n as usize,
        };
        self.client = (self.client.clone())
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message);
        Ok(reply)
    }

    /// Leases up to `max` examples (0: the job's shard size). A lease this worker cannot decode
    /// (a coordinator with another limit) is asked for again one example at a time; only when
    /// even that fails does the worker stop, saying why.
    pub async fn lease(&mut self, max: u32) -> anyhow::Result<LeaseReply> {
        let mut max_examples = max;
        loop {
            let id = self.worker_id.clone();
            let got = self
                .try_call("lease", move |mut c| {
                    let id = id.clone();
                    async move {
                        c.lease(LeaseRequest {
                            worker_id: id,
                            max_examples,
                        })
                        .await
                    }
                })
                .await?;
            match got {
                Ok(lease) => return Ok(lease),
                Err(s) if message_error(&s) && max_examples != 1 => {
                    tracing::error!(
                        "a lease could not be received ({}); asking for one example at a time",
                        s.message()
                    );
                    max_examples = 1;
                }
                Err(s) => bail!(
                    "lease: {} ({:?}); the coordinator sends leases this worker cannot take: \
                     run the same drllm release on both sides (this worker takes messages up to {})",
                    s.message(),
                    s.code(),
                    mib(self.max_message)
                ),
            }
        }
    }

    /// Submits one result and returns the coordinator's verdict. A record past the message
    /// limit is not sent: its example is reported failed with the sizes; a result the
    /// coordinator cannot take (a message error) is reported failed the same way.
    pub async fn submit(&mut self, result: SearchResult) -> anyhow::Result<SubmitReply> {
        let key = result.key;
        let req = SubmitRequest {
            worker_id: self.worker_id.clone(),
            results: vec![result],
        };
        let req = if req.encoded_len() > self.max_message {
            let reason = format!(
                "its record weighs {}, over the job's message limit of {} (`max_message_mib`): \
                 not sent; raise `max_message_mib` in the job file and resume to search it again",
                mib(req.encoded_len()),
                mib(self.max_message)
            );
            tracing::warn!(example = key, "{reason}");
            self.failure(key, reason)
        } else {
            req
        };
        match self.send(&req).await? {
            Ok(reply) => Ok(reply),
            Err(s) if message_error(&s) => {
                let reason = format!("the coordinator could not take its result: {}", s.message());
                tracing::warn!(example = key, "{reason}");
                match self.send(&self.failure(key, reason)).await? {
                    Ok(reply) => Ok(reply),
                    Err(s) => bail!("submit: {} ({:?})", s.message(), s.code()),
                }
            }
            Err(s) => bail!("submit: {} ({:?})", s.message(), s.code()),
        }
    }

    /// The request that reports example `key` failed for `reason`.
    fn failure(&self, key: u64, reason: String) -> SubmitRequest {
        SubmitRequest {
            worker_id: self.worker_id.clone(),
            results: vec![SearchResult {
                key,
                error: reason,
                ..Default::default()
            }],
        }
    }

    async fn send(&mut self, req: &SubmitRequest) -> anyhow::Result<Result<SubmitReply, Status>> {
        self.try_call("submit", move |mut c| {
            let req = req.clone();
            async move { c.submit(req).await }
        })
        .await
    }

    /// Gives `keys` back unsearched; `leaving` also tells the coordinator that this worker
    /// stops, so that it does not wait for it at the end of the job.
    pub async fn release(&mut self, keys: Vec<u64>, leaving: bool) -> anyhow::Result<u32> {
        let id = self.worker_id.clone();
        let r = self
            .call("release", move |mut c| {
                let (id, keys) = (id.clone(), keys.clone());
                async move {
                    c.release(ReleaseRequest {
                        worker_id: id,
                        keys,
                        leaving,
                    })
                    .await
                }
            })
            .await?;
        Ok(r.released)
    }

    /// Tells the coordinator, best effort and briefly, that this worker stops.
    pub async fn leave(&mut self) {
        let mut s = Session {
            give_up: Duration::ZERO,
            ..self.clone()
        };
        let said = tokio::time::timeout(Duration::from_secs(2), s.release(Vec::new(), true));
        if !matches!(said.await, Ok(Ok(_))) {
            tracing::debug!("could not tell the coordinator that this worker stops");
        }
    }
}
