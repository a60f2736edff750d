//! drllm trainer: turns search records into a router checkpoint. [`data`] picks and tokenizes the
//! training examples from Parquet, [`cache`] computes each example's teacher-forced router inputs
//! once (f16 on disk, memory-mapped, reused across runs), and [`train`] fits the routers from the
//! cache with focal loss ([`loss`]), hand-written gradients ([`step`]), a fused AdamW and a warmup + cosine schedule, writing a checkpoint and metrics
//! after every epoch.

#![warn(missing_docs)]

mod adamw;
pub mod data;
pub mod diagnose;
pub mod feature_cache;
pub mod gelu_grad;
pub mod loss;
pub mod step;
pub mod tokens;
pub mod tokens_train;
pub mod train;

/// What can go wrong, naming the file or example concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A records file or an output file that cannot be read or written.
    #[error("{path}: {reason}")]
    Input {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Nothing (or nothing usable) is left to train on; the message says why and what to do.
    #[error("{0}")]
    Selection(String),
    /// A record that cannot become a training example.
    #[error("record of example `{example}`: {reason}")]
    Record {
        /// The record's example id.
        example: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The feature cache cannot be read or written.
    #[error("feature cache {path}: {reason}")]
    Cache {
        /// The cache folder or chunk.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Tokenizing or judging failed.
    #[error(transparent)]
    Core(#[from] drllm_core::Error),
    /// The model failed.
    #[error(transparent)]
    Engine(#[from] drllm_engine::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The router checkpoint is missing, invalid or for another model.
    #[error(transparent)]
    Checkpoint(#[from] drllm_core::router::RouterError),
}

/// Result alias of the trainer.
pub type Result<T> = std::result::Result<T, Error>;
