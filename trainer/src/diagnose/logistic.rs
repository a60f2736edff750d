//! Cross-validated L2 logistic regression and the statistics `trainer diagnose` reports for it.
//! The question it answers is small (does a layer's router input predict one binary label
//! better than the base rate?), so the fit is plain accelerated gradient descent on standardized
//! features, and the penalty is chosen inside each training fold: the held-out fold never
//! influences its own predictions.

/// Penalties tried inside each training fold (objective: mean log-loss + λ/2 · |w|²).
pub const LAMBDAS: [f64; 4] = [1e-3, 1e-2, 1e-1, 1.0];
const ITERATIONS: usize = 400;
const EPS: f64 = 1e-12;

/// Examples in rows: `n × d` features, row-major, and one label each.
pub struct Data<'a> {
    /// Row-major features.
    pub x: &'a [f32],
    /// Width of a row.
    pub d: usize,
    /// One label per row.
    pub y: &'a [bool],
}

impl Data<'_> {
    fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.d..(i + 1) * self.d]
    }
}

/// A fitted model over standardized features: `p = σ(b + Σ wᵢ · (xᵢ − meanᵢ) · scaleᵢ)`.
pub struct Fit {
    /// Column means of the training rows.
    pub mean: Vec<f64>,
    /// Column 1/std of the training rows.
    pub scale: Vec<f64>,
    /// Weights over the standardized columns.
    pub w: Vec<f64>,
    /// Bias.
    pub b: f64,
}

/// One model on every row, its penalty chosen on a held-out fifth of them (as inside each
/// cross-validation fold). `None` when the labels have one class only.
pub fn fit_all(data: &Data) -> Option<Fit> {
    let all: Vec<usize> = (0..data.y.len()).collect();
    let k = data.y.iter().filter(|&&y| y).count();
    (k > 0 && k < all.len()).then(|| fit(data, &all, choose_lambda(data, &all)))
}

