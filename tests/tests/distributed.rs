//! The distributed search end to end, with real coordinator processes on loopback: kill -9 at
//! random moments never loses or duplicates a record; duplicate and late submissions are ignored;
//! bad tokens, fingerprints, protocol versions, job files and state directories give clear errors.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use drllm_proto::v1::*;
use drllm_tests::*;
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_repeatedly_leaves_every_example_exactly_once() {
    let JobDir {
        dir,
        out,
        state,
        job,
    } = JobDir::new();
    let n = 300;
    std::fs::write(&job, job_toml(&out, n, 4, 2, 9, "")).unwrap();
    let port = free_port();
    let mut coord = Coordinator::start(&job, &state, port, &[], &dir.path().join("coord.log"));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(synthetic_worker(
                coord.url.clone(),
                format!("w{i}"),
                Duration::from_secs(120),
            ))
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..900))).await;
        coord.kill9_and_restart();
    }
    for w in workers {
        w.await.unwrap();
    }
    // Everything leased is submitted; wait until it is all in Parquet, then stop cleanly.
    let mut c = connect(&coord.url, None);
    loop {
        let s = wait_ready(&mut c, Duration::from_secs(20)).await;
        if s.done == n as u64 && s.uncommitted == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(coord.term().success(), "{}", coord.log());
    let rows = read_parts(&out);
    let ids: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(
        rows.len(),
        n,
        "every example exactly once (rows {}, distinct {})",
        rows.len(),
        ids.len()
    );
    assert_eq!(ids, arc_train_ids(n).into_iter().collect());
    assert!(
        coord.log().matches("serving").count() >= 6,
        "the coordinator restarted 5 times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_late_submissions_are_acknowledged_and_ignored() {
    let jd = JobDir::new();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut coord = jd.serve(
        5,
        5,
        60,
        "",
        // Synthetic clients never lease again to hear that the job is done: no grace.
        &[
            "--exit-when-done",
            "--done-grace-secs",
            "0",
            "--metrics-listen",
            &metrics,
        ],
    );
    let mut a = connect(&coord.url, None);
    wait_ready(&mut a, Duration::from_secs(20)).await;
    let fp = "f".repeat(32);
    let lease = register_and_lease(&mut a, "a", 5).await;
    assert_eq!(lease.examples.len(), 5);
    let res = |i: usize, w: &str| SearchResult {
        key: lease.examples[i].key,
        record: Some(fake_record(&lease.examples[i], w)),
        ..Default::default()
    };
    // The same example twice in one call, then again in another call.
    let r = a
        .submit(SubmitRequest {
            worker_id: "a".into(),
            results: vec![res(0, "a"), res(0, "a")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.duplicates), (1, 1));
    let r = a
        .submit(SubmitRequest {
            worker_id: "a".into(),
            results: vec![res(0, "a")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.duplicates), (0, 1));
    // A late result from another worker for an example already done.
    let mut b = connect(&coord.url, None);
    b.register(register_req("b", &fp)).await.unwrap();
    let r = b
        .submit(SubmitRequest {
            worker_id: "b".into(),
            results: vec![res(0, "b")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.duplicates), (0, 1));
    // Unknown keys and invalid records are refused with a reason, result by result; an invalid
    // record fails its example (it cannot stop the workers that would lease it again).
    let r = a
        .submit(SubmitRequest {
            worker_id: "a".into(),
            results: vec![SearchResult {
                key: 999,
                record: Some(fake_record(&lease.examples[1], "a")),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.duplicates, r.refused.len()), (0, 0, 1));
    assert!(r.refused[0].reason.contains("999"), "{:?}", r.refused);
    let mut wrong_layers = fake_record(&lease.examples[1], "a");
    wrong_layers.best_decisions.pop();
    let r = a
        .submit(SubmitRequest {
            worker_id: "a".into(),
            results: vec![SearchResult {
                key: lease.examples[1].key,
                record: Some(wrong_layers),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.refused.len()), (0, 1));
    assert!(
        r.refused[0]
            .reason
            .contains("`best_decisions` has 29 entries for 30 layers"),
        "{:?}",
        r.refused
    );
    let r = a
        .submit(SubmitRequest {
            worker_id: "a".into(),
            results: (1..5).map(|i| res(i, "a")).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.duplicates), (3, 1));
    // Prometheus sees the same counts.
    let m = wait_http(&metrics, "/metrics", 200);
    for line in [
        "drllm_results_accepted_total 4",
        "drllm_results_duplicate_total 4",
        "drllm_results_refused_total 2",
        "drllm_leased_examples_total 5",
    ] {
        assert!(m.contains(line), "metrics lack `{line}`:\n{m}");
    }
    assert!(m.contains("drllm_examples{state=\"pending\"}"), "{m}");
    assert!(
        coord.wait(Duration::from_secs(30)).success(),
        "{}",
        coord.log()
    );
    let rows = read_parts(&jd.out);
    assert_eq!(
        rows.len(),
        4,
        "the refused example is failed, the rest committed"
    );
    assert!(
        rows.iter().all(|(_, w)| w == "a"),
        "the first result wins: {rows:?}"
    );
}

/// The HTTP probes Kubernetes uses follow the coordinator's life: alive and ready while it
/// serves, still alive but not ready once it drains (SIGTERM with a lease out), gone after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_say_ready_while_serving_and_not_ready_while_draining() {
    let jd = JobDir::new();
    let http = format!("127.0.0.1:{}", free_port());
    let mut coord = jd.serve(
        3,
        3,
        60,
        "",
        &["--http-listen", &http, "--drain-secs", "30"],
    );
    assert_eq!(wait_http(&http, "/healthz", 200), "ok\n");
    wait_http(&http, "/readyz", 200);
    let mut a = connect(&coord.url, None);
    wait_ready(&mut a, Duration::from_secs(20)).await;
    let lease = register_and_lease(&mut a, "a", 3).await;
    assert_eq!(lease.examples.len(), 3);
    // Draining: it waits up to 30 s for the lease, answering "not ready" meanwhile.
    coord.send_term();
    assert_eq!(wait_http(&http, "/readyz", 503), "not ready\n");
    assert_eq!(http_get(&http, "/healthz").0, 200);
    assert_eq!(http_get(&http, "/nothing-here").0, 404);
    a.release(ReleaseRequest {
        worker_id: "a".into(),
        keys: lease.examples.iter().map(|e| e.key).collect(),
        leaving: false,
    })
    .await
    .unwrap();
    assert!(
        coord.wait(Duration::from_secs(30)).success(),
        "{}",
        coord.log()
    );
    assert_eq!(
        http_get(&http, "/healthz").0,
        0,
        "the endpoint outlived the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_examples_are_kept_through_a_crash_and_never_leased_again() {
    let jd = JobDir::new();
    // Synthetic clients never lease again to hear that the job is done: no grace.
    let args = ["--exit-when-done", "--done-grace-secs", "0"];
    let mut coord = jd.serve(3, 3, 60, "", &args);
    let mut a = connect(&coord.url, None);
    wait_ready(&mut a, Duration::from_secs(20)).await;
    let lease = register_and_lease(&mut a, "a", 3).await;
    assert_eq!(lease.examples.len(), 3);
    let ex = &lease.examples;
    let record = |i: usize| SearchResult {
        key: ex[i].key,
        record: Some(fake_record(&ex[i], "a")),
        ..Default::default()
    };
    let failed = SearchResult {
        key: ex[0].key,
        error: "prompt longer than the model's context".into(),
        ..Default::default()
    };
    let r = a
        .submit(SubmitRequest {
            worker_id: "a".into(),
            results: vec![failed, record(1)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.duplicates), (2, 0));
    // The failure is durable: it survives kill -9, and a late record for it is a duplicate.
    coord.kill9_and_restart();
    let s = wait_ready(&mut a, Duration::from_secs(20)).await;
    assert_eq!(
        (s.failed, s.done, s.leased, s.pending),
        (1, 1, 1, 0),
        "{s:?}"
    );
    assert_eq!(s.failures.len(), 1, "{s:?}");
    assert_eq!(
        (s.failures[0].key, s.failures[0].reason.as_str()),
        (ex[0].key, "prompt longer than the model's context")
    );
    // The registry survived the crash: `a` is listed with its count and submits without
    // registering again.
    assert!(
        s.workers.iter().any(|w| w.worker_id == "a" && w.done == 2),
        "{:?}",
        s.workers
    );
    let r = a
        .submit(SubmitRequest {
            worker_id: "a".into(),
            results: vec![record(0), record(2)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.duplicates), (1, 1));
    // Failed + committed = all: the job is done and the coordinator exits on its own.
    assert!(
        coord.wait(Duration::from_secs(30)).success(),
        "{}",
        coord.log()
    );
    assert!(coord.log().contains("prompt longer"), "{}", coord.log());
    let keys: BTreeSet<String> = read_parts(&jd.out).into_iter().map(|r| r.0).collect();
    let ids = arc_train_ids(3);
    assert_eq!(keys, [ids[1].clone(), ids[2].clone()].into_iter().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_fingerprints_and_protocol_versions_are_checked() {
    let jd = JobDir::new();
    let token = jd.dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let coord = jd.serve(2, 1, 60, "", &["--token-file", token.to_str().unwrap()]);
    let mut good = connect(&coord.url, Some("s3cret"));
    wait_ready(&mut good, Duration::from_secs(20)).await;
    let e = connect(&coord.url, None)
        .status(StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("missing bearer token"), "{e}");
    let e = connect(&coord.url, Some("nope"))
        .register(register_req("x", "a"))
        .await
        .unwrap_err();
    assert!(
        e.code() == tonic::Code::Unauthenticated && e.message().contains("wrong bearer token"),
        "{e}"
    );
    let mut old = register_req("old", &"a".repeat(32));
    old.protocol_version += 1;
    let e = good.register(old).await.unwrap_err();
    assert!(e.message().contains("protocol version"), "{e}");
    good.register(register_req("first", &"a".repeat(32)))
        .await
        .unwrap();
    let e = good
        .register(register_req("other", &"b".repeat(32)))
        .await
        .unwrap_err();
    assert!(e.message().contains("fingerprint"), "{e}");
    let e = good
        .lease(LeaseRequest {
            worker_id: "stranger".into(),
            max_examples: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
}

fn serve_fails(args: &[&str]) -> String {
    let out = Command::new(bin("coordinator"))
        .arg("serve")
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "expected a failure for {args:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn bad_job_files_and_state_directories_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let err = serve_fails(&["--job", &p("missing.toml"), "--state", &p("s")]);
    assert!(err.contains("missing.toml"), "{err}");
    std::fs::write(p("bad.toml"), "output_dir = 3\n").unwrap();
    let err = serve_fails(&["--job", &p("bad.toml"), "--state", &p("s")]);
    assert!(
        err.contains("bad.toml") && err.contains("output_dir"),
        "{err}"
    );
    // A state belongs to one job.
    std::fs::write(
        p("a.toml"),
        job_toml(&dir.path().join("out"), 2, 1, 60, 100, ""),
    )
    .unwrap();
    std::fs::write(
        p("b.toml"),
        job_toml(&dir.path().join("out"), 3, 1, 60, 100, ""),
    )
    .unwrap();
    let mut c = Coordinator::start(
        dir.path().join("a.toml").as_path(),
        dir.path().join("s").as_path(),
        free_port(),
        &[],
        &dir.path().join("c.log"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(c.term().success(), "{}", c.log());
    let err = serve_fails(&["--job", &p("b.toml"), "--state", &p("s")]);
    assert!(err.contains("belongs to another job"), "{err}");
    // A corrupt state directory.
    for f in std::fs::read_dir(dir.path().join("s")).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::write(&f, b"garbage garbage garbage").unwrap();
        }
    }
    let err = serve_fails(&["--job", &p("a.toml"), "--state", &p("s")]);
    assert!(err.contains("state directory"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_generated_certificate() {
    let jd = JobDir::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (crt, key) = (jd.dir.path().join("c.pem"), jd.dir.path().join("k.pem"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    let coord = jd.serve(
        2,
        1,
        60,
        "",
        &[
            "--tls-cert",
            crt.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = format!("https://127.0.0.1:{}", coord.port);
    let opts = drllm_proto::client::ConnectOptions {
        token: None,
        tls_ca_pem: Some(cert.cert.pem().into_bytes()),
        tls_domain: Some("localhost".into()),
    };
    let mut tls = drllm_proto::client::client(&url, &opts).unwrap();
    let s = wait_ready(&mut tls, Duration::from_secs(20)).await;
    assert_eq!(s.total, 2);
    // Plain text against the TLS port fails.
    assert!(connect(&coord.url, None)
        .status(StatusRequest {})
        .await
        .is_err());
}

/// A timer reclaims expired leases: with nobody calling Lease, a dead worker's examples are
/// pending again within about one lease TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_are_reclaimed_without_a_lease_call() {
    let jd = JobDir::new();
    let coord = jd.serve(2, 2, 1, "", &[]);
    let mut a = connect(&coord.url, None);
    wait_ready(&mut a, Duration::from_secs(20)).await;
    let lease = register_and_lease(&mut a, "a", 2).await;
    assert_eq!(lease.examples.len(), 2);
    let t = std::time::Instant::now();
    loop {
        let s = a.status(StatusRequest {}).await.unwrap().into_inner();
        if (s.leased, s.pending) == (0, 2) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

/// `shard_size` is what a lease holds: a worker asking for 0 examples (what `worker run` asks)
/// gets the job's shard size, and no one gets more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holds_up_to_the_jobs_shard_size() {
    let jd = JobDir::new();
    let coord = jd.serve(10, 4, 60, "", &[]);
    let mut a = connect(&coord.url, None);
    wait_ready(&mut a, Duration::from_secs(20)).await;
    a.register(register_req("a", &"f".repeat(32)))
        .await
        .unwrap();
    let lease = |n: u32| {
        let mut a = a.clone();
        async move {
            let req = LeaseRequest {
                worker_id: "a".into(),
                max_examples: n,
            };
            a.lease(req).await.unwrap().into_inner().examples.len()
        }
    };
    assert_eq!(lease(0).await, 4, "0: the job's shard size");
    assert_eq!(lease(100).await, 4, "capped at the shard size");
    assert_eq!(lease(1).await, 1);
    assert_eq!(lease(0).await, 1, "what is left");
}
