//! What the `evaluator serve` test suites share: the server as a real process on loopback.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drllm_tests::http_post;
use serde_json::Value;

/// A running `evaluator serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_evaluator"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the server printed no address within 120 s");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Self { child, addr }
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (code, text) = http_post(&self.addr, path, &body.to_string());
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (code, v)
    }

    #[allow(dead_code)] // not every suite completes
    pub fn complete(&self, body: Value) -> Value {
        let (code, v) = self.post("/v1/completions", &body);
        assert_eq!(code, 200, "{v}");
        v
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
