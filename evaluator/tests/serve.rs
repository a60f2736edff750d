//! `evaluator serve` as a real process on loopback, with the real default model, spoken to over
//! plain HTTP in the request shapes lm-eval-harness's `local-completions` sends: token-id prompts
//! in a list, `echo` with `logprobs` and `max_tokens` 0 (log-likelihood) or 1 (greedy check),
//! string prompts with `stop` (generation). The prompt log-probabilities equal the engine's and
//! their sums equal `choice-loglik`'s choice scores (what `evaluator baseline` grades with); bad
//! requests get a 400/404 with an OpenAI-style body and the server keeps serving; routed serving
//! runs and reports the routers' path; SIGTERM ends it cleanly.

use std::process::Command;
use std::time::Duration;

use candle_core::D;
use drllm_contract::RewardMode;
use drllm_core::router::RouterConfig;
use drllm_core::tasks::reward::{prepare, RewardOptions};
use drllm_core::tasks::score_example;
use drllm_engine::{LayerPath, LoadOptions, LoadedModel, Logits, PathCache};
use drllm_tasks::load_dataset;
use drllm_tests::{http_get, http_post};
use serde_json::{json, Value};

mod common;
use common::Server;

const L: usize = 30;
const D_MODEL: usize = 576;

fn model() -> Option<LoadedModel> {
    drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
}

/// Log-probability of each token of `ids` after its predecessors, along `path`, by the engine.
fn engine_logprobs(lm: &LoadedModel, ids: &[u32], path: &LayerPath) -> Vec<f32> {
    let mut cache = PathCache::new(path);
    let logits = lm
        .model
        .forward(ids, path, &mut cache, 0, Logits::From(0))
        .unwrap();
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    (1..ids.len()).map(|i| lp[i - 1][ids[i] as usize]).collect()
}

/// One question's log-likelihood requests: context ids, each choice's continuation ids, and the
/// reward's choice scores.
type Request = (Vec<u32>, Vec<Vec<u32>>, Vec<f64>);

/// The choice-loglik requests of the first `n` ARC-Easy test questions, as lm-eval builds them.
fn loglik_requests(lm: &LoadedModel, n: usize) -> Vec<Request> {
    let opts = RewardOptions::for_model(lm, RewardMode::ChoiceLoglik);
    let data = load_dataset(&"arc_easy".parse().unwrap(), "test", Some(n), false).unwrap();
    data.examples
        .iter()
        .map(|ex| {
            let prep = prepare(lm, ex, &opts).unwrap();
            let conts = prep.continuations().map(<[u32]>::to_vec).collect();
            let full = LayerPath::full(L);
            let scores = score_example(lm, ex, &full, &opts).unwrap().choice_logprobs;
            (prep.prompt_ids.clone(), conts, scores)
        })
        .collect()
}

fn floats(v: &Value) -> Vec<Option<f64>> {
    v.as_array().unwrap().iter().map(Value::as_f64).collect()
}

