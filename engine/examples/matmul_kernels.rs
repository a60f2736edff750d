//! Throughput of the CPU matmul routes a linear layer can take, on one layer shape: the numbers
//! behind `--dtype auto`'s choice on CPU (BENCHMARKS.md "Weights in their own precision").
//!
//! `cargo run --release -p drllm-engine --example matmul_kernels -- [rows] [in] [out]`

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

fn time(label: &str, flops: f64, mut f: impl FnMut() -> candle_core::Result<Tensor>) {
    f().unwrap();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        f().unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{label:<34} {:>8.2} ms {:>8.1} GFLOP/s",
        best * 1e3,
        flops / best / 1e9
    );
}

fn main() {
    drllm_engine::init_cpu_threads();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (m, k, n) = (
        args.first().copied().unwrap_or(128),
        args.get(1).copied().unwrap_or(2048),
        args.get(2).copied().unwrap_or(8192),
    );
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (m, k), &dev).unwrap();
    let w = Tensor::randn(0f32, 0.02, (n, k), &dev).unwrap();
    let flops = 2.0 * (m * k * n) as f64;
    println!("rows {m}, in {k}, out {n}");
    time("f32 dense", flops, || x.matmul(&w.t()?));
    let wb = w.to_dtype(DType::BF16).unwrap();
    time("bf16 weights, widened per call", flops, || {
        x.matmul(&wb.to_dtype(DType::F32)?.t()?)
    });
    let wh = w.to_dtype(DType::F16).unwrap();
    let xh = x.to_dtype(DType::F16).unwrap();
    time("f16 x f16 (gemm f16)", flops, || xh.matmul(&wh.t()?));
    for dt in [
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
        GgmlDType::Q4_0,
    ] {
        let q = QMatMul::from_qtensor(QTensor::quantize(&w, dt).unwrap()).unwrap();
        time(&format!("{dt:?} quantized matmul"), flops, || q.forward(&x));
        let x1 = x.narrow(0, 0, 1).unwrap();
        time(&format!("{dt:?} one row"), flops / m as f64, || {
            q.forward(&x1)
        });
    }
}
