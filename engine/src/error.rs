//! Typed errors of the engine: every failure a caller can act on has its own variant, naming the
//! file, tensor or field that is wrong.

use std::path::PathBuf;

use crate::path::PathError;

/// Result alias of the engine.
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid GGUF file: {reason}")]
    Gguf { path: PathBuf, reason: String },
    #[error("{path}: invalid model config: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(
        "unsupported architecture `{0}`: drllm runs llama (incl. SmolLM2, Llama 3), qwen2 and qwen3"
    )]
    UnknownArchitecture(String),
    #[error("{source_name}: tensor `{tensor}` is missing")]
    MissingTensor { source_name: String, tensor: String },
    #[error(
        "{source_name}: tensor `{tensor}` has shape {actual:?}, the config implies {expected:?}"
    )]
    ShapeMismatch {
        source_name: String,
        tensor: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error("the prompt is empty: at least one token is needed")]
    EmptyPrompt,
    #[error(
        "{needed} positions are needed (start {start} + {tokens} tokens) but the model's context is {max}"
    )]
    ContextOverflow {
        start: usize,
        tokens: usize,
        needed: usize,
        max: usize,
    },
    #[error("cache holds {cached} positions but the call starts at position {start}")]
    CacheGap { cached: usize, start: usize },
    #[error("cache was built for path {cache_path} but the call runs path {call_path}")]
    CachePathMismatch {
        cache_path: String,
        call_path: String,
    },
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("model `{spec}` not found: {hint}")]
    ModelNotFound { spec: String, hint: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("download from the Hugging Face hub failed for `{repo}`: {reason}")]
    Hub { repo: String, reason: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
