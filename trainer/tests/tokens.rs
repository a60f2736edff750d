//! The token trainer's loss: with every token run it is the distillation of the model onto
//! itself (zero, so the differentiable pass equals inference); its gradient through the frozen
//! layers, by candle's autograd, equals central finite differences; a short `trainer tokens`
//! run on the default model writes a checkpoint that loads, resumes and routes.

use candle_core::{DType, Tensor, Var};
use drllm_core::router::{GateInput, TokenRouter, TokenRouterConfig};
use drllm_engine::testing::{ids, Tiny};
use drllm_engine::{LoadOptions, Model, RowMeta, Rows, SkippedKv};
use drllm_trainer::tokens::{token_loss, LossSettings, TokenExample};
use rand::{rngs::StdRng, SeedableRng};

fn tiny_model() -> (tempfile::TempDir, Model) {
    let tiny = Tiny::qwen2();
    let dir = tempfile::tempdir().unwrap();
    tiny.write_hf(dir.path(), &tiny.weights(21), DType::F32, 1);
    let m = Model::from_hf_dir(dir.path(), &LoadOptions::exact()).unwrap();
    (dir, m)
}

fn config(model: &Model, keep_first: usize, gate_input: GateInput) -> TokenRouterConfig {
    let (layers, d) = (model.num_layers(), model.config().hidden_size);
    drllm_tests::token_router_config("f", layers, d, keep_first, gate_input)
}

fn example(model: &Model, n: usize) -> TokenExample {
    let seq = ids(n, model.config().vocab_size, 4);
    let x = model.embed(&seq).unwrap();
    let meta = RowMeta::sequence(0, n);
    TokenExample::from_rows(model, "q", x, Rows::Uncached, meta, (0, n), 2.0).unwrap()
}

fn settings(kv: SkippedKv, hard: bool) -> LossSettings {
    LossSettings {
        kv,
        tau: 1.0,
        hard,
        noise: false,
        kd_temperature: 2.0,
        target: 0.5,
        lambda: 0.1,
        mu: 1.0,
    }
}

#[test]
fn running_every_token_distils_to_zero() {
    let (_dir, model) = tiny_model();
    let ex = example(&model, 9);
    let router = TokenRouter::init(config(&model, 1, GateInput::Contextual), 30.0).unwrap();
    for kv in [SkippedKv::Mask, SkippedKv::Project] {
        let mut rng = StdRng::seed_from_u64(0);
        let parts = token_loss(&model, &router, &ex, &settings(kv, true), &mut rng).unwrap();
        assert!(parts.kd.abs() < 1e-5, "{kv}: kd {}", parts.kd);
        assert_eq!(parts.execute, 1.0);
    }
}

/// d loss / d (one entry of `var`) by central differences.
fn numeric(var: &Var, at: usize, loss: &dyn Fn() -> f64) -> f64 {
    let orig = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let shape = var.as_tensor().shape().clone();
    let h = 1e-2f32;
    let eval = |delta: f32| {
        let mut v = orig.clone();
        v[at] += delta;
        var.set(&Tensor::from_vec(v, shape.clone(), var.device()).unwrap())
            .unwrap();
        loss()
    };
    let (plus, minus) = (eval(h), eval(-h));
    eval(0.0);
    (plus - minus) / (2.0 * h as f64)
}

#[test]
fn the_gradient_through_the_frozen_layers_matches_finite_differences() {
    let (_dir, model) = tiny_model();
    let ex = example(&model, 8);
    for (gate_input, kv) in [
        (GateInput::Contextual, SkippedKv::Project),
        (GateInput::Own, SkippedKv::Mask),
    ] {
        let router = TokenRouter::init(config(&model, 1, gate_input), 0.5).unwrap();
        let s = settings(kv, false);
        let loss = || {
            let mut rng = StdRng::seed_from_u64(0);
            let p = token_loss(&model, &router, &ex, &s, &mut rng).unwrap();
            p.loss.to_scalar::<f32>().unwrap() as f64
        };
        let mut rng = StdRng::seed_from_u64(0);
        let parts = token_loss(&model, &router, &ex, &s, &mut rng).unwrap();
        let grads = parts.loss.backward().unwrap();
        let vars = router.vars();
        for (vi, at) in [(3usize, 0usize), (3, 2), (2, 5), (1, 3), (0, 17)] {
            let var = &vars[vi];
            let g = grads.get(var.as_tensor()).unwrap();
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap()[at] as f64;
            let n = numeric(var, at, &loss);
            let tol = 2e-2 * n.abs().max(g.abs()) + 1e-4;
            assert!(
                (g - n).abs() < tol,
                "{gate_input:?}/{kv}: var {vi}[{at}]: autograd {g}, finite differences {n}"
            );
        }
    }
}

