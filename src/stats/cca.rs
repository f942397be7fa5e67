//! Canonical correlations and their relatives between two representations, from their
//! centred second moments `C_aa`, `C_bb` and `C_ab`: CCA, SVCCA (Raghu et al. 2017),
//! PWCCA (Morcos et al. 2018) and the orthogonal Procrustes distance (Ding et al. 2021).
//! What `similarity` computes between hidden states of one model and `agreement` between
//! the same hidden state of two. The decompositions are nalgebra's, in f64.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

/// One similarity index.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Linear CKA.
    Cka,
    /// Mean canonical correlation.
    Cca,
    /// SVCCA.
    Svcca,
    /// Projection-weighted CCA.
    Pwcca,
    /// Orthogonal Procrustes distance.
    Procrustes,
}

const ALL: [Metric; 5] = [
    Metric::Cka,
    Metric::Cca,
    Metric::Svcca,
    Metric::Pwcca,
    Metric::Procrustes,
];

/// All five indices.
pub fn all_metrics() -> Vec<Metric> {
    ALL.to_vec()
}

/// SVCCA's default share of variance kept.
pub fn default_variance() -> f64 {
    0.99
}
/// The default ridge fraction.
pub fn default_ridge() -> f64 {
    1e-6
}
/// Bytes the decompositions hold at the end: per state its covariance, eigenvectors and
/// whitening (three `d x d` f64), and per thread a pair's few `d x d` products.
pub fn decomposition_bytes(l: usize, d: usize) -> u64 {
    let square = (d * d * 8) as u64;
    (3 * l as u64 + 6 * rayon::current_num_threads() as u64) * square
}

/// One state's covariance, whitened and decomposed.
pub struct Side {
    /// `C_aa`.
    c: DMatrix<f64>,
    /// Eigenvalues, largest first, and their eigenvectors (columns).
    values: Vec<f64>,
    vectors: DMatrix<f64>,
    /// The ridge added.
    lambda: f64,
    /// `(C + lambda I)^(-1/2)`.
    whiten: DMatrix<f64>,
    /// SVCCA's directions kept.
    pub kept: usize,
}

impl Side {
    /// `c` decomposed, with the ridge fraction `ridge` and SVCCA's `variance`.
    pub fn of(c: DMatrix<f64>, ridge: f64, variance: f64) -> Self {
        let d = c.nrows();
        let eig = c.clone().symmetric_eigen();
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
        let values: Vec<f64> = order.iter().map(|&i| eig.eigenvalues[i].max(0.0)).collect();
        let vectors = DMatrix::from_fn(d, d, |r, k| eig.eigenvectors[(r, order[k])]);
        let lambda = ridge * c.trace().max(0.0) / d.max(1) as f64;
        let scale = DVector::from_iterator(d, values.iter().map(|v| (v + lambda).powf(-0.5)));
        let whiten = &vectors * DMatrix::from_diagonal(&scale) * vectors.transpose();
        let total: f64 = values.iter().sum();
        let mut acc = 0.0;
        let kept = values
            .iter()
            .position(|v| {
                acc += v;
                acc >= variance * total * (1.0 - 1e-12)
            })
            .map_or(d, |k| k + 1);
        Self {
            c,
            values,
            vectors,
            lambda,
            whiten,
            kept,
        }
    }

    /// The ridge decided a direction: the smallest variance is below it.
    pub fn leaned_on_ridge(&self) -> bool {
        self.values.last().is_some_and(|&v| v < self.lambda)
    }
}

/// One pair's indices (CKA comes from the exact sums apart).
#[derive(Default, Clone)]
pub struct PairValues {
    /// Mean canonical correlation.
    pub cca: Option<f64>,
    /// The leading canonical correlations.
    pub leading: Vec<f64>,
    /// SVCCA.
    pub svcca: Option<f64>,
    /// PWCCA weighted by the first side, and by the second.
    pub pwcca: (Option<f64>, Option<f64>),
    /// Procrustes distance.
    pub procrustes: Option<f64>,
}

/// Left and right singular vectors (columns).
type Singular = (DMatrix<f64>, DMatrix<f64>);

