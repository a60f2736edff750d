//! The certificate of a router checkpoint: which operating point `evaluator calibrate` found safe
//! (Learn-then-Test, [`crate::ltt`]), under which risk, tolerance and level, on which questions.
//! It lives next to the routers as `certificate.json` and names the routers' weights by hash, so
//! a retrained checkpoint never runs under an old certificate. `evaluator run` and `serve` use the
//! certified point unless told otherwise; without one they run the static model and say so.

use std::path::Path;

use crate::router::Router;
use anyhow::Context;
use drllm_core::tasks::reward::{Outcome, RewardOptions};
use serde::{Deserialize, Serialize};

use crate::ltt::{binomial_p, wsr_p};

/// File name of the certificate in a router checkpoint folder.
pub const CERTIFICATE_FILE: &str = "certificate.json";
/// Version of the certificate format.
const FORMAT: u32 = 1;

/// What one question's loss measures at an operating point, against the full (static) model.
#[derive(clap::ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// The full model is right and the routed model wrong (0/1).
    Harm,
    /// The routed answer differs from the full model's (0/1). Needs no gold labels.
    Disagree,
    /// The accuracy difference, static − routed, rescaled to [0, 1]: (s − r + 1) / 2.
    Drop,
}

/// One question's answer and verdict on one path.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub correct: bool,
    /// The chosen option (choice-loglik) or the extracted answer (generate).
    pub answer: Option<String>,
}

impl Risk {
    /// One question's loss in [0, 1].
    pub fn loss(self, full: &Answer, routed: &Answer) -> f64 {
        match self {
            Risk::Harm => f64::from(u8::from(full.correct && !routed.correct)),
            Risk::Disagree => f64::from(u8::from(full.answer != routed.answer)),
            Risk::Drop => {
                (f64::from(u8::from(full.correct)) - f64::from(u8::from(routed.correct)) + 1.0)
                    / 2.0
            }
        }
    }

    /// The risk on its natural scale from the mean loss (`drop`: accuracy points lost).
    pub fn risk_of(self, losses: &[f64]) -> f64 {
        let mean = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        match self {
            Risk::Drop => 2.0 * mean - 1.0,
            _ => mean,
        }
    }

    /// The p-value of "risk > δ": exact binomial for the 0/1 losses, Waudby-Smith–Ramdas betting
    /// for `drop` (tested on the loss scale at (1 + δ) / 2).
    pub fn p_value(self, losses: &[f64], delta: f64, epsilon: f64) -> f64 {
        match self {
            Risk::Drop => wsr_p(losses, (1.0 + delta) / 2.0, epsilon),
            _ => binomial_p(
                losses.iter().filter(|&&l| l > 0.5).count(),
                losses.len(),
                delta,
            ),
        }
    }

    /// How the p-value is computed, for the certificate.
    pub fn method(self) -> &'static str {
        match self {
            Risk::Drop => "waudby-smith-ramdas betting",
            _ => "exact binomial",
        }
    }
}

/// One operating point's calibration result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The knob (`evaluator run --budget`): the budget of per-layer routers, the gate threshold
    /// τ of a path menu.
    pub budget: f32,
    /// Mean layer executions per question on the calibration questions.
    pub mean_layers: f64,
    /// Accuracy on the calibration questions (those with gold labels).
    pub accuracy: f64,
    /// The risk on the calibration questions, on its natural scale.
    pub empirical_risk: f64,
    /// p-value of "risk > δ".
    pub p_value: f64,
    /// Kept by fixed-sequence testing.
    pub certified: bool,
}

/// `certificate.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    pub format: u32,
    pub risk: Risk,
    /// Tolerance: the largest acceptable risk (for `drop`, in accuracy as a fraction).
    pub delta: f64,
    /// Level: the probability that a certified point has risk above δ is at most ε.
    pub epsilon: f64,
    /// How the p-values were computed.
    pub method: String,
    /// Calibration questions.
    pub n: usize,
    /// Where they came from: dataset, splits, what was excluded.
    pub calibration: String,
    /// blake3 of the calibration questions' ids, sorted, one per line.
    pub questions_hash: String,
    /// blake3 of the routers' weights file this certificate belongs to.
    pub routers_hash: String,
    /// The static model's accuracy on the calibration questions.
    pub static_accuracy: f64,
    /// Every point tested, in testing order: from the static model to the most aggressive.
    pub points: Vec<Point>,
    /// Grid points not run: the walk stopped at a failing point before them.
    #[serde(default)]
    pub untested: Vec<f32>,
    /// Index in `points` of the chosen point (the fewest mean layers among the certified); `None`
    /// when none is certified: the static model.
    pub chosen: Option<usize>,
}

