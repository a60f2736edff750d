//! drllm-records: search records on disk. One `SearchRecord` (drllm-contract) per searched
//! example, written as Parquet parts ([`write_parquet`], atomically through [`atomic`]) with the
//! schema version and the run settings in the file metadata, and read back by any release that
//! knows the version ([`read_records`]); both walk the contract's column table through
//! [`columns`]. Also the official Dr.LLM format ([`official`]). No model code.

#![warn(missing_docs)]

use std::path::PathBuf;

pub mod atomic;
mod columns;
pub mod official;
pub mod read;
mod write;

pub use read::{read_records, Summary};
pub use write::write_parquet;

/// Reading or writing records failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file could not be opened or listed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Records that cannot be built or written; the message names the file.
    #[error("writing output: {0}")]
    Output(String),
    /// A file that is not a readable records file; the message names the file and what is wrong.
    #[error("reading records: {0}")]
    Invalid(String),
}

impl RecordError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RecordError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, RecordError>;
