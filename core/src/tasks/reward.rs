//! Rewards: is the model right about an example under a layer path? Two modes (DESIGN.md
//! "Rewards"): `generate` (greedy decoding, the paper's grader) and `choice-loglik` (the
//! lm-eval-harness multiple-choice metric, `acc` and `acc_norm`), the latter running the shared
//! context once and only the continuations per choice.

use candle_core::{Tensor, D};

use crate::error::{Error, Result};
use drllm_contract::{AnswerKind, Example, PromptStyle};
use drllm_engine::cache::{KvSlot, PathCache};
use drllm_engine::exec::{Route, Rows};
use drllm_engine::generate::{greedy_continue, greedy_fed, StopReason};
use drllm_engine::layer::Segments;
use drllm_engine::loader::LoadedModel;
use drllm_engine::path::LayerPath;
use drllm_tasks::prompts;
use drllm_tasks::{letter, math};

use drllm_contract::{RewardMode, RewardSettings};

use super::prompt_cache::PromptCache;

/// The reward settings resolved for one model: [`RewardSettings`] with the prompt style decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewardOptions {
    /// Generate or choice-loglik.
    pub mode: RewardMode,
    /// The prompt style.
    pub style: PromptStyle,
    /// Stop generation once the grader's verdict can no longer change (never changes a verdict).
    pub early_stop: bool,
    /// choice-loglik: reward by `acc_norm` (log-prob per byte) instead of `acc`.
    pub length_normalized: bool,
}

impl RewardOptions {
    /// Defaults for a model: instruct prompts when it has a chat template, early stop on.
    pub fn for_model(lm: &LoadedModel, mode: RewardMode) -> Self {
        Self {
            mode,
            style: default_style(lm),
            early_stop: true,
            length_normalized: false,
        }
    }

    /// `settings` on `lm`: an unset style becomes the model's default. Settings this model cannot
    /// reproduce — generate with instruct prompts on a model without a chat template — are
    /// refused, naming the fix.
    pub fn resolve(lm: &LoadedModel, settings: &RewardSettings) -> Result<Self> {
        let style = settings.style.unwrap_or_else(|| default_style(lm));
        if settings.mode == RewardMode::Generate
            && style == PromptStyle::Instruct
            && lm.tokenizer.chat_template().is_none()
        {
            return Err(Error::Unreproducible(format!(
                "generate with instruct prompts needs the model's chat template, and {} has none: load the model the settings were made with, or use base prompts",
                lm.id
            )));
        }
        Ok(Self {
            mode: settings.mode,
            style,
            early_stop: settings.early_stop,
            length_normalized: settings.length_normalized,
        })
    }

    /// These options as recorded settings (the style always set).
    pub fn settings(&self) -> RewardSettings {
        RewardSettings {
            mode: self.mode,
            style: Some(self.style),
            early_stop: self.early_stop,
            length_normalized: self.length_normalized,
        }
    }
}

/// Instruct prompts when the model has a chat template, else base prompts.
fn default_style(lm: &LoadedModel) -> PromptStyle {
    if lm.tokenizer.chat_template().is_some() {
        PromptStyle::Instruct
    } else {
        PromptStyle::Base
    }
}

/// The result of one (model, example, path) evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The reward: 1 if correct.
    pub correct: bool,
    /// generate: the decoded response (without the base-math `\boxed{` prefix).
    pub response: Option<String>,
    /// generate: what the grader extracted (letter, or `\boxed{}` content).
    pub extracted: Option<String>,
    /// generate: tokens produced (0 for choice-loglik).
    pub tokens_generated: usize,
    /// generate: why generation stopped.
    pub stop: Option<StopReason>,
    /// choice-loglik: each choice's summed continuation log-prob (natural log).
    pub choice_logprobs: Vec<f64>,
    /// choice-loglik: each choice's continuation length in bytes of text.
    pub choice_bytes: Vec<usize>,
    /// choice-loglik: index of the choice with the largest summed log-prob (`acc`'s pick).
    pub pick: Option<usize>,
    /// choice-loglik: index of the choice with the largest log-prob per byte (`acc_norm`'s pick).
    pub pick_norm: Option<usize>,
    /// choice-loglik: whether `pick` is the gold choice.
    pub correct_acc: Option<bool>,
    /// choice-loglik: whether `pick_norm` is the gold choice.
    pub correct_acc_norm: Option<bool>,
    /// choice-loglik: the gold choice's score minus the best other choice's, under the metric
    /// that decides `correct` (`acc`: summed log-prob; `acc_norm`: per byte). Positive when right;
    /// how robustly a path is right (the margin success rule, DESIGN/README "Success rules").
    pub margin: Option<f64>,
}