impl Certificate {
    /// A certificate with its format filled in.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        risk: Risk,
        delta: f64,
        epsilon: f64,
        calibration: String,
        ids: &[String],
        routers_hash: String,
        static_accuracy: f64,
        points: Vec<Point>,
    ) -> Self {
        let chosen = points
            .iter()
            .enumerate()
            .filter(|(_, p)| p.certified)
            .min_by(|a, b| a.1.mean_layers.total_cmp(&b.1.mean_layers))
            .map(|(i, _)| i);
        Self {
            format: FORMAT,
            risk,
            delta,
            epsilon,
            method: risk.method().into(),
            n: ids.len(),
            calibration,
            questions_hash: questions_hash(ids),
            routers_hash,
            static_accuracy,
            points,
            untested: Vec::new(),
            chosen,
        }
    }

    /// The certified budget, if any.
    pub fn budget(&self) -> Option<f32> {
        self.chosen.map(|i| self.points[i].budget)
    }

    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        let head = format!(
            "risk {:?} ≤ {} with probability ≥ {} on {} calibration questions ({})",
            self.risk,
            self.delta,
            1.0 - self.epsilon,
            self.n,
            self.calibration
        );
        let full = self.points.first().map_or(0.0, |p| p.mean_layers);
        match self.chosen.map(|i| &self.points[i]) {
            Some(p) if p.mean_layers < full => format!(
                "{head}: knob {} certified, {:.2} layers on average (of {full:.2})",
                p.budget, p.mean_layers
            ),
            _ => format!(
                "{head}: no certified point saves a layer, the static model runs{}",
                self.why_nothing_saves()
            ),
        }
    }

    /// Why nothing cheaper is certified: where the walk stopped, and its evidence.
    fn why_nothing_saves(&self) -> String {
        match self.points.iter().find(|p| p.p_value > self.epsilon) {
            Some(p) => {
                format!(
                    " (the walk stopped at knob {}, {:.2} layers: risk {:.4}, p-value {:.3} > ε = \
                 {}; {} questions are not enough evidence that its risk is ≤ {})",
                    p.budget,
                    p.mean_layers,
                    p.empirical_risk,
                    p.p_value,
                    self.epsilon,
                    self.n,
                    self.delta
                )
            }
            None => " (no point of the grid runs fewer layers)".into(),
        }
    }

    /// Writes `certificate.json` into the checkpoint folder (atomically).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(CERTIFICATE_FILE);
        let json = serde_json::to_string_pretty(self)?;
        drllm_records::atomic::write_atomically(&path, |tmp| std::fs::write(tmp, &json))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Reads the checkpoint's certificate: `None` when it has none; an error when it belongs to
    /// other router weights or cannot be read.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join(CERTIFICATE_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let cert: Certificate =
            serde_json::from_str(&text).with_context(|| format!("{}: invalid", path.display()))?;
        anyhow::ensure!(
            cert.format == FORMAT,
            "{}: certificate format {} (this release reads {FORMAT})",
            path.display(),
            cert.format
        );
        let hash = Router::weights_hash(dir)?;
        anyhow::ensure!(
            cert.routers_hash == hash,
            "{}: certifies other router weights (hash {} vs {hash}): the routers were retrained \
             after calibration; run `evaluator calibrate` again or pass --budget",
            path.display(),
            cert.routers_hash
        );
        Ok(Some(cert))
    }
}

/// The knob a checkpoint runs at, and why.
pub struct Operating {
    /// The budget (per-layer routers) or the gate's threshold (a path menu).
    pub knob: f32,
    /// The certificate whose point this is (`None`: no certificate, or --budget elsewhere).
    pub certificate: Option<Certificate>,
    /// Where the knob came from, for logs and reports.
    pub source: String,
}

/// `--budget` when given (checked against the router kind's range), else the checkpoint's
/// certified point, else the static model. A certificate for other router weights is an error
/// unless --budget is given.
pub fn operating_point(
    dir: &Path,
    router: &Router,
    asked: Option<f32>,
) -> anyhow::Result<Operating> {
    if let Some(b) = asked {
        router.check_knob(b)?;
    }
    let cert = match (Certificate::load(dir), asked) {
        (Ok(c), _) => c,
        (Err(e), Some(_)) => {
            tracing::warn!("{e:#}: ignored, --budget is given");
            None
        }
        (Err(e), None) => return Err(e),
    };
    let at_static = |why: String| Operating {
        knob: router.static_knob(),
        certificate: None,
        source: why,
    };
    Ok(match (asked, cert) {
        (Some(b), c) => {
            let c = c.filter(|c| c.budget() == Some(b));
            let source = match &c {
                Some(_) => "--budget, the certified point".to_string(),
                None => "--budget (not certified)".to_string(),
            };
            Operating {
                knob: b,
                certificate: c,
                source,
            }
        }
        (None, Some(c)) => match c.budget() {
            Some(b) => Operating {
                knob: b,
                source: format!("certified: {}", c.describe()),
                certificate: Some(c),
            },
            None => at_static(format!(
                "the certificate keeps no routed point: {}",
                c.describe()
            )),
        },
        (None, None) => at_static(format!(
            "{} has no certificate: the static model runs (`evaluator calibrate` certifies a \
             point; --budget runs one uncertified)",
            dir.display()
        )),
    })
}

