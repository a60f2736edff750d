//! Command-line pieces shared by the drllm binaries (feature `cli`): how a user names a model and
//! how its weights are held.

use anyhow::Context;

use drllm_engine::{GgmlDType, LoadOptions, LoadedModel};

/// Start-up shared by the binaries: candle's thread count pinned once, logs to stderr
/// (`RUST_LOG` filters, warnings by default).
pub fn init() {
    init_with(false, "warn");
}

/// Like [`init`], with JSON log lines (for log collectors) and another default level.
pub fn init_with(json: bool, default_filter: &str) {
    drllm_engine::init_cpu_threads();
    drllm_log::init(json, default_filter);
}

/// Options shared by every command that loads a model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: `smollm2-135m-instruct` (the default, fetched by scripts/fetch-model.sh), a .gguf
    /// file, a Hugging Face model folder, or a Hugging Face id (org/name, needs network).
    #[arg(long, default_value = drllm_engine::DEFAULT_MODEL)]
    pub model: String,
    /// Quantized copy of the weights used for single-token (decode) matmuls: q8_0, q4_0, q4k,
    /// or none (the lean mode: no copy, decode computes with the dense weights).
    #[arg(long, default_value = "q8_0", value_parser = parse_decode_dtype)]
    pub decode_weights: DecodeWeights,
    /// How the matmuls compute: auto (CUDA: bf16; CPU: int8 from q8_0 weights where the VNNI
    /// kernel serves a matrix, the fastest measured, else f32), f32, bf16 or f16. Weights stay
    /// in their own precision on the CPU under f32 and are converted to the dtype otherwise;
    /// norms, softmax, RoPE and the head's log-softmax run in f32.
    #[arg(long, default_value = "auto")]
    pub dtype: drllm_engine::DTypeChoice,
    /// Exact float32 arithmetic everywhere (dense weights, no activation quantization):
    /// slower, for parity checks against reference implementations.
    #[arg(long)]
    pub exact: bool,
    /// Where the model runs: cpu, cuda or cuda:N (CUDA needs a binary built with
    /// `--features cuda`, see deploy/cuda/build.sh).
    #[arg(long, default_value = "cpu", env = "DRLLM_DEVICE")]
    pub device: drllm_engine::DeviceSpec,
}

impl ModelArgs {
    /// Opens the device and loads the model and tokenizer as the flags ask (`--exact` overrides
    /// `--decode-weights`).
    pub fn load(&self) -> anyhow::Result<LoadedModel> {
        let device = self.device.open()?;
        let opts = if self.exact {
            LoadOptions::exact()
        } else {
            LoadOptions {
                dtype: self.dtype,
                decode_dtype: self.decode_weights.0,
                ..Default::default()
            }
        };
        drllm_engine::load(&self.model, &opts.on(device))
            .with_context(|| format!("loading model `{}` on {}", self.model, self.device))
    }
}

/// The `--decode-weights` format; `None` keeps f32 weights only.
#[derive(Debug, Clone, Copy)]
pub struct DecodeWeights(pub Option<GgmlDType>);

fn parse_decode_dtype(s: &str) -> Result<DecodeWeights, String> {
    use GgmlDType as D;
    Ok(DecodeWeights(Some(match s.to_ascii_lowercase().as_str() {
        "none" | "f32" => return Ok(DecodeWeights(None)),
        "q8_0" => D::Q8_0,
        "q4_0" => D::Q4_0,
        "q4_1" => D::Q4_1,
        "q4k" | "q4_k" => D::Q4K,
        "q6k" | "q6_k" => D::Q6K,
        "f16" => D::F16,
        other => {
            return Err(format!(
                "unknown weight format `{other}` (q8_0, q4_0, q4_1, q4k, q6k, f16, none)"
            ))
        }
    })))
}

/// The prefix cache of the commands that score a dataset (`evaluator run`, `baseline`).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct PrefixCacheArgs {
    /// Memory for the exact prefix cache, in MiB (0: none): a generating example's prompt starts
    /// from the keys and values of the longest start an earlier prompt left along the same route
    /// (the chat template's system turn, a few-shot preamble); no outcome changes. Static paths
    /// and token routers use it; per-input routers decide from the whole prompt and bypass it,
    /// and choice-loglik keeps its fused pass per question.
    #[arg(long, default_value_t = 256)]
    pub prefix_cache_mib: usize,
}

impl PrefixCacheArgs {
    /// The cache these flags ask for.
    pub fn cache(&self) -> crate::tasks::PromptCache {
        crate::tasks::PromptCache::new(self.prefix_cache_mib.saturating_mul(1 << 20))
    }
}

/// The prefix cache's counters, for a command's summary.
pub fn prefix_summary(cache: &crate::tasks::PromptCache) -> serde_json::Value {
    let s = cache.stats();
    serde_json::json!({
        "hits": s.hits, "misses": s.misses, "reused_tokens": s.reused_tokens,
        "evictions": s.evictions, "entries": s.entries, "bytes": s.bytes,
    })
}

/// Options shared by every command that evaluates examples of a dataset.
#[derive(clap::Args, Debug, Clone)]
pub struct TaskArgs {
    /// arc_easy, arc_challenge, dart, dart-1 … dart-5, or a .jsonl file (see README).
    #[arg(long)]
    pub dataset: drllm_tasks::DatasetSpec,
    /// Only the first N examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// choice-loglik (multiple choice only) or generate (greedy + the paper's grader).
    #[arg(long, default_value = "choice-loglik")]
    pub reward: drllm_contract::RewardMode,
    /// Prompt style for generate: instruct (chat template) or base; default from the model.
    #[arg(long)]
    pub style: Option<drllm_contract::PromptStyle>,
    /// Generate every token up to the budget even when the verdict is already fixed.
    #[arg(long)]
    pub no_early_stop: bool,
    /// Skip (and count) invalid dataset lines instead of stopping.
    #[arg(long)]
    pub skip_invalid: bool,
}

impl TaskArgs {
    /// The examples of `split`, with skipped lines reported on stderr.
    pub fn examples(&self, split: &str) -> anyhow::Result<Vec<drllm_contract::Example>> {
        let data = drllm_tasks::load_dataset(&self.dataset, split, self.limit, self.skip_invalid)?;
        for e in &data.skipped {
            eprintln!("skipped: {e}");
        }
        anyhow::ensure!(
            !data.examples.is_empty(),
            "no examples in {}/{split}",
            self.dataset.name()
        );
        Ok(data.examples)
    }

    /// The reward settings the flags ask for (an unset style: the model's default).
    pub fn reward_settings(&self) -> drllm_contract::RewardSettings {
        drllm_contract::RewardSettings {
            mode: self.reward,
            style: self.style,
            early_stop: !self.no_early_stop,
            length_normalized: false,
        }
    }

    /// Reward options for `lm` as the flags ask; refused when the model cannot follow them.
    pub fn reward_options(
        &self,
        lm: &LoadedModel,
    ) -> crate::Result<crate::tasks::reward::RewardOptions> {
        crate::tasks::reward::RewardOptions::resolve(lm, &self.reward_settings())
    }
}

/// The progress bar of commands that work through examples (drawn only on a terminal).
pub fn progress_bar(len: usize) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(len as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed} < {eta}]")
            .expect("valid template"),
    )
}
