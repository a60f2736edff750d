//! `trainer menu`: builds a path-menu router ([`drllm_core::router::PathMenu`]). The menu is
//! chosen on one set of questions (the greedy curve of `evaluator prune`, the safest skips of
//! `trainer diagnose`), the gate is fitted on others: for each gate question the full model runs
//! once (its answer, and the gate's input entering the gate layer), then every menu path runs
//! (sharing the full path's prefix states) and is labelled by whether it keeps the full model's
//! answer with at least `--agree-fraction` of its margin, the `agree` rule of the search. Per
//! path an L2 logistic regression on the standardized gate input predicts that label; its
//! out-of-fold AUC says how much per-input signal the gate has. Calibration comes after, with
//! `evaluator calibrate`, which leaves the gate's questions out by itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use drllm_contract::Example;
use drllm_core::cli::{ModelArgs, TaskArgs};
use drllm_core::router::{CheckpointHeader, MenuPath, PathMenu, MENU_FILE, MENU_FORMAT};
use drllm_core::search::{agrees, PathJudge};
use drllm_core::tasks::reward::RewardOptions;
use drllm_engine::{LayerPath, LoadedModel};
use drllm_trainer::diagnose::logistic::{auc, cross_validate, fit_all, folds_of, Data};
use serde::Deserialize;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    task: TaskArgs,
    /// The split of the gate's training questions (never test).
    #[arg(long, default_value = "train")]
    split: String,
    /// `prune.json` of `evaluator prune`: every path of its greedy curve (shorter than the full
    /// path) joins the menu. When it was chosen on this dataset and split, its questions (the
    /// first `limit`) are left out of the gate's.
    #[arg(long)]
    curve: Option<PathBuf>,
    /// Only the first N paths of the curve after the full path (default: all).
    #[arg(long)]
    curve_depth: Option<usize>,
    /// `diagnosis.json` of `trainer diagnose`: its safest single and double skips join the menu.
    #[arg(long)]
    diagnosis: Option<PathBuf>,
    /// Safest single skips taken from --diagnosis.
    #[arg(long, default_value_t = 3)]
    singles: usize,
    /// Safest double skips taken from --diagnosis.
    #[arg(long, default_value_t = 2)]
    pairs: usize,
    /// Search records whose questions chose the menu (e.g. the probe behind --diagnosis): left
    /// out of the gate's questions.
    #[arg(long, num_args = 1..)]
    exclude_records: Vec<PathBuf>,
    /// The gate reads the hidden state entering this layer (default: the first layer any menu
    /// path skips, the latest point where every path has run the same layers).
    #[arg(long)]
    gate_layer: Option<usize>,
    /// A path keeps the answer when it picks the full model's choice with at least this share of
    /// the full model's margin (choice-loglik; generate: the same extracted answer).
    #[arg(long, default_value_t = 0.5)]
    agree_fraction: f64,
    /// Memory for one question's cached prefix states, MiB.
    #[arg(long, default_value_t = 256)]
    reuse_budget_mib: usize,
    /// Checkpoint folder to write (path_menu.json).
    #[arg(long)]
    out: PathBuf,
}

/// The fields of `evaluator prune`'s report the menu reads.
#[derive(Deserialize)]
struct Curve {
    dataset: String,
    split: String,
    limit: Option<usize>,
    examples: usize,
    curve: Vec<CurvePoint>,
}

#[derive(Deserialize)]
struct CurvePoint {
    len: usize,
    path: Vec<u16>,
}

/// The fields of `trainer diagnose`'s report the menu reads.
#[derive(Deserialize)]
struct Diagnosis {
    questions: usize,
    single_skips: Vec<(u16, f64)>,
    pair_skips: Vec<(u16, f64)>,
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not the expected report", p.display()))
}

/// Named layer paths.
type Named = Vec<(String, Vec<u16>)>;

