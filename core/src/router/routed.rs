//! Routed inference on a task example: the prompt and (for choice-loglik) every choice's
//! continuation run as one fused batch per layer, as in the search; before each layer the router
//! reads the prompt rows' hidden state and decides, and the layer runs 0, 1 or 2 times on all
//! rows. Skipped layers are never computed, and scoring or generation continues on the path the
//! routers chose, from the key/value slots the routed pass filled.

use candle_core::Tensor;

use crate::tasks::reward::{prepare, Outcome, Prepared, RewardOptions, Scoring};
use crate::tasks::PromptCache;
use crate::Result;
use drllm_contract::Example;
use drllm_engine::exec::Route;
use drllm_engine::{LayerPath, LoadedModel, PathCache};

use super::token::TokenGate;

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

/// Evaluates `ex` along a token route: before each layer `gate` says which of the pass's rows
/// (the prompt and every choice's continuation) run it, and its router what later tokens read of
/// a skipped one; a generated answer continues token by token, each new token's layers decided
/// by the same gate (a pass of its own), its prompt from the longest start `prompts` holds for
/// this route. `gate` counts the token-layers run. Returns the outcome.
pub fn evaluate_tokens(
    lm: &LoadedModel,
    ex: &Example,
    opts: &RewardOptions,
    gate: &mut TokenGate<'_>,
    prompts: Option<&PromptCache>,
) -> Result<Outcome> {
    let prep = prepare(lm, ex, opts)?;
    let kv = gate.kv();
    let full = LayerPath::full(lm.model.num_layers());
    let scoring = Scoring {
        lm,
        ex,
        prep: &prep,
        opts,
    };
    let Some(pc) = prompts.filter(|_| prep.gen.is_some()) else {
        let mut slots = Vec::with_capacity(lm.model.num_layers());
        let mut decide = |layer: usize, x: &Tensor| gate.decide(layer, x);
        let route = Route::Tokens {
            gate: &mut decide,
            kv,
        };
        let pass =
            (lm.model).run_path(prep.embed(lm)?, prep.rows(&mut slots), route, |_, _, _| ())?;
        let mut feed =
            |cache: &mut PathCache, next: u32, pos: usize| gate.feed(&lm.model, cache, next, pos);
        return Ok(scoring
            .finish_fed(&full, &pass.hidden, slots, Some(&mut feed))?
            .0);
    };
    // From the prefix cache: the reused positions count the layers they ran when computed.
    let key = PromptCache::token_key(gate.cut(), kv);
    let mut ran = Vec::new();
    let p = {
        let mut decide = |layer: usize, x: &Tensor| {
            let run = gate.decide(layer, x)?;
            ran.resize(run.len(), 0);
            ran.iter_mut()
                .zip(&run)
                .for_each(|(n, &r)| *n += u32::from(r));
            Ok(run)
        };
        let route = Route::Tokens {
            gate: &mut decide,
            kv,
        };
        pc.run_prompt(lm, &prep.prompt_ids, key, route)?
    };
    gate.rows += (p.reused.len() * full.len()) as u64;
    gate.ran += p.reused.iter().map(|&n| n as u64).sum::<u64>();
    let ran: Vec<u32> = p.reused.iter().copied().chain(ran).collect();
    pc.keep(key, &prep.prompt_ids, &p.cache, ran);
    let mut feed =
        |cache: &mut PathCache, next: u32, pos: usize| gate.feed(&lm.model, cache, next, pos);
    Ok(scoring
        .generate_after(&full, &p.hidden, p.cache, Some(&mut feed))?
        .0)
}
