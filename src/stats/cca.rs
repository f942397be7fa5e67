//! Canonical correlations and their relatives between two representations, from their
//! centred second moments `C_aa`, `C_bb` and `C_ab`: CCA, SVCCA (Raghu et al. 2017),
//! PWCCA (Morcos et al. 2018) and the orthogonal Procrustes distance (Ding et al. 2021).
//! What `similarity` computes between hidden states of one model and `agreement` between
//! the same hidden state of two. The decompositions and the `d x d` products are faer's
//! (`stats::linalg`), in f64.

use nalgebra::DMatrix;

use super::linalg::{self, matmul, matmul_tn};
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
/// Bytes the decompositions hold at the end: per state its eigenvectors and PWCCA's
/// weighting (two `d x d` f64), and per thread a pair's few `d x d` products.
pub fn decomposition_bytes(l: usize, d: usize) -> u64 {
    let square = (d * d * 8) as u64;
    (2 * l as u64 + 6 * rayon::current_num_threads() as u64) * square
}

/// One state's covariance `C = V diag(values) V^T`, decomposed once and shared by every
/// pair it is in. The whitening `(C + lambda I)^(-1/2) = V diag(s) V^T`, with
/// `s = (values + lambda)^(-1/2)`, is never formed: each pair works in the two states'
/// eigenbases, where it is a diagonal scaling.
pub struct Side {
    /// `trace(C)`.
    trace: f64,
    /// Eigenvalues, largest first (negatives from rounding clamped to 0), and their
    /// eigenvectors (columns).
    values: Vec<f64>,
    vectors: DMatrix<f64>,
    /// The ridge added.
    lambda: f64,
    /// `(values + lambda)^(-1/2)`: the whitening in the eigenbasis.
    scale: Vec<f64>,
    /// `C W = V diag(values * scale)`, in the eigenbasis' coordinates: PWCCA's map from a
    /// canonical direction to its covariance with the state's units.
    weighting: DMatrix<f64>,
    /// SVCCA's directions kept.
    pub kept: usize,
}

impl Side {
    /// `c` decomposed, with the ridge fraction `ridge` and SVCCA's `variance`.
    pub fn of(c: DMatrix<f64>, ridge: f64, variance: f64) -> Self {
        let d = c.nrows();
        let (values, vectors) = linalg::eigen_descending(&c);
        let values: Vec<f64> = values.into_iter().map(|v| v.max(0.0)).collect();
        let trace = c.trace();
        let lambda = ridge * trace.max(0.0) / d.max(1) as f64;
        let scale: Vec<f64> = values.iter().map(|v| (v + lambda).powf(-0.5)).collect();
        let mut weighting = vectors.clone();
        for (k, (v, s)) in values.iter().zip(&scale).enumerate() {
            weighting.column_mut(k).scale_mut(v * s);
        }
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
            trace,
            values,
            vectors,
            lambda,
            scale,
            weighting,
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
/// of the eigenvalues of its smaller Gram matrix: a symmetric eigenproblem, cheaper than
/// an SVD at these sizes, and exact enough for correlations
/// (an eigenvalue's rounding of 1e-16 moves a correlation by 1e-8 at most). With
/// `vectors` (a square `m`), the left singular vectors are the Gram matrix's eigenvectors
/// and the right ones `m^T u / sigma` (zero where sigma is 0).
fn svd(m: DMatrix<f64>, vectors: bool) -> (Vec<f64>, Option<Singular>) {
    let gram = linalg::gram(&m, m.nrows() > m.ncols());
    if !vectors {
        let sigma = linalg::eigenvalues_descending(&gram)
            .into_iter()
            .map(|x| x.max(0.0).sqrt())
            .collect();
        return (sigma, None);
    }
    let (values, u) = linalg::eigen_descending(&gram);
    let sigma: Vec<f64> = values.into_iter().map(|x| x.max(0.0).sqrt()).collect();
    let mut v = matmul_tn(&m, &u);
    for (k, &s) in sigma.iter().enumerate() {
        let scale = if s > 0.0 { 1.0 / s } else { 0.0 };
        v.column_mut(k).scale_mut(scale);
    }
    (sigma, Some((u, v)))
}

/// PWCCA weighted by one side: `rho` the correlations, `dirs` that side's canonical
/// directions in its eigenbasis (columns, in `rho`'s order). The weights are the column
/// sums of `|C W dirs|`, which in the eigenbasis is `V diag(values * s) dirs`.
fn pwcca(side: &Side, dirs: &DMatrix<f64>, rho: &[f64]) -> Option<f64> {
    let cw = matmul(&side.weighting, dirs);
    let alpha: Vec<f64> = (0..rho.len())
        .map(|i| cw.column(i).iter().map(|x| x.abs()).sum())
        .collect();
    let total: f64 = alpha.iter().sum();
    (total > 0.0).then(|| alpha.iter().zip(rho).map(|(a, r)| a * r).sum::<f64>() / total)
}

fn mean_correlation(rho: &[f64]) -> Option<f64> {
    (!rho.is_empty()).then(|| rho.iter().map(|r| r.min(1.0)).sum::<f64>() / rho.len() as f64)
}

/// Every index of `metrics` for one pair (`cab` its centred cross moments), with the
/// `leading` canonical correlations.
///
/// CCA's matrix `W_a C_ab W_b` is `V_a M V_b^T` with `M = diag(s_a) V_a^T C_ab V_b
/// diag(s_b)`: the same singular values, and singular vectors `V_a u`, `V_b v`. SVCCA's
/// matrix (the top principal directions, whitened) is `M`'s leading `kept_a x kept_b`
/// block. So one pair costs two products for `M` instead of two for CCA and two more for
/// SVCCA, and PWCCA's weights one product per side.
pub fn pair_values(
    a: &Side,
    b: &Side,
    cab: &DMatrix<f64>,
    metrics: &[Metric],
    leading: usize,
) -> PairValues {
    let wants = |m: Metric| metrics.contains(&m);
    let mut out = PairValues::default();
    if wants(Metric::Cca) || wants(Metric::Pwcca) || wants(Metric::Svcca) {
        let mut m = matmul(&matmul_tn(&a.vectors, cab), &b.vectors);
        for (i, s) in a.scale.iter().enumerate() {
            m.row_mut(i).scale_mut(*s);
        }
        for (j, s) in b.scale.iter().enumerate() {
            m.column_mut(j).scale_mut(*s);
        }
        if wants(Metric::Svcca) {
            let (rho, _) = svd(m.view((0, 0), (a.kept, b.kept)).into_owned(), false);
            out.svcca = mean_correlation(&rho);
        }
        if wants(Metric::Cca) || wants(Metric::Pwcca) {
            let (rho, uv) = svd(m, wants(Metric::Pwcca));
            out.cca = mean_correlation(&rho);
            out.leading = rho.iter().take(leading).map(|r| r.min(1.0)).collect();
            if let Some((u, v)) = uv {
                out.pwcca = (pwcca(a, &u, &rho), pwcca(b, &v, &rho));
            }
        }
    }
    if wants(Metric::Procrustes) {
        let (sigma, _) = svd(cab.clone(), false);
        let norms = (a.trace * b.trace).sqrt();
        out.procrustes =
            (norms > 0.0).then(|| (2.0 - 2.0 * sigma.iter().sum::<f64>() / norms).max(0.0));
    }
    out
}
