//! Real workers on the real default model against a real coordinator: a worker killed with -9
//! mid-lease loses nothing (its examples are leased again after the lease expires and finished by
//! another worker); a worker sent SIGTERM finishes the example at hand and releases the rest; a
//! worker keeps going through a coordinator crash and restart; one worker with two lanes searches
//! two examples at once and reports over HTTP. Every record carries the job's run settings.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use drllm_proto::v1::StatusRequest;
use drllm_tests::fleet::{wait_for, worker, worker_with};
use drllm_tests::*;

/// A job of `limit` questions at 4 simulations each, its coordinator (exiting when done) and a
/// client; `None` (after a loud notice) when the default model is absent outside CI.
async fn start_job(
    limit: usize,
    shard: u32,
    ttl: u64,
) -> Option<(JobDir, Coordinator, drllm_proto::client::Client)> {
    drllm_engine::testing::default_model_for_tests()?;
    let jd = JobDir::new();
    // Non-default settings, to see them reach the workers and every record.
    let search = "length_normalized = true\n[search]\nnum_simulations = 4\nseed = 11\n";
    // A short grace: some of these tests kill a worker, which never hears that the job is done.
    let args = ["--exit-when-done", "--done-grace-secs", "3"];
    let coord = jd.serve(limit, shard, ttl, search, &args);
    let mut c = connect(&coord.url, None);
    wait_ready(&mut c, Duration::from_secs(20)).await;
    Some((jd, coord, c))
}

