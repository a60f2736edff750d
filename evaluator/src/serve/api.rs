//! OpenAI requests: bodies parsed into [`Job`]s with every field checked; a bad one is an
//! [`ApiError`], answered with a 400 whose OpenAI-style body names the field, as OpenAI's and
//! vLLM's servers answer (the responses are built in [`super::response`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::infer::Job;
use drllm_engine::TextTokenizer;

/// Most alternatives per position a client may ask for (`logprobs`, `top_logprobs`).
pub const MAX_LOGPROBS: usize = 20;
/// Most stop strings per request.
const MAX_STOPS: usize = 16;
/// OpenAI's default `max_tokens` for completions.
const COMPLETION_MAX_TOKENS: usize = 16;
/// Default `max_tokens` for chat completions (capped by the context left).
const CHAT_MAX_TOKENS: usize = 512;

/// An error answered with an OpenAI-style body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What is wrong and how to fix it.
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, …).
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<String>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: (!param.is_empty()).then(|| param.to_string()),
        }
    }

    /// Another status, no field at fault.
    pub fn status(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": null,
        }});
        json_response(self.status, &body)
    }
}

/// A JSON body with its content type.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
    (status, json, body.to_string()).into_response()
}

/// What the parser needs to know of the served model.
pub struct Limits<'a> {
    /// The name clients address the model by.
    pub served_name: &'a str,
    /// The tokenizer (text prompts, chat template, vocabulary size).
    pub tokenizer: &'a TextTokenizer,
    /// The model's context length.
    pub context: usize,
}

/// A parsed `/v1/completions` body: one job per prompt, and each prompt's text for `echo`.
#[derive(Debug)]
pub struct CompletionRequest {
    /// One per prompt, in order.
    pub jobs: Vec<Job>,
    /// The prompts' texts (token-id prompts decoded), for `echo`.
    pub prompt_texts: Vec<String>,
}

/// A parsed `/v1/chat/completions` body.
#[derive(Debug)]
pub struct ChatRequest {
    /// The templated conversation's job.
    pub job: Job,
}

