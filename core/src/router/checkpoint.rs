//! Router checkpoints: `routers.safetensors` (each layer's weights by name) and
//! `router_config.json` (the base model's id and weight fingerprint, its layer count and width,
//! the windows, the training configuration, class counts and metrics). A checkpoint only applies
//! to the model it was trained on: another fingerprint, layer count or width is refused.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::net::{Routers, HIDDEN};
use super::Metrics;
use drllm_records::atomic::write_atomically;
use drllm_records::RewardSettings;

pub const CHECKPOINT_FILE: &str = "routers.safetensors";
pub const CONFIG_FILE: &str = "router_config.json";
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("router checkpoint {dir}: {file} is missing (a checkpoint is a folder with {CHECKPOINT_FILE} and {CONFIG_FILE}, as `trainer` writes it)")]
    Missing { dir: String, file: &'static str },
    #[error("router checkpoint {path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("router checkpoint {dir} was trained on model {ckpt} (fingerprint) but the loaded model is {model}: load the checkpoint's base model ({base})")]
    Fingerprint {
        dir: String,
        ckpt: String,
        model: String,
        base: String,
    },
    #[error("router checkpoint {dir} is for a model with {ckpt_layers} layers of width {ckpt_d}, the loaded model has {layers} of width {d}")]
    Shape {
        dir: String,
        ckpt_layers: usize,
        ckpt_d: usize,
        layers: usize,
        d: usize,
    },
    #[error("router checkpoint {dir} was trained on {trained} prompts, this run makes {asked} prompts: the routers read the prompt's hidden states, so pass {fix}")]
    Prompts {
        dir: String,
        trained: String,
        asked: String,
        fix: String,
    },
    #[error("writing router checkpoint {path}: {reason}")]
    Write { path: String, reason: String },
}

fn style_name(r: &RewardSettings) -> String {
    r.style.map_or("(model default)".into(), |s| s.to_string())
}

fn describe(r: &RewardSettings) -> String {
    format!("{} / {}", r.mode, style_name(r))
}

/// How the routers were trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_fraction: f64,
    pub focal_gamma: f64,
    pub class_beta: f64,
    pub val_fraction: f64,
    pub seed: u64,
    /// Only records whose search found a correct path (else all).
    pub found_only: bool,
    /// Records whose best path is shorter are left out.
    pub min_path_len: usize,
    /// What the routers learn from: the best path (the paper) or all good paths (soft).
    /// Checkpoints from before this field trained on the best path.
    #[serde(default)]
    pub targets: Targets,
}

/// Training targets from a question's search record.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Targets {
    /// The paper's: the best (shortest) good path's decisions, one-hot.
    #[default]
    Best,
    /// Per layer, a distribution over skip / execute / repeat from all good paths, each path
    /// weighted by `exp(−beta · len / L) · exp(margin_weight · margin)`, the full path's weight
    /// times `full_weight` when a shorter good path exists, weights summing to 1 per question.
    /// Router inputs are teacher-forced along the per-layer weighted majority.
    Soft {
        beta: f64,
        full_weight: f64,
        margin_weight: f64,
    },
}

/// One epoch's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train: Metrics,
    pub val: Option<Metrics>,
    pub seconds: f64,
}

/// `router_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterConfig {
    pub format: u32,
    pub base_model: String,
    pub model_fingerprint: String,
    pub num_layers: usize,
    pub model_hidden_size: usize,
    pub windows: usize,
    pub router_hidden_size: usize,
    pub training: TrainingConfig,
    /// How the training records' prompts were made (reward mode and prompt style decide the
    /// tokens the routers read), when all records agree; `None` for checkpoints from before this
    /// field. Routed evaluation refuses other prompts.
    #[serde(default)]
    pub reward: Option<RewardSettings>,
    /// Target decisions in the training split: skip, execute, repeat.
    pub class_counts: [u64; 3],
    pub class_weights: [f32; 3],
    pub train_examples: usize,
    pub val_examples: usize,
    /// Optimizer steps taken so far (the schedule resumes from here).
    pub steps_done: usize,
    pub history: Vec<EpochMetrics>,
}

