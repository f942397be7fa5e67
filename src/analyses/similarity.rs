//! `similarity`: representation similarity between every pair of selected hidden states
//! (or vectors of a site), by the indices papers report beside linear CKA, all from the
//! exact sums `cka` streams (each state's sum and the cross products `X_a^T X_b`): the
//! centred second moments `C_ab = Xc_a^T Xc_b / n` determine them all.
//!
//! - `cka`: linear CKA, `|C_ab|_F^2 / (|C_aa|_F |C_bb|_F)` (the numbers of `kind: cka`).
//! - `cca`: the canonical correlations `rho_i`, the singular values of
//!   `W_a C_ab W_b` with `W = (C + ridge I)^(-1/2)`; their mean, and the leading ones.
//! - `svcca` (Raghu et al. 2017): each side reduced to its top principal directions
//!   explaining `variance` of its total variance, then CCA; the mean correlation.
//! - `pwcca` (Morcos et al. 2018): the canonical correlations weighted by how much of
//!   `a`'s neurons each canonical variate accounts for, `alpha_i = sum_j |<Xc_a w_i, x_j>|`
//!   = `sum_j |(C_aa w_i)_j|` for canonical weights `w_i` (up to `n`, which cancels);
//!   `[a][b]` weights by `a`'s side, so the matrix is not symmetric.
//! - `procrustes` (Ding et al. 2021): the orthogonal Procrustes distance between centred,
//!   Frobenius-normalised representations, `2 - 2 |C_ab|_* / sqrt(tr C_aa tr C_bb)`.
//!
//! `ridge` adds `ridge * tr(C) / d` to each side's diagonal before whitening, which keeps
//! CCA defined when the tokens are fewer than the width (the moments are then singular);
//! the result names the states whose smallest variance was below that ridge. The
//! decompositions are nalgebra's, in f64, done once at the end.

use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::cka::{pairs, Cka, CkaState};
use super::kind::{
    expect_per_label, Analysis, Check, Context, Medium, MemoryLimit, Scalars, Section, Setup,
    TextActivations,
};
use crate::charts::{heatmap, VIRIDIS};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::spec::layers::LayerRef;
use crate::view::fmt_num;

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

fn all_metrics() -> Vec<Metric> {
    ALL.to_vec()
}
pub(super) fn default_variance() -> f64 {
    0.99
}
pub(super) fn default_ridge() -> f64 {
    1e-6
}
fn default_leading() -> usize {
    5
}

/// `{kind: similarity, metrics: [cka, cca, svcca, pwcca, procrustes], variance: 0.99,
/// ridge: 1e-6, leading: 5, layers: [...], max_memory: "2 GiB"}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Similarity {
    /// The hidden states to compare (at least two). Default: the spec's `layers`.
    #[serde(default)]
    pub layers: Option<Vec<LayerRef>>,
    /// The indices computed. Default: all five.
    #[serde(default = "all_metrics")]
    pub metrics: Vec<Metric>,
    /// SVCCA keeps the top principal directions explaining this share of each side's
    /// variance, in (0, 1]. Default 0.99.
    #[serde(default = "default_variance")]
    pub variance: f64,
    /// Added to each side's covariance diagonal before whitening, as a fraction of its
    /// mean variance (`tr C / d`), at least 0. Default 1e-6.
    #[serde(default = "default_ridge")]
    pub ridge: f64,
    /// How many leading canonical correlations results.json lists per pair (0 to 64).
    /// Default 5.
    #[serde(default = "default_leading")]
    #[schemars(range(min = 0, max = 64))]
    pub leading: usize,
    /// The most memory the sums and the decompositions may take. Default `"2 GiB"`.
    #[serde(default)]
    pub max_memory: MemoryLimit,
}

/// The exact sums, and what to compute from them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimilarityState {
    /// The indices asked for, in the spec's order.
    pub metrics: Vec<Metric>,
    /// SVCCA's variance share.
    pub variance: f64,
    /// The ridge fraction.
    pub ridge: f64,
    /// Leading correlations listed.
    pub leading: usize,
    /// The sums `cka` streams.
    pub sums: CkaState,
}

/// An `[a][b]` matrix over the hidden states (`null` where undefined).
pub type Matrix = Vec<Vec<Option<f64>>>;

