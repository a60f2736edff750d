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
