//! Learn-then-Test (Angelopoulos et al., 2021): which operating points of a router may be shipped
//! with a guarantee. Each point's per-question losses give a p-value for the null hypothesis
//! "this point's risk exceeds δ"; fixed-sequence testing walks the points from the static model
//! to the most aggressive and keeps every point until the first whose p-value exceeds ε. With
//! probability at least 1 − ε over the calibration questions, no kept point has risk above δ.
//!
//! Two p-values:
//! - [`binomial_p`], exact, for 0/1 losses (`harm`, `disagree`): P(Bin(n, δ) ≤ k).
//! - [`wsr_p`], for losses in [0, 1] (`drop`): the Waudby-Smith–Ramdas betting martingale. Plain
//!   Hoeffding pays for the range of the loss whatever the data; the bet grows with how few
//!   questions actually change, which is what a router that rarely flips an answer needs.

/// P(Bin(n, δ) ≤ k): the exact p-value of "risk > δ" (more precisely ≥ δ, the worst case) when
/// `k` of `n` independent 0/1 losses are 1. Summed in log space, so any n is fine.
pub fn binomial_p(k: usize, n: usize, delta: f64) -> f64 {
    // No finite sample refutes "risk > 0" (δ = 0), and "risk > 1" is no hypothesis.
    if k >= n || delta <= 0.0 || delta >= 1.0 {
        return 1.0;
    }
    let (ld, l1d) = (delta.ln(), (-delta).ln_1p());
    let mut log_choose = 0.0; // ln C(n, 0)
    let mut terms = Vec::with_capacity(k + 1);
    for i in 0..=k {
        if i > 0 {
            log_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        terms.push(log_choose + i as f64 * ld + (n - i) as f64 * l1d);
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()).exp().min(1.0)
}

/// The Waudby-Smith–Ramdas p-value of "E[loss] ≥ `risk`" for losses in [0, 1], taken in the
/// given order (LTT's Proposition 5): the capital K_i = Π (1 − ν_j (L_j − risk)) is a
/// nonnegative supermartingale under the null for any predictable bet 0 ≤ ν_j < 1 / (1 − risk),
/// so by Ville's inequality p = 1 / max_i K_i is valid. The bet is
/// ν_i = min(√(2 ln(1/ε) / (n σ̂²_{i−1})), ¾ / (1 − risk)): LTT caps it at 1, which for `drop`
/// at δ = 1 point (risk 0.505) earns too little per unchanged question to certify 570 of them;
/// ¾ of the largest bet that keeps the capital positive still loses only ¾ of it on a harm.
pub fn wsr_p(losses: &[f64], risk: f64, epsilon: f64) -> f64 {
    let n = losses.len() as f64;
    if losses.is_empty() || risk >= 1.0 {
        return 1.0;
    }
    let scale = 2.0 * (1.0 / epsilon).ln() / n;
    let cap = 0.75 / (1.0 - risk);
    let (mut sum, mut sq) = (0.0, 0.0); // Σ L_j and Σ (L_j − μ̂_j)²
    let mut var_prev = 0.25; // σ̂²_0
    let (mut log_k, mut best) = (0.0f64, 0.0f64);
    for (i, &l) in losses.iter().enumerate() {
        let nu = (scale / var_prev).sqrt().min(cap);
        let factor = 1.0 - nu * (l - risk);
        if factor <= 0.0 {
            break; // cannot happen for losses in [0, 1] and risk in [0, 1); kept for safety
        }
        log_k += factor.ln();
        best = best.max(log_k);
        sum += l;
        let mean = (0.5 + sum) / (i as f64 + 2.0);
        sq += (l - mean).powi(2);
        var_prev = (0.25 + sq) / (i as f64 + 2.0);
    }
    (-best).exp().min(1.0)
}

/// Fixed-sequence testing at level ε: the index of the last point of the longest prefix whose
/// p-values are all ≤ ε (`None` when the first point already fails).
pub fn fixed_sequence(p_values: &[f64], epsilon: f64) -> Option<usize> {
    p_values
        .iter()
        .take_while(|&&p| p <= epsilon)
        .count()
        .checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SplitMix64;

    #[test]
    fn binomial_p_edges() {
        assert_eq!(binomial_p(5, 5, 0.1), 1.0);
        assert!((binomial_p(0, 10, 0.1) - 0.9f64.powi(10)).abs() < 1e-14);
        // k = 1: (1-δ)^n + n δ (1-δ)^(n-1)
        let want = 0.9f64.powi(10) + 10.0 * 0.1 * 0.9f64.powi(9);
        assert!((binomial_p(1, 10, 0.1) - want).abs() < 1e-14);
        assert!(binomial_p(0, 100_000, 0.01) < 1e-300 || binomial_p(0, 100_000, 0.01) == 0.0);
    }

    #[test]
    fn binomial_p_matches_scipy() {
        if std::env::var_os("DRLLM_SKIP_PYTHON_TESTS").is_some() {
            drllm_engine::testing::skipped("DRLLM_SKIP_PYTHON_TESTS is set");
            return;
        }
        if !drllm_engine::testing::python_has("scipy", "scipy") {
            return;
        }
        let cases = [
            (0usize, 100usize, 0.01f64),
            (3, 570, 0.01),
            (10, 1000, 0.02),
            (57, 1140, 0.05),
            (200, 1000, 0.2),
            (1, 5, 0.3),
            (40, 5000, 0.01),
        ];
        let json = serde_json::to_string(&cases).unwrap();
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import json, sys; from scipy.stats import binom; \
                 print(json.dumps([binom.cdf(k, n, d) for k, n, d in json.loads(sys.argv[1])]))",
                &json,
            ])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "python3 with scipy is needed: python3 -m pip install scipy (or set \
             DRLLM_SKIP_PYTHON_TESTS=1): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap();
        for ((k, n, d), w) in cases.iter().zip(want) {
            let got = binomial_p(*k, *n, *d);
            assert!(
                (got - w).abs() <= 1e-9 * w.max(1e-300),
                "{k} {n} {d}: {got} vs scipy {w}"
            );
        }
    }

    /// Losses at exactly the null's boundary: a valid p-value rejects at most ε of the time.
    fn rejection_rate(draw: impl Fn(&mut SplitMix64) -> f64, p: impl Fn(&[f64]) -> f64) -> f64 {
        rejection_rate_n(400, draw, p)
    }

    fn rejection_rate_n(
        n: usize,
        draw: impl Fn(&mut SplitMix64) -> f64,
        p: impl Fn(&[f64]) -> f64,
    ) -> f64 {
        let trials = 2_000;
        let mut rng = SplitMix64(7);
        let mut rejected = 0;
        for _ in 0..trials {
            let losses: Vec<f64> = (0..n).map(|_| draw(&mut rng)).collect();
            rejected += usize::from(p(&losses) <= 0.05);
        }
        rejected as f64 / trials as f64
    }

    #[test]
    fn binomial_p_covers_at_the_boundary_and_has_power_below_it() {
        let delta = 0.05;
        let p = |l: &[f64]| binomial_p(l.iter().filter(|&&x| x > 0.5).count(), l.len(), delta);
        let at = rejection_rate(|r| f64::from(u8::from(r.uniform() < delta)), p);
        // 0.05 plus three binomial standard errors of 2,000 trials.
        assert!(at <= 0.05 + 3.0 * (0.05f64 * 0.95 / 2000.0).sqrt(), "{at}");
        let below = rejection_rate(|r| f64::from(u8::from(r.uniform() < 0.01)), p);
        assert!(below > 0.9, "power {below}");
    }

    /// The `drop` loss: (static − routed + 1) / 2, mostly ½ (no change), some harms and fixes.
    fn drop_loss(r: &mut SplitMix64, harm: f64, fix: f64) -> f64 {
        let u = r.uniform();
        if u < harm {
            1.0
        } else if u < harm + fix {
            0.0
        } else {
            0.5
        }
    }

    #[test]
    fn wsr_p_covers_at_the_boundary() {
        // True drop 1 point exactly: harm − fix = 0.01, i.e. E[loss] = (1 + 0.01) / 2.
        let risk = (1.0 + 0.01) / 2.0;
        for (harm, fix) in [(0.01, 0.0), (0.03, 0.02), (0.11, 0.10)] {
            let at = rejection_rate(|r| drop_loss(r, harm, fix), |l| wsr_p(l, risk, 0.05));
            assert!(
                at <= 0.05 + 3.0 * (0.05f64 * 0.95 / 2000.0).sqrt(),
                "{harm} {fix}: {at}"
            );
        }
    }

    #[test]
    fn wsr_p_adapts_where_hoeffding_cannot() {
        // A router that never changes an answer, n = 570: Hoeffding needs
        // sqrt(ln(1/ε) / 2n) ≈ 0.036 of slack on the [0, 1] loss, i.e. 7 points of drop, so it
        // cannot certify δ = 1 point; the betting bound can.
        let losses = vec![0.5; 570];
        let risk = (1.0 + 0.01) / 2.0;
        let hoeffding = (-2.0 * 570.0 * (risk - 0.5f64).powi(2)).exp();
        assert!(hoeffding > 0.05, "{hoeffding}");
        assert!(
            wsr_p(&losses, risk, 0.05) < 0.05,
            "{}",
            wsr_p(&losses, risk, 0.05)
        );
        // Rare changes, true drop 0, 1,000 questions (a drop estimate's standard error is 0.45
        // points):
        // certified half the time (an optimal fixed-n z-test: 0.71), where Hoeffding never is.
        let draw = |r: &mut SplitMix64| drop_loss(r, 0.01, 0.01);
        let power = rejection_rate_n(1000, draw, |l| wsr_p(l, risk, 0.05));
        assert!(power > 0.4, "power {power}");
        let hoeffding = |l: &[f64]| {
            let mean = l.iter().sum::<f64>() / l.len() as f64;
            (-2.0 * l.len() as f64 * (risk - mean).max(0.0).powi(2)).exp()
        };
        assert_eq!(rejection_rate_n(1000, draw, hoeffding), 0.0);
        // A real 5-point drop is never certified at δ = 1 point.
        let bad = rejection_rate(|r| drop_loss(r, 0.06, 0.01), |l| wsr_p(l, risk, 0.05));
        assert!(bad < 0.01, "{bad}");
    }

    #[test]
    fn fixed_sequence_stops_at_the_first_failure() {
        assert_eq!(fixed_sequence(&[0.2, 0.01], 0.05), None);
        assert_eq!(fixed_sequence(&[0.01, 0.04, 0.2, 0.0], 0.05), Some(1));
        assert_eq!(fixed_sequence(&[0.01, 0.02], 0.05), Some(1));
        assert_eq!(fixed_sequence(&[], 0.05), None);
    }

    #[test]
    fn the_procedure_keeps_its_family_wise_error() {
        // Ten points of rising true harm; the fourth onward exceed δ. Choosing any of them is an
        // error; the procedure may do so at most ε of the time.
        let delta = 0.05;
        let truths = [0.0, 0.01, 0.03, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3];
        let (trials, n) = (2_000, 500);
        let mut rng = SplitMix64(11);
        let (mut errors, mut reached) = (0, 0);
        for _ in 0..trials {
            let p: Vec<f64> = truths
                .iter()
                .map(|&t| {
                    let k = (0..n).filter(|_| rng.uniform() < t).count();
                    binomial_p(k, n, delta)
                })
                .collect();
            let chosen = fixed_sequence(&p, 0.05);
            errors += usize::from(chosen.is_some_and(|i| truths[i] >= delta));
            reached += usize::from(chosen.is_some_and(|i| i >= 2));
        }
        let err = errors as f64 / trials as f64;
        assert!(
            err <= 0.05 + 3.0 * (0.05f64 * 0.95 / 2000.0).sqrt(),
            "{err}"
        );
        assert!(reached as f64 / trials as f64 > 0.5, "power {reached}");
    }
}