#[test]
fn on_the_default_model_running_every_token_distils_to_zero() {
    let Some(lm) = drllm_engine::testing::load_default_model_for_tests(&LoadOptions::exact())
    else {
        return;
    };
    let task = drllm_contract::RewardSettings::new(drllm_contract::RewardMode::ChoiceLoglik);
    let opts = drllm_core::tasks::reward::RewardOptions::resolve(&lm, &task).unwrap();
    let data =
        drllm_tasks::load_dataset(&drllm_tasks::DatasetSpec::ArcEasy, "train", Some(2), false)
            .unwrap();
    let router = TokenRouter::init(config(&lm.model, 4, GateInput::Contextual), 30.0).unwrap();
    for ex in &data.examples {
        let prep = drllm_core::tasks::reward::prepare(&lm, ex, &opts).unwrap();
        let ex = TokenExample::new(&lm, &ex.id, &prep, false, 2.0).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        let s = settings(SkippedKv::Mask, true);
        let parts = token_loss(&lm.model, &router, &ex, &s, &mut rng).unwrap();
        assert!(parts.kd.abs() < 1e-4, "kd {}", parts.kd);
    }
}

#[test]
fn the_gradient_matches_torch_autograd_on_a_tiny_shaped_model() {
    use drllm_engine::testing::{make_shaped, python_prerequisites, repo, run};
    if !python_prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qwen2");
    make_shaped("qwen2", "v5", "f32", false, &dir);
    let model = Model::from_hf_dir(&dir, &LoadOptions::exact()).unwrap();
    let n = 12;
    let ids: Vec<u32> = (0..n as u32)
        .map(|i| (i * 7919 + 13) % 49000 + 100)
        .collect();
    let x = model.embed(&ids).unwrap();
    let meta = RowMeta::sequence(0, n);
    let ex = TokenExample::from_rows(&model, "q", x, Rows::Uncached, meta, (0, n), 2.0).unwrap();
    let router = TokenRouter::init(config(&model, 1, GateInput::Contextual), 0.5).unwrap();
    // Project: the keys every query sees do not depend on the gates' hard flags, so rounding at
    // a flag's 0.5 cannot make the two sides run different masks.
    let s = settings(SkippedKv::Project, false);
    let mut rng = StdRng::seed_from_u64(0);
    let parts = token_loss(&model, &router, &ex, &s, &mut rng).unwrap();
    let grads = parts.loss.backward().unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let names = ["w1", "b1", "w2", "b2"];
    let mut spec = serde_json::json!({
        "ids": ids, "kv": "project", "tau": s.tau, "kd_temperature": s.kd_temperature,
        "target": s.target, "lambda": s.lambda, "mu": s.mu,
        "router": {"keep_first": 1, "shape": router.w1.as_tensor().dims()},
    });
    for (name, var) in names.iter().zip(router.vars()) {
        spec["router"][*name] = serde_json::json!(flat(var.as_tensor()));
    }
    let input = tmp.path().join("grad.json");
    std::fs::write(&input, spec.to_string()).unwrap();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(repo().join("scripts/torch_token_mix.py"))
        .arg("--model")
        .arg(&dir)
        .arg("--input")
        .arg(&input);
    let torch: serde_json::Value = serde_json::from_str(&run(&mut cmd)).unwrap();
    let loss = parts.loss.to_scalar::<f32>().unwrap() as f64;
    let want = torch["loss"].as_f64().unwrap();
    assert!(
        (loss - want).abs() < 1e-4 * want.abs().max(1.0),
        "loss {loss} vs torch {want}"
    );
    for (name, var) in names.iter().zip(router.vars()) {
        let got = flat(grads.get(var.as_tensor()).unwrap());
        let want: Vec<f32> = torch["grads"][*name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let (d, scale) = drllm_engine::testing::max_diff_and_scale(&got, &want, 1e-8);
        assert!(
            d / scale < 1e-3,
            "{name}: autograd differs from torch by {d} of {scale}"
        );
    }
}
