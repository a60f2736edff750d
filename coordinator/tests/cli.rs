//! The coordinator's command line: help names every option a user needs, and `status` against
//! nothing listening says which address it could not reach.

use std::process::Command;

fn coordinator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coordinator"))
}

#[test]
fn help_lists_the_serve_and_status_options() {
    let out = coordinator().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--job",
        "--state",
        "--listen",
        "--token-file",
        "--tls-cert",
        "--exit-when-done",
        "--done-grace-secs",
    ] {
        assert!(help.contains(opt), "serve --help lacks {opt}:\n{help}");
    }
    let out = coordinator().args(["status", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--coordinator"));
}

#[test]
fn status_without_a_coordinator_names_the_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = coordinator()
        .args(["status", "--coordinator", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&url), "{err}");
}

/// A dataset line the loader refuses is a dataset error: it names the file, the line and the
/// field, and says that the state directory is fine (not that it is corrupt). Fixed, the same
/// state directory starts the job.
#[test]
fn a_bad_dataset_line_is_a_dataset_error_not_a_corrupt_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("qs.jsonl");
    let good = r#"{"id": "q1", "question": "Which?", "choices": ["a", "b"], "answer": "B"}"#;
    let blank = r#"{"id": "q2", "question": "  ", "choices": ["a", "b"], "answer": "A"}"#;
    std::fs::write(&data, format!("{good}\n{blank}\n")).unwrap();
    let job = dir.path().join("job.toml");
    let toml = format!(
        "output_dir = {:?}\n[[datasets]]\nname = {:?}\n",
        dir.path().join("out").display().to_string(),
        data.display().to_string()
    );
    std::fs::write(&job, toml).unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("serve.log");
    let serve = || {
        coordinator()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--job")
            .arg(&job)
            .arg("--state")
            .arg(&state)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap()
    };
    let out = serve().wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("qs.jsonl:2"), "names file and line: {err}");
    assert!(err.contains("question"), "names the field: {err}");
    assert!(
        !err.contains("corrupt"),
        "a dataset error, not a damaged state: {err}"
    );
    assert!(err.contains("the state directory is fine"), "{err}");
    std::fs::write(&data, format!("{good}\n")).unwrap();
    let mut child = serve();
    let t = std::time::Instant::now();
    let started = loop {
        let err = std::fs::read_to_string(&log).unwrap();
        if err.contains("serving") || t.elapsed() > std::time::Duration::from_secs(30) {
            break err;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the fixed job did not start: {status:?}\n{err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        started.contains("serving"),
        "the same state directory starts the job: {started}"
    );
}
