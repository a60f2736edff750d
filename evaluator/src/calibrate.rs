//! `evaluator calibrate`: certifies a router checkpoint's operating point. Every point of the
//! budget grid, from the static model to the most aggressive, runs on calibration questions held
//! out from router training and from test; each point gets its per-question losses against the
//! full model under the chosen risk and a p-value for "risk > δ" ([`crate::ltt`]); fixed-sequence
//! testing at level ε keeps the prefix of points that pass, and the cheapest kept point becomes
//! the checkpoint's operating point ([`crate::certify`]).
//!
//! The points run in testing order, each on every question, and the walk stops at the first
//! that fails (`--all-points` runs the rest for the table). A question's routed runs are shared
//! between budgets: one routed pass records the routers' probabilities at every decision, and
//! every later budget that would have decided the same at each of them runs the same path, so it
//! gets the same outcome without a pass of its own; the full model's pass (every layer forced to
//! execute) counts as one of them. The cost is one pass per distinct path per question among the
//! points tested, not one per budget.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::Context;
use drllm_contract::Example;
use drllm_core::tasks::reward::RewardOptions;
use drllm_engine::LoadedModel;

use crate::certify::{answer_of, Answer, Certificate, Point, Risk};
use crate::ltt::fixed_sequence;
use crate::router::Router;

/// The default grid of per-layer routers: the static model (0.5), then toward the pure router
/// (−0.5) and beyond.
const DEFAULT_GRID: [f32; 14] = [
    0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8,
];
/// The default grid of a path menu: the gate's threshold from the static model (1) down to 0
/// (always the cheapest path).
const MENU_GRID: [f32; 12] = [
    1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.2, 0.0,
];

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    /// Router checkpoint folder (from `trainer train`); the certificate is written into it as
    /// certificate.json.
    #[arg(long)]
    routers: PathBuf,
    #[command(flatten)]
    task: drllm_core::cli::TaskArgs,
    /// Calibration splits, never test: e.g. `--split dev --split train` (with --exclude-records
    /// for train). --limit applies to each split.
    #[arg(long = "split", required = true)]
    splits: Vec<String>,
    /// Search records (Parquet files or folders) the routers were trained on: their questions
    /// are left out, so that calibration is held out from training. Required with a train split.
    #[arg(long, num_args = 1..)]
    exclude_records: Vec<PathBuf>,
    /// What a point may lose against the full model: drop (accuracy points), harm (right →
    /// wrong), disagree (another answer; needs no gold labels).
    #[arg(long, value_enum, default_value = "drop")]
    risk: Risk,
    /// Tolerance δ: the largest acceptable risk (drop: 0.01 = one accuracy point).
    #[arg(long, default_value_t = 0.01)]
    delta: f64,
    /// Level ε: the probability that the certified point's risk exceeds δ is at most ε.
    #[arg(long, default_value_t = 0.05)]
    epsilon: f64,
    /// Knobs in testing order, from the static model to the most aggressive, comma-separated and
    /// decreasing. Default: budgets 0.5, 0.4 … −0.8 for per-layer routers; thresholds 1, 0.95,
    /// 0.9 … 0.5, 0.4, 0.2, 0 for a path menu.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    grid: Vec<f32>,
    /// Also run the points after the first that fails (none of them can be certified; for the
    /// table only). By default the walk stops there, which saves their model passes.
    #[arg(long)]
    all_points: bool,
}

