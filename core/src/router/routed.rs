//! Routed inference on a task example: the prompt and (for choice-loglik) every choice's
//! continuation run as one fused batch per layer, as in the search; before each layer the router
//! reads the prompt rows' hidden state and decides, and the layer runs 0, 1 or 2 times on all
//! rows. Skipped layers are never computed, and scoring or generation continues on the path the
//! routers chose, from the key/value slots the routed pass filled.

use candle_core::Tensor;

use crate::tasks::reward::{prepare, Outcome, RewardOptions, Scoring};
use crate::Result;
use drllm_contract::Example;
use drllm_engine::exec::Route;
use drllm_engine::{LayerPath, LoadedModel};

/// Evaluates `ex` along the path that `decide(layer, prompt_rows)` chooses layer by layer;
/// returns the outcome and the path.
pub fn evaluate_routed(
    lm: &LoadedModel,
    ex: &Example,
    opts: &RewardOptions,
    mut decide: impl FnMut(usize, &Tensor) -> drllm_engine::Result<u8>,
) -> Result<(Outcome, LayerPath)> {
    let prep = prepare(lm, ex, opts)?;
    let t = prep.prompt_ids.len();
    let mut slots = Vec::with_capacity(lm.model.num_layers());
    let mut decide_prompt = |layer: usize, x: &Tensor| decide(layer, &x.narrow(0, 0, t)?);
    let route = Route::Decide(&mut decide_prompt);
    let pass = (lm.model).run_path(prep.embed(lm)?, prep.rows(&mut slots), route, |_, _, _| ())?;
    let scoring = Scoring {
        lm,
        ex,
        prep: &prep,
        opts,
    };
    let (o, _) = scoring.finish(&pass.path, &pass.hidden, slots)?;
    Ok((o, pass.path))
}