/// Singular values of `m`, largest first, `min(rows, cols)` of them, as the square roots
/// of the eigenvalues of its smaller Gram matrix: a symmetric eigenproblem, about three
/// times faster than nalgebra's SVD at these sizes, and exact enough for correlations
/// (an eigenvalue's rounding of 1e-16 moves a correlation by 1e-8 at most). With
/// `vectors` (a square `m`), the left singular vectors are the Gram matrix's eigenvectors
/// and the right ones `m^T u / sigma` (zero where sigma is 0).
fn svd(m: DMatrix<f64>, vectors: bool) -> (Vec<f64>, Option<Singular>) {
    let gram = if m.nrows() <= m.ncols() {
        &m * m.transpose()
    } else {
        m.transpose() * &m
    };
    if !vectors {
        let mut sigma: Vec<f64> = gram
            .symmetric_eigenvalues()
            .iter()
            .map(|x| x.max(0.0).sqrt())
            .collect();
        sigma.sort_by(|a, b| b.total_cmp(a));
        return (sigma, None);
    }
    let eig = gram.symmetric_eigen();
    let n = eig.eigenvalues.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
    let sigma: Vec<f64> = order
        .iter()
        .map(|&i| eig.eigenvalues[i].max(0.0).sqrt())
        .collect();
    let u = DMatrix::from_fn(n, n, |r, k| eig.eigenvectors[(r, order[k])]);
    let mut v = m.transpose() * &u;
    for (k, &s) in sigma.iter().enumerate() {
        let scale = if s > 0.0 { 1.0 / s } else { 0.0 };
        v.column_mut(k).scale_mut(scale);
    }
    (sigma, Some((u, v)))
}

/// PWCCA weighted by one side: `rho` the correlations, `dirs` that side's singular vectors
/// of the whitened product (columns, in `rho`'s order).
fn pwcca(side: &Side, dirs: &DMatrix<f64>, rho: &[f64]) -> Option<f64> {
    let w = &side.whiten * dirs;
    let alpha: Vec<f64> = (0..rho.len())
        .map(|i| (&side.c * w.column(i)).iter().map(|x| x.abs()).sum())
        .collect();
    let total: f64 = alpha.iter().sum();
    (total > 0.0).then(|| alpha.iter().zip(rho).map(|(a, r)| a * r).sum::<f64>() / total)
}

/// SVCCA: CCA between the top `kept` principal directions of each side.
fn svcca(a: &Side, b: &Side, cab: &DMatrix<f64>) -> Option<f64> {
    let pa = a.vectors.columns(0, a.kept);
    let pb = b.vectors.columns(0, b.kept);
    let scale = |s: &Side| {
        DMatrix::from_diagonal(&DVector::from_iterator(
            s.kept,
            s.values[..s.kept].iter().map(|v| (v + s.lambda).powf(-0.5)),
        ))
    };
    let m = scale(a) * pa.transpose() * cab * pb * scale(b);
    let (rho, _) = svd(m, false);
    mean_correlation(&rho)
}

fn mean_correlation(rho: &[f64]) -> Option<f64> {
    (!rho.is_empty()).then(|| rho.iter().map(|r| r.min(1.0)).sum::<f64>() / rho.len() as f64)
}

/// Every index of `metrics` for one pair (`cab` its centred cross moments), with the
/// `leading` canonical correlations.
pub fn pair_values(
    a: &Side,
    b: &Side,
    cab: &DMatrix<f64>,
    metrics: &[Metric],
    leading: usize,
) -> PairValues {
    let wants = |m: Metric| metrics.contains(&m);
    let mut out = PairValues::default();
    if wants(Metric::Cca) || wants(Metric::Pwcca) {
        let m = &a.whiten * cab * &b.whiten;
        let (rho, uv) = svd(m, wants(Metric::Pwcca));
        out.cca = mean_correlation(&rho);
        out.leading = rho.iter().take(leading).map(|r| r.min(1.0)).collect();
        if let Some((u, v)) = uv {
            out.pwcca = (pwcca(a, &u, &rho), pwcca(b, &v, &rho));
        }
    }
    if wants(Metric::Svcca) {
        out.svcca = svcca(a, b, cab);
    }
    if wants(Metric::Procrustes) {
        let (sigma, _) = svd(cab.clone(), false);
        let norms = (a.c.trace() * b.c.trace()).sqrt();
        out.procrustes =
            (norms > 0.0).then(|| (2.0 - 2.0 * sigma.iter().sum::<f64>() / norms).max(0.0));
    }
    out
}
