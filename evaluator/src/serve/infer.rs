//! What the server computes for one prompt: a prefill along the layer path the routers choose
//! (once, at prefill, as `evaluator run` routes; without routers every layer once), the prompt's
//! log-probabilities when the client asks for an echo, and greedy generation on that path from
//! the key/value slots the prefill filled. Everything here is synchronous: one inference thread
//! owns the [`ServedModel`] and serves the queue ([`super`]).

use candle_core::{Tensor, D};
use drllm_engine::exec::{Route, Rows};
use drllm_engine::layer::Segments;
use drllm_engine::{greedy_fed, greedy_observed, LayerPath, LoadedModel, PathCache, StopReason};

use crate::router::Router;

/// The model and, for routed serving, its routers.
pub struct ServedModel {
    /// The frozen model.
    pub lm: LoadedModel,
    /// The router checkpoint (per-layer or path menu) and its knob; `None` serves the static
    /// model.
    pub routers: Option<(Router, f32)>,
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
    /// Layers of the model.
    pub fn num_layers(&self) -> usize {
        self.lm.model.num_layers()
    }

    /// Runs one prompt.
    pub fn complete(&self, job: &Job) -> drllm_core::Result<Completion> {
        let model = &self.lm.model;
        let t = job.prompt.len();
        let segs = Segments {
            ctx: t,
            conts: Vec::new(),
        };
        let mut slots = Vec::with_capacity(2 * model.num_layers());
        let rows = Rows::Fused {
            segs: &segs,
            slots: &mut slots,
        };
        let x = model.embed(&job.prompt)?;
        let full = LayerPath::full(model.num_layers());
        let mut ran = None;
        let pass = match &self.routers {
            Some((Router::Token(tr), knob)) => {
                let mut gate = tr.gate(*knob);
                let mut decide = |layer: usize, h: &Tensor| gate.decide(layer, h);
                let route = Route::Tokens {
                    gate: &mut decide,
                    kv: tr.kv(),
                };
                let pass = model.run_path(x, rows, route, |_, _, _| ())?;
                ran = Some(gate.ran);
                pass
            }
            Some((router, knob)) => {
                let mut seen = Vec::new();
                let mut decide =
                    |layer: usize, h: &Tensor| router.decide(*knob, layer, h, &mut seen);
                model.run_path(x, rows, Route::Decide(&mut decide), |_, _, _| ())?
            }
            None => model.run_path(
                x,
                rows,
                Route::Path {
                    path: &full,
                    from: 0,
                },
                |_, _, _| (),
            )?,
        };
        let positions = pass.path.len() as u64;
        let want_prompt = job.echo && job.logprobs.is_some();
        let from = if want_prompt { 0 } else { t - 1 };
        let logits = model.head(&pass.hidden.narrow(0, from, t - from)?)?;
        let prompt = match (want_prompt, job.logprobs) {
            (true, Some(k)) => score_prompt(&job.prompt, &logits, k)?,
            _ => Vec::new(),
        };
        let last = logits.narrow(0, t - from - 1, 1)?;
        let mut out = Completion {
            prompt_tokens: t,
            prompt,
            generated: Vec::new(),
            text: String::new(),
            finish: Finish::Length,
            layer_executions: ran.unwrap_or(t as u64 * positions),
            path: pass.path.clone(),
        };
        if job.max_tokens > 0 {
            let mut cache = PathCache::from_slots(&pass.path, slots, t)?;
            self.generate(job, &mut cache, &last, &mut out)?;
        }
        Ok(out)
    }

    /// Greedy generation after the prefill, into `out`. A final end token is reported among
    /// the generated tokens (not in the text), as OpenAI's API does: clients that score a prompt
    /// with `max_tokens: 1` (lm-eval) count on one entry past the prompt.
    fn generate(
        &self,
        job: &Job,
        cache: &mut PathCache,
        last: &Tensor,
        out: &mut Completion,
    ) -> drllm_core::Result<()> {
        let tok = &self.lm.tokenizer;
        let mut picked = Vec::new();
        let stops = |ids: &[u32]| {
            !job.stop.is_empty()
                && tok
                    .decode(ids)
                    .is_ok_and(|text| job.stop.iter().any(|s| text.contains(s.as_str())))
        };
        let observe = |logits: &Tensor, id: u32| {
            picked.push(match job.logprobs {
                Some(k) => {
                    let lp = log_softmax_rows(logits)?.remove(0);
                    scored_token(id, Some(lp[id as usize]), &lp, k)
                }
                None => scored_token(id, None, &[], 0),
            });
            Ok(())
        };
        let model = &self.lm.model;
        let g = match &self.routers {
            Some((Router::Token(tr), knob)) => {
                // Each new token decides its own layers by the same rule as the prompt's.
                let mut gate = tr.gate(*knob);
                let feed = |cache: &mut PathCache, next: u32, pos: usize| {
                    gate.feed(model, cache, next, pos)
                };
                let g = greedy_fed(model, cache, last, job.max_tokens, stops, observe, feed)?;
                out.layer_executions += gate.ran;
                g
            }
            _ => {
                let g = greedy_observed(model, cache, last, job.max_tokens, stops, observe)?;
                let fed = match g.stop {
                    StopReason::Eos => g.tokens.len(),
                    _ => g.tokens.len().saturating_sub(1),
                };
                out.layer_executions += fed as u64 * out.path.len() as u64;
                g
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
            None => picked.len(),
        };
        out.text = match cut {
            Some(at) => text[..at].to_string(),
            None => text,
        };
        picked.truncate(kept);
        out.generated = picked;
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

/// The prompt's tokens scored from the logits of every prompt position (`[t, vocab]`): token `i`
/// by the distribution after position `i - 1`; the first token has none.
fn score_prompt(prompt: &[u32], logits: &Tensor, k: usize) -> drllm_core::Result<Vec<Scored>> {
    let lp = log_softmax_rows(logits)?;
    let mut out = Vec::with_capacity(prompt.len());
    out.push(Scored {
        id: prompt[0],
        logprob: None,
        top: Vec::new(),
    });
    for (i, &id) in prompt.iter().enumerate().skip(1) {
        out.push(scored_token(
            id,
            Some(lp[i - 1][id as usize]),
            &lp[i - 1],
            k,
        ));
    }
    Ok(out)
}