/// What an example needs once, whatever the path: the prompt's token ids and, for
/// choice-loglik, each choice's continuation ids and length in bytes.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The prompt's token ids (the context, for choice-loglik).
    pub prompt_ids: Vec<u32>,
    conts: Vec<(Vec<u32>, usize)>,
    /// What a path runs: the prompt, then every choice's continuation but its last token.
    rows: Vec<u32>,
    segs: Segments,
    /// generate mode: the prompt (None for choice-loglik).
    pub gen: Option<prompts::GenPrompt>,
    gold: char,
}

/// The token ids the model reads for a task prompt (a record's `question`): chat-templated for
/// `generate` with instruct prompts, else with a BOS token. The searches, the trainer's router
/// inputs and routed inference all tokenize through here.
pub fn encode_prompt(lm: &LoadedModel, text: &str, opts: &RewardOptions) -> Result<Vec<u32>> {
    match (opts.mode, opts.style) {
        (RewardMode::Generate, PromptStyle::Instruct) => Ok(lm
            .tokenizer
            .encode(&lm.tokenizer.apply_chat(text)?, false)?),
        _ => Ok(lm.tokenizer.encode(text, true)?),
    }
}

/// Tokenizes what `ex` needs under `opts`.
pub fn prepare(lm: &LoadedModel, ex: &Example, opts: &RewardOptions) -> Result<Prepared> {
    let gold = ex.answer.chars().next().unwrap_or('?');
    match opts.mode {
        RewardMode::Generate => {
            let prompt = prompts::generation_prompt(ex, opts.style);
            let prompt_ids = encode_prompt(lm, &prompt.text, opts)?;
            Ok(Prepared::new(prompt_ids, Vec::new(), Some(prompt), gold))
        }
        RewardMode::ChoiceLoglik => {
            ex.gold_index().ok_or_else(|| Error::Reward {
                id: ex.id.clone(),
                reason: "choice-loglik needs a multiple-choice example with a gold letter".into(),
            })?;
            let context = prompts::loglik_context(ex);
            let prompt_ids = encode_prompt(lm, &context, opts)?;
            let mut conts = Vec::with_capacity(ex.choices.len());
            for cont in prompts::loglik_continuations(ex) {
                // lm-eval-harness: encode context + continuation; the continuation is what follows
                // the context's own tokens.
                let whole = lm.tokenizer.encode(&format!("{context}{cont}"), true)?;
                let mut ids = whole.get(prompt_ids.len()..).unwrap_or_default().to_vec();
                if ids.is_empty() {
                    ids = lm.tokenizer.encode(&cont, false)?;
                }
                conts.push((ids, cont.len()));
            }
            Ok(Prepared::new(prompt_ids, conts, None, gold))
        }
    }
}

/// Is the model right about `ex` when it runs `path`?
pub fn score_example(
    lm: &LoadedModel,
    ex: &Example,
    path: &LayerPath,
    opts: &RewardOptions,
) -> Result<Outcome> {
    score_example_with(lm, ex, path, opts, None)
}

/// [`score_example`], a generating example's prompt starting from the longest prefix `prompts`
/// holds for `path` (an exact reuse: the same outcome).
pub fn score_example_with(
    lm: &LoadedModel,
    ex: &Example,
    path: &LayerPath,
    opts: &RewardOptions,
    prompts: Option<&PromptCache>,
) -> Result<Outcome> {
    let prep = prepare(lm, ex, opts)?;
    let scoring = Scoring {
        lm,
        ex,
        prep: &prep,
        opts,
    };
    let route = Route::Path { path, from: 0 };
    if let Some(pc) = prompts.filter(|_| prep.gen.is_some()) {
        let key = PromptCache::path_key(path);
        let p = pc.run_prompt(lm, &prep.prompt_ids, key, route)?;
        pc.keep(key, &prep.prompt_ids, &p.cache, Vec::new());
        return Ok(scoring.generate_after(path, &p.hidden, p.cache, None)?.0);
    }
    let mut slots = Vec::with_capacity(path.len());
    let rows = prep.rows(&mut slots);
    let pass = lm
        .model
        .run_path(prep.embed(lm)?, rows, route, |_, _, _| ())?;
    Ok(scoring.finish(path, &pass.hidden, slots)?.0)
}

