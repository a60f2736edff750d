//! Hugging Face `config.json` → [`ModelConfig`], in both forms transformers writes: the classic one
//! (top-level `rope_theta`, `rope_scaling`) and transformers 5's (`rope_parameters` holding θ, the
//! RoPE type and its settings). Everything a config can say that changes the numerics is either
//! read or refused by name: an unknown RoPE type or key, a sliding window, another activation, a
//! partial rotary factor, MLP biases. A model never runs with a silently guessed setting.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{Arch, Llama3RopeScaling, ModelConfig};
use crate::error::{Error, Result};

/// θ when a config names none (transformers' own default for every supported family).
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// The RoPE settings of a config, whichever form it was written in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RopeSettings {
    pub(crate) theta: f32,
    pub(crate) scaling: Option<Llama3RopeScaling>,
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json` (classic or transformers-5 form).
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |reason: String| Error::Config {
            path: path.to_path_buf(),
            reason,
        };
        let json: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let raw: HfConfig = serde_json::from_value(json.clone()).map_err(|e| bad(e.to_string()))?;
        let arch = Arch::parse(&raw.model_type)?;
        refuse_unsupported(&json).map_err(bad)?;
        let rope = rope_settings(&json).map_err(bad)?;
        let eos_token_ids = match raw.eos_token_id {
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
            None => Vec::new(),
        };
        let cfg = Self {
            arch,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1)),
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: rope.theta,
            rope_scaling: rope.scaling,
            rope_interleaved: false,
            max_position_embeddings: raw.max_position_embeddings,
            // transformers' default for Llama, Qwen2 and Qwen3 alike.
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias: match arch {
                Arch::Qwen2 => true,
                _ => raw.attention_bias.unwrap_or(false),
            },
            qk_norm: arch == Arch::Qwen3,
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
        };
        cfg.check(path)?;
        Ok(cfg)
    }
}

/// Settings the engine does not implement, refused with the key and value that asked for them.
fn refuse_unsupported(json: &Value) -> std::result::Result<(), String> {
    let get = |k: &str| json.get(k).filter(|v| !v.is_null());
    if let Some(act) = get("hidden_act").or_else(|| get("hidden_activation")) {
        if act.as_str() != Some("silu") {
            return Err(format!(
                "hidden_act {act} is not supported (drllm runs SwiGLU with silu)"
            ));
        }
    }
    if get("mlp_bias").and_then(Value::as_bool) == Some(true) {
        return Err("mlp_bias true is not supported (no MLP biases in drllm's decoder)".into());
    }
    if get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return Err(
            "use_sliding_window true is not supported (drllm attends to every position)".into(),
        );
    }
    if let Some(types) = get("layer_types").and_then(Value::as_array) {
        if let Some(t) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
            return Err(format!(
                "layer_types holds {t}; only full_attention layers are supported"
            ));
        }
    }
    if let Some(f) = get("partial_rotary_factor").and_then(Value::as_f64) {
        if f != 1.0 {
            return Err(format!(
                "partial_rotary_factor {f} is not supported (only 1.0)"
            ));
        }
    }
    Ok(())
}

/// θ and the scaling from `rope_parameters` (transformers 5) or top-level `rope_theta` /
/// `rope_scaling` (classic). Both forms at once must agree.
pub(crate) fn rope_settings(json: &Value) -> std::result::Result<RopeSettings, String> {
    let get = |k: &str| json.get(k).filter(|v| !v.is_null());
    let top_theta = get("rope_theta")
        .map(|v| v.as_f64().ok_or(format!("rope_theta {v} is not a number")))
        .transpose()?;
    let classic = match get("rope_scaling") {
        Some(Value::Object(m)) => Some(parse_rope_map("rope_scaling", m, top_theta)?),
        Some(other) => return Err(format!("rope_scaling {other} is not an object")),
        None => None,
    };
    let v5 = match get("rope_parameters") {
        Some(Value::Object(m)) => Some(parse_rope_map("rope_parameters", m, top_theta)?),
        Some(other) => return Err(format!("rope_parameters {other} is not an object")),
        None => None,
    };
    match (classic, v5) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "rope_scaling ({a:?}) and rope_parameters ({b:?}) disagree; keep one of them"
        )),
        (_, Some(s)) | (Some(s), None) => Ok(s),
        (None, None) => Ok(RopeSettings {
            theta: top_theta.unwrap_or(DEFAULT_ROPE_THETA) as f32,
            scaling: None,
        }),
    }
}

/// One RoPE object (`rope_scaling` or `rope_parameters`): its type, θ and the type's settings.
/// A type or key the engine does not implement is refused by name.
fn parse_rope_map(
    field: &str,
    m: &Map<String, Value>,
    top_theta: Option<f64>,
) -> std::result::Result<RopeSettings, String> {
    let kind = m
        .get("rope_type")
        .or_else(|| m.get("type"))
        .map(|t| {
            t.as_str()
                .ok_or(format!("{field}.rope_type {t} is not a string"))
        })
        .transpose()?
        .unwrap_or("default");
    let theta = match m.get("rope_theta") {
        Some(v) => {
            let t = v
                .as_f64()
                .ok_or(format!("{field}.rope_theta {v} is not a number"))?;
            if top_theta.is_some_and(|top| top != t) {
                return Err(format!(
                    "{field}.rope_theta {t} and rope_theta {} disagree",
                    top_theta.unwrap_or_default()
                ));
            }
            t
        }
        None => top_theta.unwrap_or(DEFAULT_ROPE_THETA),
    } as f32;
    const COMMON: &[&str] = &["rope_type", "type", "rope_theta"];
    const LLAMA3: &[&str] = &[
        "factor",
        "low_freq_factor",
        "high_freq_factor",
        "original_max_position_embeddings",
    ];
    let allowed: Vec<&str> = match kind {
        "default" => COMMON.to_vec(),
        "llama3" => COMMON.iter().chain(LLAMA3).copied().collect(),
        other => {
            return Err(format!(
                "{field}: RoPE type `{other}` is not supported (supported: default, llama3)"
            ))
        }
    };
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "{field}: key `{k}` is not supported for RoPE type `{kind}` (known: {})",
            allowed.join(", ")
        ));
    }
    let scaling = match kind {
        "llama3" => Some(
            serde_json::from_value::<Llama3RopeScaling>(Value::Object(m.clone()))
                .map_err(|e| format!("{field}: {e}"))?,
        ),
        _ => None,
    };
    Ok(RopeSettings { theta, scaling })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama3() -> Value {
        json!({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    }

    #[test]
    fn both_forms_give_the_same_settings() {
        let mut v5 = llama3();
        v5["rope_theta"] = json!(500000.0);
        let a = rope_settings(&json!({ "rope_parameters": v5 })).unwrap();
        let b = rope_settings(&json!({"rope_theta": 500000.0, "rope_scaling": llama3()})).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.theta, 500000.0);
        assert_eq!(a.scaling.unwrap().factor, 32.0);
        let plain =
            rope_settings(&json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}))
                .unwrap();
        assert_eq!((plain.theta, plain.scaling), (1e6, None));
    }

    #[test]
    fn unknown_types_and_keys_are_refused_by_name() {
        let e = rope_settings(&json!({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}))
            .unwrap_err();
        assert!(e.contains("`yarn`"), "{e}");
        let e = rope_settings(
            &json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mscale": 1.0}}),
        )
        .unwrap_err();
        assert!(e.contains("`mscale`"), "{e}");
        let e = rope_settings(&json!({"rope_theta": 1e4, "rope_parameters": {"rope_theta": 5e5}}))
            .unwrap_err();
        assert!(e.contains("disagree"), "{e}");
        let e = refuse_unsupported(&json!({"use_sliding_window": true})).unwrap_err();
        assert!(e.contains("use_sliding_window"), "{e}");
        let e = refuse_unsupported(&json!({"hidden_act": "gelu"})).unwrap_err();
        assert!(e.contains("gelu"), "{e}");
        refuse_unsupported(&json!({"hidden_act": "silu", "use_sliding_window": false,
            "layer_types": ["full_attention"], "mlp_bias": false}))
        .unwrap();
    }
}
