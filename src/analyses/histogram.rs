//! `histogram`: counts per hidden state on `np.linspace(lo, hi, bins + 1)`, with the values
//! outside the range counted rather than dropped. Counts merge exactly.

use crate::analyses::axes::{Axes, Axis};
use charming::element::ItemStyle;
use charming::series::Line;
use serde::{Deserialize, Serialize};

use super::kind::{Analysis, Check, Context, KindError, Section, Setup, TextActivations};
use crate::charts::{histogram_frame, histogram_overlay, layer_color, option, r, title, ChartSpec};
use crate::compare::rules::{total_variation, Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::stats::Histogram as Counts;
use crate::view::fmt_num;

/// `{kind: histogram, range: [-15, 15], bins: 300}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Histogram {
    /// `[lo, hi]`, `lo < hi`.
    pub range: [f64; 2],
    /// Number of equal bins (1 to 100000).
    #[schemars(range(min = 1, max = 100000))]
    pub bins: usize,
}

/// Counts so far, one histogram per hidden state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramState {
    /// Hidden-state indices.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// One histogram per hidden state.
    pub hists: Vec<Counts>,
}

/// Histogram counts per hidden state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistogramResult {
    /// Hidden-state labels, one row of counts each.
    pub labels: Vec<String>,
    /// `bins + 1` edges, `np.linspace(lo, hi, bins + 1)`.
    pub edges: Vec<f64>,
    /// `[label][bin]` counts; bin `i` is `[edges[i], edges[i+1])`, the last closed.
    pub counts: Vec<Vec<u64>>,
    /// Values below `edges[0]`, per label.
    pub underflow: Vec<u64>,
    /// Values above the last edge, per label.
    pub overflow: Vec<u64>,
    /// NaN values, per label.
    pub nan: Vec<u64>,
}

impl HistogramState {
    /// An empty state: `bins` bins over `[lo, hi]` for each of `layers`.
    pub fn new(layers: Vec<usize>, labels: Vec<String>, lo: f64, hi: f64, bins: usize) -> Self {
        Self {
            hists: vec![Counts::new(lo, hi, bins); layers.len()],
            layers,
            labels,
        }
    }
}

impl Analysis for Histogram {
    const KIND: &'static str = "histogram";
    const AXES: Axes = Axes {
        label_is_block: false,
        paths: &[("counts", &[Axis::Bin]), ("edges", &[Axis::Bin])],
    };
    type State = HistogramState;
    type Output = HistogramResult;