/// Runs one generated token at a position and returns its logits (`[1, vocab]`).
pub type Feed<'a> = &'a mut dyn FnMut(&mut PathCache, u32, usize) -> drllm_engine::Result<Tensor>;

/// What scoring one example needs, whatever the path: the model, the example, its prepared
/// rows and the reward's options.
pub struct Scoring<'a> {
    /// The model.
    pub lm: &'a LoadedModel,
    /// The example.
    pub ex: &'a Example,
    /// Its prompt and continuation rows.
    pub prep: &'a Prepared,
    /// How it is judged.
    pub opts: &'a RewardOptions,
}

impl Scoring<'_> {
    /// Completes an evaluation from the hidden rows after the whole path (`x`) and the path's
    /// per-position key/value slots (generation continues from them). Returns the outcome and
    /// the layer executions of the rows run and of generation.
    pub fn finish(
        &self,
        path: &LayerPath,
        x: &Tensor,
        slots: Vec<KvSlot>,
    ) -> Result<(Outcome, u64)> {
        self.finish_fed(path, x, slots, None)
    }

    /// [`Scoring::finish`] where, when the example generates, `feed(cache, token, position)`
    /// runs each generated token and returns its logits (a token route decides every new
    /// token's layers itself); `None`: generated tokens run along `path`.
    pub fn finish_fed(
        &self,
        path: &LayerPath,
        x: &Tensor,
        slots: Vec<KvSlot>,
        feed: Option<Feed<'_>>,
    ) -> Result<(Outcome, u64)> {
        let prep = self.prep;
        let positions = path.len() as u64;
        let rows = prep.rows.len() as u64 * positions;
        let t = prep.prompt_ids.len();
        if prep.gen.is_none() {
            return Ok((self.score_rows(x)?, rows));
        }
        let cache = PathCache::from_slots(path, slots, t)?;
        self.generate_after(path, x, cache, feed)
    }

    /// A generating example after its prompt ran: `x` the hidden rows of the prompt positions
    /// the pass computed (the last one is the prompt's last), `cache` the whole prompt's keys
    /// and values along `path`. Returns the outcome and the layer executions of those rows and
    /// of generation.
    pub fn generate_after(
        &self,
        path: &LayerPath,
        x: &Tensor,
        mut cache: PathCache,
        feed: Option<Feed<'_>>,
    ) -> Result<(Outcome, u64)> {
        let Some(prompt) = &self.prep.gen else {
            return Err(Error::Reward {
                id: self.ex.id.clone(),
                reason: "choice-loglik examples do not generate".into(),
            });
        };
        let positions = path.len() as u64;
        let n = x.dim(0)?;
        let last = (self.lm.model).head_for_pass(&x.narrow(0, n - 1, 1)?, n)?;
        let o = generate(self, prompt, &mut cache, &last, feed)?;
        // Every generated token is fed back except a final one the loop stopped on.
        let fed = match o.stop {
            Some(StopReason::Eos) | None => o.tokens_generated,
            _ => o.tokens_generated.saturating_sub(1),
        };
        Ok((o, (n as u64 + fed as u64) * positions))
    }

    /// choice-loglik: scores the choices from the hidden rows after the path.
    fn score_rows(&self, x: &Tensor) -> Result<Outcome> {
        let (lm, prep) = (self.lm, self.prep);
        let t = prep.prompt_ids.len();
        // One LM-head call for the prompt's last row and every continuation row (they are
        // contiguous), split back per choice; with the whole pass's kernels, so one-token
        // choices (a single head row) score as they do in a request of their own.
        let rows = prep.rows.len();
        let logits = (lm.model).head_for_pass(&x.narrow(0, t - 1, rows - t + 1)?, rows)?;
        let last = logits.narrow(0, 0, 1)?;
        let rests = prep
            .segs
            .cont_offsets()
            .map(|(off, n)| {
                (n > 0)
                    .then(|| logits.narrow(0, off - t + 1, n))
                    .transpose()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        score_choices(prep, self.opts, &last, &rests)
    }
}

fn generate(
    s: &Scoring<'_>,
    prompt: &prompts::GenPrompt,
    cache: &mut PathCache,
    last: &Tensor,
    feed: Option<Feed<'_>>,
) -> Result<Outcome> {
    let (lm, ex, prep, opts) = (s.lm, s.ex, s.prep, s.opts);
    let max = prompt.max_new_tokens;
    let max_token_chars = lm.tokenizer.max_token_chars();
    let gold = prep.gold;
    let mut decode_error = None;
    let stop = |tokens: &[u32]| {
        if !opts.early_stop {
            return false;
        }
        let partial = match lm.tokenizer.decode(tokens) {
            Ok(t) => t,
            Err(e) => {
                decode_error = Some(e);
                return true;
            }
        };
        // A trailing replacement character is an incomplete UTF-8 sequence that later tokens
        // may complete into any character: undecided.
        if partial.ends_with('\u{FFFD}') {
            return false;
        }
        match ex.kind {
            AnswerKind::Letter => letter::verdict_fixed(&partial, gold),
            AnswerKind::Math => math_verdict_fixed(
                &format!("{}{partial}", prompt.output_prefix),
                (max - tokens.len()) * max_token_chars,
            ),
        }
    };
    let gen = match feed {
        Some(feed) => greedy_fed(&lm.model, cache, last, max, stop, |_, _| Ok(()), feed)?,
        None => greedy_continue(&lm.model, cache, last, max, stop)?,
    };
    if let Some(e) = decode_error {
        return Err(e.into());
    }
    let response = lm.tokenizer.decode(&gen.tokens)?;
    let graded = format!("{}{response}", prompt.output_prefix);
    let (correct, extracted) = match ex.kind {
        AnswerKind::Letter => {
            let l = letter::extract(&graded);
            (l == Some(gold), l.map(String::from))
        }
        AnswerKind::Math => {
            let b = math::extract_boxed(&graded);
            (
                b.as_deref().is_some_and(|b| math::is_equiv(b, &ex.answer)),
                b,
            )
        }
    };
    Ok(Outcome {
        correct,
        response: Some(response),
        extracted,
        tokens_generated: gen.tokens.len(),
        stop: Some(gen.stop),
        ..Outcome::default()
    })
}

/// Exact early stop for the math grader: the verdict depends only on the last `\boxed{…}`, so it
/// is fixed once the remaining budget (`chars_left`, an upper bound on the characters the
/// remaining tokens can add) can neither close an open box nor open a new one.
pub fn math_verdict_fixed(text: &str, chars_left: usize) -> bool {
    const OPEN: &str = "\\boxed{";
    if let Some(start) = text.rfind(OPEN) {
        if math::extract_boxed(&text[start..]).is_none() {
            return chars_left == 0; // one `}` closes it
        }
    }
    // Writing a new `\boxed{` (minus what the text already ends with) changes the extraction,
    // even before it is closed.
    let have = (0..OPEN.len())
        .rev()
        .find(|&k| text.ends_with(&OPEN[..k]))
        .unwrap_or(0);
    chars_left < OPEN.len() - have
}

impl Prepared {
    fn new(
        prompt_ids: Vec<u32>,
        conts: Vec<(Vec<u32>, usize)>,
        gen: Option<prompts::GenPrompt>,
        gold: char,
    ) -> Self {
        let mut rows = prompt_ids.clone();
        let mut segs = Segments {
            ctx: prompt_ids.len(),
            conts: Vec::with_capacity(conts.len()),
        };
        for (ids, _) in &conts {
            let run = &ids[..ids.len().saturating_sub(1)];
            rows.extend_from_slice(run);
            segs.conts.push(run.len());
        }
        Self {
            prompt_ids,
            conts,
            rows,
            segs,
            gen,
            gold,
        }
    }

    /// choice-loglik: the continuation token ids of each choice.
    pub fn continuations(&self) -> impl Iterator<Item = &[u32]> {
        self.conts.iter().map(|(ids, _)| ids.as_slice())
    }

    /// The layout of the rows every path runs: the prompt, then (choice-loglik) each choice's
    /// continuation but its last token.
    pub fn segments(&self) -> &Segments {
        &self.segs
    }

    /// The token id of each of those rows.
    pub fn row_ids(&self) -> &[u32] {
        &self.rows
    }

    /// Embeddings of those rows.
    pub fn embed(&self, lm: &LoadedModel) -> Result<Tensor> {
        Ok(lm.model.embed(&self.rows)?)
    }

    /// Those rows for [`drllm_engine::Model::run_path`], each path position's keys and values pushed
    /// onto `slots`.
    pub fn rows<'a>(&'a self, slots: &'a mut Vec<KvSlot>) -> Rows<'a> {
        Rows::Fused {
            segs: &self.segs,
            slots,
        }
    }
}

/// choice-loglik verdict from the logits of the context's last position (`last`, `[1, vocab]`)
/// and, per choice, of its continuation positions but the last (`None` for one-token choices).
pub fn score_choices(
    prep: &Prepared,
    opts: &RewardOptions,
    last: &Tensor,
    rests: &[Option<Tensor>],
) -> Result<Outcome> {
    let mut logprobs = Vec::with_capacity(prep.conts.len());
    let mut bytes = Vec::with_capacity(prep.conts.len());
    for ((cont_ids, nbytes), rest) in prep.conts.iter().zip(rests) {
        let logits = match rest {
            Some(rest) => Tensor::cat(&[last, rest], 0)?,
            None => last.clone(),
        };
        let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        logprobs.push(
            cont_ids
                .iter()
                .zip(&lp)
                .map(|(&id, row)| row[id as usize] as f64)
                .sum(),
        );
        bytes.push(*nbytes);
    }
    let argmax = |score: &dyn Fn(usize) -> f64| {
        (0..logprobs.len()).fold(0, |best, i| if score(i) > score(best) { i } else { best })
    };
    let gold = (prep.gold as u32).saturating_sub('A' as u32) as usize;
    let pick = argmax(&|i| logprobs[i]);
    let pick_norm = argmax(&|i| logprobs[i] / bytes[i].max(1) as f64);
    let (acc, acc_norm) = (pick == gold, pick_norm == gold);
    let score = |i: usize| {
        if opts.length_normalized {
            logprobs[i] / bytes[i].max(1) as f64
        } else {
            logprobs[i]
        }
    };
    let best_other = (0..logprobs.len())
        .filter(|&i| i != gold)
        .map(score)
        .fold(f64::NEG_INFINITY, f64::max);
    let margin = (gold < logprobs.len()).then(|| score(gold) - best_other);
    Ok(Outcome {
        correct: if opts.length_normalized {
            acc_norm
        } else {
            acc
        },
        choice_logprobs: logprobs,
        choice_bytes: bytes,
        pick: Some(pick),
        pick_norm: Some(pick_norm),
        correct_acc: Some(acc),
        correct_acc_norm: Some(acc_norm),
        margin,
        ..Outcome::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Early stop is exact for math: whenever a prefix is declared fixed given the characters
        /// the rest of the output really adds, the extracted answer (all the verdict depends on)
        /// is the full output's.
        #[test]
        fn math_early_stop_is_exact(parts in proptest::collection::vec(
            prop_oneof![
                Just("\\boxed{".to_string()), Just("\\box".to_string()), Just("}".to_string()),
                Just("{".to_string()), "[0-9a-z ]{1,3}".prop_map(String::from),
            ],
            0..10,
        )) {
            let full = parts.concat();
            for (i, _) in full.char_indices() {
                let (prefix, rest) = full.split_at(i);
                if math_verdict_fixed(prefix, rest.chars().count()) {
                    prop_assert_eq!(math::extract_boxed(prefix), math::extract_boxed(&full), "{:?} | {:?}", prefix, rest);
                }
            }
        }
    }

    #[test]
    fn math_early_stop_only_when_no_box_can_change() {
        assert!(!math_verdict_fixed("\\boxed{5", 1));
        assert!(math_verdict_fixed("\\boxed{5", 0));
        assert!(!math_verdict_fixed("\\boxed{5}", 7)); // a new, even unclosed, box
        assert!(math_verdict_fixed("\\boxed{5}", 6));
        assert!(!math_verdict_fixed("x \\box", 3)); // "ed{"
        assert!(math_verdict_fixed("x \\box", 2));
    }
}