/// Representation similarity between hidden states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarityResult {
    /// Hidden-state labels.
    pub labels: Vec<String>,
    /// Tokens compared (finite in every selected state).
    pub tokens: u64,
    /// Tokens left out for a NaN or infinite value.
    pub nonfinite_tokens: u64,
    /// The indices computed.
    pub metrics: Vec<Metric>,
    /// Linear CKA (symmetric, 1 on the diagonal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cka: Option<Matrix>,
    /// Mean canonical correlation (symmetric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cca: Option<Matrix>,
    /// `[a][b]`: the leading canonical correlations, largest first (with `cca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cca_leading: Option<Vec<Vec<Vec<f64>>>>,
    /// SVCCA's mean correlation (symmetric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svcca: Option<Matrix>,
    /// Per state: the principal directions SVCCA kept (with `svcca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svcca_directions: Option<Vec<usize>>,
    /// Projection-weighted CCA, weighted by row `a`'s side (not symmetric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwcca: Option<Matrix>,
    /// Orthogonal Procrustes distance, 0 (same up to rotation and scale) to 2 (symmetric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procrustes: Option<Matrix>,
    /// SVCCA's variance share.
    pub variance: f64,
    /// The ridge fraction.
    pub ridge: f64,
    /// States whose smallest variance fell below the ridge (CCA leant on it).
    pub ridge_needed: Vec<String>,
}

/// One state's covariance, whitened and decomposed.
pub(super) struct Side {
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
    kept: usize,
}

