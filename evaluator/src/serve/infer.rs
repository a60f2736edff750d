//! What the server computes for one prompt, around the batched passes the scheduler runs
//! ([`super::scheduler`]): the route each sequence takes ([`Routing`]: the static model; a
//! token router's per-token route; per-input routers' path, chosen once at prefill as
//! `evaluator run` routes, then fixed), where its prefill starts (the longest prefix the prefix
//! cache holds, where the route is fixed per token), the prompt's log-probabilities when the
//! client asks for an echo, and generation on that route from the key/value slots the prefill
//! filled (greedy or sampled, streamed or not: [`super::decode`]). Everything here is
//! synchronous: one inference thread owns the [`ServedModel`] and serves the queue.

use candle_core::{Tensor, D};
use drllm_core::router::TokenGate;
use drllm_engine::{LayerPath, LoadedModel, PathCache, PrefixCache, PrefixStats, SeqRoute};
use std::sync::{Arc, Mutex};

pub use super::decode::{Generating, Piece, Sampling, Sink};

use crate::router::{Router, Seen};

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

/// Where a prompt's prefill starts: a cache holding its first `at` positions (from the prefix
/// cache) and, for an echo, their tokens' scores (`0 ..= at`).
pub(super) struct Start {
    pub(super) cache: PathCache,
    pub(super) at: usize,
    reused_scores: Vec<Scored>,
}

impl Start {
    /// Where the prompt's new rows start.
    pub(super) fn at(&self) -> usize {
        self.at
    }

    /// Takes the cache out (for the batch to extend), leaving an empty one of its path; put
    /// it back before [`ServedModel::prefilled`].
    pub(super) fn take_cache(&mut self) -> PathCache {
        let empty = PathCache::new(self.cache.path());
        std::mem::replace(&mut self.cache, empty)
    }

    /// Puts the cache the batch extended back.
    pub(super) fn put_cache(&mut self, cache: PathCache) {
        self.cache = cache;
    }
}

/// How one sequence routes through the batched passes: along the cache's path (the static
/// model, or a per-input router's path once its prompt chose it), by per-input decisions while
/// its prompt runs, or by a token gate.
pub(super) enum Routing<'e> {
    /// Along the path the sequence's cache was built for.
    Path,
    /// A per-layer router or path menu deciding, at prefill, from the prompt's state.
    Decide {
        router: &'e Router,
        knob: f32,
        /// What the router saw.
        seen: Seen,
    },
    /// A token router's gate; it counts the token-layers its passes ran.
    Tokens(TokenGate<'e>),
}

impl Routing<'_> {
    /// The route of the sequence's next pass (`prefill`: its prompt; else a generated token).
    pub(super) fn route(&mut self, prefill: bool) -> SeqRoute<'_> {
        match self {
            Routing::Decide { router, knob, seen } if prefill => {
                let knob = *knob;
                SeqRoute::Decide(Box::new(move |layer, h| {
                    router.decide(knob, layer, h, seen)
                }))
            }
            Routing::Tokens(gate) => {
                if !prefill {
                    gate.next_pass();
                }
                let kv = gate.kv();
                SeqRoute::Tokens {
                    gate: Box::new(move |layer, h| gate.decide(layer, h)),
                    kv,
                }
            }
            Routing::Path | Routing::Decide { .. } => SeqRoute::Path,
        }
    }

    /// Token-layers a token gate has run; `None` for a path (rows × path positions).
    pub(super) fn ran(&self) -> Option<u64> {
        match self {
            Routing::Tokens(gate) => Some(gate.ran),
            _ => None,
        }
    }
}

/// What a prefill left: the cache holding the prompt, the logits of the rows it computed that
/// the request needs (every computed row for an echo, else the last), the token-layers run.
pub(super) struct Prefill {
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

impl Job {
    /// The alternatives per prompt token when the client asked for the prompt's
    /// log-probabilities (`echo` with `logprobs`).
    pub fn scored_prompt(&self) -> Option<usize> {
        self.logprobs.filter(|_| self.echo)
    }
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

    /// The longest start `prompt` shares with a prompt the prefix cache holds for the served
    /// route (0 where prompts bypass it).
    pub(super) fn prefix_shared(&self, prompt: &[u32]) -> usize {
        self.route_key()
            .map_or(0, |key| self.prefix_cache().shared(key, prompt))
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
    pub(super) fn route_key(&self) -> Option<u64> {
        match &self.routers {
            None => Some(0),
            Some((Router::Token(_), knob)) => Some(1 + knob.to_bits() as u64),
            Some(_) => None,
        }
    }

    /// A new sequence's route, as the served checkpoint routes ([`Routing`]).
    pub(super) fn routing(&self) -> Routing<'_> {
        match &self.routers {
            None => Routing::Path,
            Some((Router::Token(tr), knob)) => Routing::Tokens(tr.gate(*knob)),
            Some((router, knob)) => Routing::Decide {
                router,
                knob: *knob,
                seen: Seen::new(),
            },
        }
    }

