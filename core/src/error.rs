//! Errors of the rewards, the search and the routers: the engine's ([`drllm_engine::Error`]) and
//! what running tasks adds (a dataset, a record, an example the reward cannot judge, a router
//! checkpoint).

use drllm_engine::PathError;

/// Result alias of drllm-core.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a reward, a search or a router failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model failed (weights, tokenizer, path, tensors).
    #[error(transparent)]
    Engine(#[from] drllm_engine::Error),
    /// Reading or writing search records failed.
    #[error(transparent)]
    Records(#[from] drllm_records::RecordError),
    /// The example cannot be judged under the asked reward.
    #[error("example `{id}`: {reason}")]
    Reward {
        /// The example's id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Recorded settings this model cannot reproduce (the message says why and what to do).
    #[error("cannot reproduce the recorded settings: {0}")]
    Unreproducible(String),
    /// A dataset failed to load.
    #[error(transparent)]
    Data(#[from] drllm_tasks::DataError),
    /// A router checkpoint is missing, invalid or for another model.
    #[error(transparent)]
    Router(#[from] crate::router::RouterError),
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Engine(e.into())
    }
}

impl From<PathError> for Error {
    fn from(e: PathError) -> Self {
        Error::Engine(e.into())
    }
}
