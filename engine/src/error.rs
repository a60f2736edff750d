//! Typed errors of the engine: every failure a caller can act on has its own variant, naming the
//! file, tensor or field that is wrong.

use std::path::PathBuf;

use crate::path::PathError;

/// Result alias of the engine.
pub type Result<T> = std::result::Result<T, Error>;

/// Why loading, tokenizing or running a model failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file or folder could not be written (tokenizer export).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A GGUF file that cannot be parsed, lacks a metadata key the config needs, or holds a
    /// tensor that cannot be dequantized.
    #[error("{path} is not a valid GGUF file: {reason}")]
    Gguf {
        /// The GGUF file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A `config.json`, `tokenizer_config.json`, reference file, safetensors file or index that
    /// cannot be parsed, or a model config whose fields do not fit together.
    #[error("{path}: invalid model config: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A `model_type` (or GGUF `general.architecture`) other than the families of
    /// [`crate::Arch`]; holds the name as given.
    #[error(
        "unsupported architecture `{0}`: drllm runs llama (incl. SmolLM2, Llama 3), qwen2 and qwen3"
    )]
    UnknownArchitecture(String),
    /// A tensor the config requires is not in the weight files.
    #[error("{source_name}: tensor `{tensor}` is missing")]
    MissingTensor {
        /// The weight file or folder.
        source_name: String,
        /// The tensor's name in that source.
        tensor: String,
    },
    /// A tensor's shape differs from the one the config implies.
    #[error(
        "{source_name}: tensor `{tensor}` has shape {actual:?}, the config implies {expected:?}"
    )]
    ShapeMismatch {
        /// The weight file or folder.
        source_name: String,
        /// The tensor's name in that source.
        tensor: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        actual: Vec<usize>,
    },
    /// An invalid layer path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A layer path built for a model of another depth: its indices may fit this model, but the
    /// path (and its per-layer counts) means something else here.
    #[error("the layer path was built for a model of {path_layers} layers, but this model has {model_layers}")]
    PathDepthMismatch {
        /// The depth the path was built for ([`crate::LayerPath::num_layers`]).
        path_layers: usize,
        /// The model's number of layers.
        model_layers: usize,
    },
    /// The device cannot be named or opened.
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    /// A pass was asked to run zero tokens.
    #[error("the prompt is empty: at least one token is needed")]
    EmptyPrompt,
    /// The positions a pass needs exceed the model's `max_position_embeddings`.
    #[error(
        "{needed} positions are needed (start {start} + {tokens} tokens) but the model's context is {max}"
    )]
    ContextOverflow {
        /// Position of the pass's first token.
        start: usize,
        /// Tokens in the pass.
        tokens: usize,
        /// `start + tokens`.
        needed: usize,
        /// The model's context length.
        max: usize,
    },
    /// A cached pass would leave a hole: it starts after the cache's last position (or slots
    /// assembled into a cache do not all hold the same number of positions).
    #[error("cache holds {cached} positions but the call starts at position {start}")]
    CacheGap {
        /// Positions the cache holds.
        cached: usize,
        /// Position the call starts at.
        start: usize,
    },
    /// A cache built for one layer path was used with another (or with a routed pass).
    #[error("cache was built for path {cache_path} but the call runs path {call_path}")]
    CachePathMismatch {
        /// The cache's path.
        cache_path: String,
        /// The call's path.
        call_path: String,
    },
    /// A token route's gate gave a flag count other than the pass's row count.
    #[error("the token gate of layer {layer} gave {flags} flags for {rows} rows")]
    GateRows {
        /// The layer.
        layer: usize,
        /// Flags given.
        flags: usize,
        /// Rows of the pass.
        rows: usize,
    },
    /// A token id not below the vocabulary size.
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// A model spec that names no usable model files.
    #[error("model `{spec}` not found: {hint}")]
    ModelNotFound {
        /// The spec as given.
        spec: String,
        /// What was looked for and how to fix it.
        hint: String,
    },
    /// Loading, building, saving or running the tokenizer failed; the message says which.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template that cannot be parsed or rendered, or a model without one.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// Downloading a model from the Hugging Face hub failed.
    #[error("download from the Hugging Face hub failed for `{repo}`: {reason}")]
    Hub {
        /// The hub model id (`org/name`).
        repo: String,
        /// The hub client's error.
        reason: String,
    },
    /// A tensor operation failed.
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

    pub(crate) fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Write {
            path: path.into(),
            source,
        }
    }
}
