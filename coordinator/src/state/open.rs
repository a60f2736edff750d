//! Opening a state directory: creates a new job's state (every example pending), or checks that an
//! existing one belongs to this job and rebuilds the in-memory index from it, refusing anything
//! inconsistent with a message that says what is wrong.

use std::path::Path;

use super::writer::decode_sub;
use super::*;
use crate::job::JobSpec;

/// The job a state directory is opened for.
struct Job<'a> {
    spec: &'a JobSpec,
    file: &'a str,
    text: &'a str,
}

impl Job<'_> {
    /// Checks that an existing state belongs to this job and this release's format, or writes a
    /// new one: every example, the job, and last the job's hash (a state with a hash is
    /// complete).
    fn check_or_init(
        &self,
        db: &sled::Db,
        meta: &sled::Tree,
        examples: &sled::Tree,
        d: &str,
    ) -> Result<()> {
        let corrupt = |what: String| StateError::Corrupt {
            dir: d.to_string(),
            what,
        };
        let hash = self.spec.hash();
        if let Some(stored) = meta.get("job_hash")? {
            let stored = String::from_utf8_lossy(&stored).to_string();
            if stored != hash {
                return Err(StateError::OtherJob {
                    dir: d.to_string(),
                    stored,
                    given: hash,
                });
            }
            let format = meta.get("format")?;
            if format.as_deref() != Some(FORMAT.as_bytes()) {
                return Err(corrupt(format!(
                    "it was written by another drllm release (state format {}, this one reads {FORMAT}): finish the job with the release that started it, or start over in a new state directory",
                    format.map_or("1".into(), |f| String::from_utf8_lossy(&f).to_string())
                )));
            }
            return Ok(());
        }
        if !examples.is_empty() {
            return Err(corrupt("examples without a job".into()));
        }
        let exs = self
            .spec
            .sourced_examples(self.file)
            .map_err(|e| StateError::Dataset(e.to_string()))?;
        let (mut batch, mut origins) = (sled::Batch::default(), sled::Batch::default());
        for (i, (ex, origin)) in exs.iter().enumerate() {
            batch.insert(&key(i as u64), v1::Example::from(ex).encode_to_vec());
            origins.insert(&key(i as u64), origin.as_bytes());
        }
        examples.apply_batch(batch)?;
        db.open_tree("origins")?.apply_batch(origins)?;
        meta.insert("format", FORMAT)?;
        meta.insert("job", self.text.as_bytes())?;
        meta.insert(
            "job_spec",
            serde_json::to_vec(self.spec).expect("serializes"),
        )?;
        meta.insert("next_part", &key(0))?;
        // Written last: a state with a job hash is complete.
        meta.insert("job_hash", hash.as_bytes())?;
        db.flush()?;
        Ok(())
    }
}

