//! One training step of the routers with hand-written gradients. Autograd would also compute the
//! gradient of the (constant) router inputs — a third of the matmul work — and allocate a zeroed
//! buffer per gradient; the two-layer network's backward pass is short enough to write out. A
//! test checks it against candle's autograd of [`Routers::forward`] + [`crate::loss::focal_loss`].

use candle_core::Tensor;

use drllm_core::router::{mlp, Routers};

use crate::gelu_grad::gelu_tanh_grad;
use crate::loss::focal_loss_grad;
use crate::Result;

/// What a step computed.
pub struct Step {
    /// Mean focal loss over the batch's (layer, example) pairs.
    pub loss: f64,
    /// Logits `[L, B, 3]`, flattened layer-major.
    pub logits: Vec<f32>,
    /// Gradients of `w1`, `b1`, `w2`, `b2`.
    pub grads: [Tensor; 4],
}

/// Forward and backward on window means `x` (`[L, B, W, d]`) with window mask `mask`
/// (`[B, W]`) against target distributions `targets` (layer-major `[L·B·3]`; one-hot rows
/// for hard targets, see [`drllm_core::router::one_hot`]).
pub fn step(
    routers: &Routers,
    x: &Tensor,
    mask: &Tensor,
    targets: &[f32],
    alpha: &[f32; 3],
    gamma: f64,
) -> Result<Step> {
    let (l, b, w, d) = x.dims4()?;
    let [w1, b1, w2, b2] =
        [&routers.w1, &routers.b1, &routers.w2, &routers.b2].map(|v| v.as_detached_tensor());
    let xf = x.reshape((l, b * w, d))?;
    let (pre, h, y) = mlp(&xf, [&w1, &b1, &w2, &b2])?;
    let y: Vec<f32> = y.flatten_all()?.to_vec1()?;
    // Masked mean over the windows, by hand: y is [L, B·W, 3].
    let m: Vec<f32> = mask.flatten_all()?.to_vec1()?;
    let count: Vec<f32> = (0..b)
        .map(|i| m[i * w..(i + 1) * w].iter().sum::<f32>().max(1.0))
        .collect();
    let mut logits = vec![0f32; l * b * 3];
    for (li, lg) in logits.chunks_mut(b * 3).enumerate() {
        for (bi, o) in lg.chunks_mut(3).enumerate() {
            for wi in 0..w {
                let k = m[bi * w + wi] / count[bi];
                let r = ((li * b + bi) * w + wi) * 3;
                for c in 0..3 {
                    o[c] += y[r + c] * k;
                }
            }
        }
    }
    let (loss, dlogits) = focal_loss_grad(&logits, targets, alpha, gamma);
    let mut dy = vec![0f32; y.len()];
    for (r, g) in dy.chunks_mut(3).enumerate() {
        let (li, bi, wi) = (r / (b * w), (r / w) % b, r % w);
        let k = m[bi * w + wi] / count[bi];
        for c in 0..3 {
            g[c] = dlogits[(li * b + bi) * 3 + c] * k;
        }
    }
    let dy = Tensor::from_vec(dy, (l, b * w, 3), x.device())?;
    let dw2 = dy.transpose(1, 2)?.matmul(&h)?;
    let db2 = dy.sum(1)?;
    let dpre = gelu_tanh_grad(&pre, &dy.matmul(&w2)?)?;
    let dw1 = dpre.transpose(1, 2)?.matmul(&xf)?;
    let db1 = dpre.sum(1)?;
    Ok(Step {
        loss,
        logits,
        grads: [dw1, db1, dw2, db2],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    #[test]
    fn hand_written_gradients_match_autograd() {
        let (l, b, w, d) = (3, 4, 5, 16);
        let r = Routers::init(l, d, 9).unwrap();
        let x = Tensor::randn(0f32, 1.0, (l, b, w, d), &Device::Cpu).unwrap();
        // Example 2 has only 3 windows.
        let mut m = vec![1f32; b * w];
        m[2 * w + 3] = 0.0;
        m[2 * w + 4] = 0.0;
        let mask = Tensor::from_vec(m, (b, w), &Device::Cpu).unwrap();
        // Hard rows and soft rows.
        let mut targets =
            drllm_core::router::one_hot(&(0..l * b).map(|i| (i % 3) as u32).collect::<Vec<_>>());
        targets[..6].copy_from_slice(&[0.2, 0.5, 0.3, 0.0, 0.6, 0.4]);
        let alpha = [1.7f32, 0.3, 1.0];
        let s = step(&r, &x, &mask, &targets, &alpha, 2.0).unwrap();

        // Autograd reference: the same network with candle's differentiable gelu.
        let logits = r.forward_with(&x, &mask, |t| t.gelu()).unwrap();
        let t = Tensor::from_vec(targets.clone(), (l * b, 3), &Device::Cpu).unwrap();
        let a = Tensor::new(&alpha, &Device::Cpu).unwrap();
        let loss =
            crate::loss::focal_loss(&logits.reshape((l * b, 3)).unwrap(), &t, &a, 2.0).unwrap();
        assert!((loss.to_scalar::<f32>().unwrap() as f64 - s.loss).abs() < 1e-5);
        let want: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        for (x, y) in want.iter().zip(&s.logits) {
            assert!((x - y).abs() < 1e-5);
        }
        let g = loss.backward().unwrap();
        for (v, mine) in r.vars().iter().zip(&s.grads) {
            let auto = g.get(v).unwrap();
            let max_abs = |t: &Tensor| t.abs()?.flatten_all()?.max(D::Minus1);
            let diff = max_abs(&(auto - mine).unwrap()).unwrap();
            let scale = max_abs(auto).unwrap();
            let (diff, scale) = (
                diff.to_scalar::<f32>().unwrap(),
                scale.to_scalar::<f32>().unwrap(),
            );
            assert!(
                diff <= 1e-4 * scale.max(1e-3),
                "gradient of {:?}: off by {diff} (scale {scale})",
                v.dims()
            );
            assert_eq!(mine.dtype(), DType::F32);
        }
    }
}
