//! Logging set-up shared by every drllm binary, kept apart so that a binary without the engine
//! (the coordinator) logs exactly like one with it.

#![warn(missing_docs)]

/// Logs to stderr: `RUST_LOG` filters (else `default_filter`), JSON lines with `json` (for log
/// collectors), colours only on a terminal.
pub fn init(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}
