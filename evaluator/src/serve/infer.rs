//! What the server computes for one prompt: a prefill along the route the server runs (the
//! static model; a token router's per-token route; per-input routers' path, chosen once at
//! prefill as `evaluator run` routes), starting from the longest prefix the prefix cache holds
//! where the route is fixed per token, the prompt's log-probabilities when the client asks for
//! an echo, and generation on that route from the key/value slots the prefill filled (greedy or
//! sampled, streamed or not: [`super::decode`]). Everything here is synchronous: one inference
//! thread owns the [`ServedModel`] and serves the queue ([`super`]).

use candle_core::{Tensor, D};
use drllm_engine::exec::{Route, Rows};
use drllm_engine::layer::Segments;
use drllm_engine::{
    decode_fed, LayerPath, LoadedModel, Logits, PathCache, PrefixCache, PrefixStats, StopReason,
};
use std::sync::{Arc, Mutex};

use super::decode::Stream;
pub use super::decode::{Piece, Sampling};

use crate::router::Router;

/// The model and, for routed serving, its routers.
pub struct ServedModel {
    /// The frozen model.
    pub lm: LoadedModel,
    /// The router checkpoint (per-layer, path menu or token router) and its knob; `None`
    /// serves the static model.
    pub routers: Option<(Router, f32)>,
    /// Prompts' keys and values, and echoed prompts' scores, for prompts that start alike.
    prefix: Mutex<PrefixCache<Option<PromptScores>>>,
}

/// An echoed prompt's scored tokens, each with its `k` best alternatives.
#[derive(Debug, Clone)]
struct PromptScores {
    k: usize,
    scored: Arc<Vec<Scored>>,
}

/// What a prefill left: the cache holding the prompt, the logits of the rows it computed that
/// the request needs (every computed row for an echo, else the last), the token-layers run.
struct Prefill {
    cache: PathCache,
    logits: Tensor,
    ran: u64,
    /// Prompt positions taken from the prefix cache.
    reused: usize,
    /// For an echo: the scores of the prompt's tokens `0 ..= reused`, from the cache.
    reused_scores: Vec<Scored>,
}

/// One prompt's work, as the API layer validated it.
#[derive(Debug, Clone)]
pub struct Job {
    /// Prompt token ids (at least one).
    pub prompt: Vec<u32>,
    /// Tokens to generate (0: score the prompt only).
    pub max_tokens: usize,
    /// Generation ends before the first of these strings (not included in the text).
    pub stop: Vec<String>,
    /// Top log-probabilities per position to report; `None`: no log-probabilities.
    pub logprobs: Option<usize>,
    /// Report the prompt's tokens (and their log-probabilities) before the generated ones.
    pub echo: bool,
    /// How each generated token is chosen.
    pub sampling: Sampling,
}

/// A token with its log-probability under the model and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The token id.
    pub id: u32,
    /// Its log-probability given what precedes it; `None` for a prompt's first token.
    pub logprob: Option<f32>,
    /// The `k` most likely tokens at that position with their log-probabilities.
    pub top: Vec<(u32, f32)>,
}

impl Scored {
    /// The same score with at most `k` alternatives.
    fn top_k(&self, k: usize) -> Self {
        Self {
            id: self.id,
            logprob: self.logprob,
            top: self.top[..k.min(self.top.len())].to_vec(),
        }
    }
}

/// Why generation ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens`, or the model's context is full.
    Length,
}

/// What one prompt produced.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Of those, the tokens whose keys and values came from the prefix cache.
    pub cached_tokens: usize,
    /// With `echo` and log-probabilities: the prompt's tokens, scored.
    pub prompt: Vec<Scored>,
    /// The generated tokens (scored when log-probabilities were asked for), cut before a stop
    /// string.
    pub generated: Vec<Scored>,
    /// The generated text (cut before a stop string).
    pub text: String,
    /// Why generation ended.
    pub finish: Finish,
    /// The layer path the prompt ran (the routers' choice, or every layer once).
    pub path: LayerPath,
    /// Layer executions spent: prompt rows × path positions, plus every generated token fed back.
    pub layer_executions: u64,
}

