//! Per-column mean and variance of row-major `[rows, cols]` data (each dimension of a hidden
//! state over its tokens), streamed: each batch around its own column means, merged with
//! Chan et al.'s update, sums carried as double-doubles.

use serde::{Deserialize, Serialize};

use super::double_double::Dd;

/// Rows per block summed in plain f64 before joining a column's double-double sum.
const BLOCK: usize = 256;

/// Count, per-column sums and sums of squared deviations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMoments {
    /// Rows seen.
    pub n: u64,
    /// Per-column sums.
    pub sum: Vec<Dd>,
    /// Per-column sums of squared deviations from the column mean.
    pub m2: Vec<f64>,
}

impl ColumnMoments {
    /// The moments of one batch of `cols`-wide rows.
    pub fn of_rows(data: &[f32], cols: usize) -> Self {
        let cols = cols.max(1);
        let rows = data.len() / cols;
        let mut sum = vec![Dd::default(); cols];
        for block in data.chunks(BLOCK * cols) {
            let mut s = vec![0f64; cols];
            for row in block.chunks_exact(cols) {
                for (a, &x) in s.iter_mut().zip(row) {
                    *a += x as f64;
                }
            }
            for (d, x) in sum.iter_mut().zip(s) {
                *d = d.plus(x);
            }
        }
        let mut m2 = vec![0f64; cols];
        if rows > 0 {
            let mean: Vec<Dd> = sum.iter().map(|s| s.over(rows as f64)).collect();
            for row in data.chunks_exact(cols) {
                for ((a, &x), mu) in m2.iter_mut().zip(row).zip(&mean) {
                    let d = (x as f64 - mu.hi) - mu.lo;
                    *a += d * d;
                }
            }
        }
        Self {
            n: rows as u64,
            sum,
            m2,
        }
    }

    /// Columns (0 for a state that saw no row yet).
    pub fn width(&self) -> usize {
        self.m2.len()
    }

    /// Per-column means.
    pub fn means(&self) -> Vec<f64> {
        let n = self.n.max(1) as f64;
        self.sum.iter().map(|s| s.over(n).value()).collect()
    }

    /// Per-column population variances (`np.var(x, axis=0)`, ddof 0).
    pub fn variances(&self) -> Vec<f64> {
        let n = self.n.max(1) as f64;
        self.m2.iter().map(|m| m / n).collect()
    }
}

impl super::tree::Merge for ColumnMoments {
    fn merge(&mut self, o: &Self) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 || self.width() != o.width() {
            *self = o.clone();
            return;
        }
        let (na, nb) = (self.n as f64, o.n as f64);
        let f = na * nb / (na + nb);
        for j in 0..self.m2.len() {
            let delta = o.sum[j].over(nb).minus(self.sum[j].over(na));
            self.m2[j] += o.m2[j] + delta * delta * f;
            self.sum[j] = self.sum[j].plus_dd(o.sum[j]);
        }
        self.n += o.n;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::Merge;
    use super::*;

    #[test]
    fn merged_batches_equal_one_pass() {
        let data: Vec<f32> = (0..600)
            .map(|i| ((i * 37 % 101) as f32) * 0.25 + 1e4)
            .collect();
        let whole = ColumnMoments::of_rows(&data, 3);
        let mut parts = ColumnMoments::default();
        for c in data.chunks(3 * 17) {
            parts.merge(&ColumnMoments::of_rows(c, 3));
        }
        for j in 0..3 {
            let col: Vec<f64> = data.iter().skip(j).step_by(3).map(|&x| x as f64).collect();
            let m = col.iter().sum::<f64>() / col.len() as f64;
            let v = col.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / col.len() as f64;
            for got in [&whole, &parts] {
                assert!((got.variances()[j] - v).abs() <= 1e-12 * v);
                assert!((got.means()[j] - m).abs() <= 1e-12);
            }
        }
    }
}
