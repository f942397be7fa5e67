//! `dimensionality`: how many dimensions a hidden state really uses, from the `d x d`
//! covariance `C` of its token vectors over the whole corpus:
//! - the participation ratio `tr(C)^2 / |C|_F^2` (Gao et al., "A theory of multineuronal
//!   dimensionality", 2017; used on language models by e.g. Cai et al. 2021);
//! - the effective rank `exp(H(p))`, `p = lambda / sum lambda` over the eigenvalues of `C`
//!   clipped at 0 (Roy & Vetterli, "The effective rank", 2007);
//! - the share of the variance along each leading eigenvector, and how many eigenvectors
//!   hold 90% of it.
//!
//! The sums behind `C` are exact fixed-point integers ([`crate::stats::gram`]): one text's
//! `X^T X` comes from gemm, so the state costs `d (d + 1) / 2` sums of 16 bytes per hidden
//! state (4.5 MiB at d = 768) whatever the corpus size, and merges to the same bits for
//! any split. The eigenvalues come from faer's symmetric eigensolver (`stats::linalg`) at
//! the end.

use charming::component::{Axis, Grid, Legend};
use charming::element::{AxisType, ItemStyle, LineStyle, NameLocation, Tooltip, Trigger};
use charming::series::Line;
use charming::Chart;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::columns::{self, Column, Values};
use super::kind::{
    Analysis, Check, Context, KindError, Medium, MemoryLimit, Section, Setup, TextActivations,
};
use crate::charts::{layer_color, option, per_layer_lines, r, title, ChartSpec};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::stats::gram::{bytes_of, column_sums, cross_products, finite_rows, FiniteRows, Fixed};
use crate::view::fmt_num;

/// `{kind: dimensionality, spectrum: 64, max_memory: "2 GiB"}` over the spec's `layers`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dimensionality {
    /// How many leading eigenvalues to keep per hidden state for the spectrum (1 to
    /// 4096, at most the hidden size). Default 64.
    #[serde(default = "default_spectrum")]
    pub spectrum: usize,
    /// The most memory the sums may take: `d (d + 1) / 2` sums of 16 bytes per hidden
    /// state. Default `"2 GiB"`.
    #[serde(default)]
    pub max_memory: MemoryLimit,
}

fn default_spectrum() -> usize {
    64
}

/// Exact sums of one hidden state's token vectors and their outer products.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondMoments {
    /// Tokens summed.
    pub n: u64,
    /// Tokens left out for a NaN or infinite value.
    pub nonfinite: u64,
    /// `sum of h`, per dimension (empty until the first token).
    pub sum: Fixed,
    /// `sum of h h^T`, the upper triangle row by row (empty until the first token).
    pub outer: Fixed,
}

impl SecondMoments {
    /// Adds one text's `[rows, d]` activations.
    fn observe(&mut self, rows: &[f32], d: usize, scratch: &mut Vec<f64>) {
        let FiniteRows { x, left_out, .. } = finite_rows(&[rows], d);
        self.nonfinite += left_out;
        let n = x[0].len() / d.max(1);
        if n == 0 {
            return;
        }
        if self.sum.raw.is_empty() {
            self.sum = Fixed::zeros(d);
            self.outer = Fixed::zeros(d * (d + 1) / 2);
        }
        scratch.resize(d * d, 0.0);
        cross_products(&x[0], &x[0], n, d, scratch);
        self.outer.add_upper(scratch, d);
        self.sum.add(&column_sums(&x[0], d));
        self.n += n as u64;
    }

    fn merge(&mut self, right: &SecondMoments) -> Result<(), KindError> {
        if !self.sum.raw.is_empty()
            && !right.sum.raw.is_empty()
            && (self.sum.raw.len(), self.outer.raw.len())
                != (right.sum.raw.len(), right.outer.raw.len())
        {
            return Err(KindError::Mismatch(
                "second moments of different hidden sizes".into(),
            ));
        }
        if !right.sum.raw.is_empty() {
            self.sum.merge(&right.sum);
            self.outer.merge(&right.outer);
        }
        self.n += right.n;
        self.nonfinite += right.nonfinite;
        Ok(())
    }

