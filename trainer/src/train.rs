//! Fitting the routers from cached inputs: minibatches of examples, all layers at once, focal
//! loss with effective-number class weights, AdamW with linear warmup then cosine decay, gradient
//! accumulation. After every epoch: metrics on train and validation, and the checkpoint and
//! metrics files rewritten, so an interrupted run loses at most one epoch.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use drllm_core::router::{
    argmax3, argmax_last, Confusion, EpochMetrics, Metrics, RouterConfig, Routers,
};

use crate::loss::{class_weights, focal_loss};
use crate::step::step;

/// Per-layer target distributions of one example (skip, execute, repeat).
pub type Labels<'a> = &'a [[f32; 3]];
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::adamw::AdamW;
use crate::feature_cache::Features;
use crate::{Error, Result};

/// Examples by their row in the feature cache, with their per-layer target distributions.
pub struct Split<'a> {
    /// Rows of the feature cache.
    pub rows: Vec<usize>,
    /// Each row's per-layer target distributions.
    pub targets: Vec<Labels<'a>>,
}

/// Target decision counts (skip, execute, repeat): the targets' probability mass per class,
/// rounded (exact counts for one-hot targets).
pub fn class_counts(targets: &[Labels]) -> [u64; 3] {
    let mut c = [0f64; 3];
    for t in targets {
        for q in t.iter() {
            for k in 0..3 {
                c[k] += q[k] as f64;
            }
        }
    }
    c.map(|x| x.round() as u64)
}

/// Learning rate at `step` of `total`: linear warmup over `warmup` steps, then cosine to 0.
pub fn learning_rate(lr: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let rest = (total - warmup).max(1) as f64;
    let t = ((step - warmup) as f64 / rest).min(1.0);
    lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Loss and predictions of a batch.
fn run_batch(
    routers: &Routers,
    feats: &Features,
    rows: &[usize],
    targets: &[Labels],
    alpha: &Tensor,
    gamma: f64,
) -> Result<(Tensor, Vec<u8>)> {
    let (x, mask) = feats.batch(rows)?;
    let logits = routers.forward(&x, &mask)?; // [L, B, 3]
    let (l, b) = (feats.layers, rows.len());
    let t = Tensor::from_vec(layer_major(targets, l), (l * b, 3), &Device::Cpu)?;
    let flat = logits.reshape((l * b, 3))?;
    let loss = focal_loss(&flat, &t, alpha, gamma)?;
    Ok((loss, argmax_last(&flat)?))
}

/// Target distributions in the logits' order: layer-major `[L·B·3]`.
fn layer_major(targets: &[Labels], layers: usize) -> Vec<f32> {
    (0..layers)
        .flat_map(|l| targets.iter().flat_map(move |t| t[l]))
        .collect()
}

/// Adds a layer-major prediction block to `conf`, per example.
fn tally(conf: &mut Confusion, targets: &[Labels], pred: &[u8], layers: usize) {
    let b = targets.len();
    for (i, t) in targets.iter().enumerate() {
        let p: Vec<u8> = (0..layers).map(|l| pred[l * b + i]).collect();
        conf.add_soft(t, &p);
    }
}

/// Metrics of `split` under the current routers (no update).
pub fn evaluate(
    routers: &Routers,
    feats: &Features,
    split: &Split,
    alpha: &Tensor,
    gamma: f64,
    batch: usize,
) -> Result<Metrics> {
    let mut conf = Confusion::default();
    let mut loss = 0.0;
    for (rows, targets) in split.rows.chunks(batch).zip(split.targets.chunks(batch)) {
        let (l, pred) = run_batch(routers, feats, rows, targets, alpha, gamma)?;
        loss += l.to_scalar::<f32>()? as f64 * rows.len() as f64;
        tally(&mut conf, targets, &pred, feats.layers);
    }
    Ok(conf.metrics(loss / split.rows.len().max(1) as f64))
}

/// Trains for the epochs `cfg.training.epochs` asks beyond those in `cfg.history`, saving the
/// checkpoint and metrics into `out` after each. `on_epoch` hears each epoch's metrics.
pub fn train(
    routers: &Routers,
    feats: &Features,
    train: &Split,
    val: &Split,
    cfg: &mut RouterConfig,
    out: &Path,
    mut on_epoch: impl FnMut(&EpochMetrics),
) -> Result<()> {
    let tc = cfg.training.clone();
    let counts = class_counts(&train.targets);
    let w = class_weights(&counts, tc.class_beta);
    cfg.class_counts = counts;
    cfg.class_weights = [w[0], w[1], w[2]];
    cfg.train_examples = train.rows.len();
    cfg.val_examples = val.rows.len();
    let alpha = Tensor::new(&cfg.class_weights, &Device::Cpu)?; // for the validation pass
    let per_step = tc.batch_size.max(1) * tc.grad_accum.max(1);
    let steps_per_epoch = train.rows.len().div_ceil(per_step);
    let total = tc.epochs * steps_per_epoch;
    let warmup = ((total as f64 * tc.warmup_fraction).round() as usize).max(1);
    let mut opt = AdamW::new(routers.vars(), tc.lr, tc.weight_decay)?;
    let mut order = train
        .rows
        .iter()
        .copied()
        .zip(train.targets.iter().copied())
        .collect::<Vec<_>>();
    for epoch in cfg.history.len()..tc.epochs {
        let t = Instant::now();
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(tc.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9));
        order.shuffle(&mut rng);
        let mut conf = Confusion::default();
        let mut loss_sum = 0.0;
        for step_items in order.chunks(per_step) {
            let batch = Batch {
                items: step_items,
                micro: tc.batch_size.max(1),
                alpha: &cfg.class_weights,
                gamma: tc.focal_gamma,
            };
            let acc = batch.gradients(routers, feats, &mut conf, &mut loss_sum)?;
            opt.lr = learning_rate(tc.lr, cfg.steps_done, total, warmup);
            opt.step(&acc)?;
            cfg.steps_done += 1;
        }
        let train_m = conf.metrics(loss_sum / train.rows.len().max(1) as f64);
        let val_m = if val.rows.is_empty() {
            None
        } else {
            Some(evaluate(
                routers,
                feats,
                val,
                &alpha,
                tc.focal_gamma,
                tc.batch_size.max(1) * 4,
            )?)
        };
        let em = EpochMetrics {
            epoch: epoch + 1,
            train: train_m,
            val: val_m,
            seconds: t.elapsed().as_secs_f64(),
        };
        on_epoch(&em);
        cfg.history.push(em);
        cfg.save(out, routers)?;
        write_metrics(out, &cfg.history)?;
    }
    Ok(())
}