/// The body as a JSON object, or a 400.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(ApiError::bad(
            "",
            format!("the body must be a JSON object, got {}", kind_of(&other)),
        )),
        Err(e) => Err(ApiError::bad(
            "",
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// Parses a completions body.
pub fn completion(m: &Map<String, Value>, lim: &Limits) -> Result<CompletionRequest, ApiError> {
    check_common(m, lim)?;
    let prompts = prompts(m.get("prompt"), lim)?;
    let max_tokens = max_tokens(m, "max_tokens", COMPLETION_MAX_TOKENS)?;
    let logprobs = match m.get("logprobs") {
        None | Some(Value::Null) => None,
        Some(v) => Some(small_count(v, "logprobs")?),
    };
    let echo = flag(m, "echo")?;
    let stop = stops(m.get("stop"))?;
    let mut jobs = Vec::with_capacity(prompts.len());
    let mut prompt_texts = Vec::with_capacity(prompts.len());
    for (ids, text) in prompts {
        check_fits(ids.len(), max_tokens, lim, "prompt")?;
        jobs.push(Job {
            prompt: ids,
            max_tokens,
            stop: stop.clone(),
            logprobs,
            echo,
        });
        prompt_texts.push(text);
    }
    Ok(CompletionRequest { jobs, prompt_texts })
}

/// Parses a chat completions body: the conversation through the model's chat template, with the
/// assistant's turn opened.
pub fn chat(m: &Map<String, Value>, lim: &Limits) -> Result<ChatRequest, ApiError> {
    check_common(m, lim)?;
    let messages = messages(m.get("messages"))?;
    let template = lim.tokenizer.chat_template().ok_or_else(|| {
        ApiError::bad(
            "messages",
            "the served model has no chat template (a base model): use /v1/completions",
        )
    })?;
    let pairs: Vec<(&str, &str)> = messages
        .iter()
        .map(|(r, c)| (r.as_str(), c.as_str()))
        .collect();
    let text = template
        .render(&pairs, true)
        .map_err(|e| ApiError::bad("messages", format!("the chat template refused them: {e}")))?;
    let prompt = lim.tokenizer.encode(&text, false).map_err(internal)?;
    let key = if m.contains_key("max_completion_tokens") {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let left = lim.context.saturating_sub(prompt.len());
    let max_tokens = max_tokens(m, key, CHAT_MAX_TOKENS.min(left))?;
    check_fits(prompt.len(), max_tokens, lim, "messages")?;
    let logprobs = match (flag(m, "logprobs")?, m.get("top_logprobs")) {
        (false, None | Some(Value::Null)) => None,
        (false, Some(_)) => {
            return Err(ApiError::bad(
                "top_logprobs",
                "top_logprobs needs logprobs: true",
            ))
        }
        (true, None | Some(Value::Null)) => Some(0),
        (true, Some(v)) => Some(small_count(v, "top_logprobs")?),
    };
    let job = Job {
        prompt,
        max_tokens,
        stop: stops(m.get("stop"))?,
        logprobs,
        echo: false,
    };
    Ok(ChatRequest { job })
}

/// The fields both endpoints share: the model's name and the sampling options this server can
/// honour (greedy decoding, one choice, no streaming).
fn check_common(m: &Map<String, Value>, lim: &Limits) -> Result<(), ApiError> {
    match m.get("model") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == lim.served_name => {}
        Some(v) => {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!(
                    "the model `{}` does not exist here; this server serves `{}` (GET /v1/models)",
                    v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    lim.served_name
                ),
                kind: "invalid_request_error",
                param: Some("model".into()),
            })
        }
    }
    if let Some(t) = m.get("temperature").filter(|v| !v.is_null()) {
        let t = t
            .as_f64()
            .ok_or_else(|| ApiError::bad("temperature", "temperature must be a number"))?;
        if t != 0.0 {
            return Err(ApiError::bad(
                "temperature",
                format!("temperature {t}: this server decodes greedily; send temperature 0"),
            ));
        }
    }
    for key in ["n", "best_of"] {
        if let Some(v) = m.get(key).filter(|v| !v.is_null()) {
            if v.as_u64() != Some(1) {
                return Err(ApiError::bad(
                    key,
                    format!("{key} {v}: greedy decoding gives one choice per prompt; send 1"),
                ));
            }
        }
    }
    if flag(m, "stream")? {
        return Err(ApiError::bad(
            "stream",
            "streaming is not supported; send stream: false",
        ));
    }
    Ok(())
}

/// `prompt`: a string, a list of strings, a list of token ids or a list of token-id lists; each
/// prompt as token ids with its text.
fn prompts(v: Option<&Value>, lim: &Limits) -> Result<Vec<(Vec<u32>, String)>, ApiError> {
    let text = |s: &str| -> Result<(Vec<u32>, String), ApiError> {
        let ids = lim.tokenizer.encode(s, true).map_err(internal)?;
        Ok((ids, s.to_string()))
    };
    let items = match v {
        None | Some(Value::Null) => return Err(ApiError::bad("prompt", "prompt is required")),
        Some(Value::String(s)) => return Ok(vec![text(s)?]),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::bad("prompt", "prompt is an empty list"))
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ApiError::bad(
                "prompt",
                format!("prompt must be a string or a list, got {}", kind_of(other)),
            ))
        }
    };
    if items.iter().all(Value::is_number) {
        return Ok(vec![token_prompt(items, lim, "prompt")?]);
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => text(s),
            Value::Array(ids) => token_prompt(ids, lim, &format!("prompt[{i}]")),
            other => Err(ApiError::bad(
                "prompt",
                format!(
                    "prompt[{i}] must be a string or a list of token ids, got {}",
                    kind_of(other)
                ),
            )),
        })
        .collect()
}

