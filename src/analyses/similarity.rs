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
//! decompositions are faer's (`stats::linalg`), in f64, done once at the end.

use nalgebra::DMatrix;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::kind::{
    expect_per_label, Analysis, Check, Context, KindError, Medium, MemoryLimit, Scalars, Section,
    Setup, TextActivations,
};
use crate::charts::{heatmap, VIRIDIS};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::spec::layers::LayerRef;
use crate::stats::cca::{
    all_metrics, decomposition_bytes, default_ridge, default_variance, pair_values, Metric,
    PairValues, Side,
};
use crate::stats::cka::{pairs, CkaState};
use crate::view::fmt_num;

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

/// A pair's value as `[a][b]` and as `[b][a]`.
type Both = (Option<f64>, Option<f64>);

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

impl Analysis for Similarity {
    const KIND: &'static str = "similarity";
    type State = SimilarityState;
    type Output = SimilarityResult;

    fn labels(o: &SimilarityResult) -> &[String] {
        &o.labels
    }

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        at.cca_parameters(self.variance, self.ridge)?;
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
        let sums = at.cka_sums(self.layers.as_deref(), self.max_memory, decomposition_bytes)?;
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
        let states: Vec<&[f32]> = s.sums.layers.iter().map(|&l| t.state(l)).collect();
        s.sums.observe(&states, t.dim);
    }

    fn merge(s: &mut SimilarityState, right: SimilarityState) -> Result<(), KindError> {
        if (&s.metrics, s.variance, s.ridge, s.leading)
            != (&right.metrics, right.variance, right.ridge, right.leading)
        {
            return Err(KindError::Mismatch(
                "similarity of different metrics or parameters".into(),
            ));
        }
        Ok(s.sums.merge(right.sums)?)
    }

    fn finish(s: SimilarityState) -> Result<SimilarityResult, KindError> {
        finish(s)
    }

    fn validate(o: &SimilarityResult, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(o, cx)?;
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
        Self::compare_columns(a, b, c)?;
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

fn finish(s: SimilarityState) -> Result<SimilarityResult, KindError> {
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
