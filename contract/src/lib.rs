//! drllm-contract: the types every drllm process and file agrees on. An [`Example`] is what the
//! coordinator leases and the search reads; a [`SearchRecord`] is what a search leaves behind,
//! with its column table ([`record::COLUMNS`]) and schema version; [`RunSettings`] is how every
//! worker of a job judges and searches. The protocol (drllm-proto), the Parquet files
//! (drllm-records), the job file and the command lines are all built from these definitions, so
//! they agree by construction. No arrow, parquet or model code: everything links this crate.

#![warn(missing_docs)]

pub mod example;
pub mod record;
pub mod settings;

pub use example::{AnswerKind, Example, InvalidExample};
pub use record::{InvalidRecord, SearchRecord, READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION};
pub use settings::{
    Expansion, PromptStyle, RewardMode, RewardSettings, RunSettings, SearchConfig, StopMode,
    Strategy, SuccessRule, DEFAULT_MODEL,
};
