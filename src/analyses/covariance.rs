//! `covariance`: `np.cov` (ddof 1) and `np.corrcoef**2` across the selected hidden states,
//! over every (token, dimension) point. Each text's co-moments are computed alone, then
//! merged in a tree fixed by text index ([`crate::stats::Tree`]).

use serde::{Deserialize, Serialize};

use super::{Analysis, Section, Setup, TextActivations};
use crate::charts::{difference_heatmaps, heatmap, r, ChartSpec, VIRIDIS};
use crate::compare::{Comparer, Mismatch};
use crate::report::{fmt_num, fmt_opt, matrix_table};
use crate::results::Results;
use crate::spec::SpecError;
use crate::stats::{CoMoments, Tree};

/// `{kind: covariance}` across the spec's `layers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Covariance {}

/// Co-moments of the texts seen, as completed tree blocks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CovarianceState {
    /// Hidden-state indices.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// Per-text co-moments, merged by text index.
    pub tree: Tree<CoMoments>,
}

/// Covariance and shared variance across hidden states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CovarianceResult {
    /// Hidden-state labels, the rows and columns of both matrices.
    pub labels: Vec<String>,
    /// (token, dim) points per hidden state.
    pub n_points: u64,
    /// Mean of each hidden state.
    pub means: Vec<f64>,
    /// Sample covariance, ddof 1 (`np.cov`).
    pub covariance: Vec<Vec<f64>>,
    /// Squared Pearson correlation (`np.corrcoef**2`); `null` where a hidden state
    /// has zero variance.
    pub r2: Vec<Vec<Option<f64>>>,
}

impl CovarianceState {
    /// An empty state over hidden states `layers`, labelled `labels`.
    pub fn new(layers: Vec<usize>, labels: Vec<String>) -> Self {
        Self {
            layers,
            labels,
            tree: Tree::default(),
        }
    }
}

impl Analysis for Covariance {
    const KIND: &'static str = "covariance";
    const TEMPLATE: &'static str = include_str!("../../templates/sections/covariance.html.j2");
    type State = CovarianceState;
    type Output = CovarianceResult;

    fn start(&self, at: &Setup) -> Result<CovarianceState, SpecError> {
        Ok(CovarianceState::new(
            at.selected.to_vec(),
            at.names(at.selected),
        ))
    }

    fn layers(s: &CovarianceState) -> Vec<usize> {
        s.layers.clone()
    }

    fn observe(s: &mut CovarianceState, t: &TextActivations) {
        let vars: Vec<&[f32]> = s.layers.iter().map(|&l| t.state(l)).collect();
        s.tree.push(t.index as u64, CoMoments::of_batch(&vars));
    }

    fn merge(s: &mut CovarianceState, right: CovarianceState) -> Result<(), String> {
        if s.layers != right.layers {
            return Err("covariances of different hidden states".into());
        }
        let k = s.layers.len();
        if right.tree.blocks.iter().any(|b| b.state.k() != k || !b.state.is_well_formed()) {
            return Err(format!("a co-moment block is not {k} x {k}"));
        }
        s.tree.join(right.tree)
    }

    fn finish(s: CovarianceState) -> Result<CovarianceResult, String> {
        let k = s.labels.len();
        let acc = s.tree.fold().unwrap_or_else(|| CoMoments::new(k));
        if acc.k() != k || !acc.is_well_formed() {
            return Err(format!("co-moments are not {k} x {k}"));
        }
        if acc.count() < 2 {
            return Err(format!(
                "only {} point(s) to analyse; with exclude_first_token a one-token text contributes none",
                acc.count()
            ));
        }
        let covariance = acc.covariance().unwrap_or_else(|| vec![vec![0.0; k]; k]);
        let r2 = acc
            .correlation()
            .unwrap_or_else(|| vec![vec![None; k]; k])
            .into_iter()
            .map(|row| row.into_iter().map(|r| r.map(|r| r * r)).collect())
            .collect();
        Ok(CovarianceResult {
            labels: s.labels,
            n_points: acc.count(),
            means: acc.means().to_vec(),
            covariance,
            r2,
        })
    }

    fn validate(o: &CovarianceResult, results: &Results) -> Result<(), String> {
        super::expect_known_labels(&o.labels, results)?;
        super::expect_per_label("means", &o.means, &o.labels)?;
        super::expect_per_label("covariance", &o.covariance, &o.labels)?;
        super::expect_per_label("r2", &o.r2, &o.labels)?;
        for (i, (c, r)) in o.covariance.iter().zip(&o.r2).enumerate() {
            super::expect_per_label(&format!("covariance[{i}]"), c, &o.labels)?;
            super::expect_per_label(&format!("r2[{i}]"), r, &o.labels)?;
        }
        Ok(())
    }

    fn section(o: &CovarianceResult, _: &Results) -> Section {
        Section {
            heading: "Layer covariance and shared variance".into(),
            intro: format!(
                "Across {} hidden states, over {} (token, dimension) points each.",
                o.labels.len(),
                o.n_points
            ),
            notes: vec![],
            charts: charts(&o.labels, &o.covariance, &o.r2),
            tables: vec![
                matrix_table("Covariance (np.cov, ddof 1)", &o.labels, &|i, j| {
                    fmt_num(o.covariance[i][j])
                }),
                matrix_table("R² (np.corrcoef²)", &o.labels, &|i, j| fmt_opt(o.r2[i][j])),
            ],
        }
    }

    fn compare(
        a: &CovarianceResult,
        b: &CovarianceResult,
        c: &mut Comparer,
    ) -> Result<(), Mismatch> {
        c.same("hidden states", &a.labels, &b.labels)?;
        let la = &a.labels;
        let mut cov = c.metric("covariance");
        let mut r2 = c.metric("r2");
        let mut mean = c.metric("means");
        for p in 0..la.len() {
            mean.add(a.means[p], b.means[p], || la[p].clone());
            for q in 0..la.len() {
                let at = || format!("{} x {}", la[p], la[q]);
                cov.add(a.covariance[p][q], b.covariance[p][q], at);
                r2.opt(a.r2[p][q], b.r2[p][q], at);
            }
        }
        c.push(cov);
        c.push(r2);
        c.push(mean);
        let d_cov: Vec<Vec<f64>> = a
            .covariance
            .iter()
            .zip(&b.covariance)
            .map(|(x, y)| x.iter().zip(y).map(|(p, q)| q - p).collect())
            .collect();
        let d_r2: Vec<Vec<Option<f64>>> = a
            .r2
            .iter()
            .zip(&b.r2)
            .map(|(x, y)| x.iter().zip(y).map(|(p, q)| Some((*q)? - (*p)?)).collect())
            .collect();
        c.view(
            format!("Covariance and R², analysis #{}", c.analysis),
            "new − base; white is no change.".into(),
            difference_heatmaps(la, &d_cov, &d_r2),
        );
        Ok(())
    }
}

/// Covariance and R^2 (% shared variance) heatmaps.
fn charts(labels: &[String], cov: &[Vec<f64>], r2: &[Vec<Option<f64>>]) -> Vec<ChartSpec> {
    let bound = cov.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
    vec![
        heatmap(
            "Covariance matrix",
            &format!("colour scale ±{}", r(bound)),
            labels,
            &|i, j| Some(cov[i][j]),
            (-bound, bound),
            &VIRIDIS,
        ),
        heatmap(
            "R² matrix (% shared variance)",
            "100 × squared correlation",
            labels,
            &|i, j| r2[i][j].map(|v| 100.0 * v),
            (0.0, 100.0),
            &VIRIDIS,
        ),
    ]
}
