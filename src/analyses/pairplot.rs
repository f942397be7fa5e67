//! `pairplot`: a bounded joint sample of points across a few hidden states, drawn as a grid
//! of scatters with each sample's histogram on the diagonal. The sample is a bottom-k by
//! a key that depends only on the point (its position for `first`, a seeded hash of text
//! index and position for `random`), so any split of the corpus picks the same points.

use charming::component::{Axis, Grid};
use charming::element::{AxisType, ItemStyle, NameLocation, Tooltip, Trigger};
use charming::series::Scatter as ScatterSeries;
use charming::Chart;
use serde::{Deserialize, Serialize};

use super::kind::{Analysis, Check, Context, KindError, Section, Setup, TextActivations};
use crate::charts::{option, r, ChartSpec};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::spec::layers::LayerRef;
use crate::stats::{point_hash, BottomK, Histogram};

/// Bins of the histograms on a pairplot's diagonal (seaborn's default is similar).
pub const PAIRPLOT_BINS: usize = 20;

/// How the pairplot picks its points.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SampleMode {
    /// The first `points` (token, dimension) points, texts in order, as the notebook does.
    #[default]
    First,
    /// A uniform random sample of `points`, seeded by the spec's `seed` (reservoir sampling).
    Random,
}

/// `{kind: pairplot, layers: [0, 1, 2, 3], points: 1000, sample: first}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pairplot {
    /// The hidden states (2 to 8).
    #[schemars(length(min = 2, max = 8))]
    pub layers: Vec<LayerRef>,
    /// How many points (1 to 100000).
    #[schemars(range(min = 1, max = 100000))]
    pub points: usize,
    /// `first` (default) or `random`.
    #[serde(default)]
    pub sample: SampleMode,
}

/// The sample so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairplotState {
    /// Hidden-state indices.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// `first` or `random`.
    pub sample: SampleMode,
    /// Seed of the `random` hash.
    pub seed: u64,
    /// The kept points: each a value per hidden state.
    pub kept: BottomK<Vec<f32>>,
}

/// A joint sample of points across a few hidden states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PairplotResult {
    /// Hidden-state labels, one column each.
    pub labels: Vec<String>,
    /// `first` or `random`.
    pub sample: SampleMode,
    /// Points available in the stream.
    pub n_seen: u64,
    /// Each point's position in the stream of (text, token, dim) points.
    pub point_index: Vec<u64>,
    /// `[label][point]` values (f32), the same points for every label.
    #[serde(serialize_with = "crate::json::short_f32_rows")]
    pub columns: Vec<Vec<f32>>,
    /// Per label, the edges of the sample's histogram drawn on the grid's diagonal
    /// (`PAIRPLOT_BINS` equal bins from the sample's min to max).
    pub diagonal_edges: Vec<Vec<f64>>,
    /// Per label, the sample's counts on `diagonal_edges`.
    pub diagonal_counts: Vec<Vec<u64>>,
}

impl PairplotState {
    /// An empty sample of `points` points across `layers` (`seed` for `random`).
    pub fn new(
        layers: Vec<usize>,
        labels: Vec<String>,
        sample: SampleMode,
        points: usize,
        seed: u64,
    ) -> Self {
        Self {
            layers,
            labels,
            sample,
            seed,
            kept: BottomK::new(points),
        }
    }
}

impl Analysis for Pairplot {
    const KIND: &'static str = "pairplot";
    type State = PairplotState;
    type Output = PairplotResult;

