//! `worker logits` as a user runs it: the real binary on the default model, JSON on stdout, and
//! errors on stderr with a non-zero exit.

use std::process::Command;

use serde_json::Value;

fn reference() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../core/tests/data/smollm2_135m_q4_1.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn prompt(name: &str) -> Value {
    reference()
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
        .clone()
}

fn worker(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(args)
        .output()
        .unwrap()
}

fn ok_json(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "worker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn logits_with_chat_template_matches_reference() {
    if drllm_core::loader::default_model_for_tests().is_none() {
        return;
    }
    let capital = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/capital.txt");
    let out = ok_json(worker(&[
        "logits",
        "--prompt-file",
        capital,
        "--chat",
        "--greedy",
        "8",
        "--exact",
        "--top",
        "5",
    ]));
    let r = prompt("chat_capital");
    assert_eq!(out["ids"], r["ids"]);
    let default = &r["paths"][0];
    assert_eq!(out["greedy"], default["exact_greedy8"]);
    assert_eq!(out["top"][0][0], default["exact_top10"][0][0]);
    assert_eq!(out["top"].as_array().unwrap().len(), 5);
    assert_eq!(out["greedy_text"], "The capital of France is Paris.");
}

#[test]
fn logits_under_a_skip_path_matches_reference() {
    if drllm_core::loader::default_model_for_tests().is_none() {
        return;
    }
    let r = prompt("arc_loglik_context");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("prompt.txt");
    std::fs::write(&f, r["text"].as_str().unwrap()).unwrap();
    let skip = &r["paths"][1];
    let path: Vec<String> = skip["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let out = ok_json(worker(&[
        "logits",
        "--prompt-file",
        f.to_str().unwrap(),
        "--path",
        &path.join(","),
        "--exact",
    ]));
    assert_eq!(out["ids"], r["ids"]);
    assert_eq!(out["top"][0][0], skip["exact_top10"][0][0]);
    assert_eq!(out["path"].as_array().unwrap().len(), 27);
}

#[test]
fn bad_input_fails_with_a_message_that_says_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.txt");
    std::fs::write(&f, "hello").unwrap();
    // Missing default model: says the fetch command.
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["logits", "--prompt-file", f.to_str().unwrap()])
        .env("DRLLM_CACHE", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scripts/fetch-model.sh"), "{err}");
    // A path that repeats a layer three times is refused before loading anything.
    let out = worker(&[
        "logits",
        "--prompt-file",
        f.to_str().unwrap(),
        "--path",
        "0,0,0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than twice"), "{err}");
    // A prompt file that does not exist is named.
    let out = worker(&["logits", "--prompt-file", "/no/such/prompt.txt"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/prompt.txt"));
}
