//! `evaluator prune`: the greedy layer-pruning curve of a model on one split ([`crate::prune`]),
//! written as `prune.json`, `prune.md` and `prune.svg` (accuracy against layers executed, the full
//! model's accuracy as a reference line) and printed as JSON on stdout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::prune::{CurveKey, CurvePoint, Pruner, Source, DEFAULT_REUSE_MIB};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    #[command(flatten)]
    task: drllm_core::cli::TaskArgs,
    /// The split to prune on: train, dev or test for ARC; train or validation for DART.
    #[arg(long)]
    split: String,
    /// Stop at paths of this many layers (default: L − 10, 20 for the 30-layer default model).
    #[arg(long)]
    down_to: Option<usize>,
    /// Memory per example for cached hidden states after path prefixes, MiB (0: no reuse; the
    /// curve is the same either way, only slower). Every example keeps its cache for the whole
    /// run: up to examples × this in all (150 ARC questions at 16 MiB: about 3 GiB resident).
    #[arg(long, default_value_t = DEFAULT_REUSE_MIB)]
    reuse_budget_mib: usize,
    /// Only these layers may be removed, comma-separated (default: any). Each step then costs
    /// as many paths as listed layers remain instead of L: e.g. the safest single skips of
    /// `trainer diagnose`, to choose the curve on a thousand questions.
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<u16>>,
    /// Folder for prune.json, prune.md and prune.svg.
    #[arg(long)]
    out: PathBuf,
}

/// What `prune.json` holds (and stdout shows).
#[derive(Debug, Serialize)]
struct PruneReport {
    model: String,
    model_fingerprint: String,
    dataset: String,
    split: String,
    limit: Option<usize>,
    reward: String,
    length_normalized: bool,
    num_layers: usize,
    down_to: usize,
    /// The only layers the curve could remove (`--layers`); absent: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    removable: Option<Vec<u16>>,
    examples: usize,
    /// `computed`, `cache` (an at least as deep cached curve) or `cache-extended`.
    source: Source,
    cache_file: PathBuf,
    seconds: f64,
    /// One entry per length, from L down to `down_to`.
    curve: Vec<CurvePoint>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let examples = a.task.examples(&a.split)?;
    let lm = a.model.load()?;
    let layers = lm.model.num_layers();
    let down_to = a.down_to.unwrap_or(layers.saturating_sub(10));
    anyhow::ensure!(
        down_to <= layers,
        "--down-to {down_to} is more than the model's {layers} layers"
    );
    let opts = a.task.reward_options(&lm)?;
    let key = CurveKey {
        removable: a.layers.clone(),
        ..CurveKey::new(&a.model, &lm, &a.task, &a.split, &examples, &opts)?
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let pruner = Pruner {
        lm: &lm,
        examples: &examples,
        opts,
        reuse_budget_bytes: a.reuse_budget_mib << 20,
        removable: a.layers.as_deref(),
    };
    let t0 = Instant::now();
    let (curve, source) = pruner.curve(&key, down_to)?;
    let report = PruneReport {
        model: lm.id.clone(),
        model_fingerprint: lm.fingerprint.clone(),
        dataset: key.dataset.clone(),
        split: a.split.clone(),
        limit: a.task.limit,
        reward: key.reward.clone(),
        length_normalized: key.length_normalized,
        num_layers: layers,
        down_to,
        removable: a.layers.clone(),
        examples: examples.len(),
        source,
        cache_file: key.file(),
        seconds: t0.elapsed().as_secs_f64(),
        curve,
    };
    report.write(&a.out)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

impl PruneReport {
    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let w = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
        };
        w("prune.json", serde_json::to_string_pretty(self)?)?;
        w("prune.md", self.markdown())?;
        let svg = dir.join("prune.svg");
        self.plot(&svg)
            .with_context(|| format!("drawing {}", svg.display()))
    }

    fn markdown(&self) -> String {
        let limit = self
            .limit
            .map_or(String::new(), |n| format!(" (first {n})"));
        let mut s =
            format!(
            "# Greedy layer pruning: {}/{}{limit}\n\nModel `{}` (fingerprint `{}`), reward `{}`, \
             {} examples. Each step removes the layer whose removal keeps the accuracy highest \
             (ties: higher summed gold margin, then the lower layer).\n\n",
            self.dataset, self.split, self.model, self.model_fingerprint, self.reward, self.examples
        );
        s += "| layers | accuracy | correct | mean margin | removed layer | path |\n";
        s += "| --- | --- | --- | --- | --- | --- |\n";
        for p in &self.curve {
            let path: Vec<String> = p.path.iter().map(u16::to_string).collect();
            s += &format!(
                "| {} | {:.1}% | {}/{} | {} | {} | `{}` |\n",
                p.len,
                100.0 * p.accuracy,
                p.correct,
                p.examples,
                p.mean_margin.map_or("—".into(), |m| format!("{m:.3}")),
                p.removed_layer.map_or("—".into(), |l| l.to_string()),
                path.join(",")
            );
        }
        s
    }

    /// Accuracy (%) against layers executed, with the full model's accuracy as a dashed line.
    fn plot(&self, path: &Path) -> anyhow::Result<()> {
        use plotters::prelude::*;
        let full = self.curve.first().map_or(0.0, |p| 100.0 * p.accuracy);
        let (x0, x1) = (self.down_to.saturating_sub(1), self.num_layers + 1);
        let top = self
            .curve
            .iter()
            .map(|p| 100.0 * p.accuracy)
            .fold(full, f64::max);
        let root = SVGBackend::new(path, (800, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Greedy layer pruning — {} {}", self.dataset, self.split),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(x0 as f64..x1 as f64, 0f64..(top + 10.0).min(100.0))?;
        chart
            .configure_mesh()
            .x_labels(x1 - x0 + 1)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_desc("layers executed per token")
            .y_desc("accuracy (%)")
            .draw()?;
        let blue = RGBColor(33, 102, 172);
        let points: Vec<(f64, f64)> = self
            .curve
            .iter()
            .map(|p| (p.len as f64, 100.0 * p.accuracy))
            .collect();
        chart
            .draw_series([PathElement::new(points.clone(), blue.stroke_width(2))])?
            .label("greedy pruned")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], blue.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, blue.filled())))?;
        let red = RGBColor(214, 96, 77);
        // Dashes of a fifth of a layer, as plain segments (no series features needed).
        let dashes = (0..(x1 - x0) * 5).step_by(2).map(|i| {
            let x = x0 as f64 + i as f64 / 5.0;
            PathElement::new([(x, full), (x + 0.2, full)], red.stroke_width(1))
        });
        chart
            .draw_series(dashes)?
            .label(format!("full model ({full:.1}%)"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], red));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}
