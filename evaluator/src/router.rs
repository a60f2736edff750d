//! A router checkpoint of any kind, as `run`, `calibrate` and `serve` use it: Dr.LLM's
//! per-layer routers (`router_config.json` + `routers.safetensors`, knob: the budget p, static at
//! 0.5), a path menu (`path_menu.json`, knob: the gate's threshold τ, static at 1) or a token
//! router (`token_router.json`, knob: the skip threshold τ, static at 1). The first two route
//! through one decision per layer, the token router through a gate per token and layer; every
//! command runs each kind the same way, and the knob's meaning is what differs.

use std::path::Path;

use anyhow::Context;
use candle_core::Tensor;
use drllm_contract::Example;
use drllm_contract::RewardSettings;
use drllm_core::router::{
    evaluate_routed, evaluate_tokens, Budget, GateInput, PathMenu, RouterConfig, Routers,
    TokenRouter, CHECKPOINT_FILE, MENU_FILE, MENU_STATIC, TOKEN_FILE, TOKEN_STATIC, TOKEN_WEIGHTS,
};
use drllm_core::tasks::reward::{Outcome, RewardOptions};
use drllm_core::tasks::PromptCache;
use drllm_engine::{LayerPath, LoadedModel};

/// A loaded checkpoint, checked against the model.
pub enum Router {
    PerLayer { cfg: RouterConfig, routers: Routers },
    Menu(PathMenu),
    Token(TokenRouter),
}

/// What one routed pass gave.
pub struct Routing {
    pub outcome: Outcome,
    /// The layers run (the full path for a token router).
    pub path: LayerPath,
    /// What the router saw (see [`Seen`]).
    pub seen: Seen,
    /// Mean layer executions per token.
    pub executions: f64,
}

/// What a routed pass observed at its decisions: the per-layer routers' probabilities, or the
/// menu gate's probabilities (one entry). Any knob's decisions follow from it.
pub type Seen = Vec<Vec<f32>>;

impl Router {
    /// Reads the checkpoint in `dir` (a menu when `path_menu.json` is there) and refuses it for
    /// another model than `lm` (fingerprint, depth, width).
    pub fn load(dir: &Path, lm: &LoadedModel) -> anyhow::Result<Self> {
        let (layers, d) = (lm.model.num_layers(), lm.model.config().hidden_size);
        if dir.join(TOKEN_FILE).is_file() {
            let r = TokenRouter::load(dir)?;
            r.cfg.header.check_model(dir, &lm.fingerprint, layers, d)?;
            return Ok(Self::Token(r));
        }
        if dir.join(MENU_FILE).is_file() {
            let menu = PathMenu::load(dir)?;
            menu.header.check_model(dir, &lm.fingerprint, layers, d)?;
            return Ok(Self::Menu(menu));
        }
        let (cfg, routers) = RouterConfig::load(dir)?;
        cfg.header.check_model(dir, &lm.fingerprint, layers, d)?;
        Ok(Self::PerLayer { cfg, routers })
    }

