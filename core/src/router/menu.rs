//! The path-menu router: a router kind of its own, next to the per-layer routers. Per-layer
//! routers decide each layer from that layer's input; on a small model those inputs carry no
//! signal about which skips are harmless (`trainer diagnose`), so the menu decides once, for the
//! whole sequence, between a few fixed paths chosen on held-out questions (the full path, the
//! greedy pruning curve, the safest single and double skips), as PoLar predicts whole programs.
//!
//! Every menu path runs the first `gate_layer` layers once. Entering layer `gate_layer`, a gate
//! reads the mean of the prompt rows' hidden states and gives, per path, the probability that
//! the path keeps the full model's answer (a logistic regression on standardized features). The
//! knob is a threshold τ in [0, 1]: the cheapest path whose probability exceeds τ runs, the full
//! path when none does; τ = 1 is the static model, τ = 0 always the cheapest path. The checkpoint
//! is `path_menu.json` in a folder, which `evaluator calibrate` certifies like any checkpoint.

use std::path::Path;

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use super::checkpoint::{CheckpointHeader, RouterError};
use super::EXECUTE;
use drllm_records::atomic::write_atomically;

/// File name of a path-menu checkpoint inside its folder.
pub const MENU_FILE: &str = "path_menu.json";
/// The knob at which a menu runs the static model.
pub const MENU_STATIC: f32 = 1.0;
/// The checkpoint format this release writes and reads.
pub const MENU_FORMAT: u32 = 1;

/// One path of the menu, with its gate weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MenuPath {
    /// Where it came from: `full`, `curve-28` (the greedy curve at 28 layers), `skip-26`,
    /// `skip-17+18`.
    pub name: String,
    /// The layers it runs, in order.
    pub layers: Vec<u16>,
    /// Gate weights over the standardized features (empty for the full path, which needs none).
    pub w: Vec<f32>,
    /// Gate bias.
    pub b: f32,
    /// Share of the gate's training questions on which this path keeps the full model's answer.
    pub keep_rate: f64,
    /// Out-of-fold AUC of the gate's probability for this path (5 folds by question); `None`
    /// for the full path or a path that always (never) keeps the answer.
    pub auc: Option<f64>,
}

/// `path_menu.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathMenu {
    /// Checkpoint format; this release reads only its own.
    pub format: u32,
    /// The model (the gate reads its hidden state) and the gate's training prompts.
    #[serde(flatten)]
    pub header: CheckpointHeader,
    /// The gate reads the hidden state entering this layer; every path runs the layers before it.
    pub gate_layer: usize,
    /// "Keeps the answer": the same pick with at least this share of the full model's margin.
    pub agree_fraction: f64,
    /// Column means of the gate's input on its training questions.
    pub mean: Vec<f32>,
    /// Column 1/std of the gate's input.
    pub scale: Vec<f32>,
    /// The paths; the first is the full path.
    pub paths: Vec<MenuPath>,
    /// Where the menu and the gate's training questions came from.
    pub provenance: String,
    /// Ids of every question the menu was chosen on (the gate's, then the curve's and those of
    /// `--exclude-records`): calibration leaves them out.
    pub training_questions: Vec<String>,
}

impl PathMenu {
    /// Decision of layer `layer` when the paths' probabilities are `probs` and the knob `tau`:
    /// how often the chosen path runs it.
    pub fn decision(&self, probs: &[f32], tau: f32, layer: usize) -> u8 {
        let p = &self.paths[self.choose(probs, tau)];
        p.layers
            .iter()
            .filter(|&&l| usize::from(l) == layer)
            .count() as u8
    }

    /// The path that runs at knob `tau`: the fewest layers among those whose probability
    /// exceeds `tau` (ties: the likelier), else the full path (index 0).
    pub fn choose(&self, probs: &[f32], tau: f32) -> usize {
        (1..self.paths.len())
            .filter(|&i| probs[i] > tau)
            .min_by(|&a, &b| {
                let len = |i: usize| self.paths[i].layers.len();
                len(a).cmp(&len(b)).then(probs[b].total_cmp(&probs[a]))
            })
            .unwrap_or(0)
    }

    /// The gate's input: the mean over the prompt rows `x` (`[T, d]`) entering the gate layer.
    pub fn features(x: &Tensor) -> drllm_engine::Result<Vec<f32>> {
        Ok(x.to_dtype(DType::F32)?.mean(D::Minus2)?.to_vec1::<f32>()?)
    }

    /// Every path's probability of keeping the answer, from the gate's input (the full path's
    /// is 1).
    pub fn probs(&self, features: &[f32]) -> Vec<f32> {
        let z: Vec<f32> = features
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .map(|((x, m), s)| (x - m) * s)
            .collect();
        let mut out = vec![1.0];
        out.extend(self.paths[1..].iter().map(|p| {
            let logit = p.b + p.w.iter().zip(&z).map(|(w, z)| w * z).sum::<f32>();
            1.0 / (1.0 + (-logit).exp())
        }));
        out
    }

