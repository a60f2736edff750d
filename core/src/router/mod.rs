//! Dr.LLM's per-layer routers (DESIGN.md "Routers"): router `i` reads the hidden state entering
//! layer `i`, averaged over windows of the prompt, and decides skip (0), execute (1) or repeat (2).
//! This module holds what the trainer and the evaluator share: the passes with one decision per
//! layer (teacher-forced, [`teacher_forced_inputs`]; routed, [`evaluate_routed`]), the window
//! means, the router network and its checkpoint, the target labels and the classification
//! metrics. The training step and the loss live in the trainer.

mod checkpoint;
mod gelu;
mod labels;
mod menu;
mod metrics;
mod net;
mod routed;
mod token;

use candle_core::{Tensor, D};

pub use checkpoint::{
    CheckpointHeader, EpochMetrics, RouterConfig, RouterError, Targets, TrainingConfig,
    CHECKPOINT_FILE, CONFIG_FILE,
};
pub use gelu::gelu_tanh;
/// The GELU numerics the trainer's fused gradient op shares.
pub use gelu::{derivative as gelu_tanh_derivative, f32s as cpu_f32s, CHUNK as GELU_CHUNK};
pub use labels::{decision_labels, one_hot};
pub use menu::{MenuPath, PathMenu, MENU_FILE, MENU_FORMAT, MENU_STATIC};
pub use metrics::{majority, Confusion, Metrics};
pub use net::{argmax3, argmax_last, mlp, Budget, Routers, CHECKPOINT_NAMES, HIDDEN};
pub use routed::{evaluate_routed, evaluate_tokens};
pub use token::{
    GateInput, TokenEpoch, TokenGate, TokenRouter, TokenRouterConfig, TokenTraining, TOKEN_FILE,
    TOKEN_FORMAT, TOKEN_STATIC, TOKEN_WEIGHTS,
};

use drllm_engine::exec::{Route, Rows};
use drllm_engine::{Model, Result};

/// Decision "skip the layer", as the records' `best_decisions` and the router classes number it.
pub const SKIP: u8 = 0;
/// Decision "run the layer once".
pub const EXECUTE: u8 = 1;
/// Decision "run the layer twice".
pub const REPEAT: u8 = 2;
/// Names of the decisions, indexed by their number.
pub const CLASSES: [&str; 3] = ["skip", "execute", "repeat"];

/// Default number of prompt windows a router averages over.
pub const DEFAULT_WINDOWS: usize = 8;

/// Means of the prompt's hidden states `x` (`[T, d]`) over `min(windows, T)` equal windows (the
/// remainder positions dropped): `[min(windows, T), d]`.
pub fn window_means(x: &Tensor, windows: usize) -> Result<Tensor> {
    let (t, d) = x.dims2()?;
    if t <= windows {
        return Ok(x.clone());
    }
    let size = t / windows;
    Ok(x.narrow(0, 0, windows * size)?
        .reshape((windows, size, d))?
        .mean(1)?)
}

/// The router inputs of a teacher-forced pass along `target` (per-layer decisions) over the
/// prompt `ids` alone: for each layer, the window means of the state entering it,
/// `[L, windows, d]` with rows past the prompt's window count zero, and that count.
pub fn teacher_forced_inputs(
    model: &Model,
    ids: &[u32],
    target: &[u8],
    windows: usize,
) -> Result<(Tensor, usize)> {
    let mut means = Vec::with_capacity(target.len());
    let mut decide = |layer: usize, x: &Tensor| {
        means.push(window_means(x, windows)?);
        Ok(target.get(layer).copied().unwrap_or(EXECUTE))
    };
    let route = Route::Decide(&mut decide);
    model.run_path(model.embed(ids)?, Rows::Uncached, route, |_, _, _| ())?;
    let count = means.first().map_or(0, |m| m.dim(0).unwrap_or(0));
    let means = Tensor::stack(&means, 0)?;
    let means = if count < windows {
        let (l, _, d) = means.dims3()?;
        let pad = Tensor::zeros((l, windows - count, d), means.dtype(), means.device())?;
        Tensor::cat(&[&means, &pad], 1)?
    } else {
        means
    };
    Ok((means, count))
}

/// Softmax over the last dimension.
pub(crate) fn softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}
