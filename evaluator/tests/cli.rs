//! `evaluator` as a user scripts it: JSON on stdout, errors with file:line on stderr, exit codes.

use std::process::{Command, Output};

use serde_json::Value;

fn evaluator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evaluator"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn grade_adds_boxed_and_correct_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines = [
        r#"{"pred": "so the answer is \\boxed{\\frac{1}{2}}.", "gold": "\\frac12", "kind": "math"}"#,
        r#"{"pred": "no box here", "gold": "3", "kind": "math"}"#,
        r#"{"pred": "Answer: B", "gold": "B", "kind": "letter"}"#,
        r#"{"pred": "A. water", "gold": "A", "kind": "letter"}"#,
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = evaluator(&["grade", "--input", input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["boxed"], "\\frac{1}{2}");
    assert_eq!(rows[0]["correct"], true);
    assert_eq!(rows[1]["boxed"], Value::Null);
    assert_eq!(rows[1]["correct"], false);
    assert_eq!(
        (rows[2]["boxed"].as_str(), rows[2]["correct"].as_bool()),
        (Some("B"), Some(true))
    );
    assert_eq!(rows[3]["correct"], false);
    assert_eq!(
        rows[0]["pred"], "so the answer is \\boxed{\\frac{1}{2}}.",
        "input fields kept"
    );

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!("{}\n{{\"pred\": \"x\", \"kind\": \"math\"}}\n", lines[0]),
    )
    .unwrap();
    let out = evaluator(&["grade", "--input", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bad.jsonl:2") && err.contains("gold"), "{err}");
    let out = evaluator(&["grade", "--input", bad.to_str().unwrap(), "--skip-invalid"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("1 skipped"));
}

#[test]
fn baseline_prints_a_json_summary() {
    if drllm_engine::testing::default_model_for_tests().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("r.jsonl");
    let out = evaluator(&[
        "baseline",
        "--dataset",
        "arc_easy",
        "--split",
        "test",
        "--limit",
        "3",
        "--records",
        rec.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["examples"], 3);
    assert_eq!(s["reward"], "choice-loglik");
    let acc = s["acc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    let records = std::fs::read_to_string(&rec).unwrap();
    assert_eq!(records.lines().count(), 3);
    let first: Value = serde_json::from_str(records.lines().next().unwrap()).unwrap();
    assert_eq!(first["choice_logprobs"].as_array().unwrap().len(), 4);

    // choice-loglik on open math problems is refused with the reason.
    let out = evaluator(&[
        "baseline",
        "--dataset",
        "dart-1",
        "--split",
        "validation",
        "--limit",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("multiple-choice"), "{}", stderr(&out));
    // Unknown datasets are refused before the model loads.
    let out = evaluator(&["baseline", "--dataset", "squad"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown dataset"), "{}", stderr(&out));
}
