//! `trainer`: fits Dr.LLM's per-layer routers from search records (Parquet) into a router
//! checkpoint (`routers.safetensors` + `router_config.json`, with `metrics.csv` / `metrics.json`);
//! converts the official Dr.LLM search output into records (`import-drllm`) and exports
//! checkpoints under the official parameter names (`export --format drllm`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use drllm_core::cli::ModelArgs;
use drllm_core::router::{
    RouterConfig, Routers, Targets, TrainingConfig, CONFIG_FILE, DEFAULT_WINDOWS,
};
use drllm_engine::LoadedModel;
use drllm_trainer::{data, feature_cache, train};

mod diagnose_cmd;
mod export;
mod import;
mod menu_cmd;
mod tokens_cmd;

// Training allocates and frees the same large buffers every step; glibc's malloc returns them to
// the kernel and faults them back in each time (2.5× slower epochs), mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "drllm trainer: fits per-layer routers from search records"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train routers from search records into a checkpoint folder
    Train(TrainArgs),
    /// Convert the official Dr.LLM search output (data_generation.py's JSON) into Parquet
    /// records for `train`
    ImportDrllm(import::Args),
    /// Write a router checkpoint in another format: `--format drllm` is safetensors under the
    /// official Dr.LLM parameter names (model.routers.{i}.linear1.weight, …)
    Export(export::Args),
    /// Is there per-input signal? Per layer, a cross-validated logistic regression on the
    /// router inputs predicts whether skipping the layer keeps the answer, from probe records
    /// (`worker search --strategy probe-skips`); writes diagnosis.json, .md and .svg
    Diagnose(diagnose_cmd::Args),
    /// Build a path-menu router: a few fixed paths (the greedy curve of `evaluator prune`, the
    /// safest skips of `trainer diagnose`, the full path) and a gate on the first layers'
    /// hidden states that picks one per input; writes path_menu.json, which `evaluator
    /// calibrate`, `run` and `serve` take as --routers
    Menu(menu_cmd::Args),
    /// Train a token router: a gate per token and layer (after the first --keep-first layers),
    /// end to end through the frozen model by distillation from its full path, on prompts alone
    /// (a train split or a JSONL); writes token_router.json/.safetensors, metrics.csv and
    /// training.svg, which `evaluator run` takes as --routers
    Tokens(tokens_cmd::Args),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Search records: Parquet files or folders of them (a job's output_dir, `worker search --out`).
    #[arg(long, required = true, num_args = 1..)]
    records: Vec<PathBuf>,
    /// Checkpoint folder to write (routers.safetensors, router_config.json, metrics.csv/json).
    #[arg(long)]
    out: PathBuf,
    /// Continue training the checkpoint in --out up to --epochs (weights and schedule position
    /// resume; AdamW's moments start afresh).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt windows each router averages over.
    #[arg(long, default_value_t = DEFAULT_WINDOWS)]
    windows: usize,
    #[arg(long, default_value_t = 25)]
    epochs: usize,
    /// Examples per minibatch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Minibatches whose gradients are summed before each optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Share of the steps spent warming the learning rate up (then cosine decay to 0).
    #[arg(long, default_value_t = 0.05)]
    warmup: f64,
    /// Focal loss γ.
    #[arg(long, default_value_t = 2.0)]
    focal_gamma: f64,
    /// β of the effective-number class weights.
    #[arg(long, default_value_t = 0.999)]
    class_beta: f64,
    /// Share of the questions held out for validation (by question, seeded).
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also train on records whose search found no correct path (target: the default path).
    #[arg(long)]
    include_unfound: bool,
    /// Leave out records whose best path has fewer positions (e.g. chance-level short paths).
    #[arg(long, default_value_t = 0)]
    min_path_len: usize,
    /// What the routers learn: `best` (the paper: the best path's decisions) or `soft` (per
    /// layer, a distribution over skip/execute/repeat from all of a question's good paths,
    /// weighted by --soft-beta, --soft-full-weight and --soft-margin-weight).
    #[arg(long, default_value = "best", value_parser = ["best", "soft"])]
    targets: String,
    /// Soft targets: a good path weighs exp(−beta · len / L), so shorter paths weigh more.
    #[arg(long, default_value_t = 3.0)]
    soft_beta: f64,
    /// Soft targets: the full path's weight is multiplied by this when a shorter good path exists.
    #[arg(long, default_value_t = 0.25)]
    soft_full_weight: f64,
    /// Soft targets: a path also weighs exp(w · margin) (records with margins, schema 2), so
    /// paths on which the gold answer wins more clearly count more; 0 ignores margins.
    #[arg(long, default_value_t = 0.0)]
    soft_margin_weight: f64,
    /// Where router inputs are cached (default: ~/.cache/drllm/router-features).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    drllm_engine::init_cpu_threads();
    drllm_core::cli::init();
    match Cli::parse().command {
        Command::Train(a) => run(a),
        Command::ImportDrllm(a) => import::run(a),
        Command::Export(a) => export::run(a),
        Command::Diagnose(a) => diagnose_cmd::run(a),
        Command::Menu(a) => menu_cmd::run(a),
        Command::Tokens(a) => tokens_cmd::run(a),
    }
}

