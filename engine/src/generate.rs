//! Greedy decoding along a layer path, with the three stop conditions the search needs: an end
//! token of the model, a token budget, and a caller's predicate that sees the tokens so far (the
//! graders use it to stop once a verdict can no longer change).

use candle_core::Tensor;

use crate::cache::PathCache;
use crate::error::Result;
use crate::model::{Logits, Model};
use crate::path::LayerPath;

/// Why a greedy generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced one of its end-of-sequence tokens (not included in the output).
    Eos,
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The caller's predicate said stop.
    Predicate,
    /// The model's context is full.
    ContextFull,
}

/// The tokens a greedy generation produced and why it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The new token ids, without the prompt and without a final end token.
    pub tokens: Vec<u32>,
    /// Why generation stopped.
    pub stop: StopReason,
}

/// Index of the largest logit (the first one on ties) of a `[vocab]` or `[1, vocab]` tensor.
pub fn argmax(logits: &Tensor) -> Result<u32> {
    let v = logits.flatten_all()?.to_vec1::<f32>()?;
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    Ok(best as u32)
}

/// Greedy generation of up to `max_new_tokens` after `prompt`, along `path`.
pub fn greedy(
    model: &Model,
    prompt: &[u32],
    path: &LayerPath,
    max_new_tokens: usize,
    stop: impl FnMut(&[u32]) -> bool,
) -> Result<Generation> {
    let mut cache = PathCache::new(path);
    let logits = model.forward(prompt, path, &mut cache, 0, Logits::Last)?;
    greedy_continue(model, &mut cache, &logits, max_new_tokens, stop)
}

/// Continues greedy generation from a cache that already holds the prompt, given the logits of
/// its last position.
pub fn greedy_continue(
    model: &Model,
    cache: &mut PathCache,
    last_logits: &Tensor,
    max_new_tokens: usize,
    stop: impl FnMut(&[u32]) -> bool,
) -> Result<Generation> {
    greedy_observed(model, cache, last_logits, max_new_tokens, stop, |_, _| {
        Ok(())
    })
}

/// [`greedy_continue`] that also shows `observe(logits, token)` each token picked, a final end
/// token included, with the logits (`[1, vocab]`) it was picked from (a server reports their
/// log-probabilities, as OpenAI's API does for the end token too).
pub fn greedy_observed(
    model: &Model,
    cache: &mut PathCache,
    last_logits: &Tensor,
    max_new_tokens: usize,
    stop: impl FnMut(&[u32]) -> bool,
    observe: impl FnMut(&Tensor, u32) -> Result<()>,
) -> Result<Generation> {
    let path = cache.path().clone();
    let feed = |cache: &mut PathCache, next: u32, pos: usize| {
        model.forward(&[next], &path, cache, pos, Logits::Last)
    };
    greedy_fed(
        model,
        cache,
        last_logits,
        max_new_tokens,
        stop,
        observe,
        feed,
    )
}

/// [`greedy_observed`] where `feed(cache, token, position)` runs each picked token and returns
/// its logits (`[1, vocab]`): a token route decides every new token's layers itself.
pub fn greedy_fed(
    model: &Model,
    cache: &mut PathCache,
    last_logits: &Tensor,
    max_new_tokens: usize,
    mut stop: impl FnMut(&[u32]) -> bool,
    mut observe: impl FnMut(&Tensor, u32) -> Result<()>,
    mut feed: impl FnMut(&mut PathCache, u32, usize) -> Result<Tensor>,
) -> Result<Generation> {
    let mut dec = Decoder::new(model, max_new_tokens);
    let mut logits = last_logits.clone();
    loop {
        match dec.step(&logits, cache.len(), &mut argmax, &mut stop, &mut observe)? {
            Step::Feed(next) => logits = feed(cache, next, cache.len())?,
            Step::Done(g) => return Ok(g),
        }
    }
}

/// What [`Decoder::step`] says: run this token next, or generation is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Feed this token (at the cache's next position) and step again with its logits.
    Feed(u32),
    /// Done.
    Done(Generation),
}

/// Decoding with the caller running the model (a server feeds many sequences' tokens in one
/// batch): each [`Decoder::step`] takes the logits of the last position and picks, checks the
/// stop conditions and says what to feed.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_new_tokens: usize,
    eos: Vec<u32>,
    max_ctx: usize,
    tokens: Vec<u32>,
}

impl Decoder {
    /// Up to `max_new_tokens` tokens within `model`'s context, stopping at its end tokens.
    pub fn new(model: &Model, max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            eos: model.config().eos_token_ids.clone(),
            max_ctx: model.config().max_position_embeddings,
            tokens: Vec::new(),
        }
    }

    /// One token from `logits` (`[1, vocab]`) with `cached` positions in the cache: `pick`
    /// chooses it, `observe` sees it (a final end token too), `stop` may end generation.
    pub fn step(
        &mut self,
        logits: &Tensor,
        cached: usize,
        pick: &mut impl FnMut(&Tensor) -> Result<u32>,
        stop: &mut impl FnMut(&[u32]) -> bool,
        observe: &mut impl FnMut(&Tensor, u32) -> Result<()>,
    ) -> Result<Step> {
        if self.tokens.len() >= self.max_new_tokens {
            return Ok(self.done(StopReason::MaxTokens));
        }
        let next = pick(logits)?;
        observe(logits, next)?;
        if self.eos.contains(&next) {
            return Ok(self.done(StopReason::Eos));
        }
        self.tokens.push(next);
        if self.tokens.len() >= self.max_new_tokens {
            return Ok(self.done(StopReason::MaxTokens));
        }
        if stop(&self.tokens) {
            return Ok(self.done(StopReason::Predicate));
        }
        if cached + 1 > self.max_ctx {
            return Ok(self.done(StopReason::ContextFull));
        }
        Ok(Step::Feed(next))
    }

    fn done(&mut self, stop: StopReason) -> Step {
        Step::Done(Generation {
            tokens: std::mem::take(&mut self.tokens),
            stop,
        })
    }
}
