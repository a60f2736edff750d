//! Message sizes. gRPC refuses a message past a size limit on whichever side decodes it, and a
//! refused lease used to stop every worker that leased the same examples in turn. So the job has
//! one limit ([`DEFAULT_MAX_MESSAGE_BYTES`] unless its `max_message_mib` says otherwise) that the
//! coordinator's server and every worker's client apply, and these functions say what an example
//! weighs on the wire, in a lease and in the largest record a search can make of it, so that the
//! coordinator refuses at load what could never travel and packs leases by bytes.

use prost::Message;

use crate::v1;

/// gRPC's default limit (tonic's, and most clients'): 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Room a `LeaseReply` needs besides its examples (deadline, flags, retry hint), rounded up.
pub const LEASE_REPLY_OVERHEAD: usize = 64;

/// What a search may add to a record beyond the example's own fields (id, dataset, split,
/// question, gold answer): good paths and their margins, the best path, the response, the model
/// and worker names, the run settings, and the submit request around it. Generous for the
/// paper's settings (50 simulations of at most 2 × 80 layers weigh about 20 KiB; responses are a
/// few dozen tokens); a record past it is caught by the worker before it is sent.
pub const RECORD_ALLOWANCE: usize = 256 << 10;

/// Bytes a message of `len` bytes takes as one element of a repeated or message field: tag,
/// length prefix and body.
pub fn as_field(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

/// What one leased example adds to a `LeaseReply`.
pub fn leased_len(le: &v1::LeasedExample) -> usize {
    as_field(le.encoded_len())
}

/// What a lease carrying only `le` weighs.
pub fn lone_lease_len(le: &v1::LeasedExample) -> usize {
    LEASE_REPLY_OVERHEAD + leased_len(le)
}

/// An upper bound of the `SubmitRequest` that carries the record of `example`: the record's
/// copies of the example's fields plus [`RECORD_ALLOWANCE`].
pub fn record_bound(example: &v1::Example) -> usize {
    let fields = v1::SearchRecord {
        example_id: example.id.clone(),
        dataset: example.dataset.clone(),
        split: example.split.clone(),
        question: example.question.clone(),
        gold: example.answer.clone(),
        ..Default::default()
    };
    fields.encoded_len() + RECORD_ALLOWANCE
}

/// `bytes` as MiB with two decimals, for messages.
pub fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_what_prost_encodes() {
        let example = v1::Example {
            id: "x".repeat(300),
            question: "q".repeat(70_000),
            choices: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let le = v1::LeasedExample {
            key: 7,
            example: Some(example.clone()),
        };
        let reply = v1::LeaseReply {
            examples: vec![le.clone(), le.clone()],
            deadline_unix_ms: i64::MAX,
            job_done: true,
            retry_after_ms: u64::MAX,
        };
        // Two examples plus the overhead bound the reply exactly as prost encodes it.
        let packed = LEASE_REPLY_OVERHEAD + 2 * leased_len(&le);
        assert!(
            reply.encoded_len() <= packed,
            "{} > {packed}",
            reply.encoded_len()
        );
        assert!(packed - reply.encoded_len() <= LEASE_REPLY_OVERHEAD);
        // The bound covers a record with every field of the example and a full search.
        let record = v1::SearchRecord {
            example_id: example.id.clone(),
            question: example.question.clone(),
            good_paths: vec![
                v1::Path {
                    layers: (0..160).collect()
                };
                51
            ],
            good_margins: vec![1.0; 51],
            best_response: Some("r".repeat(2000)),
            worker_id: "w".repeat(100),
            ..Default::default()
        };
        let submit = v1::SubmitRequest {
            worker_id: "w".repeat(100),
            results: vec![v1::SearchResult {
                key: 7,
                record: Some(record),
                ..Default::default()
            }],
        };
        assert!(submit.encoded_len() <= record_bound(&example));
        assert_eq!(mib(3 << 19), "1.50 MiB");
    }
}
