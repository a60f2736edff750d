//! drllm trainer: turns search records into a router checkpoint. [`data`] picks and tokenizes the
//! training examples from Parquet, [`cache`] computes each example's teacher-forced router inputs
//! once (f16 on disk, memory-mapped, reused across runs), and [`train`] fits the routers from the
//! cache with focal loss ([`loss`]), hand-written gradients ([`step`]), a fused AdamW and a warmup + cosine schedule, writing a checkpoint and metrics
//! after every epoch.

mod adamw;
pub mod cache;
pub mod data;
pub mod loss;
pub mod step;
pub mod train;

/// What can go wrong, naming the file or example concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    Input { path: String, reason: String },
    #[error("{0}")]
    Selection(String),
    #[error("record of example `{example}`: {reason}")]
    Record { example: String, reason: String },
    #[error("feature cache {path}: {reason}")]
    Cache { path: String, reason: String },
    #[error(transparent)]
    Core(#[from] drllm_core::Error),
    #[error(transparent)]
    Engine(#[from] drllm_engine::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Checkpoint(#[from] drllm_core::router::RouterError),
}

pub type Result<T> = std::result::Result<T, Error>;
