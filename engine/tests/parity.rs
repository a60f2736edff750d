//! The engine's default path against candle-transformers' own implementations on the same tiny
//! random weights: llama (HF safetensors), quantized_llama (GGUF), qwen2 and qwen3. Also: every
//! supported ggml dtype loads to the exact dequantized weights, HF and GGUF copies of one model
//! agree for each architecture, half-precision and sharded checkpoints load.

mod common;

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models as ct;
use common::{ids, max_abs_diff, Tiny};
use drllm_engine::{DTypeChoice, LayerPath, LoadOptions, Logits, Model, PathCache};

const TOL: f32 = 1e-4;

fn ours_last(model: &Model, ids: &[u32]) -> Tensor {
    let path = LayerPath::full(model.num_layers());
    let mut cache = PathCache::new(&path);
    model
        .forward(ids, &path, &mut cache, 0, Logits::Last)
        .unwrap()
        .squeeze(0)
        .unwrap()
}

fn input(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn candle_llama(dir: &std::path::Path, ids: &[u32]) -> Tensor {
    let cfg: ct::llama::LlamaConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let model = ct::llama::Llama::load(vb, &cfg).unwrap();
    let mut cache = ct::llama::Cache::new(true, DType::F32, &cfg, &Device::Cpu).unwrap();
    model
        .forward(&input(ids), 0, &mut cache)
        .unwrap()
        .squeeze(0)
        .unwrap()
}

fn candle_quantized_llama(path: &std::path::Path, ids: &[u32]) -> Tensor {
    let mut f = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut m =
        ct::quantized_llama::ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap();
    m.forward(&input(ids), 0).unwrap().squeeze(0).unwrap()
}

#[test]
fn hf_llama_matches_candle_llama() {
    for (tie, scaling) in [(false, false), (true, true)] {
        let tiny = Tiny {
            tie,
            llama3_scaling: scaling,
            ..Tiny::llama()
        };
        let dir = tempfile::tempdir().unwrap();
        tiny.write_hf(dir.path(), &tiny.weights(1), DType::F32, 1);
        let model = Model::from_hf_dir(dir.path(), &LoadOptions::exact()).unwrap();
        // Long enough that llama3 scaling changes low frequencies noticeably.
        let ids = ids(40, tiny.vocab, 2);
        let d = max_abs_diff(&ours_last(&model, &ids), &candle_llama(dir.path(), &ids));
        assert!(d < TOL, "tie={tie} llama3={scaling}: max |diff| {d}");
    }
}

#[test]
fn gguf_llama_matches_candle_quantized_llama() {
    let tiny = Tiny::llama();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    tiny.write_gguf(&path, &tiny.weights(3), GgmlDType::F32);
    let model = Model::from_gguf(&path, &LoadOptions::exact()).unwrap();
    let ids = ids(17, tiny.vocab, 4);
    let d = max_abs_diff(
        &ours_last(&model, &ids),
        &candle_quantized_llama(&path, &ids),
    );
    assert!(d < TOL, "max |diff| {d}");
}

/// Each ggml dtype: our f32 engine on the quantized file equals candle's quantized_llama on an F32
/// file holding the dequantized weights, so loading dequantizes exactly.
#[test]
fn every_supported_gguf_dtype_loads_exactly() {
    let tiny = Tiny::llama_k_quant();
    let w = tiny.weights(5);
    let dir = tempfile::tempdir().unwrap();
    let ids = ids(9, tiny.vocab, 6);
    for dtype in [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
        GgmlDType::F16,
        GgmlDType::F32,
    ] {
        let qpath = dir.path().join(format!("{dtype:?}.gguf"));
        tiny.write_gguf(&qpath, &w, dtype);
        // Dequantize what the file holds (already permuted) and write it back as f32.
        let mut f = std::fs::File::open(&qpath).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
        names.sort();
        let deq: Vec<(String, candle_core::quantized::QTensor)> = names
            .iter()
            .map(|n| {
                let t = content
                    .tensor(&mut f, n, &Device::Cpu)
                    .unwrap()
                    .dequantize(&Device::Cpu)
                    .unwrap();
                (
                    n.clone(),
                    candle_core::quantized::QTensor::quantize(&t, GgmlDType::F32).unwrap(),
                )
            })
            .collect();
        let fpath = dir.path().join(format!("{dtype:?}-dequantized.gguf"));
        let md: Vec<(&str, &gguf_file::Value)> = content
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let ts: Vec<(&str, &candle_core::quantized::QTensor)> =
            deq.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut std::fs::File::create(&fpath).unwrap(), &md, &ts).unwrap();

        let ours = ours_last(
            &Model::from_gguf(&qpath, &LoadOptions::exact()).unwrap(),
            &ids,
        );
        let theirs = candle_quantized_llama(&fpath, &ids);
        let d = max_abs_diff(&ours, &theirs);
        assert!(d < TOL, "{dtype:?}: max |diff| {d}");
    }
}