/// A token-id prompt, every id checked against the vocabulary.
fn token_prompt(ids: &[Value], lim: &Limits, at: &str) -> Result<(Vec<u32>, String), ApiError> {
    let vocab = lim.tokenizer.vocab_size();
    let ids = ids
        .iter()
        .enumerate()
        .map(|(j, v)| match v.as_u64() {
            Some(id) if (id as usize) < vocab => Ok(id as u32),
            _ => Err(ApiError::bad(
                "prompt",
                format!("{at}[{j}] = {v} is not a token id (0 ≤ id < {vocab})"),
            )),
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let text = lim.tokenizer.decode(&ids).map_err(internal)?;
    Ok((ids, text))
}

/// `messages`: `[{"role", "content"}]`, content a string or a list of `{"type": "text", "text"}`
/// parts.
fn messages(v: Option<&Value>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(Value::Array(items)) = v else {
        return Err(ApiError::bad(
            "messages",
            "messages must be a non-empty list of {\"role\", \"content\"}",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::bad("messages", "messages is an empty list"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, msg)| {
            let field = |k: &str| format!("messages[{i}].{k}");
            let role = msg.get("role").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad("messages", format!("{} must be a string", field("role")))
            })?;
            let content = match msg.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => text_parts(parts).ok_or_else(|| {
                    ApiError::bad(
                        "messages",
                        format!("{}: only text parts are supported", field("content")),
                    )
                })?,
                _ => {
                    return Err(ApiError::bad(
                        "messages",
                        format!("{} must be a string", field("content")),
                    ))
                }
            };
            Ok((role.to_string(), content))
        })
        .collect()
}

fn text_parts(parts: &[Value]) -> Option<String> {
    parts
        .iter()
        .map(|p| match p.get("type")?.as_str()? {
            "text" => p.get("text")?.as_str().map(str::to_string),
            _ => None,
        })
        .collect()
}

fn max_tokens(m: &Map<String, Value>, key: &str, default: usize) -> Result<usize, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
            ApiError::bad(
                key,
                format!("{key} must be a non-negative integer, got {v}"),
            )
        }),
    }
}

/// A count of alternatives, 0 ..= [`MAX_LOGPROBS`].
fn small_count(v: &Value, key: &str) -> Result<usize, ApiError> {
    match v.as_u64() {
        Some(n) if n as usize <= MAX_LOGPROBS => Ok(n as usize),
        _ => Err(ApiError::bad(
            key,
            format!("{key} must be an integer from 0 to {MAX_LOGPROBS}, got {v}"),
        )),
    }
}

fn flag(m: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(ApiError::bad(
            key,
            format!("{key} must be true or false, got {v}"),
        )),
    }
}

/// `stop`: a string or a list of non-empty strings.
fn stops(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad("stop", "stop must be a string or a list of strings"))?,
        Some(other) => {
            return Err(ApiError::bad(
                "stop",
                format!(
                    "stop must be a string or a list of strings, got {}",
                    kind_of(other)
                ),
            ))
        }
    };
    if list.len() > MAX_STOPS || list.iter().any(String::is_empty) {
        return Err(ApiError::bad(
            "stop",
            format!("stop takes up to {MAX_STOPS} non-empty strings"),
        ));
    }
    Ok(list)
}

/// Refuses a prompt that is empty or leaves no room for `max_tokens` in the context.
fn check_fits(prompt: usize, max_tokens: usize, lim: &Limits, param: &str) -> Result<(), ApiError> {
    if prompt == 0 {
        return Err(ApiError::bad(param, "the prompt has no tokens"));
    }
    if prompt + max_tokens > lim.context {
        return Err(ApiError::bad(
            param,
            format!(
                "the prompt has {prompt} tokens and max_tokens is {max_tokens}: more than the \
                 model's context of {} tokens",
                lim.context
            ),
        ));
    }
    Ok(())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A 500 for what should not fail (the tokenizer on valid input).
pub fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        e.to_string(),
    )
}