impl RouterConfig {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        base_model: &str,
        model_fingerprint: &str,
        num_layers: usize,
        model_hidden_size: usize,
        windows: usize,
        training: TrainingConfig,
    ) -> Self {
        Self {
            format: FORMAT,
            base_model: base_model.into(),
            model_fingerprint: model_fingerprint.into(),
            num_layers,
            model_hidden_size,
            windows,
            router_hidden_size: HIDDEN,
            training,
            reward: None,
            class_counts: [0; 3],
            class_weights: [0.0; 3],
            train_examples: 0,
            val_examples: 0,
            steps_done: 0,
            history: Vec::new(),
        }
    }

    /// Refuses to route prompts other than the ones the routers were trained on: another reward
    /// mode or prompt style (`opts` is the evaluation's, resolved on the model).
    pub fn check_prompts(&self, dir: &Path, opts: &RewardSettings) -> Result<(), RouterError> {
        match self.reward {
            Some(r) if r.mode != opts.mode || r.style != opts.style => Err(RouterError::Prompts {
                dir: dir.display().to_string(),
                trained: describe(&r),
                asked: describe(opts),
                fix: format!("--reward {} --style {}", r.mode, style_name(&r)),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses a model other than the checkpoint's.
    pub fn check_model(
        &self,
        dir: &Path,
        fingerprint: &str,
        layers: usize,
        d: usize,
    ) -> Result<(), RouterError> {
        if self.model_fingerprint != fingerprint {
            return Err(RouterError::Fingerprint {
                dir: dir.display().to_string(),
                ckpt: self.model_fingerprint.clone(),
                model: fingerprint.into(),
                base: self.base_model.clone(),
            });
        }
        if self.num_layers != layers || self.model_hidden_size != d {
            return Err(RouterError::Shape {
                dir: dir.display().to_string(),
                ckpt_layers: self.num_layers,
                ckpt_d: self.model_hidden_size,
                layers,
                d,
            });
        }
        Ok(())
    }

    /// Writes both files into `dir`, each atomically ([`drllm_records::atomic`]), the config last: a
    /// folder with a config always has the weights it describes.
    pub fn save(&self, dir: &Path, routers: &Routers) -> Result<(), RouterError> {
        let werr = |p: &Path, reason: String| RouterError::Write {
            path: p.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| werr(dir, e.to_string()))?;
        let ckpt = dir.join(CHECKPOINT_FILE);
        let named = routers
            .named_tensors()
            .map_err(|e| werr(&ckpt, e.to_string()))?;
        write_atomically(&ckpt, |tmp| candle_core::safetensors::save(&named, tmp))
            .map_err(|e| werr(&ckpt, e.to_string()))?;
        let cfg = dir.join(CONFIG_FILE);
        let json = serde_json::to_string_pretty(self).expect("a config serializes");
        write_atomically(&cfg, |tmp| std::fs::write(tmp, &json))
            .map_err(|e| werr(&cfg, e.to_string()))?;
        Ok(())
    }

    /// Reads a checkpoint folder.
    pub fn load(dir: &Path) -> Result<(Self, Routers), RouterError> {
        let d = dir.display().to_string();
        let need = |file: &'static str| -> Result<PathBuf, RouterError> {
            let p = dir.join(file);
            if p.is_file() {
                Ok(p)
            } else {
                Err(RouterError::Missing {
                    dir: d.clone(),
                    file,
                })
            }
        };
        let invalid = |p: &Path, reason: String| RouterError::Invalid {
            path: p.display().to_string(),
            reason,
        };
        let cfg_path = need(CONFIG_FILE)?;
        let text =
            std::fs::read_to_string(&cfg_path).map_err(|e| invalid(&cfg_path, e.to_string()))?;
        let cfg: RouterConfig =
            serde_json::from_str(&text).map_err(|e| invalid(&cfg_path, e.to_string()))?;
        if cfg.format != FORMAT || cfg.router_hidden_size != HIDDEN {
            return Err(invalid(
                &cfg_path,
                format!(
                    "format {} with router width {} (this release reads format {FORMAT}, width {HIDDEN})",
                    cfg.format, cfg.router_hidden_size
                ),
            ));
        }
        let ckpt = need(CHECKPOINT_FILE)?;
        let tensors = candle_core::safetensors::load(&ckpt, &candle_core::Device::Cpu)
            .map_err(|e| invalid(&ckpt, e.to_string()))?;
        let routers = Routers::from_named(&tensors, cfg.num_layers, cfg.model_hidden_size)
            .map_err(|e| invalid(&ckpt, e))?;
        Ok((cfg, routers))
    }
}