#[test]
fn completions_answer_lm_eval_requests_as_the_engine_scores() {
    let Some(lm) = model() else { return };
    let srv = Server::start(&[]);
    let name = "smollm2-135m-instruct";
    let models: Value = serde_json::from_str(&http_get(&srv.addr, "/v1/models").1).unwrap();
    assert_eq!(models["data"][0]["id"], name, "{models}");

    // Log-likelihood: every choice of two questions in one request, as token ids.
    for (ctx, conts, scores) in loglik_requests(&lm, 2) {
        let prompts: Vec<Vec<u32>> = conts.iter().map(|c| [&ctx[..], c].concat()).collect();
        let v = srv.complete(json!({"model": name, "prompt": prompts, "max_tokens": 0,
            "echo": true, "logprobs": 1, "temperature": 0}));
        let choices = v["choices"].as_array().unwrap();
        assert_eq!(choices.len(), prompts.len());
        for (i, ((c, ids), want)) in choices.iter().zip(&prompts).zip(&scores).enumerate() {
            assert_eq!(c["index"], i);
            let lp = floats(&c["logprobs"]["token_logprobs"]);
            assert_eq!(lp.len(), ids.len(), "one log-prob per prompt token");
            assert_eq!(lp[0], None, "the first token has none");
            let engine = engine_logprobs(&lm, ids, &LayerPath::full(L));
            for (got, want) in lp[1..].iter().zip(&engine) {
                assert!(
                    (got.unwrap() - *want as f64).abs() < 2e-3,
                    "{got:?} vs {want}"
                );
            }
            let cont: f64 = lp[ctx.len()..].iter().map(|x| x.unwrap()).sum();
            assert!(
                (cont - want).abs() < 5e-3,
                "choice {i}: {cont} vs reward {want}"
            );
            assert_eq!(c["text"], lm.tokenizer.decode(ids).unwrap());
            assert_eq!(c["drllm"]["path_len"], L);
            // The first choice computes the question (but for a start shared with an earlier
            // question); the others take it from the prefix cache but for its last token, whose
            // scores of their own choice only its row gives.
            let cached = c["drllm"]["cached_tokens"].as_u64().unwrap() as usize;
            match i {
                0 => assert!(cached < ctx.len() - 1, "{c}"),
                _ => assert!(cached >= ctx.len() - 1, "{c}"),
            }
            assert_eq!(c["drllm"]["layer_executions"], (ids.len() - cached) * L);
            let top = c["logprobs"]["top_logprobs"][1].as_object().unwrap();
            assert_eq!(top.len(), 1);
            assert!(top.values().next().unwrap().as_f64().unwrap() >= lp[1].unwrap() - 1e-6);
        }
        let total: usize = prompts.iter().map(Vec::len).sum();
        assert_eq!(v["usage"]["prompt_tokens"], total);
        assert_eq!(v["usage"]["completion_tokens"], 0);
    }

    // max_tokens 1 with echo: one more token, the greedy one (lm-eval's is_greedy check).
    let ids = lm
        .tokenizer
        .encode("The capital of France is", true)
        .unwrap();
    let v = srv.complete(
        json!({"prompt": [ids.clone()], "max_tokens": 1, "echo": true,
        "logprobs": 1, "temperature": 0.0}),
    );
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(floats(&lp["token_logprobs"]).len(), ids.len() + 1);
    let last_tok = lp["tokens"][ids.len()].as_str().unwrap();
    let top = lp["top_logprobs"][ids.len()].as_object().unwrap();
    assert_eq!(top.keys().next().unwrap(), last_tok, "{lp}");
    assert_eq!(v["usage"]["completion_tokens"], 1);

    // Concurrent clients: every request is answered (queued), each as it would be alone (but
    // for what the prefix cache saved it).
    let body = json!({"prompt": [ids.clone()], "max_tokens": 2, "echo": true, "logprobs": 2});
    let without_savings = |mut v: Value| {
        let c = &mut v["choices"][0]["drllm"];
        c["cached_tokens"] = json!(null);
        c["layer_executions"] = json!(null);
        v["choices"].clone()
    };
    let alone = without_savings(srv.complete(body.clone()));
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| without_savings(srv.complete(body.clone()))))
            .collect();
        for c in clients {
            assert_eq!(c.join().unwrap(), alone);
        }
    });

    // Generation with a stop string, prompts as strings.
    let v = srv.complete(
        json!({"prompt": ["Question: What is 2 + 2?\nAnswer:", "Hello"],
        "max_tokens": 24, "stop": ["\n"]}),
    );
    for c in v["choices"].as_array().unwrap() {
        assert!(!c["text"].as_str().unwrap().contains('\n'), "{c}");
        assert!(["stop", "length"].contains(&c["finish_reason"].as_str().unwrap()));
        assert!(c["logprobs"].is_null());
    }

    // Chat through the model's template.
    let (code, v) = srv.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 12, "logprobs": true, "top_logprobs": 2}),
    );
    assert_eq!(code, 200, "{v}");
    let c = &v["choices"][0];
    assert_eq!(c["message"]["role"], "assistant");
    assert!(!c["message"]["content"].as_str().unwrap().is_empty(), "{v}");
    assert_eq!(
        c["logprobs"]["content"][0]["top_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(c["drllm"]["path_len"], L);

    bad_requests_get_openai_errors(&srv, name);
    let metrics = http_get(&srv.addr, "/metrics").1;
    assert!(metrics.contains("drllm_serve_requests_total"), "{metrics}");
}

/// Each malformed request gets its status and an OpenAI error body naming the field; the server
/// keeps serving.
fn bad_requests_get_openai_errors(srv: &Server, name: &str) {
    let too_long = vec![1u32; 9000];
    let cases = [
        (json!({"max_tokens": 1}), 400, "prompt"),
        (json!({"prompt": [49152000]}), 400, "prompt"),
        (json!({"prompt": "hi", "max_tokens": -1}), 400, "max_tokens"),
        (
            json!({"prompt": "hi", "temperature": 3}),
            400,
            "temperature",
        ),
        (json!({"prompt": "hi", "top_p": 0}), 400, "top_p"),
        (json!({"prompt": "hi", "n": 17}), 400, "n"),
        (
            json!({"prompt": "hi", "n": 2, "best_of": 4}),
            400,
            "best_of",
        ),
        (
            json!({"prompt": "hi", "presence_penalty": 1}),
            400,
            "presence_penalty",
        ),
        (json!({"prompt": "hi", "model": "gpt-4"}), 404, "model"),
        (json!({"prompt": "hi", "stream": "yes"}), 400, "stream"),
        (
            json!({"prompt": "hi", "stream_options": {"include_usage": true}}),
            400,
            "stream_options",
        ),
        (
            json!({"prompt": "hi", "stream": true, "echo": true, "logprobs": 1}),
            400,
            "stream",
        ),
        (json!({"prompt": "hi", "logprobs": 50}), 400, "logprobs"),
        (json!({"prompt": "hi", "stop": [""]}), 400, "stop"),
        (json!({"prompt": too_long}), 400, "prompt"),
        (json!({"prompt": [[1, 2], "x", 3]}), 400, "prompt"),
    ];
    for (body, code, param) in cases {
        let (got, v) = srv.post("/v1/completions", &body);
        assert_eq!(got, code, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let (code, text) = http_post(&srv.addr, "/v1/completions", "{not json");
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("not valid JSON"), "{text}");
    let (code, v) = srv.post(
        "/v1/chat/completions",
        &json!({"model": name, "messages": []}),
    );
    assert_eq!(
        (code, &v["error"]["param"]),
        (400, &json!("messages")),
        "{v}"
    );
    assert_eq!(http_get(&srv.addr, "/healthz").0, 200);
}

#[test]
fn routed_serving_runs_and_reports_the_routers_path() {
    let Some(lm) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("skip7");
    RouterConfig::new(
        "default",
        &lm.fingerprint,
        L,
        D_MODEL,
        8,
        drllm_tests::training(),
    )
    .save(&ckpt, &drllm_tests::constant_routers(L, D_MODEL, &[7]))
    .unwrap();
    let mut srv = Server::start(&["--routers", ckpt.to_str().unwrap(), "--budget", "-0.5"]);
    let ids = lm
        .tokenizer
        .encode(
            "Question: Which gas do plants take in?\nAnswer: carbon dioxide",
            true,
        )
        .unwrap();
    let v = srv.complete(json!({"prompt": ids, "max_tokens": 3, "echo": true, "logprobs": 0}));
    let c = &v["choices"][0];
    let without7: Vec<u16> = (0..L as u16).filter(|&l| l != 7).collect();
    assert_eq!(c["drllm"]["path"], json!(without7), "{c}");
    assert_eq!(v["drllm"]["routed"], true);
    let path = LayerPath::new(without7, L).unwrap();
    let engine = engine_logprobs(&lm, &ids, &path);
    let lp = floats(&c["logprobs"]["token_logprobs"]);
    for (got, want) in lp[1..ids.len()].iter().zip(&engine) {
        assert!(
            (got.unwrap() - *want as f64).abs() < 2e-3,
            "{got:?} vs {want}"
        );
    }
    // Prompt rows plus the generated tokens fed back (all but the last one reported, which is
    // the end token or the max_tokens-th), each on 29 layers.
    let generated = v["usage"]["completion_tokens"].as_u64().unwrap() as usize;
    assert!(generated >= 1);
    assert_eq!(
        c["drllm"]["layer_executions"],
        (ids.len() + generated - 1) * (L - 1)
    );

    // SIGTERM: a clean exit.
    let pid = srv.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = drllm_tests::wait_timeout(&mut srv.child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

#[test]
fn token_routed_serving_runs_the_token_route_at_prefill_and_decode() {
    use drllm_core::router::{GateInput, TokenRouter};
    use drllm_engine::exec::{Route, Rows};
    use drllm_engine::layer::Segments;
    let Some(lm) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("random");
    let mut cfg =
        drllm_tests::token_router_config(&lm.fingerprint, L, D_MODEL, 4, GateInput::Contextual);
    cfg.random_skip = Some(0.3);
    let router = TokenRouter::init(cfg, 4.0).unwrap();
    router.save(&ckpt).unwrap();
    let srv = Server::start(&["--routers", ckpt.to_str().unwrap(), "--budget", "0.5"]);
    let ids = lm
        .tokenizer
        .encode("Question: Which gas do plants take in?\nAnswer:", true)
        .unwrap();
    let v = srv.complete(json!({"prompt": ids, "max_tokens": 4, "echo": true, "logprobs": 0}));
    let c = &v["choices"][0];

    // The engine's token route on the prompt, then greedy decoding with each token's own gates.
    let model = &lm.model;
    let t = ids.len();
    let segs = Segments {
        ctx: t,
        conts: Vec::new(),
    };
    let mut slots = Vec::new();
    let mut gate = router.gate(0.5);
    let mut decide = |l: usize, x: &candle_core::Tensor| gate.decide(l, x);
    let route = Route::Tokens {
        gate: &mut decide,
        kv: router.kv(),
    };
    let rows = Rows::Fused {
        segs: &segs,
        slots: &mut slots,
    };
    let pass = model
        .run_path(model.embed(&ids).unwrap(), rows, route, |_, _, _| ())
        .unwrap();
    let mut ran = gate.ran;
    assert!(ran < (t * L) as u64, "the control skips token-layers");
    let logits = model.head(&pass.hidden).unwrap();
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let got = floats(&c["logprobs"]["token_logprobs"]);
    for i in 1..t {
        let want = lp[i - 1][ids[i] as usize] as f64;
        assert!(
            (got[i].unwrap() - want).abs() < 2e-3,
            "{i}: {:?} vs {want}",
            got[i]
        );
    }
    let mut cache = PathCache::from_slots(&LayerPath::full(L), slots, t).unwrap();
    let last = logits.narrow(0, t - 1, 1).unwrap();
    let feed = |cache: &mut PathCache, next: u32, pos: usize| {
        let mut gate = router.gate(0.5);
        let mut decide = |l: usize, x: &candle_core::Tensor| gate.decide(l, x);
        let logits = model.forward_tokens(&[next], cache, pos, &mut decide, router.kv());
        ran += gate.ran;
        logits
    };
    let g = drllm_engine::greedy_fed(model, &mut cache, &last, 4, |_| false, |_, _| Ok(()), feed)
        .unwrap();
    let text = c["text"].as_str().unwrap();
    assert!(
        text.ends_with(&lm.tokenizer.decode(&g.tokens).unwrap()),
        "{c}"
    );
    assert_eq!(c["drllm"]["layer_executions"], ran, "{c}");
}

#[test]
fn the_prefix_cache_changes_no_output() {
    let Some(lm) = model() else { return };
    // The default kernels, q8_0 decode copy included: rows computed after a hit are the bits a
    // whole pass computes, so not even the decode copy's 8-bit rounding can tell.
    let without = Server::start(&["--prefix-cache-mib", "0"]);
    let with = Server::start(&[]);
    // lm-eval's shape: one request per choice, context then continuation; then a chat asked
    // twice (the second reuses the first's prompt) and a longer one sharing its start.
    let mut bodies: Vec<(&str, Value)> = Vec::new();
    for (ctx, conts, _) in loglik_requests(&lm, 3) {
        for c in conts {
            let ids = [&ctx[..], &c[..]].concat();
            let body = json!({"prompt": [ids], "max_tokens": 0, "echo": true, "logprobs": 1});
            bodies.push(("/v1/completions", body));
        }
    }
    let chat = |content: &str| {
        json!({"messages": [{"role": "user", "content": content}], "max_tokens": 10,
            "logprobs": true, "top_logprobs": 3})
    };
    for content in [
        "Name a planet.",
        "Name a planet.",
        "Name a planet. Then name a star.",
    ] {
        bodies.push(("/v1/chat/completions", chat(content)));
    }
    let (mut cached, mut worst) = (0, 0f64);
    for (path, body) in &bodies {
        let (a, b) = (without.post(path, body), with.post(path, body));
        assert_eq!((a.0, b.0), (200, 200), "{}\n{}", a.1, b.1);
        let (mut a, mut b) = (a.1, b.1);
        cached += b["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        for v in [&mut a, &mut b] {
            v["id"] = json!(null);
            v["created"] = json!(null);
            v["usage"]["prompt_tokens_details"] = json!(null);
            v["drllm"]["layer_executions"] = json!(null);
            let c = &mut v["choices"][0]["drllm"];
            c["cached_tokens"] = json!(null);
            c["layer_executions"] = json!(null);
        }
        worst = worst.max(max_number_diff(&a, &b, &format!("{path} {body}")));
    }
    assert_eq!(worst, 0.0, "log-probabilities {worst} apart");
    assert!(cached > 100, "the cache reused only {cached} tokens");
    let metrics = http_get(&with.addr, "/metrics").1;
    let hits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("drllm_serve_prefix_cache_hits_total "))
        .unwrap_or_else(|| panic!("no hit counter in {metrics}"));
    assert!(hits.trim().parse::<u64>().unwrap() >= 9, "{metrics}");
}

/// The largest difference between the numbers of `a` and `b`, which must otherwise be equal
/// (same shape, same strings: the same tokens and texts).
fn max_number_diff(a: &Value, b: &Value, at: &str) -> f64 {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x.as_f64().unwrap() - y.as_f64().unwrap()).abs(),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => (x.iter().zip(y))
            .map(|(x, y)| max_number_diff(x, y, at))
            .fold(0.0, f64::max),
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => x
            .iter()
            .map(|(k, v)| max_number_diff(v, y.get(k).unwrap_or(&Value::Null), at))
            .fold(0.0, f64::max),
        _ => {
            assert_eq!(a, b, "{at}");
            0.0
        }
    }
}
