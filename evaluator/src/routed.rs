//! `evaluator run`: scores a router checkpoint. Each example runs twice, back to back: the static
//! model (every layer once) and routed inference (the routers choose the path at prefill; skipped
//! layers are never computed). Writes `report.json`, `report.md`, `decisions.svg` and
//! `examples.jsonl` into `--out`; see [`crate::report`].

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use drllm_core::router::{evaluate_routed, Budget, RouterConfig};
use drllm_core::tasks::evaluate;
use drllm_core::tasks::reward::prepare;
use drllm_core::LayerPath;

use crate::report::{ExampleResult, Report};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    /// Router checkpoint folder (routers.safetensors + router_config.json, from `trainer train`).
    #[arg(long)]
    routers: PathBuf,
    #[command(flatten)]
    task: drllm_core::cli::TaskArgs,
    /// train, dev or test for ARC; train or validation for DART.
    #[arg(long, default_value = "test")]
    split: String,
    /// Budget knob p in [-1, 1]: -1 skips every layer, -0.5 is the pure router (default), 0.5
    /// executes every layer, 1 repeats every layer.
    #[arg(long, default_value_t = -0.5, allow_negative_numbers = true)]
    budget: f32,
    /// MCTS records (Parquet files or folders) of the same questions: adds the search's oracle
    /// accuracy (a correct path was found) for the questions they cover.
    #[arg(long, num_args = 1..)]
    oracle: Vec<PathBuf>,
    /// Report folder.
    #[arg(long)]
    out: PathBuf,
    /// Exit with code 2 when the routed accuracy is below this (after writing the report).
    #[arg(long)]
    min_routed_accuracy: Option<f64>,
}

pub fn run(a: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(
        (-1.0..=1.0).contains(&a.budget),
        "--budget must be in [-1, 1], got {}",
        a.budget
    );
    let examples = a.task.examples(&a.split)?;
    let lm = a.model.load()?;
    let (cfg, routers) = RouterConfig::load(&a.routers)?;
    let (layers, d) = (lm.model.num_layers(), lm.model.config().hidden_size);
    cfg.check_model(&a.routers, &lm.fingerprint, layers, d)?;
    let oracle = read_oracle(&a.oracle)?;
    let opts = a.task.reward_options(&lm);
    let budget = Budget(a.budget);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let jsonl = a.out.join("examples.jsonl");
    let mut lines = std::io::BufWriter::new(
        std::fs::File::create(&jsonl).with_context(|| format!("creating {}", jsonl.display()))?,
    );
    let full = LayerPath::full(layers);
    let bar = drllm_core::cli::progress_bar(examples.len());
    let mut results = Vec::with_capacity(examples.len());
    let (mut stat_ok, mut routed_ok) = (0, 0);
    for (i, ex) in examples.iter().enumerate() {
        let ctx = || format!("example {}", ex.id);
        let t = Instant::now();
        let s = evaluate(&lm, ex, &full, &opts).with_context(ctx)?;
        let static_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (r, path) = evaluate_routed(&lm, ex, &opts, |layer, x| {
            routers.decide(layer, x, cfg.windows, budget)
        })
        .with_context(ctx)?;
        let routed_s = t.elapsed().as_secs_f64();
        let rows = prepare(&lm, ex, &opts)?.segments().rows();
        stat_ok += usize::from(s.correct);
        routed_ok += usize::from(r.correct);
        let res = ExampleResult {
            id: ex.id.clone(),
            group: group_of(ex),
            static_correct: s.correct,
            routed_correct: r.correct,
            oracle_found: oracle.get(&ex.id).copied(),
            decisions: path.counts(),
            path_len: path.len(),
            static_tokens: rows + s.tokens_generated,
            routed_tokens: rows + r.tokens_generated,
            static_seconds: static_s,
            routed_seconds: routed_s,
        };
        writeln!(lines, "{}", serde_json::to_string(&res)?)?;
        results.push(res);
        bar.inc(1);
        bar.set_message(format!(
            "static {:.1}% routed {:.1}%",
            100.0 * stat_ok as f64 / (i + 1) as f64,
            100.0 * routed_ok as f64 / (i + 1) as f64
        ));
    }
    bar.finish_and_clear();
    lines.flush()?;
    let report = Report::new(
        &cfg,
        &lm.id,
        &a.task.dataset.name(),
        &a.split,
        &opts,
        a.budget,
        &results,
    );
    report.write(&a.out)?;
    println!("{}", serde_json::to_string(&report.overall)?);
    if let Some(min) = a.min_routed_accuracy {
        if report.overall.routed_accuracy < min {
            eprintln!(
                "routed accuracy {:.4} is below --min-routed-accuracy {min}",
                report.overall.routed_accuracy
            );
            return Ok(std::process::ExitCode::from(2));
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Report group of an example: its dataset, with the MATH level when known (`dart-3`, `math L2`).
fn group_of(ex: &drllm_core::tasks::Example) -> String {
    match ex.level {
        Some(l) if !ex.dataset.ends_with(&format!("-{l}")) => format!("{} level {l}", ex.dataset),
        _ => ex.dataset.clone(),
    }
}

/// example id → whether the search found a correct path.
fn read_oracle(paths: &[PathBuf]) -> anyhow::Result<HashMap<String, bool>> {
    let mut out = HashMap::new();
    for p in paths {
        let recs = drllm_core::search::read_records(p)
            .with_context(|| format!("reading oracle records {}", p.display()))?;
        anyhow::ensure!(!recs.is_empty(), "{}: no search records", p.display());
        for r in recs {
            out.entry(r.example_id).or_insert(r.found);
        }
    }
    Ok(out)
}
