//! OpenAI requests: bodies parsed into [`Job`]s with every field checked; a bad one is an
//! [`ApiError`], answered with a 400 whose OpenAI-style body names the field, as OpenAI's and
//! vLLM's servers answer (the responses are built in [`super::response`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::infer::{Job, Sampling};
use drllm_engine::TextTokenizer;

/// Most alternatives per position a client may ask for (`logprobs`, `top_logprobs`).
pub const MAX_LOGPROBS: usize = 20;
/// Most stop strings per request.
const MAX_STOPS: usize = 16;
/// Most choices per prompt (`n`).
pub const MAX_N: usize = 16;
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

/// A parsed `/v1/completions` body: `n` jobs per prompt, and each prompt's text for `echo`.
#[derive(Debug)]
pub struct CompletionRequest {
    /// `n` per prompt, prompt by prompt: choice `i` is job `i`, of prompt `i / n`.
    pub jobs: Vec<Job>,
    /// The prompts' texts (token-id prompts decoded), for `echo`.
    pub prompt_texts: Vec<String>,
    /// How the client asked to decode.
    pub decoding: Decoding,
}

/// A parsed `/v1/chat/completions` body.
#[derive(Debug)]
pub struct ChatRequest {
    /// The templated conversation's `n` jobs, one per choice.
    pub jobs: Vec<Job>,
    /// How the client asked to decode.
    pub decoding: Decoding,
}

/// What both endpoints take on decoding: sampling, choices per prompt, streaming.
#[derive(Debug, Clone, Copy)]
pub struct Decoding {
    /// The first choice's sampling; choice `j` draws with seed `seed + j`.
    pub sampling: Sampling,
    /// Choices per prompt.
    pub n: usize,
    /// `stream: true`: server-sent events, with a usage chunk at the end when
    /// `stream_options.include_usage` asks for one.
    pub stream: Option<StreamOptions>,
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Send a last chunk with the request's `usage`.
    pub include_usage: bool,
}

impl Decoding {
    /// The `n` jobs of one prompt: `job` with each choice's seed.
    fn jobs(&self, job: Job) -> impl Iterator<Item = Job> + '_ {
        (0..self.n).map(move |j| Job {
            sampling: Sampling {
                seed: self.sampling.seed.wrapping_add(j as u64),
                ..self.sampling
            },
            ..job.clone()
        })
    }
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

/// Parses a completions body from its bytes.
pub fn completion_body(body: &[u8], lim: &Limits) -> Result<CompletionRequest, ApiError> {
    completion(&object(body)?, lim)
}

/// Parses a chat completions body from its bytes.
pub fn chat_body(body: &[u8], lim: &Limits) -> Result<ChatRequest, ApiError> {
    chat(&object(body)?, lim)
}

/// Parses a completions body.
pub fn completion(m: &Map<String, Value>, lim: &Limits) -> Result<CompletionRequest, ApiError> {
    let decoding = check_common(m, lim)?;
    let prompts = prompts(m.get("prompt"), lim)?;
    let max_tokens = max_tokens(m, "max_tokens", COMPLETION_MAX_TOKENS)?;
    let logprobs = match m.get("logprobs") {
        None | Some(Value::Null) => None,
        Some(v) => Some(small_count(v, "logprobs")?),
    };
    let echo = flag(m, "echo")?;
    if echo && logprobs.is_some() && decoding.stream.is_some() {
        return Err(ApiError::bad(
            "stream",
            "the prompt's log-probabilities (echo with logprobs) are not streamed; send stream:              false",
        ));
    }
    let stop = stops(m.get("stop"))?;
    let mut jobs = Vec::with_capacity(prompts.len());
    let mut prompt_texts = Vec::with_capacity(prompts.len());
    for (ids, text) in prompts {
        check_fits(ids.len(), max_tokens, lim, "prompt")?;
        jobs.extend(decoding.jobs(Job {
            prompt: ids,
            max_tokens,
            stop: stop.clone(),
            logprobs,
            echo,
            sampling: decoding.sampling,
        }));
        prompt_texts.push(text);
    }
    Ok(CompletionRequest {
        jobs,
        prompt_texts,
        decoding,
    })
}

