//! `trainer diagnose`: is there per-input signal for a router to learn? Probe records
//! (`--strategy probe-skips` or `probe`) judge every skip of one layer of the full path for every
//! question, so each (question, layer) has a label: skipping the layer keeps the answer (under
//! the records' success rule; with `agree`, the full model's pick and margin). Per layer, an L2
//! logistic regression on the router's input (the prompt's mean hidden state entering the layer
//! along the full path), cross-validated with folds by question, predicts that label. Where its
//! AUC is no better than 0.5 and it does not beat the base rate, the layer's skip decision does
//! not depend on the input in any way the router can see, and a per-input router can only learn
//! the base rate: a static path does as well.

pub mod logistic;
pub mod report;

use std::collections::BTreeMap;

use drllm_contract::{SearchRecord, Strategy, SuccessRule};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::{Error, Result};
use logistic::{auc, cross_validate, folds_of, log_loss, Data};

/// Per question, per layer: whether skipping one layer (`single`) or it and the next (`pair`)
/// keeps the answer.
#[derive(Debug, Clone)]
pub struct Probed {
    /// One record per question, in record order (the last record of a repeated question).
    pub records: Vec<SearchRecord>,
    /// Model depth L.
    pub layers: usize,
    /// `[question][layer]`: the path without that layer is good.
    pub single: Vec<Vec<bool>>,
    /// `[question][layer]`: the path without that layer and the next is good (L − 1 entries).
    pub pair: Vec<Vec<bool>>,
}

/// Reads the skip labels out of probe records; refuses records of another search strategy,
/// depth or success rule, naming the example.
pub fn probed(records: Vec<SearchRecord>) -> Result<Probed> {
    let first = records
        .first()
        .ok_or_else(|| Error::Selection("no records to diagnose".into()))?;
    let (layers, success) = (first.num_layers as usize, first.settings.search.success);
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    let mut kept: Vec<SearchRecord> = Vec::new();
    for r in records {
        let bad = |reason: String| Error::Record {
            example: r.example_id.clone(),
            reason,
        };
        let s = &r.settings.search;
        if !matches!(s.strategy, Strategy::Probe | Strategy::ProbeSkips) {
            return Err(bad(format!(
                "searched with strategy {:?}: diagnose needs every skip judged, from `worker search --strategy probe-skips` (or probe)",
                s.strategy
            )));
        }
        if r.num_layers as usize != layers || s.success != success {
            return Err(bad(format!(
                "has {} layers and success rule {:?}, the first record {layers} and {success:?}: diagnose one model and one rule at a time",
                r.num_layers, s.success
            )));
        }
        match by_id.get(&r.example_id) {
            Some(&i) => kept[i] = r,
            None => {
                by_id.insert(r.example_id.clone(), kept.len());
                kept.push(r);
            }
        }
    }
    let without =
        |skip: &[u16]| -> Vec<u16> { (0..layers as u16).filter(|l| !skip.contains(l)).collect() };
    let (mut single, mut pair) = (Vec::new(), Vec::new());
    for r in &kept {
        let good: std::collections::HashSet<&[u16]> =
            r.good_paths.iter().map(Vec::as_slice).collect();
        let keeps = |skip: &[u16]| good.contains(without(skip).as_slice());
        single.push((0..layers as u16).map(|l| keeps(&[l])).collect());
        pair.push((1..layers as u16).map(|l| keeps(&[l - 1, l])).collect());
    }
    Ok(Probed {
        records: kept,
        layers,
        single,
        pair,
    })
}

/// How the diagnosis is run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Options {
    /// Cross-validation folds (by question).
    pub folds: usize,
    /// Bootstrap resamples for the intervals.
    pub resamples: usize,
    /// Seed of the folds and the bootstrap.
    pub seed: u64,
}

/// One layer's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Layer index.
    pub layer: usize,
    /// Share of questions whose answer survives skipping this layer.
    pub keep_rate: f64,
    /// Cross-validated AUC of the logistic regression (None: every question has one label).
    pub auc: Option<f64>,
    /// Its 95% bootstrap interval (over questions).
    pub auc_ci: Option<[f64; 2]>,
    /// Out-of-fold log-loss of the base rate minus that of the model, nats per question:
    /// positive when the input tells more than the base rate.
    pub gain: f64,
    /// Its 95% bootstrap interval.
    pub gain_ci: [f64; 2],
    /// `signal` (both intervals above chance), `none`, or `constant` (one label only).
    pub verdict: &'static str,
}

