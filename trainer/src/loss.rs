//! The routers' training loss: focal loss (γ = 2 in the paper) with effective-number class weights
//! (Cui et al. 2019, β = 0.999), because most decisions are "execute" and skip / repeat are rare.
//! Targets are distributions over the three classes: one-hot for the paper's best-path targets,
//! soft for targets built from all of a question's good paths (`trainer train --targets soft`);
//! the soft focal loss `−Σ_c α_c q_c (1 − p_c)^γ log p_c` is the hard one when `q` is one-hot.

use candle_core::{Tensor, D};

use crate::Result;

/// Effective-number class weights: `w_c = (1 − β) / (1 − β^{n_c})`, scaled so the weights of the
/// classes present sum to their number; a class without examples gets 0.
pub fn class_weights(counts: &[u64], beta: f64) -> Vec<f32> {
    let raw: Vec<f64> = counts
        .iter()
        .map(|&n| {
            if n == 0 {
                0.0
            } else {
                (1.0 - beta) / (1.0 - beta.powf(n as f64))
            }
        })
        .collect();
    let present = counts.iter().filter(|&&n| n > 0).count() as f64;
    let sum: f64 = raw.iter().sum();
    raw.iter()
        .map(|w| {
            if sum > 0.0 {
                (w * present / sum) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// Mean soft focal loss of `logits` (`[N, C]`) against target distributions `q` (`[N, C]`, f32,
/// rows summing to 1): `−Σ_c α_c q_c (1 − p_c)^γ log p_c`, with `alpha` (`[C]`) the class weights.
/// With one-hot rows it is the focal loss `−α_y (1 − p_y)^γ log p_y`.
pub fn focal_loss(logits: &Tensor, q: &Tensor, alpha: &Tensor, gamma: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let p = logp.exp()?;
    let focus = (p.affine(-1.0, 1.0)?.relu()? + 1e-12)?.powf(gamma)?;
    let weighted = q.broadcast_mul(&alpha.unsqueeze(0)?)?;
    Ok((weighted * focus * logp)?.sum(1)?.neg()?.mean_all()?)
}

/// [`focal_loss`] and its gradient with respect to the logits, by hand: for logits `z` and target
/// distributions `q` (both `n × 3`, row-major), returns the mean loss and `dL/dz` (same layout),
/// using `dL/dz_j = Σ_c α_c q_c [γ p_c (1−p_c)^{γ−1} log p_c − (1−p_c)^γ] (δ_jc − p_j) / n`.
pub fn focal_loss_grad(z: &[f32], q: &[f32], alpha: &[f32; 3], gamma: f64) -> (f64, Vec<f32>) {
    let n = q.len() / 3;
    let mut grad = vec![0f32; z.len()];
    let mut loss = 0.0;
    for i in 0..n {
        let row = &z[i * 3..i * 3 + 3];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|v| v / s).collect();
        let mut k = [0f64; 3];
        for c in 0..3 {
            let qc = q[i * 3 + c] as f64;
            if qc == 0.0 {
                continue;
            }
            let logp = (row[c] as f64 - m) - s.ln();
            let a = alpha[c] as f64 * qc;
            let rest = (1.0 - p[c]).max(1e-12);
            loss += -a * rest.powf(gamma) * logp;
            k[c] = a * (gamma * p[c] * rest.powf(gamma - 1.0) * logp - rest.powf(gamma)) / n as f64;
        }
        let ksum: f64 = k.iter().sum();
        for j in 0..3 {
            // Σ_c k_c (δ_jc − p_j) = k_j − p_j Σ_c k_c
            grad[i * 3 + j] = (k[j] - p[j] * ksum) as f32;
        }
    }
    (loss / n.max(1) as f64, grad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use drllm_core::router::one_hot;

    /// candle autograd's gradient of `loss` with respect to `x`, flattened.
    pub(super) fn autograd(loss: &Tensor, x: &Tensor) -> Vec<f32> {
        let g = loss.backward().unwrap();
        g.get(x).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn class_weights_follow_the_effective_number_formula() {
        let w = class_weights(&[10, 1000, 0], 0.999);
        // By hand: (1-β)/(1-β^n) = 0.001/(1-0.999^10) = 0.10045…, 0.001/(1-0.999^1000) = 0.0015819…
        let (a, b) = (
            0.001 / (1.0 - 0.999f64.powi(10)),
            0.001 / (1.0 - 0.999f64.powi(1000)),
        );
        assert!((w[0] as f64 - 2.0 * a / (a + b)).abs() < 1e-5, "{w:?}");
        assert!((w[1] as f64 - 2.0 * b / (a + b)).abs() < 1e-5, "{w:?}");
        assert_eq!(w[2], 0.0);
        assert!((w[0] + w[1] - 2.0).abs() < 1e-5);
        assert!(w[0] > 60.0 * w[1], "the rare class weighs much more: {w:?}");
    }

    #[test]
    fn focal_loss_and_its_gradient_match_the_hand_computed_case() {
        let z = [0.5f32, -1.0, 2.0];
        let (y, alpha, gamma) = (0usize, [0.7f32, 1.1, 1.2], 2.0f64);
        let logits = Var::from_tensor(&Tensor::new(&[z], &Device::Cpu).unwrap()).unwrap();
        let targets = Tensor::from_vec(one_hot(&[y as u32]), (1, 3), &Device::Cpu).unwrap();
        let a = Tensor::new(&alpha, &Device::Cpu).unwrap();
        let loss = focal_loss(&logits, &targets, &a, gamma).unwrap();
        // By hand: p = softmax(z)_y, L = −α (1−p)^γ log p.
        let e: Vec<f64> = z.iter().map(|&v| (v as f64).exp()).collect();
        let s: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|v| v / s).collect();
        let py = p[y];
        let al = alpha[y] as f64;
        let want = -al * (1.0 - py).powf(gamma) * py.ln();
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((got - want).abs() < 1e-6, "loss {got} vs {want}");
        // dL/dz_j = α [γ p (1−p)^{γ−1} log p − (1−p)^γ] (δ_jy − p_j)
        let grad = autograd(&loss, &logits);
        let k = al * (gamma * py * (1.0 - py).powf(gamma - 1.0) * py.ln() - (1.0 - py).powf(gamma));
        for j in 0..3 {
            let want = k * ((j == y) as u8 as f64 - p[j]);
            assert!(
                (grad[j] as f64 - want).abs() < 1e-6,
                "dL/dz{j} {} vs {want}",
                grad[j]
            );
        }
        // γ = 0 and α = 1 is plain cross-entropy.
        let ce = focal_loss(
            &logits,
            &targets,
            &Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
            0.0,
        )
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
        assert!((ce + py.ln()).abs() < 1e-6, "{ce} vs {}", -py.ln());
    }
}

#[cfg(test)]
mod soft_tests {
    use super::tests::autograd;
    use super::*;
    use candle_core::{Device, Var};
    use drllm_core::router::one_hot;

    /// The hand-derived soft gradient equals candle's autograd of [`focal_loss`], for soft rows,
    /// one-hot rows and a row with a zero class.
    #[test]
    fn soft_focal_gradient_matches_autograd() {
        let z = [
            0.5f32, -1.0, 2.0, 1.5, 0.2, -0.3, -2.0, 0.0, 0.7, 0.1, 0.1, 0.1,
        ];
        let q = [
            0.6f32, 0.3, 0.1, 0.0, 1.0, 0.0, 0.25, 0.0, 0.75, 0.2, 0.5, 0.3,
        ];
        let alpha = [1.7f32, 0.4, 1.1];
        for gamma in [0.0, 1.0, 2.0] {
            let (loss, grad) = focal_loss_grad(&z, &q, &alpha, gamma);
            let logits =
                Var::from_tensor(&Tensor::from_vec(z.to_vec(), (4, 3), &Device::Cpu).unwrap())
                    .unwrap();
            let qt = Tensor::from_vec(q.to_vec(), (4, 3), &Device::Cpu).unwrap();
            let a = Tensor::new(&alpha, &Device::Cpu).unwrap();
            let auto = focal_loss(&logits, &qt, &a, gamma).unwrap();
            let al = auto.to_scalar::<f32>().unwrap() as f64;
            assert!(
                (al - loss).abs() < 1e-5,
                "γ {gamma}: loss {loss} vs autograd {al}"
            );
            let ag = autograd(&auto, &logits);
            for (i, (x, y)) in grad.iter().zip(&ag).enumerate() {
                assert!(
                    (x - y).abs() < 1e-5,
                    "γ {gamma}: dL/dz[{i}] {x} vs autograd {y}"
                );
            }
        }
        // Soft targets are a mixture: the loss is linear in q.
        let half = |v: &[f32]| v.iter().map(|x| x * 0.5).collect::<Vec<f32>>();
        let (a, _) = focal_loss_grad(&z[..3], &one_hot(&[0]), &alpha, 2.0);
        let (b, _) = focal_loss_grad(&z[..3], &one_hot(&[2]), &alpha, 2.0);
        let mix: Vec<f32> = half(&one_hot(&[0]))
            .iter()
            .zip(half(&one_hot(&[2])))
            .map(|(x, y)| x + y)
            .collect();
        let (m, _) = focal_loss_grad(&z[..3], &mix, &alpha, 2.0);
        assert!((m - 0.5 * (a + b)).abs() < 1e-9);
    }
}
