//! `evaluator run`: scores a router checkpoint. Each example runs twice, back to back: the static
//! model (every layer once) and routed inference (the routers choose the path at prefill; skipped
//! layers are never computed). With `--prune-split`, a third pass scores the static-pruned
//! baseline: the greedy-pruned fixed path of the routers' mean length ([`crate::prune`]), chosen
//! on another split. Writes `report.json`, `report.md`, `decisions.svg` and `examples.jsonl` into
//! `--out`; see [`crate::report`].

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use drllm_core::cli::TaskArgs;

use crate::certify::{answer_of, operating_point};
use crate::router::Router;
use drllm_contract::Example;
use drllm_core::tasks::reward::{prepare, RewardOptions};
use drllm_core::tasks::{score_example_with, PromptCache};
use drllm_engine::{LayerPath, LoadedModel};

use crate::prune::{evaluators, score_path, CurveKey, Pruner, DEFAULT_REUSE_MIB};
use crate::report::{ExampleResult, Report, StaticPruned};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    /// Router checkpoint folder: per-layer routers (routers.safetensors + router_config.json,
    /// from `trainer train`) or a path menu (path_menu.json, from `trainer menu`).
    #[arg(long)]
    routers: PathBuf,
    #[command(flatten)]
    task: drllm_core::cli::TaskArgs,
    #[command(flatten)]
    prefix: drllm_core::cli::PrefixCacheArgs,
    /// train, dev or test for ARC; train or validation for DART.
    #[arg(long, default_value = "test")]
    split: String,
    /// The knob. Per-layer routers: the budget p in [-1, 1] (-1 skips every layer, -0.5 is the
    /// pure router, 0.5 executes every layer, 1 repeats every layer). A path menu: the gate's
    /// threshold τ in [0, 1] (the cheapest path whose keep probability exceeds τ runs; 1 is the
    /// static model). Default: the point `evaluator calibrate` certified (certificate.json in
    /// --routers), else the static model.
    #[arg(long, allow_negative_numbers = true)]
    budget: Option<f32>,
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
    /// Also score the static-pruned baseline: greedy layer pruning (as `evaluator prune`, sharing
    /// its cache) on this split, down to the routers' mean path length rounded (≥ L: the full
    /// path), then that fixed path on every evaluated example. Must differ from --split.
    #[arg(long)]
    prune_split: Option<String>,
    /// Only the first N questions of --prune-split (default: all of them).
    #[arg(long, requires = "prune_split")]
    prune_limit: Option<usize>,
    /// Dataset of --prune-split (default: --dataset). E.g. score ARC-Challenge test against the
    /// path pruned on ARC-Easy dev, so that nothing is chosen on the out-of-domain set.
    #[arg(long, requires = "prune_split")]
    prune_dataset: Option<drllm_tasks::DatasetSpec>,
    /// Pruning: only these layers may be removed (as `evaluator prune --layers`, sharing its
    /// cache).
    #[arg(long, value_delimiter = ',', requires = "prune_split")]
    prune_layers: Option<Vec<u16>>,
    /// Pruning: memory per --prune-split example for cached hidden states after path prefixes,
    /// MiB (as `evaluator prune --reuse-budget-mib`: up to examples × this in all).
    #[arg(long, default_value_t = DEFAULT_REUSE_MIB)]
    reuse_budget_mib: usize,
}

/// Refuses bad flags before anything loads.
fn check_args(a: &Args) -> anyhow::Result<()> {
    let same_dataset = a
        .prune_dataset
        .as_ref()
        .is_none_or(|d| *d == a.task.dataset);
    if let (Some(p), true) = (&a.prune_split, same_dataset) {
        anyhow::ensure!(
            *p != a.split,
            "--prune-split {p} is the evaluated split (--split {}): a path chosen on the questions \
             it is scored on would flatter the baseline; prune on another split (e.g. dev)",
            a.split
        );
    }
    Ok(())
}

/// What routed inference with a checkpoint needs.
struct Routed<'a> {
    lm: &'a LoadedModel,
    opts: RewardOptions,
    router: &'a Router,
    knob: f32,
    /// Generating prompts' keys and values, for the static and the routed passes.
    prompts: PromptCache,
}