    /// One decision of a routed pass at knob `tau`: layers before the gate run once; entering the
    /// gate layer the gate reads `x` and its probabilities go into `seen`; from there on the
    /// chosen path decides. `seen` holds what the pass observed (for sharing passes between
    /// knobs: see [`PathMenu::decision`]).
    pub fn decide(
        &self,
        tau: f32,
        layer: usize,
        x: &Tensor,
        seen: &mut Vec<Vec<f32>>,
    ) -> drllm_engine::Result<u8> {
        if layer < self.gate_layer {
            return Ok(EXECUTE);
        }
        if seen.is_empty() {
            seen.push(self.probs(&Self::features(x)?));
        }
        Ok(self.decision(&seen[0], tau, layer))
    }

    /// Checks that the menu can route: shapes agree, the first path is the full path, and every
    /// path runs the layers before the gate once.
    fn validate(&self) -> Result<(), String> {
        let full: Vec<u16> = (0..self.header.num_layers as u16).collect();
        if self.paths.first().map(|p| &p.layers) != Some(&full) {
            return Err("the first path must be the full path".into());
        }
        let d = self.header.model_hidden_size;
        if self.mean.len() != d || self.scale.len() != d {
            return Err(format!("the gate's standardization is not {d} wide"));
        }
        for p in &self.paths[1..] {
            let head: Vec<u16> = (0..self.gate_layer as u16).collect();
            if p.w.len() != d {
                return Err(format!("path {}: gate weights are not {d} wide", p.name));
            }
            if !p.layers.starts_with(&head)
                || p.layers
                    .iter()
                    .any(|&l| l as usize >= self.header.num_layers)
            {
                return Err(format!(
                    "path {}: must run layers 0..{} once (the gate reads layer {}) and only \
                     layers below {}",
                    p.name, self.gate_layer, self.gate_layer, self.header.num_layers
                ));
            }
        }
        Ok(())
    }

    /// Writes `path_menu.json` into `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), RouterError> {
        let file = dir.join(MENU_FILE);
        let werr = |reason: String| RouterError::Write {
            path: file.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| werr(e.to_string()))?;
        let json = serde_json::to_string_pretty(self).expect("a menu serializes");
        write_atomically(&file, |tmp| std::fs::write(tmp, &json)).map_err(|e| werr(e.to_string()))
    }

    /// Reads and checks `path_menu.json` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, RouterError> {
        let file = dir.join(MENU_FILE);
        let invalid = |reason: String| RouterError::Invalid {
            path: file.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&file).map_err(|e| invalid(e.to_string()))?;
        let menu: Self = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if menu.format != MENU_FORMAT {
            return Err(invalid(format!(
                "format {} (this release reads format {MENU_FORMAT})",
                menu.format
            )));
        }
        menu.validate().map_err(invalid)?;
        Ok(menu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str, skip: &[u16], w: f32, b: f32) -> MenuPath {
        MenuPath {
            name: name.into(),
            layers: (0..6).filter(|l| !skip.contains(l)).collect(),
            w: vec![w, 0.0],
            b,
            keep_rate: 0.5,
            auc: None,
        }
    }

    fn menu() -> PathMenu {
        PathMenu {
            format: MENU_FORMAT,
            header: CheckpointHeader {
                base_model: "m".into(),
                model_fingerprint: "f".into(),
                num_layers: 6,
                model_hidden_size: 2,
                reward: None,
            },
            gate_layer: 2,
            agree_fraction: 0.5,
            mean: vec![0.0, 0.0],
            scale: vec![1.0, 1.0],
            paths: vec![
                MenuPath {
                    w: Vec::new(),
                    ..path("full", &[], 0.0, 0.0)
                },
                path("skip-4", &[4], 1.0, 1.0),
                path("skip-3+4", &[3, 4], 1.0, -1.0),
            ],
            provenance: String::new(),
            training_questions: Vec::new(),
        }
    }

    #[test]
    fn the_knob_runs_from_static_to_the_cheapest_path() {
        let m = menu();
        let probs = m.probs(&[0.0, 5.0]);
        assert_eq!(probs[0], 1.0);
        assert!((probs[1] - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
        assert_eq!(
            m.choose(&probs, MENU_STATIC),
            0,
            "τ = 1 is the static model"
        );
        assert_eq!(m.choose(&probs, 0.0), 2, "τ = 0: the shortest path");
        assert_eq!(
            m.choose(&probs, 0.5),
            1,
            "only skip-4 clears 0.5 (0.73 vs 0.27)"
        );
        assert_eq!(m.decision(&probs, 0.5, 4), 0);
        assert_eq!(m.decision(&probs, 0.5, 3), 1);
        assert_eq!(m.decision(&probs, 0.0, 3), 0);
    }

    #[test]
    fn a_path_that_skips_before_the_gate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = menu();
        m.save(dir.path()).unwrap();
        assert_eq!(PathMenu::load(dir.path()).unwrap(), m);
        m.paths[2] = path("skip-1", &[1], 1.0, 0.0);
        m.save(dir.path()).unwrap();
        let e = PathMenu::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("skip-1") && e.contains("layers 0..2"), "{e}");
    }
}
