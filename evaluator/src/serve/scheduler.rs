//! Continuous batching. The inference thread keeps every request in flight as sequences (one per
//! choice): each step runs every sequence's new rows, the prompts being prefilled and the tokens
//! being decoded, through the model in one batch grouped by layer
//! ([`drllm_engine::Model::forward_batch`]: each sequence on its own route, the static model's
//! path, a per-input router's decisions and then its path, or a token gate), then picks each
//! sequence's next token. A request joins between steps and leaves when its last choice is done.
//! Every row keeps the arithmetic it has alone, so an answer does not depend on what else was in
//! flight.
//!
//! A request whose client went away is dropped before the next step. A step admits waiting
//! prompts up to `--max-batch-tokens` prompt rows, in arrival order (0: one sequence at a time,
//! each run to its end before the next starts). A prompt that shares a longer start with one
//! admitted in the same step than with anything the prefix cache holds waits one step, to take
//! that start from the cache instead of computing it twice (lm-eval's choices of one question,
//! sent at once).

use std::collections::VecDeque;
use std::time::Instant;

use candle_core::Tensor;
use drllm_engine::{common_prefix, BatchSeq, Kernels, PathCache, Step};
use tokio::sync::mpsc;

use super::infer::{Completion, Generating, Job, Routing, ServedModel, Sink, Start};
use super::{record_completions, record_prefix_stats, Reply, StreamEvent, Work};

/// A prompt shares this many more tokens with one admitted in the same step than the cache
/// gives it: it waits a step.
const SHARED_WAIT: usize = 16;

/// A request in flight.
struct InFlight {
    reply: Reply,
    jobs: Vec<Job>,
    done: Vec<Option<Completion>>,
    left: usize,
    since: Instant,
}

/// One choice of a request being computed.
struct Seq<'e> {
    lane: Lane<'e>,
    phase: Phase<'e>,
}

/// What a sequence keeps through its phases.
struct Lane<'e> {
    req: usize,
    choice: usize,
    cache: PathCache,
    routing: Routing<'e>,
}

enum Phase<'e> {
    /// The prompt runs from where `Start` says (what the prefix cache gave before); the cache
    /// is the sequence's meanwhile.
    Prefill(Start),
    /// Generating; `next` is the token to feed.
    Decode {
        gen: Box<Generating<'e>>,
        out: Completion,
        next: u32,
    },
}

/// Serves `rx` until every sender is gone, batching as the module doc says.
pub(super) fn run(engine: &ServedModel, mut rx: mpsc::Receiver<Work>, opts: BatchOptions) {
    let max_batch_tokens = opts.max_batch_tokens;
    let mut s = Scheduler {
        engine,
        exact: opts.exact,
        requests: Vec::new(),
        waiting: VecDeque::new(),
        seqs: Vec::new(),
    };
    loop {
        if s.seqs.is_empty() && s.waiting.is_empty() {
            s.requests.clear(); // every one answered
            match rx.blocking_recv() {
                Some(work) => s.admit(work),
                None => return,
            }
        }
        while let Ok(work) = rx.try_recv() {
            s.admit(work);
        }
        metrics::gauge!("drllm_serve_queue_depth").set(rx.len() as f64);
        s.start_waiting(max_batch_tokens);
        s.step();
        record_prefix_stats(engine.prefix_stats());
    }
}

/// How the scheduler batches.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchOptions {
    /// Prompt tokens a step admits (0: one sequence at a time).
    pub(super) max_batch_tokens: usize,
    /// Each row on the kernels of its own pass (answers independent of what else is in
    /// flight); `false`: generated tokens in a batch on the dense weights too (throughput).
    pub(super) exact: bool,
}

struct Scheduler<'e> {
    engine: &'e ServedModel,
    exact: bool,
    /// Requests by slot; `None` once answered.
    requests: Vec<Option<InFlight>>,
    /// Choices not started yet: (request, choice).
    waiting: VecDeque<(usize, usize)>,
    seqs: Vec<Seq<'e>>,
}

impl<'e> Scheduler<'e> {
    fn admit(&mut self, work: Work) {
        let n = work.jobs.len();
        if n == 0 {
            return work.reply.send(Ok(Vec::new()));
        }
        let slot = self.requests.len();
        self.requests.push(Some(InFlight {
            reply: work.reply,
            done: vec![None; n],
            left: n,
            jobs: work.jobs,
            since: Instant::now(),
        }));
        self.waiting.extend((0..n).map(|c| (slot, c)));
    }

    fn job(&self, req: usize, choice: usize) -> &Job {
        &self.requests[req].as_ref().expect("in flight").jobs[choice]
    }