pub fn run(a: Args) -> anyhow::Result<std::process::ExitCode> {
    check_args(&a)?;
    let examples = a.task.examples(&a.split)?;
    let lm = a.model.load()?;
    let router = Router::load(&a.routers, &lm)?;
    let op = operating_point(&a.routers, &router, a.budget)?;
    eprintln!("{} router, knob {}: {}", router.kind(), op.knob, op.source);
    let oracle = read_oracle(&a.oracle)?;
    let opts = a.task.reward_options(&lm)?;
    router.check_prompts(&a.routers, &opts.settings())?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let jsonl = a.out.join("examples.jsonl");
    let routed = Routed {
        lm: &lm,
        opts,
        router: &router,
        knob: op.knob,
        prompts: a.prefix.cache(),
    };
    let mut results = routed.all(&examples, &oracle, &jsonl)?;
    let static_pruned = match &a.prune_split {
        Some(split) => {
            let sp = static_pruned(&a, split, &lm, &examples, opts, &mut results)?;
            write_examples(&jsonl, &results)?;
            Some(sp)
        }
        None => None,
    };
    let mut report = Report::new(
        &router,
        &lm,
        (&a.task.dataset.name(), &a.split),
        &opts,
        op.knob,
        &results,
    );
    report.static_pruned = static_pruned;
    report.budget_source = op.source;
    report.certificate = op.certificate.map(|c| {
        let pairs: Vec<_> = results.iter().map(ExampleResult::answers).collect();
        c.held_on(op.knob, &pairs)
    });
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

impl Routed<'_> {
    /// Every example, static then routed, each result also written to `jsonl` as it comes.
    fn all(
        &self,
        examples: &[Example],
        oracle: &HashMap<String, bool>,
        jsonl: &Path,
    ) -> anyhow::Result<Vec<ExampleResult>> {
        let mut lines = std::io::BufWriter::new(
            std::fs::File::create(jsonl)
                .with_context(|| format!("creating {}", jsonl.display()))?,
        );
        let bar = drllm_core::cli::progress_bar(examples.len());
        let mut results = Vec::with_capacity(examples.len());
        let (mut stat_ok, mut routed_ok) = (0, 0);
        for (i, ex) in examples.iter().enumerate() {
            let res = self
                .example(ex, oracle.get(&ex.id).copied())
                .with_context(|| format!("example {}", ex.id))?;
            stat_ok += usize::from(res.static_correct);
            routed_ok += usize::from(res.routed_correct);
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
        Ok(results)
    }

    /// One example: the static model, then routed inference, back to back.
    fn example(&self, ex: &Example, oracle_found: Option<bool>) -> anyhow::Result<ExampleResult> {
        let (lm, opts) = (self.lm, &self.opts);
        let t = Instant::now();
        let full = LayerPath::full(lm.model.num_layers());
        let s = score_example_with(lm, ex, &full, opts, Some(&self.prompts))?;
        let static_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let prompts = Some(&self.prompts);
        let routing = self.router.evaluate(lm, ex, opts, self.knob, prompts)?;
        let (r, path) = (&routing.outcome, &routing.path);
        let routed_s = t.elapsed().as_secs_f64();
        let rows = prepare(lm, ex, opts)?.segments().rows();
        Ok(ExampleResult {
            id: ex.id.clone(),
            group: group_of(ex),
            static_correct: s.correct,
            routed_correct: r.correct,
            static_answer: answer_of(&s, opts).answer,
            routed_answer: answer_of(r, opts).answer,
            static_pruned_correct: None,
            oracle_found,
            decisions: path.counts(),
            path_len: routing.executions,
            static_tokens: rows + s.tokens_generated,
            routed_tokens: rows + r.tokens_generated,
            static_seconds: static_s,
            routed_seconds: routed_s,
        })
    }
}

/// The static-pruned baseline: the greedy curve on `split` (cached or computed) down to the
/// routers' mean path length n rounded, its length-n path scored on every example (filling
/// `static_pruned_correct`). n ≥ L: the full path, i.e. the static outcomes.
fn static_pruned(
    a: &Args,
    split: &str,
    lm: &LoadedModel,
    examples: &[Example],
    opts: RewardOptions,
    results: &mut [ExampleResult],
) -> anyhow::Result<StaticPruned> {
    let layers = lm.model.num_layers();
    let mean = results.iter().map(|r| r.path_len).sum::<f64>() / results.len() as f64;
    let n = mean.round() as usize;
    let task = TaskArgs {
        limit: a.prune_limit,
        dataset: a
            .prune_dataset
            .clone()
            .unwrap_or_else(|| a.task.dataset.clone()),
        ..a.task.clone()
    };
    let prune_examples = task.examples(split).context("--prune-split")?;
    let mut sp = StaticPruned {
        len: n.min(layers),
        path: LayerPath::full(layers).layers().to_vec(),
        removed_layers: Vec::new(),
        chosen_on_dataset: task.dataset.name(),
        chosen_on_split: split.into(),
        chosen_on_limit: a.prune_limit,
        chosen_on_examples: prune_examples.len(),
        chosen_on_accuracy: None,
        source: "full-path".into(),
        accuracy: 0.0,
    };
    let correct: Vec<bool> = if n >= layers {
        results.iter().map(|r| r.static_correct).collect()
    } else {
        eprintln!(
            "static-pruned baseline: greedy pruning on {split} down to {n} of {layers} layers"
        );
        let key = CurveKey {
            removable: a.prune_layers.clone(),
            ..CurveKey::new(&a.model, lm, &task, split, &prune_examples, &opts)?
        };
        let pruner = Pruner {
            lm,
            examples: &prune_examples,
            opts,
            reuse_budget_bytes: a.reuse_budget_mib << 20,
            removable: a.prune_layers.as_deref(),
        };
        let (curve, source) = pruner.curve(&key, n)?;
        let point = curve.last().filter(|p| p.len == n);
        let point = point.context("the pruning curve stops early")?;
        sp.path.clone_from(&point.path);
        sp.removed_layers = curve.iter().filter_map(|p| p.removed_layer).collect();
        sp.chosen_on_accuracy = Some(point.accuracy);
        sp.source = source.to_string();
        let path = LayerPath::new(sp.path.clone(), layers)?;
        let mut evals = evaluators(lm, examples, opts, 0)?;
        let bar = drllm_core::cli::progress_bar(examples.len());
        bar.set_message(format!("static-pruned ({n} layers)"));
        let s = score_path(&mut evals, examples, &path, || bar.inc(1))?;
        bar.finish_and_clear();
        s.correct
    };
    for (r, &c) in results.iter_mut().zip(&correct) {
        r.static_pruned_correct = Some(c);
    }
    sp.accuracy = correct.iter().filter(|&&c| c).count() as f64 / correct.len().max(1) as f64;
    Ok(sp)
}

/// Rewrites `examples.jsonl` from the final results (with the static-pruned outcomes).
fn write_examples(jsonl: &Path, results: &[ExampleResult]) -> anyhow::Result<()> {
    let mut text = String::new();
    for r in results {
        text += &serde_json::to_string(r)?;
        text.push('\n');
    }
    std::fs::write(jsonl, text).with_context(|| format!("writing {}", jsonl.display()))
}

/// Report group of an example: its dataset, with the MATH level when known (`dart-3`, `math L2`).
fn group_of(ex: &drllm_contract::Example) -> String {
    match ex.level {
        Some(l) if !ex.dataset.ends_with(&format!("-{l}")) => format!("{} level {l}", ex.dataset),
        _ => ex.dataset.clone(),
    }
}

/// example id → whether the search found a correct path.
fn read_oracle(paths: &[PathBuf]) -> anyhow::Result<HashMap<String, bool>> {
    let mut out = HashMap::new();
    for p in paths {
        let recs = drllm_records::read_records(p)
            .with_context(|| format!("reading oracle records {}", p.display()))?;
        anyhow::ensure!(!recs.is_empty(), "{}: no search records", p.display());
        for r in recs {
            out.entry(r.example_id).or_insert(r.found);
        }
    }
    Ok(out)
}
