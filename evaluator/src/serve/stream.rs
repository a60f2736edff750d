//! Streamed responses (`stream: true`): server-sent events as OpenAI's API sends them. The
//! inference thread hands over each piece of generated text once no stop string can take it
//! back ([`super::infer::Piece`]); each becomes a `text_completion` or `chat.completion.chunk`
//! chunk, the chat stream opening every choice with the assistant's role, then an optional
//! usage chunk (`stream_options.include_usage`) and `data: [DONE]`. An error after the stream
//! began is sent as an `error` chunk before `[DONE]`; the status is already 200 by then.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use super::api::{ChatRequest, CompletionRequest, StreamOptions};
use super::response::{self, ChunkKind};
use super::{answer, Job, Shared, StreamEvent};

/// A parsed request to stream: its jobs and, per choice, what the chunks carry.
pub struct Request {
    kind: ChunkKind,
    jobs: Vec<Job>,
    /// The text a choice's first chunk starts with (`echo`).
    echo: Vec<Option<String>>,
}

impl Request {
    /// A completions request: choice `i` is job `i`, echoing prompt `i / n` if asked.
    pub fn completion(req: &CompletionRequest) -> Self {
        let n = req.decoding.n;
        let echo = (req.jobs.iter().enumerate())
            .map(|(i, j)| j.echo.then(|| req.prompt_texts[i / n].clone()))
            .collect();
        Self {
            kind: ChunkKind::Completion,
            jobs: req.jobs.clone(),
            echo,
        }
    }

    /// A chat request.
    pub fn chat(req: &ChatRequest) -> Self {
        Self {
            kind: ChunkKind::Chat,
            jobs: req.jobs.clone(),
            echo: vec![None; req.jobs.len()],
        }
    }
}

/// Queues `req` and streams its chunks; a full queue is answered 503 before any chunk.
pub fn respond(
    s: Arc<Shared>,
    req: Request,
    opts: StreamOptions,
    endpoint: &'static str,
) -> Response {
    let rx = match s.infer_streamed(req.jobs.clone()) {
        Ok(rx) => rx,
        Err(e) => return answer(endpoint, Err(e)),
    };
    metrics::counter!("drllm_serve_requests_total", "endpoint" => endpoint, "status" => "200")
        .increment(1);
    let env = s.envelope(match req.kind {
        ChunkKind::Completion => "cmpl",
        ChunkKind::Chat => "chatcmpl",
    });
    let first: Vec<Result<Event, Infallible>> = match req.kind {
        ChunkKind::Chat => (0..req.jobs.len())
            .map(|i| Ok(data(&response::role_chunk(&env, i))))
            .collect(),
        ChunkKind::Completion => Vec::new(),
    };
    let mut started = vec![false; req.jobs.len()];
    let chunks = UnboundedReceiverStream::new(rx).filter_map(move |ev| {
        let tok = &s.engine.lm.tokenizer;
        let v = match ev {
            StreamEvent::Piece { choice, piece } => {
                let mut text = piece.text.clone();
                if !std::mem::replace(&mut started[choice], true) {
                    if let Some(echo) = &req.echo[choice] {
                        text.insert_str(0, echo);
                    }
                }
                if text.is_empty() && piece.tokens.is_empty() && piece.finish.is_none() {
                    return None;
                }
                let logprobs = req.jobs[choice].logprobs.is_some();
                response::chunk(&env, req.kind, choice, &text, &piece, logprobs, tok)
                    .unwrap_or_else(|e| error_chunk(&e.message))
            }
            StreamEvent::Done(Ok(done)) if opts.include_usage => {
                response::usage_chunk(&env, req.kind, &done)
            }
            StreamEvent::Done(Ok(_)) => return None,
            StreamEvent::Done(Err(e)) => error_chunk(&e),
        };
        Some(Ok(data(&v)))
    });
    let done = tokio_stream::iter([Ok(Event::default().data("[DONE]"))]);
    let events = tokio_stream::iter(first).chain(chunks).chain(done);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn data(v: &Value) -> Event {
    Event::default().data(v.to_string())
}

fn error_chunk(message: &str) -> Value {
    json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
}
