//! `loadgen`: coordinator throughput under many concurrent synthetic workers. Each client registers,
//! then leases and submits valid records until the job is done; prints one JSON line with the
//! committed records/s (clock started once every client has connected and registered) and
//! lease/submit latency percentiles. Used by `bench/coordinator.sh`.
//!
//! Without `--rate` the clients run flat out (a closed loop: the coordinator's saturation
//! throughput). With `--rate R` they together offer R records/s: each client starts a lease every
//! `clients × shard / R` seconds (from a random phase), like workers that take that long per
//! lease, and latency is measured at that load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use drllm_proto::v1::*;
use drllm_tests::{connect, fake_results, register_req, wait_ready};

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// How each client behaves.
#[derive(Clone, Copy)]
struct Load {
    shard: u32,
    period: Option<Duration>,
}

async fn client(
    url: String,
    id: usize,
    load: Load,
    registered: Arc<Barrier>,
) -> (Vec<f64>, Vec<f64>, u64) {
    let Load { shard, period } = load;
    let worker = format!("load-{id}");
    let mut c = connect(&url, None);
    c.register(register_req(&worker, &"f".repeat(32)))
        .await
        .expect("register");
    // Everyone connects and registers first; the clock starts when all have.
    registered.wait().await;
    let mut next = Instant::now();
    if let Some(p) = period {
        // Spread the clients' phases evenly over one period.
        next += p.mul_f64((id as f64 * 0.618_034).fract());
    }
    let (mut lease_ms, mut submit_ms, mut accepted) = (Vec::new(), Vec::new(), 0);
    loop {
        if let Some(p) = period {
            tokio::time::sleep_until(next.into()).await;
            next += p;
        }
        let t = Instant::now();
        let l = c
            .lease(LeaseRequest {
                worker_id: worker.clone(),
                max_examples: shard,
            })
            .await
            .expect("lease")
            .into_inner();
        lease_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if l.examples.is_empty() {
            if l.job_done {
                return (lease_ms, submit_ms, accepted);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let results = fake_results(&l, &worker);
        let t = Instant::now();
        let r = c
            .submit(SubmitRequest {
                worker_id: worker.clone(),
                results,
            })
            .await
            .expect("submit")
            .into_inner();
        submit_ms.push(t.elapsed().as_secs_f64() * 1e3);
        accepted += r.accepted as u64;
    }
}

/// Coordinator throughput under many concurrent synthetic workers (see bench/coordinator.sh).
#[derive(clap::Parser)]
#[command(name = "loadgen")]
struct Args {
    /// The coordinator's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    url: String,
    /// Concurrent clients, each registered as its own worker.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Examples per lease.
    #[arg(long, default_value_t = 8)]
    shard: u32,
    /// Records/s the clients offer together; 0: flat out (saturation throughput).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

#[tokio::main]
async fn main() {
    let Args {
        url,
        clients,
        shard,
        rate,
    } = <Args as clap::Parser>::parse();
    let period =
        (rate > 0.0).then(|| Duration::from_secs_f64(clients as f64 * shard as f64 / rate));
    let load = Load { shard, period };
    let mut status = connect(&url, None);
    let total = wait_ready(&mut status, Duration::from_secs(30)).await.total;
    let registered = Arc::new(Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(client(url.clone(), i, load, registered.clone())))
        .collect();
    let t_reg = Instant::now();
    registered.wait().await;
    let register_s = t_reg.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let (mut lease, mut submit, mut accepted) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (l, s, a) = t.await.expect("client task");
        lease.extend(l);
        submit.extend(s);
        accepted += a;
    }
    let submitted_s = t0.elapsed().as_secs_f64();
    // Committed: every record in a Parquet part.
    loop {
        let s = status
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        if s.done == total && s.uncommitted == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "clients": clients, "shard": shard, "offered_records_per_s": rate, "records": total, "accepted": accepted,
            "seconds_to_register_all": register_s, "seconds_to_committed": secs, "seconds_to_submitted": submitted_s,
            "committed_records_per_s": total as f64 / secs,
            "lease_ms_p50": pct(&mut lease, 0.5), "lease_ms_p99": pct(&mut lease, 0.99),
            "submit_ms_p50": pct(&mut submit, 0.5), "submit_ms_p99": pct(&mut submit, 0.99),
            "lease_calls": lease.len(),
        })
    );
}