impl ServedModel {
    /// The model and routers, with a prefix cache of `prefix_budget` bytes (0: none).
    pub fn new(lm: LoadedModel, routers: Option<(Router, f32)>, prefix_budget: usize) -> Self {
        Self {
            lm,
            routers,
            prefix: Mutex::new(PrefixCache::new(prefix_budget)),
        }
    }

    /// Layers of the model.
    pub fn num_layers(&self) -> usize {
        self.lm.model.num_layers()
    }

    /// The prefix cache's hits, misses and size.
    pub fn prefix_stats(&self) -> PrefixStats {
        self.prefix_cache().stats()
    }

    fn prefix_cache(&self) -> std::sync::MutexGuard<'_, PrefixCache<Option<PromptScores>>> {
        // A panic while holding the lock left at worst a stale entry list, still consistent.
        self.prefix.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The prefix cache's name for the route every prompt runs, when the route is fixed per
    /// token (the static model, a token router: a position's keys and values depend on the
    /// tokens up to it alone); `None` for routers that decide once from the whole prompt.
    fn route_key(&self) -> Option<u64> {
        match &self.routers {
            None => Some(0),
            Some((Router::Token(_), knob)) => Some(1 + knob.to_bits() as u64),
            Some(_) => None,
        }
    }

    /// Runs one prompt.
    pub fn complete(&self, job: &Job) -> drllm_core::Result<Completion> {
        self.complete_streamed(job, None)
    }

    /// Runs one prompt, showing `sink` each piece of the generated text as it is made.
    pub fn complete_streamed(
        &self,
        job: &Job,
        sink: Option<&mut dyn FnMut(Piece)>,
    ) -> drllm_core::Result<Completion> {
        let t = job.prompt.len();
        let pre = match self.route_key() {
            Some(key) => self.prefill_cached(job, key)?,
            None => self.prefill_routed(job)?,
        };
        let from = t - pre.logits.dim(0)?;
        let prompt = match (job.echo, job.logprobs) {
            (true, Some(k)) => {
                let mut scored = pre.reused_scores;
                scored.extend(score_rows(&job.prompt, from, &pre.logits, k)?);
                scored
            }
            _ => Vec::new(),
        };
        let last = pre.logits.narrow(0, t - from - 1, 1)?;
        let mut out = Completion {
            prompt_tokens: t,
            cached_tokens: pre.reused,
            prompt,
            generated: Vec::new(),
            text: String::new(),
            finish: Finish::Length,
            layer_executions: pre.ran,
            path: pre.cache.path().clone(),
        };
        if job.echo && job.logprobs.is_some() {
            self.remember(job, &pre.cache, &out.prompt);
        }
        match (job.max_tokens, sink) {
            (0, Some(sink)) => sink(Piece {
                text: String::new(),
                tokens: Vec::new(),
                finish: Some(out.finish),
            }),
            (0, None) => {}
            (_, sink) => {
                let mut cache = pre.cache;
                self.generate(job, &mut cache, &last, &mut out, sink)?;
            }
        }
        Ok(out)
    }