fn run(a: TrainArgs) -> anyhow::Result<()> {
    let training = training_config(&a)?;
    // Records first: a wrong path fails before the model loads.
    let records = data::read_all(&a.records)?;
    let lm = a.model.load()?;
    let (mut cfg, routers) = checkpoint(&a, &lm, training)?;
    let (all, n_train, selection) = examples(&lm, records, &mut cfg, &a.out, a.resume)?;
    let root = a
        .cache_dir
        .clone()
        .unwrap_or_else(|| drllm_engine::loader::cache_dir().join("router-features"));
    let (feats, built) =
        feature_cache::open_or_build(&root, &lm.model, &lm.fingerprint, &all, a.windows, true)
            .context("computing router inputs")?;
    tracing::info!(computed = built.computed, reused = built.reused, seconds = built.seconds, cache = %feats.dir.display(), "router inputs ready");
    let split = |range: std::ops::Range<usize>| train::Split {
        rows: range.clone().collect(),
        targets: all[range].iter().map(|e| e.labels.as_slice()).collect(),
    };
    let (tr, va) = (split(0..n_train), split(n_train..all.len()));
    let t = std::time::Instant::now();
    fit(&routers, &feats, &tr, &va, &mut cfg, &a.out)?;
    let epochs_s = t.elapsed().as_secs_f64();
    let last = cfg.history.last();
    println!(
        "{}",
        serde_json::json!({
            "checkpoint": a.out, "selection": selection, "train_examples": tr.rows.len(),
            "val_examples": va.rows.len(), "feature_pass_seconds": built.seconds,
            "features_computed": built.computed, "features_reused": built.reused,
            "epochs": cfg.history.len(), "epochs_seconds": epochs_s,
            "epochs_over_feature_pass": (built.computed > 0).then(|| epochs_s / built.seconds),
            "train": last.map(|e| &e.train), "val": last.and_then(|e| e.val.as_ref()),
        })
    );
    Ok(())
}

/// The training configuration the flags ask for, refusing values that cannot train.
fn training_config(a: &TrainArgs) -> anyhow::Result<TrainingConfig> {
    anyhow::ensure!(
        a.windows > 0 && a.epochs > 0 && a.batch_size > 0 && a.grad_accum > 0,
        "--windows, --epochs, --batch-size and --grad-accum must be at least 1"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&a.val_fraction),
        "--val-fraction must be in [0, 1)"
    );
    Ok(TrainingConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        lr: a.lr,
        weight_decay: a.weight_decay,
        warmup_fraction: a.warmup,
        focal_gamma: a.focal_gamma,
        class_beta: a.class_beta,
        val_fraction: a.val_fraction,
        seed: a.seed,
        found_only: !a.include_unfound,
        min_path_len: a.min_path_len,
        targets: match a.targets.as_str() {
            "soft" => Targets::Soft {
                beta: a.soft_beta,
                full_weight: a.soft_full_weight,
                margin_weight: a.soft_margin_weight,
            },
            _ => Targets::Best,
        },
    })
}

