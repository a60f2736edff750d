//! OpenAI response bodies: `text_completion` and `chat.completion` objects built from the
//! [`Completion`]s of a request, each choice with the `drllm` object (the layer path its prompt
//! ran and the layer executions it cost) and the response with `usage` and a `drllm` summary.

use serde_json::{json, Map, Value};

use super::api::{internal, ApiError, ChatRequest, CompletionRequest};
use super::infer::{Completion, Finish, Scored};
use drllm_engine::TextTokenizer;

/// The `drllm` object of a choice: the path the prompt ran and what it cost.
fn drllm_info(c: &Completion) -> Value {
    json!({
        "path": c.path.layers(),
        "decisions": c.path.counts(),
        "path_len": c.path.len(),
        "layer_executions": c.layer_executions,
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
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
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
pub struct Envelope<'a> {
    /// `cmpl-…` / `chatcmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: &'a str,
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

/// A `chat.completion` object with the assistant's message.
pub fn chat_body(
    env: &Envelope,
    req: &ChatRequest,
    c: &Completion,
    tok: &TextTokenizer,
) -> Result<Value, ApiError> {
    let logprobs = match req.job.logprobs {
        Some(_) => {
            let texts = token_texts(&c.generated, tok)?;
            let content = c
                .generated
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
            json!({ "content": content })
        }
        None => Value::Null,
    };
    let (usage, summary) = usage(&[c], env.routed, env.layers);
    Ok(json!({
        "id": env.id, "object": "chat.completion", "created": env.created, "model": env.model,
        "choices": [{
            "index": 0, "message": {"role": "assistant", "content": c.text},
            "logprobs": logprobs, "finish_reason": finish_reason(c.finish), "drllm": drllm_info(c),
        }],
        "usage": usage, "drllm": summary,
    }))
}