    /// The covariance `C = sum h h^T / n - mean mean^T`, full and row-major, with its
    /// size; `None` below two tokens. Fails when the sums overflowed.
    pub fn covariance(&self) -> Result<Option<(Vec<f64>, usize)>, KindError> {
        if self.sum.overflow || self.outer.overflow {
            return Err(KindError::NoResult(
                "the exact sums overflowed (activations beyond 1e11, or a sum beyond 3.8e22)"
                    .into(),
            ));
        }
        let d = self.sum.raw.len();
        if self.n < 2 || self.outer.raw.len() != d * (d + 1) / 2 {
            return Ok(None);
        }
        let n = self.n as f64;
        let mean: Vec<f64> = self.sum.values().iter().map(|s| s / n).collect();
        let mut c = vec![0.0; d * d];
        let mut at = 0;
        for i in 0..d {
            for j in i..d {
                let v = self.outer.get(at) / n - mean[i] * mean[j];
                c[i * d + j] = v;
                c[j * d + i] = v;
                at += 1;
            }
        }
        Ok(Some((c, d)))
    }
}

/// Sums so far, per hidden state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionalityState {
    /// Hidden-state indices.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// Leading eigenvalues to keep.
    pub spectrum: usize,
    /// Per hidden state.
    pub moments: Vec<SecondMoments>,
}

impl DimensionalityState {
    /// An empty state over `layers`, keeping `spectrum` eigenvalues.
    pub fn new(layers: Vec<usize>, labels: Vec<String>, spectrum: usize) -> Self {
        Self {
            moments: vec![SecondMoments::default(); layers.len()],
            layers,
            labels,
            spectrum,
        }
    }
}

/// How many dimensions each hidden state uses. Every per-label list has one entry per
/// label; `null` with fewer than two tokens or no variance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DimensionalityResult {
    /// Hidden-state labels.
    pub labels: Vec<String>,
    /// Tokens in the covariance, per hidden state.
    pub tokens: Vec<u64>,
    /// Tokens left out for a NaN or infinite value, per hidden state.
    pub nonfinite_tokens: Vec<u64>,
    /// `tr(C)`: the total variance.
    pub total_variance: Vec<Option<f64>>,
    /// `tr(C)^2 / |C|_F^2`, between 1 and d.
    pub participation_ratio: Vec<Option<f64>>,
    /// `exp(-sum p log p)`, `p = lambda / sum lambda`, eigenvalues clipped at 0.
    pub effective_rank: Vec<Option<f64>>,
    /// Fewest leading eigenvectors that hold 90% of the variance.
    pub components_90: Vec<Option<u64>>,
    /// `[label][i]`: the `i`-th largest eigenvalue over their sum (clipped at 0), for the
    /// leading `spectrum` eigenvalues; empty where the total is null.
    pub spectrum: Vec<Vec<f64>>,
}

/// The measures of one covariance matrix.
struct Measures {
    total: f64,
    participation: f64,
    effective_rank: f64,
    components_90: u64,
    spectrum: Vec<f64>,
}

/// Participation ratio, effective rank and spectrum of the symmetric `d x d` matrix `c`;
/// `None` when it has no variance.
fn measures(c: Vec<f64>, d: usize, keep: usize) -> Option<Measures> {
    let total: f64 = (0..d).map(|i| c[i * d + i]).sum();
    let frob2: f64 = c.iter().map(|v| v * v).sum();
    if total <= 0.0 || frob2 <= 0.0 || !total.is_finite() {
        return None;
    }
    let m = nalgebra::DMatrix::from_row_slice(d, d, &c);
    let lambda: Vec<f64> = crate::stats::linalg::eigenvalues_descending(&m)
        .into_iter()
        .map(|l| l.max(0.0))
        .collect();
    let sum: f64 = lambda.iter().sum();
    if sum <= 0.0 {
        return None;
    }
    let p: Vec<f64> = lambda.iter().map(|l| l / sum).collect();
    let entropy: f64 = p.iter().filter(|&&x| x > 0.0).map(|&x| -x * x.ln()).sum();
    let mut cumulative = 0.0;
    let components_90 = p
        .iter()
        .position(|&x| {
            cumulative += x;
            cumulative >= 0.9
        })
        .map_or(d, |i| i + 1) as u64;
    Some(Measures {
        total,
        participation: total * total / frob2,
        effective_rank: entropy.exp(),
        components_90,
        spectrum: p.into_iter().take(keep).collect(),
    })
}

