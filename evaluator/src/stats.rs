//! Uncertainty for the evaluation report: a 95% Wilson score interval for an accuracy, and a 95%
//! paired bootstrap percentile interval for the difference of two accuracies measured on the same
//! examples (routed − static, routed − static-pruned). Accuracies of a few hundred questions move
//! by several points from sampling alone, so every comparison in a report carries its interval.
//! The bootstrap draws from a fixed-seed SplitMix64 stream, so a report is reproducible bit for bit.

use serde::Serialize;

/// Resamples of the paired bootstrap.
pub const RESAMPLES: usize = 10_000;
/// Seed of the paired bootstrap (fixed: the same outcomes always give the same interval).
pub const SEED: u64 = 0x5EED_0014;
/// Two-sided 95% normal quantile.
const Z95: f64 = 1.959_963_984_540_054;

/// A 95% Wilson score interval `[lo, hi]` for `k` successes out of `n` (`[0, 1]` when `n` is 0).
pub fn wilson(k: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    [(center - half).max(0.0), (center + half).min(1.0)]
}

/// The difference `mean(a) − mean(b)` of two paired outcome vectors with its 95% paired bootstrap
/// percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedDiff {
    /// `mean(a) − mean(b)` (a fraction: 0.012 is 1.2 points).
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
    /// Paired examples.
    pub n: usize,
    pub resamples: usize,
    pub seed: u64,
}

/// Paired bootstrap of `mean(a) − mean(b)`: resample example indices with replacement
/// `resamples` times, take the 2.5% and 97.5% percentiles of the resampled differences.
pub fn paired_bootstrap(a: &[bool], b: &[bool], resamples: usize, seed: u64) -> PairedDiff {
    assert_eq!(
        a.len(),
        b.len(),
        "paired outcomes must have the same length"
    );
    let n = a.len();
    let d: Vec<i64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| i64::from(x) - i64::from(y))
        .collect();
    let diff = if n == 0 {
        0.0
    } else {
        d.iter().sum::<i64>() as f64 / n as f64
    };
    let mut rng = SplitMix64(seed);
    let mut means: Vec<f64> = (0..if n == 0 { 0 } else { resamples })
        .map(|_| {
            let s: i64 = (0..n).map(|_| d[rng.below(n)]).sum();
            s as f64 / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    PairedDiff {
        diff,
        lo: percentile(&means, 0.025).unwrap_or(0.0),
        hi: percentile(&means, 0.975).unwrap_or(0.0),
        n,
        resamples,
        seed,
    }
}

/// The `q` quantile of sorted values, linearly interpolated between ranks (`None` when empty).
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = q.clamp(0.0, 1.0) * last as f64;
    let (i, frac) = (h.floor() as usize, h - h.floor());
    let next = sorted[(i + 1).min(last)];
    Some(sorted[i] + frac * (next - sorted[i]))
}

/// SplitMix64 (Steele et al.): tiny, fast, and fixed forever, unlike a library's default RNG.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    #[cfg(test)]
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-40 for any report size).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// Formats a difference in points with an explicit sign and a real minus: `−1.2`, `+1.0`, `0.0`.
pub fn signed_points(x: f64) -> String {
    let p = 100.0 * x;
    let s = format!("{p:.1}");
    if s == "0.0" || s == "-0.0" {
        "0.0".into()
    } else if let Some(abs) = s.strip_prefix('-') {
        format!("−{abs}")
    } else {
        format!("+{s}")
    }
}

