//! The job's durable state in sled — the job spec, every example and its state (pending, leased
//! until a deadline, done with its result waiting for Parquet, committed to a part, failed), the
//! results not yet in Parquet, and the committed parts — with an in-memory index for fast leasing.
//! Every change that a reply acknowledges is flushed to disk before the reply goes out.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::job::JobSpec;

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
    #[error("state database: {0}")]
    Db(#[from] sled::Error),
    #[error("state database: writing to disk failed: {0}")]
    Flush(String),
    #[error("output directory {dir}: {what}")]
    Output { dir: String, what: String },
}

pub type Result<T> = std::result::Result<T, StateError>;

/// Where one example stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExState {
    Pending,
    Leased {
        worker: String,
        deadline_ms: i64,
    },
    /// The result is in the `results` tree, not yet in a part.
    Done,
    Committed {
        part: String,
    },
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, Default)]
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
    done: BTreeSet<u64>,
    committed: u64,
    failed: u64,
    workers: HashMap<String, WorkerInfo>,
    fingerprint: Option<String>,
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

pub struct State {
    db: sled::Db,
    dir: PathBuf,
    meta: sled::Tree,
    examples: sled::Tree,
    states: sled::Tree,
    results: sled::Tree,
    parts: sled::Tree,
    total: u64,
    mem: Mutex<Mem>,
    /// Group commit: callers of [`State::persist`] take a ticket; one flusher task makes all
    /// tickets up to the latest durable with one fsync and publishes how far it got.
    tickets: AtomicU64,
    durable: tokio::sync::watch::Sender<(u64, Option<String>)>,
    wake: tokio::sync::Notify,
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
    /// Opens (or creates) the state of `spec` in `dir`; a state of another job is refused.
    /// `job_text` (the job file) is saved alongside for reference.
    pub fn open(dir: &Path, spec: &JobSpec, job_file: &str, job_text: &str) -> Result<Self> {
        let d = dir.display().to_string();
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(200))
            .open()
            .map_err(|source| StateError::Open {
                dir: d.clone(),
                source,
            })?;
        let corrupt = |what: String| StateError::Corrupt {
            dir: d.clone(),
            what,
        };
        let meta = db.open_tree("meta")?;
        let examples = db.open_tree("examples")?;
        let states = db.open_tree("state")?;
        let results = db.open_tree("results")?;
        let parts = db.open_tree("parts")?;
        let hash = spec.hash();
        match meta.get("job_hash")? {
            Some(stored) => {
                let stored = String::from_utf8_lossy(&stored).to_string();
                if stored != hash {
                    return Err(StateError::OtherJob {
                        dir: d,
                        stored,
                        given: hash,
                    });
                }
            }
            None => {
                if !examples.is_empty() {
                    return Err(corrupt("examples without a job".into()));
                }
                let exs = spec
                    .examples(job_file)
                    .map_err(|e| corrupt(format!("cannot list the job's examples: {e}")))?;
                let mut ex_batch = sled::Batch::default();
                let mut st_batch = sled::Batch::default();
                let pending = serde_json::to_vec(&ExState::Pending).expect("serializes");
                for (i, ex) in exs.iter().enumerate() {
                    let json = serde_json::to_vec(ex).expect("an example serializes");
                    ex_batch.insert(&key(i as u64), json);
                    st_batch.insert(&key(i as u64), pending.clone());
                }
                examples.apply_batch(ex_batch)?;
                states.apply_batch(st_batch)?;
                meta.insert("job", job_text.as_bytes())?;
                meta.insert("job_spec", serde_json::to_vec(spec).expect("serializes"))?;
                meta.insert("next_part", &key(0))?;
                // Written last: a state with a job hash is complete.
                meta.insert("job_hash", hash.as_bytes())?;
                db.flush()?;
            }
        }
        let mut mem = Mem::default();
        let mut total = 0;
        for item in states.iter() {
            let (k, v) = item?;
            let k = unkey(&k).ok_or_else(|| corrupt("an example key is not 8 bytes".into()))?;
            let st: ExState = serde_json::from_slice(&v)
                .map_err(|e| corrupt(format!("state of example {k}: {e}")))?;
            total += 1;
            match st {
                ExState::Pending => {
                    mem.pending.insert(k);
                }
                ExState::Leased {
                    worker,
                    deadline_ms,
                } => {
                    mem.leased.insert(k, (worker, deadline_ms));
                }
                ExState::Done => {
                    if !results.contains_key(key(k))? {
                        return Err(corrupt(format!("example {k} is done but has no result")));
                    }
                    mem.done.insert(k);
                }
                ExState::Committed { .. } => mem.committed += 1,
                ExState::Failed { .. } => mem.failed += 1,
            }
        }
        if total != examples.len() as u64 {
            return Err(corrupt(format!(
                "{} examples but {total} example states",
                examples.len()
            )));
        }
        mem.fingerprint = match meta.get("fingerprint")? {
            Some(f) => Some(String::from_utf8_lossy(&f).to_string()),
            None => (!spec.model_fingerprint.is_empty()).then(|| spec.model_fingerprint.clone()),
        };
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            meta,
            examples,
            states,
            results,
            parts,
            total,
            mem: Mutex::new(mem),
            tickets: AtomicU64::new(0),
            durable: tokio::sync::watch::channel((0, None)).0,
            wake: tokio::sync::Notify::new(),
        })
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put_state(&self, k: u64, st: &ExState) -> Result<()> {
        self.states
            .insert(key(k), serde_json::to_vec(st).expect("serializes"))?;
        Ok(())
    }

    /// Waits until everything written so far is on disk (needs [`State::run_flusher`] running).
    pub async fn persist(&self) -> Result<()> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rx = self.durable.subscribe();
        self.wake.notify_one();
        let got = rx
            .wait_for(|(done, err)| *done >= ticket || err.is_some())
            .await
            .map_err(|_| StateError::Flush("the flusher stopped".into()))?;
        match &got.1 {
            Some(e) => Err(StateError::Flush(e.clone())),
            None => Ok(()),
        }
    }

    /// The group-commit loop behind [`State::persist`]: one fsync serves every caller that asked
    /// before it started. Runs until the process ends.
    pub async fn run_flusher(self: std::sync::Arc<Self>) {
        loop {
            self.wake.notified().await;
            let target = self.tickets.load(Ordering::SeqCst);
            if target <= self.durable.borrow().0 {
                continue;
            }
            let db = self.db.clone();
            let r = tokio::task::spawn_blocking(move || db.flush()).await;
            let err = match r {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = &err {
                tracing::error!("flushing the state failed: {e}");
            }
            self.durable.send_replace((target, err));
        }
    }

    /// Checks a worker's model fingerprint (pinning the first one when the job names none) and
    /// records the worker. `Err` holds the reason for refusing it.
    pub fn register(
        &self,
        worker: &str,
        device: &str,
        fingerprint: &str,
    ) -> Result<std::result::Result<(), String>> {
        let mut mem = self.mem();
        match &mem.fingerprint {
            Some(f) if f != fingerprint => {
                return Ok(Err(format!(
                "model fingerprint {fingerprint} differs from the job's {f}: load the job's model"
            )))
            }
            Some(_) => {}
            None => {
                self.meta.insert("fingerprint", fingerprint.as_bytes())?;
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
        Ok(Ok(()))
    }

    /// Returns expired leases to the pending set.
    fn reclaim(&self, mem: &mut Mem, now: i64) -> Result<()> {
        let expired: Vec<u64> = mem
            .leased
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.put_state(k, &ExState::Pending)?;
            mem.leased.remove(&k);
            mem.pending.insert(k);
        }
        Ok(())
    }

    /// Leases up to `max` pending examples to `worker` until `deadline_ms`: (key, example JSON).
    pub fn lease(&self, worker: &str, max: usize, deadline_ms: i64) -> Result<Vec<(u64, String)>> {
        let mut mem = self.mem();
        self.reclaim(&mut mem, now_ms())?;
        let keys: Vec<u64> = mem.pending.iter().take(max).copied().collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let ex = self
                .examples
                .get(key(k))?
                .ok_or_else(|| StateError::Corrupt {
                    dir: self.dir.display().to_string(),
                    what: format!("example {k} is missing"),
                })?;
            self.put_state(
                k,
                &ExState::Leased {
                    worker: worker.to_string(),
                    deadline_ms,
                },
            )?;
            mem.pending.remove(&k);
            mem.leased.insert(k, (worker.to_string(), deadline_ms));
            out.push((k, String::from_utf8_lossy(&ex).to_string()));
        }
        if let Some(w) = mem.workers.get_mut(worker) {
            w.last_seen_ms = now_ms();
        }
        Ok(out)
    }

    /// Extends `worker`'s leases on `keys`; returns the keys it no longer holds.
    pub fn heartbeat(&self, worker: &str, keys: &[u64], deadline_ms: i64) -> Result<Vec<u64>> {
        let mut mem = self.mem();
        let now = now_ms();
        let mut lost = Vec::new();
        for &k in keys {
            match mem.leased.get(&k) {
                Some((w, _)) if w == worker => {
                    self.put_state(
                        k,
                        &ExState::Leased {
                            worker: worker.to_string(),
                            deadline_ms,
                        },
                    )?;
                    mem.leased.insert(k, (worker.to_string(), deadline_ms));
                }
                _ => lost.push(k),
            }
        }
        if let Some(w) = mem.workers.get_mut(worker) {
            w.last_seen_ms = now;
        }
        Ok(lost)
    }

    /// Stores results; the first result of an example wins. Returns (accepted, duplicates).
    /// Unknown keys are an error naming them.
    pub fn submit(
        &self,
        worker: &str,
        results: &[(u64, String)],
    ) -> Result<std::result::Result<(u32, u32), String>> {
        let mut mem = self.mem();
        if let Some(&(k, _)) = results.iter().find(|(k, _)| *k >= self.total) {
            return Ok(Err(format!(
                "example key {k} is not part of this job ({} examples)",
                self.total
            )));
        }
        let fresh: Vec<&(u64, String)> = {
            let mut seen = BTreeSet::new();
            results
                .iter()
                // Still waiting for a result (pending or leased), first occurrence only.
                .filter(|(k, _)| {
                    (mem.pending.contains(k) || mem.leased.contains_key(k)) && seen.insert(*k)
                })
                .collect()
        };
        let done = serde_json::to_vec(&ExState::Done).expect("serializes");
        let r: std::result::Result<(), TransactionError<()>> = (&self.states, &self.results)
            .transaction(|(s, r)| {
                for (k, rec) in &fresh {
                    s.insert(&key(*k), done.clone())?;
                    r.insert(&key(*k), rec.as_bytes())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            });
        r.map_err(tx_error)?;
        for (k, _) in &fresh {
            mem.pending.remove(k);
            mem.leased.remove(k);
            mem.done.insert(*k);
        }
        let w = mem.workers.entry(worker.to_string()).or_default();
        w.done += fresh.len() as u64;
        w.last_seen_ms = now_ms();
        Ok(Ok((
            fresh.len() as u32,
            (results.len() - fresh.len()) as u32,
        )))
    }

    /// Gives `worker`'s leases on `keys` back.
    pub fn release(&self, worker: &str, keys: &[u64]) -> Result<u32> {
        let mut mem = self.mem();
        let mut n = 0;
        for &k in keys {
            if matches!(mem.leased.get(&k), Some((w, _)) if w == worker) {
                self.put_state(k, &ExState::Pending)?;
                mem.leased.remove(&k);
                mem.pending.insert(k);
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn counts(&self) -> Counts {
        let mem = self.mem();
        Counts {
            total: self.total,
            pending: mem.pending.len() as u64,
            leased: mem.leased.len() as u64,
            uncommitted: mem.done.len() as u64,
            committed: mem.committed,
            failed: mem.failed,
            parts: self.parts.len() as u64,
        }
    }

    pub fn workers(&self) -> Vec<(String, WorkerInfo, u32)> {
        let mem = self.mem();
        let mut out: Vec<_> = mem
            .workers
            .iter()
            .map(|(id, w)| {
                let leased = mem.leased.values().filter(|(x, _)| x == id).count() as u32;
                (id.clone(), w.clone(), leased)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every example has a committed (or failed) result.
    pub fn finished(&self) -> bool {
        let c = self.counts();
        c.committed + c.failed == c.total
    }

    /// Up to `max` done-but-uncommitted results: (key, record JSON).
    pub fn uncommitted(&self, max: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let keys: Vec<u64> = self.mem().done.iter().take(max).copied().collect();
        keys.into_iter()
            .map(|k| {
                let v = self
                    .results
                    .get(key(k))?
                    .ok_or_else(|| StateError::Corrupt {
                        dir: self.dir.display().to_string(),
                        what: format!("example {k} is done but has no result"),
                    })?;
                Ok((k, v.to_vec()))
            })
            .collect()
    }

    /// The name the next part file gets.
    pub fn next_part(&self) -> Result<u64> {
        Ok(self
            .meta
            .get("next_part")?
            .and_then(|v| unkey(&v))
            .unwrap_or(0))
    }

    /// Marks `keys` committed in part `name` (already renamed into place), in one transaction,
    /// and persists it.
    pub async fn commit_part(&self, name: &str, keys: &[u64]) -> Result<()> {
        let next = self.next_part()? + 1;
        let st = serde_json::to_vec(&ExState::Committed {
            part: name.to_string(),
        })
        .expect("serializes");
        let listed = serde_json::to_vec(keys).expect("serializes");
        let r: std::result::Result<(), TransactionError<()>> =
            (&self.states, &self.results, &self.parts, &self.meta).transaction(|(s, r, p, m)| {
                for k in keys {
                    s.insert(&key(*k), st.clone())?;
                    r.remove(&key(*k))?;
                }
                p.insert(name.as_bytes(), listed.clone())?;
                m.insert("next_part", &key(next))?;
                Ok::<_, ConflictableTransactionError<()>>(())
            });
        r.map_err(tx_error)?;
        {
            let mut mem = self.mem();
            for k in keys {
                mem.done.remove(k);
            }
            mem.committed += keys.len() as u64;
        }
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
