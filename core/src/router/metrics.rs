//! Classification metrics of router decisions against target decisions: per-class and macro F1,
//! the recall of the rare classes (skip, repeat), and the layers the decisions execute. Targets
//! are distributions over the classes (one-hot for best-path targets): the confusion counts use
//! their weighted majority, `agreement` is the target mass on the predicted class (the accuracy
//! for one-hot targets), `layers_target` the expected layer executions.

use serde::{Deserialize, Serialize};

use super::CLASSES;

/// Counts of (target, predicted) decision pairs, plus per-example executed layers.
#[derive(Debug, Clone, Default)]
pub struct Confusion {
    /// `m[target][predicted]`
    pub m: [[u64; 3]; 3],
    examples: u64,
    executed_pred: u64,
    executed_target: f64,
    agreement: f64,
}

/// The weighted-majority class of a target distribution; ties go to execute, then skip.
pub fn majority(q: [f32; 3]) -> u8 {
    if q[1] >= q[0] && q[1] >= q[2] {
        1
    } else if q[0] >= q[2] {
        0
    } else {
        2
    }
}

/// What an epoch reports, for one split. A metric without support (no such target or prediction)
/// is NaN, `null` in JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The loss the caller passed (the trainer's: mean focal loss per example).
    pub loss: f64,
    /// Mean of the per-class F1 over the classes present in the targets or predictions.
    #[serde(deserialize_with = "nan_if_null")]
    pub macro_f1: f64,
    /// F1 of skip, execute, repeat.
    #[serde(deserialize_with = "nans_if_null")]
    pub f1: [f64; 3],
    /// Share of the target skips predicted as skip.
    #[serde(deserialize_with = "nan_if_null")]
    pub skip_recall: f64,
    /// Share of the target repeats predicted as repeat.
    #[serde(deserialize_with = "nan_if_null")]
    pub repeat_recall: f64,
    /// Share of the decisions whose predicted class is the target's majority class.
    pub accuracy: f64,
    /// Mean target probability of the predicted class (= accuracy for one-hot targets).
    #[serde(default)]
    pub agreement: f64,
    /// Mean layer executions per example (skip 0, execute 1, repeat 2) the routers would make.
    pub layers_pred: f64,
    /// Mean expected layer executions per example under the target distributions.
    pub layers_target: f64,
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn nans_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[f64; 3], D::Error> {
    Ok(<[Option<f64>; 3]>::deserialize(d)?.map(|x| x.unwrap_or(f64::NAN)))
}

impl Confusion {
    /// Adds one example's decisions against hard targets.
    pub fn add(&mut self, target: &[u8], pred: &[u8]) {
        self.add_soft(&super::decision_labels(target), pred);
    }

    /// Adds one example's decisions against per-layer target distributions.
    pub fn add_soft(&mut self, labels: &[[f32; 3]], pred: &[u8]) {
        for (&q, &p) in labels.iter().zip(pred) {
            let p = p.min(2) as usize;
            self.m[majority(q) as usize][p] += 1;
            self.agreement += q[p] as f64;
            self.executed_target += (q[1] + 2.0 * q[2]) as f64;
        }
        self.examples += 1;
        self.executed_pred += pred.iter().map(|&p| p as u64).sum::<u64>();
    }

    fn recall(&self, c: usize) -> f64 {
        let support: u64 = self.m[c].iter().sum();
        if support == 0 {
            f64::NAN
        } else {
            self.m[c][c] as f64 / support as f64
        }
    }

    /// The metrics; `loss` is the caller's. Macro F1 averages the classes that occur in the
    /// targets or the predictions (a class absent from both says nothing).
    pub fn metrics(&self, loss: f64) -> Metrics {
        let mut f1 = [0.0; 3];
        let mut seen = 0;
        let mut sum = 0.0;
        for (c, f) in f1.iter_mut().enumerate() {
            let tp = self.m[c][c];
            let fn_: u64 = self.m[c].iter().sum::<u64>() - tp;
            let fp: u64 = (0..3).map(|t| self.m[t][c]).sum::<u64>() - tp;
            if tp + fn_ + fp > 0 {
                *f = 2.0 * tp as f64 / (2 * tp + fn_ + fp) as f64;
                sum += *f;
                seen += 1;
            } else {
                *f = f64::NAN;
            }
        }
        let total: u64 = self.m.iter().flatten().sum();
        let correct: u64 = (0..3).map(|c| self.m[c][c]).sum();
        let per = |x: f64| x / self.examples.max(1) as f64;
        Metrics {
            loss,
            macro_f1: if seen > 0 {
                sum / seen as f64
            } else {
                f64::NAN
            },
            f1,
            skip_recall: self.recall(0),
            repeat_recall: self.recall(2),
            accuracy: correct as f64 / total.max(1) as f64,
            agreement: self.agreement / total.max(1) as f64,
            layers_pred: per(self.executed_pred as f64),
            layers_target: per(self.executed_target),
        }
    }
}

impl Metrics {
    /// One line for logs: `loss 0.41 macro-F1 0.62 (skip 0.40 execute 0.95 repeat 0.51) …`.
    pub fn line(&self) -> String {
        let f1: Vec<String> = CLASSES
            .iter()
            .zip(self.f1)
            .map(|(c, f)| format!("{c} {f:.3}"))
            .collect();
        format!(
            "loss {:.4} macro-F1 {:.3} ({}) acc {:.3} agree {:.3} skip-recall {:.3} repeat-recall {:.3} layers {:.2} (target {:.2})",
            self.loss, self.macro_f1, f1.join(" "), self.accuracy, self.agreement, self.skip_recall,
            self.repeat_recall, self.layers_pred, self.layers_target
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_recall_and_layers_on_a_hand_counted_case() {
        let mut c = Confusion::default();
        // targets: skip, execute ×3, repeat; predictions: skip, execute, execute, skip, execute
        c.add(&[0, 1, 1, 1, 2], &[0, 1, 1, 0, 1]);
        let m = c.metrics(0.5);
        // skip: tp 1, fp 1, fn 0 → 2/3; execute: tp 2, fp 1, fn 1 → 4/6; repeat: tp 0 → 0.
        assert!((m.f1[0] - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.f1[1] - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(m.f1[2], 0.0);
        assert!((m.macro_f1 - (2.0 / 3.0 + 4.0 / 6.0) / 3.0).abs() < 1e-12);
        assert_eq!(
            (m.skip_recall, m.repeat_recall, m.accuracy),
            (1.0, 0.0, 0.6)
        );
        assert_eq!((m.layers_target, m.layers_pred), (5.0, 3.0));
        assert!((m.agreement - m.accuracy).abs() < 1e-12);
        // Soft targets: majority for the counts, mass for agreement, expectation for layers.
        let mut c = Confusion::default();
        c.add_soft(&[[0.6, 0.4, 0.0], [0.1, 0.5, 0.4]], &[1, 1]);
        let m = c.metrics(0.0);
        assert_eq!(c.m[0][1] + c.m[1][1], 2);
        assert_eq!(m.accuracy, 0.5);
        assert!((m.agreement - 0.45).abs() < 1e-6);
        assert!((m.layers_target - (0.4 + 0.5 + 0.8)).abs() < 1e-6);
        assert_eq!(majority([0.4, 0.4, 0.2]), 1);
        assert_eq!(majority([0.4, 0.2, 0.4]), 0);
        // A class in neither targets nor predictions leaves the macro average.
        let mut c = Confusion::default();
        c.add(&[1, 1, 0], &[1, 1, 0]);
        assert_eq!(c.metrics(0.0).macro_f1, 1.0);
    }
}