/// GGUF conventions per architecture: llama q/k permuted for interleaved RoPE and Llama 3 scaling
/// as a `rope_freqs` tensor; qwen2/qwen3 unpermuted (NEOX RoPE) with biases / q-k norms.
#[test]
fn gguf_conventions_of_each_architecture_match_the_hf_copy() {
    let cases = [
        Tiny::llama(),
        Tiny {
            llama3_scaling: true,
            ..Tiny::llama()
        },
        Tiny {
            tie: true,
            ..Tiny::llama()
        },
        Tiny::qwen2(),
        Tiny::qwen3(),
    ];
    for tiny in cases {
        let w = tiny.weights(17);
        let dir = tempfile::tempdir().unwrap();
        tiny.write_hf(dir.path(), &w, DType::F32, 1);
        let gguf = dir.path().join("m.gguf");
        tiny.write_gguf(&gguf, &w, GgmlDType::F32);
        let ids = ids(40, tiny.vocab, 18);
        let a = ours_last(
            &Model::from_hf_dir(dir.path(), &LoadOptions::exact()).unwrap(),
            &ids,
        );
        let b = ours_last(
            &Model::from_gguf(&gguf, &LoadOptions::exact()).unwrap(),
            &ids,
        );
        let d = max_abs_diff(&a, &b);
        assert!(
            d < TOL,
            "{} (llama3 scaling {}): max |diff| {d}",
            tiny.arch,
            tiny.llama3_scaling
        );
    }
}

#[test]
fn half_precision_and_sharded_checkpoints_load() {
    let tiny = Tiny::llama();
    let w = tiny.weights(9);
    let ids = ids(11, tiny.vocab, 10);
    let base = tempfile::tempdir().unwrap();
    let f32_dir = base.path().join("f32");
    tiny.write_hf(&f32_dir, &w, DType::F32, 1);
    let reference = ours_last(
        &Model::from_hf_dir(&f32_dir, &LoadOptions::exact()).unwrap(),
        &ids,
    );
    let sharded = base.path().join("sharded");
    tiny.write_hf(&sharded, &w, DType::F32, 3);
    let s = ours_last(
        &Model::from_hf_dir(&sharded, &LoadOptions::exact()).unwrap(),
        &ids,
    );
    assert!(max_abs_diff(&reference, &s) < 1e-6, "sharded differs");
    for dtype in [DType::BF16, DType::F16] {
        let dir = base.path().join(format!("{dtype:?}"));
        tiny.write_hf(&dir, &w, dtype, 1);
        let ours = ours_last(
            &Model::from_hf_dir(&dir, &LoadOptions::exact()).unwrap(),
            &ids,
        );
        // candle's llama reading the same half-precision file, upcast to f32.
        let theirs = candle_llama(&dir, &ids);
        let d = max_abs_diff(&ours, &theirs);
        assert!(d < TOL, "{dtype:?}: max |diff| {d}");
        // and rounding the weights did change the output (the file really is half precision)
        assert!(
            max_abs_diff(&ours, &reference) > 1e-5,
            "{dtype:?} file looks like f32"
        );
    }
}