    fn labels(o: &HistogramResult) -> &[String] {
        &o.labels
    }

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        if self.bins == 0 || self.bins > 100_000 {
            return Err(at.invalid("bins", self.bins, "use 1 to 100000 bins"));
        }
        let [lo, hi] = self.range;
        if !lo.is_finite() || !hi.is_finite() || lo >= hi {
            return Err(at.invalid(
                "range",
                format!("[{lo}, {hi}]"),
                "give finite [lo, hi] with lo < hi, e.g. [-15, 15]",
            ));
        }
        Ok(())
    }

    fn start(&self, at: &Setup) -> Result<HistogramState, SpecError> {
        let [lo, hi] = self.range;
        Ok(HistogramState::new(
            at.selected.to_vec(),
            at.names(at.selected),
            lo,
            hi,
            self.bins,
        ))
    }

    fn layers(s: &HistogramState) -> Vec<usize> {
        s.layers.clone()
    }

    fn observe(s: &mut HistogramState, t: &TextActivations) {
        for (h, &l) in s.hists.iter_mut().zip(&s.layers) {
            h.add(t.state(l));
        }
    }

    fn merge(s: &mut HistogramState, right: HistogramState) -> Result<(), KindError> {
        if s.layers != right.layers || s.hists.len() != right.hists.len() {
            return Err(KindError::Mismatch(
                "histograms of different hidden states".into(),
            ));
        }
        for (a, b) in s.hists.iter_mut().zip(&right.hists) {
            super::kind::check_edges("a histogram state's edges", b.edges(), b.counts())?;
            a.merge(b)?;
        }
        Ok(())
    }

    fn finish(s: HistogramState) -> Result<HistogramResult, KindError> {
        let hists = s.hists;
        Ok(HistogramResult {
            labels: s.labels,
            edges: hists
                .first()
                .map(|h| h.edges().to_vec())
                .unwrap_or_default(),
            counts: hists.iter().map(|h| h.counts().to_vec()).collect(),
            underflow: hists.iter().map(Counts::underflow).collect(),
            overflow: hists.iter().map(Counts::overflow).collect(),
            nan: hists.iter().map(Counts::non_finite).collect(),
        })
    }

    fn validate(o: &HistogramResult, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(o, cx)?;
        super::kind::expect_per_label("counts", &o.counts, &o.labels)?;
        super::kind::expect_per_label("underflow", &o.underflow, &o.labels)?;
        super::kind::expect_per_label("overflow", &o.overflow, &o.labels)?;
        super::kind::expect_per_label("nan", &o.nan, &o.labels)?;
        for (l, c) in o.counts.iter().enumerate() {
            super::kind::check_edges(&format!("edges (for counts[{l}])"), &o.edges, c)?;
        }
        Ok(())
    }

    fn section(o: &HistogramResult, _: &Context, _: super::kind::Medium) -> Section {
        let outside: Vec<String> = o
            .labels
            .iter()
            .enumerate()
            .filter(|(l, _)| o.underflow[*l] + o.overflow[*l] + o.nan[*l] > 0)
            .map(|(l, name)| {
                format!(
                    "{name}: {} below, {} above{}",
                    o.underflow[l],
                    o.overflow[l],
                    if o.nan[l] > 0 {
                        format!(", {} NaN", o.nan[l])
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        let mut notes = Vec::new();
        if !outside.is_empty() {
            notes.push(format!(
                "Outside the range (not drawn): {}.",
                outside.join("; ")
            ));
        }
        let (lo, hi) = match (o.edges.first(), o.edges.last()) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            _ => (0.0, 0.0),
        };
        Section {
            wide: false,
            collapsed: None,
            heading: "Histograms".into(),
            intro: format!(
                "{} bins from {} to {}, one line per hidden state.",
                o.edges.len().saturating_sub(1),
                fmt_num(lo),
                fmt_num(hi)
            ),
            notes,
            charts: charts(&o.labels, &o.edges, &o.counts),
            tables: vec![],
        }
    }

    fn scalars(out: &HistogramResult) -> Vec<super::kind::Scalars> {
        use super::kind::Scalars;
        let count = |v: &[u64]| v.iter().map(|&c| Some(c as f64)).collect();
        vec![
            Scalars::new("underflow", &out.labels, count(&out.underflow)),
            Scalars::new("overflow", &out.labels, count(&out.overflow)),
            Scalars::new("nan", &out.labels, count(&out.nan)),
        ]
    }

    fn compare(a: &HistogramResult, b: &HistogramResult, c: &mut Comparer) -> Result<(), Mismatch> {
        Self::compare_columns(a, b, c)?;
        c.same("edges", &a.edges, &b.edges)?;
        // Out-of-range counts are part of the distribution too.
        let full = |h: &HistogramResult, l: usize| -> Vec<u64> {
            std::iter::once(h.underflow[l])
                .chain(h.counts[l].iter().copied())
                .chain(std::iter::once(h.overflow[l]))
                .collect()
        };
        for (l, label) in a.labels.iter().enumerate() {
            c.histogram(label, total_variation(&full(a, l), &full(b, l)));
        }
        c.view(
            format!("Histograms, analysis #{}", c.analysis),
            "Each hidden state's base counts dashed, new counts solid.".into(),
            vec![histogram_overlay(&a.labels, &a.edges, &a.counts, &b.counts)],
        );
        Ok(())
    }
}

/// Histograms as lines, one per hidden state on a plasma_r ramp: linear and log counts.
fn charts(labels: &[String], edges: &[f64], counts: &[Vec<u64>]) -> Vec<ChartSpec> {
    let n = labels.len();
    let make = |log: bool| {
        let heading = if log { "Log counts" } else { "Linear counts" };
        let sub = if log {
            "ln(count); empty bins omitted"
        } else {
            ""
        };
        let mut chart = histogram_frame(title(heading, sub), 45, edges);
        for (l, row) in counts.iter().enumerate() {
            let color = layer_color(l, n);
            // The notebook plots each count at its bin's left edge.
            let data: Vec<Vec<f64>> = row
                .iter()
                .enumerate()
                .filter(|(_, &c)| !log || c > 0)
                .map(|(b, &c)| vec![r(edges[b]), if log { r((c as f64).ln()) } else { c as f64 }])
                .collect();
            chart = chart.series(
                Line::new()
                    .name(labels[l].as_str())
                    .show_symbol(false)
                    .data(data)
                    .item_style(ItemStyle::new().color(color.as_str()))
                    .line_style(
                        charming::element::LineStyle::new()
                            .color(color.as_str())
                            .width(1.5),
                    ),
            );
        }
        chart
    };
    vec![
        ChartSpec {
            title: "histogram-linear".into(),
            option: option(make(false)),
            height: 420,
        },
        ChartSpec {
            title: "histogram-log".into(),
            option: option(make(true)),
            height: 420,
        },
    ]
}