/// The per-hidden-state columns of a dimensionality result.
const COLUMNS: &[Column<DimensionalityResult>] = &[
    Column::new("tokens", "tokens", |r| Values::Count(r.tokens.clone())),
    Column::new("total_variance", "total variance", |r| {
        Values::Stat(r.total_variance.clone())
    }),
    Column::new("participation_ratio", "participation ratio", |r| {
        Values::Stat(r.participation_ratio.clone())
    }),
    Column::new("effective_rank", "effective rank", |r| {
        Values::Stat(r.effective_rank.clone())
    }),
    Column::new("components_90", "eigenvectors for 90%", |r| {
        Values::Stat(
            r.components_90
                .iter()
                .map(|c| c.map(|c| c as f64))
                .collect(),
        )
    }),
    Column::new("spectrum", "largest eigenvalue share", |r| {
        Values::Shown(
            r.spectrum
                .iter()
                .map(|s| {
                    s.first()
                        .map_or("—".into(), |p| format!("{}%", fmt_num(100.0 * p)))
                })
                .collect(),
        )
    }),
];

impl Analysis for Dimensionality {
    const KIND: &'static str = "dimensionality";
    type State = DimensionalityState;
    type Output = DimensionalityResult;
    const COLUMNS: &'static [Column<DimensionalityResult>] = COLUMNS;

    fn labels(o: &DimensionalityResult) -> &[String] {
        &o.labels
    }

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        if self.spectrum == 0 || self.spectrum > 4096 {
            return Err(at.invalid(
                "spectrum",
                self.spectrum,
                "keep 1 to 4096 leading eigenvalues, e.g. 64",
            ));
        }
        Ok(())
    }

    fn start(&self, at: &Setup) -> Result<DimensionalityState, SpecError> {
        let d = at.info.hidden_size;
        let per_state = bytes_of(d * (d + 1) / 2 + d);
        at.fits(
            per_state * at.selected.len() as u64,
            self.max_memory,
            &format!(
                "{} hidden states x d(d+1)/2 exact sums of 16 bytes, d = {d}",
                at.selected.len()
            ),
        )?;
        Ok(DimensionalityState::new(
            at.selected.to_vec(),
            at.names(at.selected),
            self.spectrum.min(d),
        ))
    }

    fn layers(s: &DimensionalityState) -> Vec<usize> {
        s.layers.clone()
    }

    fn observe(s: &mut DimensionalityState, t: &TextActivations) {
        let d = t.dim;
        s.moments
            .par_iter_mut()
            .zip(&s.layers)
            .for_each_init(Vec::new, |scratch, (m, &l)| {
                m.observe(t.state(l), d, scratch)
            });
    }

    fn merge(s: &mut DimensionalityState, right: DimensionalityState) -> Result<(), KindError> {
        if (&s.layers, s.spectrum) != (&right.layers, right.spectrum)
            || s.moments.len() != right.moments.len()
        {
            return Err(KindError::Mismatch(
                "dimensionality of different hidden states or spectrum".into(),
            ));
        }
        for (a, b) in s.moments.iter_mut().zip(&right.moments) {
            a.merge(b)?;
        }
        Ok(())
    }

    fn finish(s: DimensionalityState) -> Result<DimensionalityResult, KindError> {
        let keep = s.spectrum;
        let measured: Vec<Option<Measures>> = s
            .moments
            .par_iter()
            .map(|m| Ok(m.covariance()?.and_then(|(c, d)| measures(c, d, keep))))
            .collect::<Result<_, KindError>>()?;
        let field = |f: fn(&Measures) -> f64| -> Vec<Option<f64>> {
            measured.iter().map(|m| m.as_ref().map(f)).collect()
        };
        Ok(DimensionalityResult {
            tokens: s.moments.iter().map(|m| m.n).collect(),
            nonfinite_tokens: s.moments.iter().map(|m| m.nonfinite).collect(),
            total_variance: field(|m| m.total),
            participation_ratio: field(|m| m.participation),
            effective_rank: field(|m| m.effective_rank),
            components_90: measured
                .iter()
                .map(|m| m.as_ref().map(|m| m.components_90))
                .collect(),
            spectrum: measured
                .into_iter()
                .map(|m| m.map(|m| m.spectrum).unwrap_or_default())
                .collect(),
            labels: s.labels,
        })
    }

    fn validate(o: &DimensionalityResult, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(o, cx)?;
        super::kind::expect_per_label("nonfinite_tokens", &o.nonfinite_tokens, &o.labels)?;
        if let Some(i) = o.spectrum.iter().position(|s| s.len() > 4096) {
            return Err(KindError::Invalid(format!(
                "spectrum[{i}] has more than 4096 eigenvalues"
            )));
        }
        Ok(())
    }

    fn section(o: &DimensionalityResult, _: &Context, _: Medium) -> Section {
        let used = ChartSpec {
            title: "dimensionality-measures".into(),
            option: option(per_layer_lines(
                "Dimensions in use",
                "participation ratio and effective rank of the token covariance",
                &o.labels,
                &[
                    ("participation ratio", &o.participation_ratio),
                    ("effective rank", &o.effective_rank),
                ],
                "dimensions",
                false,
            )),
            height: 380,
        };
        let mut notes = vec![];
        if let Some(i) = o.nonfinite_tokens.iter().position(|&n| n > 0) {
            notes.push(format!(
                "{} tokens of {} had NaN or infinite values and were left out.",
                o.nonfinite_tokens[i], o.labels[i]
            ));
        }
        Section {
            wide: false,
            collapsed: None,
            heading: "Dimensionality".into(),
            intro: "How many dimensions the token vectors spread over: the participation ratio tr(C)²/|C|²_F and the effective rank exp(H(λ/Σλ)) of their covariance C, and the share of the variance along each leading eigenvector.".into(),
            notes,
            charts: vec![used, spectrum_chart(o)],
            tables: vec![columns::table(
                "Dimensionality of the token covariance, per hidden state",
                COLUMNS,
                o,
                &o.labels,
            )],
        }
    }

    fn compare(
        a: &DimensionalityResult,
        b: &DimensionalityResult,
        c: &mut Comparer,
    ) -> Result<(), Mismatch> {
        Self::compare_columns(a, b, c)?;
        let mut m = c.metric("spectrum");
        for (i, (x, y)) in a.spectrum.iter().zip(&b.spectrum).enumerate() {
            for (k, (p, q)) in x.iter().zip(y).enumerate() {
                m.add(*p, *q, || format!("{} eigenvalue {}", a.labels[i], k + 1));
            }
        }
        c.push(m);
        Ok(())
    }
}

