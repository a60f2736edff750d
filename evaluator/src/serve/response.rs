//! OpenAI response bodies: `text_completion` and `chat.completion` objects built from the
//! [`Completion`]s of a request, each choice with the `drllm` object (the layer path its prompt
//! ran and the layer executions it cost) and the response with `usage` and a `drllm` summary.

use serde_json::{json, Map, Value};

use super::api::{internal, ApiError, ChatRequest, CompletionRequest};
use super::infer::{Completion, Finish, Piece, Scored};
use drllm_engine::TextTokenizer;

/// The `drllm` object of a choice: the path the prompt ran, what it cost and the prompt tokens
/// the prefix cache gave.
fn drllm_info(c: &Completion) -> Value {
    json!({
        "path": c.path.layers(),
        "decisions": c.path.counts(),
        "path_len": c.path.len(),
        "layer_executions": c.layer_executions,
        "cached_tokens": c.cached_tokens,
    })
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

/// The `usage` object and the response's `drllm` summary for `done`.
fn usage(done: &[&Completion], routed: bool, layers: usize) -> (Value, Value) {
    let prompt_tokens: usize = done.iter().map(|c| c.prompt_tokens).sum();
    let completion_tokens: usize = done.iter().map(|c| c.generated.len()).sum();
    let execs: u64 = done.iter().map(|c| c.layer_executions).sum();
    let cached: usize = done.iter().map(|c| c.cached_tokens).sum();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    });
    let summary = json!({"routed": routed, "num_layers": layers, "layer_executions": execs});
    (usage, summary)
}

/// Each token's text, as clients concatenate them.
fn token_texts(tokens: &[Scored], tok: &TextTokenizer) -> Result<Vec<String>, ApiError> {
    tokens
        .iter()
        .map(|t| tok.decode(&[t.id]).map_err(internal))
        .collect()
}