/// Refuses bad flags before anything loads.
fn check_args(a: &Args) -> anyhow::Result<()> {
    if let Some(s) = a.splits.iter().find(|s| s.as_str() == "test") {
        anyhow::bail!(
            "--split {s}: calibrating on the test questions would certify on what the report \
             scores; calibrate on dev and held-out train questions"
        );
    }
    anyhow::ensure!(
        !a.splits.iter().any(|s| s == "train") || !a.exclude_records.is_empty(),
        "--split train needs --exclude-records with the search records the routers were trained \
         on, so that calibration questions are held out from training"
    );
    anyhow::ensure!(
        a.delta > 0.0 && a.delta < 1.0,
        "--delta must be in (0, 1), got {}",
        a.delta
    );
    anyhow::ensure!(
        a.epsilon > 0.0 && a.epsilon < 1.0,
        "--epsilon must be in (0, 1), got {}",
        a.epsilon
    );
    // Checked before anything loads; the kinds' default grids are in order by construction.
    anyhow::ensure!(
        a.grid.windows(2).all(|w| w[0] > w[1]),
        "--grid must be decreasing knobs (static first), got {:?}",
        a.grid
    );
    Ok(())
}

/// `--grid` (its order checked by `check_args`) or the router kind's default, each knob in the
/// kind's range.
fn grid(a: &Args, router: &Router) -> anyhow::Result<Vec<f32>> {
    let grid = match (a.grid.is_empty(), router) {
        (false, _) => a.grid.clone(),
        (true, Router::Menu(_) | Router::Token(_)) => MENU_GRID.to_vec(),
        (true, Router::PerLayer { .. }) => DEFAULT_GRID.to_vec(),
    };
    for &k in &grid {
        router.check_knob(k).context("--grid")?;
    }
    Ok(grid)
}

/// The calibration questions: every split, less those of the excluded records and those the
/// checkpoint was trained on (a path menu lists its gate's), each id once.
fn questions(a: &Args, router: &Router) -> anyhow::Result<(Vec<Example>, String)> {
    let mut excluded = HashSet::new();
    match router {
        Router::Menu(m) => excluded.extend(m.training_questions.iter().cloned()),
        Router::Token(t) => excluded.extend(t.cfg.training_questions.iter().cloned()),
        Router::PerLayer { .. } => {}
    }
    for p in &a.exclude_records {
        let recs = drllm_records::read_records(p)
            .with_context(|| format!("--exclude-records {}", p.display()))?;
        excluded.extend(recs.into_iter().map(|r| r.example_id));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut dropped = 0;
    for split in &a.splits {
        for ex in a.task.examples(split)? {
            if excluded.contains(&ex.id) {
                dropped += 1;
            } else if seen.insert(ex.id.clone()) {
                out.push(ex);
            }
        }
    }
    anyhow::ensure!(
        !out.is_empty(),
        "no calibration questions left after excluding the {} questions of --exclude-records",
        excluded.len()
    );
    let source = format!(
        "{} {} (limit {}), {dropped} questions of the routers' training left out",
        a.task.dataset.name(),
        a.splits.join(" + "),
        a.task.limit.map_or("none".into(), |l| l.to_string()),
    );
    Ok((out, source))
}

/// Runs a checkpoint's grid points on the calibration questions, sharing passes between budgets.
struct Runner<'a> {
    lm: &'a LoadedModel,
    opts: RewardOptions,
    router: &'a Router,
    grid: &'a [f32],
    examples: &'a [Example],
    /// `[question][point]`: the routed answer and path length, once a pass has decided it.
    memo: Vec<Vec<Option<(Answer, f64)>>>,
    /// Model passes run so far.
    passes: usize,
}