/// Waits for the coordinator to finish the job and worker `w` (logging to `log`) to exit cleanly,
/// checks that the Parquet holds each of the `n` questions exactly once, and returns its rows
/// (question id, worker id).
fn job_finishes_exactly_once(
    coord: &mut Coordinator,
    w: &mut Child,
    log: &Path,
    out: &Path,
    n: usize,
) -> Vec<(String, String)> {
    assert!(
        coord.wait(Duration::from_secs(300)).success(),
        "{}",
        coord.log()
    );
    let status = wait_timeout(w, Duration::from_secs(60));
    let wlog = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "worker: {status:?}\n{wlog}");
    let rows = read_parts(out);
    let ids: BTreeSet<_> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!((rows.len(), ids.len()), (n, n), "{rows:?}");
    // The job's settings, sent to the workers as typed messages, are in every record; the
    // worker resolved the unset prompt style to the model's default.
    for r in drllm_records::read_records(out).unwrap() {
        let s = &r.settings;
        assert_eq!(
            (
                s.search.num_simulations,
                s.search.seed,
                s.reward.length_normalized
            ),
            (4, 11, true),
            "{}: {s:?}",
            r.example_id
        );
        assert_eq!(s.reward.mode, drllm_contract::RewardMode::ChoiceLoglik);
        assert_eq!(s.reward.style, Some(drllm_contract::PromptStyle::Instruct));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_stopped_workers_lose_no_example() {
    let Some((JobDir { dir, out, .. }, mut coord, mut c)) = start_job(5, 3, 3).await else {
        return;
    };

    // A: killed -9 as soon as it holds a lease.
    let mut a = worker(&coord.url, "a", &dir.path().join("a.log"));
    wait_for(&mut c, "a lease", |s| s.leased > 0).await;
    a.kill().unwrap();
    a.wait().unwrap();

    // B: SIGTERM once it has finished one example; it must exit cleanly, releasing the rest.
    let mut b = worker(&coord.url, "b", &dir.path().join("b.log"));
    wait_for(&mut c, "b's first result", |s| {
        s.workers.iter().any(|w| w.worker_id == "b" && w.done >= 1)
    })
    .await;
    Command::new("kill")
        .arg(b.id().to_string())
        .status()
        .unwrap();
    let status = wait_timeout(&mut b, Duration::from_secs(120));
    let blog = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(
        status.success(),
        "worker b after SIGTERM: {status:?}\n{blog}"
    );

    // C finishes the job, including A's expired lease and B's released examples.
    let wlog = dir.path().join("worker-c.log");
    let mut w = worker(&coord.url, "c", &wlog);
    let rows = job_finishes_exactly_once(&mut coord, &mut w, &wlog, &out, 5);
    assert!(
        rows.iter().any(|r| r.1 == "b") && rows.iter().any(|r| r.1 == "c"),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_rides_out_a_coordinator_crash() {
    let Some((JobDir { dir, out, .. }, mut coord, mut c)) = start_job(4, 1, 30).await else {
        return;
    };
    let mut w = worker(&coord.url, "w", &dir.path().join("w.log"));
    wait_for(&mut c, "a first result", |s| s.done >= 1).await;
    coord.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    coord.kill9_and_restart();
    job_finishes_exactly_once(&mut coord, &mut w, &dir.path().join("w.log"), &out, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_with_two_lanes_holds_two_leases_and_reports_over_http() {
    let Some((JobDir { dir, out, .. }, mut coord, mut c)) = start_job(6, 1, 30).await else {
        return;
    };
    let http = format!("127.0.0.1:{}", free_port());
    let mut w = worker_with(
        &coord.url,
        "w",
        &dir.path().join("w.log"),
        &["--concurrency", "2", "--http-listen", &http],
    );
    assert_eq!(wait_http(&http, "/healthz", 200), "ok\n");
    // Ready once the model is loaded and the worker registered.
    wait_http(&http, "/readyz", 200);
    // Shards of one example: two lanes hold two leases at once.
    wait_for(&mut c, "two leases held by one worker", |s| {
        s.workers
            .iter()
            .any(|w| w.worker_id == "w" && w.leased >= 2)
    })
    .await;
    wait_for(&mut c, "a first result", |s| s.done >= 1).await;
    let m = wait_http(&http, "/metrics", 200);
    assert!(
        m.contains("drllm_worker_examples_total{outcome=\"searched\"}"),
        "{m}"
    );
    assert!(m.contains("drllm_worker_simulations_total"), "{m}");
    job_finishes_exactly_once(&mut coord, &mut w, &dir.path().join("w.log"), &out, 6);
}

/// A poison example fails alone: both workers submit a broken record for the same example (a
/// fault flag corrupts it), the coordinator refuses it and marks that example failed with the
/// reason (shown by `status`), every other example is committed exactly once, and the workers
/// go on to the end of the job and exit cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_fails_its_example_alone_and_the_workers_go_on() {
    let Some((JobDir { dir, out, .. }, mut coord, mut c)) = start_job(5, 1, 30).await else {
        return;
    };
    let ids = arc_train_ids(5);
    let poison = ids[1].clone();
    let fault = ["--fault-corrupt-record", poison.as_str()];
    let (alog, blog) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = worker_with(&coord.url, "a", &alog, &fault);
    let mut b = worker_with(&coord.url, "b", &blog, &fault);
    wait_for(&mut c, "the poison example to fail", |s| s.failed == 1).await;
    let s = c.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s.failures.len(), 1, "{s:?}");
    assert_eq!(s.failures[0].example_id, poison);
    assert!(
        s.failures[0]
            .reason
            .contains("record refused: `best_decisions` has 29 entries for 30 layers"),
        "{:?}",
        s.failures
    );
    assert!(
        coord.wait(Duration::from_secs(300)).success(),
        "{}",
        coord.log()
    );
    for (w, log) in [(&mut a, &alog), (&mut b, &blog)] {
        let status = wait_timeout(w, Duration::from_secs(60));
        let text = std::fs::read_to_string(log).unwrap();
        assert!(status.success(), "worker: {status:?}\n{text}");
    }
    let rows = read_parts(&out);
    let mut got: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    got.sort();
    let mut want: Vec<String> = ids.into_iter().filter(|i| *i != poison).collect();
    want.sort();
    assert_eq!(
        got, want,
        "every other example once, the poison one not at all"
    );
}

/// What an operator sees of a sick fleet. A job holds one example that cannot be searched (its
/// prompt is longer than the model's context) among three ARC questions. Worker `a` is killed -9
/// while it holds a lease: within one lease TTL `status` shows it lost, `problems` names it and
/// the ETA says that no live worker is left. Worker `b` then finishes the job: the unsearchable
/// example fails alone, with its reason, and every other example is committed exactly once;
/// `summarize --state` lists the failure and says "3 committed, 1 failed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsearchable_example_fails_alone_and_a_killed_worker_shows_as_lost() {
    if drllm_engine::testing::default_model_for_tests().is_none() {
        return;
    }
    let jd = JobDir::new();
    let poison = jd.dir.path().join("poison.jsonl");
    let question = "why ".repeat(20_000);
    let line = serde_json::json!({"id": "too-long", "question": question, "choices": ["yes", "no"], "answer": "A"});
    std::fs::write(&poison, format!("{line}\n")).unwrap();
    let extra = format!(
        "[search]\nnum_simulations = 4\n[[datasets]]\nname = {:?}\nsplit = \"all\"\n",
        poison.display().to_string()
    );
    let args = ["--exit-when-done", "--done-grace-secs", "3"];
    let mut coord = jd.serve(3, 2, 3, &extra, &args);
    let mut c = connect(&coord.url, None);
    wait_ready(&mut c, Duration::from_secs(20)).await;
    let (alog, blog) = (jd.dir.path().join("a.log"), jd.dir.path().join("b.log"));

    let mut a = worker(&coord.url, "a", &alog);
    wait_for(&mut c, "a's first lease", |s| {
        s.workers.iter().any(|w| w.worker_id == "a" && w.leased > 0)
    })
    .await;
    a.kill().unwrap();
    a.wait().unwrap();
    let killed = Instant::now();
    wait_for(&mut c, "worker a shown lost", |s| {
        s.workers.iter().any(|w| w.worker_id == "a" && w.lost)
    })
    .await;
    let s = c.status(StatusRequest {}).await.unwrap().into_inner();
    assert!(
        killed.elapsed() < Duration::from_secs(3) + Duration::from_millis(1500),
        "lost only after {:?} (TTL 3 s)",
        killed.elapsed()
    );
    assert!(
        s.problems.iter().any(|p| p.starts_with("worker a lost")),
        "{:?}",
        s.problems
    );
    assert_eq!(
        (s.eta_seconds, s.eta_note.as_str()),
        (-1.0, "no live worker")
    );

    let mut b = worker(&coord.url, "b", &blog);
    assert!(
        coord.wait(Duration::from_secs(300)).success(),
        "{}",
        coord.log()
    );
    let status = wait_timeout(&mut b, Duration::from_secs(60));
    let text = std::fs::read_to_string(&blog).unwrap();
    assert!(status.success(), "worker b: {status:?}\n{text}");
    assert!(
        coord.log().contains("3 committed, 1 failed"),
        "{}",
        coord.log()
    );
    let mut want = arc_train_ids(3);
    want.sort();
    assert_eq!(
        committed_ids(&jd.out),
        want,
        "the three ARC questions once each, the long one not at all"
    );

    let (stderr, v) = summarize_state(&jd);
    assert!(stderr.contains("3 committed, 1 failed"), "{stderr}");
    assert_eq!(v["failed"], 1, "{v}");
    assert_eq!(
        v["failures"][0]["example_id"], "jsonl:poison/too-long",
        "{v}"
    );
    let reason = v["failures"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("context"), "{reason}");
}
