//! The routers' training loss: focal loss (γ = 2 in the paper) with effective-number class weights
//! (Cui et al. 2019, β = 0.999), because most decisions are "execute" and skip / repeat are rare.

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

/// Mean focal loss of `logits` (`[N, C]`) against `targets` (`[N]`, u32 class indices):
/// `−α_y (1 − p_y)^γ log p_y`, with `alpha` (`[C]`) the class weights.
pub fn focal_loss(logits: &Tensor, targets: &Tensor, alpha: &Tensor, gamma: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let idx = targets.unsqueeze(1)?;
    let logp_y = logp.gather(&idx, 1)?.squeeze(1)?;
    let p_y = logp_y.exp()?;
    let a = alpha.gather(targets, 0)?;
    let focus = (p_y.affine(-1.0, 1.0)?.relu()? + 1e-12)?.powf(gamma)?;
    Ok((a * focus * logp_y)?.neg()?.mean_all()?)
}

/// [`focal_loss`] and its gradient with respect to the logits, by hand: for logits `z` (`n × 3`,
/// row-major) and targets `y`, returns the mean loss and `dL/dz` (same layout), using
/// `dL/dz_j = α_y [γ p (1−p)^{γ−1} log p − (1−p)^γ] (δ_jy − p_j) / n` with `p = softmax(z)_y`.
pub fn focal_loss_grad(z: &[f32], y: &[u32], alpha: &[f32; 3], gamma: f64) -> (f64, Vec<f32>) {
    let n = y.len();
    let mut grad = vec![0f32; z.len()];
    let mut loss = 0.0;
    for (i, &t) in y.iter().enumerate() {
        let row = &z[i * 3..i * 3 + 3];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let t = t as usize;
        let p = e[t] / s;
        let logp = (row[t] as f64 - m) - s.ln();
        let a = alpha[t] as f64;
        let q = (1.0 - p).max(1e-12);
        loss += -a * q.powf(gamma) * logp;
        let k = a * (gamma * p * q.powf(gamma - 1.0) * logp - q.powf(gamma)) / n as f64;
        for j in 0..3 {
            let pj = e[j] / s;
            grad[i * 3 + j] = (k * ((j == t) as u8 as f64 - pj)) as f32;
        }
    }
    (loss / n.max(1) as f64, grad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

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
        let targets = Tensor::new(&[y as u32], &Device::Cpu).unwrap();
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
        let g = loss.backward().unwrap();
        let grad: Vec<f32> = g
            .get(&logits)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
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