impl Fit {
    /// The probability of a positive label for one row of raw features.
    pub fn prob(&self, row: &[f32]) -> f64 {
        let z: f64 = self.b
            + row
                .iter()
                .zip(&self.mean)
                .zip(&self.scale)
                .zip(&self.w)
                .map(|(((&x, m), s), w)| (f64::from(x) - m) * s * w)
                .sum::<f64>();
        sigmoid(z)
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Log-loss of probability `p` for label `y`, clipped away from 0 and 1.
pub fn log_loss(p: f64, y: bool) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    if y {
        -p.ln()
    } else {
        -(1.0 - p).ln()
    }
}

/// Standardized copy of rows `idx` (column means and 1/std from those rows).
fn standardize(data: &Data, idx: &[usize]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (d, n) = (data.d, idx.len() as f64);
    let mut mean = vec![0.0; d];
    for &i in idx {
        for (m, &x) in mean.iter_mut().zip(data.row(i)) {
            *m += f64::from(x) / n;
        }
    }
    let mut var = vec![0.0; d];
    for &i in idx {
        for ((v, &x), m) in var.iter_mut().zip(data.row(i)).zip(&mean) {
            *v += (f64::from(x) - m).powi(2) / n;
        }
    }
    let scale: Vec<f64> = var.iter().map(|v| 1.0 / v.sqrt().max(1e-8)).collect();
    let mut z = Vec::with_capacity(idx.len() * d);
    for &i in idx {
        z.extend(
            data.row(i)
                .iter()
                .zip(&mean)
                .zip(&scale)
                .map(|((&x, m), s)| (f64::from(x) - m) * s),
        );
    }
    (mean, scale, z)
}

/// Largest eigenvalue of ZᵀZ / n (power iteration), for the gradient step.
fn top_eigen(z: &[f64], n: usize, d: usize) -> f64 {
    let mut v = vec![1.0 / (d as f64).sqrt(); d];
    let mut lambda = 1.0;
    for _ in 0..30 {
        let zv: Vec<f64> = z.chunks_exact(d).map(|r| dot(r, &v)).collect();
        let mut u = vec![0.0; d];
        for (r, s) in z.chunks_exact(d).zip(&zv) {
            axpy(&mut u, *s / n as f64, r);
        }
        lambda = dot(&u, &u).sqrt();
        if lambda < EPS {
            return 0.0;
        }
        v = u.iter().map(|x| x / lambda).collect();
    }
    lambda
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(acc: &mut [f64], a: f64, x: &[f64]) {
    for (o, v) in acc.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// Fits rows `idx` with penalty `lambda` (Nesterov-accelerated gradient descent).
fn fit(data: &Data, idx: &[usize], lambda: f64) -> Fit {
    let (d, n) = (data.d, idx.len());
    let (mean, scale, z) = standardize(data, idx);
    let y: Vec<f64> = idx
        .iter()
        .map(|&i| f64::from(u8::from(data.y[i])))
        .collect();
    let step = 1.0 / (0.25 * top_eigen(&z, n, d) + 0.25 + lambda);
    let base = (y.iter().sum::<f64>() / n as f64).clamp(1e-4, 1.0 - 1e-4);
    let (mut w, mut b) = (vec![0.0; d], (base / (1.0 - base)).ln());
    let (mut w_prev, mut b_prev) = (w.clone(), b);
    for t in 1..=ITERATIONS {
        let mom = (t as f64 - 1.0) / (t as f64 + 2.0);
        let wl: Vec<f64> = w
            .iter()
            .zip(&w_prev)
            .map(|(a, p)| a + mom * (a - p))
            .collect();
        let bl = b + mom * (b - b_prev);
        let mut g = wl.iter().map(|x| lambda * x).collect::<Vec<_>>();
        let mut gb = 0.0;
        for (r, yi) in z.chunks_exact(d).zip(&y) {
            let e = (sigmoid(dot(r, &wl) + bl) - yi) / n as f64;
            axpy(&mut g, e, r);
            gb += e;
        }
        w_prev = std::mem::replace(
            &mut w,
            wl.iter().zip(&g).map(|(a, g)| a - step * g).collect(),
        );
        b_prev = std::mem::replace(&mut b, bl - step * gb);
        if dot(&g, &g) + gb * gb < 1e-12 {
            break;
        }
    }
    Fit { mean, scale, w, b }
}

/// Which of `folds` folds each row is in, from a key per row (rows with the same key share a
/// fold: the same question never sits on both sides).
pub fn folds_of(keys: &[String], folds: usize, seed: u64) -> Vec<usize> {
    keys.iter()
        .map(|k| {
            let mut h = blake3::Hasher::new();
            h.update(&seed.to_le_bytes());
            h.update(k.as_bytes());
            let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
            (x % folds as u64) as usize
        })
        .collect()
}

/// Out-of-fold predictions: for each row, the probability from a model fitted on the other
/// folds (penalty chosen on a fifth of those, by log-loss), and the base rate of the other folds.
pub fn cross_validate(data: &Data, fold: &[usize], folds: usize) -> (Vec<f64>, Vec<f64>) {
    let n = data.y.len();
    let (mut p, mut base) = (vec![0.0; n], vec![0.0; n]);
    for k in 0..folds {
        let train: Vec<usize> = (0..n).filter(|&i| fold[i] != k).collect();
        let test: Vec<usize> = (0..n).filter(|&i| fold[i] == k).collect();
        if test.is_empty() {
            continue;
        }
        let rate = train.iter().filter(|&&i| data.y[i]).count() as f64 / train.len().max(1) as f64;
        let one_class = rate == 0.0 || rate == 1.0;
        let model = (!one_class).then(|| fit(data, &train, choose_lambda(data, &train)));
        for &i in &test {
            base[i] = rate;
            p[i] = model.as_ref().map_or(rate, |m| m.prob(data.row(i)));
        }
    }
    (p, base)
}

/// The penalty whose fit on four fifths of `train` gives the least log-loss on the last fifth.
fn choose_lambda(data: &Data, train: &[usize]) -> f64 {
    let (inner, held): (Vec<usize>, Vec<usize>) = train.iter().partition(|&&i| i % 5 != 0);
    let classes = |s: &[usize]| {
        let k = s.iter().filter(|&&i| data.y[i]).count();
        k > 0 && k < s.len()
    };
    if held.is_empty() || !classes(&inner) {
        return LAMBDAS[LAMBDAS.len() - 1];
    }
    LAMBDAS
        .iter()
        .map(|&l| {
            let m = fit(data, &inner, l);
            let loss: f64 = held
                .iter()
                .map(|&i| log_loss(m.prob(data.row(i)), data.y[i]))
                .sum();
            (l, loss)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(1.0, |(l, _)| l)
}

/// Area under the ROC curve of scores `p` for labels `y` (ties count half); `None` with one
/// class only.
pub fn auc(p: &[f64], y: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let pos = y.iter().filter(|&&v| v).count();
    let neg = y.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    // Sum of the positives' mid-ranks (Mann-Whitney U).
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && p[order[j + 1]] == p[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mid * order[i..=j].iter().filter(|&&k| y[k]).count() as f64;
        i = j + 1;
    }
    let u = rank_sum - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos * neg) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_counting_pairs() {
        let p = [0.1, 0.4, 0.35, 0.8, 0.4, 0.9, 0.2];
        let y = [false, true, false, true, false, true, true];
        let (mut wins, mut pairs) = (0.0, 0.0);
        for i in 0..p.len() {
            for j in 0..p.len() {
                if y[i] && !y[j] {
                    pairs += 1.0;
                    wins += if p[i] > p[j] {
                        1.0
                    } else if p[i] == p[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        assert!((auc(&p, &y).unwrap() - wins / pairs).abs() < 1e-12);
        assert_eq!(auc(&p, &[true; 7]), None);
    }
}