    /// Where a prompt's prefill starts: the longest prefix the cache holds for the served route
    /// (none where prompts bypass it).
    pub(super) fn start(&self, job: &Job) -> drllm_core::Result<Start> {
        let full = LayerPath::full(self.lm.model.num_layers());
        let fresh = || Start {
            cache: PathCache::new(&full),
            at: 0,
            reused_scores: Vec::new(),
        };
        let Some(key) = self.route_key() else {
            return Ok(fresh());
        };
        let echo = job.scored_prompt();
        // An echo needs the scores of the reused tokens, and of the first one after them, which
        // only the row before it gives: it reuses one position less. At least 2 rows are left
        // to compute, so that the pass picks the kernels of a prompt, not of a generated token.
        let reuse = |shared: usize, data: &Option<PromptScores>| match (echo, data) {
            (None, _) => shared,
            (Some(k), Some(s)) if s.k >= k => shared.saturating_sub(1),
            (Some(_), _) => 0,
        };
        let hit = self.prefix_cache().lookup(key, &job.prompt, 2, reuse)?;
        Ok(match hit {
            Some(h) => Start {
                reused_scores: match (echo, h.data) {
                    (Some(k), Some(s)) => {
                        s.scored[..=h.reused].iter().map(|x| x.top_k(k)).collect()
                    }
                    _ => Vec::new(),
                },
                cache: h.cache,
                at: h.reused,
            },
            None => fresh(),
        })
    }

    /// The prompt's rows from `start` on have run (`hidden`, `ran` token-layers; `None`: every
    /// row along the cache's path): the logits the request needs, the prompt kept in the cache.
    pub(super) fn prefilled(
        &self,
        job: &Job,
        start: Start,
        hidden: &Tensor,
        ran: Option<u64>,
    ) -> drllm_core::Result<Prefill> {
        let n = job.prompt.len() - start.at;
        let logits = self.prompt_logits(job, hidden, n)?;
        if let (Some(key), None) = (self.route_key(), job.scored_prompt()) {
            let cache = start.cache.clone();
            (self.prefix_cache()).insert(key, job.prompt.clone(), cache, None);
        }
        Ok(Prefill {
            ran: ran.unwrap_or((n * start.cache.path().len()) as u64),
            cache: start.cache,
            logits,
            reused: start.at,
            reused_scores: start.reused_scores,
        })
    }

    /// The completion as far as the prompt: its scores for an echo (kept in the prefix cache
    /// with the prompt), the logits of its last position and the cache to generate from.
    pub(super) fn begin(
        &self,
        job: &Job,
        pre: Prefill,
    ) -> (Completion, drllm_core::Result<Tensor>, PathCache) {
        let t = job.prompt.len();
        let mut out = Completion {
            prompt_tokens: t,
            cached_tokens: pre.reused,
            prompt: Vec::new(),
            generated: Vec::new(),
            text: String::new(),
            finish: Finish::Length,
            layer_executions: pre.ran,
            path: pre.cache.path().clone(),
        };
        let scored = (|| {
            let from = t - pre.logits.dim(0)?;
            if let Some(k) = job.scored_prompt() {
                let mut scored = pre.reused_scores;
                scored.extend(score_rows(&job.prompt, from, &pre.logits, k)?);
                out.prompt = scored;
                self.remember(job, &pre.cache, &out.prompt);
            }
            Ok(pre.logits.narrow(0, t - from - 1, 1)?)
        })();
        (out, scored, pre.cache)
    }

    /// The logits a request needs of the `n` rows a prefill computed (`hidden`): every row for
    /// an echo, else the last, on the kernels of the whole pass.
    fn prompt_logits(&self, job: &Job, hidden: &Tensor, n: usize) -> drllm_core::Result<Tensor> {
        let from = if job.scored_prompt().is_some() {
            0
        } else {
            n - 1
        };
        Ok((self.lm.model).head_for_pass(&hidden.narrow(0, from, n - from)?, n)?)
    }

    /// Keeps an echoed prompt's cache with its scores, for later prompts sharing its start.
    fn remember(&self, job: &Job, cache: &PathCache, scored: &[Scored]) {
        if let (Some(key), Some(k)) = (self.route_key(), job.scored_prompt()) {
            let scores = PromptScores {
                k,
                scored: Arc::new(scored.to_vec()),
            };
            (self.prefix_cache()).insert(key, job.prompt.clone(), cache.clone(), Some(scores));
        }
    }

    /// The generation of `job` after its prompt, or `None` when it asks for no token (a
    /// streaming client then gets the one, empty, last piece).
    pub(super) fn generating<'s>(
        &'s self,
        job: &Job,
        sink: Option<Sink<'s>>,
        out: &mut Completion,
    ) -> drllm_core::Result<Option<Generating<'s>>> {
        if job.max_tokens > 0 {
            return Ok(Some(Generating::new(&self.lm, job, sink)));
        }
        if let Some(mut sink) = sink {
            sink(Piece {
                text: String::new(),
                tokens: Vec::new(),
                finish: Some(out.finish),
            });
        }
        Ok(None)
    }
}

/// Log-softmax of each row of `logits` (`[rows, vocab]`), as the choice-loglik reward computes it.
pub(super) fn log_softmax_rows(logits: &Tensor) -> drllm_engine::Result<Vec<Vec<f32>>> {
    Ok(candle_nn::ops::log_softmax(logits, D::Minus1)?.to_vec2::<f32>()?)
}

pub(super) fn scored_token(id: u32, logprob: Option<f32>, row: &[f32], k: usize) -> Scored {
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
