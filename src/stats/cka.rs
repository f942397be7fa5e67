//! The exact sums linear CKA and the CCA family are computed from: each state's sum and
//! the cross products `X_a^T X_b` of every pair `a <= b`, as fixed-point integers
//! ([`super::gram`]), computed per text by gemm, so any split of the texts merges to the
//! same bits. From them, linear CKA (Kornblith et al. 2019) and every pair's centred
//! second moments `Xc_a^T Xc_b / n`.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::StatsError;
use super::gram::{
    bytes_of, centred_frobenius2, centred_matrix, column_sums, cross_products, finite_rows,
    FiniteRows, Fixed,
};

/// Exact sums so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CkaState {
    /// Hidden-state indices.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// Tokens summed (those finite in every selected hidden state).
    pub n: u64,
    /// Tokens left out for a NaN or infinite value in any selected hidden state.
    pub nonfinite: u64,
    /// Per hidden state, `sum of h` (empty until the first token).
    pub sums: Vec<Fixed>,
    /// `sum of x_a x_b^T` for `a <= b` in order `(0,0), (0,1), ... (1,1), ...`: the upper
    /// triangle for `a = b`, all `d x d` otherwise (empty until the first token).
    pub products: Vec<Fixed>,
}

/// The pairs `a <= b` of `l` hidden states, in state order.
pub fn pairs(l: usize) -> Vec<(usize, usize)> {
    (0..l).flat_map(|a| (a..l).map(move |b| (a, b))).collect()
}

/// Bytes of the sums of `l` hidden states of size `d`.
pub fn state_bytes(l: usize, d: usize) -> u64 {
    let cross = l * l.saturating_sub(1) / 2;
    bytes_of(l * d * (d + 1) / 2 + cross * d * d + l * d)
}

impl CkaState {
    /// Takes one text's rows of every state (`[rows, d]` each, in `layers` order): its
    /// tokens that are finite in every state.
    pub fn observe(&mut self, states: &[&[f32]], d: usize) {
        let s = self;
        let FiniteRows { x, left_out, .. } = finite_rows(states, d);
        s.nonfinite += left_out;
        let n = x.first().map_or(0, |x| x.len() / d.max(1));
        if n == 0 {
            return;
        }
        if s.is_empty() {
            s.allocate(d);
        }
        for (sum, x) in s.sums.iter_mut().zip(&x) {
            sum.add(&column_sums(x, d));
        }
        s.products
            .par_iter_mut()
            .zip(pairs(s.layers.len()))
            .for_each_init(Vec::new, |buf, (p, (a, b))| {
                buf.resize(d * d, 0.0);
                cross_products(&x[a], &x[b], n, d, buf);
                if a == b {
                    p.add_upper(buf, d);
                } else {
                    p.add(buf);
                }
            });
        s.n += n as u64;
    }

    /// Folds in the sums of the texts that follow.
    pub fn merge(&mut self, right: CkaState) -> Result<(), StatsError> {
        let s = self;
        if s.layers != right.layers
            || s.sums.len() != right.sums.len()
            || s.products.len() != right.products.len()
        {
            return Err(StatsError::Differ("cka of different hidden states"));
        }
        if !right.is_empty() {
            if s.is_empty() {
                s.sums = right.sums;
                s.products = right.products;
            } else {
                let sizes = |x: &CkaState| -> Vec<usize> {
                    x.sums
                        .iter()
                        .chain(&x.products)
                        .map(|f| f.raw.len())
                        .collect()
                };
                if sizes(s) != sizes(&right) {
                    return Err(StatsError::Differ("cka sums of different hidden sizes"));
                }
                for (a, b) in s.sums.iter_mut().zip(&right.sums) {
                    a.merge(b);
                }
                for (a, b) in s.products.iter_mut().zip(&right.products) {
                    a.merge(b);
                }
            }
        }
        s.n += right.n;
        s.nonfinite += right.nonfinite;
        Ok(())
    }

    /// An empty state over `layers`.
    pub fn new(layers: Vec<usize>, labels: Vec<String>) -> Self {
        Self {
            sums: vec![Fixed::default(); layers.len()],
            products: vec![Fixed::default(); pairs(layers.len()).len()],
            layers,
            labels,
            n: 0,
            nonfinite: 0,
        }
    }

    fn allocate(&mut self, d: usize) {
        let l = self.layers.len();
        self.sums = vec![Fixed::zeros(d); l];
        self.products = pairs(l)
            .into_iter()
            .map(|(a, b)| Fixed::zeros(if a == b { d * (d + 1) / 2 } else { d * d }))
            .collect();
    }

    /// No token summed yet.
    pub fn is_empty(&self) -> bool {
        self.sums.first().is_none_or(|s| s.raw.is_empty())
    }

    /// Each hidden state's mean.
    fn means(&self) -> Vec<Vec<f64>> {
        let n = self.n as f64;
        self.sums
            .iter()
            .map(|s| s.values().iter().map(|v| v / n).collect())
            .collect()
    }

    /// The centred second moments `Xc_a^T Xc_b / n` of pair `k` (in [`pairs`] order), as a
    /// row-major `d x d` matrix (whole, also for `a = b`).
    pub fn centred_moments(&self, k: usize) -> Vec<f64> {
        let (a, b) = pairs(self.layers.len())[k];
        let means = self.means();
        centred_matrix(
            &self.products[k],
            &means[a],
            &means[b],
            self.n as f64,
            a == b,
        )
    }

    /// `[a][b]`: linear CKA between every two states (symmetric, 1 on the diagonal);
    /// `None` where a state has no variance or there are fewer than two tokens. Fails when
    /// the sums overflowed.
    pub fn matrix(&self) -> Result<Vec<Vec<Option<f64>>>, StatsError> {
        let l = self.layers.len();
        let mut matrix = vec![vec![None; l]; l];
        if self.n < 2 || self.is_empty() {
            return Ok(matrix);
        }
        let norms = self.centred_norms()?;
        let index = pairs(l);
        let self_norm = |a: usize| norms[index.iter().position(|&p| p == (a, a)).unwrap_or(0)];
        for (&(a, b), &f) in index.iter().zip(&norms) {
            let denominator = (self_norm(a) * self_norm(b)).sqrt();
            let v = (denominator > 0.0).then(|| if a == b { 1.0 } else { f / denominator });
            matrix[a][b] = v;
            matrix[b][a] = v;
        }
        Ok(matrix)
    }

    /// `|Xc_a^T Xc_b|_F^2 / n^2` for every pair, in pair order.
    fn centred_norms(&self) -> Result<Vec<f64>, StatsError> {
        if self.sums.iter().chain(&self.products).any(|f| f.overflow) {
            return Err(StatsError::Overflow);
        }
        let n = self.n as f64;
        let means = self.means();
        Ok(pairs(self.layers.len())
            .into_par_iter()
            .zip(&self.products)
            .map(|((a, b), p)| centred_frobenius2(p, &means[a], &means[b], n, a == b))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_estimate_matches_the_documented_figure() {
        // All 13 hidden states of GPT-2 small: 13 triangles and 78 full 768 x 768 blocks.
        let b = state_bytes(13, 768);
        assert!((760 << 20..761 << 20).contains(&b), "{b}");
    }
}