/// The examples of one optimizer step, run in micro-batches.
struct Batch<'a, 'b> {
    /// (feature row, targets) of each example.
    items: &'a [(usize, Labels<'b>)],
    /// Examples per micro-batch.
    micro: usize,
    alpha: &'a [f32; 3],
    gamma: f64,
}

impl Batch<'_, '_> {
    /// The step's gradients (of `w1`, `b1`, `w2`, `b2`), accumulated over the micro-batches,
    /// each weighing by its share of the step; tallies predictions into `conf` and adds the summed
    /// loss to `loss_sum`.
    fn gradients(
        &self,
        routers: &Routers,
        feats: &Features,
        conf: &mut Confusion,
        loss_sum: &mut f64,
    ) -> Result<Vec<Tensor>> {
        let mut acc: Option<Vec<Tensor>> = None;
        for micro in self.items.chunks(self.micro) {
            let rows: Vec<usize> = micro.iter().map(|m| m.0).collect();
            let targets: Vec<Labels> = micro.iter().map(|m| m.1).collect();
            let (x, mask) = feats.batch(&rows)?;
            let targets_lm = layer_major(&targets, feats.layers);
            let s = step(routers, &x, &mask, &targets_lm, self.alpha, self.gamma)?;
            *loss_sum += s.loss * rows.len() as f64;
            let pred: Vec<u8> = s
                .logits
                .chunks(3)
                .map(|z| argmax3([z[0], z[1], z[2]]))
                .collect();
            tally(conf, &targets, &pred, feats.layers);
            let share = micro.len() as f64 / self.items.len() as f64;
            let grads = if share == 1.0 {
                s.grads.to_vec()
            } else {
                s.grads
                    .iter()
                    .map(|g| g.affine(share, 0.0))
                    .collect::<candle_core::Result<Vec<_>>>()?
            };
            acc = Some(match acc {
                None => grads,
                Some(a) => a
                    .iter()
                    .zip(&grads)
                    .map(|(a, g)| a + g)
                    .collect::<candle_core::Result<Vec<_>>>()?,
            });
        }
        acc.ok_or_else(|| Error::Selection("an optimizer step without examples".into()))
    }
}

/// `metrics.csv` (one row per epoch and split) and `metrics.json` next to the checkpoint.
pub fn write_metrics(out: &Path, history: &[EpochMetrics]) -> Result<()> {
    let werr = |p: &Path, e: std::io::Error| Error::Input {
        path: p.display().to_string(),
        reason: format!("cannot write: {e}"),
    };
    let csv = out.join("metrics.csv");
    let mut f = std::fs::File::create(&csv).map_err(|e| werr(&csv, e))?;
    let mut text = String::from("epoch,split,loss,macro_f1,f1_skip,f1_execute,f1_repeat,skip_recall,repeat_recall,accuracy,agreement,layers_pred,layers_target,seconds\n");
    for e in history {
        for (name, m) in [("train", Some(&e.train)), ("val", e.val.as_ref())] {
            if let Some(m) = m {
                text +=
                    &format!(
                    "{},{name},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.4},{:.4},{:.3}\n",
                    e.epoch, m.loss, m.macro_f1, m.f1[0], m.f1[1], m.f1[2], m.skip_recall,
                    m.repeat_recall, m.accuracy, m.agreement, m.layers_pred, m.layers_target, e.seconds
                );
            }
        }
    }
    f.write_all(text.as_bytes()).map_err(|e| werr(&csv, e))?;
    let json = out.join("metrics.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(history).expect("serializes"),
    )
    .map_err(|e| werr(&json, e))?;
    Ok(())
}
