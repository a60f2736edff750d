//! `trainer diagnose`: the command line around [`drllm_trainer::diagnose`]: read probe records,
//! compute the router inputs along the full path (through the trainer's feature cache), run the
//! per-layer cross-validated regressions and write diagnosis.json / .md / .svg.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use drllm_core::cli::ModelArgs;
use drllm_core::router::{Targets, DEFAULT_WINDOWS};
use drllm_trainer::diagnose::{self, Options};
use drllm_trainer::{data, feature_cache};

#[derive(clap::Args)]
pub struct Args {
    /// Probe records: Parquet files or folders of them, from `worker search --strategy
    /// probe-skips` (or `probe`); `--success agree` asks "does skipping keep the full model's
    /// answer", the question a router that must not cost accuracy has to answer.
    #[arg(long, required = true, num_args = 1..)]
    records: Vec<PathBuf>,
    /// Folder for diagnosis.json, diagnosis.md and diagnosis.svg (created if missing).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt windows of the router inputs (averaged into one vector per layer).
    #[arg(long, default_value_t = DEFAULT_WINDOWS)]
    windows: usize,
    /// Cross-validation folds, by question.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Bootstrap resamples for the 95% intervals.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Feature cache folder (default: the model cache's router-features, shared with `train`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.folds >= 2, "--folds must be at least 2");
    let t0 = Instant::now();
    let records = data::read_all(&a.records)?;
    let lm = a.model.load()?;
    let filter = data::Filter {
        fingerprint: lm.fingerprint.clone(),
        num_layers: lm.model.num_layers(),
        found_only: false,
        min_path_len: 0,
    };
    let (records, selection) = data::select(records, &filter)?;
    let probed = diagnose::probed(records)?;
    let examples = probed
        .records
        .iter()
        .map(|r| {
            let mut e = data::example(&lm, r, Targets::Best)?;
            // Router inputs along the full path: what a router sees before it skips anything.
            e.target = vec![1; e.target.len()];
            e.labels = vec![[0.0, 1.0, 0.0]; e.labels.len()];
            Ok(e)
        })
        .collect::<drllm_trainer::Result<Vec<_>>>()?;
    let root = a
        .cache_dir
        .clone()
        .unwrap_or_else(|| drllm_engine::loader::cache_dir().join("router-features"));
    let (feats, _) = feature_cache::open_or_build(
        &root,
        &lm.model,
        &lm.fingerprint,
        &examples,
        a.windows,
        true,
    )
    .context("computing router inputs")?;
    let features = per_layer_means(&feats)?;
    let opts = Options {
        folds: a.folds,
        resamples: a.resamples,
        seed: a.seed,
    };
    let d = diagnose::diagnose(&probed, &features, feats.d, opts);
    diagnose::report::write(&d, &a.out)?;
    tracing::info!(
        questions = d.questions,
        left_out = selection.records - selection.kept,
        seconds = t0.elapsed().as_secs_f64(),
        out = %a.out.display(),
        "diagnosis written"
    );
    println!("{}", diagnose::report::markdown(&d));
    Ok(())
}

/// Per layer, `n × d` row-major: each question's mean over its prompt windows.
fn per_layer_means(f: &feature_cache::Features) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = vec![Vec::with_capacity(f.n * f.d); f.layers];
    let idx: Vec<usize> = (0..f.n).collect();
    for chunk in idx.chunks(feature_cache::CHUNK) {
        let (x, mask) = f.batch(chunk)?; // [L, B, W, d], [B, W]
        let counts = mask.sum_keepdim(1)?.clamp(1f32, f32::MAX)?; // [B, 1]
        let summed = x.broadcast_mul(&mask.unsqueeze(2)?.unsqueeze(0)?)?.sum(2)?; // [L, B, d]
        let mean = summed.broadcast_div(&counts.unsqueeze(0)?)?;
        for (l, o) in out.iter_mut().enumerate() {
            o.extend(mean.get(l)?.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    Ok(out)
}
