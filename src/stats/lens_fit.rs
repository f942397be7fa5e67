//! A linear lens fitted in closed form (Din et al., "Jump to Conclusions: Short-Cutting
//! Transformers With Linear Transformations", LREC-COLING 2024): for each hidden state
//! `l`, the affine map `h_L ≈ A_l h_l + b_l` onto the last block's output before the final
//! norm that least squares gives, `A_l = C_Ll (C_ll + λI)^-1`, `b_l = μ_L - A_l μ_l`, from
//! the centred second moments. The state is each state's sum, `X_l^T X_l` and
//! `X_L^T X_l`, exact fixed-point sums ([`super::gram`]), so any split of the corpus
//! merges to the same bits and the same lens.

use nalgebra::{DMatrix, DVector};

use super::linalg;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::StatsError;
use super::gram::{
    bytes_of, centred_matrix, column_sums, cross_products, finite_rows, FiniteRows, Fixed,
};

/// Exact sums so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LensSums {
    /// The hidden states mapped (indices).
    pub layers: Vec<usize>,
    /// The state they are mapped onto.
    pub target: usize,
    /// Tokens summed (finite in every state).
    pub n: u64,
    /// Tokens left out for a NaN or infinite value.
    pub nonfinite: u64,
    /// `sum x` of each state of `layers`, then of the target (empty until a token).
    pub sums: Vec<Fixed>,
    /// The upper triangle of `X^T X` of each state of `layers`, then of the target.
    pub squares: Vec<Fixed>,
    /// `X_L^T X_l` for each state of `layers`, whole.
    pub cross: Vec<Fixed>,
}

/// Bytes of the sums of `l` states of width `d`.
pub fn state_bytes(l: usize, d: usize) -> u64 {
    bytes_of((l + 1) * (d * (d + 1) / 2 + d) + l * d * d)
}

/// One state's fitted map and how well it does.
pub struct Fitted {
    /// `A` as torch's `Linear` stores it, `[out, in]` row-major.
    pub a: Vec<f64>,
    /// `b`.
    pub b: Vec<f64>,
    /// Share of the target's variance the map explains (in sample).
    pub r2: Option<f64>,
    /// Whether the ridge decided a direction: `C_ll` has an eigenvalue below `λ`.
    pub ridge_needed: bool,
}

impl LensSums {
    /// Empty sums mapping `layers` onto `target`.
    pub fn new(layers: Vec<usize>, target: usize) -> Self {
        Self {
            layers,
            target,
            n: 0,
            nonfinite: 0,
            sums: Vec::new(),
            squares: Vec::new(),
            cross: Vec::new(),
        }
    }

    /// Takes one text's rows of every state of `layers` then the target's (`[rows, d]`).
    pub fn observe(&mut self, states: &[&[f32]], d: usize) {
        let FiniteRows { x, left_out, .. } = finite_rows(states, d);
        self.nonfinite += left_out;
        let n = x.first().map_or(0, |x| x.len() / d.max(1));
        if n == 0 {
            return;
        }
        let l = self.layers.len();
        if self.sums.is_empty() {
            self.sums = vec![Fixed::zeros(d); l + 1];
            self.squares = vec![Fixed::zeros(d * (d + 1) / 2); l + 1];
            self.cross = vec![Fixed::zeros(d * d); l];
        }
        for (sum, x) in self.sums.iter_mut().zip(&x) {
            sum.add(&column_sums(x, d));
        }
        let target = &x[l];
        self.squares
            .par_iter_mut()
            .zip(&x)
            .for_each_init(Vec::new, |buf, (p, x)| {
                buf.resize(d * d, 0.0);
                cross_products(x, x, n, d, buf);
                p.add_upper(buf, d);
            });
        self.cross
            .par_iter_mut()
            .zip(&x)
            .for_each_init(Vec::new, |buf, (p, x)| {
                buf.resize(d * d, 0.0);
                cross_products(target, x, n, d, buf);
                p.add(buf);
            });
        self.n += n as u64;
    }