/// The whole diagnosis.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// Questions diagnosed.
    pub questions: usize,
    /// Model depth.
    pub layers: usize,
    /// The records' success rule (what "keeps the answer" means).
    pub success: String,
    /// How it ran.
    pub options: Options,
    /// Per layer.
    pub per_layer: Vec<LayerReport>,
    /// Single skips, safest first: (layer, keep rate).
    pub single_skips: Vec<(usize, f64)>,
    /// Double skips (layer, layer + 1), safest first: (first layer, keep rate).
    pub pair_skips: Vec<(usize, f64)>,
    /// One sentence: where a router has per-input signal.
    pub verdict: String,
}

/// Diagnoses `p` from `features[layer]`: `n × d` router inputs per question, row-major.
pub fn diagnose(p: &Probed, features: &[Vec<f32>], d: usize, o: Options) -> Diagnosis {
    let keys: Vec<String> = p.records.iter().map(|r| r.question.clone()).collect();
    let fold = folds_of(&keys, o.folds, o.seed);
    let per_layer: Vec<LayerReport> = {
        use rayon::prelude::*;
        (0..p.layers)
            .into_par_iter()
            .map(|l| {
                let y: Vec<bool> = p.single.iter().map(|q| q[l]).collect();
                let data = Data {
                    x: &features[l],
                    d,
                    y: &y,
                };
                layer_report(l, &data, &fold, o)
            })
            .collect()
    };
    let rank = |labels: &[Vec<bool>], k: usize| {
        let n = labels.len().max(1) as f64;
        let mut v: Vec<(usize, f64)> = (0..k)
            .map(|l| (l, labels.iter().filter(|q| q[l]).count() as f64 / n))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    let signal: Vec<usize> = per_layer
        .iter()
        .filter(|r| r.verdict == "signal")
        .map(|r| r.layer)
        .collect();
    let verdict = if signal.is_empty() {
        format!(
            "no per-input signal: on no layer does the router input predict whether skipping it keeps the answer better than the base rate ({} questions); from these inputs a router can learn the base rates only, which a static path uses as well",
            p.records.len()
        )
    } else {
        format!(
            "per-input signal on {} of {} layers ({:?}); elsewhere only the base rate can be learned",
            signal.len(),
            p.layers,
            signal
        )
    };
    Diagnosis {
        questions: p.records.len(),
        layers: p.layers,
        success: p
            .records
            .first()
            .map_or(String::new(), |r| success_name(r.settings.search.success)),
        options: o,
        per_layer,
        single_skips: rank(&p.single, p.layers),
        pair_skips: rank(&p.pair, p.layers.saturating_sub(1)),
        verdict,
    }
}

fn success_name(s: SuccessRule) -> String {
    match s {
        SuccessRule::Correct => "correct",
        SuccessRule::Margin => "margin",
        SuccessRule::Agree => "agree",
    }
    .into()
}

fn layer_report(layer: usize, data: &Data, fold: &[usize], o: Options) -> LayerReport {
    let n = data.y.len();
    let keep_rate = data.y.iter().filter(|&&v| v).count() as f64 / n.max(1) as f64;
    let (p, base) = cross_validate(data, fold, o.folds);
    let gain_of = |idx: &[usize]| {
        idx.iter()
            .map(|&i| log_loss(base[i], data.y[i]) - log_loss(p[i], data.y[i]))
            .sum::<f64>()
            / idx.len().max(1) as f64
    };
    let all: Vec<usize> = (0..n).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed ^ (layer as u64) << 32);
    let (mut aucs, mut gains) = (Vec::new(), Vec::new());
    for _ in 0..o.resamples {
        let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
        let (ps, ys): (Vec<f64>, Vec<bool>) = idx.iter().map(|&i| (p[i], data.y[i])).unzip();
        if let Some(a) = auc(&ps, &ys) {
            aucs.push(a);
        }
        gains.push(gain_of(&idx));
    }
    let auc_all = auc(&p, data.y);
    let auc_ci = auc_all.and(interval(&mut aucs));
    let gain_ci = interval(&mut gains).unwrap_or([0.0, 0.0]);
    let verdict = match auc_ci {
        None => "constant",
        Some([lo, _]) if lo > 0.5 && gain_ci[0] > 0.0 => "signal",
        Some(_) => "none",
    };
    LayerReport {
        layer,
        keep_rate,
        auc: auc_all,
        auc_ci,
        gain: gain_of(&all),
        gain_ci,
        verdict,
    }
}

/// The 2.5th and 97.5th percentiles.
fn interval(v: &mut [f64]) -> Option<[f64; 2]> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some([at(0.025), at(0.975)])
}
