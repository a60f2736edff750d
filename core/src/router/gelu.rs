//! GELU (tanh approximation) as one fused candle op, forward only. candle's own `gelu` calls
//! libm's `tanhf` per element; here the forward is one pass with `tanh` from one `exp`, split over
//! the CPU threads. The scalar function and its derivative are public: the trainer's fused
//! gradient op (`trainer/src/gelu_grad.rs`, for its hand-written backward pass) evaluates the same
//! numerics. The op has no autograd backward: nothing differentiates through the routers with
//! candle's autograd.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const C: f32 = 0.797_884_6; // sqrt(2 / pi)
const A: f32 = 0.044_715;
/// Elements per parallel work item of the GELU kernels.
pub const CHUNK: usize = 4096;

fn tanh(z: f32) -> f32 {
    // 1 − 2 / (e^{2z} + 1): exact in f32 to a few ulp, saturates cleanly for large |z|.
    1.0 - 2.0 / ((2.0 * z).exp() + 1.0)
}

/// `gelu_tanh(x) = x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³)))` of one value.
pub fn value(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(C * x * (1.0 + A * x * x)))
}

/// `gelu_tanh'(x)` of one value.
pub fn derivative(x: f32) -> f32 {
    let t = tanh(C * x * (1.0 + A * x * x));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * A * x * x)
}

/// The f32 values of a contiguous CPU tensor's storage; an error naming `op` otherwise.
pub fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: needs a contiguous f32 tensor"),
    }
}

/// `gelu_tanh(x) = x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y = value(x)));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

/// GELU, tanh approximation (f32, any shape, CPU).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluTanh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candles_gelu() {
        let v: Vec<f32> = (0..2001).map(|i| (i as f32 - 1000.0) / 100.0).collect();
        let x = Tensor::new(v.as_slice(), &Device::Cpu).unwrap();
        let d = (gelu_tanh(&x).unwrap() - x.gelu().unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
    }
}