/// The leading eigenvalues' shares of the variance, one line per hidden state on a log
/// scale, coloured from first to last hidden state.
fn spectrum_chart(o: &DimensionalityResult) -> ChartSpec {
    let k = o.spectrum.iter().map(Vec::len).max().unwrap_or(0);
    let mut chart = Chart::new()
        .title(title(
            "Eigenvalue spectrum",
            "share of the variance along each leading eigenvector",
        ))
        .tooltip(Tooltip::new().trigger(Trigger::Item).formatter("{a}: {c}"))
        .legend(
            Legend::new()
                .top(45)
                .type_(charming::component::LegendType::Scroll),
        )
        .grid(Grid::new().top(85).bottom(50).left(70).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name("Eigenvalue rank")
                .name_location(NameLocation::Middle)
                .name_gap(28)
                .data((1..=k).map(|i| i.to_string()).collect()),
        )
        .y_axis(Axis::new().type_(AxisType::Log).name("share"));
    for (i, (label, p)) in o.labels.iter().zip(&o.spectrum).enumerate() {
        let color = layer_color(i, o.labels.len());
        let data: Vec<charming::datatype::DataPoint> = p
            .iter()
            .map(|&x| {
                if x > 0.0 {
                    charming::datatype::DataPoint::from(r(x))
                } else {
                    charming::datatype::DataPoint::from("-")
                }
            })
            .collect();
        chart = chart.series(
            Line::new()
                .name(label.as_str())
                .data(data)
                .show_symbol(false)
                .item_style(ItemStyle::new().color(color.as_str()))
                .line_style(LineStyle::new().color(color.as_str()).width(1.5)),
        );
    }
    ChartSpec {
        title: "dimensionality-spectrum".into(),
        option: option(chart),
        height: 400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_of_known_spectra() {
        // diag(4, 1, 0): PR = 25 / 17; p = (0.8, 0.2, 0).
        let m = measures(vec![4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], 3, 2).unwrap();
        assert!((m.participation - 25.0 / 17.0).abs() < 1e-12);
        let h: f64 = -(0.8f64 * 0.8f64.ln() + 0.2 * 0.2f64.ln());
        assert!((m.effective_rank - h.exp()).abs() < 1e-12);
        assert_eq!(m.components_90, 2);
        assert_eq!(m.spectrum.len(), 2);
        assert!((m.spectrum[0] - 0.8).abs() < 1e-12);
        // Isotropic: every dimension counts fully.
        let m = measures(vec![2.0, 0.0, 0.0, 2.0], 2, 8).unwrap();
        assert!((m.participation - 2.0).abs() < 1e-12);
        assert!((m.effective_rank - 2.0).abs() < 1e-12);
        assert!(measures(vec![0.0; 4], 2, 2).is_none());
    }
}
