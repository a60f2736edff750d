//! drllm-core: the engine of drllm. It loads frozen Llama-family decoders (GGUF or Hugging Face
//! safetensors), tokenizes and applies chat templates, and runs token ids along any layer path —
//! skipping, executing or repeating each layer — with a KV cache slot per path position.

pub mod cache;
pub mod chat;
pub mod config;
pub mod error;
pub mod generate;
pub mod layer;
pub mod linear;
pub mod loader;
pub mod model;
pub mod path;
pub mod rope;
pub mod tokenizer;
mod weights;

pub use cache::{KvSlot, PathCache};
pub use config::{Arch, ModelConfig};
pub use error::{Error, Result};
pub use generate::{argmax, greedy, greedy_continue, Generation, StopReason};
pub use linear::KernelPolicy;
pub use loader::{load, resolve, LoadedModel, ModelLocation, DEFAULT_MODEL};
pub use model::{LoadOptions, Logits, Model};
pub use path::{LayerPath, PathError, PathSpec};
pub use tokenizer::TextTokenizer;
pub use candle_core::quantized::GgmlDType;
