//! `evaluator serve` batches the requests in flight (continuous batching): 16 concurrent clients
//! get exactly the answers each gets alone (greedy and seeded sampling, completions with echoed
//! log-probabilities, chat), in fewer batch steps than one at a time, under the static model,
//! per-input routers (each prompt its own path) and token routers (each token its own layers).

use serde_json::{json, Value};

mod common;
use common::Server;

/// The counter `name`'s value in a `/metrics` body (0 before its first increment).
fn counter(metrics: &str, name: &str) -> f64 {
    (metrics.lines())
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Request `i` of the mix: generation of varied lengths, a log-likelihood echo, chat.
fn request(i: usize) -> (&'static str, Value) {
    let topics = [
        "the sea", "a robot", "winter", "bread", "a violin", "Mars", "tea", "rain",
    ];
    let topic = topics[i % topics.len()];
    match i % 4 {
        0 => (
            "/v1/completions",
            json!({"prompt": format!("A short poem about {topic}:"), "max_tokens": 6 + i,
                "logprobs": 2}),
        ),
        1 => (
            "/v1/completions",
            json!({"prompt": format!("Question: What is {topic}?\nAnswer: It is"),
                "max_tokens": 0, "echo": true, "logprobs": 1}),
        ),
        2 => (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": format!("Tell me about {topic}.")}],
                "max_tokens": 12, "logprobs": true, "top_logprobs": 2}),
        ),
        _ => (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": format!("Describe {topic}.")}],
                "max_tokens": 10, "temperature": 0.9, "seed": i, "n": 2}),
        ),
    }
}

fn without_ids(mut v: Value) -> Value {
    v["id"] = Value::Null;
    v["created"] = Value::Null;
    v
}

/// Asserts that `n` concurrent clients of `srv` get, byte for byte, what each gets alone, in
/// fewer than half the batch steps; returns the answers.
fn concurrent_equals_alone(srv: &Server, n: usize) -> Vec<Value> {
    let steps = || {
        counter(
            &drllm_tests::http_get(&srv.addr, "/metrics").1,
            "drllm_serve_batch_steps_total",
        )
    };
    let post = |i: usize| {
        let (path, body) = request(i);
        let (code, v) = srv.post(path, &body);
        assert_eq!(code, 200, "{body}: {v}");
        without_ids(v)
    };
    let before = steps();
    let alone: Vec<Value> = (0..n).map(post).collect();
    let alone_steps = steps() - before;
    let together: Vec<Value> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..n).map(|i| scope.spawn(move || post(i))).collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let concurrent_steps = steps() - before - alone_steps;
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, b, "request {i}: {:?}", request(i));
    }
    assert!(
        concurrent_steps < alone_steps / 2.0,
        "{concurrent_steps} batch steps for {n} concurrent requests, {alone_steps} one at a time"
    );
    alone
}

#[test]
fn sixteen_concurrent_clients_get_what_each_gets_alone() {
    if drllm_engine::testing::default_model_for_tests().is_none() {
        return;
    }
    // No prefix cache: a hit would change which rows are computed, not what they are.
    concurrent_equals_alone(&Server::start(&["--prefix-cache-mib", "0"]), 16);
}

#[test]
fn per_input_routers_batch_each_prompt_on_its_own_path() {
    use drllm_core::router::{RouterConfig, Routers};
    let Some(lm) = drllm_engine::testing::load_default_model_for_tests(&Default::default()) else {
        return;
    };
    let (l, d) = (lm.model.num_layers(), lm.model.config().hidden_size);
    let dir = tempfile::tempdir().unwrap();
    // Untrained routers: decisions that differ from prompt to prompt.
    RouterConfig::new("default", &lm.fingerprint, l, d, 8, drllm_tests::training())
        .save(dir.path(), &Routers::init(l, d, 7).unwrap())
        .unwrap();
    let ckpt = dir.path().to_str().unwrap();
    let srv = Server::start(&["--routers", ckpt, "--budget", "-0.5"]);
    let answers = concurrent_equals_alone(&srv, 16);
    let paths: std::collections::BTreeSet<String> = (answers.iter())
        .map(|v| v["choices"][0]["drllm"]["path"].to_string())
        .collect();
    assert!(paths.len() > 1, "every prompt took one path: {paths:?}");
}