/// A question's answer on a path, as the risks compare them: the chosen option under the
/// metric that decides `correct` (choice-loglik), or the extracted answer (generate).
pub fn answer_of(o: &Outcome, opts: &RewardOptions) -> Answer {
    let pick = if opts.length_normalized {
        o.pick_norm
    } else {
        o.pick
    };
    Answer {
        correct: o.correct,
        answer: o.extracted.clone().or(pick.map(|p| p.to_string())),
    }
}

/// Whether a certificate's promise held on the questions of an evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub risk: Risk,
    pub delta: f64,
    pub epsilon: f64,
    pub budget: f32,
    pub calibration_questions: usize,
    pub calibration_risk: Option<f64>,
    pub evaluated_questions: usize,
    /// The risk measured on the evaluated questions (static vs routed).
    pub evaluated_risk: f64,
    /// `evaluated_risk ≤ δ`.
    pub held: bool,
}

impl Certificate {
    /// Measures this certificate's risk on (static, routed) answers of other questions.
    pub fn held_on(&self, budget: f32, pairs: &[(Answer, Answer)]) -> Held {
        let losses: Vec<f64> = pairs.iter().map(|(f, r)| self.risk.loss(f, r)).collect();
        let risk = self.risk.risk_of(&losses);
        Held {
            risk: self.risk,
            delta: self.delta,
            epsilon: self.epsilon,
            budget,
            calibration_questions: self.n,
            calibration_risk: self.chosen.map(|i| self.points[i].empirical_risk),
            evaluated_questions: pairs.len(),
            evaluated_risk: risk,
            held: risk <= self.delta,
        }
    }
}

fn questions_hash(ids: &[String]) -> String {
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    let mut h = blake3::Hasher::new();
    for id in sorted {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(correct: bool, answer: &str) -> Answer {
        Answer {
            correct,
            answer: Some(answer.into()),
        }
    }

    #[test]
    fn losses() {
        let (right, wrong, other_wrong) = (a(true, "A"), a(false, "B"), a(false, "C"));
        assert_eq!(Risk::Harm.loss(&right, &wrong), 1.0);
        assert_eq!(Risk::Harm.loss(&wrong, &right), 0.0);
        assert_eq!(Risk::Harm.loss(&wrong, &other_wrong), 0.0);
        assert_eq!(Risk::Disagree.loss(&wrong, &other_wrong), 1.0);
        assert_eq!(Risk::Disagree.loss(&wrong, &wrong), 0.0);
        assert_eq!(Risk::Drop.loss(&right, &wrong), 1.0);
        assert_eq!(Risk::Drop.loss(&wrong, &right), 0.0);
        assert_eq!(Risk::Drop.loss(&wrong, &other_wrong), 0.5);
        assert!((Risk::Drop.risk_of(&[1.0, 0.5, 0.5, 0.5]) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn the_chosen_point_is_the_cheapest_certified() {
        let p = |budget, mean_layers, certified| Point {
            budget,
            mean_layers,
            accuracy: 0.5,
            empirical_risk: 0.0,
            p_value: 0.0,
            certified,
        };
        let ids = ["b".to_string(), "a".to_string()];
        let cert = |pts| {
            Certificate::new(
                Risk::Drop,
                0.01,
                0.05,
                "x".into(),
                &ids,
                "h".into(),
                0.5,
                pts,
            )
        };
        let c = cert(vec![
            p(0.5, 30.0, true),
            p(0.3, 29.0, true),
            p(0.1, 27.0, false),
        ]);
        assert_eq!(c.chosen, Some(1));
        assert_eq!(c.budget(), Some(0.3));
        let swapped = ["a".to_string(), "b".to_string()];
        assert_eq!(c.questions_hash, questions_hash(&swapped));
        let none = cert(vec![]);
        assert!(none.describe().contains("static model runs"));
        // Only the static point is certified: nothing saved, and the reason is named.
        let mut only_static = cert(vec![p(0.5, 30.0, true), p(0.1, 29.9, false)]);
        only_static.points[1].p_value = 0.2;
        let d = only_static.describe();
        assert!(
            d.contains("no certified point saves a layer")
                && d.contains("the walk stopped at knob 0.1, 29.90 layers"),
            "{d}"
        );
    }
}
