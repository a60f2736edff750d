//! Results into Parquet, exactly once: results wait in sled until a part file is written
//! atomically ([`drllm_records::atomic`]); only then are they marked committed, in one sled
//! transaction. Recovery after a crash removes stray temporary files and deletes parts that were
//! renamed but never committed (their results are still in sled and go into a later part).
//!
//! A part that cannot be written (a full disk, a folder gone) is a problem, not a crash: its
//! results go back to the queue, the error is reported at once ([`crate::fault`]) and the write
//! is retried with backoff; it clears when a write succeeds. Failing for longer than the
//! [`Retry`] limit is fatal: the sink stops and the supervisor drains and exits non-zero. A failed
//! commit in sled is fatal at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drllm_records::write_parquet;
use tokio::time::Instant;

use crate::state::{State, StateError};

fn out_err(dir: &Path, what: String) -> StateError {
    StateError::Output {
        dir: dir.display().to_string(),
        what,
    }
}

/// File name of part `n`.
pub fn part_name(n: u64) -> String {
    format!("part-{n:06}.parquet")
}

/// Makes the output directory agree with the committed parts; returns what it removed.
pub fn recover(state: &State, dir: &Path) -> Result<Vec<PathBuf>, StateError> {
    std::fs::create_dir_all(dir).map_err(|e| out_err(dir, format!("cannot create it: {e}")))?;
    let committed = state.committed_parts()?;
    let mut removed = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| out_err(dir, format!("cannot list it: {e}")))?;
    for entry in entries {
        let path = entry
            .map_err(|e| out_err(dir, format!("cannot list it: {e}")))?
            .path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let stray_tmp = name.starts_with("part-") && name.ends_with(".tmp");
        let uncommitted =
            name.starts_with("part-") && name.ends_with(".parquet") && !committed.contains(&name);
        if stray_tmp || uncommitted {
            std::fs::remove_file(&path)
                .map_err(|e| out_err(dir, format!("cannot remove {name}: {e}")))?;
            removed.push(path);
        }
    }
    for name in &committed {
        if !dir.join(name).is_file() {
            return Err(out_err(
                dir,
                format!("{name} is recorded as committed but missing: restore it from a backup"),
            ));
        }
    }
    Ok(removed)
}

/// Why a flush did not commit.
#[derive(Debug)]
pub enum FlushError {
    /// The part file could not be written; its results are queued again. Worth retrying.
    Write(String),
    /// Not worth retrying: the state could not record the commit, or the part writer panicked
    /// (its batch is gone from memory; it is still in sled for a restart).
    Fatal(StateError),
}

/// Writes one part from up to `max` uncommitted results; returns how many it committed.
pub async fn flush_once(state: &Arc<State>, dir: &Path, max: usize) -> Result<usize, FlushError> {
    let batch = state.take_uncommitted(max);
    if batch.keys.is_empty() {
        return Ok(0);
    }
    let name = part_name(state.next_part().map_err(FlushError::Fatal)?);
    let path = dir.join(&name);
    let (batch, written) = tokio::task::spawn_blocking(move || {
        let r = write_parquet(&path, &batch.records);
        (batch, r)
    })
    .await
    .map_err(|e| FlushError::Fatal(out_err(dir, format!("the part writer panicked: {e}"))))?;
    if let Err(e) = written {
        state.queue_again(batch);
        return Err(FlushError::Write(format!("writing {name}: {e}")));
    }
    state
        .commit_part(&name, &batch)
        .await
        .map_err(FlushError::Fatal)?;
    tracing::info!(part = %name, records = batch.keys.len(), "committed part");
    Ok(batch.keys.len())
}

/// How the sink retries a part it cannot write.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// The first wait; it doubles after each failure, up to `max_wait`.
    pub first_wait: Duration,
    pub max_wait: Duration,
    /// Failing for longer than this is fatal.
    pub give_up_after: Duration,
}

/// When the sink writes parts, and how it retries.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub dir: PathBuf,
    pub part_size: usize,
    /// Write what waits at least this often.
    pub every: Duration,
    pub retry: Retry,
}

/// A run of failed writes.
struct Failing {
    since: Instant,
    attempts: u32,
    next_try: Instant,
}

/// Flushes whenever `part_size` results wait, every `every`, or as soon as no example is open any
/// more, until `stop` fires; then flushes everything left. Write failures are retried as the
/// module doc says; the error returned is the one-line reason to stop.
pub async fn run(
    state: Arc<State>,
    cfg: SinkConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last = Instant::now();
    let mut failing: Option<Failing> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        crate::metrics::observe(&state);
        if failing
            .as_ref()
            .is_some_and(|f| Instant::now() < f.next_try)
        {
            continue;
        }
        let c = state.counts();
        let waiting = c.uncommitted as usize;
        // Nothing more can come when no example is open: write the last results now.
        let last_ones = c.pending == 0 && c.leased == 0;
        let due = waiting >= cfg.part_size
            || (waiting > 0 && (last_ones || last.elapsed() >= cfg.every || failing.is_some()));
        if due {
            let r = flush_once(&state, &cfg.dir, cfg.part_size).await;
            failing = settle(&state, &cfg.retry, failing, r)?;
            last = Instant::now();
        }
    }
    // Stopping: one attempt at everything left (a failure leaves it in sled for the restart).
    loop {
        match flush_once(&state, &cfg.dir, cfg.part_size).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(FlushError::Write(e)) => {
                let left = state.counts().uncommitted;
                return Err(format!(
                    "{e}; {left} results stay in the state and are written when the coordinator is restarted with the same --state"
                ));
            }
            Err(FlushError::Fatal(e)) => return Err(e.to_string()),
        }
    }
}

/// The sink's state after a flush: recovered, still failing (reported, next try scheduled), or
/// the reason to stop.
fn settle(
    state: &State,
    retry: &Retry,
    failing: Option<Failing>,
    flushed: Result<usize, FlushError>,
) -> Result<Option<Failing>, String> {
    let faults = state.faults();
    let e = match flushed {
        Ok(_) => {
            if failing.is_some() {
                faults.recovered("sink");
            }
            return Ok(None);
        }
        Err(FlushError::Fatal(e)) => {
            let reason = e.to_string();
            faults.fatal("sink", reason.clone());
            return Err(reason);
        }
        Err(FlushError::Write(e)) => e,
    };
    let now = Instant::now();
    let mut f = failing.unwrap_or(Failing {
        since: now,
        attempts: 0,
        next_try: now,
    });
    f.attempts += 1;
    metrics::counter!("drllm_part_write_failures_total").increment(1);
    let failing_for = now - f.since;
    let waiting = state.counts().uncommitted;
    if failing_for >= retry.give_up_after {
        let reason = format!(
            "{e}; gave up after {} attempts in {:.0} s ({waiting} results stay in the state: fix the cause and restart with the same --state)",
            f.attempts,
            failing_for.as_secs_f64()
        );
        faults.fatal("sink", reason.clone());
        return Err(reason);
    }
    let wait = retry
        .first_wait
        .saturating_mul(1 << (f.attempts - 1).min(16))
        .min(retry.max_wait);
    f.next_try = now + wait;
    faults.failing(
        "sink",
        format!(
            "{e} (attempt {}, failing for {:.0} s, {waiting} results waiting; next try in {:.0} s, giving up after {:.0} s)",
            f.attempts,
            failing_for.as_secs_f64(),
            wait.as_secs_f64(),
            retry.give_up_after.as_secs_f64()
        ),
    );
    Ok(Some(f))
}
