//! The state's single writer: one thread that takes every change bound for sled, in the order the
//! in-memory index made them, and applies whatever has queued up as one batch per tree. It also
//! decides submissions, result by result (first outcome wins; a record that does not decode,
//! breaks the schema's rules or names another example fails its example with the reason, so one
//! poison example cannot stop the workers that lease it in turn), stores them, and makes each
//! round durable with one fsync before it answers the calls waiting on it (group commit). Request
//! handlers thus only touch memory and a queue; a thousand workers cost a few batches, not a
//! thousand fsyncs or a thousand lock-holding writes.
//!
//! If sled fails to apply a round, memory and disk may disagree; the disk is consistent. The
//! writer then reports a fatal fault (the supervisor drains and exits so that a restart resumes
//! from the disk) and answers every later call with that error instead of writing anything more.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use drllm_contract::SearchRecord;
use drllm_proto::convert::decode_record;
use drllm_proto::v1::{RefusedResult, SearchResult};
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use super::{key, now_ms, Mem, Stored};
use crate::fault::Faults;

/// How a submission's results were decided.
#[derive(Debug, Default)]
pub struct Submitted {
    /// Results that settled their example (a record, or a failure the worker reported).
    pub accepted: u32,
    /// Results for examples already settled.
    pub duplicates: u32,
    /// Results refused, with the reason; an example of the job is marked failed with it.
    pub refused: Vec<RefusedResult>,
}

/// The decided submission, or why the writer could not decide it.
pub type SubmitReply = Result<Submitted, String>;

pub(super) enum Op {
    /// An example's lease or failure.
    Put(u64, Stored),
    /// The example is pending again.
    Remove(u64),
    Meta(&'static str, Vec<u8>),
    /// A worker's registration (or its updated count).
    Worker(String, super::WorkerInfo),
    Submit {
        worker: String,
        results: Vec<SearchResult>,
        reply: oneshot::Sender<Result<SubmitReply, String>>,
    },
    /// Answered once everything queued before it is on disk.
    Sync(oneshot::Sender<Result<(), String>>),
}

/// What the writer needs of the state.
pub(super) struct Writer {
    pub meta: sled::Tree,
    pub examples: sled::Tree,
    pub states: sled::Tree,
    pub results: sled::Tree,
    pub workers: sled::Tree,
    pub db: sled::Db,
    /// Told after each round: the counts may have changed.
    pub changes: Arc<tokio::sync::watch::Sender<()>>,
    pub mem: Arc<Mutex<Mem>>,
    pub total: u64,
    pub faults: Arc<Faults>,
    /// Set once a round failed: nothing more is written.
    pub failed: Option<String>,
}

/// A submission's results as one `results` value: (key u64, length u32, record protobuf)
/// repeated.
pub(super) fn encode_sub(items: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|(_, r)| 12 + r.len()).sum());
    for (k, rec) in items {
        out.extend_from_slice(&k.to_be_bytes());
        out.extend_from_slice(&(rec.len() as u32).to_be_bytes());
        out.extend_from_slice(rec);
    }
    out
}

pub(super) fn decode_sub(mut b: &[u8]) -> Result<Vec<(u64, &[u8])>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 12 {
            return Err("truncated entry".into());
        }
        let k = u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
        let n = u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
        let rec = b.get(12..12 + n).ok_or("truncated record")?;
        out.push((k, rec));
        b = &b[12 + n..];
    }
    Ok(out)
}

/// The most operations applied in one round.
const ROUND: usize = 4096;

impl Writer {
    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        let mut ops = Vec::with_capacity(ROUND);
        while let Some(op) = rx.blocking_recv() {
            ops.push(op);
            while ops.len() < ROUND {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            match &self.failed {
                None => self.round(std::mem::take(&mut ops)),
                Some(e) => refuse(std::mem::take(&mut ops), e),
            }
        }
    }

    fn round(&mut self, ops: Vec<Op>) {
        let mut states = sled::Batch::default();
        let mut results = sled::Batch::default();
        let mut meta = Vec::new();
        let mut workers = sled::Batch::default();
        let mut subs: Vec<(u64, Vec<(u64, SearchRecord)>)> = Vec::new();
        let mut submit_replies = Vec::new();
        let mut syncs = Vec::new();
        for op in ops {
            match op {
                Op::Put(k, st) => {
                    states.insert(&key(k), serde_json::to_vec(&st).expect("serializes"))
                }
                Op::Remove(k) => states.remove(&key(k)),
                Op::Meta(name, v) => meta.push((name, v)),
                Op::Worker(id, w) => {
                    workers.insert(id.as_bytes(), serde_json::to_vec(&w).expect("serializes"))
                }
                Op::Submit {
                    worker,
                    results: res,
                    reply,
                } => {
                    let r = self.submit(&worker, res, &mut states, &mut results, &mut subs);
                    if let Some(w) = self.mem().workers.get(&worker) {
                        workers.insert(
                            worker.as_bytes(),
                            serde_json::to_vec(w).expect("serializes"),
                        );
                    }
                    submit_replies.push((reply, r));
                }
                Op::Sync(reply) => syncs.push(reply),
            }
        }
        let t = std::time::Instant::now();
        let write = || -> sled::Result<()> {
            for (name, v) in meta {
                self.meta.insert(name, v)?;
            }
            self.states.apply_batch(states)?;
            self.results.apply_batch(results)?;
            self.workers.apply_batch(workers)?;
            if !submit_replies.is_empty() || !syncs.is_empty() {
                self.db.flush()?;
                crate::metrics::flushed(
                    t.elapsed().as_secs_f64(),
                    submit_replies.len() + syncs.len(),
                );
            }
            Ok(())
        };
        let outcome = write().map_err(|e| format!("writing the state: {e}"));
        if outcome.is_ok() {
            // Only now may the sink see these results: they are in sled.
            let mut mem = self.mem();
            for (id, recs) in subs {
                mem.subs.insert(id, recs);
            }
        }
        for (reply, r) in submit_replies {
            let _ = reply.send(outcome.clone().map(|()| r));
        }
        for reply in syncs {
            let _ = reply.send(outcome.clone());
        }
        self.changes.send_replace(());
        if let Err(e) = outcome {
            // Memory and disk may disagree now; the disk is consistent, so stop and let a
            // restart resume from it rather than go on from an index that may be wrong.
            self.faults.fatal(
                "state writer",
                format!("{e}: restart the coordinator with the same --state to resume (check the disk first)"),
            );
            self.failed = Some(e);
        }
    }

