//! The fused gradient of the routers' GELU (tanh approximation) for the hand-written backward
//! pass ([`crate::step`]): `g · gelu_tanh'(x)` in one pass over the CPU threads, instead of
//! candle's gradient built from `powf` and half a dozen temporaries. The numerics (the derivative
//! with `tanh` from one `exp`) are drllm-core's, next to the forward op.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use drllm_core::router::{cpu_f32s, gelu_tanh_derivative, GELU_CHUNK};
use rayon::prelude::*;

/// `grad · gelu_tanh'(x)`.
struct GeluTanhGrad;

impl CustomOp2 for GeluTanhGrad {
    fn name(&self) -> &'static str {
        "gelu-tanh-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (
            cpu_f32s(s1, l1, self.name())?,
            cpu_f32s(s2, l2, self.name())?,
        );
        if x.len() != g.len() {
            candle_core::bail!("{}: shapes differ", self.name());
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(GELU_CHUNK)
            .zip(x.par_chunks(GELU_CHUNK).zip(g.par_chunks(GELU_CHUNK)))
            .for_each(|(o, (x, g))| {
                for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                    *o = g * gelu_tanh_derivative(x);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `g · gelu_tanh'(x)` (f32, same shapes, CPU), without autograd.
pub fn gelu_tanh_grad(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&g.contiguous()?, &GeluTanhGrad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Against candle's autograd of its own (tanh-approximated) `gelu`.
    #[test]
    fn matches_the_gradient_of_candles_gelu() {
        let v: Vec<f32> = (0..2001).map(|i| (i as f32 - 1000.0) / 100.0).collect();
        let x = Var::from_tensor(&Tensor::new(v.as_slice(), &Device::Cpu).unwrap()).unwrap();
        // Gradient of sum(gelu(x) · w) for a ramp w.
        let w = Tensor::new(v.as_slice(), &Device::Cpu).unwrap();
        let auto = (x.gelu().unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let ours = gelu_tanh_grad(&x, &w).unwrap();
        let d = (auto.get(&x).unwrap() - ours)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap();
        assert!(
            d.to_scalar::<f32>().unwrap() < 1e-4,
            "gradient differs by {d}"
        );
    }
}