    /// The router kind, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PerLayer { .. } => "per-layer",
            Self::Menu(_) => "path-menu",
            Self::Token(_) => "token",
        }
    }

    /// The knob at which this kind runs the static model.
    pub fn static_knob(&self) -> f32 {
        match self {
            Self::PerLayer { .. } => Budget::STATIC.0,
            Self::Menu(_) => MENU_STATIC,
            Self::Token(_) => TOKEN_STATIC,
        }
    }

    /// Refuses a knob outside this kind's range.
    pub fn check_knob(&self, knob: f32) -> anyhow::Result<()> {
        let (range, what) = match self {
            Self::PerLayer { .. } => (-1.0..=1.0, "a per-layer checkpoint's budget"),
            Self::Menu(_) => (0.0..=1.0, "a path menu's threshold τ"),
            Self::Token(_) => (0.0..=1.0, "a token router's skip threshold τ"),
        };
        anyhow::ensure!(
            range.contains(&knob),
            "--budget {knob}: {what} must be in [{}, {}]",
            range.start(),
            range.end()
        );
        Ok(())
    }

    /// The training prompts' settings must be the run's.
    pub fn check_prompts(&self, dir: &Path, opts: &RewardSettings) -> anyhow::Result<()> {
        match self {
            Self::PerLayer { cfg, .. } => cfg.header.check_prompts(dir, opts)?,
            Self::Menu(m) => m.header.check_prompts(dir, opts)?,
            Self::Token(t) => t.cfg.header.check_prompts(dir, opts)?,
        }
        Ok(())
    }

    /// The reward settings the checkpoint was trained on, when known.
    pub fn reward(&self) -> Option<RewardSettings> {
        match self {
            Self::PerLayer { cfg, .. } => cfg.header.reward,
            Self::Menu(m) => m.header.reward,
            Self::Token(t) => t.cfg.header.reward,
        }
    }

    /// Prompt windows of a per-layer checkpoint (0 for a menu), for reports.
    pub fn windows(&self) -> usize {
        match self {
            Self::PerLayer { cfg, .. } => cfg.windows,
            Self::Menu(_) | Self::Token(_) => 0,
        }
    }

    /// One decision at knob `knob` entering `layer` with prompt rows `x`, recording what the
    /// router saw into `seen`.
    pub fn decide(
        &self,
        knob: f32,
        layer: usize,
        x: &Tensor,
        seen: &mut Seen,
    ) -> drllm_engine::Result<u8> {
        match self {
            Self::PerLayer { cfg, routers } => {
                let r = routers.probs(layer, x, cfg.windows)?;
                seen.push(r.to_vec());
                Ok(Budget(knob).apply(r))
            }
            Self::Menu(m) => m.decide(knob, layer, x, seen),
            Self::Token(_) => Err(drllm_engine::Error::from(candle_core::Error::Msg(
                "a token router decides per token, not per layer: run it through a token route"
                    .into(),
            ))),
        }
    }

    /// The decisions knob `knob` takes given what a pass saw (those of the layers the pass
    /// decided): two knobs with the same decisions run the same path.
    pub fn decisions(&self, knob: f32, seen: &Seen) -> Vec<u8> {
        match self {
            Self::PerLayer { .. } => seen
                .iter()
                .map(|r| Budget(knob).apply([r[0], r[1], r[2]]))
                .collect(),
            Self::Menu(m) => match seen.first() {
                Some(p) => (0..m.header.num_layers)
                    .map(|l| m.decision(p, knob, l))
                    .collect(),
                None => Vec::new(),
            },
            // Contextual gates see the same state at every knob (the first layers always run),
            // so their logits decide any knob's masks; own-input gates see states that depend
            // on earlier decisions, so no two knobs share a pass.
            Self::Token(t) => match t.cfg.gate_input {
                GateInput::Contextual => {
                    let cut = t.skip_cut(knob);
                    seen.iter().flatten().map(|&l| u8::from(l >= cut)).collect()
                }
                GateInput::Own => knob.to_bits().to_le_bytes().to_vec(),
            },
        }
    }

    /// Routed inference of `ex` at `knob`; a token route's generating prompt starts from the
    /// longest start `prompts` holds for it (per-input routers read the whole prompt).
    pub fn evaluate(
        &self,
        lm: &LoadedModel,
        ex: &Example,
        opts: &RewardOptions,
        knob: f32,
        prompts: Option<&PromptCache>,
    ) -> anyhow::Result<Routing> {
        let mut seen = Seen::new();
        if let Self::Token(t) = self {
            let mut gate = t.gate(knob);
            let outcome = evaluate_tokens(lm, ex, opts, &mut gate, prompts)?;
            let executions = gate.ran as f64 / (gate.rows as f64 / lm.model.num_layers() as f64);
            return Ok(Routing {
                outcome,
                path: LayerPath::full(lm.model.num_layers()),
                seen: gate.logits().unwrap_or_default(),
                executions,
            });
        }
        let (outcome, path) = evaluate_routed(lm, ex, opts, |layer, x| {
            self.decide(knob, layer, x, &mut seen)
        })?;
        Ok(Routing {
            outcome,
            executions: path.len() as f64,
            path,
            seen,
        })
    }

    /// blake3 of the checkpoint's weights file (the routers' tensors, or the menu), which a
    /// certificate names.
    pub fn weights_hash(dir: &Path) -> anyhow::Result<String> {
        let (menu, token) = (dir.join(MENU_FILE), dir.join(TOKEN_WEIGHTS));
        let path = if token.is_file() {
            token
        } else if menu.is_file() {
            menu
        } else {
            dir.join(CHECKPOINT_FILE)
        };
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(blake3::hash(&bytes).to_hex().to_string())
    }
}
