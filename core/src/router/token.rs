//! The token router: a router kind beside the per-layer routers and the path menu, deciding per
//! token and layer. Per-input routers find nothing to skip on a small model (`trainer
//! diagnose`); single tokens may differ (template tokens, punctuation, tokens far from the
//! answer). Every token runs the first `keep_first` layers; then a bottleneck MLP per routed
//! layer reads each token's state (the state entering layer `keep_first`, shared by every gate,
//! or the layer's own input) and gives the probability that the token runs the layer. The knob
//! is a threshold τ in [0, 1] on the probability of skipping: a token skips a layer when that
//! probability exceeds τ, so τ = 1 is the static model and τ = 0.5 the trained operating point.
//! Runs go through the engine's token routes ([`drllm_engine::Route::Tokens`]), which compute
//! nothing of a skipped token-layer.
//!
//! The checkpoint is a folder with `token_router.json` (the model it was trained on, the gate
//! layout, the training settings and history) and `token_router.safetensors` (the gates).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::checkpoint::{CheckpointHeader, RouterError};
use super::net::uniform;
use drllm_engine::SkippedKv;
use drllm_records::atomic::write_atomically;

/// File name of a token router's configuration inside its folder.
pub const TOKEN_FILE: &str = "token_router.json";
/// File name of its gate weights.
pub const TOKEN_WEIGHTS: &str = "token_router.safetensors";
/// The knob at which a token router runs the static model.
pub const TOKEN_STATIC: f32 = 1.0;
/// The checkpoint format this release writes and reads.
pub const TOKEN_FORMAT: u32 = 1;

/// What a gate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GateInput {
    /// The state entering layer `keep_first`, for every routed layer's gate (DLR's "contextual
    /// gating"): all decisions of a token are made once.
    #[default]
    Contextual,
    /// Each routed layer's own input.
    Own,
}

impl std::str::FromStr for GateInput {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "contextual" => Ok(Self::Contextual),
            "own" => Ok(Self::Own),
            o => Err(format!("unknown gate input `{o}` (contextual, own)")),
        }
    }
}

/// How the gates were trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenTraining {
    /// Target share of token-layers executed (all layers counted).
    pub target: f64,
    /// Weight of the per-layer sparsity penalty (mean execute probability).
    pub lambda: f64,
    /// Weight of the squared distance of the execute share from the target.
    pub mu: f64,
    /// Distillation temperature.
    pub kd_temperature: f64,
    /// Distill on every row (true) or on the scored rows only (the prompt's last row and the
    /// continuations).
    pub kd_all_rows: bool,
    /// Gumbel-softmax temperature at the first and the last step (annealed geometrically).
    pub tau_start: f64,
    /// See `tau_start`.
    pub tau_end: f64,
    /// AdamW learning rate.
    pub lr: f64,
    /// Examples whose gradients are summed per step.
    pub batch_size: usize,
    /// Epochs to train in all.
    pub epochs: usize,
    /// Seed of the initialisation, the order and the noise.
    pub seed: u64,
    /// Where the training prompts came from (dataset/split/limit).
    pub prompts: String,
}

/// One epoch's means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenEpoch {
    /// 1-based.
    pub epoch: usize,
    /// Whole loss.
    pub loss: f64,
    /// Distillation part.
    pub kd: f64,
    /// Share of token-layers executed (hard decisions, with noise).
    pub execute: f64,
    /// Wall time.
    pub seconds: f64,
}

/// `token_router.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRouterConfig {
    /// Checkpoint format; this release reads only its own.
    pub format: u32,
    /// The model and prompts the gates were trained for.
    #[serde(flatten)]
    pub header: CheckpointHeader,
    /// Layers every token runs before routing.
    pub keep_first: usize,
    /// What the gates read.
    pub gate_input: GateInput,
    /// Width of a gate's hidden layer.
    pub bottleneck: usize,
    /// What later tokens read of a skipped token (`project` or `mask`); routing must run the
    /// same way as training did.
    pub skipped_kv: String,
    /// How the gates were trained.
    pub training: TokenTraining,
    /// Optimizer steps so far (a resumed run continues the schedule here).
    pub steps_done: usize,
    /// Every epoch so far.
    pub history: Vec<TokenEpoch>,
    /// Ids of the questions the gates were trained on: calibration leaves them out.
    pub training_questions: Vec<String>,
    /// A control, not a router: below the static knob every token skips each routed layer with
    /// this probability, by a hash of its state entering `keep_first` (the gates are unused).
    /// It says whether a trained router beats chance at the same compute.
    #[serde(default)]
    pub random_skip: Option<f64>,
}

