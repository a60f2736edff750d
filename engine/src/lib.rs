//! drllm-engine: loads frozen Llama-family decoders (GGUF or Hugging Face safetensors), tokenizes
//! and applies chat templates, and runs token ids along any layer path — skipping, executing or
//! repeating each layer — with a KV cache slot per path position. Every pass goes through one
//! executor ([`Model::run_path`]). It knows nothing of tasks, searches or routers.

#![warn(missing_docs)]

pub mod batch;
pub mod cache;
pub mod chat;
pub mod config;
mod cpu_kernels;
pub mod device;
pub mod error;
pub mod exec;
pub mod generate;
mod group;
mod hf_config;
pub mod layer;
pub mod linear;
pub mod loader;
pub mod model;
pub mod path;
pub mod prefix;
pub mod reference;
pub mod rope;
mod st_file;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
pub mod tokenizer;
pub mod tokens;
mod weights;

pub use batch::{BatchSeq, SeqRoute};
pub use cache::{KvSlot, PathCache};
pub use candle_core::quantized::GgmlDType;
pub use config::{Arch, ModelConfig};
pub use device::{DeviceError, DeviceSpec};
pub use error::{Error, Result};
pub use exec::{Pass, Route, Rows};
pub use generate::{
    argmax, greedy, greedy_continue, greedy_fed, greedy_observed, Decoder, Generation, Step,
    StopReason,
};
pub use layer::Ops;
pub use linear::{batched_int8_available, KernelPolicy, Kernels, WeightBytes};
pub use loader::{load, resolve, LoadedModel, ModelLocation, DEFAULT_MODEL};
pub use model::{DTypeChoice, LoadOptions, Logits, MemoryBreakdown, Model};
pub use path::{LayerPath, PathError, PathSpec};
pub use prefix::{common_prefix, PrefixCache, PrefixHit, PrefixStats};
pub use tokenizer::TextTokenizer;
pub use tokens::{RowMeta, SkippedKv};

/// Fixes the CPU thread count for candle once, at start-up. candle asks for its thread count on
/// every matmul and, unless `RAYON_NUM_THREADS` is set, re-reads /proc/cpuinfo each time (about
/// 15% of decode time on a 135M model). Binaries call this first thing in `main`, before any thread
/// is spawned; an explicit `RAYON_NUM_THREADS` or `CANDLE_NUM_THREADS` is respected.
pub fn init_cpu_threads() -> usize {
    if let Some(n) = ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"]
        .iter()
        .find_map(|k| {
            std::env::var(k)
                .ok()?
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
        })
    {
        return n;
    }
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = logical.min(num_cpus::get_physical()).max(1);
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    n
}
