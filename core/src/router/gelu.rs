//! GELU (tanh approximation) as one fused candle op with a fused gradient. candle's own `gelu`
//! calls libm's `tanhf` per element and builds its gradient from `powf` and half a dozen
//! temporaries; training the routers spends more time there than in the matmuls. Here forward and
//! backward are one pass each, with `tanh` from one `exp`, split over the CPU threads.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const C: f32 = 0.797_884_6; // sqrt(2 / pi)
const A: f32 = 0.044_715;
const CHUNK: usize = 4096;

fn tanh(z: f32) -> f32 {
    // 1 − 2 / (e^{2z} + 1): exact in f32 to a few ulp, saturates cleanly for large |z|.
    1.0 - 2.0 / ((2.0 * z).exp() + 1.0)
}

fn value(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(C * x * (1.0 + A * x * x)))
}

fn derivative(x: f32) -> f32 {
    let t = tanh(C * x * (1.0 + A * x * x));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * A * x * x)
}

fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
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

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            arg.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &GeluTanhGrad)?,
        ))
    }
}

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
        let (x, g) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        if x.len() != g.len() {
            candle_core::bail!("{}: shapes differ", self.name());
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(o, (x, g))| {
                for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                    *o = g * derivative(x);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// GELU, tanh approximation, differentiable (f32, any shape).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluTanh)
}

/// `g · gelu_tanh'(x)`, without autograd (for hand-written backward passes).
pub fn gelu_tanh_grad(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&g.contiguous()?, &GeluTanhGrad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candles_gelu_and_its_gradient() {
        let v: Vec<f32> = (0..2001).map(|i| (i as f32 - 1000.0) / 100.0).collect();
        let x = Var::from_tensor(&Tensor::new(v.as_slice(), &Device::Cpu).unwrap()).unwrap();
        let ours = gelu_tanh(&x).unwrap();
        let theirs = x.gelu().unwrap();
        let d = (&ours - &theirs).unwrap().abs().unwrap().max(0).unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        // Gradient of sum(gelu(x) · w) for a ramp w, against candle's autograd.
        let w = Tensor::new(v.as_slice(), &Device::Cpu).unwrap();
        let g1 = (ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (g1.get(&x).unwrap(), g2.get(&x).unwrap());
        let d = (a - b).unwrap().abs().unwrap().max(0).unwrap();
        assert!(
            d.to_scalar::<f32>().unwrap() < 1e-4,
            "gradient differs by {d}"
        );
    }
}