impl TokenRouterConfig {
    /// The treatment of skipped tokens' keys.
    pub fn kv(&self) -> Result<SkippedKv, String> {
        self.skipped_kv.parse()
    }

    /// Routed layers `keep_first .. num_layers`.
    pub fn routed(&self) -> usize {
        self.header.num_layers - self.keep_first
    }
}

/// The gates of every routed layer, stacked: `w1` `[G, r, d]`, `b1` `[G, r]`, `w2` `[G, r]`,
/// `b2` `[G]` for `G` routed layers of bottleneck `r`. A gate's input is RMS-normalised.
pub struct TokenRouter {
    /// The checkpoint's configuration.
    pub cfg: TokenRouterConfig,
    /// `[G, r, d]`
    pub w1: Var,
    /// `[G, r]`
    pub b1: Var,
    /// `[G, r]`
    pub w2: Var,
    /// `[G]`
    pub b2: Var,
}

const NAMES: [&str; 4] = ["gates.w1", "gates.b1", "gates.w2", "gates.b2"];

impl TokenRouter {
    /// Fresh gates that run every token at first (output bias `run_bias`, a probability of
    /// sigmoid(run_bias) to run), initialised from the config's seed.
    pub fn init(cfg: TokenRouterConfig, run_bias: f32) -> drllm_engine::Result<Self> {
        let (g, r, d) = (cfg.routed(), cfg.bottleneck, cfg.header.model_hidden_size);
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.training.seed);
        let (w1, b1, w2) = (
            uniform(&mut rng, &[g, r, d], d)?,
            uniform(&mut rng, &[g, r], d)?,
            uniform(&mut rng, &[g, r], r)?,
        );
        let b2 = Var::from_tensor(&Tensor::full(run_bias, g, &Device::Cpu)?)?;
        Ok(Self {
            cfg,
            w1,
            b1,
            w2,
            b2,
        })
    }

    /// What later tokens read of a skipped one (checked when the router was built or loaded).
    pub fn kv(&self) -> SkippedKv {
        self.cfg.kv().unwrap_or_default()
    }

    /// The trainable weights (for the optimizer), in checkpoint order.
    pub fn vars(&self) -> Vec<Var> {
        vec![
            self.w1.clone(),
            self.b1.clone(),
            self.w2.clone(),
            self.b2.clone(),
        ]
    }

    /// Run logits of the gates `gates` (a range of routed-layer indices) for each row of `x`
    /// (`[T, d]`): `[T, gates.len()]`. Differentiable in the weights.
    pub fn logits(
        &self,
        x: &Tensor,
        gates: std::ops::Range<usize>,
    ) -> drllm_engine::Result<Tensor> {
        let (t, d) = x.dims2()?;
        let (g, r) = (gates.len(), self.cfg.bottleneck);
        let x = x.to_dtype(DType::F32)?;
        let z = x.broadcast_div(&(x.sqr()?.mean_keepdim(D::Minus1)? + 1e-6)?.sqrt()?)?;
        let w1 = self.w1.narrow(0, gates.start, g)?.reshape((g * r, d))?;
        let b1 = self.b1.narrow(0, gates.start, g)?.reshape(g * r)?;
        let h = z.matmul(&w1.t()?)?.broadcast_add(&b1)?.relu()?;
        let w2 = self.w2.narrow(0, gates.start, g)?;
        let b2 = self.b2.narrow(0, gates.start, g)?;
        let y = h.reshape((t, g, r))?.broadcast_mul(&w2)?.sum(D::Minus1)?;
        Ok(y.broadcast_add(&b2)?)
    }

    /// Writes both files into `dir` atomically, the config last.
    pub fn save(&self, dir: &Path) -> Result<(), RouterError> {
        let werr = |p: &Path, reason: String| RouterError::Write {
            path: p.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| werr(dir, e.to_string()))?;
        let file = dir.join(TOKEN_WEIGHTS);
        let named: HashMap<String, Tensor> = NAMES
            .iter()
            .zip(self.vars())
            .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
            .collect();
        write_atomically(&file, |tmp| candle_core::safetensors::save(&named, tmp))
            .map_err(|e| werr(&file, e.to_string()))?;
        let cfg = dir.join(TOKEN_FILE);
        let json = serde_json::to_string_pretty(&self.cfg).expect("a config serializes");
        write_atomically(&cfg, |tmp| std::fs::write(tmp, &json))
            .map_err(|e| werr(&cfg, e.to_string()))
    }

    /// Reads and checks a token router folder.
    pub fn load(dir: &Path) -> Result<Self, RouterError> {
        let cfg_path = dir.join(TOKEN_FILE);
        let invalid = |p: &Path, reason: String| RouterError::Invalid {
            path: p.display().to_string(),
            reason,
        };
        let text =
            std::fs::read_to_string(&cfg_path).map_err(|e| invalid(&cfg_path, e.to_string()))?;
        let cfg: TokenRouterConfig =
            serde_json::from_str(&text).map_err(|e| invalid(&cfg_path, e.to_string()))?;
        if cfg.format != TOKEN_FORMAT {
            return Err(invalid(
                &cfg_path,
                format!("format {} (this release reads {TOKEN_FORMAT})", cfg.format),
            ));
        }
        cfg.kv().map_err(|e| invalid(&cfg_path, e))?;
        if cfg.keep_first >= cfg.header.num_layers {
            return Err(invalid(
                &cfg_path,
                "keep_first leaves no layer to route".into(),
            ));
        }
        let file = dir.join(TOKEN_WEIGHTS);
        let tensors = candle_core::safetensors::load(&file, &Device::Cpu)
            .map_err(|e| invalid(&file, e.to_string()))?;
        let (g, r, d) = (cfg.routed(), cfg.bottleneck, cfg.header.model_hidden_size);
        let shapes: [&[usize]; 4] = [&[g, r, d], &[g, r], &[g, r], &[g]];
        let mut vars = Vec::with_capacity(4);
        for (name, shape) in NAMES.iter().zip(shapes) {
            let t = tensors
                .get(*name)
                .ok_or_else(|| invalid(&file, format!("no tensor `{name}`")))?;
            if t.dims() != shape {
                return Err(invalid(
                    &file,
                    format!("`{name}` is {:?}, the config says {shape:?}", t.dims()),
                ));
            }
            let var = t.to_dtype(DType::F32).and_then(|t| Var::from_tensor(&t));
            vars.push(var.map_err(|e| invalid(&file, e.to_string()))?);
        }
        let mut it = vars.into_iter();
        let mut next = || it.next().expect("four tensors");
        Ok(Self {
            cfg,
            w1: next(),
            b1: next(),
            w2: next(),
            b2: next(),
        })
    }

    /// The run-logit below which a token skips at knob `tau`: it skips when 1 − sigmoid(logit)
    /// > τ, i.e. logit < logit(1 − τ).
    pub fn skip_cut(&self, tau: f32) -> f32 {
        logit(1.0 - tau)
    }

    /// A deterministic gate for a pass at knob `tau` (see the module doc).
    pub fn gate(&self, tau: f32) -> TokenGate<'_> {
        TokenGate {
            router: self,
            cut: self.skip_cut(tau),
            logits: None,
            earlier: Vec::new(),
            ran: 0,
            rows: 0,
        }
    }
}

