//! The evaluation report: per group (dataset, or dataset and MATH level) and overall — accuracy of
//! the static model, the routed model and (when records are given) the MCTS oracle; mean path
//! length under the routers; tokens/s static vs routed and the realized speedup next to the
//! structural one (L / path length) — plus each layer's decision histogram. With `--prune-split`
//! also the static-pruned baseline (the greedy-pruned fixed path of the routers' length). Every
//! accuracy carries a 95% Wilson interval and every routed − baseline difference a 95% paired
//! bootstrap interval ([`crate::stats`]). Written as `report.json`, `report.md` and
//! `decisions.svg`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use drllm_core::router::CLASSES;
use drllm_core::tasks::reward::RewardOptions;
use drllm_engine::LoadedModel;
use serde::Serialize;

use crate::certify::{Answer, Held};
use crate::router::Router;
use crate::stats::{paired_bootstrap, wilson, PairedDiff, RESAMPLES, SEED};

/// One example's outcome under both models.
#[derive(Debug, Clone, Serialize)]
pub struct ExampleResult {
    pub id: String,
    pub group: String,
    pub static_correct: bool,
    pub routed_correct: bool,
    /// The chosen option (choice-loglik) or extracted answer (generate) of each model.
    pub static_answer: Option<String>,
    pub routed_answer: Option<String>,
    /// Under the static-pruned path (with `--prune-split`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_pruned_correct: Option<bool>,
    /// Whether the search found a correct path for this question (when records were given).
    pub oracle_found: Option<bool>,
    /// Per layer: 0 skip, 1 execute, 2 repeat.
    pub decisions: Vec<u8>,
    /// Mean layer executions per token under the routers (path positions; for a token router
    /// the token-layers run over the rows).
    pub path_len: f64,
    pub static_tokens: usize,
    pub routed_tokens: usize,
    pub static_seconds: f64,
    pub routed_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupStats {
    pub group: String,
    pub examples: usize,
    pub static_accuracy: f64,
    pub routed_accuracy: f64,
    /// Over the `oracle_examples` questions the records cover.
    pub oracle_accuracy: Option<f64>,
    pub oracle_examples: usize,
    pub num_layers: usize,
    pub mean_path_len: f64,
    pub static_tokens_per_s: f64,
    pub routed_tokens_per_s: f64,
    /// Static time / routed time over the same examples.
    pub realized_speedup: f64,
    /// L / mean path length.
    pub structural_speedup: f64,
    /// Accuracy of the static-pruned path (with `--prune-split`).
    pub static_pruned_accuracy: Option<f64>,
    /// 95% Wilson score intervals of the accuracies.
    pub static_accuracy_ci: [f64; 2],
    pub routed_accuracy_ci: [f64; 2],
    pub static_pruned_accuracy_ci: Option<[f64; 2]>,
    /// Routed minus static accuracy on the same examples, 95% paired bootstrap interval.
    pub routed_minus_static: PairedDiff,
    /// Routed minus static-pruned accuracy (with `--prune-split`).
    pub routed_minus_static_pruned: Option<PairedDiff>,
}

/// The static model pruned to the routers' length: greedy layer pruning ([`crate::prune`]) on
/// another split, down to the routed mean path length rounded; that fixed path on every example.
#[derive(Debug, Clone, Serialize)]
pub struct StaticPruned {
    /// Path positions: the routed mean path length, rounded (the full path when ≥ L).
    pub len: usize,
    pub path: Vec<u16>,
    /// The layers pruning removed, in removal order.
    pub removed_layers: Vec<u16>,
    /// Where the path was chosen: dataset, split, its limit and examples, the path's accuracy
    /// there (none when the full path needed no choosing).
    pub chosen_on_dataset: String,
    pub chosen_on_split: String,
    pub chosen_on_limit: Option<usize>,
    pub chosen_on_examples: usize,
    pub chosen_on_accuracy: Option<f64>,
    /// `computed`, `cache`, `cache-extended` (the pruning curve), or `full-path`.
    pub source: String,
    /// Accuracy on the evaluated examples (also `overall.static_pruned_accuracy`).
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub model_fingerprint: String,
    pub dataset: String,
    pub split: String,
    pub reward: String,
    /// `per-layer` (Dr.LLM's routers) or `path-menu`.
    pub router_kind: String,
    /// The knob: the budget (per-layer) or the gate's threshold τ (path menu).
    pub budget: f32,
    /// Prompt windows of per-layer routers (0: a path menu).
    pub windows: usize,
    pub overall: GroupStats,
    pub groups: Vec<GroupStats>,
    /// Per layer: how many examples skip, execute, repeat it.
    pub decisions_per_layer: Vec<[usize; 3]>,
    /// With `--prune-split`: the static-pruned baseline.
    pub static_pruned: Option<StaticPruned>,
    /// How the intervals are computed.
    pub intervals: String,
    /// Where the budget came from: --budget, the certificate, or the static default.
    pub budget_source: String,
    /// With a certified point: whether the certified risk held on these questions.
    pub certificate: Option<Held>,
}

impl ExampleResult {
    /// (static, routed) answers, as the certificate's risks compare them.
    pub fn answers(&self) -> (Answer, Answer) {
        let a = |correct, answer: &Option<String>| Answer {
            correct,
            answer: answer.clone(),
        };
        (
            a(self.static_correct, &self.static_answer),
            a(self.routed_correct, &self.routed_answer),
        )
    }
}

/// The static-pruned accuracy, accuracy intervals and paired differences of a group.
struct Uncertainty {
    pruned_accuracy: Option<f64>,
    static_ci: [f64; 2],
    routed_ci: [f64; 2],
    pruned_ci: Option<[f64; 2]>,
    routed_minus_static: PairedDiff,
    routed_minus_pruned: Option<PairedDiff>,
}

fn uncertainty(rs: &[&ExampleResult]) -> Uncertainty {
    let stat: Vec<bool> = rs.iter().map(|r| r.static_correct).collect();
    let routed: Vec<bool> = rs.iter().map(|r| r.routed_correct).collect();
    let pruned: Option<Vec<bool>> = rs.iter().map(|r| r.static_pruned_correct).collect();
    let pruned = pruned.filter(|p| !p.is_empty());
    let ci = |v: &[bool]| wilson(v.iter().filter(|&&c| c).count(), v.len());
    Uncertainty {
        pruned_accuracy: pruned
            .as_deref()
            .map(|p| p.iter().filter(|&&c| c).count() as f64 / p.len() as f64),
        static_ci: ci(&stat),
        routed_ci: ci(&routed),
        pruned_ci: pruned.as_deref().map(ci),
        routed_minus_static: paired_bootstrap(&routed, &stat, RESAMPLES, SEED),
        routed_minus_pruned: pruned
            .as_deref()
            .map(|p| paired_bootstrap(&routed, p, RESAMPLES, SEED)),
    }
}

fn stats(group: &str, rs: &[&ExampleResult], layers: usize) -> GroupStats {
    let n = rs.len().max(1) as f64;
    let share = |f: &dyn Fn(&ExampleResult) -> bool| rs.iter().filter(|r| f(r)).count() as f64 / n;
    let oracle: Vec<bool> = rs.iter().filter_map(|r| r.oracle_found).collect();
    let sum = |f: &dyn Fn(&ExampleResult) -> f64| rs.iter().map(|r| f(r)).sum::<f64>();
    let (st, rt) = (sum(&|r| r.static_seconds), sum(&|r| r.routed_seconds));
    let mean_path_len = sum(&|r| r.path_len) / n;
    let u = uncertainty(rs);
    GroupStats {
        group: group.into(),
        examples: rs.len(),
        static_accuracy: share(&|r| r.static_correct),
        routed_accuracy: share(&|r| r.routed_correct),
        oracle_accuracy: (!oracle.is_empty())
            .then(|| oracle.iter().filter(|&&f| f).count() as f64 / oracle.len() as f64),
        oracle_examples: oracle.len(),
        num_layers: layers,
        mean_path_len,
        static_tokens_per_s: sum(&|r| r.static_tokens as f64) / st.max(1e-12),
        routed_tokens_per_s: sum(&|r| r.routed_tokens as f64) / rt.max(1e-12),
        realized_speedup: st / rt.max(1e-12),
        structural_speedup: layers as f64 / mean_path_len.max(1e-12),
        static_pruned_accuracy: u.pruned_accuracy,
        static_accuracy_ci: u.static_ci,
        routed_accuracy_ci: u.routed_ci,
        static_pruned_accuracy_ci: u.pruned_ci,
        routed_minus_static: u.routed_minus_static,
        routed_minus_static_pruned: u.routed_minus_pruned,
    }
}

impl Report {
    pub fn new(
        router: &Router,
        lm: &LoadedModel,
        (dataset, split): (&str, &str),
        opts: &RewardOptions,
        budget: f32,
        results: &[ExampleResult],
    ) -> Self {
        let layers = lm.model.num_layers();
        let mut by: BTreeMap<&str, Vec<&ExampleResult>> = BTreeMap::new();
        for r in results {
            by.entry(r.group.as_str()).or_default().push(r);
        }
        let mut hist = vec![[0usize; 3]; layers];
        for r in results {
            for (l, &d) in r.decisions.iter().enumerate() {
                hist[l][d.min(2) as usize] += 1;
            }
        }
        let all: Vec<&ExampleResult> = results.iter().collect();
        Self {
            model: lm.id.clone(),
            model_fingerprint: lm.fingerprint.clone(),
            dataset: dataset.into(),
            split: split.into(),
            reward: opts.mode.to_string(),
            router_kind: router.kind().into(),
            budget,
            windows: router.windows(),
            overall: stats("all", &all, layers),
            groups: by.iter().map(|(g, rs)| stats(g, rs, layers)).collect(),
            decisions_per_layer: hist,
            static_pruned: None,
            budget_source: String::new(),
            certificate: None,
            intervals: format!(
                "accuracies: 95% Wilson score interval; differences (routed − baseline, same \
                 examples): 95% paired bootstrap percentile interval, {RESAMPLES} resamples of \
                 the examples with replacement, seed {SEED:#x}"
            ),
        }
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let w = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
        };
        w("report.json", serde_json::to_string_pretty(self)?)?;
        w("report.md", self.markdown() + &self.baselines_markdown())?;
        self.plot(&dir.join("decisions.svg"))
    }

