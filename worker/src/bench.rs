//! `worker bench`: prefill and decode throughput of the engine on this machine, with memory, as
//! one JSON line. BENCHMARKS.md records its output next to llama.cpp's on the same token ids
//! (bench/llama_cpp_bench.py uses the same ids: `bench_ids` below).

use std::time::Instant;

use drllm_engine::{argmax, LayerPath, Logits, PathCache};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    /// Prompt tokens per prefill.
    #[arg(long, default_value_t = 128)]
    prefill: usize,
    /// Tokens decoded one at a time after the prefill.
    #[arg(long, default_value_t = 64)]
    decode: usize,
    /// Timed repetitions (the best is reported; one untimed warm-up runs first).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

/// The benchmark's prompt: deterministic ids spread over the vocabulary (same in the Python script).
pub fn bench_ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + 13) % (vocab - 100) + 100) as u32)
        .collect()
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let lm = a.model.load()?;
    let load_s = t0.elapsed().as_secs_f64();
    let model = &lm.model;
    let ids = bench_ids(a.prefill, model.config().vocab_size);
    let path = LayerPath::full(model.num_layers());
    let (mut best_prefill, mut best_decode) = (f64::MAX, f64::MAX);
    let mut cache_bytes = 0;
    for rep in 0..=a.repeats {
        let mut cache = PathCache::new(&path);
        let t = Instant::now();
        let logits = model.forward(&ids, &path, &mut cache, 0, Logits::Last)?;
        let mut next = argmax(&logits)?;
        let prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..a.decode {
            let pos = cache.len();
            let logits = model.forward(&[next], &path, &mut cache, pos, Logits::Last)?;
            next = argmax(&logits)?;
        }
        let decode = t.elapsed().as_secs_f64();
        cache_bytes = cache.size_in_bytes();
        if rep > 0 {
            best_prefill = best_prefill.min(prefill);
            best_decode = best_decode.min(decode);
        }
    }
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    let memory = model.memory();
    let out = serde_json::json!({
        "model": lm.id,
        "device": a.model.device.to_string(),
        "dtype": if a.model.exact { "f32 (exact)".to_string() } else { format!("{:?}", a.model.dtype) },
        "decode_weights": if a.model.exact {
            "none (exact)".to_string()
        } else {
            format!("{:?}", a.model.decode_weights.0)
        },
        "exact": a.model.exact,
        "threads": drllm_engine::init_cpu_threads(),
        "load_s": load_s,
        "prefill_tokens": a.prefill,
        "prefill_tok_s": a.prefill as f64 / best_prefill,
        "decode_tokens": a.decode,
        "decode_tok_s": a.decode as f64 / best_decode,
        "weights_mib": mib(memory.weights),
        "decode_copy_mib": mib(memory.decode_copy),
        "kv_cache_mib": mib(cache_bytes),
        "rss_mib": proc_status_kib("VmRSS:").map(|k| k as f64 / 1024.0),
        "peak_rss_mib": proc_status_kib("VmHWM:").map(|k| k as f64 / 1024.0),
    });
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
