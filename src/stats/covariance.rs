//! Covariance across variables (hidden states) over shared observations ((token, dim)
//! points), streamed: each batch's co-moment matrix is computed around its own means, then
//! merged with Chan et al.'s update (in a [`super::tree::Tree`] fixed by text index, so the bits
//! do not depend on how texts were grouped). Equals `np.cov(X)` (rows = variables, ddof 1)
//! and `np.corrcoef(X)` on all the data at once.

use serde::{Deserialize, Serialize};

use super::double_double::{sum_all, Dd};

/// Running means and co-moments of `k` variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoMoments {
    k: usize,
    n: u64,
    /// Per-variable sums, as double-doubles: means are taken from them, so the mean
    /// differences a merge needs keep their digits far from zero.
    sum: Vec<Dd>,
    /// Row-major `k x k` sums of products of deviations.
    c: Vec<f64>,
}

impl CoMoments {
    /// For `k` variables.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            n: 0,
            sum: vec![Dd::default(); k],
            c: vec![0.0; k * k],
        }
    }

    /// The co-moments of one batch: `vars[i]` is variable `i`'s observations, all the
    /// same length (callers pass one slice per variable).
    pub fn of_batch(vars: &[&[f32]]) -> Self {
        let k = vars.len();
        let mut out = Self::new(k);
        let m = vars.first().map_or(0, |v| v.len());
        if m == 0 || vars.iter().any(|v| v.len() != m) {
            return out;
        }
        let sums: Vec<Dd> = vars.iter().map(|v| sum_all(v)).collect();
        let dev: Vec<Vec<f64>> = vars
            .iter()
            .zip(&sums)
            .map(|(v, s)| {
                let mu = s.over(m as f64);
                v.iter().map(|&x| (x as f64 - mu.hi) - mu.lo).collect()
            })
            .collect();
        for i in 0..k {
            for j in i..k {
                let s: f64 = dev[i].iter().zip(&dev[j]).map(|(a, b)| a * b).sum();
                out.c[i * k + j] = s;
                out.c[j * k + i] = s;
            }
        }
        out.sum = sums;
        out.n = m as u64;
        out
    }

    /// True when the shapes are consistent (a state read from a file is checked with it).
    pub fn is_well_formed(&self) -> bool {
        self.sum.len() == self.k && self.c.len() == self.k * self.k
    }

    /// Variables.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Observations seen.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Per-variable means.
    pub fn means(&self) -> Vec<f64> {
        self.sum
            .iter()
            .map(|s| s.over(self.n.max(1) as f64).value())
            .collect()
    }

    /// Sample covariance (ddof 1), `k x k`; `None` with fewer than 2 observations.
    pub fn covariance(&self) -> Option<Vec<Vec<f64>>> {
        (self.n >= 2).then(|| {
            let d = (self.n - 1) as f64;
            (0..self.k)
                .map(|i| (0..self.k).map(|j| self.c[i * self.k + j] / d).collect())
                .collect()
        })
    }

    /// Pearson correlation, clipped to [-1, 1] as `np.corrcoef` does; `None` entries where a
    /// variable has zero variance (numpy gives NaN there).
    pub fn correlation(&self) -> Option<Vec<Vec<Option<f64>>>> {
        (self.n >= 2).then(|| {
            (0..self.k)
                .map(|i| {
                    (0..self.k)
                        .map(|j| {
                            let (cii, cjj) = (self.c[i * self.k + i], self.c[j * self.k + j]);
                            (cii > 0.0 && cjj > 0.0).then(|| {
                                (self.c[i * self.k + j] / cii.sqrt() / cjj.sqrt()).clamp(-1.0, 1.0)
                            })
                        })
                        .collect()
                })
                .collect()
        })
    }
}

impl super::tree::Merge for CoMoments {
    /// Chan et al.'s pairwise update. Callers merge states of the same `k`.
    fn merge(&mut self, other: &Self) {
        if other.n == 0 || other.k != self.k {
            return;
        }
        if self.n == 0 {
            *self = other.clone();
            return;
        }
        let k = self.k;
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta: Vec<f64> = other
            .sum
            .iter()
            .zip(&self.sum)
            .map(|(b, a)| b.over(nb).minus(a.over(na)))
            .collect();
        for i in 0..k {
            for j in 0..k {
                self.c[i * k + j] += other.c[i * k + j] + delta[i] * delta[j] * na * nb / n;
            }
        }
        for (s, o) in self.sum.iter_mut().zip(&other.sum) {
            *s = s.plus_dd(*o);
        }
        self.n += other.n;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::Merge;
    use super::*;

    #[test]
    fn batches_equal_direct_covariance_with_offset() {
        let n = 600;
        let a: Vec<f32> = (0..n)
            .map(|i| 1000.0 + ((i * 13 % 17) as f32) * 0.5)
            .collect();
        let b: Vec<f32> = (0..n)
            .map(|i| -3.0 + (i as f32 * 0.01).sin() + a[i] * 0.001)
            .collect();
        let mut cm = CoMoments::new(2);
        for s in (0..n).step_by(97) {
            let e = (s + 97).min(n);
            cm.merge(&CoMoments::of_batch(&[&a[s..e], &b[s..e]]));
        }
        let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let (ma, mb) = (mean(&a), mean(&b));
        let cov = |x: &[f32], mx: f64, y: &[f32], my: f64| {
            x.iter()
                .zip(y)
                .map(|(&p, &q)| (p as f64 - mx) * (q as f64 - my))
                .sum::<f64>()
                / (n - 1) as f64
        };
        let c = cm.covariance().unwrap();
        assert!((c[0][0] - cov(&a, ma, &a, ma)).abs() < 1e-9);
        assert!((c[0][1] - cov(&a, ma, &b, mb)).abs() < 1e-12);
        assert!((c[1][1] - cov(&b, mb, &b, mb)).abs() < 1e-12);
        let r = cm.correlation().unwrap();
        assert!((r[0][0].unwrap() - 1.0).abs() < 1e-15);
    }

    #[test]
    fn constant_variable_has_no_correlation() {
        let cm = CoMoments::of_batch(&[&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]]);
        let r = cm.correlation().unwrap();
        assert_eq!(r[0][1], None);
        assert!((r[1][1].unwrap() - 1.0).abs() < 1e-15);
        assert!(CoMoments::new(1).covariance().is_none());
    }
}
