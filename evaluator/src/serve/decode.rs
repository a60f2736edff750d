//! How the server generates past the prompt: each token chosen greedily or drawn as the
//! request's sampling settings say ([`Sampling`], candle-transformers' `LogitsProcessor`), and,
//! for a streaming client, the generated text handed over in pieces that can no longer change
//! (no stop string can start in them, no character is cut). [`Generating`] is one completion's
//! state between tokens, so that a scheduler can step many in one batch.

use candle_core::Tensor;
use drllm_engine::{Decoder, Generation, LoadedModel, Step, StopReason, TextTokenizer};

use super::infer::{log_softmax_rows, scored_token, Completion, Finish, Job, Scored};

/// How a generated token is chosen: greedily at temperature 0, else drawn from the softmax at
/// `temperature`, cut to the `top_k` most likely and to the smallest set holding `top_p` of
/// the mass, by a generator seeded with `seed` (the same seed, the same tokens).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; 0 is greedy.
    pub temperature: f64,
    /// Keep the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the most likely tokens holding this share of the probability.
    pub top_p: Option<f64>,
    /// The generator's seed.
    pub seed: u64,
}

impl Sampling {
    /// Picks a token from logits (`[1, vocab]`).
    pub(super) fn picker(&self) -> impl FnMut(&Tensor) -> drllm_engine::Result<u32> {
        use candle_transformers::generation::{LogitsProcessor, Sampling as S};
        let temperature = self.temperature;
        let how = match (self.top_k, self.top_p.filter(|&p| p < 1.0)) {
            _ if temperature == 0.0 || self.top_k == Some(1) => S::ArgMax,
            (None, None) => S::All { temperature },
            (Some(k), None) => S::TopK { k, temperature },
            (None, Some(p)) => S::TopP { p, temperature },
            (Some(k), Some(p)) => S::TopKThenTopP { k, p, temperature },
        };
        let greedy = matches!(how, S::ArgMax);
        let mut lp = LogitsProcessor::from_sampling(self.seed, how);
        move |logits: &Tensor| match greedy {
            // The engine's argmax (ties: the lower index), as every greedy path here picks.
            true => drllm_engine::argmax(logits),
            false => Ok(lp.sample(&logits.flatten_all()?)?),
        }
    }
}

/// A streamed piece of a completion: text that can no longer change (no stop string can start
/// in it, no character is cut), the generated tokens it covers, and why generation ended once it
/// has.
#[derive(Debug, Clone)]
pub struct Piece {
    /// New text.
    pub text: String,
    /// The generated tokens it completes.
    pub tokens: Vec<Scored>,
    /// Set on a completion's last piece.
    pub finish: Option<Finish>,
}

/// Where a streaming request's pieces go.
pub type Sink<'s> = Box<dyn FnMut(Piece) + 's>;

/// Picks a token from logits.
type Picker<'a> = Box<dyn FnMut(&Tensor) -> drllm_engine::Result<u32> + 'a>;

/// A completion being generated, one token per [`Generating::step`]: its decoder, sampler and
/// stream. The caller runs the model (alone, or in a batch with other sequences) and feeds the
/// token each step asks for. A final end token is reported among the generated tokens (not in
/// the text), as OpenAI's API does: clients that score a prompt with `max_tokens: 1` (lm-eval)
/// count on one entry past the prompt.
pub struct Generating<'a> {
    tok: &'a TextTokenizer,
    eos: &'a [u32],
    logprobs: Option<usize>,
    dec: Decoder,
    pick: Picker<'a>,
    stream: Stream<'a>,
    /// Tokens fed back so far (each a pass along the route).
    pub fed: u64,
}

impl<'a> Generating<'a> {
    /// `job`'s generation on `lm`, pieces to `sink` when streaming.
    pub fn new(lm: &'a LoadedModel, job: &Job, sink: Option<Sink<'a>>) -> Self {
        Self {
            tok: &lm.tokenizer,
            eos: &lm.model.config().eos_token_ids,
            logprobs: job.logprobs,
            dec: Decoder::new(&lm.model, job.max_tokens),
            pick: Box::new(job.sampling.picker()),
            stream: Stream {
                tok: &lm.tokenizer,
                stops: job.stop.clone(),
                sink,
                picked: Vec::new(),
                ids: Vec::new(),
                sent_text: 0,
                sent_tokens: 0,
            },
            fed: 0,
        }
    }

