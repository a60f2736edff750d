//! Naming failed examples: each with its id (shortened: an id can be megabytes long) and its
//! reason, for `status`, the log, and `summarize --state` (which reads a stopped job's state
//! directory without its job file).

use std::collections::BTreeMap;

use drllm_proto::v1;
use prost::Message;

use super::{key, unkey, Result, StateError, Stored};

/// The id of the example stored under `k`; `None` when it is missing or does not decode.
pub(super) fn example_id(examples: &sled::Tree, k: u64) -> Option<String> {
    (examples.get(key(k)).ok().flatten())
        .and_then(|b| v1::Example::decode(b.as_ref()).ok())
        .map(|e| e.id)
}

/// (key, example id, reason) for each failure; the id reads `#key` if the example is unreadable,
/// and is shortened ([`short_id`]): an id can be megabytes long.
pub(super) fn with_ids(
    examples: &sled::Tree,
    failures: BTreeMap<u64, String>,
) -> Vec<(u64, String, String)> {
    failures
        .into_iter()
        .map(|(k, r)| (k, display_id(examples, k), r))
        .collect()
}

/// The id of example `k` for messages and listings: shortened, `#key` when unreadable.
pub(super) fn display_id(examples: &sled::Tree, k: u64) -> String {
    example_id(examples, k).map_or_else(|| format!("#{k}"), |id| short_id(&id))
}

/// `id` as it is, or its first 100 characters and how many bytes it has when it is longer.
pub fn short_id(id: &str) -> String {
    match id.char_indices().nth(100) {
        None => id.to_string(),
        Some((at, _)) => format!("{}… ({} bytes)", &id[..at], id.len()),
    }
}

/// The failed examples (key, example id, reason) of a job's state directory, read without the
/// job file once its coordinator has stopped (a serving coordinator holds the directory).
pub fn read_failures(dir: &std::path::Path) -> Result<Vec<(u64, String, String)>> {
    let d = dir.display().to_string();
    if !dir.join("conf").is_file() {
        return Err(StateError::Corrupt {
            dir: d,
            what: "not a state directory (no sled `conf` file)".into(),
        });
    }
    let db = sled::Config::new()
        .path(dir)
        .open()
        .map_err(|source| StateError::Open {
            dir: d.clone(),
            source,
        })?;
    let (states, examples) = (db.open_tree("state")?, db.open_tree("examples")?);
    let mut failures = BTreeMap::new();
    for item in states.iter() {
        let (k, v) = item?;
        let bad = |what: String| StateError::Corrupt {
            dir: d.clone(),
            what,
        };
        let k = unkey(&k).ok_or_else(|| bad("a state key is not 8 bytes".into()))?;
        match serde_json::from_slice(&v).map_err(|e| bad(format!("state of example {k}: {e}")))? {
            Stored::Failed { reason } | Stored::TooLarge { reason } => failures.insert(k, reason),
            Stored::Leased { .. } => None,
        };
    }
    Ok(with_ids(&examples, failures))
}