    /// Prefill along a route fixed per token, from the longest cached prefix of the prompt;
    /// the cache then holds the prompt.
    fn prefill_cached(&self, job: &Job, key: u64) -> drllm_core::Result<Prefill> {
        let model = &self.lm.model;
        let (t, full) = (job.prompt.len(), LayerPath::full(model.num_layers()));
        let echo = match (job.echo, job.logprobs) {
            (true, Some(k)) => Some(k),
            _ => None,
        };
        // An echo needs the scores of the reused tokens, and of the first one after them, which
        // only the row before it gives: it reuses one position less. At least 2 rows are left
        // to compute, so that the pass picks the kernels of a prompt, not of a generated token.
        let reuse = |shared: usize, data: &Option<PromptScores>| match (echo, data) {
            (None, _) => shared,
            (Some(k), Some(s)) if s.k >= k => shared.saturating_sub(1),
            (Some(_), _) => 0,
        };
        let hit = self.prefix_cache().lookup(key, &job.prompt, 2, reuse)?;
        let (mut cache, start, reused_scores) = match hit {
            Some(h) => {
                let scores = match (echo, h.data) {
                    (Some(k), Some(s)) => {
                        s.scored[..=h.reused].iter().map(|x| x.top_k(k)).collect()
                    }
                    _ => Vec::new(),
                };
                (h.cache, h.reused, scores)
            }
            None => (PathCache::new(&full), 0, Vec::new()),
        };
        let x = model.embed(&job.prompt[start..])?;
        let rows = Rows::Cached {
            cache: &mut cache,
            start,
        };
        let (pass, ran) = match &self.routers {
            Some((Router::Token(tr), knob)) => {
                let mut gate = tr.gate(*knob);
                let mut decide = |layer: usize, h: &Tensor| gate.decide(layer, h);
                let route = Route::Tokens {
                    gate: &mut decide,
                    kv: tr.kv(),
                };
                let pass = model.run_path(x, rows, route, |_, _, _| ())?;
                (pass, gate.ran)
            }
            _ => {
                let route = Route::Path {
                    path: &full,
                    from: 0,
                };
                let pass = model.run_path(x, rows, route, |_, _, _| ())?;
                let ran = (t - start) as u64 * full.len() as u64;
                (pass, ran)
            }
        };
        let n = t - start;
        let from = if echo.is_some() { 0 } else { n - 1 };
        let logits = model.head_for_pass(&pass.hidden.narrow(0, from, n - from)?, n)?;
        if echo.is_none() {
            self.prefix_cache()
                .insert(key, job.prompt.clone(), cache.clone(), None);
        }
        Ok(Prefill {
            cache,
            logits,
            ran,
            reused: start,
            reused_scores,
        })
    }

    /// Keeps an echoed prompt's cache with its scores, for later prompts sharing its start.
    fn remember(&self, job: &Job, cache: &PathCache, scored: &[Scored]) {
        if let (Some(key), Some(k)) = (self.route_key(), job.logprobs) {
            let scores = PromptScores {
                k,
                scored: Arc::new(scored.to_vec()),
            };
            (self.prefix_cache()).insert(key, job.prompt.clone(), cache.clone(), Some(scores));
        }
    }

    /// Prefill under routers that decide the path once from the whole prompt (no prefix
    /// reuse: the path is not known before the prompt has run).
    fn prefill_routed(&self, job: &Job) -> drllm_core::Result<Prefill> {
        let model = &self.lm.model;
        let t = job.prompt.len();
        let Some((router, knob)) = &self.routers else {
            unreachable!("the static model has a route key")
        };
        let segs = Segments {
            ctx: t,
            conts: Vec::new(),
        };
        let mut slots = Vec::with_capacity(2 * model.num_layers());
        let rows = Rows::Fused {
            segs: &segs,
            slots: &mut slots,
        };
        let mut seen = Vec::new();
        let mut decide = |layer: usize, h: &Tensor| router.decide(*knob, layer, h, &mut seen);
        let pass = model.run_path(
            model.embed(&job.prompt)?,
            rows,
            Route::Decide(&mut decide),
            |_, _, _| (),
        )?;
        let from = if job.echo && job.logprobs.is_some() {
            0
        } else {
            t - 1
        };
        let logits = model.head_for_pass(&pass.hidden.narrow(0, from, t - from)?, t)?;
        Ok(Prefill {
            ran: t as u64 * pass.path.len() as u64,
            cache: PathCache::from_slots(&pass.path, slots, t)?,
            logits,
            reused: 0,
            reused_scores: Vec::new(),
        })
    }