/// Writes `tiny` as an f32 HF folder and compares our last-position logits with the logits
/// `theirs` computes from a VarBuilder over the same file and the `[1, seq]` input ids.
fn check_hf_against(tiny: &Tiny, seed: u64, theirs: impl FnOnce(VarBuilder, &Tensor) -> Tensor) {
    let dir = tempfile::tempdir().unwrap();
    tiny.write_hf(dir.path(), &tiny.weights(seed), DType::F32, 1);
    let ids = ids(19, tiny.vocab, seed + 1);
    let ours = ours_last(
        &Model::from_hf_dir(dir.path(), &LoadOptions::exact()).unwrap(),
        &ids,
    );
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.path().join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let theirs = theirs(vb, &input(&ids)).flatten_all().unwrap();
    let d = max_abs_diff(&ours, &theirs);
    assert!(d < TOL, "{}: max |diff| {d}", tiny.arch);
}

#[test]
fn qwen2_matches_candle_qwen2() {
    let tiny = Tiny::qwen2();
    let cfg: ct::qwen2::Config = serde_json::from_value(tiny.config_json()).unwrap();
    check_hf_against(&tiny, 11, |vb, x| {
        let mut m = ct::qwen2::ModelForCausalLM::new(&cfg, vb).unwrap();
        m.forward(x, 0).unwrap()
    });
}

#[test]
fn qwen3_matches_candle_qwen3() {
    let tiny = Tiny::qwen3();
    let cfg: ct::qwen3::Config = serde_json::from_value(tiny.config_json()).unwrap();
    check_hf_against(&tiny, 13, |vb, x| {
        let mut m = ct::qwen3::ModelForCausalLM::new(&cfg, vb).unwrap();
        m.forward(x, 0).unwrap()
    });
}

/// The quantized decode weights are an approximation of the f32 ones: close, not equal.
#[test]
fn quantized_decode_weights_stay_close_to_exact() {
    let tiny = Tiny::llama_k_quant();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q8.gguf");
    tiny.write_gguf(&path, &tiny.weights(15), GgmlDType::Q8_0);
    let exact = Model::from_gguf(&path, &LoadOptions::exact()).unwrap();
    let fast = Model::from_gguf(&path, &LoadOptions::default()).unwrap();
    let ids = ids(1, tiny.vocab, 16); // one token: the quantized kernels run
    let a = ours_last(&exact, &ids);
    let b = ours_last(&fast, &ids);
    let scale = a.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let d = max_abs_diff(&a, &b);
    assert!(d > 0.0, "decode did not use the quantized weights");
    assert!(d < 0.05 * scale, "max |diff| {d} vs logit scale {scale}");
}

#[test]
fn weights_keep_their_precision_and_auto_computes_int8_where_it_pays() {
    let tiny = Tiny::llama_k_quant();
    let dir = tempfile::tempdir().unwrap();
    let w = tiny.weights(17);
    tiny.write_hf(dir.path(), &w, DType::BF16, 1);
    let f32_bytes: usize = w.values().map(|t| t.elem_count() * 4).sum();
    let exact = Model::from_hf_dir(dir.path(), &LoadOptions::exact()).unwrap();
    let m = exact.memory();
    assert_eq!(m.decode_copy, 0);
    assert!(
        m.weights * 10 < f32_bytes * 6,
        "bf16 weights widened on load: {} bytes vs {f32_bytes} in f32",
        m.weights
    );
    let f32_copy = LoadOptions {
        dtype: DTypeChoice::F32,
        ..LoadOptions::default()
    };
    let dense = Model::from_hf_dir(dir.path(), &f32_copy).unwrap();
    assert_eq!(dense.memory().weights, m.weights);
    assert!(dense.memory().decode_copy > 0, "no q8_0 decode copy");
    let auto = Model::from_hf_dir(dir.path(), &LoadOptions::default()).unwrap();
    let ids = ids(24, tiny.vocab, 18);
    let (a, b) = (ours_last(&exact, &ids), ours_last(&auto, &ids));
    let scale = a.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let d = max_abs_diff(&a, &b);
    if drllm_engine::batched_int8_available() {
        // Every matrix is q8_0 only: no dense copy, no decode copy, prefill quantized too.
        assert_eq!(auto.memory().decode_copy, 0);
        assert!(
            auto.memory().weights < m.weights,
            "{:?} vs {m:?}",
            auto.memory()
        );
        assert!(d > 0.0, "the prefill did not use the int8 kernel");
    } else {
        assert_eq!(auto.memory(), dense.memory());
    }
    assert!(d < 0.05 * scale, "max |diff| {d} vs logit scale {scale}");
}