    /// Starts waiting prompts up to `budget` prompt rows (at least one; with a budget of 0, one
    /// once nothing runs), as the module doc says.
    fn start_waiting(&mut self, budget: usize) {
        if budget == 0 && !self.seqs.is_empty() {
            return;
        }
        let mut chosen: Vec<(usize, usize)> = Vec::new();
        let mut rows = 0;
        let mut held = VecDeque::new();
        let shares = self.engine.route_key().is_some();
        while let Some((r, c)) = self.waiting.pop_front() {
            let prompt = &self.job(r, c).prompt;
            if !chosen.is_empty() && rows + prompt.len() > budget {
                held.push_back((r, c));
                held.extend(self.waiting.drain(..));
                break;
            }
            let cached = self.engine.prefix_shared(prompt);
            let with_chosen = (chosen.iter())
                .filter(|_| shares)
                .map(|&(r2, c2)| common_prefix(&self.job(r2, c2).prompt, prompt))
                .max()
                .unwrap_or(0);
            if with_chosen >= cached + SHARED_WAIT {
                held.push_back((r, c));
                continue;
            }
            chosen.push((r, c));
            rows += prompt.len();
        }
        self.waiting = held;
        for (req, choice) in chosen {
            match self.engine.start(self.job(req, choice)) {
                Ok(mut start) => self.seqs.push(Seq {
                    lane: Lane {
                        req,
                        choice,
                        cache: start.take_cache(),
                        routing: self.engine.routing(),
                    },
                    phase: Phase::Prefill(start),
                }),
                Err(e) => self.fail(req, &e.to_string()),
            }
        }
    }

    /// Drops the requests whose client went away (the connection closed: its receiver is gone).
    fn drop_abandoned(&mut self) {
        let gone: Vec<usize> = (self.requests.iter().enumerate())
            .filter_map(|(i, r)| {
                let closed = match &r.as_ref()?.reply {
                    Reply::Whole(tx) => tx.is_closed(),
                    Reply::Stream(tx) => tx.is_closed(),
                };
                closed.then_some(i)
            })
            .collect();
        for req in gone {
            metrics::counter!("drllm_serve_abandoned_total").increment(1);
            self.fail(req, "the client went away");
        }
    }

    /// Runs one batch: every sequence's new rows through the model, then each its next token.
    fn step(&mut self) {
        self.drop_abandoned();
        if self.seqs.is_empty() {
            return;
        }
        let feeds: Vec<(Vec<u32>, usize)> = (self.seqs.iter())
            .map(|s| match &s.phase {
                Phase::Prefill(st) => {
                    let prompt = &self.job(s.lane.req, s.lane.choice).prompt;
                    (prompt[st.at()..].to_vec(), st.at())
                }
                Phase::Decode { next, .. } => (vec![*next], s.lane.cache.len()),
            })
            .collect();
        let rows: usize = feeds.iter().map(|(ids, _)| ids.len()).sum();
        metrics::gauge!("drllm_serve_batch_rows").set(rows as f64);
        metrics::gauge!("drllm_serve_batch_sequences").set(self.seqs.len() as f64);
        metrics::counter!("drllm_serve_batch_steps_total").increment(1);
        let decoding: Vec<usize> = (self.seqs.iter().enumerate())
            .filter(|(_, s)| matches!(s.phase, Phase::Decode { .. }))
            .map(|(i, _)| i)
            .collect();
        // A lone generated token keeps the decode copy whatever the mode: one dense row reads
        // every weight in f32 for one token.
        let decode_copy = self.exact || decoding.len() < 2;
        let mut batch: Vec<BatchSeq<'_>> = (self.seqs.iter_mut().zip(&feeds))
            .map(|(s, (ids, start))| BatchSeq {
                ids,
                cache: &mut s.lane.cache,
                start: *start,
                route: (s.lane.routing).route(matches!(s.phase, Phase::Prefill(_))),
            })
            .collect();
        let hidden = self.engine.lm.model.forward_batch(&mut batch, decode_copy);
        drop(batch);
        let hidden = match hidden.and_then(|h| self.decode_logits(h, &decoding)) {
            Ok(h) => h,
            Err(e) => {
                let reqs: Vec<usize> = self.seqs.iter().map(|s| s.lane.req).collect();
                for r in reqs {
                    self.fail(r, &e.to_string());
                }
                return;
            }
        };
        let seqs = std::mem::take(&mut self.seqs);
        for (seq, h) in seqs.into_iter().zip(hidden) {
            let req = seq.lane.req;
            if self.requests[req].is_none() {
                continue; // failed meanwhile
            }
            if let Err(e) = self.advance(seq, h) {
                self.fail(req, &e.to_string());
            }
        }
    }

