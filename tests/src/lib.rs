//! Helpers for the end-to-end tests: the workspace's binaries, a coordinator run as a real process
//! on loopback (start, kill -9, restart, SIGTERM), synthetic workers that lease and submit valid
//! records over gRPC, and reading back the Parquet parts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::{Array, StringArray};
use drllm_contract::{Example, SearchRecord};
use drllm_proto::client::{client, Client, ConnectOptions};
use drllm_proto::v1::{self, *};
use drllm_proto::PROTOCOL_VERSION;

pub mod fleet;

/// A binary of this workspace, built next to the test executable (`cargo test --workspace` builds
/// them).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` (or `cargo test --workspace`) first",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary folder for one job: where its spec, state and output go.
pub struct JobDir {
    pub dir: tempfile::TempDir,
    pub out: PathBuf,
    pub state: PathBuf,
    pub job: PathBuf,
}

impl JobDir {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        Self {
            out: p("out"),
            state: p("state"),
            job: p("job.toml"),
            dir,
        }
    }

    /// Writes a job over the first `limit` ARC-Easy train questions ([`job_toml`] with parts of
    /// 100 and `extra` TOML) and starts its coordinator on a free port with `args`, logging to
    /// `c.log` in this folder.
    pub fn serve(
        &self,
        limit: usize,
        shard: u32,
        ttl_secs: u64,
        extra: &str,
        args: &[&str],
    ) -> Coordinator {
        std::fs::write(
            &self.job,
            job_toml(&self.out, limit, shard, ttl_secs, 100, extra),
        )
        .unwrap();
        Coordinator::start(
            &self.job,
            &self.state,
            free_port(),
            args,
            &self.dir.path().join("c.log"),
        )
    }
}

