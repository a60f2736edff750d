//! Text ↔ token ids, and the chat template. A Hugging Face folder brings its `tokenizer.json`; a
//! GGUF file brings its vocabulary in metadata, from which we build the equivalent
//! `tokenizer.json` (byte-level BPE with the pre-tokenizer the file names) and load it with the
//! `tokenizers` crate, so both paths run the same, well-tested tokenizer code.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde_json::{json, Value as Json};

use crate::chat::ChatTemplate;
use crate::config::value_as_u64;
use crate::error::{Error, Result};

/// A model's tokenizer (the `tokenizers` crate's, from `tokenizer.json` or built from GGUF
/// metadata) and its chat template, if any.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// Longest token, in bytes of text: an upper bound on the characters one token can add.
    max_token_chars: std::sync::OnceLock<usize>,
    chat: Option<ChatTemplate>,
    /// Prepend this id when encoding with special tokens (GGUF `add_bos_token`).
    bos_prefix: Option<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("chat_template", &self.chat.is_some())
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (and the chat template of `tokenizer_config.json`, if any).
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let chat = if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
            let cfg: Json = serde_json::from_str(&text).map_err(|e| Error::Config {
                path: cfg_path.clone(),
                reason: e.to_string(),
            })?;
            let token = |k: &str| -> Option<String> {
                match cfg.get(k)? {
                    Json::String(s) => Some(s.clone()),
                    Json::Object(o) => o.get("content")?.as_str().map(str::to_string),
                    _ => None,
                }
            };
            match cfg.get("chat_template").and_then(|t| t.as_str()) {
                Some(t) => Some(ChatTemplate::new(
                    t,
                    token("bos_token").unwrap_or_default(),
                    token("eos_token").unwrap_or_default(),
                )?),
                None => None,
            }
        } else {
            None
        };
        Ok(Self {
            inner,
            max_token_chars: Default::default(),
            chat,
            bos_prefix: None,
        })
    }

    /// Builds the tokenizer a GGUF file describes in its `tokenizer.*` metadata.
    pub fn from_gguf_metadata(md: &HashMap<String, Value>) -> Result<Self> {
        let err = |m: String| Error::Tokenizer(format!("GGUF metadata: {m}"));
        let model = md
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .ok_or_else(|| err("`tokenizer.ggml.model` is missing".into()))?;
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer model `{model}` is not supported (drllm builds byte-level BPE, `gpt2`)"
            )));
        }
        let strings = |k: &str| -> Result<Vec<String>> {
            let arr = md
                .get(k)
                .ok_or_else(|| err(format!("`{k}` is missing")))?
                .to_vec()
                .map_err(|_| err(format!("`{k}` is not an array")))?;
            arr.iter()
                .map(|v| {
                    v.to_string()
                        .cloned()
                        .map_err(|_| err(format!("`{k}` holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|_| err("`tokenizer.ggml.token_type` is not an array".into()))?
                .iter()
                .map(|t| value_as_u64(t).unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let pre = md
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or("default");
        let json = tokenizer_json(&tokens, &types, &merges, pre)?;
        let inner: tokenizers::Tokenizer = serde_json::from_value(json)
            .map_err(|e| err(format!("cannot build the BPE tokenizer: {e}")))?;

        let id = |k: &str| md.get(k).and_then(value_as_u64).map(|v| v as u32);
        let name = |id: Option<u32>| {
            id.and_then(|i| tokens.get(i as usize).cloned())
                .unwrap_or_default()
        };
        let bos = id("tokenizer.ggml.bos_token_id");
        let add_bos = md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let chat = match md
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
        {
            Some(t) => Some(ChatTemplate::new(
                t,
                name(bos),
                name(id("tokenizer.ggml.eos_token_id")),
            )?),
            None => None,
        };
        Ok(Self {
            inner,
            max_token_chars: Default::default(),
            chat,
            bos_prefix: if add_bos { bos } else { None },
        })
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` (chat template, BOS/EOS) into `dir`:
    /// a GGUF's tokenizer for Hugging Face tools (`AutoTokenizer.from_pretrained(dir)`, lm-eval),
    /// loadable again with [`Self::from_hf_dir`]. A model that prepends BOS gets a post-processor
    /// that does so, so that those tools encode exactly as [`Self::encode`] does.
    pub fn save_hf_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
        let mut tok: Json = serde_json::to_value(&self.inner)
            .map_err(|e| Error::Tokenizer(format!("serializing tokenizer.json: {e}")))?;
        if let Some(bos) = self.bos_prefix {
            let text = self.inner.id_to_token(bos).unwrap_or_default();
            tok["post_processor"] = json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": text, "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": text, "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {text.clone(): {"id": text, "ids": [bos], "tokens": [text]}},
            });
        }
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, tok.to_string()).map_err(|e| Error::write(&path, e))?;
        let mut cfg = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": self.bos_prefix.is_some(),
        });
        if let Some(chat) = &self.chat {
            let (bos, eos) = chat.special_tokens();
            cfg["chat_template"] = json!(chat.source());
            cfg["bos_token"] = json!(bos);
            cfg["eos_token"] = json!(eos);
        }
        let path = dir.join("tokenizer_config.json");
        std::fs::write(&path, cfg.to_string()).map_err(|e| Error::write(&path, e))
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) are always parsed;
    /// `add_special` adds what the model adds around a sequence (BOS for most GGUF llamas).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if let (true, Some(bos)) = (add_special, self.bos_prefix) {
            ids.push(bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// An upper bound on the characters one generated token can add to decoded text (the longest
    /// token's byte length; byte-level BPE tokens decode to at most one character per byte).
    pub fn max_token_chars(&self) -> usize {
        *self.max_token_chars.get_or_init(|| {
            self.inner
                .get_vocab(true)
                .keys()
                .map(|t| t.chars().count().max(t.len()))
                .max()
                .unwrap_or(1)
        })
    }

    /// Number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The chat template; `None` for models without one (base models).
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// The text an instruct model sees for one user message: the chat template applied with the
    /// generation prompt opened.
    pub fn apply_chat(&self, user: &str) -> Result<String> {
        let chat = self.chat.as_ref().ok_or_else(|| {
            Error::ChatTemplate("the model has no chat template (is it a base model?)".into())
        })?;
        chat.render(&[("user", user)], true)
    }
}

/// Regexes of the pre-tokenizers llama.cpp names in `tokenizer.ggml.pre`.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Json {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split(regex: &str) -> Json {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

/// The `pre_tokenizer` of tokenizer.json equivalent to a GGUF `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Result<Json> {
    let seq = |items: Vec<Json>| json!({"type": "Sequence", "pretokenizers": items});
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        // GPT-2 regex with every digit split off first (SmolLM, StarCoder).
        "smollm" | "starcoder" | "refact" => seq(vec![
            json!({"type": "Digits", "individual_digits": true}),
            byte_level(true),
        ]),
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" => {
            seq(vec![split(LLAMA3_REGEX), byte_level(false)])
        }
        "qwen2" | "deepseek-r1-qwen" => seq(vec![split(QWEN2_REGEX), byte_level(false)]),
        other => {
            return Err(Error::Tokenizer(format!(
                "GGUF pre-tokenizer `{other}` is not supported (supported: gpt2, smollm, starcoder, llama-bpe, qwen2)"
            )))
        }
    })
}

/// A tokenizer.json document for a byte-level BPE vocabulary.
fn tokenizer_json(tokens: &[String], types: &[u64], merges: &[String], pre: &str) -> Result<Json> {
    // GGUF token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    let added: Vec<Json> = tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, &t))| t == 3 || t == 4)
        .map(|(id, (content, _))| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let vocab: serde_json::Map<String, Json> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        // Qwen2's tokenizer.json normalizes to NFC; the others do not normalize.
        "normalizer": if pre.starts_with("qwen2") { json!({"type": "NFC"}) } else { Json::Null },
        "pre_tokenizer": pre_tokenizer(pre)?,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary whose merges reveal where the pre-tokenizer cut "12345".
    fn metadata(pre: &str) -> HashMap<String, Value> {
        let strs =
            |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
        let mut md = HashMap::new();
        md.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
        md.insert("tokenizer.ggml.pre".into(), Value::String(pre.into()));
        md.insert(
            "tokenizer.ggml.tokens".into(),
            strs(&["1", "2", "3", "4", "5", "12", "123", "45", "<|end|>"]),
        );
        md.insert(
            "tokenizer.ggml.merges".into(),
            strs(&["1 2", "12 3", "4 5"]),
        );
        md.insert(
            "tokenizer.ggml.token_type".into(),
            Value::Array(
                [1, 1, 1, 1, 1, 1, 1, 1, 3]
                    .into_iter()
                    .map(Value::I32)
                    .collect(),
            ),
        );
        md
    }

    #[test]
    fn gguf_pre_tokenizer_names_select_the_right_splits() {
        for (pre, ids) in [
            ("smollm", vec![0, 1, 2, 3, 4]), // every digit alone
            ("qwen2", vec![0, 1, 2, 3, 4]),  // \p{N}: one digit per piece
            ("llama-bpe", vec![6, 7]),       // \p{N}{1,3}: "123" "45"
            ("gpt2", vec![6, 7]),            // digits stay together, merges decide
        ] {
            let t = TextTokenizer::from_gguf_metadata(&metadata(pre)).unwrap();
            assert_eq!(
                t.encode("12345", false).unwrap(),
                ids,
                "pre-tokenizer {pre}"
            );
            // Control tokens are parsed out of the text.
            assert_eq!(
                t.encode("1<|end|>", false).unwrap(),
                vec![0, 8],
                "pre-tokenizer {pre}"
            );
        }
        let err = TextTokenizer::from_gguf_metadata(&metadata("no-such-pre")).unwrap_err();
        assert!(err.to_string().contains("no-such-pre"), "{err}");
    }

    #[test]
    fn non_bpe_gguf_tokenizers_are_refused_by_name() {
        let mut md = metadata("gpt2");
        md.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
        let err = TextTokenizer::from_gguf_metadata(&md).unwrap_err();
        assert!(err.to_string().contains("`llama`"), "{err}");
    }
}
