//! Files that appear whole or not at all. Records, router checkpoints, feature-cache chunks and
//! pruning curves are all written the same way: to a temporary name next to the target (carrying
//! the process id, so two processes never share one), flushed to disk, renamed over the target,
//! and the folder flushed so the rename itself survives a crash. A failed write removes its
//! temporary file. Readers therefore see the old file or the new one, never a torn one.

use std::fs::File;
use std::path::{Path, PathBuf};

/// A write that did not complete; the target is unchanged.
#[derive(Debug, thiserror::Error)]
#[error("{}: {step}: {reason}", path.display())]
pub struct AtomicWriteError {
    /// The file the step failed on (the temporary file, the target or its folder).
    pub path: PathBuf,
    /// What was being done: `writing`, `flushing`, `renaming into place`, `flushing the folder`.
    pub step: &'static str,
    /// The underlying error's message.
    pub reason: String,
}

/// The temporary name `path` is written under: `<name>.<pid>.tmp` in the same folder.
pub fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes `path` atomically: `write` fills the temporary file it is given (create it, write it),
/// then this flushes it, renames it over `path` and flushes the folder.
pub fn write_atomically<E: std::fmt::Display>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), AtomicWriteError> {
    let tmp = temporary_name(path);
    let fail = |p: &Path, step, reason: String| AtomicWriteError {
        path: p.to_path_buf(),
        step,
        reason,
    };
    let result = write(&tmp)
        .map_err(|e| fail(&tmp, "writing", e.to_string()))
        .and_then(|()| {
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| fail(&tmp, "flushing", e.to_string()))
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .map_err(|e| fail(path, "renaming into place", e.to_string()))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(dir, "flushing the folder", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_and_a_failed_one_leaves_it_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.json");
        write_atomically(&target, |tmp| std::fs::write(tmp, "one")).unwrap();
        write_atomically(&target, |tmp| std::fs::write(tmp, "two")).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "two");
        let e = write_atomically(&target, |tmp| {
            std::fs::write(tmp, "half").unwrap();
            Err("disk full")
        })
        .unwrap_err();
        assert_eq!(e.step, "writing");
        assert!(e.to_string().ends_with(": writing: disk full"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "the temporary file is removed");
        // A target in a folder that is not there: the write step fails, nothing is created.
        let e = write_atomically(&dir.path().join("no/such.json"), |tmp| {
            std::fs::write(tmp, "x")
        })
        .unwrap_err();
        assert_eq!(e.step, "writing");
    }
}