/// The ids of the first `n` ARC-Easy train questions (what a job over them must commit).
pub fn arc_train_ids(n: usize) -> Vec<String> {
    let spec: drllm_tasks::DatasetSpec = "arc_easy".parse().unwrap();
    drllm_tasks::load_dataset(&spec, "train", Some(n), false)
        .unwrap()
        .examples
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// A job over the first `limit` ARC-Easy train questions.
pub fn job_toml(
    out: &Path,
    limit: usize,
    shard: u32,
    ttl_secs: u64,
    part_size: usize,
    extra: &str,
) -> String {
    format!(
        "output_dir = {:?}\nshard_size = {shard}\nlease_ttl_secs = {ttl_secs}\npart_size = {part_size}\nflush_secs = 0.2\n{extra}\n[[datasets]]\nname = \"arc_easy\"\nsplit = \"train\"\nlimit = {limit}\n",
        out.display().to_string()
    )
}

/// A coordinator process.
pub struct Coordinator {
    pub child: Option<Child>,
    pub url: String,
    pub port: u16,
    args: Vec<String>,
    log: PathBuf,
}

impl Coordinator {
    /// Starts `coordinator serve --job job --state state --listen 127.0.0.1:port` plus `extra`.
    pub fn start(job: &Path, state: &Path, port: u16, extra: &[&str], log: &Path) -> Self {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--job".into(),
            job.display().to_string(),
            "--state".into(),
            state.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut c = Self {
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            port,
            args,
            log: log.to_path_buf(),
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin("coordinator"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the coordinator");
        self.child = Some(child);
    }

    /// kill -9, then start again on the same state.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn term(&mut self) -> std::process::ExitStatus {
        self.send_term();
        self.wait(Duration::from_secs(60))
    }

    /// SIGTERM, without waiting.
    pub fn send_term(&self) {
        let c = self.child.as_ref().expect("running");
        let _ = Command::new("kill").arg(c.id().to_string()).status();
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        wait_timeout(&mut c, limit)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn wait_timeout(c: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > limit {
            let _ = c.kill();
            panic!("process {} did not exit within {limit:?}", c.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET `path` from the HTTP endpoint at `addr` over a plain TCP connection: the status code and
/// the body. Status 0 when nothing listens (yet).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path, None)
}

/// POST the JSON `body` to `path` at `addr`: the status code and the response body.
pub fn http_post(addr: &str, path: &str, body: &str) -> (u16, String) {
    http(addr, "POST", path, Some(body))
}

/// One HTTP/1.1 request over a plain TCP connection, closed after the answer; status 0 when
/// nothing listens.
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        );
    } else {
        req += "\r\n";
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body.to_string())
}

/// Polls `GET path` at `addr` until it answers `code` (or 60 s pass).
pub fn wait_http(addr: &str, path: &str, code: u16) -> String {
    let t = Instant::now();
    loop {
        let (c, body) = http_get(addr, path);
        if c == code {
            return body;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "GET {addr}{path}: {c} {body}, waiting for {code}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn connect(url: &str, token: Option<&str>) -> Client {
    client(
        url,
        &ConnectOptions {
            token: token.map(String::from),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Polls `status` until the coordinator answers (or `limit` passes).
pub async fn wait_ready(c: &mut Client, limit: Duration) -> StatusReply {
    let t = Instant::now();
    loop {
        match c.status(StatusRequest {}).await {
            Ok(r) => return r.into_inner(),
            Err(e) if t.elapsed() < limit => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("coordinator not ready after {limit:?}: {e}"),
        }
    }
}

/// Registers `worker` (weights `"f" × 32`) and leases up to `n` examples; panics on any error.
pub async fn register_and_lease(c: &mut Client, worker: &str, n: u32) -> LeaseReply {
    c.register(register_req(worker, &"f".repeat(32)))
        .await
        .unwrap();
    c.lease(LeaseRequest {
        worker_id: worker.into(),
        max_examples: n,
    })
    .await
    .unwrap()
    .into_inner()
}

/// A valid record for a leased example, as a worker would submit it.
pub fn fake_record(leased: &LeasedExample, worker: &str) -> v1::SearchRecord {
    let ex = drllm_proto::convert::decode_example(leased.example.as_ref().expect("an example"))
        .expect("a valid example");
    v1::SearchRecord::from(&search_record(&ex, worker, &"f".repeat(32)))
}

/// A plausible search record of `ex` for a 30-layer model with weights `fingerprint`: found, best
/// path skipping the last two layers.
pub fn search_record(ex: &Example, worker: &str, fingerprint: &str) -> SearchRecord {
    SearchRecord {
        example_id: ex.id.clone(),
        dataset: ex.dataset.clone(),
        split: ex.split.clone(),
        question: ex.question.clone(),
        gold: ex.answer.clone(),
        model_id: "synthetic".into(),
        model_fingerprint: fingerprint.into(),
        num_layers: 30,
        original_correct: true,
        found: true,
        best_path: (0..28).collect(),
        best_decisions: [vec![1u8; 28], vec![0, 0]].concat(),
        distinct_layers: 28,
        good_paths: vec![(0..28).collect()],
        good_margins: vec![1.5],
        original_margin: Some(1.5),
        best_response: None,
        simulations: 2,
        distinct_paths: 2,
        layer_executions: 1000,
        wall_seconds: 0.01,
        settings: Default::default(),
        worker_id: worker.into(),
        timestamp_ms: 0,
    }
}

pub fn register_req(worker: &str, fingerprint: &str) -> RegisterRequest {
    RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        worker_id: worker.into(),
        model_fingerprint: fingerprint.into(),
        device: "synthetic".into(),
        version: "test".into(),
    }
}

/// A valid result for every example of a lease, as `worker` would submit them.
pub fn fake_results(lease: &LeaseReply, worker: &str) -> Vec<SearchResult> {
    lease
        .examples
        .iter()
        .map(|e| SearchResult {
            key: e.key,
            record: Some(fake_record(e, worker)),
            ..Default::default()
        })
        .collect()
}

/// A synthetic worker: registers, then leases and submits valid records until the job is done,
/// riding out coordinator restarts. Returns how many submissions were accepted.
pub async fn synthetic_worker(url: String, worker: String, limit: Duration) -> u64 {
    let t = Instant::now();
    let mut c = connect(&url, None);
    let mut accepted = 0;
    let mut registered = false;
    while t.elapsed() < limit {
        if !registered {
            registered = c
                .register(register_req(&worker, &"f".repeat(32)))
                .await
                .is_ok();
            if !registered {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let lease = match c
            .lease(LeaseRequest {
                worker_id: worker.clone(),
                max_examples: 4,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(_) => {
                registered = false;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if lease.examples.is_empty() {
            if lease.job_done {
                return accepted;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let results = fake_results(&lease, &worker);
        match c
            .submit(SubmitRequest {
                worker_id: worker.clone(),
                results,
            })
            .await
        {
            Ok(r) => accepted += r.into_inner().accepted as u64,
            Err(_) => registered = false,
        }
    }
    panic!("synthetic worker {worker} did not finish within {limit:?}");
}

/// The example ids of every row of every part in `dir`, sorted.
pub fn committed_ids(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = read_parts(dir).into_iter().map(|r| r.0).collect();
    ids.sort();
    ids
}

/// `coordinator summarize OUT --state STATE` of a stopped job: its stderr and its JSON (panics
/// when it fails).
pub fn summarize_state(jd: &JobDir) -> (String, serde_json::Value) {
    let out = Command::new(bin("coordinator"))
        .arg("summarize")
        .arg(&jd.out)
        .arg("--state")
        .arg(&jd.state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    (stderr, serde_json::from_slice(&out.stdout).unwrap())
}

/// `example_id` and `worker_id` of every row of every part in `dir`; panics on stray files.
pub fn read_parts(dir: &Path) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("part-") && name.ends_with(".parquet"),
            "stray file in the output: {name}"
        );
        let f = std::fs::File::open(&p).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let col = |n: &str| {
                b.column_by_name(n)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .clone()
            };
            let (ids, workers) = (col("example_id"), col("worker_id"));
            for i in 0..ids.len() {
                rows.push((ids.value(i).to_string(), workers.value(i).to_string()));
            }
        }
    }
    rows
}

/// Routers for `layers` layers of width `d` whose decision does not depend on the input: the
/// `skip` layers skip, the rest execute.
pub fn constant_routers(layers: usize, d: usize, skip: &[usize]) -> drllm_core::router::Routers {
    use candle_core::{DType, Device, Tensor};
    let r = drllm_core::router::Routers::init(layers, d, 0).unwrap();
    let hidden = drllm_core::router::HIDDEN;
    r.w1.set(&Tensor::zeros((layers, hidden, d), DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    let b2: Vec<f32> = (0..layers)
        .flat_map(|l| match skip.contains(&l) {
            true => [9.0, 0.0, 0.0],
            false => [0.0, 9.0, 0.0],
        })
        .collect();
    r.b2.set(&Tensor::from_vec(b2, (layers, 3), &Device::Cpu).unwrap())
        .unwrap();
    r
}

/// A training configuration for checkpoints made in tests (one epoch, no validation split).
pub fn training() -> drllm_core::router::TrainingConfig {
    drllm_core::router::TrainingConfig {
        epochs: 1,
        batch_size: 1,
        grad_accum: 1,
        lr: 1e-3,
        weight_decay: 0.0,
        warmup_fraction: 0.0,
        focal_gamma: 2.0,
        class_beta: 0.999,
        val_fraction: 0.0,
        seed: 0,
        found_only: true,
        min_path_len: 0,
        targets: Default::default(),
    }
}

pub use drllm_engine::testing::python_has;

/// A token router configuration for tests: `keep_first` layers kept, `gate_input` gates of
/// width 8, masked skipped keys, untrained (callers set what their test needs).
pub fn token_router_config(
    fingerprint: &str,
    layers: usize,
    d: usize,
    keep_first: usize,
    gate_input: drllm_core::router::GateInput,
) -> drllm_core::router::TokenRouterConfig {
    use drllm_core::router::{CheckpointHeader, TokenRouterConfig, TokenTraining, TOKEN_FORMAT};
    TokenRouterConfig {
        format: TOKEN_FORMAT,
        header: CheckpointHeader {
            base_model: "default".into(),
            model_fingerprint: fingerprint.into(),
            num_layers: layers,
            model_hidden_size: d,
            reward: None,
        },
        keep_first,
        gate_input,
        bottleneck: 8,
        skipped_kv: "mask".into(),
        training: TokenTraining {
            target: 0.5,
            lambda: 0.1,
            mu: 1.0,
            kd_temperature: 2.0,
            kd_all_rows: true,
            tau_start: 1.0,
            tau_end: 1.0,
            lr: 1e-3,
            batch_size: 1,
            epochs: 1,
            seed: 3,
            prompts: String::new(),
        },
        steps_done: 0,
        history: Vec::new(),
        training_questions: Vec::new(),
        random_skip: None,
    }
}