fn logit(p: f32) -> f32 {
    let p = p.clamp(0.0, 1.0);
    (p / (1.0 - p)).ln()
}

/// The decisions of one pass: which rows run each layer. Counts what ran.
pub struct TokenGate<'a> {
    router: &'a TokenRouter,
    cut: f32,
    /// Contextual gates: every routed layer's logits, from the state entering `keep_first`, for
    /// the rows of this pass.
    logits: Option<Vec<Vec<f32>>>,
    /// The logits of earlier passes (generated tokens), rows appended per gate.
    earlier: Vec<Vec<f32>>,
    /// Token-layers run so far.
    pub ran: u64,
    /// Token-layers decided so far.
    pub rows: u64,
}

impl TokenGate<'_> {
    /// Contextual gates: every routed layer's run logits per row of every pass so far, once
    /// the passes have reached them (what the gate saw, from which any knob's decisions follow).
    pub fn logits(&self) -> Option<Vec<Vec<f32>>> {
        let now = self.logits.as_ref()?;
        let mut all = self.earlier.clone();
        all.resize(now.len(), Vec::new());
        for (a, n) in all.iter_mut().zip(now) {
            a.extend_from_slice(n);
        }
        Some(all)
    }

    /// The next rows are a new pass (a generated token): contextual gates read its state anew.
    pub fn next_pass(&mut self) {
        if let Some(l) = self.logits.take() {
            self.earlier.resize(l.len(), Vec::new());
            for (a, n) in self.earlier.iter_mut().zip(l) {
                a.extend(n);
            }
        }
    }

    /// The run-logit below which a token skips (the knob, as this gate applies it).
    pub fn cut(&self) -> f32 {
        self.cut
    }

    /// What later tokens read of a token that skipped a layer (the router's setting).
    pub fn kv(&self) -> SkippedKv {
        self.router.kv()
    }

    /// Runs one generated token `next` at position `pos` along this gate's token route (a pass
    /// of its own), using and extending `cache`; its logits (`[1, vocab]`).
    pub fn feed(
        &mut self,
        model: &drllm_engine::Model,
        cache: &mut drllm_engine::PathCache,
        next: u32,
        pos: usize,
    ) -> drllm_engine::Result<Tensor> {
        self.next_pass();
        let kv = self.kv();
        let mut decide = |layer: usize, h: &Tensor| self.decide(layer, h);
        model.forward_tokens(&[next], cache, pos, &mut decide, kv)
    }

    /// The rows of `x` (the pass's state entering `layer`) that run it.
    pub fn decide(&mut self, layer: usize, x: &Tensor) -> drllm_engine::Result<Vec<bool>> {
        let cfg = &self.router.cfg;
        let n = x.dim(0)?;
        self.rows += n as u64;
        if layer < cfg.keep_first {
            self.ran += n as u64;
            return Ok(vec![true; n]);
        }
        let g = layer - cfg.keep_first;
        let row = match cfg.gate_input {
            _ if cfg.random_skip.is_some() || cfg.gate_input == GateInput::Contextual => {
                if self.logits.is_none() {
                    self.logits = Some(match cfg.random_skip {
                        Some(p) => random_logits(x, cfg.routed(), p)?,
                        None => {
                            let all = self.router.logits(x, 0..cfg.routed())?;
                            all.t()?.contiguous()?.to_vec2::<f32>()?
                        }
                    });
                }
                self.logits.as_ref().expect("just set")[g].clone()
            }
            GateInput::Own | GateInput::Contextual => {
                self.router.logits(x, g..g + 1)?.flatten_all()?.to_vec1()?
            }
        };
        let run: Vec<bool> = row.iter().map(|&l| l >= self.cut).collect();
        self.ran += run.iter().filter(|&&r| r).count() as u64;
        Ok(run)
    }
}

/// The random control's logits `[gates][rows]`: −∞ (skip below the static knob) with
/// probability `p`, else +∞, by a hash of each row's state and the gate.
fn random_logits(x: &Tensor, gates: usize, p: f64) -> drllm_engine::Result<Vec<Vec<f32>>> {
    let rows = x.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok((0..gates)
        .map(|g| {
            rows.iter()
                .map(|row| {
                    let mut h = blake3::Hasher::new();
                    for v in row.iter().take(16) {
                        h.update(&v.to_bits().to_le_bytes());
                    }
                    h.update(&(g as u64).to_le_bytes());
                    let bytes: [u8; 8] = h.finalize().as_bytes()[..8].try_into().expect("8 bytes");
                    let u = u64::from_le_bytes(bytes) as f64 / u64::MAX as f64;
                    if u < p {
                        f32::NEG_INFINITY
                    } else {
                        f32::INFINITY
                    }
                })
                .collect()
        })
        .collect())
}
