//! Router checkpoints: `routers.safetensors` (each layer's weights by name) and
//! `router_config.json` (the base model's id and weight fingerprint, its layer count and width,
//! the windows, the training configuration, class counts and metrics). A checkpoint only applies
//! to the model it was trained on: another fingerprint, layer count or width is refused.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::net::{Routers, HIDDEN};
use super::Metrics;
use drllm_contract::RewardSettings;
use drllm_records::atomic::write_atomically;

/// File name of the routers' weights inside a checkpoint folder.
pub const CHECKPOINT_FILE: &str = "routers.safetensors";
/// File name of the [`RouterConfig`] inside a checkpoint folder.
pub const CONFIG_FILE: &str = "router_config.json";
const FORMAT: u32 = 1;

/// Why a router checkpoint cannot be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// One of the checkpoint's two files is not in the folder.
    #[error("router checkpoint {dir}: {file} is missing (a checkpoint is a folder with {CHECKPOINT_FILE} and {CONFIG_FILE}, as `trainer` writes it)")]
    Missing {
        /// The checkpoint folder.
        dir: String,
        /// The missing file's name.
        file: &'static str,
    },
    /// A file that cannot be read or parsed, of another format or router width, or with missing
    /// or misshapen tensors.
    #[error("router checkpoint {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The checkpoint was trained on other weights than the loaded model's.
    #[error("router checkpoint {dir} was trained on model {ckpt} (fingerprint) but the loaded model is {model}: load the checkpoint's base model ({base})")]
    Fingerprint {
        /// The checkpoint folder.
        dir: String,
        /// The checkpoint's model fingerprint.
        ckpt: String,
        /// The loaded model's fingerprint.
        model: String,
        /// The spec of the checkpoint's base model.
        base: String,
    },
    /// The loaded model has another layer count or hidden width than the checkpoint's.
    #[error("router checkpoint {dir} is for a model with {ckpt_layers} layers of width {ckpt_d}, the loaded model has {layers} of width {d}")]
    Shape {
        /// The checkpoint folder.
        dir: String,
        /// The checkpoint's layer count.
        ckpt_layers: usize,
        /// The checkpoint's model hidden width.
        ckpt_d: usize,
        /// The loaded model's layer count.
        layers: usize,
        /// The loaded model's hidden width.
        d: usize,
    },
    /// The run would make prompts of another reward mode or prompt style than the training
    /// records'.
    #[error("router checkpoint {dir} was trained on {trained} prompts, this run makes {asked} prompts: the routers read the prompt's hidden states, so pass {fix}")]
    Prompts {
        /// The checkpoint folder.
        dir: String,
        /// Reward mode and prompt style of the training records.
        trained: String,
        /// Reward mode and prompt style of this run.
        asked: String,
        /// The command-line flags that select the trained prompts.
        fix: String,
    },
    /// Writing a checkpoint file failed.
    #[error("writing router checkpoint {path}: {reason}")]
    Write {
        /// The file or folder.
        path: String,
        /// What failed.
        reason: String,
    },
}

fn style_name(r: &RewardSettings) -> String {
    r.style.map_or("(model default)".into(), |s| s.to_string())
}

fn describe(r: &RewardSettings) -> String {
    format!("{} / {}", r.mode, style_name(r))
}

/// Refuses to route prompts other than the ones a checkpoint was trained on (`trained`): another
/// reward mode or prompt style (`opts` is the evaluation's, resolved on the model).
fn check_prompt_settings(
    dir: &Path,
    trained: Option<RewardSettings>,
    opts: &RewardSettings,
) -> Result<(), RouterError> {
    match trained {
        Some(r) if r.mode != opts.mode || r.style != opts.style => Err(RouterError::Prompts {
            dir: dir.display().to_string(),
            trained: describe(&r),
            asked: describe(opts),
            fix: format!("--reward {} --style {}", r.mode, style_name(&r)),
        }),
        _ => Ok(()),
    }
}

/// Refuses a model other than a checkpoint's: `ckpt` is its (base model spec, fingerprint),
/// `shape` its (layers, width); the rest are the loaded model's.
fn check_model_identity(
    dir: &Path,
    ckpt: (&String, &str),
    shape: (usize, usize),
    fingerprint: &str,
    layers: usize,
    d: usize,
) -> Result<(), RouterError> {
    if ckpt.1 != fingerprint {
        return Err(RouterError::Fingerprint {
            dir: dir.display().to_string(),
            ckpt: ckpt.1.into(),
            model: fingerprint.into(),
            base: ckpt.0.clone(),
        });
    }
    if shape != (layers, d) {
        return Err(RouterError::Shape {
            dir: dir.display().to_string(),
            ckpt_layers: shape.0,
            ckpt_d: shape.1,
            layers,
            d,
        });
    }
    Ok(())
}

