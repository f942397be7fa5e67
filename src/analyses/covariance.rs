//! `covariance`: `np.cov` (ddof 1) and `np.corrcoef**2` across the selected hidden states,
//! over every (token, dimension) point. Each text's co-moments are computed alone, then
//! merged in a tree fixed by text index ([`crate::stats::Tree`]).

use serde::{Deserialize, Serialize};

use super::kind::{Analysis, Context, KindError, Section, Setup, TextActivations};
use crate::charts::{difference_heatmaps, heatmap, r, ChartSpec, VIRIDIS};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::stats::{CoMoments, Tree};
use crate::view::{fmt_num, fmt_opt, matrix_table};

/// `{kind: covariance}` across the spec's `layers`.
#[derive(Debug, Clone, schemars::JsonSchema)]
pub struct Covariance {}

impl<'de> Deserialize<'de> for Covariance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::kind::no_parameters(d, "covariance").map(|()| Covariance {})
    }
}

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
    type State = CovarianceState;
    type Output = CovarianceResult;

    fn labels(o: &CovarianceResult) -> &[String] {
        &o.labels
    }

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

    fn merge(s: &mut CovarianceState, right: CovarianceState) -> Result<(), KindError> {
        if s.layers != right.layers {
            return Err(KindError::Mismatch(
                "covariances of different hidden states".into(),
            ));
        }
        let k = s.layers.len();
        if right
            .tree
            .blocks
            .iter()
            .any(|b| b.state.k() != k || !b.state.is_well_formed())
        {
            return Err(KindError::Mismatch(format!(
                "a co-moment block is not {k} x {k}"
            )));
        }
        Ok(s.tree.join(right.tree)?)
    }

    fn finish(s: CovarianceState) -> Result<CovarianceResult, KindError> {
        let k = s.labels.len();
        let acc = s.tree.fold().unwrap_or_else(|| CoMoments::new(k));
        if acc.k() != k || !acc.is_well_formed() {
            return Err(KindError::NoResult(format!("co-moments are not {k} x {k}")));
        }
        if acc.count() < 2 {
            return Err(KindError::NoResult(format!(
                "only {} point(s) to analyse; with exclude_first_token a one-token text contributes none",
                acc.count()
            )));
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
            means: acc.means(),
            covariance,
            r2,
        })
    }

    fn validate(o: &CovarianceResult, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(o, cx)?;
        super::kind::expect_per_label("means", &o.means, &o.labels)?;
        super::kind::expect_per_label("covariance", &o.covariance, &o.labels)?;
        super::kind::expect_per_label("r2", &o.r2, &o.labels)?;
        for (i, (c, r)) in o.covariance.iter().zip(&o.r2).enumerate() {
            super::kind::expect_per_label(&format!("covariance[{i}]"), c, &o.labels)?;
            super::kind::expect_per_label(&format!("r2[{i}]"), r, &o.labels)?;
        }
        Ok(())
    }

    fn section(o: &CovarianceResult, _: &Context, _: super::kind::Medium) -> Section {
        Section {
            wide: false,
            collapsed: Some("The matrices as numbers".into()),
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
                matrix_table("R² (np.corrcoef²)", &o.labels, &|i, j| {
                    fmt_opt(o.r2[i][j])
                }),
            ],
        }
    }

    fn scalars(out: &CovarianceResult) -> Vec<super::kind::Scalars> {
        use super::kind::Scalars;
        let n = out.labels.len();
        vec![
            Scalars::new(
                "mean",
                &out.labels,
                out.means.iter().map(|&m| Some(m)).collect(),
            ),
            Scalars::new(
                "variance",
                &out.labels,
                (0..n).map(|i| Some(out.covariance[i][i])).collect(),
            ),
            // How much of a hidden state the one before it explains.
            Scalars::new(
                "r2_to_previous",
                &out.labels,
                (0..n)
                    .map(|i| i.checked_sub(1).and_then(|j| out.r2[i][j]))
                    .collect(),
            ),
        ]
    }

    fn compare(
        a: &CovarianceResult,
        b: &CovarianceResult,
        c: &mut Comparer,
    ) -> Result<(), Mismatch> {
        Self::compare_columns(a, b, c)?;
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
        let d_r2: Vec<Vec<Option<f64>>> =
            a.r2.iter()
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

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // the formulas read best indexed
mod tests {
    use super::*;
    use crate::stats::{Merge, SplitMix64};

    /// `texts` texts of 3 variables near a common `offset`, as f32: exactly representable
    /// on the grid `2^-10` (the f32 spacing between 8192 and 16384) when offset is 1e4.
    fn texts(offset: f32, n: usize) -> Vec<[Vec<f32>; 3]> {
        let mut rng = SplitMix64::new(11);
        let mut u = || (rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
        (0..n)
            .map(|_| {
                let len = 5 + ((u() + 0.5) * 300.0) as usize;
                let a: Vec<f32> = (0..len).map(|_| offset + 4.0 * u()).collect();
                let b: Vec<f32> = a.iter().map(|&x| x + 2.0 * u()).collect();
                let c: Vec<f32> = (0..len).map(|_| offset - 3.0 * u()).collect();
                [a, b, c]
            })
            .collect()
    }

    /// The exact sample covariance of f32 data on the 2^-10 grid, in integers, rounded
    /// once to f64.
    fn exact(data: &[[Vec<f32>; 3]], i: usize, j: usize) -> f64 {
        let q = |x: f32| {
            let v = x as f64 * 1024.0;
            assert_eq!(v.fract(), 0.0, "on the grid");
            v as i128
        };
        let (mut n, mut sx, mut sy, mut sxy) = (0i128, 0i128, 0i128, 0i128);
        for t in data {
            for (&x, &y) in t[i].iter().zip(&t[j]) {
                let (x, y) = (q(x), q(y));
                n += 1;
                sx += x;
                sy += y;
                sxy += x * y;
            }
        }
        // cov = (n*sxy - sx*sy) / (n (n - 1)) / 2^20
        let num = n * sxy - sx * sy;
        num as f64 / (n * (n - 1)) as f64 / (1u64 << 20) as f64
    }

    /// The previous accumulation, for comparison: each text's co-moments around its own
    /// f64 means, folded into a running state in text order (Chan et al.).
    fn sequential_f64(data: &[[Vec<f32>; 3]]) -> Vec<Vec<f64>> {
        let (mut n, mut mean, mut c) = (0f64, [0f64; 3], [[0f64; 3]; 3]);
        for t in data {
            let m = t[0].len() as f64;
            let mu: Vec<f64> = t
                .iter()
                .map(|v| v.iter().map(|&x| x as f64).sum::<f64>() / m)
                .collect();
            let nn = n + m;
            for i in 0..3 {
                for j in 0..3 {
                    let s: f64 = t[i]
                        .iter()
                        .zip(&t[j])
                        .map(|(&x, &y)| (x as f64 - mu[i]) * (y as f64 - mu[j]))
                        .sum();
                    c[i][j] += s + (mu[i] - mean[i]) * (mu[j] - mean[j]) * n * m / nn;
                }
            }
            for i in 0..3 {
                mean[i] += (mu[i] - mean[i]) * m / nn;
            }
            n = nn;
        }
        c.iter()
            .map(|row| row.iter().map(|v| v / (n - 1.0)).collect())
            .collect()
    }

    fn worst_error(cov: &[Vec<f64>], data: &[[Vec<f32>; 3]]) -> f64 {
        let mut worst = 0f64;
        for i in 0..3 {
            for j in 0..3 {
                let want = exact(data, i, j);
                worst = worst.max((cov[i][j] - want).abs() / want.abs());
            }
        }
        worst
    }

    /// With every activation shifted by 1e4, the covariance is no less accurate than the
    /// previous sequential fold of f64 means (it is far more: sums are carried as
    /// double-doubles), and the same to the bit for every split into shards.
    #[test]
    fn a_large_common_offset_costs_no_accuracy_and_splits_agree() {
        let data = texts(1.0e4, 400);
        let leaves: Vec<CoMoments> = data
            .iter()
            .map(|t| CoMoments::of_batch(&[&t[0], &t[1], &t[2]]))
            .collect();
        let tree_of = |range: std::ops::Range<usize>| {
            let mut t = Tree::default();
            for i in range {
                t.push(i as u64, leaves[i].clone());
            }
            t
        };
        let whole = tree_of(0..leaves.len()).fold().unwrap();
        let e_tree = worst_error(&whole.covariance().unwrap(), &data);
        let e_before = worst_error(&sequential_f64(&data), &data);
        assert!(e_tree < 1e-14, "relative error {e_tree:e}");
        assert!(
            e_tree <= e_before,
            "{e_tree:e} is less accurate than the previous accumulation ({e_before:e})"
        );
        for cuts in [vec![1], vec![137, 138], vec![13, 200, 399]] {
            let mut bounds = vec![0];
            bounds.extend(&cuts);
            bounds.push(leaves.len());
            let mut t = Tree::default();
            for w in bounds.windows(2) {
                t.join(tree_of(w[0]..w[1])).unwrap();
            }
            assert_eq!(t.fold().unwrap(), whole, "split at {cuts:?}");
        }
    }

    #[test]
    fn an_empty_text_first_changes_nothing() {
        let data = texts(3.0, 5);
        let mut with = Tree::default();
        with.push(0, CoMoments::new(3));
        let mut without = CoMoments::new(3);
        for (i, t) in data.iter().enumerate() {
            let leaf = CoMoments::of_batch(&[&t[0], &t[1], &t[2]]);
            with.push(i as u64 + 1, leaf.clone());
            without.merge(&leaf);
        }
        let with = with.fold().unwrap();
        assert_eq!(with.count(), without.count());
        assert!(with
            .covariance()
            .unwrap()
            .iter()
            .flatten()
            .all(|v| v.is_finite()));
    }
}