impl State {
    /// Opens (or creates) the state of `spec` in `dir`; a state of another job is refused.
    /// `job_text` (the job file) is saved alongside for reference. The state writer reports a
    /// failure to `faults` (fatal: see [`crate::fault`]).
    pub fn open(
        dir: &Path,
        spec: &JobSpec,
        job_file: &str,
        job_text: &str,
        faults: Arc<Faults>,
    ) -> Result<Self> {
        let d = dir.display().to_string();
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(200))
            .open()
            .map_err(|source| StateError::Open {
                dir: d.clone(),
                source,
            })?;
        let meta = db.open_tree("meta")?;
        let examples = db.open_tree("examples")?;
        let job = Job {
            spec,
            file: job_file,
            text: job_text,
        };
        job.check_or_init(&db, &meta, &examples, &d)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let state = Self {
            dir: dir.to_path_buf(),
            meta,
            states: db.open_tree("state")?,
            results: db.open_tree("results")?,
            parts: db.open_tree("parts")?,
            workers: db.open_tree("workers")?,
            origins: db.open_tree("origins")?,
            total: examples.len() as u64,
            max_message: spec.max_message_bytes(),
            examples,
            mem: Arc::default(),
            changes: Arc::new(tokio::sync::watch::Sender::new(())),
            tx,
            faults,
        };
        let mut mem = state.load()?;
        let refused = state.refuse_oversized(&mut mem)?;
        if refused > 0 {
            tracing::warn!(
                examples = refused,
                "examples too large for the message limit fail alone (`coordinator status` and the log above name each with its reason)"
            );
        }
        mem.fingerprint = match state.meta.get("fingerprint")? {
            Some(f) => Some(String::from_utf8_lossy(&f).to_string()),
            None => (!spec.model_fingerprint.is_empty()).then(|| spec.model_fingerprint.clone()),
        };
        *state.mem() = mem;
        let writer = writer::Writer {
            meta: state.meta.clone(),
            examples: state.examples.clone(),
            states: state.states.clone(),
            results: state.results.clone(),
            workers: state.workers.clone(),
            db,
            changes: state.changes.clone(),
            mem: state.mem.clone(),
            total: state.total,
            faults: state.faults.clone(),
            failed: None,
        };
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StateError::Flush(format!("cannot start the state writer: {e}")))?;
        Ok(state)
    }

    /// Rebuilds the in-memory index from the trees (see the module doc for the precedence).
    fn load(&self) -> Result<Mem> {
        let mut mem = Mem::default();
        // Whether an example's state is settled by what was read so far.
        let mut settled = vec![false; self.total as usize];
        let in_job = |k: u64, what: &str| {
            if k < self.total {
                Ok(k as usize)
            } else {
                Err(self.corrupt(format!(
                    "{what} names example {k}, but the job has {}",
                    self.total
                )))
            }
        };
        for item in self.parts.iter() {
            let (name, v) = item?;
            let name = String::from_utf8_lossy(&name).to_string();
            let keys: Vec<u64> = serde_json::from_slice(&v)
                .map_err(|e| self.corrupt(format!("part {name}: {e}")))?;
            for k in keys {
                let i = in_job(k, &format!("part {name}"))?;
                if std::mem::replace(&mut settled[i], true) {
                    return Err(self.corrupt(format!("example {k} is in two parts")));
                }
                mem.committed += 1;
            }
            mem.parts += 1;
        }
        for item in self.results.iter() {
            let (id, v) = item?;
            let id =
                unkey(&id).ok_or_else(|| self.corrupt("a result key is not 8 bytes".into()))?;
            let what = format!("stored submission {id}");
            let items = decode_sub(&v).map_err(|e| self.corrupt(format!("{what}: {e}")))?;
            let mut recs = Vec::with_capacity(items.len());
            for (k, bytes) in items {
                let i = in_job(k, &what)?;
                if std::mem::replace(&mut settled[i], true) {
                    return Err(self.corrupt(format!(
                        "example {k} has a stored result and another one or a part"
                    )));
                }
                let r = v1::SearchRecord::decode(bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|m| decode_record(&m).map_err(|e| e.to_string()))
                    .map_err(|e| self.corrupt(format!("{what}, example {k}: {e}")))?;
                recs.push((k, r));
            }
            mem.uncommitted += recs.len() as u64;
            mem.subs.insert(id, recs);
            mem.next_sub = id + 1;
        }
        for item in self.workers.iter() {
            let (id, v) = item?;
            let id = String::from_utf8_lossy(&id).to_string();
            let w: WorkerInfo = serde_json::from_slice(&v)
                .map_err(|e| self.corrupt(format!("worker `{id}`: {e}")))?;
            mem.workers.insert(id, w);
        }
        let mut stale = Vec::new();
        for item in self.states.iter() {
            let (k, v) = item?;
            let k = unkey(&k).ok_or_else(|| self.corrupt("a state key is not 8 bytes".into()))?;
            let i = in_job(k, "the state tree")?;
            let st: Stored = serde_json::from_slice(&v)
                .map_err(|e| self.corrupt(format!("state of example {k}: {e}")))?;
            if std::mem::replace(&mut settled[i], true) {
                stale.push(k); // a lease that a result or part superseded
                continue;
            }

            match st {
                Stored::Leased {
                    worker,
                    deadline_ms,
                } => mem.set_lease(k, &worker, deadline_ms),
                Stored::Failed { reason } => {
                    mem.failures.insert(k, reason);
                }
                Stored::TooLarge { .. } => {
                    // Checked again under this open's limit (refuse_oversized).
                    settled[i] = false;
                    stale.push(k);
                }
            }
        }
        for k in stale {
            self.states.remove(key(k))?;
        }
        for (i, s) in settled.iter().enumerate() {
            if !s {
                mem.pending.insert(i as u64);
            }
        }
        Ok(mem)
    }
}