/// What a router checkpoint of any kind records of the model and prompts it was made for; the
/// checks this implies live here once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointHeader {
    /// The base model's spec, as the user named it.
    pub base_model: String,
    /// blake3 of the base model's weight files ([`drllm_engine::LoadedModel::fingerprint`]).
    pub model_fingerprint: String,
    /// The base model's layer count.
    pub num_layers: usize,
    /// The base model's hidden width.
    pub model_hidden_size: usize,
    /// How the training prompts were made (reward mode and prompt style decide the tokens a
    /// router reads); routing refuses other prompts. `None`: not recorded.
    #[serde(default)]
    pub reward: Option<RewardSettings>,
}

impl CheckpointHeader {
    /// Refuses a model other than the checkpoint's (`dir` names it in the error).
    pub fn check_model(
        &self,
        dir: &Path,
        fingerprint: &str,
        layers: usize,
        d: usize,
    ) -> Result<(), RouterError> {
        let ckpt = (&self.base_model, self.model_fingerprint.as_str());
        let shape = (self.num_layers, self.model_hidden_size);
        check_model_identity(dir, ckpt, shape, fingerprint, layers, d)
    }

    /// Refuses prompts of another reward mode or style than the training prompts.
    pub fn check_prompts(&self, dir: &Path, opts: &RewardSettings) -> Result<(), RouterError> {
        check_prompt_settings(dir, self.reward, opts)
    }
}

/// How the routers were trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Epochs to train in all (a resumed run trains those beyond the history).
    pub epochs: usize,
    /// Examples per minibatch.
    pub batch_size: usize,
    /// Minibatches whose gradients are summed before each optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Share of the optimizer steps spent warming the learning rate up.
    pub warmup_fraction: f64,
    /// Focal loss γ.
    pub focal_gamma: f64,
    /// β of the effective-number class weights.
    pub class_beta: f64,
    /// Share of the questions held out for validation (split by question).
    pub val_fraction: f64,
    /// Seeds the router initialisation, the validation split and the epochs' shuffles.
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
        /// Length penalty `beta` of a path's weight.
        beta: f64,
        /// Multiplier of the full path's weight when a shorter good path exists.
        full_weight: f64,
        /// `margin_weight` of a path's weight; 0 ignores margins.
        margin_weight: f64,
    },
}

/// One epoch's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// The epoch's number, from 1.
    pub epoch: usize,
    /// Metrics on the training split, gathered during the epoch's steps.
    pub train: Metrics,
    /// Metrics on the validation split after the epoch; `None` without one.
    pub val: Option<Metrics>,
    /// Wall-clock time of the epoch.
    pub seconds: f64,
}

/// `router_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterConfig {
    /// Version of the checkpoint format; this release reads only its own.
    pub format: u32,
    /// The model (one router per layer, each as wide as its hidden state) and the training
    /// records' prompt settings, when all records agree (`None` for checkpoints from before
    /// that field).
    #[serde(flatten)]
    pub header: CheckpointHeader,
    /// Prompt windows each router averages over.
    pub windows: usize,
    /// Width of a router's hidden layer ([`HIDDEN`]).
    pub router_hidden_size: usize,
    /// How the routers were trained.
    pub training: TrainingConfig,
    /// Target decisions in the training split: skip, execute, repeat.
    pub class_counts: [u64; 3],
    /// The loss's class weights (skip, execute, repeat), from `class_counts`.
    pub class_weights: [f32; 3],
    /// Examples in the training split.
    pub train_examples: usize,
    /// Examples in the validation split.
    pub val_examples: usize,
    /// Optimizer steps taken so far (the schedule resumes from here).
    pub steps_done: usize,
    /// Metrics of every epoch trained so far, in order.
    pub history: Vec<EpochMetrics>,
}

impl RouterConfig {
    /// A config for routers not yet trained: no reward settings, counts, metrics or steps.
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
            header: CheckpointHeader {
                base_model: base_model.into(),
                model_fingerprint: model_fingerprint.into(),
                num_layers,
                model_hidden_size,
                reward: None,
            },
            windows,
            router_hidden_size: HIDDEN,
            training,
            class_counts: [0; 3],
            class_weights: [0.0; 3],
            train_examples: 0,
            val_examples: 0,
            steps_done: 0,
            history: Vec::new(),
        }
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
        let routers = Routers::from_named(
            &tensors,
            cfg.header.num_layers,
            cfg.header.model_hidden_size,
        )
        .map_err(|e| invalid(&ckpt, e))?;
        Ok((cfg, routers))
    }
}