    /// One token from the last position's `logits` (`[1, vocab]`), `cached` positions held.
    pub fn step(&mut self, logits: &Tensor, cached: usize) -> drllm_core::Result<Step> {
        let (tok, eos, logprobs) = (self.tok, self.eos, self.logprobs);
        let stream = &mut self.stream;
        let stops = stream.stops.clone();
        let mut stop = |ids: &[u32]| {
            !stops.is_empty()
                && tok
                    .decode(ids)
                    .is_ok_and(|text| stops.iter().any(|s| text.contains(s.as_str())))
        };
        let mut observe = |logits: &Tensor, id: u32| {
            let scored = match logprobs {
                Some(k) => {
                    let lp = log_softmax_rows(logits)?.remove(0);
                    scored_token(id, Some(lp[id as usize]), &lp, k)
                }
                None => scored_token(id, None, &[], 0),
            };
            stream.push(scored, eos.contains(&id))
        };
        let step = (self.dec).step(logits, cached, &mut self.pick, &mut stop, &mut observe)?;
        if matches!(step, Step::Feed(_)) {
            self.fed += 1;
        }
        Ok(step)
    }

    /// Ends generation `g` into `out`: the text cut before a stop string, why it ended, the
    /// scored tokens kept; a streaming client gets the rest.
    pub fn finish(mut self, g: Generation, out: &mut Completion) -> drllm_core::Result<()> {
        let tok = self.tok;
        let text = tok.decode(&g.tokens)?;
        let cut = (self.stream.stops.iter())
            .filter_map(|s| text.find(s.as_str()))
            .min();
        out.finish = match (g.stop, cut) {
            (_, Some(_)) | (StopReason::Eos | StopReason::Predicate, _) => Finish::Stop,
            _ => Finish::Length,
        };
        let kept = match cut {
            Some(at) => kept_tokens(tok, &g.tokens, at)?,
            None => self.stream.picked.len(),
        };
        out.text = match cut {
            Some(at) => text[..at].to_string(),
            None => text,
        };
        self.stream.picked.truncate(kept);
        self.stream.finish(&out.text, out.finish);
        out.generated = self.stream.picked;
        Ok(())
    }
}

/// The generated tokens so far, and what of their text a streaming client has been sent.
struct Stream<'a> {
    tok: &'a TextTokenizer,
    stops: Vec<String>,
    sink: Option<Sink<'a>>,
    /// Every token picked, a final end token included.
    picked: Vec<Scored>,
    /// The picked tokens but an end token.
    ids: Vec<u32>,
    /// Bytes of text and tokens sent.
    sent_text: usize,
    sent_tokens: usize,
}

impl Stream<'_> {
    /// A picked token; a streaming client gets the text that became final with it.
    fn push(&mut self, scored: Scored, eos: bool) -> drllm_engine::Result<()> {
        if !eos {
            self.ids.push(scored.id);
        }
        self.picked.push(scored);
        if self.sink.is_none() {
            return Ok(());
        }
        let text = self.tok.decode(&self.ids)?;
        let safe = final_text_len(&text, &self.stops);
        if safe > self.sent_text {
            // The tokens whose text lies wholly in what is sent.
            let mut covered = self.sent_tokens;
            while covered < self.ids.len()
                && self.tok.decode(&self.ids[..covered + 1])?.len() <= safe
            {
                covered += 1;
            }
            self.send(text[self.sent_text..safe].to_string(), covered, None);
        }
        Ok(())
    }

    /// The rest of the final `text` (cut before a stop string) and of the kept tokens.
    fn finish(&mut self, text: &str, finish: Finish) {
        let rest = text.get(self.sent_text..).unwrap_or_default().to_string();
        self.send(rest, self.picked.len(), Some(finish));
    }

    /// Sends `text` with the tokens up to `upto` not sent yet.
    fn send(&mut self, text: String, upto: usize, finish: Option<Finish>) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        let upto = upto.max(self.sent_tokens);
        let tokens = self.picked[self.sent_tokens..upto].to_vec();
        self.sent_text += text.len();
        self.sent_tokens = upto;
        sink(Piece {
            text,
            tokens,
            finish,
        });
    }
}

/// How much of `text` can be sent for good: not from where a stop string starts or may start
/// (a suffix that begins one), nor a character the tokens have cut (U+FFFD at the end).
fn final_text_len(text: &str, stops: &[String]) -> usize {
    let mut safe = text.len();
    for s in stops {
        if let Some(at) = text.find(s.as_str()) {
            safe = safe.min(at);
            continue;
        }
        let begins = (1..s.len())
            .rev()
            .find(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k]));
        if let Some(k) = begins {
            safe = safe.min(text.len() - k);
        }
    }
    while text[..safe].ends_with('\u{FFFD}') {
        safe -= '\u{FFFD}'.len_utf8();
    }
    safe
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