impl Side {
    /// `c` decomposed, with the ridge fraction `ridge` and SVCCA's `variance`.
    pub(super) fn of(c: DMatrix<f64>, ridge: f64, variance: f64) -> Self {
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
    fn leaned_on_ridge(&self) -> bool {
        self.values.last().is_some_and(|&v| v < self.lambda)
    }
}

/// One pair's indices (CKA comes from the exact sums apart).
#[derive(Default, Clone)]
pub(super) struct PairValues {
    /// Mean canonical correlation.
    pub(super) cca: Option<f64>,
    /// The leading canonical correlations.
    pub(super) leading: Vec<f64>,
    /// SVCCA.
    pub(super) svcca: Option<f64>,
    /// PWCCA weighted by the first side, and by the second.
    pub(super) pwcca: (Option<f64>, Option<f64>),
    /// Procrustes distance.
    pub(super) procrustes: Option<f64>,
}

/// Left and right singular vectors (columns).
type Singular = (DMatrix<f64>, DMatrix<f64>);
/// A pair's value as `[a][b]` and as `[b][a]`.
type Both = (Option<f64>, Option<f64>);

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
pub(super) fn pair_values(
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

impl Analysis for Similarity {
    const KIND: &'static str = "similarity";
    type State = SimilarityState;
    type Output = SimilarityResult;

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        check_indices(at, self.variance, self.ridge)?;
        if self.leading > 64 {
            return Err(at.invalid("leading", self.leading, "list 0 to 64 leading correlations"));
        }
        if self.metrics.is_empty() {
            return Err(at.invalid(
                "metrics",
                "[]",
                "name at least one of cka, cca, svcca, pwcca, procrustes",
            ));
        }
        Ok(())
    }

    fn start(&self, at: &Setup) -> Result<SimilarityState, SpecError> {
        let cka = Cka {
            layers: self.layers.clone(),
            max_memory: self.max_memory,
        };
        let sums = cka.start_within(at, "similarity", finish_bytes)?;
        let mut metrics = self.metrics.clone();
        metrics.sort();
        metrics.dedup();
        Ok(SimilarityState {
            metrics,
            variance: self.variance,
            ridge: self.ridge,
            leading: self.leading,
            sums,
        })
    }

    fn layers(s: &SimilarityState) -> Vec<usize> {
        s.sums.layers.clone()
    }

    fn observe(s: &mut SimilarityState, t: &TextActivations) {
        <Cka as Analysis>::observe(&mut s.sums, t);
    }

    fn merge(s: &mut SimilarityState, right: SimilarityState) -> Result<(), String> {
        if (&s.metrics, s.variance, s.ridge, s.leading)
            != (&right.metrics, right.variance, right.ridge, right.leading)
        {
            return Err("similarity of different metrics or parameters".into());
        }
        <Cka as Analysis>::merge(&mut s.sums, right.sums)
    }

    fn finish(s: SimilarityState) -> Result<SimilarityResult, String> {
        finish(s)
    }

    fn validate(o: &SimilarityResult, cx: &Context) -> Result<(), String> {
        super::kind::expect_known_labels(&o.labels, cx.labels)?;
        for (name, m) in o.matrices() {
            expect_per_label(name, m, &o.labels)?;
            for (i, row) in m.iter().enumerate() {
                expect_per_label(&format!("{name}[{i}]"), row, &o.labels)?;
            }
        }
        Ok(())
    }

    fn section(o: &SimilarityResult, _: &Context, _: Medium) -> Section {
        section(o)
    }

    fn scalars(o: &SimilarityResult) -> Vec<Scalars> {
        o.matrices()
            .into_iter()
            .map(|(name, m)| {
                let values = (0..o.labels.len())
                    .map(|i| i.checked_sub(1).and_then(|j| m[i][j]))
                    .collect();
                Scalars::new(&format!("{name}_to_previous"), &o.labels, values)
            })
            .collect()
    }

    fn compare(
        a: &SimilarityResult,
        b: &SimilarityResult,
        c: &mut Comparer,
    ) -> Result<(), Mismatch> {
        c.same("hidden states", &a.labels, &b.labels)?;
        c.same("metrics", &a.metrics, &b.metrics)?;
        for ((name, x), (_, y)) in a.matrices().into_iter().zip(b.matrices()) {
            let mut m = c.metric(name);
            for i in 0..a.labels.len() {
                for j in 0..a.labels.len() {
                    m.opt(x[i][j], y[i][j], || {
                        format!("{} x {}", a.labels[i], a.labels[j])
                    });
                }
            }
            c.push(m);
        }
        Ok(())
    }
}

/// Checks SVCCA's `variance` and the `ridge` (shared with `agreement`).
pub(super) fn check_indices(at: &Check, variance: f64, ridge: f64) -> Result<(), SpecError> {
    if !(variance > 0.0 && variance <= 1.0) {
        return Err(at.invalid(
            "variance",
            variance,
            "give the share of variance SVCCA keeps in (0, 1], e.g. 0.99",
        ));
    }
    if !(ridge >= 0.0 && ridge.is_finite()) {
        return Err(at.invalid(
            "ridge",
            ridge,
            "give a fraction of the mean variance, at least 0, e.g. 1e-6",
        ));
    }
    Ok(())
}

/// Bytes the decompositions hold at the end: per state its covariance, eigenvectors and
/// whitening (three `d x d` f64), and per thread a pair's few `d x d` products.
pub(super) fn finish_bytes(l: usize, d: usize) -> u64 {
    let square = (d * d * 8) as u64;
    (3 * l as u64 + 6 * rayon::current_num_threads() as u64) * square
}

fn finish(s: SimilarityState) -> Result<SimilarityResult, String> {
    let state = &s.sums;
    let l = state.layers.len();
    let index = pairs(l);
    let defined = state.n >= 2 && !state.is_empty();
    // Also the overflow check of the sums every index is read from.
    let cka = state.matrix()?;
    let (sides, values) = match defined {
        true => decompose(&s, &index),
        false => (Vec::new(), vec![PairValues::default(); index.len()]),
    };
    let wants = |m: Metric| s.metrics.contains(&m);
    let fill = |f: &dyn Fn(&PairValues) -> Both, diagonal: f64| {
        let mut m = vec![vec![None; l]; l];
        for (&(a, b), v) in index.iter().zip(&values).filter(|_| defined) {
            let (x, y) = if a == b {
                (Some(diagonal), Some(diagonal))
            } else {
                f(v)
            };
            m[a][b] = x;
            m[b][a] = y;
        }
        m
    };
    let leading = || {
        let mut lead = vec![vec![Vec::new(); l]; l];
        for (&(a, b), v) in index.iter().zip(&values) {
            lead[a][b] = v.leading.clone();
            lead[b][a] = v.leading.clone();
        }
        lead
    };
    Ok(SimilarityResult {
        labels: state.labels.clone(),
        tokens: state.n,
        nonfinite_tokens: state.nonfinite,
        metrics: s.metrics.clone(),
        cka: wants(Metric::Cka).then_some(cka),
        cca: wants(Metric::Cca).then(|| fill(&|v| (v.cca, v.cca), 1.0)),
        cca_leading: wants(Metric::Cca).then(leading),
        svcca: wants(Metric::Svcca).then(|| fill(&|v| (v.svcca, v.svcca), 1.0)),
        svcca_directions: wants(Metric::Svcca).then(|| sides.iter().map(|x| x.kept).collect()),
        pwcca: wants(Metric::Pwcca).then(|| fill(&|v| v.pwcca, 1.0)),
        procrustes: wants(Metric::Procrustes).then(|| fill(&|v| (v.procrustes, v.procrustes), 0.0)),
        variance: s.variance,
        ridge: s.ridge,
        ridge_needed: sides
            .iter()
            .zip(&state.labels)
            .filter(|(x, _)| x.leaned_on_ridge())
            .map(|(_, label)| label.clone())
            .collect(),
    })
}

/// Each state's decomposition, then every pair's indices (pairs in parallel).
fn decompose(s: &SimilarityState, index: &[(usize, usize)]) -> (Vec<Side>, Vec<PairValues>) {
    let state = &s.sums;
    let d = state.sums.first().map_or(0, |x| x.raw.len());
    let moments = |k: usize| DMatrix::from_row_slice(d, d, &state.centred_moments(k));
    let sides: Vec<Side> = (0..state.layers.len())
        .into_par_iter()
        .map(|a| {
            let k = index.iter().position(|&p| p == (a, a)).unwrap_or(0);
            Side::of(moments(k), s.ridge, s.variance)
        })
        .collect();
    let values = index
        .par_iter()
        .enumerate()
        .map(|(k, &(a, b))| match a == b {
            true => PairValues::default(),
            false => pair_values(&sides[a], &sides[b], &moments(k), &s.metrics, s.leading),
        })
        .collect();
    (sides, values)
}

impl SimilarityResult {
    /// The matrices present, by metric name, in the metrics' order.
    fn matrices(&self) -> Vec<(&'static str, &Matrix)> {
        [
            ("cka", &self.cka),
            ("cca", &self.cca),
            ("svcca", &self.svcca),
            ("pwcca", &self.pwcca),
            ("procrustes", &self.procrustes),
        ]
        .into_iter()
        .filter_map(|(n, m)| m.as_ref().map(|m| (n, m)))
        .collect()
    }
}

fn section(o: &SimilarityResult) -> Section {
    let what = |name: &str| match name {
        "cka" => (
            "Linear CKA",
            "1: the same representation up to rotation and scale",
            (0.0, 1.0),
        ),
        "cca" => (
            "Mean canonical correlation (CCA)",
            "1: every direction of one is a direction of the other",
            (0.0, 1.0),
        ),
        "svcca" => (
            "SVCCA",
            "CCA between the principal directions that explain the chosen share of variance",
            (0.0, 1.0),
        ),
        "pwcca" => (
            "Projection-weighted CCA",
            "row: the side whose neurons weight the correlations",
            (0.0, 1.0),
        ),
        _ => (
            "Orthogonal Procrustes distance",
            "0: the same up to rotation and scale; 2: nothing shared",
            (0.0, 2.0),
        ),
    };
    let charts = o
        .matrices()
        .into_iter()
        .map(|(name, m)| {
            let (heading, sub, range) = what(name);
            let mut chart = heatmap(heading, sub, &o.labels, &|i, j| m[i][j], range, &VIRIDIS);
            chart.title = format!("similarity-{name}");
            chart
        })
        .collect();
    let mut notes = Vec::new();
    if !o.ridge_needed.is_empty() {
        notes.push(format!(
            "The ridge ({} of the mean variance) decided CCA for {}: their covariance is singular or nearly (fewer tokens than dimensions, or dead dimensions).",
            fmt_num(o.ridge),
            o.ridge_needed.join(", ")
        ));
    }
    if let Some(k) = &o.svcca_directions {
        let shown: Vec<String> = o
            .labels
            .iter()
            .zip(k)
            .map(|(l, k)| format!("{l}: {k}"))
            .collect();
        notes.push(format!(
            "SVCCA kept the principal directions explaining {} of each state's variance: {}.",
            fmt_num(o.variance),
            shown.join(", ")
        ));
    }
    if o.nonfinite_tokens > 0 {
        notes.push(format!(
            "{} tokens had NaN or infinite values and were left out.",
            o.nonfinite_tokens
        ));
    }
    Section {
        heading: "Representation similarity".into(),
        intro: format!(
            "Between every pair of hidden states, over {} tokens, from the exact centred second moments.",
            o.tokens
        ),
        notes,
        charts,
        tables: vec![],
        wide: false,
        collapsed: None,
    }
}
