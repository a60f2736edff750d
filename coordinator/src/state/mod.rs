//! The job's durable state in sled, with an in-memory index for fast leasing. sled holds the job
//! spec and its examples, each example's lease or failure (`state`), the accepted results not yet
//! in Parquet (`results`, one entry per submission), and the committed parts with their keys
//! (`parts`). An example's state follows from these, first match wins: listed in a committed part
//! → committed; in a stored submission → done; `state` says failed or leased; otherwise pending.
//! Request handlers change the in-memory index and queue the matching writes to the single
//! [`writer`]; registrations, submissions and releases are on disk before their reply goes out
//! (leases and heartbeats are not: a lease lost in a crash only makes its example pending again).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use drllm_contract::SearchRecord;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use drllm_proto::convert::decode_record;
use drllm_proto::v1::{self, LeasedExample, SearchResult};
use prost::Message;

use crate::fault::Faults;
use tokio::sync::{mpsc, oneshot};
use writer::Op;
pub use writer::SubmitReply;

mod failures;
mod open;
mod size;
mod writer;

pub use failures::read_failures;
use failures::{display_id, example_id, short_id, with_ids};

/// Layout version of the state directory. 3: accepted results are stored as records with typed
/// run settings (records schema 3), which format-2 states' results are not. 4: examples and
/// results are stored as their protocol messages (protobuf), no longer as JSON.
const FORMAT: &str = "4";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {dir}: cannot open it as a sled database ({source}); if it is corrupt, move it away and start the job again")]
    Open { dir: String, source: sled::Error },
    #[error("state directory {dir} belongs to another job (stored job {stored}, this spec {given}); use a new --state directory for this job, or the job file it was started with (saved in the state as job.toml)")]
    OtherJob {
        dir: String,
        stored: String,
        given: String,
    },
    #[error("state directory {dir} is corrupt: {what}; move it away and start the job again")]
    Corrupt { dir: String, what: String },
    #[error("{0}; fix the dataset or the job file and start again (the state directory is fine)")]
    Dataset(String),
    #[error("state database: {0}")]
    Db(#[from] sled::Error),
    #[error("state database: writing to disk failed: {0}")]
    Flush(String),
    #[error("output directory {dir}: {what}")]
    Output { dir: String, what: String },
}

pub type Result<T> = std::result::Result<T, StateError>;

/// What the `state` tree stores for an example (absent: pending, unless a result or part says
/// otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Stored {
    Leased {
        worker: String,
        deadline_ms: i64,
    },
    Failed {
        reason: String,
    },
    /// Failed because it cannot travel within the job's message limit: checked again at every
    /// open, so a raised `max_message_mib` makes it pending again ([`size`]).
    TooLarge {
        reason: String,
    },
}

/// A registered worker, kept in the `workers` tree so that the registry survives a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub device: String,
    pub done: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// In-memory index of the sled state.
#[derive(Default)]
struct Mem {
    pending: BTreeSet<u64>,
    leased: HashMap<u64, (String, i64)>,
    /// The leases by deadline, so expired ones are found without a scan.
    deadlines: BTreeSet<(i64, u64)>,
    /// Accepted results waiting for the sink, by submission id (the `results` tree's key).
    subs: BTreeMap<u64, Vec<(u64, SearchRecord)>>,
    next_sub: u64,
    uncommitted: u64,
    committed: u64,
    /// Failed examples and why, by key.
    failures: BTreeMap<u64, String>,
    parts: u64,
    workers: HashMap<String, WorkerInfo>,
    /// Workers a Lease has told that the job is done, and workers that said they stop.
    told_done: HashSet<String>,
    fingerprint: Option<String>,
}

impl Mem {
    fn set_lease(&mut self, k: u64, worker: &str, deadline_ms: i64) {
        if let Some((_, old)) = self.leased.insert(k, (worker.to_string(), deadline_ms)) {
            self.deadlines.remove(&(old, k));
        }
        self.pending.remove(&k);
        self.deadlines.insert((deadline_ms, k));
    }

    /// Takes `k` out of the open (pending or leased) examples.
    fn close(&mut self, k: u64) {
        self.pending.remove(&k);
        if let Some((_, d)) = self.leased.remove(&k) {
            self.deadlines.remove(&(d, k));
        }
    }

    fn is_open(&self, k: u64) -> bool {
        self.pending.contains(&k) || self.leased.contains_key(&k)
    }
}

/// Counts for `status`.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub total: u64,
    pub pending: u64,
    pub leased: u64,
    pub uncommitted: u64,
    pub committed: u64,
    pub failed: u64,
    pub parts: u64,
}