/// Parses a chat completions body: the conversation through the model's chat template, with the
/// assistant's turn opened.
pub fn chat(m: &Map<String, Value>, lim: &Limits) -> Result<ChatRequest, ApiError> {
    let decoding = check_common(m, lim)?;
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
    let logprobs = match with_option(m, "logprobs", "top_logprobs")? {
        None => None,
        Some(None) => Some(0),
        Some(Some(v)) => Some(small_count(v, "top_logprobs")?),
    };
    let job = Job {
        prompt,
        max_tokens,
        stop: stops(m.get("stop"))?,
        logprobs,
        echo: false,
        sampling: decoding.sampling,
    };
    Ok(ChatRequest {
        jobs: decoding.jobs(job).collect(),
        decoding,
    })
}

/// The fields both endpoints share: the model's name, sampling, `n` and streaming; what this
/// server does not do (penalties, logit biases, `best_of` beyond `n`) is refused by name.
fn check_common(m: &Map<String, Value>, lim: &Limits) -> Result<Decoding, ApiError> {
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
    for key in ["presence_penalty", "frequency_penalty"] {
        if number(m, key, 0.0, -2.0..=2.0)? != 0.0 {
            return Err(ApiError::bad(
                key,
                format!("{key} is not supported; send 0"),
            ));
        }
    }
    if m.get("logit_bias")
        .is_some_and(|v| !v.is_null() && v != &json!({}))
    {
        return Err(ApiError::bad("logit_bias", "logit_bias is not supported"));
    }
    let n = match m.get("n") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_N as u64).contains(&n) => n as usize,
            _ => {
                return Err(ApiError::bad(
                    "n",
                    format!("n must be 1 to {MAX_N}, got {v}"),
                ))
            }
        },
    };
    if let Some(v) = m.get("best_of").filter(|v| !v.is_null()) {
        if v.as_u64() != Some(n as u64) && v.as_u64() != Some(1) {
            return Err(ApiError::bad(
                "best_of",
                format!("best_of {v} is not supported: choices are not ranked; send n"),
            ));
        }
    }
    let top_k = match m.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(-1 | 0) => None,
            Some(k) if k > 0 => Some(k as usize),
            _ => {
                return Err(ApiError::bad(
                    "top_k",
                    format!("top_k must be a positive integer (0 or -1: off), got {v}"),
                ))
            }
        },
    };
    let top_p = number(m, "top_p", 1.0, 0.0..=1.0)?;
    if top_p == 0.0 {
        return Err(ApiError::bad("top_p", "top_p must be above 0 (1: off)"));
    }
    let seed = match m.get("seed") {
        None | Some(Value::Null) => rand::random(),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_i64().map(|s| s as u64))
            .ok_or_else(|| ApiError::bad("seed", format!("seed must be an integer, got {v}")))?,
    };
    let sampling = Sampling {
        // Greedy unless asked (OpenAI's default is 1): scripted evaluation runs expect the same
        // answer twice.
        temperature: number(m, "temperature", 0.0, 0.0..=2.0)?,
        top_k,
        top_p: (top_p < 1.0).then_some(top_p),
        seed,
    };
    let stream = match with_option(m, "stream", "stream_options")? {
        None => None,
        Some(opts) => Some(StreamOptions {
            include_usage: match opts.and_then(|o| o.get("include_usage")) {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => {
                    return Err(ApiError::bad(
                        "stream_options",
                        format!("stream_options.include_usage must be true or false, got {v}"),
                    ))
                }
            },
        }),
    };
    Ok(Decoding {
        sampling,
        n,
        stream,
    })
}

/// A number field within `range`, `default` when absent or null.
fn number(
    m: &Map<String, Value>,
    key: &str,
    default: f64,
    range: std::ops::RangeInclusive<f64>,
) -> Result<f64, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_f64() {
            Some(x) if range.contains(&x) => Ok(x),
            _ => Err(ApiError::bad(
                key,
                format!(
                    "{key} must be a number from {} to {}, got {v}",
                    range.start(),
                    range.end()
                ),
            )),
        },
    }
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

/// A flag and the field that only goes with it: `None` when the flag is off (the field must then
/// be absent), else the field if given.
fn with_option<'m>(
    m: &'m Map<String, Value>,
    key: &str,
    option: &str,
) -> Result<Option<Option<&'m Value>>, ApiError> {
    let given = m.get(option).filter(|v| !v.is_null());
    match (flag(m, key)?, given) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(ApiError::bad(option, format!("{option} needs {key}: true"))),
        (true, given) => Ok(Some(given)),
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
