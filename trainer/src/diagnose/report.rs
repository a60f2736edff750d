//! What `trainer diagnose` writes: `diagnosis.json` (everything), `diagnosis.md` (the table a
//! person reads) and `diagnosis.svg` (AUC per layer with its interval, beside the keep rate).

use std::fmt::Write as _;
use std::path::Path;

use super::Diagnosis;
use crate::{Error, Result};

/// Writes the three files into `dir` (created if missing).
pub fn write(d: &Diagnosis, dir: &Path) -> Result<()> {
    let err = |p: &Path, e: String| Error::Input {
        path: p.display().to_string(),
        reason: e,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e.to_string()))?;
    let json = dir.join("diagnosis.json");
    let text = serde_json::to_string_pretty(d).map_err(|e| err(&json, e.to_string()))?;
    std::fs::write(&json, text).map_err(|e| err(&json, e.to_string()))?;
    let md = dir.join("diagnosis.md");
    std::fs::write(&md, markdown(d)).map_err(|e| err(&md, e.to_string()))?;
    let svg = dir.join("diagnosis.svg");
    plot(d, &svg).map_err(|e| err(&svg, e.to_string()))
}

/// The per-layer table and the safest skips.
pub fn markdown(d: &Diagnosis) -> String {
    let mut s = format!(
        "# Per-input signal: {} questions, success rule `{}`, {}-fold CV by question\n\n{}\n\n",
        d.questions, d.success, d.options.folds, d.verdict
    );
    s.push_str("| layer | keep rate | AUC [95%] | gain, nats/question [95%] | verdict |\n");
    s.push_str("| ---: | ---: | --- | --- | --- |\n");
    for r in &d.per_layer {
        let auc = match (r.auc, r.auc_ci) {
            (Some(a), Some([lo, hi])) => format!("{a:.3} [{lo:.3}, {hi:.3}]"),
            _ => "–".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {:.3} | {auc} | {:+.4} [{:+.4}, {:+.4}] | {} |",
            r.layer, r.keep_rate, r.gain, r.gain_ci[0], r.gain_ci[1], r.verdict
        );
    }
    let list = |v: &[(usize, f64)], pair: bool| {
        v.iter()
            .take(8)
            .map(|(l, k)| {
                if pair {
                    format!("{}+{} ({k:.3})", l, l + 1)
                } else {
                    format!("{l} ({k:.3})")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        s,
        "\nSafest single skips (keep rate): {}\n\nSafest double skips: {}\n",
        list(&d.single_skips, false),
        list(&d.pair_skips, true)
    );
    s
}

fn plot(d: &Diagnosis, path: &Path) -> std::result::Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let l = d.layers as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Does the router input predict a harmless skip? {} questions, rule {}",
                d.questions, d.success
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(-0.5f64..l - 0.5, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("layer")
        .y_desc("cross-validated AUC / keep rate")
        .draw()?;
    chart
        .draw_series([PathElement::new(
            vec![(-0.5, 0.5), (l - 0.5, 0.5)],
            BLACK.mix(0.4),
        )])?
        .label("AUC of chance");
    let (auc_c, keep_c) = (RGBColor(33, 102, 172), RGBColor(214, 96, 77));
    chart
        .draw_series(d.per_layer.iter().filter_map(|r| {
            let [lo, hi] = r.auc_ci?;
            Some(PathElement::new(
                vec![(r.layer as f64, lo), (r.layer as f64, hi)],
                auc_c.stroke_width(2),
            ))
        }))?
        .label("AUC, 95% interval")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], auc_c.stroke_width(2)));
    chart.draw_series(d.per_layer.iter().filter_map(|r| {
        let style = if r.verdict == "signal" {
            auc_c.filled()
        } else {
            auc_c.stroke_width(1)
        };
        Some(Circle::new((r.layer as f64, r.auc?), 4, style))
    }))?;
    chart
        .draw_series([PathElement::new(
            d.per_layer
                .iter()
                .map(|r| (r.layer as f64, r.keep_rate))
                .collect::<Vec<_>>(),
            keep_c.stroke_width(2),
        )])?
        .label("keep rate (skipping it keeps the answer)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], keep_c.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}
