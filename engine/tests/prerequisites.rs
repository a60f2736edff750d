//! A test's missing prerequisite fails and says how to get it; only `DRLLM_ALLOW_SKIP` turns it
//! into a skip, which is reported and counted in `DRLLM_SKIP_LOG` (what scripts/test.sh sums up).
//! One test in its own binary: it sets environment variables.

use drllm_engine::testing::{prerequisite, python_has};

#[test]
fn missing_prerequisites_fail_unless_skipping_is_asked_for() {
    std::env::remove_var("DRLLM_ALLOW_SKIP");
    let log = tempfile::NamedTempFile::new().unwrap();
    std::env::set_var("DRLLM_SKIP_LOG", log.path());
    assert!(prerequisite(true, "x", "y"), "present: the test runs");
    let e = std::panic::catch_unwind(|| prerequisite(false, "the thing", "install it"))
        .expect_err("missing without DRLLM_ALLOW_SKIP: a failure");
    let msg = e.downcast_ref::<String>().unwrap();
    assert!(msg.contains("the thing is missing: install it"), "{msg}");
    assert!(msg.contains("scripts/test.sh"), "{msg}");
    assert!(
        std::fs::read_to_string(log.path()).unwrap().is_empty(),
        "a failure is not a skip"
    );

    std::env::set_var("DRLLM_ALLOW_SKIP", "1");
    assert!(!prerequisite(false, "the thing", "install it"));
    assert!(!python_has("no_such_module_drllm", "no-such-package"));
    let skips = std::fs::read_to_string(log.path()).unwrap();
    assert_eq!(skips.lines().count(), 2, "{skips}");
    assert!(skips.contains("no_such_module_drllm"), "{skips}");
    std::env::remove_var("DRLLM_ALLOW_SKIP");
}
