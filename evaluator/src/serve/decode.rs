//! How the server generates past the prompt: each token chosen greedily or drawn as the
//! request's sampling settings say ([`Sampling`], candle-transformers' `LogitsProcessor`), and,
//! for a streaming client, the generated text handed over in pieces that can no longer change
//! ([`Stream`]: no stop string can start in them, no character is cut).

use candle_core::Tensor;

use super::infer::{Finish, Scored};

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

/// The generated tokens so far, and what of their text a streaming client has been sent.
pub(super) struct Stream<'a, 's> {
    tok: &'a drllm_engine::TextTokenizer,
    stops: &'a [String],
    sink: Option<&'s mut dyn FnMut(Piece)>,
    /// Every token picked, a final end token included.
    pub(super) picked: Vec<Scored>,
    /// The picked tokens but an end token.
    ids: Vec<u32>,
    /// Bytes of text and tokens sent.
    sent_text: usize,
    sent_tokens: usize,
}

impl<'a, 's> Stream<'a, 's> {
    pub(super) fn new(
        tok: &'a drllm_engine::TextTokenizer,
        stops: &'a [String],
        sink: Option<&'s mut dyn FnMut(Piece)>,
    ) -> Self {
        Self {
            tok,
            stops,
            sink,
            picked: Vec::new(),
            ids: Vec::new(),
            sent_text: 0,
            sent_tokens: 0,
        }
    }

    /// A picked token; a streaming client gets the text that became final with it.
    pub(super) fn push(&mut self, scored: Scored, eos: bool) -> drllm_engine::Result<()> {
        if !eos {
            self.ids.push(scored.id);
        }
        self.picked.push(scored);
        if self.sink.is_none() {
            return Ok(());
        }
        let text = self.tok.decode(&self.ids)?;
        let safe = final_text_len(&text, self.stops);
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
    pub(super) fn finish(&mut self, text: &str, finish: Finish) {
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
