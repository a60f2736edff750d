//! The evaluation report: per group (dataset, or dataset and MATH level) and overall — accuracy of
//! the static model, the routed model and (when records are given) the MCTS oracle; mean path
//! length under the routers; tokens/s static vs routed and the realized speedup next to the
//! structural one (L / path length) — plus each layer's decision histogram. Written as
//! `report.json`, `report.md` and `decisions.svg`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use drllm_core::router::{RouterConfig, CLASSES};
use drllm_core::tasks::reward::RewardOptions;
use serde::Serialize;

/// One example's outcome under both models.
#[derive(Debug, Clone, Serialize)]
pub struct ExampleResult {
    pub id: String,
    pub group: String,
    pub static_correct: bool,
    pub routed_correct: bool,
    /// Whether the search found a correct path for this question (when records were given).
    pub oracle_found: Option<bool>,
    /// Per layer: 0 skip, 1 execute, 2 repeat.
    pub decisions: Vec<u8>,
    /// Layer executions per token under the routers (path positions).
    pub path_len: usize,
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
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub model_fingerprint: String,
    pub dataset: String,
    pub split: String,
    pub reward: String,
    pub budget: f32,
    pub windows: usize,
    pub overall: GroupStats,
    pub groups: Vec<GroupStats>,
    /// Per layer: how many examples skip, execute, repeat it.
    pub decisions_per_layer: Vec<[usize; 3]>,
}

fn stats(group: &str, rs: &[&ExampleResult], layers: usize) -> GroupStats {
    let n = rs.len().max(1) as f64;
    let share = |f: &dyn Fn(&ExampleResult) -> bool| rs.iter().filter(|r| f(r)).count() as f64 / n;
    let oracle: Vec<bool> = rs.iter().filter_map(|r| r.oracle_found).collect();
    let sum = |f: &dyn Fn(&ExampleResult) -> f64| rs.iter().map(|r| f(r)).sum::<f64>();
    let (st, rt) = (sum(&|r| r.static_seconds), sum(&|r| r.routed_seconds));
    let mean_path_len = sum(&|r| r.path_len as f64) / n;
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
    }
}

impl Report {
    pub fn new(
        cfg: &RouterConfig,
        model: &str,
        dataset: &str,
        split: &str,
        opts: &RewardOptions,
        budget: f32,
        results: &[ExampleResult],
    ) -> Self {
        let layers = cfg.num_layers;
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
            model: model.into(),
            model_fingerprint: cfg.model_fingerprint.clone(),
            dataset: dataset.into(),
            split: split.into(),
            reward: opts.mode.to_string(),
            budget,
            windows: cfg.windows,
            overall: stats("all", &all, layers),
            groups: by.iter().map(|(g, rs)| stats(g, rs, layers)).collect(),
            decisions_per_layer: hist,
        }
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let w = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
        };
        w("report.json", serde_json::to_string_pretty(self)?)?;
        w("report.md", self.markdown())?;
        self.plot(&dir.join("decisions.svg"))
    }

    fn markdown(&self) -> String {
        let mut s = format!(
            "# Routed evaluation: {}/{}\n\nModel `{}` (fingerprint `{}`), reward `{}`, budget {}, {} windows.\n\n",
            self.dataset, self.split, self.model, self.model_fingerprint, self.reward,
            self.budget, self.windows
        );
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