    /// Folds in the sums of the texts that follow.
    pub fn merge(&mut self, right: LensSums) -> Result<(), StatsError> {
        if self.layers != right.layers || self.target != right.target {
            return Err(StatsError::Differ("lens sums of other hidden states"));
        }
        if !right.sums.is_empty() {
            if self.sums.is_empty() {
                self.sums = right.sums;
                self.squares = right.squares;
                self.cross = right.cross;
            } else {
                let size = |s: &LensSums| s.sums.first().map_or(0, |f| f.raw.len());
                if size(self) != size(&right) {
                    return Err(StatsError::Differ("lens sums of different hidden sizes"));
                }
                for (a, b) in self.sums.iter_mut().zip(&right.sums) {
                    a.merge(b);
                }
                for (a, b) in self.squares.iter_mut().zip(&right.squares) {
                    a.merge(b);
                }
                for (a, b) in self.cross.iter_mut().zip(&right.cross) {
                    a.merge(b);
                }
            }
        }
        self.n += right.n;
        self.nonfinite += right.nonfinite;
        Ok(())
    }

    /// Whether any sum overflowed.
    pub fn overflowed(&self) -> bool {
        self.sums
            .iter()
            .chain(&self.squares)
            .chain(&self.cross)
            .any(|f| f.overflow)
    }

    fn mean(&self, i: usize) -> Vec<f64> {
        let n = self.n as f64;
        self.sums[i].values().iter().map(|v| v / n).collect()
    }

    /// The map of state `li` (an index into `layers`) with the ridge fraction `ridge`;
    /// `None` with fewer than two tokens or a matrix that does not factor.
    pub fn fit(&self, li: usize, ridge: f64) -> Option<Fitted> {
        if self.n < 2 || self.sums.is_empty() {
            return None;
        }
        let (l, n) = (self.layers.len(), self.n as f64);
        let d = self.sums[li].raw.len();
        let (ml, mt) = (self.mean(li), self.mean(l));
        let c_ll =
            DMatrix::from_row_slice(d, d, &centred_matrix(&self.squares[li], &ml, &ml, n, true));
        let c_tt = centred_matrix(&self.squares[l], &mt, &mt, n, true);
        // Row i, column j: the covariance of target dimension i with input dimension j.
        let c_tl =
            DMatrix::from_row_slice(d, d, &centred_matrix(&self.cross[li], &mt, &ml, n, false));
        let lambda = ridge * c_ll.trace() / d as f64;
        let shifted = |by: f64| {
            let mut m = c_ll.clone();
            for i in 0..d {
                m[(i, i)] += by;
            }
            m
        };
        let ridge_needed = linalg::cholesky(&shifted(-lambda)).is_none();
        // A (C_ll + λI) = C_tl, so (C_ll + λI) A^T = C_tl^T.
        let a_t = linalg::cholesky(&shifted(lambda))?.solve(&c_tl.transpose());
        let a = a_t.transpose();
        let b = DVector::from_vec(mt.clone()) - &a * DVector::from_vec(ml);
        let total: f64 = (0..d).map(|i| c_tt[i * d + i]).sum();
        // tr(C_res) = tr(C_tt) - 2 tr(A C_tl^T) + tr(A C_ll A^T).
        let cross_term = a.component_mul(&c_tl).sum();
        let fitted_term = linalg::matmul(&a, &c_ll).component_mul(&a).sum();
        let residual = total - 2.0 * cross_term + fitted_term;
        let r2 = (total > 0.0).then(|| 1.0 - residual / total);
        let a_rows: Vec<f64> = (0..d)
            .flat_map(|i| (0..d).map(move |j| (i, j)))
            .map(|(i, j)| a[(i, j)])
            .collect();
        Some(Fitted {
            a: a_rows,
            b: b.as_slice().to_vec(),
            r2,
            ridge_needed,
        })
    }
}
