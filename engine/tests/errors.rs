//! Bad model files give typed errors that name the file and what is wrong, never a panic.

mod common;

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::DType;
use common::Tiny;
use drllm_engine::{Error, LoadOptions, Model};

#[test]
fn missing_gguf_is_an_io_error_naming_the_file() {
    let err =
        Model::from_gguf("/nonexistent/model.gguf".as_ref(), &LoadOptions::exact()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/model.gguf"));
}

#[test]
fn non_gguf_and_truncated_gguf_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"definitely not a gguf file").unwrap();
    let err = Model::from_gguf(&junk, &LoadOptions::exact()).unwrap_err();
    assert!(matches!(err, Error::Gguf { .. }), "{err}");

    let tiny = Tiny::llama();
    let full = dir.path().join("full.gguf");
    tiny.write_gguf(&full, &tiny.weights(1), GgmlDType::Q8_0);
    let bytes = std::fs::read(&full).unwrap();
    for keep in [bytes.len() / 2, bytes.len() - 10, 100] {
        let cut = dir.path().join(format!("cut{keep}.gguf"));
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        let err = Model::from_gguf(&cut, &LoadOptions::exact()).unwrap_err();
        assert!(matches!(err, Error::Gguf { .. }), "cut at {keep}: {err}");
        assert!(
            err.to_string().contains(&format!("cut{keep}.gguf")),
            "{err}"
        );
    }
}

#[test]
fn unknown_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt2.gguf");
    let arch = gguf_file::Value::String("gpt2".into());
    gguf_file::write(
        &mut std::fs::File::create(&path).unwrap(),
        &[("general.architecture", &arch)],
        &[],
    )
    .unwrap();
    let err = Model::from_gguf(&path, &LoadOptions::exact()).unwrap_err();
    assert!(
        matches!(err, Error::UnknownArchitecture(ref a) if a == "gpt2"),
        "{err}"
    );

    let tiny = Tiny::llama();
    let hf = dir.path().join("bert");
    tiny.write_hf(&hf, &tiny.weights(2), DType::F32, 1);
    let mut cfg = tiny.config_json();
    cfg["model_type"] = "bert".into();
    std::fs::write(hf.join("config.json"), cfg.to_string()).unwrap();
    let err = Model::from_hf_dir(&hf, &LoadOptions::exact()).unwrap_err();
    assert!(
        matches!(err, Error::UnknownArchitecture(ref a) if a == "bert"),
        "{err}"
    );
}

#[test]
fn config_that_does_not_match_the_weights_is_rejected() {
    let tiny = Tiny::llama();
    let dir = tempfile::tempdir().unwrap();
    tiny.write_hf(dir.path(), &tiny.weights(3), DType::F32, 1);
    let mut cfg = tiny.config_json();
    cfg["intermediate_size"] = 100.into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = Model::from_hf_dir(dir.path(), &LoadOptions::exact()).unwrap_err();
    match &err {
        Error::ShapeMismatch {
            tensor,
            expected,
            actual,
            ..
        } => {
            assert!(tensor.contains("mlp"), "{err}");
            assert_ne!(expected, actual);
        }
        _ => panic!("expected a shape mismatch, got {err}"),
    }
    // More layers in the config than in the file: a missing tensor, named.
    let mut cfg = tiny.config_json();
    cfg["num_hidden_layers"] = 5.into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = Model::from_hf_dir(dir.path(), &LoadOptions::exact()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { tensor, .. } if tensor.starts_with("model.layers.4.")),
        "{err}"
    );
    // Heads that do not divide: a config error before any tensor is read.
    let mut cfg = tiny.config_json();
    cfg["num_key_value_heads"] = 3.into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = Model::from_hf_dir(dir.path(), &LoadOptions::exact()).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    // Malformed JSON.
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    let err = Model::from_hf_dir(dir.path(), &LoadOptions::exact()).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

#[test]
fn missing_default_model_says_how_to_fetch_it() {
    let dir = tempfile::tempdir().unwrap();
    // Point the cache at an empty folder for this process.
    std::env::set_var("DRLLM_CACHE", dir.path());
    let err = drllm_engine::resolve(drllm_engine::DEFAULT_MODEL).unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }));
    assert!(err.to_string().contains("scripts/fetch-model.sh"), "{err}");
    let err = drllm_engine::resolve("no/such/local/thing/at/all").unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }), "{err}");
}

#[test]
fn unreachable_or_unknown_hub_ids_give_a_hub_error_naming_the_repo() {
    // Offline this fails at the connection, online with "not found": a typed error either way.
    let repo = "drllm-tests/no-such-model-8f3a2c";
    let err = drllm_engine::resolve(repo).unwrap_err();
    assert!(matches!(err, Error::Hub { .. }), "{err}");
    assert!(err.to_string().contains(repo), "{err}");
}