impl PairedDiff {
    /// `−1.2 points [−3.4, +1.0] (95% paired bootstrap, n = 500)`.
    pub fn describe(&self) -> String {
        format!(
            "{} points [{}, {}] (95% paired bootstrap, n = {})",
            signed_points(self.diff),
            signed_points(self.lo),
            signed_points(self.hi),
            self.n
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `k` trues then `n − k` falses.
    fn outcomes(k: usize, n: usize) -> Vec<bool> {
        (0..n).map(|i| i < k).collect()
    }

    /// `a` right on 60 of 100, `b` on 40: 30 both, 30 only `a`, 10 only `b`.
    fn pair(copies: usize) -> (Vec<bool>, Vec<bool>) {
        let a0: Vec<bool> = (0..100).map(|i| i % 5 < 3).collect();
        let b0: Vec<bool> = (0..100).map(|i| i % 10 < 4).collect();
        (a0.repeat(copies), b0.repeat(copies))
    }

    #[test]
    fn identical_vectors_give_a_zero_interval() {
        let a: Vec<bool> = (0..57).map(|i| i % 3 == 0).collect();
        let d = paired_bootstrap(&a, &a, RESAMPLES, SEED);
        assert_eq!((d.diff, d.lo, d.hi, d.n), (0.0, 0.0, 0.0, 57));
    }

    #[test]
    fn a_known_difference_lies_inside_its_interval() {
        let (a, b) = pair(1);
        let d = paired_bootstrap(&a, &b, RESAMPLES, SEED);
        assert!((d.diff - 0.2).abs() < 1e-12, "{d:?}");
        assert!(d.lo < d.diff && d.diff < d.hi, "{d:?}");
        // 20 points on 100 questions with discordant pairs 30/10: clearly positive, not absurdly
        // narrow (the normal approximation gives ±0.12).
        assert!(
            d.lo > 0.0 && d.lo < 0.15 && d.hi > 0.25 && d.hi < 0.35,
            "{d:?}"
        );
        // Swapping the arms mirrors the interval.
        let r = paired_bootstrap(&b, &a, RESAMPLES, SEED);
        assert!((r.diff + 0.2).abs() < 1e-12 && r.hi < 0.0, "{r:?}");
    }

    #[test]
    fn all_better_gives_a_point_interval_at_one() {
        let d = paired_bootstrap(&outcomes(9, 9), &outcomes(0, 9), 500, 1);
        assert_eq!((d.diff, d.lo, d.hi), (1.0, 1.0, 1.0));
    }

    #[test]
    fn interval_width_shrinks_with_n() {
        let width = |copies| {
            let (a, b) = pair(copies);
            let d = paired_bootstrap(&a, &b, RESAMPLES, SEED);
            d.hi - d.lo
        };
        let (w1, w16) = (width(1), width(16));
        // Sixteen times the examples: a quarter of the width (sampling noise aside).
        assert!(w16 < 0.35 * w1 && w16 > 0.18 * w1, "{w1} {w16}");
    }

    #[test]
    fn deterministic_under_the_seed() {
        let (a, b) = pair(2);
        let x = paired_bootstrap(&a, &b, 2_000, SEED);
        assert_eq!(x, paired_bootstrap(&a, &b, 2_000, SEED));
        let y = paired_bootstrap(&a, &b, 2_000, SEED + 1);
        assert!(
            x.lo != y.lo || x.hi != y.hi,
            "another seed, other resamples"
        );
    }

    #[test]
    fn empty_input_is_not_an_error() {
        let d = paired_bootstrap(&[], &[], RESAMPLES, SEED);
        assert_eq!((d.diff, d.lo, d.hi, d.n), (0.0, 0.0, 0.0, 0));
    }

    #[test]
    fn wilson_matches_known_values() {
        let [lo, hi] = wilson(50, 100);
        assert!(
            (lo - 0.4038).abs() < 1e-4 && (hi - 0.5962).abs() < 1e-4,
            "{lo} {hi}"
        );
        let [lo, hi] = wilson(0, 20);
        assert!(lo == 0.0 && (hi - 0.1611).abs() < 1e-4, "{hi}");
        let [lo, hi] = wilson(20, 20);
        assert!((lo - 0.8389).abs() < 1e-4 && hi == 1.0, "{lo}");
        assert_eq!(wilson(0, 0), [0.0, 1.0]);
        // Always contains the estimate and narrows with n.
        let [a, b] = wilson(30, 40);
        let [c, d] = wilson(300, 400);
        assert!(a < 0.75 && 0.75 < b && c > a && d < b);
    }

    #[test]
    fn percentile_interpolates_between_ranks() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), Some(0.0));
        assert_eq!(percentile(&v, 0.5), Some(2.0));
        assert_eq!(percentile(&v, 0.625), Some(2.5));
        assert_eq!(percentile(&v, 1.0), Some(4.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn describe_uses_real_minus_signs_and_points() {
        let d = PairedDiff {
            diff: -0.012,
            lo: -0.034,
            hi: 0.01,
            n: 500,
            resamples: RESAMPLES,
            seed: SEED,
        };
        assert_eq!(
            d.describe(),
            "−1.2 points [−3.4, +1.0] (95% paired bootstrap, n = 500)"
        );
        assert_eq!(signed_points(-0.0001), "0.0");
    }
}
