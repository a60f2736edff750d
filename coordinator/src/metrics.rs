//! Prometheus metrics of the coordinator (`serve --metrics-listen ADDR` serves them at
//! `http://ADDR/metrics`, next to the `/healthz` and `/readyz` probes of
//! [`drllm_proto::http`]): counters of leases, results and releases, lease latency, and gauges of
//! the examples per state, the workers and the committed parts.

use metrics::{counter, gauge, histogram};

use crate::state::State;

pub fn leased(n: usize, seconds: f64) {
    counter!("drllm_leased_examples_total").increment(n as u64);
    histogram!("drllm_lease_seconds").record(seconds);
}

pub fn submitted(accepted: u32, duplicates: u32, refused: usize) {
    counter!("drllm_results_accepted_total").increment(accepted as u64);
    counter!("drllm_results_duplicate_total").increment(duplicates as u64);
    counter!("drllm_results_refused_total").increment(refused as u64);
}

/// One group commit: how long the fsync took and how many waiting calls it served.
pub fn flushed(seconds: f64, calls: usize) {
    histogram!("drllm_state_flush_seconds").record(seconds);
    histogram!("drllm_state_flush_calls").record(calls as f64);
    tracing::debug!(seconds, calls, "state flushed");
}

pub fn released(n: u32) {
    counter!("drllm_released_examples_total").increment(n as u64);
}

/// Refreshes the gauges from the state.
pub fn observe(state: &State) {
    let c = state.counts();
    for (s, v) in [
        ("pending", c.pending),
        ("leased", c.leased),
        ("uncommitted", c.uncommitted),
        ("committed", c.committed),
        ("failed", c.failed),
    ] {
        gauge!("drllm_examples", "state" => s).set(v as f64);
    }
    gauge!("drllm_examples_total").set(c.total as f64);
    gauge!("drllm_parts").set(c.parts as f64);
    gauge!("drllm_workers").set(state.worker_count() as f64);
}