/// The completions `logprobs` object of `tokens` (the prompt's first token has none).
fn logprobs_object(tokens: &[Scored], tok: &TextTokenizer) -> Result<Value, ApiError> {
    let texts = token_texts(tokens, tok)?;
    let mut offsets = Vec::with_capacity(texts.len());
    let mut at = 0;
    for t in &texts {
        offsets.push(at);
        at += t.chars().count();
    }
    let top = tokens
        .iter()
        .map(|t| {
            let alts = t
                .top
                .iter()
                .map(|&(id, lp)| Ok((tok.decode(&[id]).map_err(internal)?, json!(lp))))
                .collect::<Result<Map<_, _>, ApiError>>()?;
            Ok(t.logprob
                .map(|_| Value::Object(alts))
                .unwrap_or(Value::Null))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(json!({
        "tokens": texts,
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": offsets,
    }))
}

/// What the server adds to every response body: its identity and creation time.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `cmpl-…` / `chatcmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// Whether routers chose the paths.
    pub routed: bool,
    /// The model's layer count.
    pub layers: usize,
}

/// A `text_completion` object: one choice per prompt, in order.
pub fn completion_body(
    env: &Envelope,
    req: &CompletionRequest,
    done: &[Completion],
    tok: &TextTokenizer,
) -> Result<Value, ApiError> {
    let mut choices = Vec::with_capacity(done.len());
    for (i, (c, job)) in done.iter().zip(&req.jobs).enumerate() {
        let text = match job.echo {
            true => format!("{}{}", req.prompt_texts[i], c.text),
            false => c.text.clone(),
        };
        let logprobs = match job.logprobs {
            Some(_) => {
                let all: Vec<Scored> = c.prompt.iter().chain(&c.generated).cloned().collect();
                logprobs_object(&all, tok)?
            }
            None => Value::Null,
        };
        choices.push(json!({
            "index": i, "text": text, "logprobs": logprobs,
            "finish_reason": finish_reason(c.finish), "drllm": drllm_info(c),
        }));
    }
    let (usage, summary) = usage(&done.iter().collect::<Vec<_>>(), env.routed, env.layers);
    Ok(json!({
        "id": env.id, "object": "text_completion", "created": env.created, "model": env.model,
        "choices": choices, "usage": usage, "drllm": summary,
    }))
}

/// A `chat.completion` object with the assistant's message, one choice per completion.
pub fn chat_body(
    env: &Envelope,
    req: &ChatRequest,
    done: &[Completion],
    tok: &TextTokenizer,
) -> Result<Value, ApiError> {
    let mut choices = Vec::with_capacity(done.len());
    for (i, (c, job)) in done.iter().zip(&req.jobs).enumerate() {
        let logprobs = match job.logprobs {
            Some(_) => chat_logprobs(&c.generated, tok)?,
            None => Value::Null,
        };
        choices.push(json!({
            "index": i, "message": {"role": "assistant", "content": c.text},
            "logprobs": logprobs, "finish_reason": finish_reason(c.finish), "drllm": drllm_info(c),
        }));
    }
    let (usage, summary) = usage(&done.iter().collect::<Vec<_>>(), env.routed, env.layers);
    Ok(json!({
        "id": env.id, "object": "chat.completion", "created": env.created, "model": env.model,
        "choices": choices, "usage": usage, "drllm": summary,
    }))
}

/// The chat `logprobs` object of generated `tokens`.
fn chat_logprobs(tokens: &[Scored], tok: &TextTokenizer) -> Result<Value, ApiError> {
    let texts = token_texts(tokens, tok)?;
    let content = tokens
        .iter()
        .zip(&texts)
        .map(|(t, text)| {
            let top = t
                .top
                .iter()
                .map(|&(id, lp)| {
                    Ok(json!({"token": tok.decode(&[id]).map_err(internal)?, "logprob": lp}))
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            Ok(json!({"token": text, "logprob": t.logprob, "top_logprobs": top}))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(json!({ "content": content }))
}

/// Which streamed object a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// `text_completion` chunks: `text`.
    Completion,
    /// `chat.completion.chunk`: `delta.content`.
    Chat,
}

/// A streamed chunk of choice `index`: its new `text`, the log-probabilities of the tokens it
/// completes when `logprobs`, its finish reason on the last one.
pub fn chunk(
    env: &Envelope,
    kind: ChunkKind,
    index: usize,
    text: &str,
    piece: &Piece,
    logprobs: bool,
    tok: &TextTokenizer,
) -> Result<Value, ApiError> {
    let finish = piece.finish.map(finish_reason);
    let choice = match kind {
        ChunkKind::Completion => {
            let lp = match logprobs {
                true => logprobs_object(&piece.tokens, tok)?,
                false => Value::Null,
            };
            json!({"index": index, "text": text, "logprobs": lp, "finish_reason": finish})
        }
        ChunkKind::Chat => {
            let lp = match logprobs {
                true => chat_logprobs(&piece.tokens, tok)?,
                false => Value::Null,
            };
            let delta = match (text.is_empty(), finish) {
                (true, Some(_)) => json!({}),
                _ => json!({"content": text}),
            };
            json!({"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish})
        }
    };
    Ok(chunk_object(env, kind, vec![choice]))
}

/// The chat stream's first chunk of choice `index`: the assistant's role.
pub fn role_chunk(env: &Envelope, index: usize) -> Value {
    let choice = json!({"index": index, "delta": {"role": "assistant", "content": ""},
        "logprobs": null, "finish_reason": null});
    chunk_object(env, ChunkKind::Chat, vec![choice])
}

/// The stream's last chunk when the client asked for usage: no choice, the request's usage.
pub fn usage_chunk(env: &Envelope, kind: ChunkKind, done: &[Completion]) -> Value {
    let (usage, summary) = usage(&done.iter().collect::<Vec<_>>(), env.routed, env.layers);
    let mut v = chunk_object(env, kind, Vec::new());
    v["usage"] = usage;
    v["drllm"] = summary;
    v
}

fn chunk_object(env: &Envelope, kind: ChunkKind, choices: Vec<Value>) -> Value {
    let object = match kind {
        ChunkKind::Completion => "text_completion",
        ChunkKind::Chat => "chat.completion.chunk",
    };
    json!({"id": env.id, "object": object, "created": env.created, "model": env.model,
        "choices": choices})
}