/// The checkpoint to train: `--resume`d from `--out` (same model and options but `--epochs`),
/// or new (refused when `--out` already holds one).
fn checkpoint(
    a: &TrainArgs,
    lm: &LoadedModel,
    training: TrainingConfig,
) -> anyhow::Result<(RouterConfig, Routers)> {
    let (layers, d) = (lm.model.num_layers(), lm.model.config().hidden_size);
    if a.resume {
        let (mut cfg, routers) = RouterConfig::load(&a.out)?;
        cfg.header.check_model(&a.out, &lm.fingerprint, layers, d)?;
        let mut same = cfg.training.clone();
        same.epochs = a.epochs;
        if same != training || cfg.windows != a.windows {
            bail!("--resume: the options differ from the checkpoint's training configuration {:?} (windows {}); only --epochs may change", cfg.training, cfg.windows);
        }
        cfg.training.epochs = a.epochs;
        return Ok((cfg, routers));
    }
    if a.out.join(CONFIG_FILE).is_file() {
        bail!("{} already holds a router checkpoint: pass --resume to continue training it, or choose another --out", a.out.display());
    }
    let cfg = RouterConfig::new(&lm.id, &lm.fingerprint, layers, d, a.windows, training);
    Ok((cfg, Routers::init(layers, d, a.seed)?))
}

/// The training examples from `records`, training ones first: `(examples, number of training
/// examples, selection counts)`. Records the records' reward settings in `cfg`, refusing others
/// than a resumed checkpoint's (a resumed checkpoint keeps settings only when it and the new
/// records share one).
fn examples(
    lm: &LoadedModel,
    records: Vec<drllm_contract::SearchRecord>,
    cfg: &mut RouterConfig,
    out: &std::path::Path,
    resumed: bool,
) -> anyhow::Result<(Vec<data::Example>, usize, data::Selection)> {
    let filter = data::Filter {
        fingerprint: lm.fingerprint.clone(),
        num_layers: lm.model.num_layers(),
        found_only: cfg.training.found_only,
        min_path_len: cfg.training.min_path_len,
    };
    let (kept, selection) = data::select(records, &filter)?;
    tracing::info!(?selection, "records selected");
    let reward = data::common_reward(lm, &kept)?;
    cfg.header.reward = if resumed {
        match (cfg.header.reward, reward) {
            (Some(had), Some(now)) if had != now => bail!(
                "{} was trained on records searched with {had:?}; these records were searched with {now:?}: resume with records of the same settings, or train a new checkpoint",
                out.display()
            ),
            (Some(had), Some(_)) => Some(had),
            (had, now) => {
                if had.is_some() || now.is_some() {
                    tracing::warn!(checkpoint = ?had, records = ?now, "the checkpoint and these records do not share one reward setting; the checkpoint records none");
                }
                None
            }
        }
    } else {
        reward
    };
    let (mut train_ex, mut val_ex) = (Vec::new(), Vec::new());
    for r in &kept {
        let e = data::example(lm, r, cfg.training.targets)?;
        if data::is_validation(&e.question, cfg.training.val_fraction, cfg.training.seed) {
            val_ex.push(e);
        } else {
            train_ex.push(e);
        }
    }
    anyhow::ensure!(
        !train_ex.is_empty(),
        "every selected question fell into validation: lower --val-fraction"
    );
    let n_train = train_ex.len();
    Ok((
        train_ex.into_iter().chain(val_ex).collect(),
        n_train,
        selection,
    ))
}

/// Trains with a progress bar and one line of metrics per epoch on stderr.
fn fit(
    routers: &Routers,
    feats: &feature_cache::Features,
    tr: &train::Split,
    va: &train::Split,
    cfg: &mut RouterConfig,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let bar = drllm_core::cli::progress_bar(cfg.training.epochs);
    bar.set_position(cfg.history.len() as u64);
    bar.set_message("epochs");
    train::train(routers, feats, tr, va, cfg, out, |e| {
        bar.inc(1);
        let line = match &e.val {
            Some(v) => format!(
                "epoch {} train {} | val {}",
                e.epoch,
                e.train.line(),
                v.line()
            ),
            None => format!("epoch {} train {}", e.epoch, e.train.line()),
        };
        bar.suspend(|| eprintln!("{line}"));
    })?;
    bar.finish_and_clear();
    Ok(())
}
