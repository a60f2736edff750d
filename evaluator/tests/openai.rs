//! The `openai` Python client from PyPI speaks to `evaluator serve` (a real process, the real
//! default model): streaming and whole answers agree, sampling is reproducible by seed, `n`
//! choices, stop strings in streams, usage in the last chunk (`python/openai_client.py`).

mod common;
use common::Server;

#[test]
fn the_openai_client_streams_samples_and_gets_the_same_answers() {
    let model = drllm_engine::testing::default_model_for_tests();
    if model.is_none() || !drllm_engine::testing::python_has("openai", "openai") {
        return;
    }
    // Without the prefix cache: a streamed answer and a whole one then run the same arithmetic
    // (with it, the second reuses the first's rows, equal up to float rounding).
    let srv = Server::start(&["--prefix-cache-mib", "0"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openai_client.py");
    let out = drllm_engine::testing::run(
        std::process::Command::new("python3")
            .arg(script)
            .arg(format!("http://{}/v1", srv.addr)),
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["completion_chunks"].as_u64().unwrap() > 2, "{v}");
    assert!(v["sampled_distinct"].as_u64().unwrap() > 1, "{v}");
}