#[test]
fn token_routers_batch_each_token_on_its_own_layers() {
    use drllm_core::router::{GateInput, TokenRouter};
    let Some(lm) = drllm_engine::testing::load_default_model_for_tests(&Default::default()) else {
        return;
    };
    let (l, d) = (lm.model.num_layers(), lm.model.config().hidden_size);
    for kv in ["mask", "project"] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = drllm_tests::token_router_config(&lm.fingerprint, l, d, 4, GateInput::Own);
        cfg.random_skip = Some(0.3);
        cfg.skipped_kv = kv.into();
        TokenRouter::init(cfg, 4.0)
            .unwrap()
            .save(dir.path())
            .unwrap();
        let ckpt = dir.path().to_str().unwrap();
        // No prefix cache, as for the static model.
        let srv = Server::start(&[
            "--routers",
            ckpt,
            "--budget",
            "0.5",
            "--prefix-cache-mib",
            "0",
        ]);
        let answers = concurrent_equals_alone(&srv, 8);
        let full = (l as u64) * answers[1]["usage"]["prompt_tokens"].as_u64().unwrap();
        let ran = answers[1]["choices"][0]["drllm"]["layer_executions"].as_u64();
        assert!(
            ran.unwrap() < full,
            "{kv}: no token-layer skipped: {}",
            answers[1]
        );
    }
}

#[test]
fn the_throughput_mode_answers_concurrent_clients_in_the_same_shapes() {
    if drllm_engine::testing::default_model_for_tests().is_none() {
        return;
    }
    let exact = Server::start(&["--prefix-cache-mib", "0"]);
    let fast = Server::start(&["--prefix-cache-mib", "0", "--batch-kernels", "throughput"]);
    let post = |srv: &Server, i: usize| {
        let (path, body) = request(i);
        let (code, v) = srv.post(path, &body);
        assert_eq!(code, 200, "{body}: {v}");
        v
    };
    let alone: Vec<Value> = (0..8).map(|i| post(&exact, i)).collect();
    let together: Vec<Value> = std::thread::scope(|scope| {
        let (post, fast) = (&post, &fast);
        let clients: Vec<_> = (0..8).map(|i| scope.spawn(move || post(fast, i))).collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        let (a, b) = (
            a["choices"].as_array().unwrap(),
            b["choices"].as_array().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "request {i}");
        // The prompt's scores run the dense kernels in both modes: the same numbers.
        if i % 4 == 1 {
            assert_eq!(a[0]["logprobs"], b[0]["logprobs"], "request {i}");
        }
    }
}

#[test]
fn a_client_that_goes_away_stops_its_generation() {
    use std::io::{Read, Write};
    if drllm_engine::testing::default_model_for_tests().is_none() {
        return;
    }
    let srv = Server::start(&[]);
    let body = r#"{"prompt": "Once upon a time", "max_tokens": 1500, "stream": true}"#;
    let mut conn = std::net::TcpStream::connect(&srv.addr).unwrap();
    write!(
        conn,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 256];
    let n = conn.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    drop(conn);
    let metrics = || drllm_tests::http_get(&srv.addr, "/metrics").1;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !metrics().contains("drllm_serve_abandoned_total 1") {
        assert!(
            std::time::Instant::now() < deadline,
            "never dropped: {}",
            metrics()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let steps = counter(&metrics(), "drllm_serve_batch_steps_total");
    assert!(
        steps < 1000.0,
        "{steps} steps for an abandoned request of 1500 tokens"
    );
}
