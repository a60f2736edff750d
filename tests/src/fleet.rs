//! Real worker processes and the network between them and a coordinator: starting a worker on
//! the default model, waiting for the coordinator's status to show something, and a loopback TCP
//! proxy that can go silent (stop forwarding, connections left open, as a partition or a dead
//! switch looks from both ends) and come back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drllm_proto::client::Client;
use drllm_proto::v1::{StatusReply, StatusRequest};

use crate::bin;

/// `worker run --coordinator url --worker-id id` on the default model, logging to `log`.
pub fn worker(url: &str, id: &str, log: &Path) -> Child {
    worker_with(url, id, log, &[])
}

/// [`worker`] with `extra` arguments.
pub fn worker_with(url: &str, id: &str, log: &Path, extra: &[&str]) -> Child {
    Command::new(bin("worker"))
        .args(["run", "--coordinator", url, "--worker-id", id])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Polls the coordinator's status until `f` holds (panics after 240 s, naming `what`).
pub async fn wait_for(c: &mut Client, what: &str, f: impl Fn(&StatusReply) -> bool) {
    let t = Instant::now();
    loop {
        let s = c.status(StatusRequest {}).await.unwrap().into_inner();
        if f(&s) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(240),
            "timed out waiting for {what}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP proxy on 127.0.0.1 in front of `target`. While cut, it reads nothing more from either
/// side and forwards nothing (what was read waits), so calls through it hang rather than fail,
/// as across a partition; [`Proxy::resume`] lets everything through again.
pub struct Proxy {
    /// `http://127.0.0.1:port` of the proxy.
    pub url: String,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue; // the coordinator is gone: the client sees a closed connection
                };
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    c.clone(),
                );
                pump(server, client, c.clone());
            }
        });
        Self { url, cut }
    }

    /// Stops forwarding.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Forwards again, starting with what waited.
    pub fn resume(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread, holding each read while the proxy is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            while cut.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            while cut.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}
