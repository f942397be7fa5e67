//! `outlier_dims`: the dimensions whose variance over the tokens dwarfs the others'
//! (Rudman et al., "Outlier Dimensions Encode Task-Specific Knowledge", 2023: variance at
//! least `ratio` times the mean per-dimension variance), and the massive activations (Sun
//! et al., "Massive Activations in Large Language Models", 2024: |h| above 100 and above
//! 1000 times the median |h| of that text's hidden state), counted per dimension with the
//! most extreme examples. Per-dimension moments merge in the text-index tree; counts add;
//! examples are a top-k ordered by magnitude, then position.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::kind::{Analysis, Check, Context, KindError, Medium, Section, Setup, TextActivations};
use super::top::{keep_top, top_candidates, Candidate, Outlier};
use crate::charts::{option, per_layer_lines, ChartSpec};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::stats::{ColumnMoments, Tree};
use crate::view::{by_frequency, fmt_num, Table};

/// `{kind: outlier_dims, ratio: 5, massive_abs: 100, massive_ratio: 1000, examples: 10}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDims {
    /// A dimension is an outlier when its variance is at least this many times the mean
    /// per-dimension variance (above 1). Default 5.
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// A massive activation's |h| exceeds this (above 0). Default 100.
    #[serde(default = "default_massive_abs")]
    pub massive_abs: f64,
    /// ... and this many times the median |h| of its text's hidden state (above 1).
    /// Default 1000.
    #[serde(default = "default_massive_ratio")]
    pub massive_ratio: f64,
    /// The most extreme massive activations kept per hidden state (1 to 1000). Default 10.
    #[serde(default = "default_examples")]
    #[schemars(range(min = 1, max = 1000))]
    pub examples: usize,
}

fn default_ratio() -> f64 {
    5.0
}
fn default_massive_abs() -> f64 {
    100.0
}
fn default_massive_ratio() -> f64 {
    1000.0
}
fn default_examples() -> usize {
    10
}

/// Per-dimension moments, massive-activation counts and examples so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDimsState {
    /// Hidden-state indices.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// The variance ratio of an outlier dimension.
    pub ratio: f64,
    /// The |h| a massive activation exceeds.
    pub massive_abs: f64,
    /// The multiple of the text's median |h| it exceeds.
    pub massive_ratio: f64,
    /// Examples kept per hidden state.
    pub examples: usize,
    /// Per hidden state, per-text column moments merged by text index.
    pub trees: Vec<Tree<ColumnMoments>>,
    /// Per hidden state, massive activations per dimension, by dimension (a list: a
    /// state is read back through a tagged enum, which cannot key a map by number).
    pub counts: Vec<Vec<DimCount>>,
    /// Per hidden state, the most extreme massive activations.
    pub top: Vec<Vec<Candidate>>,
}

/// An outlier dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDim {
    /// The dimension.
    pub dim: usize,
    /// Its variance over the tokens divided by the mean per-dimension variance.
    pub variance_ratio: f64,
    /// Its mean over the tokens.
    pub mean: f64,
}

/// How many massive activations a dimension holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DimCount {
    /// The dimension.
    pub dim: usize,
    /// Massive activations in it.
    pub count: u64,
}

/// Massive activations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Massive {
    /// |h| must exceed this ...
    pub abs: f64,
    /// ... and this many times the median |h| of its text's hidden state.
    pub ratio: f64,
    /// `[label]`: every dimension holding one, with how many, by dimension.
    pub counts: Vec<Vec<DimCount>>,
    /// `[label][rank]`: the most extreme, largest |value| first (ties: first occurrence).
    pub examples: Vec<Vec<Outlier>>,
}

/// Outlier dimensions and massive activations per hidden state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDimsResult {
    /// Hidden-state labels.
    pub labels: Vec<String>,
    /// The variance ratio an outlier dimension reaches.
    pub ratio: f64,
    /// `[label]`: the outlier dimensions, largest variance ratio first (ties: lower dim).
    pub dims: Vec<Vec<OutlierDim>>,
    /// Massive activations.
    pub massive: Massive,
}

