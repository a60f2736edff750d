//! `trainer export`: a router checkpoint in another project's format. `--format drllm` writes
//! the routers under the official Dr.LLM parameter names (`model.routers.{i}.linear1.weight`,
//! `.linear1.bias`, `.linear2.weight`, `.linear2.bias`: the official `RouterBlock` is ours,
//! `Linear(d, 128) → GELU(tanh) → Linear(128, 3)`, with the same class order and the same
//! `[out, in]` layout), loadable into the official modified model files with
//! `model.load_state_dict(safetensors.torch.load_file(F), strict=False)`. The number of windows
//! is in the file's metadata (`num_windows`); the official code keeps it in the attribute
//! `model.model.num_windows` (8), which must then be set to it.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use candle_core::DType;
use drllm_core::router::RouterConfig;

/// Formats `export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    /// safetensors with the official Dr.LLM router names.
    Drllm,
}

/// Weight types of the exported tensors.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Precision {
    /// bfloat16, as the official checkpoints hold them.
    Bf16,
    /// float32, bit-exact with the checkpoint.
    F32,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum)]
    format: Format,
    /// Router checkpoint folder (from `trainer train`).
    ckpt: PathBuf,
    /// The .safetensors file to write.
    #[arg(long)]
    out: PathBuf,
    /// Weight type of the file.
    #[arg(long, value_enum, default_value = "bf16")]
    dtype: Precision,
}

/// The official names of a layer's four weights, in the order `[w1, b1, w2, b2]`.
const OFFICIAL_NAMES: [&str; 4] = [
    "linear1.weight",
    "linear1.bias",
    "linear2.weight",
    "linear2.bias",
];

pub fn run(a: Args) -> anyhow::Result<()> {
    let Format::Drllm = a.format;
    let (cfg, routers) = RouterConfig::load(&a.ckpt)?;
    let dtype = match a.dtype {
        Precision::Bf16 => DType::BF16,
        Precision::F32 => DType::F32,
    };
    let named =
        routers.named_by(|i, kind| format!("model.routers.{i}.{}", OFFICIAL_NAMES[kind]))?;
    let named = named
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(dtype)?)))
        .collect::<candle_core::Result<HashMap<_, _>>>()?;
    let metadata = HashMap::from([
        (
            "format".to_string(),
            "drllm-routers-official-names".to_string(),
        ),
        ("num_windows".to_string(), cfg.windows.to_string()),
        ("num_layers".to_string(), cfg.header.num_layers.to_string()),
        (
            "hidden_size".to_string(),
            cfg.header.model_hidden_size.to_string(),
        ),
        ("base_model".to_string(), cfg.header.base_model.clone()),
        (
            "model_fingerprint".to_string(),
            cfg.header.model_fingerprint.clone(),
        ),
    ]);
    let bytes = safetensors::serialize(&named, Some(metadata))
        .with_context(|| format!("serializing {}", a.out.display()))?;
    drllm_records::atomic::write_atomically(&a.out, |tmp| std::fs::write(tmp, &bytes))?;
    eprintln!(
        "{}: {} routers ({} tensors, {:?}); set model.model.num_windows = {} in the official model",
        a.out.display(),
        cfg.header.num_layers,
        named.len(),
        a.dtype,
        cfg.windows
    );
    Ok(())
}