/// The menu's paths (full first, each once) and where they came from.
fn menu_paths(a: &Args, layers: usize) -> anyhow::Result<(Named, String)> {
    let full: Vec<u16> = (0..layers as u16).collect();
    let without = |skip: &[u16]| full.iter().copied().filter(|l| !skip.contains(l)).collect();
    let mut paths = vec![("full".to_string(), full.clone())];
    let mut from = Vec::new();
    if let Some(p) = &a.curve {
        let c: Curve = read_json(p)?;
        let shorter = c.curve.iter().filter(|q| q.len < layers);
        for q in shorter.take(a.curve_depth.unwrap_or(usize::MAX)) {
            paths.push((format!("curve-{}", q.len), q.path.clone()));
        }
        from.push(format!(
            "greedy curve on {} {} ({} questions)",
            c.dataset, c.split, c.examples
        ));
    }
    if let Some(p) = &a.diagnosis {
        let d: Diagnosis = read_json(p)?;
        for &(l, _) in d.single_skips.iter().take(a.singles) {
            paths.push((format!("skip-{l}"), without(&[l])));
        }
        for &(l, _) in d.pair_skips.iter().take(a.pairs) {
            paths.push((format!("skip-{l}+{}", l + 1), without(&[l, l + 1])));
        }
        from.push(format!(
            "safest skips of a diagnosis of {} questions",
            d.questions
        ));
    }
    let mut seen = HashSet::new();
    paths.retain(|(_, p)| seen.insert(p.clone()));
    anyhow::ensure!(
        paths.len() > 1,
        "the menu has only the full path: give --curve (prune.json) and/or --diagnosis \
         (diagnosis.json) with paths shorter than the full path"
    );
    Ok((paths, from.join("; ")))
}

/// Questions the menu was chosen on, to leave out of the gate's: the curve's (when on this
/// dataset and split) and those of --exclude-records.
fn menu_questions(a: &Args) -> anyhow::Result<HashSet<String>> {
    let mut out = HashSet::new();
    for p in &a.exclude_records {
        let recs = drllm_records::read_records(p)
            .with_context(|| format!("--exclude-records {}", p.display()))?;
        out.extend(recs.into_iter().map(|r| r.example_id));
    }
    if let Some(p) = &a.curve {
        let c: Curve = read_json(p)?;
        if c.dataset == a.task.dataset.name() && c.split == a.split {
            let task = TaskArgs {
                limit: c.limit,
                ..a.task.clone()
            };
            out.extend(task.examples(&c.split)?.into_iter().map(|e| e.id));
        }
    }
    Ok(out)
}

