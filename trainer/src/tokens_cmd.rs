//! `trainer tokens`: trains a token router (see `drllm_core::router::TokenRouter`) on prompts
//! alone — a dataset's train split or any JSONL of multiple-choice questions; no labels are read
//! and dev/test splits are refused — and writes the checkpoint folder that `evaluator run`
//! takes as `--routers`.

use std::path::PathBuf;

use anyhow::Context;
use drllm_core::router::{
    CheckpointHeader, GateInput, TokenRouter, TokenRouterConfig, TokenTraining, TOKEN_FILE,
    TOKEN_FORMAT,
};
use drllm_core::tasks::reward::prepare;
use drllm_engine::SkippedKv;
use drllm_trainer::tokens::{LossSettings, TokenExample};
use drllm_trainer::tokens_train::{train_tokens, PLOT_FILE, STEPS_FILE};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder to write (token_router.json, token_router.safetensors, metrics.csv,
    /// training.svg).
    #[arg(long)]
    out: PathBuf,
    /// Continue the checkpoint in --out up to --epochs (weights, history and schedule resume;
    /// AdamW's moments start afresh).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    #[command(flatten)]
    task: drllm_core::cli::TaskArgs,
    /// Split the prompts come from: train (dev and test are for choosing and scoring).
    #[arg(long, default_value = "train")]
    split: String,
    /// Layers every token runs before routing; the gates read the state entering this layer.
    #[arg(long, default_value_t = 4)]
    keep_first: usize,
    /// What the gates read: contextual (the state after --keep-first layers, DLR's way) or own
    /// (each layer's input).
    #[arg(long, default_value = "contextual")]
    gate_input: GateInput,
    /// Width of each gate's hidden layer.
    #[arg(long, default_value_t = 32)]
    bottleneck: usize,
    /// What later tokens read of a skipped token: mask (left out of attention, the layer costs
    /// nothing) or project (keys and values from its passed-through state).
    #[arg(long, default_value = "mask")]
    skipped_kv: SkippedKv,
    /// Target share of token-layers executed (all layers counted).
    #[arg(long, default_value_t = 0.8)]
    target: f64,
    /// Per-layer sparsity weight λ (on the mean execute probability).
    #[arg(long, default_value_t = 0.0)]
    lambda: f64,
    /// Weight μ of (execute share − target)².
    #[arg(long, default_value_t = 20.0)]
    mu: f64,
    /// Distillation temperature T.
    #[arg(long, default_value_t = 1.0)]
    kd_temperature: f64,
    /// Distil on every row, not only the scored rows (the prompt's last row and the choices).
    #[arg(long)]
    kd_all_rows: bool,
    /// Gumbel temperature at the first step.
    #[arg(long, default_value_t = 1.0)]
    tau_start: f64,
    /// Gumbel temperature at the last step.
    #[arg(long, default_value_t = 0.2)]
    tau_end: f64,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Examples per optimizer step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Save a resumable checkpoint every N steps (and after every epoch).
    #[arg(long, default_value_t = 20)]
    save_every: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write a random control instead of training: every token skips each routed layer with
    /// this probability (a hash of its state), to compare a trained router with chance at the
    /// same compute. Nothing is trained.
    #[arg(long)]
    random_skip: Option<f64>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.split == "train",
        "--split {}: token routers train on train prompts only (dev chooses settings, test scores)",
        a.split
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.target),
        "--target {} must be in [0, 1]",
        a.target
    );
    // The student's pass differentiates through dense f32 weights.
    let mut margs = a.model.clone();
    margs.exact = true;
    let lm = margs.load()?;
    let layers = lm.model.num_layers();
    anyhow::ensure!(
        a.keep_first < layers,
        "--keep-first {} leaves no layer of {layers} to route",
        a.keep_first
    );
    let opts = a.task.reward_options(&lm)?;
    let examples = a.task.examples(&a.split)?;
    if let Some(p) = a.random_skip {
        anyhow::ensure!(
            (0.0..=1.0).contains(&p),
            "--random-skip {p} must be in [0, 1]"
        );
        let mut cfg = config(&a, &lm, &opts.settings(), &examples);
        cfg.random_skip = Some(p);
        cfg.training.epochs = 0;
        cfg.training_questions.clear();
        TokenRouter::init(cfg, 4.0)?.save(&a.out)?;
        println!("{}", serde_json::json!({"out": a.out, "random_skip": p}));
        return Ok(());
    }
    let mut router = if a.resume {
        let r = TokenRouter::load(&a.out)
            .with_context(|| format!("--resume: reading {}", a.out.join(TOKEN_FILE).display()))?;
        let d = lm.model.config().hidden_size;
        r.cfg
            .header
            .check_model(&a.out, &lm.fingerprint, layers, d)?;
        let mut r = r;
        r.cfg.training.epochs = a.epochs;
        r
    } else {
        TokenRouter::init(config(&a, &lm, &opts.settings(), &examples), 4.0)?
    };
    let t = router.cfg.training.kd_temperature;
    let all_rows = router.cfg.training.kd_all_rows;
    let t0 = std::time::Instant::now();
    let prepared = examples
        .iter()
        .map(|ex| {
            let prep = prepare(&lm, ex, &opts)?;
            Ok(TokenExample::new(&lm, &ex.id, &prep, all_rows, t)?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "{} prompts, teacher pass {:.1} s; training {} epoch(s) of {} steps",
        prepared.len(),
        t0.elapsed().as_secs_f64(),
        router.cfg.training.epochs,
        prepared.len().div_ceil(router.cfg.training.batch_size)
    );
    let tr = &router.cfg.training;
    let settings = LossSettings {
        kv: router.cfg.kv().map_err(anyhow::Error::msg)?,
        tau: tr.tau_start,
        hard: true,
        noise: true,
        kd_temperature: tr.kd_temperature,
        target: tr.target,
        lambda: tr.lambda,
        mu: tr.mu,
    };
    let t0 = std::time::Instant::now();
    train_tokens(&lm, &mut router, &prepared, settings, &a.out, a.save_every)?;
    let last = router.cfg.history.last();
    println!(
        "{}",
        serde_json::json!({
            "out": a.out, "prompts": prepared.len(), "steps": router.cfg.steps_done,
            "seconds": t0.elapsed().as_secs_f64(),
            "last_epoch": last,
            "metrics": a.out.join(STEPS_FILE), "plot": a.out.join(PLOT_FILE),
        })
    );
    Ok(())
}

fn config(
    a: &Args,
    lm: &drllm_engine::LoadedModel,
    reward: &drllm_contract::RewardSettings,
    examples: &[drllm_contract::Example],
) -> TokenRouterConfig {
    TokenRouterConfig {
        format: TOKEN_FORMAT,
        header: CheckpointHeader {
            base_model: a.model.model.clone(),
            model_fingerprint: lm.fingerprint.clone(),
            num_layers: lm.model.num_layers(),
            model_hidden_size: lm.model.config().hidden_size,
            reward: Some(*reward),
        },
        keep_first: a.keep_first,
        gate_input: a.gate_input,
        bottleneck: a.bottleneck,
        skipped_kv: a.skipped_kv.to_string(),
        training: TokenTraining {
            target: a.target,
            lambda: a.lambda,
            mu: a.mu,
            kd_temperature: a.kd_temperature,
            kd_all_rows: a.kd_all_rows,
            tau_start: a.tau_start,
            tau_end: a.tau_end,
            lr: a.lr,
            batch_size: a.batch_size,
            epochs: a.epochs,
            seed: a.seed,
            prompts: format!(
                "{}/{} ({} prompts)",
                a.task.dataset.name(),
                a.split,
                examples.len()
            ),
        },
        steps_done: 0,
        history: Vec::new(),
        training_questions: examples.iter().map(|e| e.id.clone()).collect(),
        random_skip: None,
    }
}