impl Runner<'_> {
    /// The full model's answers, one pass per question. The pass is routed with every layer
    /// forced to execute (exactly the static model), so it also decides every point whose
    /// routers would execute every layer of this question.
    fn full(&mut self) -> anyhow::Result<Vec<Answer>> {
        let bar = drllm_core::cli::progress_bar(self.examples.len());
        bar.set_message("the full model");
        let mut out = Vec::with_capacity(self.examples.len());
        for q in 0..self.examples.len() {
            let full = self
                .pass(q, self.router.static_knob(), 0)
                .with_context(|| format!("example {}", self.examples[q].id))?;
            out.push(full);
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    /// Point `k` on every question: a routed pass wherever no earlier pass decided it.
    fn point(&mut self, k: usize) -> anyhow::Result<Vec<(Answer, f64)>> {
        let bar = drllm_core::cli::progress_bar(self.examples.len());
        bar.set_message(format!("knob {}", self.grid[k]));
        let mut out = Vec::with_capacity(self.examples.len());
        for q in 0..self.examples.len() {
            if self.memo[q][k].is_none() {
                self.pass(q, self.grid[k], k)
                    .with_context(|| format!("example {}", self.examples[q].id))?;
            }
            out.push(
                self.memo[q][k]
                    .clone()
                    .expect("the pass decides its own point"),
            );
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    /// One routed pass of question `q` at knob `lead`. It records what the router saw at every
    /// decision; each point from `k` on that decides the same from it runs the same path, so it
    /// gets this outcome too.
    fn pass(&mut self, q: usize, lead: f32, k: usize) -> anyhow::Result<Answer> {
        // No prefix cache: a pass decides other knobs' points from what the router saw at
        // every prompt position, which a reused prefix was not shown.
        let r = (self.router).evaluate(self.lm, &self.examples[q], &self.opts, lead, None)?;
        self.passes += 1;
        let answer = answer_of(&r.outcome, &self.opts);
        let route = self.router.decisions(lead, &r.seen);
        for (slot, &b) in self.memo[q].iter_mut().zip(self.grid).skip(k) {
            if slot.is_none() && self.router.decisions(b, &r.seen) == route {
                *slot = Some((answer.clone(), r.executions));
            }
        }
        Ok(answer)
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    check_args(&a)?;
    let lm = a.model.load()?;
    let router = Router::load(&a.routers, &lm)?;
    let grid = grid(&a, &router)?;
    let (examples, source) = questions(&a, &router)?;
    let opts = a.task.reward_options(&lm)?;
    router.check_prompts(&a.routers, &opts.settings())?;
    eprintln!(
        "calibrating {} knobs of a {} router on {} questions: {source}",
        grid.len(),
        router.kind(),
        examples.len()
    );
    let mut runner = Runner {
        lm: &lm,
        opts,
        router: &router,
        grid: &grid,
        examples: &examples,
        memo: vec![vec![None; grid.len()]; examples.len()],
        passes: 0,
    };
    let fulls = runner.full()?;
    let mut points: Vec<Point> = Vec::new();
    for (k, &budget) in grid.iter().enumerate() {
        if points.iter().any(|p| p.p_value > a.epsilon) && !a.all_points {
            break;
        }
        let p = score(&a, budget, &fulls, &runner.point(k)?);
        eprintln!(
            "knob {budget}: {:.2} layers, accuracy {:.1}%, risk {:.4}, p-value {:.3e}",
            p.mean_layers,
            100.0 * p.accuracy,
            p.empirical_risk,
            p.p_value
        );
        points.push(p);
    }
    let p: Vec<f64> = points.iter().map(|p| p.p_value).collect();
    if let Some(last) = fixed_sequence(&p, a.epsilon) {
        points
            .iter_mut()
            .take(last + 1)
            .for_each(|p| p.certified = true);
    }
    let ids: Vec<String> = examples.iter().map(|e| e.id.clone()).collect();
    let static_accuracy = fulls.iter().filter(|f| f.correct).count() as f64 / fulls.len() as f64;
    let mut cert = Certificate::new(
        a.risk,
        a.delta,
        a.epsilon,
        source,
        &ids,
        Router::weights_hash(&a.routers)?,
        static_accuracy,
        points,
    );
    cert.untested = grid[cert.points.len()..].to_vec();
    cert.save(&a.routers)?;
    let svg = a.routers.join("certificate.svg");
    plot(&cert, &svg).with_context(|| format!("drawing {}", svg.display()))?;
    println!("{}", table(&cert));
    eprintln!("{}", cert.describe());
    eprintln!(
        "{} model passes for {} questions × {} knobs tested; certificate: {}",
        runner.passes,
        examples.len(),
        cert.points.len(),
        a.routers.join(crate::certify::CERTIFICATE_FILE).display()
    );
    Ok(())
}

/// One point's losses against the full model, risk and p-value (`certified` is decided later).
fn score(a: &Args, budget: f32, fulls: &[Answer], col: &[(Answer, f64)]) -> Point {
    let n = fulls.len().max(1) as f64;
    let losses: Vec<f64> = fulls
        .iter()
        .zip(col)
        .map(|(f, (r, _))| a.risk.loss(f, r))
        .collect();
    Point {
        budget,
        mean_layers: col.iter().map(|(_, l)| *l).sum::<f64>() / n,
        accuracy: col.iter().filter(|(r, _)| r.correct).count() as f64 / n,
        empirical_risk: a.risk.risk_of(&losses),
        p_value: a.risk.p_value(&losses, a.delta, a.epsilon),
        certified: false,
    }
}

/// The certificate as a Markdown table.
pub fn table(c: &Certificate) -> String {
    let mut s = format!(
        "static accuracy {:.1}% on {} questions; risk {:?}, δ = {}, ε = {} ({})\n\n\
         | knob | mean layers | accuracy | empirical risk | p-value | certified |\n\
         | --- | --- | --- | --- | --- | --- |\n",
        100.0 * c.static_accuracy,
        c.n,
        c.risk,
        c.delta,
        c.epsilon,
        c.method
    );
    for (i, p) in c.points.iter().enumerate() {
        let mark = match (p.certified, c.chosen == Some(i)) {
            (_, true) => "**chosen**",
            (true, false) => "yes",
            (false, _) => "no",
        };
        s += &format!(
            "| {} | {:.2} | {:.1}% | {:.4} | {:.3e} | {mark} |\n",
            p.budget,
            p.mean_layers,
            100.0 * p.accuracy,
            p.empirical_risk,
            p.p_value
        );
    }
    for b in &c.untested {
        s += &format!("| {b} | — | — | — | — | not run (the walk stopped before it) |\n");
    }
    s
}

/// `certificate.svg`: accuracy against mean layers for every tested point, certified ones filled,
/// the chosen one ringed, with the static accuracy and (for `drop`) the tolerated floor.
fn plot(c: &Certificate, path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let max_layers = c.points.iter().map(|p| p.mean_layers).fold(1.0, f64::max);
    let acc = |p: &Point| 100.0 * p.accuracy;
    let lo = c
        .points
        .iter()
        .map(acc)
        .fold(100.0 * c.static_accuracy, f64::min);
    let hi = c
        .points
        .iter()
        .map(acc)
        .fold(100.0 * c.static_accuracy, f64::max);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Certified points: risk {:?} ≤ {}, ε = {}, n = {}",
                c.risk, c.delta, c.epsilon, c.n
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..max_layers * 1.05, (lo - 2.0)..(hi + 2.0))?;
    chart
        .configure_mesh()
        .x_desc("mean layer executions")
        .y_desc("accuracy on the calibration questions (%)")
        .draw()?;
    let line = |y: f64| {
        [PathElement::new(
            vec![(0.0, y), (max_layers * 1.05, y)],
            BLACK.mix(0.4),
        )]
    };
    chart
        .draw_series(line(100.0 * c.static_accuracy))?
        .label("static model");
    if c.risk == Risk::Drop {
        chart
            .draw_series(line(100.0 * (c.static_accuracy - c.delta)))?
            .label("static − δ");
    }
    let (ok, bad) = (RGBColor(33, 102, 172), RGBColor(214, 96, 77));
    chart.draw_series(c.points.iter().map(|p| {
        let style = if p.certified {
            ok.filled()
        } else {
            bad.stroke_width(2)
        };
        Circle::new((p.mean_layers, acc(p)), 5, style)
    }))?;
    if let Some(p) = c.chosen.map(|i| &c.points[i]) {
        chart.draw_series([Circle::new((p.mean_layers, acc(p)), 10, ok.stroke_width(2))])?;
    }
    chart.configure_series_labels().border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
