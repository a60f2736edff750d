//! `evaluator`: scores models on evaluation sets: `run` (a router checkpoint with routed
//! inference against the static model), `calibrate` (certifies a checkpoint's operating point),
//! `baseline` (a static model, any layer path, either reward mode), `prune` (the greedy
//! layer-pruning curve, the static baseline at every depth) and `grade` (the graders on outputs of
//! any system); `serve` puts routed inference behind the OpenAI HTTP API for other tools
//! (lm-eval-harness), `export-tokenizer` gives them the model's tokenizer.

mod baseline;
mod calibrate;
mod certify;
mod grade;
mod ltt;
mod prune;
mod prune_cmd;
mod report;
mod router;
mod run;
mod serve;
mod stats;
mod token_usage;

use clap::{Parser, Subcommand};

// The server allocates and frees the same large logit buffers for every request; glibc's malloc
// hands them back to the kernel and faults them in again each time, mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// drllm evaluator: accuracy of models on ARC / DART / JSONL sets, and the graders as a tool.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Certify a router checkpoint's operating point (Learn-then-Test): every budget of --grid,
    /// from the static model to the most aggressive, on calibration questions held out from
    /// training and test; fixed-sequence testing keeps the points whose risk is ≤ --delta with
    /// probability ≥ 1 − --epsilon, and the cheapest becomes the checkpoint's default
    /// (certificate.json next to the routers, used by `run` and `serve`).
    Calibrate(calibrate::Args),
    /// Score a router checkpoint: routed inference against the static model on a dataset, with a
    /// report (JSON, Markdown, decision plot) in --out. Exit code 2: below --min-routed-accuracy.
    Run(run::Args),
    /// Accuracy of the model along one layer path (default: all layers) on a dataset.
    Baseline(baseline::Args),
    /// Greedy layer pruning: from the full path, repeatedly remove the layer whose removal keeps
    /// the accuracy on --split highest, down to --down-to layers; writes prune.json, prune.md and
    /// prune.svg in --out.
    ///
    /// Ties go to the higher summed gold margin (choice-loglik), then to the lower layer. The curve
    /// is cached under <cache>/prune/ (~/.cache/drllm, or $DRLLM_CACHE), keyed by a blake3 hash of
    /// the model fingerprint, dataset, split, limit, reward mode, length normalization, prompt
    /// style, numerics (--exact, --decode-weights, --device) and the examples' content: a later
    /// call (here or `evaluator run --prune-split`) that needs the curve down to a length n ≥ the
    /// cached curve's last length (its down_to) reuses it without running the model; a smaller n
    /// continues the cached curve from its end (a greedy step depends only on the path so far).
    Prune(prune_cmd::Args),
    /// Grade model outputs: reads JSONL lines {"pred", "gold", "kind": "math"|"letter"} and writes
    /// each back with "boxed" (the extracted answer or null) and "correct".
    Grade(grade::Args),
    /// Serve the model (routed with --routers, else static) behind the OpenAI API:
    /// /v1/completions (prompts as text or token ids, echo, logprobs, max_tokens 0 allowed),
    /// /v1/chat/completions and /v1/models, plus /healthz, /readyz and /metrics. Greedy
    /// decoding; each choice says the layer path its prompt ran. Stops on SIGINT/SIGTERM.
    Serve(serve::Args),
    /// Write the model's tokenizer as a Hugging Face tokenizer folder (tokenizer.json,
    /// tokenizer_config.json) for tools such as lm-eval-harness; needs no network.
    ExportTokenizer(ExportTokenizerArgs),
    /// Where a token router spends compute: mean layers run per token category (shared prefix,
    /// punctuation, stop words, rare and high-loss tokens, the choices, the last
    /// prompt token) and the token-layers saved after the shared prefix; usage.json/.md/.svg
    TokenUsage(token_usage::Args),
}

#[derive(clap::Args, Debug)]
struct ExportTokenizerArgs {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    /// Folder to write (created if missing).
    #[arg(long)]
    out: std::path::PathBuf,
}

fn export_tokenizer(a: ExportTokenizerArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let lm = a.model.load()?;
    lm.tokenizer
        .save_hf_dir(&a.out)
        .with_context(|| format!("writing the tokenizer into {}", a.out.display()))?;
    println!("{}", a.out.display());
    Ok(())
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    drllm_engine::init_cpu_threads();
    drllm_core::cli::init();
    match Cli::parse().command {
        Command::Run(a) => run::run(a),
        Command::Calibrate(a) => calibrate::run(a).map(|()| std::process::ExitCode::SUCCESS),
        Command::Baseline(a) => baseline::run(a).map(|()| std::process::ExitCode::SUCCESS),
        Command::Prune(a) => prune_cmd::run(a).map(|()| std::process::ExitCode::SUCCESS),
        Command::Grade(a) => grade::run(a).map(|()| std::process::ExitCode::SUCCESS),
        Command::Serve(a) => serve::run(a).map(|()| std::process::ExitCode::SUCCESS),
        Command::ExportTokenizer(a) => {
            export_tokenizer(a).map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::TokenUsage(a) => token_usage::run(a).map(|()| std::process::ExitCode::SUCCESS),
    }
}
