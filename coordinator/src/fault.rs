//! What is failing inside the coordinator right now, for the operator and for the supervisor.
//!
//! The Parquet sink and the state writer run out of sight of any request, so their errors would
//! otherwise go unheard until shutdown. Each reports here instead: a *problem* (the sink cannot
//! write a part and is retrying) is logged at ERROR at once and shown by `coordinator status`,
//! `/readyz` (503 with the reason) and the `drllm_failing` gauge until it clears; a *fatal* error
//! (the sink gave up, the state writer failed) also wakes the supervisor in [`crate::serve`],
//! which drains the workers and exits non-zero with that reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use drllm_proto::http::Health;
use tokio::sync::watch;

/// The coordinator's current problems and its fatal error, if any.
pub struct Faults {
    health: Arc<Health>,
    problems: Mutex<BTreeMap<&'static str, String>>,
    fatal: watch::Sender<Option<String>>,
}

impl Faults {
    /// No problems; `health` is the one `/readyz` answers from.
    pub fn new(health: Arc<Health>) -> Arc<Self> {
        Arc::new(Self {
            health,
            problems: Mutex::new(BTreeMap::new()),
            fatal: watch::Sender::new(None),
        })
    }

    fn problems_mut(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.problems.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `component` is failing: logged at ERROR and shown until [`Faults::recovered`].
    pub fn failing(&self, component: &'static str, what: String) {
        tracing::error!(component, "{what}");
        metrics::gauge!("drllm_failing", "component" => component).set(1.0);
        let mut p = self.problems_mut();
        p.insert(component, what);
        self.health.set_problem(Some(summary(&p)));
    }

    /// `component` works again (a no-op when it was not failing).
    pub fn recovered(&self, component: &'static str) {
        let mut p = self.problems_mut();
        if p.remove(component).is_some() {
            tracing::info!(component, "recovered");
            metrics::gauge!("drllm_failing", "component" => component).set(0.0);
            self.health
                .set_problem((!p.is_empty()).then(|| summary(&p)));
        }
    }

    /// An error the coordinator cannot go on with: shown as a problem, and the supervisor drains
    /// and exits with `reason`. The first fatal error is the one reported.
    pub fn fatal(&self, component: &'static str, reason: String) {
        self.failing(component, reason.clone());
        self.fatal.send_if_modified(|f| {
            let first = f.is_none();
            if first {
                *f = Some(format!("{component}: {reason}"));
            }
            first
        });
    }

    /// One line per failing component, `component: what`.
    pub fn problems(&self) -> Vec<String> {
        lines(&self.problems_mut())
    }

    /// Resolves with the reason once a fatal error is reported.
    pub async fn wait_fatal(&self) -> String {
        let mut rx = self.fatal.subscribe();
        let reason = rx.wait_for(Option::is_some).await.map(|r| r.clone());
        match reason {
            Ok(reason) => reason.unwrap_or_default(),
            // The sender lives in `self`: it cannot be gone while we borrow it.
            Err(_) => std::future::pending().await,
        }
    }

    /// The fatal error, if one was reported.
    pub fn fatal_reason(&self) -> Option<String> {
        self.fatal.borrow().clone()
    }
}

/// `component: what` per problem.
fn lines(p: &BTreeMap<&'static str, String>) -> Vec<String> {
    p.iter().map(|(c, w)| format!("{c}: {w}")).collect()
}

/// The problems on one line, for `/readyz`.
fn summary(p: &BTreeMap<&'static str, String>) -> String {
    lines(p).join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn problems_show_until_recovered_and_the_first_fatal_error_wins() {
        let health = Arc::new(Health::default());
        health.set_ready(true);
        let f = Faults::new(health.clone());
        f.failing("sink", "writing part-000001.parquet: disk full".into());
        assert_eq!(
            f.problems(),
            ["sink: writing part-000001.parquet: disk full"]
        );
        assert_eq!(
            health.problem().as_deref(),
            Some("sink: writing part-000001.parquet: disk full")
        );
        f.recovered("sink");
        assert!(f.problems().is_empty() && health.problem().is_none());
        assert_eq!(f.fatal_reason(), None);
        f.fatal("state writer", "writing the state: I/O error".into());
        f.fatal("sink", "gave up".into());
        assert_eq!(
            f.wait_fatal().await,
            "state writer: writing the state: I/O error"
        );
        assert_eq!(f.problems().len(), 2);
    }
}