    /// Generation after the prefill, into `out`, each token chosen as `job.sampling` says. A
    /// final end token is reported among the generated tokens (not in the text), as OpenAI's API
    /// does: clients that score a prompt with `max_tokens: 1` (lm-eval) count on one entry past
    /// the prompt.
    fn generate(
        &self,
        job: &Job,
        cache: &mut PathCache,
        last: &Tensor,
        out: &mut Completion,
        sink: Option<&mut dyn FnMut(Piece)>,
    ) -> drllm_core::Result<()> {
        let (tok, model) = (&self.lm.tokenizer, &self.lm.model);
        let stops = |ids: &[u32]| {
            !job.stop.is_empty()
                && tok
                    .decode(ids)
                    .is_ok_and(|text| job.stop.iter().any(|s| text.contains(s.as_str())))
        };
        let mut stream = Stream::new(tok, &job.stop, sink);
        let observe = |logits: &Tensor, id: u32| {
            let scored = match job.logprobs {
                Some(k) => {
                    let lp = log_softmax_rows(logits)?.remove(0);
                    scored_token(id, Some(lp[id as usize]), &lp, k)
                }
                None => scored_token(id, None, &[], 0),
            };
            stream.push(scored, model.config().eos_token_ids.contains(&id))?;
            Ok(())
        };
        // Each new token of a token route decides its own layers by the same rule as the
        // prompt's; on a layer path it runs that path.
        let mut gate = match &self.routers {
            Some((Router::Token(tr), knob)) => Some(tr.gate(*knob)),
            _ => None,
        };
        let path = out.path.clone();
        let feed = |cache: &mut PathCache, next: u32, pos: usize| match gate.as_mut() {
            Some(gate) => gate.feed(model, cache, next, pos),
            None => model.forward(&[next], &path, cache, pos, Logits::Last),
        };
        let limits = (job.max_tokens, model);
        let pick = job.sampling.picker();
        let g = decode_fed(cache, last, limits, pick, stops, observe, feed)?;
        out.layer_executions += match gate {
            Some(gate) => gate.ran,
            None => {
                let fed = match g.stop {
                    StopReason::Eos => g.tokens.len(),
                    _ => g.tokens.len().saturating_sub(1),
                };
                fed as u64 * path.len() as u64
            }
        };
        let text = tok.decode(&g.tokens)?;
        let cut = job.stop.iter().filter_map(|s| text.find(s.as_str())).min();
        out.finish = match (g.stop, cut) {
            (_, Some(_)) | (StopReason::Eos | StopReason::Predicate, _) => Finish::Stop,
            _ => Finish::Length,
        };
        let kept = match cut {
            Some(at) => kept_tokens(tok, &g.tokens, at)?,
            None => stream.picked.len(),
        };
        out.text = match cut {
            Some(at) => text[..at].to_string(),
            None => text,
        };
        stream.picked.truncate(kept);
        stream.finish(&out.text, out.finish);
        out.generated = stream.picked;
        Ok(())
    }
}

/// How many of `tokens` it takes for their text to reach byte `at` (where a stop string starts).
fn kept_tokens(
    tok: &drllm_engine::TextTokenizer,
    tokens: &[u32],
    at: usize,
) -> drllm_core::Result<usize> {
    for n in 0..=tokens.len() {
        if tok.decode(&tokens[..n])?.len() >= at {
            return Ok(n);
        }
    }
    Ok(tokens.len())
}

/// Log-softmax of each row of `logits` (`[rows, vocab]`), as the choice-loglik reward computes it.
fn log_softmax_rows(logits: &Tensor) -> drllm_engine::Result<Vec<Vec<f32>>> {
    Ok(candle_nn::ops::log_softmax(logits, D::Minus1)?.to_vec2::<f32>()?)
}

fn scored_token(id: u32, logprob: Option<f32>, row: &[f32], k: usize) -> Scored {
    Scored {
        id,
        logprob,
        top: drllm_engine::reference::top(row, k),
    }
}

/// The prompt's tokens scored from the logits of its positions `from ..` (`[t - from, vocab]`):
/// token `i` by the distribution after position `i - 1`, for `i` in `from + 1 .. t`, and the
/// first token (no score) when `from` is 0.
fn score_rows(
    prompt: &[u32],
    from: usize,
    logits: &Tensor,
    k: usize,
) -> drllm_core::Result<Vec<Scored>> {
    let lp = log_softmax_rows(logits)?;
    let mut out = Vec::with_capacity(prompt.len() - from);
    if from == 0 {
        out.push(Scored {
            id: prompt[0],
            logprob: None,
            top: Vec::new(),
        });
    }
    for (i, &id) in prompt.iter().enumerate().skip(from + 1) {
        let row = &lp[i - 1 - from];
        out.push(scored_token(id, Some(row[id as usize]), row, k));
    }
    Ok(out)
}
