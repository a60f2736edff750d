//! `worker search --out` writes Parquet that pyarrow reads with the documented schema and values
//! (checked by scripts/check_records.py). pyarrow is installed by .ci/run; without it the test
//! fails under CI and skips loudly elsewhere.

use std::process::Command;

fn pyarrow_available() -> bool {
    drllm_tests::python_has("pyarrow", "pyarrow")
}

#[test]
fn search_records_read_back_with_pyarrow() {
    if drllm_engine::testing::default_model_for_tests().is_none() || !pyarrow_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args([
            "search",
            "--dataset",
            "arc_easy",
            "--split",
            "train",
            "--limit",
            "3",
            "--num-simulations",
            "4",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = summary["parquet"].as_str().unwrap();
    assert!(std::path::Path::new(file).starts_with(dir.path()));
    // Nothing but the finished file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/check_records.py");
    let check = Command::new("python3")
        .args([
            script,
            file,
            "--expect-rows",
            "3",
            "--expect-simulations",
            "4",
        ])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