impl OutlierDims {
    fn state(&self, layers: Vec<usize>, labels: Vec<String>) -> OutlierDimsState {
        let k = layers.len();
        OutlierDimsState {
            layers,
            labels,
            ratio: self.ratio,
            massive_abs: self.massive_abs,
            massive_ratio: self.massive_ratio,
            examples: self.examples,
            trees: vec![Tree::default(); k],
            counts: vec![Vec::new(); k],
            top: vec![Vec::new(); k],
        }
    }
}

impl OutlierDimsState {
    /// An empty state with the default thresholds over hidden states `layers`.
    pub fn new(layers: Vec<usize>, labels: Vec<String>) -> Self {
        OutlierDims {
            ratio: default_ratio(),
            massive_abs: default_massive_abs(),
            massive_ratio: default_massive_ratio(),
            examples: default_examples(),
        }
        .state(layers, labels)
    }
}

/// Adds per-dimension counts into a list kept sorted by dimension.
fn add_counts(into: &mut Vec<DimCount>, more: impl IntoIterator<Item = (usize, u64)>) {
    let mut all: BTreeMap<usize, u64> = into.iter().map(|c| (c.dim, c.count)).collect();
    for (d, n) in more {
        *all.entry(d).or_default() += n;
    }
    *into = all
        .into_iter()
        .map(|(dim, count)| DimCount { dim, count })
        .collect();
}

/// numpy's median of |x| (the mean of the two middle values for an even count).
fn median_abs(rows: &[f32]) -> f64 {
    let mut a: Vec<f32> = rows.iter().map(|x| x.abs()).collect();
    let n = a.len();
    if n == 0 {
        return 0.0;
    }
    let (_, hi, _) = a.select_nth_unstable_by(n / 2, f32::total_cmp);
    let hi = *hi as f64;
    if n % 2 == 1 {
        return hi;
    }
    let lo = a[..n / 2].iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    (lo + hi) / 2.0
}

/// The dimensions that are outliers in more than one hidden state, most frequent first.
fn recurring_note(o: &OutlierDimsResult) -> Option<String> {
    let recurring = by_frequency(o.dims.iter().flatten().map(|d| d.dim));
    let (d, n) = recurring.first().filter(|(_, n)| *n > 1)?;
    Some(format!(
        "Dimensions that recur across hidden states: {} (dim {d} in {n} of {}).",
        recurring
            .iter()
            .filter(|(_, n)| *n > 1)
            .take(8)
            .map(|(d, n)| format!("{d} ({n})"))
            .collect::<Vec<_>>()
            .join(", "),
        o.labels.len()
    ))
}

/// Outlier dimensions per hidden state, and massive activations when there are any.
fn count_charts(o: &OutlierDimsResult) -> Vec<ChartSpec> {
    let n_dims: Vec<Option<f64>> = o.dims.iter().map(|d| Some(d.len() as f64)).collect();
    let n_massive: Vec<Option<f64>> = o
        .massive
        .counts
        .iter()
        .map(|c| Some(c.iter().map(|x| x.count).sum::<u64>() as f64))
        .collect();
    let chart = |title: &str, name: &'static str, v: &[Option<f64>], log: bool| ChartSpec {
        title: title.into(),
        option: option(per_layer_lines(
            name,
            "",
            &o.labels,
            &[(name, v)],
            "count",
            log,
        )),
        height: 340,
    };
    let mut charts = vec![chart(
        "outlier-dims-count",
        "Outlier dimensions",
        &n_dims,
        false,
    )];
    if n_massive.iter().any(|v| v.is_some_and(|x| x > 0.0)) {
        charts.push(chart(
            "massive-activations-count",
            "Massive activations",
            &n_massive,
            true,
        ));
    }
    charts
}

