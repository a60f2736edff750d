//! A Parquet part that cannot be written, with a real coordinator process: the output folder is
//! replaced by a plain file while results arrive, so every part write fails (ENOTDIR). The error
//! must show at once in `status`, `/readyz`, the metrics and the log; the sink retries and
//! recovers by itself when the folder comes back; past `--sink-give-up-secs` the coordinator
//! drains and exits non-zero with a one-line reason, and a restart on the same state commits every
//! example exactly once.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use drllm_proto::v1::StatusReply;
use drllm_tests::*;

const N: usize = 12;

/// Puts a plain file where the output folder was (the folder moves to `<out>.away`).
fn block_output(out: &Path) {
    std::fs::rename(out, out.with_extension("away")).unwrap();
    std::fs::write(out, "not a folder").unwrap();
}

fn unblock_output(out: &Path) {
    std::fs::remove_file(out).unwrap();
    std::fs::rename(out.with_extension("away"), out).unwrap();
}

/// Polls `status` until `until` holds (or 60 s pass); the last reply.
async fn status_until(url: &str, until: impl Fn(&StatusReply) -> bool) -> StatusReply {
    let mut c = connect(url, None);
    let t = Instant::now();
    loop {
        let s = wait_ready(&mut c, Duration::from_secs(20)).await;
        if until(&s) {
            return s;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "status stuck: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every example of the job exactly once in the output's parts.
fn assert_exactly_once(out: &Path) {
    let rows = read_parts(out);
    let ids: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(rows.len(), N, "rows {}, distinct {}", rows.len(), ids.len());
    assert_eq!(ids, arc_train_ids(N).into_iter().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_part_write_is_reported_at_once_retried_and_recovers_when_the_cause_goes() {
    let jd = JobDir::new();
    let http = format!("127.0.0.1:{}", free_port());
    let mut coord = jd.serve(N, 4, 60, "", &["--metrics-listen", &http]);
    wait_http(&http, "/readyz", 200);
    block_output(&jd.out);
    let t = Instant::now();
    let worker = tokio::spawn(synthetic_worker(
        coord.url.clone(),
        "w".into(),
        Duration::from_secs(120),
    ));
    // Visible in status, the probe, the metrics and the log.
    let s = status_until(&coord.url, |s| !s.problems.is_empty()).await;
    eprintln!("the failure showed in status after {:?}", t.elapsed());
    assert!(
        s.problems[0].starts_with("sink: writing part-000000.parquet")
            && s.problems[0].contains("Not a directory"),
        "{:?}",
        s.problems
    );
    let body = wait_http(&http, "/readyz", 503);
    assert!(
        body.starts_with("not ready: sink: writing part-000000.parquet"),
        "{body}"
    );
    let metrics = http_get(&http, "/metrics").1;
    assert!(
        metrics.contains("drllm_failing{component=\"sink\"} 1"),
        "{metrics}"
    );
    assert!(
        coord.log().contains("ERROR") && coord.log().contains("next try in"),
        "{}",
        coord.log()
    );
    // The cause goes: the retries write every result, the problem clears.
    unblock_output(&jd.out);
    worker.await.unwrap();
    let s = status_until(&coord.url, |s| s.uncommitted == 0 && s.done == N as u64).await;
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    wait_http(&http, "/readyz", 200);
    assert!(coord.term().success(), "{}", coord.log());
    assert!(coord.log().contains("recovered"), "{}", coord.log());
    assert_exactly_once(&jd.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_keeps_failing_drains_and_exits_with_one_line_and_a_restart_loses_nothing() {
    let jd = JobDir::new();
    let args = ["--sink-give-up-secs", "3", "--drain-secs", "1"];
    let mut coord = jd.serve(N, 4, 60, "", &args);
    let mut c = connect(&coord.url, None);
    wait_ready(&mut c, Duration::from_secs(20)).await;
    block_output(&jd.out);
    let worker = tokio::spawn(synthetic_worker(
        coord.url.clone(),
        "w".into(),
        Duration::from_secs(120),
    ));
    let status = coord.wait(Duration::from_secs(60));
    assert!(!status.success(), "{}", coord.log());
    let log = coord.log();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: sink: writing part-000000.parquet")
            && last.contains("gave up after")
            && last.contains("restart with the same --state"),
        "{log}"
    );
    assert!(
        !log.contains("panicked") && !log.contains("stack backtrace"),
        "{log}"
    );
    // The cause removed, a restart on the same state writes every result exactly once.
    unblock_output(&jd.out);
    coord.kill9_and_restart();
    worker.await.unwrap();
    status_until(&coord.url, |s| s.uncommitted == 0 && s.done == N as u64).await;
    assert!(coord.term().success(), "{}", coord.log());
    assert_exactly_once(&jd.out);
}
