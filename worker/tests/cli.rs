//! `worker logits` and `worker parity` as a user runs them: the real binary on the default model,
//! JSON on stdout, and errors on stderr with a non-zero exit.

use std::process::Command;

use serde_json::Value;

const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../engine/tests/data/smollm2_135m_q4_1.json"
);

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(REFERENCE).unwrap()).unwrap()
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
    if drllm_engine::testing::default_model_for_tests().is_none() {
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
    if drllm_engine::testing::default_model_for_tests().is_none() {
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

#[test]
fn parity_passes_on_the_reference_and_fails_on_a_tampered_one() {
    if drllm_engine::testing::default_model_for_tests().is_none() {
        return;
    }
    let out = worker(&[
        "parity",
        "--exact",
        "--device",
        "cpu",
        "--reference",
        REFERENCE,
    ]);
    let v = ok_json(out);
    let paths: usize = reference()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["paths"].as_array().unwrap().len())
        .sum();
    assert_eq!(v["paths"], paths);
    assert_eq!(
        (v["failed"].as_u64(), v["device"].as_str()),
        (Some(0), Some("cpu"))
    );
    assert!(v["max_logit_diff"].as_f64().unwrap() < 0.02, "{v}");

    // One greedy token changed in the reference: exactly that path fails, exit status 1.
    let mut r = reference();
    let first = r[0]["paths"][0]["exact_greedy8"][0].as_u64().unwrap();
    r[0]["paths"][0]["exact_greedy8"][0] = (first + 1).into();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ref.json");
    std::fs::write(&f, r.to_string()).unwrap();
    let out = worker(&["parity", "--exact", "--reference", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["failed"], 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("FAILED").count(), 1, "{err}");

    // Not a reference file, and a device this build does not have: clear errors.
    let out = worker(&["parity", "--reference", "/etc/hostname"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a reference file"));
    if !drllm_engine::device::CUDA_BUILT {
        let out = worker(&["parity", "--device", "cuda:1", "--reference", REFERENCE]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("built without CUDA"), "{err}");
    }
}