    /// What a result says about its example: its record (decoded and checked, protobuf to
    /// store), or why the example failed, and whether that was a refusal.
    fn outcome(&self, r: &SearchResult) -> Outcome {
        if !r.error.is_empty() {
            return Outcome::Failed(r.error.clone(), false);
        }
        let refuse = |why: String| Outcome::Failed(format!("record refused: {why}"), true);
        let Some(m) = &r.record else {
            return refuse("the result holds neither a record nor an error".into());
        };
        let rec = match decode_record(m) {
            Ok(rec) => rec,
            Err(e) => return refuse(e.to_string()),
        };
        match super::example_id(&self.examples, r.key) {
            Some(id) if id == rec.example_id => Outcome::Record(Box::new(rec), m.encode_to_vec()),
            Some(id) => refuse(format!(
                "it is the record of `{}`, but example {} is `{id}`",
                rec.example_id, r.key
            )),
            None => refuse(format!("example {} cannot be read from the state", r.key)),
        }
    }

    /// Decides one submission against the index, result by result: the first outcome of an
    /// example wins; a refused record fails its example with the reason. Stages its writes; the
    /// records reach `mem.subs` once they are written.
    fn submit(
        &self,
        worker: &str,
        results: Vec<SearchResult>,
        states: &mut sled::Batch,
        batch: &mut sled::Batch,
        subs: &mut Vec<(u64, Vec<(u64, SearchRecord)>)>,
    ) -> SubmitReply {
        let mut out = Submitted::default();
        let mut mem = self.mem();
        let mut seen = HashSet::new();
        let (mut items, mut recs) = (Vec::new(), Vec::new());
        for r in &results {
            if r.key >= self.total {
                let reason = format!(
                    "example key {} is not part of this job ({} examples)",
                    r.key, self.total
                );
                out.refused.push(RefusedResult { key: r.key, reason });
                continue;
            }
            // Still waiting for an outcome (pending or leased), first occurrence only.
            if !(mem.is_open(r.key) && seen.insert(r.key)) {
                out.duplicates += 1;
                continue;
            }
            mem.close(r.key);
            match self.outcome(r) {
                Outcome::Record(rec, bytes) => {
                    out.accepted += 1;
                    items.push((r.key, bytes));
                    recs.push((r.key, *rec));
                }
                Outcome::Failed(reason, refused) => {
                    tracing::warn!(example = r.key, worker, %reason, "example failed");
                    mem.failures.insert(r.key, reason.clone());
                    if refused {
                        let reason = reason.clone();
                        out.refused.push(RefusedResult { key: r.key, reason });
                    } else {
                        out.accepted += 1;
                    }
                    let st = serde_json::to_vec(&Stored::Failed { reason }).expect("serializes");
                    states.insert(&key(r.key), st);
                }
            }
        }
        if !items.is_empty() {
            let id = mem.next_sub;
            mem.next_sub += 1;
            mem.uncommitted += recs.len() as u64;
            batch.insert(&key(id), encode_sub(&items));
            subs.push((id, recs));
        }
        let w = mem.workers.entry(worker.to_string()).or_default();
        w.done += out.accepted as u64;
        w.last_seen_ms = now_ms();
        Ok(out)
    }
}

/// What one result settles.
enum Outcome {
    /// The example's record, and its protobuf as stored.
    Record(Box<SearchRecord>, Vec<u8>),
    /// The example failed with this reason; `true` when the coordinator refused the result.
    Failed(String, bool),
}

/// Answers every call in `ops` with the writer's failure `e`, writing nothing.
fn refuse(ops: Vec<Op>, e: &str) {
    for op in ops {
        match op {
            Op::Submit { reply, .. } => {
                let _ = reply.send(Err(e.to_string()));
            }
            Op::Sync(reply) => {
                let _ = reply.send(Err(e.to_string()));
            }
            Op::Put(..) | Op::Remove(_) | Op::Meta(..) | Op::Worker(..) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn submissions_decode_to_what_was_encoded(items in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..40)), 0..8)) {
            let bytes = encode_sub(&items);
            let back: Vec<(u64, Vec<u8>)> = decode_sub(&bytes).unwrap().into_iter().map(|(k, r)| (k, r.to_vec())).collect();
            prop_assert_eq!(back, items.clone());
            // Any truncation inside an entry is refused, never misread.
            if let Some(cut) = bytes.len().checked_sub(1) {
                prop_assert!(decode_sub(&bytes[..cut]).is_err());
            }
        }
    }
}