    fn labels(o: &PairplotResult) -> &[String] {
        &o.labels
    }

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        if self.points == 0 || self.points > 100_000 {
            return Err(at.invalid("points", self.points, "use 1 to 100000 points"));
        }
        if self.layers.len() < 2 || self.layers.len() > 8 {
            return Err(at.invalid(
                "layers",
                format!("{} hidden states", self.layers.len()),
                "a pairplot takes 2 to 8 hidden states",
            ));
        }
        Ok(())
    }

    fn start(&self, at: &Setup) -> Result<PairplotState, SpecError> {
        let layers = at.layers("layers", &self.layers)?;
        let labels = at.names(&layers);
        Ok(PairplotState::new(
            layers,
            labels,
            self.sample,
            self.points,
            at.seed,
        ))
    }

    fn layers(s: &PairplotState) -> Vec<usize> {
        s.layers.clone()
    }

    fn observe(s: &mut PairplotState, t: &TextActivations) {
        let cols: Vec<&[f32]> = s.layers.iter().map(|&l| t.state(l)).collect();
        let n = cols.first().map_or(0, |c| c.len()) as u64;
        let text = t.index as u64;
        let base = s.kept.seen;
        let make = |p: u64| cols.iter().map(|c| c[p as usize]).collect::<Vec<f32>>();
        match s.sample {
            // The first points: once full, no later text can enter.
            SampleMode::First => {
                if s.kept.admits(0, text, 0) {
                    let room = s.kept.capacity as u64;
                    let candidates = (0..n.min(room)).map(|p| (0, text, p, base + p));
                    s.kept.extend(candidates, make);
                }
            }
            SampleMode::Random => {
                let seed = s.seed;
                let candidates = (0..n).map(|p| (point_hash(seed, text, p), text, p, base + p));
                s.kept.extend(candidates, make);
            }
        }
        s.kept.count(n);
    }

    fn merge(s: &mut PairplotState, right: PairplotState) -> Result<(), KindError> {
        let key = |x: &PairplotState| (x.layers.clone(), x.sample, x.seed, x.kept.capacity);
        if key(s) != key(&right) {
            return Err(KindError::Mismatch(
                "pairplot samples of different settings".into(),
            ));
        }
        let width = s.layers.len();
        if right.kept.items.iter().any(|k| k.value.len() != width) {
            return Err(KindError::Mismatch(format!(
                "a sampled point does not have {width} values"
            )));
        }
        s.kept.merge(right.kept);
        Ok(())
    }

    fn finish(s: PairplotState) -> Result<PairplotResult, KindError> {
        let n_seen = s.kept.seen;
        let width = s.labels.len();
        if s.kept.items.iter().any(|k| k.value.len() != width) {
            return Err(KindError::NoResult(format!(
                "a sampled point does not have {width} values"
            )));
        }
        let points = s.kept.into_sorted();
        let columns: Vec<Vec<f32>> = (0..s.labels.len())
            .map(|c| points.iter().map(|k| k.value[c]).collect())
            .collect();
        let diagonal: Vec<Histogram> = columns.iter().map(|c| sample_histogram(c)).collect();
        Ok(PairplotResult {
            labels: s.labels,
            sample: s.sample,
            n_seen,
            point_index: points.iter().map(|k| k.offset).collect(),
            diagonal_edges: diagonal.iter().map(|h| h.edges().to_vec()).collect(),
            diagonal_counts: diagonal.iter().map(|h| h.counts().to_vec()).collect(),
            columns,
        })
    }

    fn validate(o: &PairplotResult, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(o, cx)?;
        super::kind::expect_per_label("columns", &o.columns, &o.labels)?;
        super::kind::expect_per_label("diagonal_edges", &o.diagonal_edges, &o.labels)?;
        super::kind::expect_per_label("diagonal_counts", &o.diagonal_counts, &o.labels)?;
        for (l, col) in o.columns.iter().enumerate() {
            super::kind::expect_len(
                &format!("columns[{l}] (one value per point_index)"),
                col.len(),
                o.point_index.len(),
            )?;
            super::kind::check_edges(
                &format!("diagonal_edges[{l}]"),
                &o.diagonal_edges[l],
                &o.diagonal_counts[l],
            )?;
        }
        Ok(())
    }

    fn section(o: &PairplotResult, cx: &Context, _: super::kind::Medium) -> Section {
        Section {
            wide: true,
            collapsed: None,
            heading: "Pairplot".into(),
            intro: format!(
                "{} hidden states on {} of {} points ({}); histograms of the sample on the diagonal.",
                o.labels.len(),
                o.point_index.len(),
                o.n_seen,
                match o.sample {
                    SampleMode::First => "the first points, as the notebook".to_string(),
                    SampleMode::Random => format!(
                        "a uniform random sample, seed {}",
                        cx.seed
                    ),
                }
            ),
            notes: vec![],
            charts: vec![chart(
                &o.labels,
                &o.columns,
                &o.diagonal_edges,
                &o.diagonal_counts,
            )],
            tables: vec![],
        }
    }

    fn compare(a: &PairplotResult, b: &PairplotResult, c: &mut Comparer) -> Result<(), Mismatch> {
        Self::compare_columns(a, b, c)?;
        if a.point_index == b.point_index {
            let mut acc = c.metric("points");
            for (l, (x, y)) in a.columns.iter().zip(&b.columns).enumerate() {
                for (k, (p, q)) in x.iter().zip(y).enumerate() {
                    acc.add(*p as f64, *q as f64, || {
                        format!("{}, point {k}", a.labels[l])
                    });
                }
            }
            c.push(acc);
        }
        Ok(())
    }
}

