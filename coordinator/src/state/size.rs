//! Examples too large to travel. A lease or a record past the job's message limit used to fail
//! the call that carried it, so every worker that leased the example stopped in turn. Here each
//! example still to search is checked when the state opens (a new job's at load, a resumed job's
//! under the limit it resumes with): one whose lease, or the largest record a search could make
//! of it, cannot fit fails alone, with a reason naming its `file:line`, the size, the limit and
//! what to do. Refusals are stored as [`Stored::TooLarge`] and checked again at the next open, so
//! raising `max_message_mib` and resuming searches them.

use drllm_proto::size::{lone_lease_len, mib, record_bound, RECORD_ALLOWANCE};

use super::*;

impl State {
    /// Fails every open example that cannot travel under the limit (at open, before serving).
    pub(super) fn refuse_oversized(&self, mem: &mut Mem) -> Result<usize> {
        let open: Vec<u64> = (mem.pending.iter().copied())
            .chain(mem.leased.keys().copied())
            .collect();
        let mut refused = 0;
        for k in open {
            // A missing or unreadable example fails when it is leased, with that reason.
            let Some(b) = self.examples.get(key(k))? else {
                continue;
            };
            let Ok(example) = v1::Example::decode(b.as_ref()) else {
                continue;
            };
            let le = LeasedExample {
                key: k,
                example: Some(example),
            };
            if let Some(reason) = self.too_large(&le) {
                self.fail_as(mem, k, Stored::TooLarge { reason });
                refused += 1;
            }
        }
        Ok(refused)
    }

    /// Why the leased example cannot travel under the limit; `None` when it can.
    fn too_large(&self, le: &LeasedExample) -> Option<String> {
        self.lease_too_large(le).or_else(|| {
            let bytes = record_bound(le.example.as_ref()?);
            let what = format!(
                "the largest record a search can make of it (its id, question and answer, plus \
                 {} for paths and response)",
                mib(RECORD_ALLOWANCE)
            );
            (bytes > self.max_message).then(|| self.refusal(le, &what, bytes))
        })
    }

    /// Why a lease carrying the example alone cannot travel; `None` when it can. The guard of
    /// every lease: the record bound, fixed by the same limit, was checked when the state opened.
    pub(super) fn lease_too_large(&self, le: &LeasedExample) -> Option<String> {
        let bytes = lone_lease_len(le);
        (bytes > self.max_message).then(|| self.refusal(le, "a lease carrying it alone", bytes))
    }

    /// The refusal of `le`: `what` weighs `bytes`, over the limit; what to do.
    fn refusal(&self, le: &LeasedExample, what: &str, bytes: usize) -> String {
        let id = le.example.as_ref().map_or("", |e| e.id.as_str());
        format!(
            "{}: example `{}` is too large to travel between the coordinator and its workers: \
             {what} weighs {}, over the job's message limit of {} (`max_message_mib`); shorten \
             the input, or raise `max_message_mib` in the job file and start the coordinator \
             again with the same --state (the example is then searched)",
            self.origin(le.key),
            short_id(id),
            mib(bytes),
            mib(self.max_message),
        )
    }

    /// Where example `k` comes from: `file:line`, or its key in states written before origins
    /// were stored.
    fn origin(&self, k: u64) -> String {
        match self.origins.get(key(k)) {
            Ok(Some(o)) => String::from_utf8_lossy(&o).to_string(),
            _ => format!("example #{k} of the job"),
        }
    }
}
