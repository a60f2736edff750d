//! The token router's training loop: examples in a seeded order per epoch, gradients summed over
//! a minibatch, AdamW, the Gumbel temperature annealed geometrically over all steps. After every
//! epoch (and every `save_every` steps) the checkpoint is written atomically with its history,
//! so a killed run resumes (`--resume`) from the last save; `metrics.csv` and `training.svg`
//! (loss and execute share per step) are written beside it.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;
use drllm_core::router::{TokenEpoch, TokenRouter};
use drllm_engine::LoadedModel;
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};

use crate::adamw::AdamW;
use crate::tokens::{token_loss, LossSettings, TokenExample};
use crate::{Error, Result};

/// Per-step metrics file inside the checkpoint folder.
pub const STEPS_FILE: &str = "metrics.csv";
/// The loss / execute-share plot inside the checkpoint folder.
pub const PLOT_FILE: &str = "training.svg";

/// One optimizer step's means.
#[derive(Debug, Clone, Copy)]
pub struct StepRow {
    /// 1-based step.
    pub step: usize,
    /// Loss.
    pub loss: f64,
    /// Distillation part.
    pub kd: f64,
    /// Execute share.
    pub execute: f64,
    /// Gumbel temperature.
    pub tau: f64,
}

/// Trains `router` on `examples` up to its config's epochs, from its `steps_done`, writing the
/// checkpoint into `out`. `settings` gives everything but τ, which follows the schedule.
pub fn train_tokens(
    lm: &LoadedModel,
    router: &mut TokenRouter,
    examples: &[TokenExample],
    settings: LossSettings,
    out: &Path,
    save_every: usize,
) -> Result<Vec<StepRow>> {
    let tr = router.cfg.training.clone();
    let per_epoch = examples.len().div_ceil(tr.batch_size);
    let total = per_epoch * tr.epochs;
    let mut opt = AdamW::new(router.vars(), tr.lr, 0.0)?;
    let mut rows = read_steps(out);
    rows.retain(|r| r.step <= router.cfg.steps_done);
    let bar = drllm_core::cli::progress_bar(total);
    bar.set_position(router.cfg.steps_done as u64);
    let mut rng = StdRng::seed_from_u64(tr.seed ^ 0x9e37);
    while router.cfg.steps_done < total {
        let epoch = router.cfg.steps_done / per_epoch;
        let mut order: Vec<usize> = (0..examples.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(tr.seed + epoch as u64));
        let t0 = Instant::now();
        let first = router.cfg.steps_done % per_epoch;
        let mut sums = [0f64; 3];
        for batch in order.chunks(tr.batch_size).skip(first) {
            let step = router.cfg.steps_done;
            let frac = step as f64 / total.saturating_sub(1).max(1) as f64;
            let tau = tr.tau_start * (tr.tau_end / tr.tau_start).powf(frac);
            let s = LossSettings { tau, ..settings };
            let mut grads: Option<Vec<Tensor>> = None;
            let mut means = [0f64; 3];
            for &i in batch {
                let parts = token_loss(&lm.model, router, &examples[i], &s, &mut rng)?;
                let store = parts.loss.backward()?;
                let g = router
                    .vars()
                    .iter()
                    .map(|v| {
                        let g = store.get(v.as_tensor()).cloned();
                        g.map_or_else(|| v.as_tensor().zeros_like(), Ok)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                grads = Some(match grads {
                    None => g,
                    Some(acc) => acc
                        .iter()
                        .zip(&g)
                        .map(|(a, b)| a + b)
                        .collect::<candle_core::Result<_>>()?,
                });
                let loss = parts.loss.to_scalar::<f32>()? as f64;
                means = [
                    means[0] + loss,
                    means[1] + parts.kd,
                    means[2] + parts.execute,
                ];
            }
            let b = batch.len() as f64;
            let grads: Vec<Tensor> = grads
                .expect("a batch has an example")
                .iter()
                .map(|g| g / b)
                .collect::<candle_core::Result<_>>()?;
            opt.step(&grads)?;
            router.cfg.steps_done += 1;
            let row = StepRow {
                step: router.cfg.steps_done,
                loss: means[0] / b,
                kd: means[1] / b,
                execute: means[2] / b,
                tau,
            };
            for (s, m) in sums.iter_mut().zip([row.loss, row.kd, row.execute]) {
                *s += m;
            }
            rows.push(row);
            bar.set_message(format!(
                "loss {:.4} kd {:.4} execute {:.3} tau {:.2}",
                row.loss, row.kd, row.execute, tau
            ));
            bar.inc(1);
            let end_of_epoch = router.cfg.steps_done % per_epoch == 0;
            if end_of_epoch || router.cfg.steps_done % save_every.max(1) == 0 {
                if end_of_epoch {
                    let n = (per_epoch - first) as f64;
                    router.cfg.history.push(TokenEpoch {
                        epoch: epoch + 1,
                        loss: sums[0] / n,
                        kd: sums[1] / n,
                        execute: sums[2] / n,
                        seconds: t0.elapsed().as_secs_f64(),
                    });
                }
                save(router, out, &rows)?;
            }
        }
    }
    bar.finish_and_clear();
    save(router, out, &rows)?;
    Ok(rows)
}

fn save(router: &TokenRouter, out: &Path, rows: &[StepRow]) -> Result<()> {
    router.save(out)?;
    let ioerr = |p: &Path, e: std::io::Error| Error::Input {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    let csv = out.join(STEPS_FILE);
    let mut f = std::fs::File::create(&csv).map_err(|e| ioerr(&csv, e))?;
    writeln!(f, "step,loss,kd,execute,tau").map_err(|e| ioerr(&csv, e))?;
    for r in rows {
        writeln!(f, "{},{},{},{},{}", r.step, r.loss, r.kd, r.execute, r.tau)
            .map_err(|e| ioerr(&csv, e))?;
    }
    let svg = out.join(PLOT_FILE);
    plot(rows, router.cfg.training.target, &svg).map_err(|e| Error::Input {
        path: svg.display().to_string(),
        reason: e.to_string(),
    })
}

/// The steps a previous run wrote (for a resumed run's metrics and plot); none when absent.
fn read_steps(out: &Path) -> Vec<StepRow> {
    let Ok(text) = std::fs::read_to_string(out.join(STEPS_FILE)) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let v: Vec<f64> = l.split(',').filter_map(|x| x.parse().ok()).collect();
            (v.len() == 5).then(|| StepRow {
                step: v[0] as usize,
                loss: v[1],
                kd: v[2],
                execute: v[3],
                tau: v[4],
            })
        })
        .collect()
}

fn plot(
    rows: &[StepRow],
    target: f64,
    path: &Path,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let steps = rows.last().map_or(1, |r| r.step).max(1) as f64;
    let top = rows.iter().map(|r| r.kd).fold(0.0, f64::max).max(1e-3) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Token router training: distillation loss and execute share (target {target})"),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .right_y_label_area_size(56)
        .build_cartesian_2d(0f64..steps, 0f64..top)?
        .set_secondary_coord(0f64..steps, 0f64..1f64);
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .y_desc("T²·KL to the full model")
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("share of token-layers executed")
        .draw()?;
    let (kd_c, ex_c) = (RGBColor(33, 102, 172), RGBColor(214, 96, 77));
    chart
        .draw_series([PathElement::new(
            rows.iter()
                .map(|r| (r.step as f64, r.kd))
                .collect::<Vec<_>>(),
            kd_c,
        )])?
        .label("KD loss")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], kd_c));
    chart
        .draw_secondary_series([PathElement::new(
            rows.iter()
                .map(|r| (r.step as f64, r.execute))
                .collect::<Vec<_>>(),
            ex_c,
        )])?
        .label("execute share")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], ex_c));
    chart.draw_secondary_series([PathElement::new(
        vec![(0.0, target), (steps, target)],
        ex_c.mix(0.4),
    )])?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}