/// Each hidden state's outlier dimensions (the first 10), largest ratio first.
fn dims_table(o: &OutlierDimsResult) -> Table {
    let rows = o
        .labels
        .iter()
        .zip(&o.dims)
        .map(|(label, dims)| {
            vec![
                label.clone(),
                dims.len().to_string(),
                dims.iter()
                    .take(10)
                    .map(|d| {
                        format!(
                            "{} ({}x, mean {})",
                            d.dim,
                            fmt_num(d.variance_ratio),
                            fmt_num(d.mean)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    Table {
        caption: "Outlier dimensions (variance ratio, mean), largest first".into(),
        headers: ["hidden state", "count", "dimensions"]
            .map(String::from)
            .to_vec(),
        rows,
        text_columns: vec![0, 2],
    }
}

/// The most extreme massive activations of each hidden state, with where they sit.
fn examples_table(o: &OutlierDimsResult) -> Table {
    let rows = o
        .labels
        .iter()
        .zip(&o.massive.examples)
        .flat_map(|(label, list)| {
            list.iter()
                .map(move |x| std::iter::once(label.clone()).chain(x.cells()).collect())
        })
        .collect();
    Table {
        caption: "The most extreme massive activations".into(),
        headers: ["hidden state", "value", "text", "token #", "token", "dim"]
            .map(String::from)
            .to_vec(),
        rows,
        text_columns: vec![0, 2, 4],
    }
}

impl Analysis for OutlierDims {
    const KIND: &'static str = "outlier_dims";
    type State = OutlierDimsState;
    type Output = OutlierDimsResult;

    fn labels(o: &OutlierDimsResult) -> &[String] {
        &o.labels
    }

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        let positive = |x: f64, floor: f64| x.is_finite() && x > floor;
        if !positive(self.ratio, 1.0) {
            return Err(at.invalid("ratio", self.ratio, "use a variance ratio above 1, e.g. 5"));
        }
        if !positive(self.massive_abs, 0.0) {
            return Err(at.invalid(
                "massive_abs",
                self.massive_abs,
                "use a magnitude above 0, e.g. 100",
            ));
        }
        if !positive(self.massive_ratio, 1.0) {
            return Err(at.invalid(
                "massive_ratio",
                self.massive_ratio,
                "use a multiple of the median above 1, e.g. 1000",
            ));
        }
        if self.examples == 0 || self.examples > 1000 {
            return Err(at.invalid("examples", self.examples, "keep 1 to 1000 examples"));
        }
        Ok(())
    }

    fn start(&self, at: &Setup) -> Result<OutlierDimsState, SpecError> {
        Ok(self.state(at.selected.to_vec(), at.names(at.selected)))
    }

    fn layers(s: &OutlierDimsState) -> Vec<usize> {
        s.layers.clone()
    }

    fn observe(s: &mut OutlierDimsState, t: &TextActivations) {
        let dim = t.dim.max(1);
        for (l, &layer) in s.layers.iter().enumerate() {
            let rows = t.state(layer);
            s.trees[l].push(t.index as u64, ColumnMoments::of_rows(rows, dim));
            // Only a text with a value over the absolute bar needs its median.
            if !rows.iter().any(|x| x.abs() as f64 > s.massive_abs) {
                continue;
            }
            let bar = s.massive_abs.max(s.massive_ratio * median_abs(rows));
            let mut here: BTreeMap<usize, u64> = BTreeMap::new();
            for (i, x) in rows.iter().enumerate() {
                if x.abs() as f64 > bar {
                    *here.entry(i % dim).or_default() += 1;
                }
            }
            add_counts(&mut s.counts[l], here);
            let fresh = top_candidates(t, rows, s.examples, |a| a as f64 > bar);
            keep_top(&mut s.top[l], fresh, s.examples);
        }
    }

    fn merge(s: &mut OutlierDimsState, right: OutlierDimsState) -> Result<(), KindError> {
        let key = |x: &OutlierDimsState| {
            (
                x.layers.clone(),
                x.ratio.to_bits(),
                x.massive_abs.to_bits(),
                x.massive_ratio.to_bits(),
                x.examples,
                x.trees.len(),
                x.counts.len(),
                x.top.len(),
            )
        };
        if key(s) != key(&right) || right.trees.len() != s.layers.len() {
            return Err(KindError::Mismatch(
                "outlier dimensions of different hidden states or settings".into(),
            ));
        }
        for (a, b) in s.trees.iter_mut().zip(right.trees) {
            a.join(b)?;
        }
        for (a, b) in s.counts.iter_mut().zip(right.counts) {
            add_counts(a, b.into_iter().map(|c| (c.dim, c.count)));
        }
        for (a, b) in s.top.iter_mut().zip(right.top) {
            keep_top(a, b, s.examples);
        }
        Ok(())
    }

    fn finish(s: OutlierDimsState) -> Result<OutlierDimsResult, KindError> {
        let mut dims = Vec::new();
        for tree in s.trees {
            let m = tree.fold().unwrap_or_default();
            if m.sum.len() != m.m2.len() {
                return Err(KindError::NoResult(
                    "column moments of different widths".into(),
                ));
            }
            let var = m.variances();
            let means = m.means();
            let avg = var.iter().sum::<f64>() / var.len().max(1) as f64;
            let mut out: Vec<OutlierDim> = var
                .iter()
                .enumerate()
                .filter(|(_, v)| avg > 0.0 && **v >= s.ratio * avg)
                .map(|(j, v)| OutlierDim {
                    dim: j,
                    variance_ratio: v / avg,
                    mean: means[j],
                })
                .collect();
            out.sort_by(|a, b| {
                b.variance_ratio
                    .total_cmp(&a.variance_ratio)
                    .then(a.dim.cmp(&b.dim))
            });
            dims.push(out);
        }
        Ok(OutlierDimsResult {
            labels: s.labels,
            ratio: s.ratio,
            dims,
            massive: Massive {
                abs: s.massive_abs,
                ratio: s.massive_ratio,
                counts: s.counts,
                examples: s
                    .top
                    .iter()
                    .map(|kept| kept.iter().map(Candidate::outlier).collect())
                    .collect(),
            },
        })
    }

    fn validate(o: &OutlierDimsResult, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(o, cx)?;
        super::kind::expect_per_label("dims", &o.dims, &o.labels)?;
        super::kind::expect_per_label("massive.counts", &o.massive.counts, &o.labels)?;
        super::kind::expect_per_label("massive.examples", &o.massive.examples, &o.labels)
    }

    fn section(o: &OutlierDimsResult, _: &Context, _: Medium) -> Section {
        Section {
            wide: false,
            collapsed: None,
            heading: "Outlier dimensions and massive activations".into(),
            intro: format!(
                "Dimensions whose variance over the tokens is at least {}x the mean per-dimension variance; activations above {} and {}x their text's median |h|.",
                fmt_num(o.ratio),
                fmt_num(o.massive.abs),
                fmt_num(o.massive.ratio)
            ),
            notes: recurring_note(o).into_iter().collect(),
            charts: count_charts(o),
            tables: vec![dims_table(o), examples_table(o)],
        }
    }

    fn scalars(out: &OutlierDimsResult) -> Vec<super::kind::Scalars> {
        use super::kind::Scalars;
        let l = &out.labels;
        vec![
            Scalars::new(
                "outlier_dims",
                l,
                out.dims.iter().map(|d| Some(d.len() as f64)).collect(),
            ),
            Scalars::new(
                "top_variance_ratio",
                l,
                out.dims
                    .iter()
                    .map(|d| d.first().map(|o| o.variance_ratio))
                    .collect(),
            ),
            Scalars::new(
                "massive_activations",
                l,
                out.massive
                    .counts
                    .iter()
                    .map(|c| Some(c.iter().map(|d| d.count).sum::<u64>() as f64))
                    .collect(),
            ),
        ]
    }

    fn compare(
        a: &OutlierDimsResult,
        b: &OutlierDimsResult,
        c: &mut Comparer,
    ) -> Result<(), Mismatch> {
        Self::compare_columns(a, b, c)?;
        // Ratios rank by rank; massive activations as totals.
        c.ranked("variance_ratio", &a.labels, &a.dims, &b.dims, |d| {
            d.variance_ratio
        });
        let mut massive = c.metric("massive_count");
        for (l, (xa, xb)) in a.massive.counts.iter().zip(&b.massive.counts).enumerate() {
            let total = |x: &[DimCount]| x.iter().map(|d| d.count).sum::<u64>() as f64;
            massive.add(total(xa), total(xb), || a.labels[l].clone());
        }
        c.push(massive);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::median_abs;

    #[test]
    fn median_as_numpy() {
        assert_eq!(median_abs(&[3.0, -1.0, 2.0]), 2.0);
        assert_eq!(median_abs(&[4.0, -1.0, 2.0, -3.0]), 2.5);
        assert_eq!(median_abs(&[]), 0.0);
    }
}