    /// What the knob is for this router kind.
    fn knob_name(&self) -> &'static str {
        if self.router_kind == "path-menu" {
            "gate threshold τ"
        } else {
            "budget"
        }
    }

    fn markdown(&self) -> String {
        let mut s = format!(
            "# Routed evaluation: {}/{}\n\nModel `{}` (fingerprint `{}`), reward `{}`, {} router, {} {}.\n\n",
            self.dataset, self.split, self.model, self.model_fingerprint, self.reward,
            self.router_kind, self.knob_name(), self.budget
        );
        s += &format!("{} from: {}.\n\n", self.knob_name(), self.budget_source);
        if let Some(h) = &self.certificate {
            s += &format!(
                "Certificate: risk {:?} ≤ {} at level ε = {} (calibration: {} questions, risk {}). \
                 On these {} questions the risk is {:.4}: **{}**.\n\n",
                h.risk,
                h.delta,
                h.epsilon,
                h.calibration_questions,
                h.calibration_risk.map_or("—".into(), |r| format!("{r:.4}")),
                h.evaluated_questions,
                h.evaluated_risk,
                if h.held { "held" } else { "did not hold" }
            );
        }
        s += "| group | examples | static acc | routed acc | oracle acc | mean path length (of L) | tokens/s static | tokens/s routed | realized speedup | structural speedup |\n";
        s += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
        for g in self.groups.iter().chain(std::iter::once(&self.overall)) {
            let oracle = g.oracle_accuracy.map_or("—".into(), |a| {
                format!("{:.1}% (n={})", 100.0 * a, g.oracle_examples)
            });
            s += &format!(
                "| {} | {} | {:.1}% | {:.1}% | {} | {:.2} ({}) | {:.0} | {:.0} | {:.3}× | {:.3}× |\n",
                g.group, g.examples, 100.0 * g.static_accuracy, 100.0 * g.routed_accuracy, oracle,
                g.mean_path_len, g.num_layers, g.static_tokens_per_s, g.routed_tokens_per_s,
                g.realized_speedup, g.structural_speedup
            );
        }
        s += "\n## Decisions per layer (examples)\n\n| layer | skip | execute | repeat |\n| --- | --- | --- | --- |\n";
        for (l, h) in self.decisions_per_layer.iter().enumerate() {
            s += &format!("| {l} | {} | {} | {} |\n", h[0], h[1], h[2]);
        }
        s
    }

    /// The baselines section: accuracies with intervals, paired differences per group.
    fn baselines_markdown(&self) -> String {
        let mut s = "\n## Baselines and paired differences\n\n".to_string();
        s += &format!("Intervals: {}.\n\n", self.intervals);
        if let Some(p) = &self.static_pruned {
            let path: Vec<String> = p.path.iter().map(u16::to_string).collect();
            let removed: Vec<String> = p.removed_layers.iter().map(u16::to_string).collect();
            let limit = p
                .chosen_on_limit
                .map_or(String::new(), |n| format!(", first {n}"));
            let there = p
                .chosen_on_accuracy
                .map_or(String::new(), |a| format!(", {:.1}% there", 100.0 * a));
            s += &format!(
                "Static-pruned: {} of {} layers, greedy pruning on {}/{}{limit} ({} examples{there}; \
                 curve: {}), layers removed in order: {}. Path: `{}`.\n\n",
                p.len,
                self.overall.num_layers,
                p.chosen_on_dataset,
                p.chosen_on_split,
                p.chosen_on_examples,
                p.source,
                if removed.is_empty() { "none".into() } else { removed.join(", ") },
                path.join(",")
            );
        }
        let pct = |a: f64, ci: [f64; 2]| {
            format!(
                "{:.1}% [{:.1}, {:.1}]",
                100.0 * a,
                100.0 * ci[0],
                100.0 * ci[1]
            )
        };
        s += "| group | static acc [95% CI] | static-pruned acc [95% CI] | routed acc [95% CI] |\n";
        s += "| --- | --- | --- | --- |\n";
        let groups: Vec<&GroupStats> = self.groups.iter().chain([&self.overall]).collect();
        for g in &groups {
            let pruned = g
                .static_pruned_accuracy
                .zip(g.static_pruned_accuracy_ci)
                .map_or("—".into(), |(a, ci)| pct(a, ci));
            s += &format!(
                "| {} | {} | {} | {} |\n",
                g.group,
                pct(g.static_accuracy, g.static_accuracy_ci),
                pruned,
                pct(g.routed_accuracy, g.routed_accuracy_ci)
            );
        }
        s += "\n";
        for g in &groups {
            s += &format!(
                "- {}: routed − static: {}",
                g.group,
                g.routed_minus_static.describe()
            );
            if let Some(d) = &g.routed_minus_static_pruned {
                s += &format!("; routed − static-pruned: {}", d.describe());
            }
            s += "\n";
        }
        s
    }

    /// Stacked bars: per layer, the share of examples that skip, execute and repeat it.
    fn plot(&self, path: &Path) -> anyhow::Result<()> {
        use plotters::prelude::*;
        let layers = self.decisions_per_layer.len() as u32;
        let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Router decisions per layer — {} {}",
                    self.dataset, self.split
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0u32..layers, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("layer")
            .y_desc("share of examples")
            .draw()?;
        let colors = [
            RGBColor(214, 96, 77),
            RGBColor(146, 197, 222),
            RGBColor(33, 102, 172),
        ];
        for (c, (name, color)) in CLASSES.iter().zip(colors).enumerate() {
            let bars = self
                .decisions_per_layer
                .iter()
                .enumerate()
                .map(move |(l, h)| {
                    let n = h.iter().sum::<usize>().max(1) as f64;
                    let below: usize = h[..c].iter().sum();
                    let (y0, y1) = (below as f64 / n, (below + h[c]) as f64 / n);
                    Rectangle::new([(l as u32, y0), (l as u32 + 1, y1)], color.filled())
                });
            chart.draw_series(bars)?.label(*name).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
            });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}
