//! Inputs past gRPC's message limit, and a worker cut off while its job ends, with real
//! coordinator and worker processes on the default model over loopback.
//!
//! Each oversized input fails its own example and nothing else: a 5 MB question (no lease can
//! carry it), an id sized so that its lease fits but the largest record a search could make of it
//! does not (both refused at load, naming `file:line`), three examples that only together pass
//! the limit (packed into separate leases by bytes, and searched), and a record that grows past
//! the limit in the worker (reported as its example's failure instead of being sent). A worker cut
//! off by a silent network while the job ends comes back within the coordinator's grace period,
//! drops its stale result and exits 0.

use std::time::{Duration, Instant};

use drllm_proto::v1::StatusRequest;
use drllm_tests::fleet::{wait_for, worker, worker_with, Proxy};
use drllm_tests::*;

const MIB: usize = 1 << 20;

/// A JSONL line: a yes/no question.
fn line(id: &str, question: &str) -> String {
    let v = serde_json::json!({"id": id, "question": question, "choices": ["yes", "no"], "answer": "A"});
    format!("{v}\n")
}

/// (example id, reason) of each failed example, from `summarize --state`.
fn failures(jd: &JobDir) -> Vec<(String, String)> {
    let (_, v) = summarize_state(jd);
    (v["failures"].as_array().unwrap().iter())
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_string();
            (s("example_id"), s("reason"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_inputs_fail_alone_and_both_workers_exit_0() {
    if drllm_engine::testing::default_model_for_tests().is_none() {
        return;
    }
    let jd = JobDir::new();
    let big = jd.dir.path().join("big.jsonl");
    let wide = |i: usize| format!("wide-{i}-{}", "w".repeat(1_400_000));
    let text = [
        line("huge-question", &"why ".repeat(5_000_000 / 4)),
        line(&"i".repeat(4 * MIB - 150 * 1024), "Is ice cold?"),
        line(&wide(1), "Is fire hot?"),
        line(&wide(2), "Is snow white?"),
        line(&wide(3), "Is grass green?"),
    ];
    std::fs::write(&big, text.concat()).unwrap();
    let extra = format!(
        "[search]\nnum_simulations = 4\n[[datasets]]\nname = {:?}\nsplit = \"all\"\n",
        big.display().to_string()
    );
    let mut coord = jd.serve(5, 4, 30, &extra, &["--exit-when-done"]);
    let mut c = connect(&coord.url, None);
    wait_ready(&mut c, Duration::from_secs(60)).await;
    let arc = arc_train_ids(5);
    // Both workers grow the first ARC question's record past the limit, whichever searches it.
    let fault = ["--fault-oversize-record", arc[0].as_str()];
    let logs = [jd.dir.path().join("a.log"), jd.dir.path().join("b.log")];
    let mut workers = [
        worker_with(&coord.url, "a", &logs[0], &fault),
        worker_with(&coord.url, "b", &logs[1], &fault),
    ];
    assert!(
        coord.wait(Duration::from_secs(400)).success(),
        "{}",
        coord.log()
    );
    for (w, log) in workers.iter_mut().zip(&logs) {
        let status = wait_timeout(w, Duration::from_secs(60));
        let text = std::fs::read_to_string(log).unwrap();
        assert!(status.success(), "{}: {status:?}\n{text}", log.display());
        assert!(!text.contains("OutOfRange"), "{text}");
    }
    assert!(
        coord.log().contains("7 committed, 3 failed"),
        "{}",
        coord.log()
    );
    let mut want: Vec<String> = (1..=3).map(|i| format!("jsonl:big/{}", wide(i))).collect();
    want.extend(arc[1..].iter().cloned());
    want.sort();
    assert_eq!(
        committed_ids(&jd.out),
        want,
        "the searchable examples once each"
    );

    let f = failures(&jd);
    assert_eq!(f.len(), 3, "{f:?}");
    let reason = |prefix: &str| {
        let r = f.iter().find(|(id, _)| id.starts_with(prefix));
        r.unwrap_or_else(|| panic!("no failure for {prefix}: {f:?}"))
            .1
            .clone()
    };
    let file = big.display().to_string();
    let huge = reason("jsonl:big/huge-question");
    assert!(huge.starts_with(&format!("{file}:1: ")), "{huge}");
    assert!(
        huge.contains("a lease carrying it alone weighs 4.77 MiB"),
        "{huge}"
    );
    assert!(
        huge.contains("limit of 4.00 MiB (`max_message_mib`)"),
        "{huge}"
    );
    let long_id = reason("jsonl:big/iii");
    assert!(long_id.starts_with(&format!("{file}:2: ")), "{long_id}");
    assert!(long_id.contains("the largest record"), "{long_id}");
    let grown = reason(&arc[0]);
    assert!(
        grown.contains("its record weighs") && grown.contains("not sent"),
        "{grown}"
    );
    // The coordinator's log names each failure (the long id shortened).
    let log = coord.log();
    let shortened = format!("({} bytes)", "jsonl:big/".len() + 4 * MIB - 150 * 1024);
    assert!(
        log.contains("huge-question") && log.contains(&shortened),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_while_the_job_ends_exits_0_within_the_grace() {
    if drllm_engine::testing::default_model_for_tests().is_none() {
        return;
    }
    let jd = JobDir::new();
    let grace = Duration::from_secs(60);
    let args = ["--exit-when-done", "--done-grace-secs", "60"];
    let mut coord = jd.serve(6, 1, 2, "[search]\nnum_simulations = 4\n", &args);
    let mut c = connect(&coord.url, None);
    wait_ready(&mut c, Duration::from_secs(20)).await;
    let proxy = Proxy::start(format!("127.0.0.1:{}", coord.port).parse().unwrap());
    let (alog, blog) = (jd.dir.path().join("a.log"), jd.dir.path().join("b.log"));

    // b, behind the proxy, goes silent while it holds a lease; a finishes the job meanwhile.
    let mut b = worker(&proxy.url, "b", &blog);
    wait_for(&mut c, "b's first lease", |s| {
        s.workers.iter().any(|w| w.worker_id == "b" && w.leased > 0)
    })
    .await;
    proxy.cut();
    let mut a = worker(&coord.url, "a", &alog);
    wait_for(&mut c, "every example committed", |s| s.done == 6).await;
    let status = wait_timeout(&mut a, Duration::from_secs(60));
    assert!(status.success(), "a: {status:?}");
    // The job is done but b has not heard so: the coordinator waits for it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = c.status(StatusRequest {}).await.unwrap().into_inner();
    assert!(
        s.workers.iter().any(|w| w.worker_id == "b" && w.lost),
        "{s:?}"
    );
    assert!(coord.child.as_mut().unwrap().try_wait().unwrap().is_none());

    proxy.resume();
    let back = Instant::now();
    let status = wait_timeout(&mut b, grace);
    let text = std::fs::read_to_string(&blog).unwrap();
    assert!(status.success(), "b: {status:?}\n{text}");
    assert!(back.elapsed() < grace, "b took {:?}", back.elapsed());
    assert!(text.contains("result dropped"), "{text}");
    assert!(!text.contains("backtrace"), "{text}");
    assert!(
        coord.wait(Duration::from_secs(20)).success(),
        "{}",
        coord.log()
    );
    let mut want = arc_train_ids(6);
    want.sort();
    assert_eq!(committed_ids(&jd.out), want, "every question once");
}

/// `max_message_mib` is not part of the job's identity: raised on a resumed state, the examples
/// it refused are pending again; lowered again, refused again under the new limit. No worker
/// needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_message_limit_resumes_the_refused_examples() {
    let jd = JobDir::new();
    let big = jd.dir.path().join("big.jsonl");
    std::fs::write(&big, line("huge-question", &"why ".repeat(5_000_000 / 4))).unwrap();
    let job = |limit: &str| {
        let extra = format!(
            "{limit}\n[[datasets]]\nname = {:?}\nsplit = \"all\"\n",
            big.display().to_string()
        );
        std::fs::write(&jd.job, job_toml(&jd.out, 2, 4, 30, 100, &extra)).unwrap();
    };
    let counts = |s: &drllm_proto::v1::StatusReply| (s.total, s.pending, s.failed);
    let log = jd.dir.path().join("c.log");
    for (limit, want) in [
        ("", (3, 2, 1)),
        ("max_message_mib = 8", (3, 3, 0)),
        ("max_message_mib = 0.5", (3, 2, 1)),
    ] {
        job(limit);
        let mut coord = Coordinator::start(&jd.job, &jd.state, free_port(), &[], &log);
        let mut c = connect(&coord.url, None);
        let s = wait_ready(&mut c, Duration::from_secs(60)).await;
        assert_eq!(counts(&s), want, "{limit}: {s:?}");
        if want.2 == 1 {
            let limit_text = if limit.is_empty() {
                "4.00 MiB"
            } else {
                "0.50 MiB"
            };
            let r = &s.failures[0].reason;
            assert!(r.contains(limit_text) && r.contains("big.jsonl:1"), "{r}");
        }
        assert!(coord.term().success(), "{}", coord.log());
    }
}