/// One gate question: the gate's input and, per menu path, whether it keeps the answer.
fn label(
    lm: &LoadedModel,
    ex: &Example,
    opts: &RewardOptions,
    (paths, gate, kappa, reuse): (&[LayerPath], usize, f64, usize),
) -> anyhow::Result<(Vec<f32>, Vec<bool>)> {
    let mut features = None;
    let (full, _) = drllm_core::router::evaluate_routed(lm, ex, opts, |layer, x| {
        if layer == gate {
            features = Some(PathMenu::features(x)?);
        }
        Ok(drllm_core::router::EXECUTE)
    })?;
    let mut ev = PathJudge::new(lm, ex, *opts, reuse)?;
    let mut keeps = vec![true];
    for p in &paths[1..] {
        let o = ev.evaluate(p)?;
        keeps.push(agrees(&o, &full, kappa, opts.length_normalized));
    }
    Ok((features.context("the gate layer was never reached")?, keeps))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.split != "test",
        "--split test: the gate must not see test questions; fit it on held-out train questions"
    );
    let t0 = Instant::now();
    let lm = a.model.load()?;
    let layers = lm.model.num_layers();
    let (named, from) = menu_paths(&a, layers)?;
    let paths = named
        .iter()
        .map(|(n, p)| LayerPath::new(p.clone(), layers).with_context(|| format!("path {n}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first_skip = named[1..]
        .iter()
        .map(|(_, p)| p.iter().zip(0u16..).take_while(|(a, b)| **a == *b).count())
        .min()
        .unwrap_or(0);
    let gate = a.gate_layer.unwrap_or(first_skip);
    anyhow::ensure!(
        gate <= first_skip && gate < layers,
        "--gate-layer {gate}: a menu path leaves layer {first_skip} out, and every path must run \
         the layers before the gate (use --gate-layer {first_skip} or lower)"
    );
    let excluded = menu_questions(&a)?;
    let examples: Vec<Example> = (a.task.examples(&a.split)?.into_iter())
        .filter(|e| !excluded.contains(&e.id))
        .collect();
    anyhow::ensure!(
        !examples.is_empty(),
        "no gate questions left after leaving out the {} the menu was chosen on: raise --limit",
        excluded.len()
    );
    let opts = a.task.reward_options(&lm)?;
    eprintln!(
        "menu of {} paths ({from}); gate at layer {gate}, fitted on {} {} questions",
        paths.len(),
        examples.len(),
        a.split
    );
    let bar = drllm_core::cli::progress_bar(examples.len());
    bar.set_message("labelling the menu's paths");
    let (mut x, mut y) = (Vec::new(), vec![Vec::new(); paths.len()]);
    let job = (&paths[..], gate, a.agree_fraction, a.reuse_budget_mib << 20);
    for ex in &examples {
        let (f, keeps) =
            label(&lm, ex, &opts, job).with_context(|| format!("example {}", ex.id))?;
        x.extend(f);
        for (col, k) in y.iter_mut().zip(keeps) {
            col.push(k);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let ids: Vec<String> = examples.iter().map(|e| e.id.clone()).collect();
    let mut menu = fit(&a, &lm, (&named, &x, &y, &ids), gate, from)?;
    // Calibration must leave out every question the menu was chosen on, not only the gate's.
    let mut chosen_on: Vec<String> = excluded.into_iter().collect();
    chosen_on.sort();
    menu.training_questions.extend(chosen_on);
    menu.save(&a.out)?;
    print_summary(&menu);
    eprintln!(
        "{} in {:.0} s",
        a.out.join(MENU_FILE).display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

type Labelled<'a> = (
    &'a [(String, Vec<u16>)],
    &'a [f32],
    &'a [Vec<bool>],
    &'a [String],
);

/// Fits one gate regression per path (and its out-of-fold AUC) into the checkpoint.
fn fit(
    a: &Args,
    lm: &LoadedModel,
    (named, x, y, ids): Labelled,
    gate: usize,
    from: String,
) -> anyhow::Result<PathMenu> {
    let d = lm.model.config().hidden_size;
    let folds = folds_of(ids, 5, 0);
    let (mut mean, mut scale) = (vec![0.0; d], vec![1.0; d]);
    let mut paths = Vec::with_capacity(named.len());
    for ((name, layers), labels) in named.iter().zip(y) {
        let keep_rate = labels.iter().filter(|&&k| k).count() as f64 / labels.len() as f64;
        let mut p = MenuPath {
            name: name.clone(),
            layers: layers.clone(),
            w: Vec::new(),
            b: 0.0,
            keep_rate,
            auc: None,
        };
        if paths.is_empty() {
            paths.push(p);
            continue;
        }
        let data = Data { x, d, y: labels };
        p.w = vec![0.0; d];
        match fit_all(&data) {
            Some(f) => {
                mean = f.mean.iter().map(|&v| v as f32).collect();
                scale = f.scale.iter().map(|&v| v as f32).collect();
                p.w = f.w.iter().map(|&v| v as f32).collect();
                p.b = f.b as f32;
                p.auc = auc(&cross_validate(&data, &folds, 5).0, labels);
            }
            // One class: a constant probability (0 or 1), no weights.
            None => p.b = if keep_rate > 0.5 { 30.0 } else { -30.0 },
        }
        paths.push(p);
    }
    Ok(PathMenu {
        format: MENU_FORMAT,
        header: CheckpointHeader {
            base_model: a.model.model.clone(),
            model_fingerprint: lm.fingerprint.clone(),
            num_layers: lm.model.num_layers(),
            model_hidden_size: d,
            reward: Some(a.task.reward_options(lm)?.settings()),
        },
        gate_layer: gate,
        agree_fraction: a.agree_fraction,
        mean,
        scale,
        paths,
        provenance: format!(
            "menu: {from}; gate: {} {} questions ({} after leaving out the menu's)",
            a.task.dataset.name(),
            a.split,
            ids.len()
        ),
        training_questions: ids.to_vec(),
    })
}

fn print_summary(m: &PathMenu) {
    println!("| path | layers | keeps the answer | gate AUC (out of fold) |");
    println!("| --- | --- | --- | --- |");
    for p in &m.paths {
        let auc = p.auc.map_or("–".into(), |a| format!("{a:.3}"));
        let kept = format!("{:.1}%", 100.0 * p.keep_rate);
        println!("| {} | {} | {kept} | {auc} |", p.name, p.layers.len());
    }
}
