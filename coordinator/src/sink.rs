//! Results into Parquet, exactly once: results wait in sled until a part file is written to a
//! temporary name, fsynced and renamed into place; only then are they marked committed, in one
//! sled transaction. Recovery after a crash removes stray temporary files and deletes parts that
//! were renamed but never committed (their results are still in sled and go into a later part).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drllm_core::search::write_parquet;

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
        let stray_tmp = name.starts_with("part-") && name.ends_with(".parquet.tmp");
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

/// Writes one part from up to `max` uncommitted results; returns how many it committed.
pub async fn flush_once(
    state: &Arc<State>,
    dir: &Path,
    max: usize,
    search_config: &str,
) -> Result<usize, StateError> {
    let mut batch = state.take_uncommitted(max);
    if batch.keys.is_empty() {
        return Ok(0);
    }
    let name = part_name(state.next_part()?);
    let path = dir.join(&name);
    let cfg = search_config.to_string();
    let records = std::mem::take(&mut batch.records);
    let n = records.len();
    tokio::task::spawn_blocking(move || write_parquet(&path, &records, &cfg))
        .await
        .map_err(|e| out_err(dir, format!("part writer panicked: {e}")))?
        .map_err(|e| out_err(dir, format!("writing {name}: {e}")))?;
    state.commit_part(&name, &batch).await?;
    tracing::info!(part = %name, records = n, "committed part");
    Ok(n)
}

/// Flushes whenever `part_size` results wait, every `every`, or as soon as no example is open any
/// more, until `stop` fires; then flushes everything left.
pub async fn run(
    state: Arc<State>,
    dir: PathBuf,
    part_size: usize,
    every: Duration,
    search_config: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), StateError> {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        crate::metrics::observe(&state);
        let c = state.counts();
        let waiting = c.uncommitted as usize;
        // Nothing more can come when no example is open: write the last results now.
        let last_ones = c.pending == 0 && c.leased == 0;
        if waiting >= part_size || (waiting > 0 && (last_ones || last.elapsed() >= every)) {
            flush_once(&state, &dir, part_size, &search_config).await?;
            last = tokio::time::Instant::now();
        }
    }
    while flush_once(&state, &dir, part_size, &search_config).await? > 0 {}
    Ok(())
}