/// The histogram of a pairplot sample, over its own range.
fn sample_histogram(values: &[f32]) -> Histogram {
    let finite = values.iter().filter(|v| v.is_finite()).map(|&v| v as f64);
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else if lo.is_finite() {
        (lo - 0.5, lo + 0.5)
    } else {
        (-0.5, 0.5)
    };
    let mut h = Histogram::new(lo, hi, PAIRPLOT_BINS);
    h.add(values);
    h
}

/// Panel `(i, j)` of a `k` x `k` pairplot: its grid and axes. Panels share one frame: the
/// left and bottom margins hold the outer panels' tick labels and names, the only ones
/// drawn (inner panels share their column's x scale and their row's y scale), so no
/// panel's labels run into its neighbour's.
fn panel(chart: Chart, labels: &[String], i: usize, j: usize) -> Chart {
    let k = labels.len();
    let (left, right, top, bottom) = (14.0, 2.0, 3.0, 11.0);
    let (cell_w, cell_h) = (
        (100.0 - left - right) / k as f64,
        (100.0 - top - bottom) / k as f64,
    );
    let idx = (i * k + j) as f64;
    let ticks = |show: bool| charming::element::AxisLabel::new().show(show);
    chart
        .grid(
            Grid::new()
                .left(format!("{:.2}%", left + j as f64 * cell_w))
                .top(format!("{:.2}%", top + i as f64 * cell_h))
                .width(format!("{:.2}%", cell_w * 0.9))
                .height(format!("{:.2}%", cell_h * 0.88)),
        )
        .x_axis(
            Axis::new()
                .type_(AxisType::Value)
                .grid_index(idx)
                .scale(true)
                .split_number(3)
                .axis_label(ticks(i == k - 1))
                .name(if i == k - 1 { labels[j].as_str() } else { "" })
                .name_location(NameLocation::Middle)
                .name_gap(22),
        )
        .y_axis(
            Axis::new()
                .type_(AxisType::Value)
                .grid_index(idx)
                .scale(i != j)
                .split_number(3)
                .axis_label(ticks(j == 0))
                .name(if j == 0 { labels[i].as_str() } else { "" })
                .name_location(NameLocation::Middle)
                .name_gap(40),
        )
}

/// The pairplot grid: histograms of the sample on the diagonal, scatters off it.
fn chart(
    labels: &[String],
    columns: &[Vec<f32>],
    diag_edges: &[Vec<f64>],
    diag_counts: &[Vec<u64>],
) -> ChartSpec {
    let k = labels.len();
    let mut chart =
        Chart::new().tooltip(Tooltip::new().trigger(Trigger::Item).formatter("{a}: {c}"));
    for i in 0..k {
        for j in 0..k {
            let idx = (i * k + j) as f64;
            chart = panel(chart, labels, i, j);
            let series_name = format!("{} vs {}", labels[i], labels[j]);
            if i == j {
                let e = &diag_edges[i];
                let data: Vec<Vec<f64>> = diag_counts[i]
                    .iter()
                    .enumerate()
                    .map(|(b, &c)| vec![r((e[b] + e[b + 1]) / 2.0), c as f64])
                    .collect();
                chart = chart.series(
                    charming::series::Bar::new()
                        .name(labels[i].as_str())
                        .x_axis_index(idx)
                        .y_axis_index(idx)
                        .bar_width("90%")
                        .data(data),
                );
            } else {
                let data: Vec<Vec<f64>> = columns[j]
                    .iter()
                    .zip(&columns[i])
                    .map(|(&x, &y)| vec![r(x as f64), r(y as f64)])
                    .collect();
                chart = chart.series(
                    ScatterSeries::new()
                        .name(series_name.as_str())
                        .x_axis_index(idx)
                        .y_axis_index(idx)
                        .symbol_size(2)
                        .item_style(ItemStyle::new().opacity(0.5))
                        .data(data),
                );
            }
        }
    }
    ChartSpec {
        title: "pairplot".into(),
        option: option(chart),
        height: (180 * k as u32).max(360),
    }
}