    /// The prefill sequences' hidden rows as they are, the decode sequences' (`decoding`) as
    /// their logits: one head call for all of them where the kernels' results do not depend on
    /// the row count (the decode copy's; the dense weights' when the batch runs for
    /// throughput), else one call each (dense kernels differ between one row and several).
    fn decode_logits(
        &self,
        hidden: Vec<Tensor>,
        decoding: &[usize],
    ) -> drllm_engine::Result<Vec<Tensor>> {
        let model = &self.engine.lm.model;
        let mut hidden = hidden;
        let kernels = match (self.exact, model.uses_decode_copy(1)) {
            (true, true) => Some(Kernels::Split {
                decode_rows: decoding.len(),
            }),
            (false, _) if decoding.len() > 1 => Some(Kernels::Split { decode_rows: 0 }),
            _ => None,
        };
        let Some(kernels) = kernels.filter(|_| !decoding.is_empty()) else {
            for &i in decoding {
                hidden[i] = model.head_for_pass(&hidden[i], 1)?;
            }
            return Ok(hidden);
        };
        let rows: Vec<&Tensor> = decoding.iter().map(|&i| &hidden[i]).collect();
        let logits = model.head_rows(&Tensor::cat(&rows, 0)?, kernels)?;
        for (j, &i) in decoding.iter().enumerate() {
            hidden[i] = logits.narrow(0, j, 1)?;
        }
        Ok(hidden)
    }

    /// After a step: a prefilled prompt starts generating (or is done), a decoding sequence
    /// takes its next token (`h`: its hidden rows, or its logits when decoding).
    fn advance(&mut self, seq: Seq<'e>, h: Tensor) -> drllm_core::Result<()> {
        let Seq { mut lane, phase } = seq;
        match phase {
            Phase::Prefill(mut start) => {
                let job = self.job(lane.req, lane.choice).clone();
                start.put_cache(lane.cache);
                let pre = (self.engine).prefilled(&job, start, &h, lane.routing.ran())?;
                let (mut out, last, cache) = self.engine.begin(&job, pre);
                lane.cache = cache;
                let last = last?;
                let sink = self.sink(lane.req, lane.choice);
                match self.engine.generating(&job, sink, &mut out)? {
                    Some(gen) => self.decode(lane, Box::new(gen), out, &last),
                    None => self.deliver(lane.req, lane.choice, out),
                }
            }
            Phase::Decode { gen, out, .. } => self.decode(lane, gen, out, &h),
        }
    }

    /// Picks the next token of a generating sequence from `logits`: it continues, or is done.
    fn decode(
        &mut self,
        lane: Lane<'e>,
        mut gen: Box<Generating<'e>>,
        mut out: Completion,
        logits: &Tensor,
    ) -> drllm_core::Result<()> {
        match gen.step(logits, lane.cache.len())? {
            Step::Feed(next) => {
                self.seqs.push(Seq {
                    lane,
                    phase: Phase::Decode { gen, out, next },
                });
                Ok(())
            }
            Step::Done(g) => {
                out.layer_executions = match lane.routing.ran() {
                    Some(ran) => ran,
                    None => out.layer_executions + gen.fed * lane.cache.path().len() as u64,
                };
                gen.finish(g, &mut out)?;
                self.deliver(lane.req, lane.choice, out)
            }
        }
    }

    /// A streaming request's sink for choice `choice`.
    fn sink(&self, req: usize, choice: usize) -> Option<Sink<'e>> {
        match &self.requests[req].as_ref()?.reply {
            Reply::Whole(_) => None,
            Reply::Stream(tx) => {
                let tx = tx.clone();
                Some(Box::new(move |piece| {
                    let _ = tx.send(StreamEvent::Piece { choice, piece });
                }))
            }
        }
    }

    /// A finished choice; the request is answered once its last one is.
    fn deliver(&mut self, req: usize, choice: usize, out: Completion) -> drllm_core::Result<()> {
        let r = self.requests[req].as_mut().expect("in flight");
        r.done[choice] = Some(out);
        r.left -= 1;
        if r.left == 0 {
            let r = self.requests[req].take().expect("in flight");
            let done: Vec<Completion> = r.done.into_iter().map(|c| c.expect("done")).collect();
            record_completions(&done);
            metrics::histogram!("drllm_serve_inference_seconds")
                .record(r.since.elapsed().as_secs_f64());
            r.reply.send(Ok(done));
        }
        Ok(())
    }

    /// Answers `req` with an error and drops what is left of it.
    fn fail(&mut self, req: usize, message: &str) {
        if let Some(r) = self.requests[req].take() {
            tracing::warn!("request failed: {message}");
            r.reply.send(Err(message.to_string()));
        }
        self.seqs.retain(|s| s.lane.req != req);
        self.waiting.retain(|&(r, _)| r != req);
    }
}
