//! Routed inference on a task example: the prompt and (for choice-loglik) every choice's
//! continuation run as one fused batch per layer, as in the search; before each layer the router
//! reads the prompt rows' hidden state and decides, and the layer runs 0, 1 or 2 times on all
//! rows. Skipped layers are never computed, and scoring or generation continues on the path the
//! routers chose, from the key/value slots the routed pass filled.

use candle_core::Tensor;

use crate::tasks::reward::{prepare, Outcome, Prepared, RewardOptions, Scoring};
use crate::Result;
use drllm_contract::Example;
use drllm_engine::exec::Route;
use drllm_engine::{LayerPath, LoadedModel, SkippedKv};

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
    let mut decide_prompt = |layer: usize, x: &Tensor| decide(layer, &x.narrow(0, 0, t)?);
    run_and_score(lm, ex, opts, &prep, Route::Decide(&mut decide_prompt))
}

/// Runs `prep`'s rows along `route` and scores the example from where the pass ends.
fn run_and_score(
    lm: &LoadedModel,
    ex: &Example,
    opts: &RewardOptions,
    prep: &Prepared,
    route: Route<'_>,
) -> Result<(Outcome, LayerPath)> {
    let mut slots = Vec::with_capacity(lm.model.num_layers());
    let pass = (lm.model).run_path(prep.embed(lm)?, prep.rows(&mut slots), route, |_, _, _| ())?;
    let scoring = Scoring { lm, ex, prep, opts };
    let (o, _) = scoring.finish(&pass.path, &pass.hidden, slots)?;
    Ok((o, pass.path))
}

/// Evaluates `ex` along a token route: before each layer `gate(layer, rows)` says which of the
/// pass's rows (the prompt and every choice's continuation) run it, and `kv` what later tokens
/// read of a skipped one. choice-loglik only: generation would continue along per-token routes,
/// which scoring does not do yet. Returns the outcome.
pub fn evaluate_tokens(
    lm: &LoadedModel,
    ex: &Example,
    opts: &RewardOptions,
    kv: SkippedKv,
    mut gate: impl FnMut(usize, &Tensor) -> drllm_engine::Result<Vec<bool>>,
) -> Result<Outcome> {
    let prep = prepare(lm, ex, opts)?;
    if prep.gen.is_some() {
        return Err(crate::Error::Reward {
            id: ex.id.clone(),
            reason: "token routers score choice-loglik only (generation along token routes is \
                     not built yet): pass --reward choice-loglik"
                .into(),
        });
    }
    let route = Route::Tokens {
        gate: &mut gate,
        kv,
    };
    Ok(run_and_score(lm, ex, opts, &prep, route)?.0)
}