/// Results the sink writes into one part.
pub struct PartBatch {
    pub subs: Vec<u64>,
    /// How many of `keys` (and `records`) each submission holds, in order.
    pub sub_lens: Vec<usize>,
    pub keys: Vec<u64>,
    pub records: Vec<SearchRecord>,
}

pub struct State {
    dir: PathBuf,
    meta: sled::Tree,
    examples: sled::Tree,
    states: sled::Tree,
    results: sled::Tree,
    parts: sled::Tree,
    workers: sled::Tree,
    /// Where each example comes from (`file:line`), by key; empty in states written before it.
    origins: sled::Tree,
    total: u64,
    /// The largest message the coordinator and its workers accept (the job's `max_message_mib`).
    max_message: usize,
    mem: Arc<Mutex<Mem>>,
    /// Bumped on every change of the counts, so that waiting (for the end of the job, for the
    /// leases to come back) needs no polling.
    changes: Arc<tokio::sync::watch::Sender<()>>,
    /// Writes bound for sled, in the order the index made them ([`writer`]).
    tx: mpsc::UnboundedSender<Op>,
    /// Where the writer and the sink report failures.
    faults: Arc<Faults>,
}

fn key(k: u64) -> [u8; 8] {
    k.to_be_bytes()
}

fn unkey(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Our transactions never abort; only storage errors remain.
fn tx_error(e: TransactionError<()>) -> StateError {
    match e {
        TransactionError::Storage(e) => StateError::Db(e),
        TransactionError::Abort(()) => StateError::Flush("a state transaction aborted".into()),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl State {
    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn corrupt(&self, what: String) -> StateError {
        StateError::Corrupt {
            dir: self.dir.display().to_string(),
            what,
        }
    }

    /// Where failures of the state writer and the sink are reported.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Queues a write for the [`writer`] (it lives as long as the state).
    fn queue(&self, op: Op) {
        let _ = self.tx.send(op);
    }

    /// Waits until everything queued so far is on disk.
    pub async fn persist(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.queue(Op::Sync(reply));
        rx.await
            .map_err(|_| StateError::Flush("the state writer stopped".into()))?
            .map_err(StateError::Flush)
    }

    /// Checks a worker's model fingerprint (pinning the first one when the job names none) and
    /// records the worker. `Err` holds the reason for refusing it.
    pub fn register(
        &self,
        worker: &str,
        device: &str,
        fingerprint: &str,
    ) -> std::result::Result<(), String> {
        let mut mem = self.mem();
        match &mem.fingerprint {
            Some(f) if f != fingerprint => {
                return Err(format!(
                "model fingerprint {fingerprint} differs from the job's {f}: load the job's model"
            ))
            }
            Some(_) => {}
            None => {
                self.queue(Op::Meta("fingerprint", fingerprint.as_bytes().to_vec()));
                mem.fingerprint = Some(fingerprint.to_string());
            }
        }
        let now = now_ms();
        let w = mem.workers.entry(worker.to_string()).or_default();
        w.device = device.to_string();
        if w.first_seen_ms == 0 {
            w.first_seen_ms = now;
        }
        w.last_seen_ms = now;
        let w = w.clone();
        self.queue(Op::Worker(worker.to_string(), w));
        Ok(())
    }

    /// Makes `k` pending again.
    fn reopen(&self, mem: &mut Mem, k: u64) {
        self.queue(Op::Remove(k));
        mem.close(k);
        mem.pending.insert(k);
    }

    /// Leases up to `max` pending examples to `worker` until `deadline_ms` (expired leases are
    /// returned first).
    pub fn lease(&self, worker: &str, max: usize, deadline_ms: i64) -> Result<Vec<LeasedExample>> {
        let mut mem = self.mem();
        let now = now_ms();
        self.reclaim(&mut mem, now);
        let mut out = Vec::new();
        // Packed by count and by bytes: the reply never passes the message limit.
        let mut bytes = drllm_proto::size::LEASE_REPLY_OVERHEAD;
        let mut next = 0;
        while out.len() < max {
            let Some(&k) = mem.pending.range(next..).next() else {
                break;
            };
            next = k + 1;
            let stored = self.examples.get(key(k))?;
            let decoded = stored.map(|b| v1::Example::decode(b.as_ref()));
            match decoded {
                Some(Ok(example)) => {
                    let le = LeasedExample {
                        key: k,
                        example: Some(example),
                    };
                    // One that cannot travel alone fails alone (the last guard: every open
                    // example was checked when the state opened).
                    if let Some(reason) = self.lease_too_large(&le) {
                        self.fail_as(&mut mem, k, Stored::TooLarge { reason });
                        continue;
                    }
                    bytes += drllm_proto::size::leased_len(&le);
                    if bytes > self.max_message {
                        break;
                    }
                    self.set_lease(&mut mem, k, worker, deadline_ms);
                    out.push(le);
                }
                // One unreadable example fails alone instead of failing every lease.
                Some(Err(e)) => self.fail(
                    &mut mem,
                    k,
                    format!("its stored example does not decode: {e}"),
                ),
                None => self.fail(&mut mem, k, "its stored example is missing".into()),
            }
        }
        if let Some(w) = mem.workers.get_mut(worker) {
            w.last_seen_ms = now;
        }
        drop(mem);
        self.notify();
        Ok(out)
    }

    /// Marks `k` failed for `reason`, durably (queued like a lease).
    fn fail(&self, mem: &mut Mem, k: u64, reason: String) {
        self.fail_as(mem, k, Stored::Failed { reason });
    }

    /// Marks `k` failed as `stored` says (a failure of either kind), durably, and logs it with
    /// its example id.
    fn fail_as(&self, mem: &mut Mem, k: u64, stored: Stored) {
        let (Stored::Failed { reason } | Stored::TooLarge { reason }) = &stored else {
            return;
        };
        let id = display_id(&self.examples, k);
        tracing::error!(key = k, example = %id, %reason, "example failed");
        mem.close(k);
        mem.failures.insert(k, reason.clone());
        self.queue(Op::Put(k, stored));
    }

    /// Makes the examples whose lease expired by `now` pending again; returns how many.
    fn reclaim(&self, mem: &mut Mem, now: i64) -> usize {
        let mut n = 0;
        while let Some(&(d, k)) = mem.deadlines.first() {
            if d > now {
                break;
            }
            self.reopen(mem, k);
            n += 1;
        }
        n
    }

    /// Reclaims expired leases now (the coordinator's timer calls it, so a dead worker's
    /// examples are pending again, and counted so, without waiting for the next Lease call).
    pub fn reclaim_expired(&self) -> usize {
        let n = self.reclaim(&mut self.mem(), now_ms());
        if n > 0 {
            self.notify();
        }
        n
    }

    /// Wakes whoever waits in [`State::wait_until`].
    fn notify(&self) {
        self.changes.send_replace(());
    }

    /// Resolves once `f` holds for the state (checked at every change).
    pub async fn wait_until(&self, f: impl Fn(&State) -> bool) {
        let mut rx = self.changes.subscribe();
        while !f(self) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Notes that `worker` need not hear that the job is done: a Lease told it so, or it said
    /// it stops.
    pub fn told_done(&self, worker: &str) {
        self.mem().told_done.insert(worker.to_string());
        self.notify();
    }

    /// Whether every worker seen since `since_ms` (this coordinator's start) has been told that
    /// the job is done, or has stopped. A worker cut off by the network counts until it is back.
    pub fn all_told_done(&self, since_ms: i64) -> bool {
        let mem = self.mem();
        mem.workers
            .iter()
            .filter(|(_, w)| w.last_seen_ms >= since_ms)
            .all(|(id, _)| mem.told_done.contains(id))
    }

    fn set_lease(&self, mem: &mut Mem, k: u64, worker: &str, deadline_ms: i64) {
        let st = Stored::Leased {
            worker: worker.to_string(),
            deadline_ms,
        };
        self.queue(Op::Put(k, st));
        mem.set_lease(k, worker, deadline_ms);
    }

    /// Extends `worker`'s leases on `keys`; returns the keys it no longer holds.
    pub fn heartbeat(&self, worker: &str, keys: &[u64], deadline_ms: i64) -> Vec<u64> {
        let mut mem = self.mem();
        let mut lost = Vec::new();
        for &k in keys {
            match mem.leased.get(&k) {
                Some((w, _)) if w == worker => self.set_lease(&mut mem, k, worker, deadline_ms),
                _ => lost.push(k),
            }
        }
        if let Some(w) = mem.workers.get_mut(worker) {
            w.last_seen_ms = now_ms();
        }
        lost
    }

    /// Stores outcomes (records, or failures) once they are on disk; the first outcome of an
    /// example wins. Each result is decided alone: see the writer ([`writer`]).
    pub async fn submit(&self, worker: String, results: Vec<SearchResult>) -> Result<SubmitReply> {
        let (reply, rx) = oneshot::channel();
        self.queue(Op::Submit {
            worker,
            results,
            reply,
        });
        rx.await
            .map_err(|_| StateError::Flush("the state writer stopped".into()))?
            .map_err(StateError::Flush)
    }

    /// Gives `worker`'s leases on `keys` back.
    pub fn release(&self, worker: &str, keys: &[u64]) -> u32 {
        let mut mem = self.mem();
        let mut n = 0;
        for &k in keys {
            if matches!(mem.leased.get(&k), Some((w, _)) if w == worker) {
                self.reopen(&mut mem, k);
                n += 1;
            }
        }
        drop(mem);
        self.notify();
        n
    }

    pub fn counts(&self) -> Counts {
        let mem = self.mem();
        Counts {
            total: self.total,
            pending: mem.pending.len() as u64,
            leased: mem.leased.len() as u64,
            uncommitted: mem.uncommitted,
            committed: mem.committed,
            failed: mem.failures.len() as u64,
            parts: mem.parts,
        }
    }

    pub fn is_registered(&self, worker: &str) -> bool {
        self.mem().workers.contains_key(worker)
    }

    pub fn worker_count(&self) -> usize {
        self.mem().workers.len()
    }

    /// Every registered worker with how many examples it holds now.
    pub fn workers(&self) -> Vec<(String, WorkerInfo, u32)> {
        let mem = self.mem();
        let mut held: HashMap<&str, u32> = HashMap::new();
        for (w, _) in mem.leased.values() {
            *held.entry(w.as_str()).or_default() += 1;
        }
        let mut out: Vec<_> = mem
            .workers
            .iter()
            .map(|(id, w)| {
                let leased = held.get(id.as_str()).copied().unwrap_or(0);
                (id.clone(), w.clone(), leased)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The failed examples: key, example id and reason, by key.
    pub fn failures(&self) -> Vec<(u64, String, String)> {
        let failures = self.mem().failures.clone();
        with_ids(&self.examples, failures)
    }

    /// Every example has a committed (or failed) result.
    pub fn finished(&self) -> bool {
        let c = self.counts();
        c.committed + c.failed == c.total
    }

    /// Hands the sink the oldest accepted submissions not yet in a part, whole, up to `max`
    /// results (at least one submission when any waits). They stay uncommitted (and in sled)
    /// until [`State::commit_part`]; a sink that cannot write them gives them back
    /// ([`State::queue_again`]), and a restart reads them back from sled.
    pub fn take_uncommitted(&self, max: usize) -> PartBatch {
        let mut mem = self.mem();
        let mut b = PartBatch {
            subs: Vec::new(),
            sub_lens: Vec::new(),
            keys: Vec::new(),
            records: Vec::new(),
        };
        while let Some(entry) = mem.subs.first_entry() {
            if !b.subs.is_empty() && b.keys.len() + entry.get().len() > max {
                break;
            }
            let (id, recs) = entry.remove_entry();
            b.subs.push(id);
            b.sub_lens.push(recs.len());
            for (k, r) in recs {
                b.keys.push(k);
                b.records.push(r);
            }
        }
        b
    }

    /// Puts a batch the sink could not write back at the head of the queue.
    pub fn queue_again(&self, batch: PartBatch) {
        let mut mem = self.mem();
        let mut records = batch.records.into_iter();
        let mut keys = batch.keys.into_iter();
        for (id, n) in batch.subs.into_iter().zip(batch.sub_lens) {
            let recs: Vec<_> = keys.by_ref().take(n).zip(records.by_ref()).collect();
            mem.subs.insert(id, recs);
        }
    }

    /// The name the next part file gets.
    pub fn next_part(&self) -> Result<u64> {
        Ok(self
            .meta
            .get("next_part")?
            .and_then(|v| unkey(&v))
            .unwrap_or(0))
    }

    /// Marks the batch committed in part `name` (already renamed into place), in one
    /// transaction, and persists it.
    pub async fn commit_part(&self, name: &str, batch: &PartBatch) -> Result<()> {
        let next = self.next_part()? + 1;
        let listed = serde_json::to_vec(&batch.keys).expect("serializes");
        let r: std::result::Result<(), TransactionError<()>> =
            (&self.results, &self.parts, &self.meta).transaction(|(r, p, m)| {
                for id in &batch.subs {
                    r.remove(&key(*id))?;
                }
                p.insert(name.as_bytes(), listed.clone())?;
                m.insert("next_part", &key(next))?;
                Ok::<_, ConflictableTransactionError<()>>(())
            });
        r.map_err(tx_error)?;
        {
            let mut mem = self.mem();
            mem.uncommitted -= batch.keys.len() as u64;
            mem.committed += batch.keys.len() as u64;
            mem.parts += 1;
        }
        self.notify();
        self.persist().await
    }

    /// Names of the committed parts.
    pub fn committed_parts(&self) -> Result<BTreeSet<String>> {
        self.parts
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).to_string()))
            .collect()
    }
}
