//! `summary`: per hidden state, count, mean, std, min, max, skewness, kurtosis and the value
//! of largest magnitude with where it sits. Each text's moments are computed alone and
//! merged in a tree fixed by text index; extremes merge exactly (ties: the earlier place).

use serde::{Deserialize, Serialize};

use super::columns::{self, Column, Values};
use super::kind::{Analysis, Context, KindError, Section, Setup, TextActivations};
use crate::compare::rules::{Comparer, Mismatch};

use super::kind::Location;
use crate::spec::error::SpecError;
use crate::stats::{Moments, Tree};

/// `{kind: summary}` over the spec's `layers`.
#[derive(Debug, Clone, schemars::JsonSchema)]
pub struct Summary {}

impl<'de> Deserialize<'de> for Summary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::kind::no_parameters(d, "summary").map(|()| Summary {})
    }
}

/// The largest |value| of a hidden state so far, with its place named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extreme {
    /// The value.
    pub value: f64,
    /// Global index of its text (orders ties).
    pub text_index: usize,
    /// Where it is.
    pub at: Location,
}

/// Moments so far, per hidden state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryState {
    /// Hidden-state indices.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// Per hidden state, per-text moments merged by text index.
    pub moments: Vec<Tree<Moments>>,
    /// Per hidden state, the value of largest magnitude.
    pub max_abs: Vec<Option<Extreme>>,
}

/// One hidden state's summary statistics. Moments are over every finite (token, dim)
/// value; `null` where undefined (no values, or zero variance for skewness/kurtosis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryRow {
    /// Hidden-state label.
    pub label: String,
    /// Finite values counted.
    pub count: u64,
    /// NaN or infinite values (left out of everything else).
    pub non_finite: u64,
    /// Mean (`np.mean`).
    pub mean: Option<f64>,
    /// Standard deviation, ddof 0 (`np.std`).
    pub std: Option<f64>,
    /// Minimum.
    pub min: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
    /// Skewness, biased (`scipy.stats.skew`).
    pub skewness: Option<f64>,
    /// Excess kurtosis, Fisher, biased (`scipy.stats.kurtosis`): 0 for a normal.
    pub kurtosis: Option<f64>,
    /// The value of largest magnitude (first occurrence on ties).
    pub max_abs: Option<f64>,
    /// Where `max_abs` sits.
    pub max_abs_at: Option<Location>,
}

/// Summary statistics per hidden state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryResult {
    /// One row per hidden state.
    pub rows: Vec<SummaryRow>,
}

/// Keeps the larger magnitude of two extremes; on a tie the earlier text's.
fn keep_larger(a: &mut Option<Extreme>, b: Option<Extreme>) {
    if let Some(b) = b {
        let replace = match a {
            None => true,
            Some(x) => {
                b.value.abs() > x.value.abs()
                    || (b.value.abs() == x.value.abs() && b.text_index < x.text_index)
            }
        };
        if replace {
            *a = Some(b);
        }
    }
}

impl SummaryState {
    /// An empty state over hidden states `layers`, labelled `labels`.
    pub fn new(layers: Vec<usize>, labels: Vec<String>) -> Self {
        let k = layers.len();
        Self {
            layers,
            labels,
            moments: vec![Tree::default(); k],
            max_abs: vec![None; k],
        }
    }
}

/// The hidden states of a summary, one per row.
fn labels(o: &SummaryResult) -> Vec<String> {
    o.rows.iter().map(|r| r.label.clone()).collect()
}

/// One statistic of every row.
fn stat(o: &SummaryResult, f: fn(&SummaryRow) -> Option<f64>) -> Values {
    Values::Stat(o.rows.iter().map(f).collect())
}

/// Where a row's largest |x| sits.
fn max_abs_at(r: &SummaryRow) -> String {
    r.max_abs_at.as_ref().map_or_else(
        || "—".into(),
        |l| {
            format!(
                "{} · #{} {:?} · dim {}",
                l.text, l.token_index, l.token, l.dim
            )
        },
    )
}

/// The columns of a summary, one value per hidden state.
const COLUMNS: &[Column<SummaryResult>] = &[
    Column::new("count", "count", |o| {
        Values::Count(o.rows.iter().map(|r| r.count).collect())
    }),
    Column::new("mean", "mean", |o| stat(o, |r| r.mean)),
    Column::new("std", "std", |o| stat(o, |r| r.std)),
    Column::new("min", "min", |o| stat(o, |r| r.min)),
    Column::new("max", "max", |o| stat(o, |r| r.max)),
    Column::new("skewness", "skewness", |o| stat(o, |r| r.skewness)),
    Column::new("kurtosis", "kurtosis", |o| stat(o, |r| r.kurtosis)),
    Column::new("max_abs", "max |x|", |o| stat(o, |r| r.max_abs)),
    Column::new("max_abs_at", "at (text, token, dim)", |o| {
        Values::Text(o.rows.iter().map(max_abs_at).collect())
    }),
];

impl Analysis for Summary {
    const KIND: &'static str = "summary";
    type State = SummaryState;
    type Output = SummaryResult;

    fn start(&self, at: &Setup) -> Result<SummaryState, SpecError> {
        Ok(SummaryState::new(
            at.selected.to_vec(),
            at.names(at.selected),
        ))
    }

    fn layers(s: &SummaryState) -> Vec<usize> {
        s.layers.clone()
    }

    fn observe(s: &mut SummaryState, t: &TextActivations) {
        for ((tree, max), &l) in s.moments.iter_mut().zip(&mut s.max_abs).zip(&s.layers) {
            let m = Moments::of_batch(t.state(l), t.dim, t.index, t.first_token);
            let here = m.max_abs().map(|loc| Extreme {
                value: loc.value,
                text_index: t.index,
                at: Location {
                    text: t.id.to_string(),
                    token_index: loc.row,
                    token: t.tokens.get(loc.row).cloned().unwrap_or_default(),
                    dim: loc.col,
                },
            });
            keep_larger(max, here);
            tree.push(t.index as u64, m);
        }
    }

    fn merge(s: &mut SummaryState, right: SummaryState) -> Result<(), KindError> {
        if s.layers != right.layers
            || right.moments.len() != s.layers.len()
            || right.max_abs.len() != s.layers.len()
        {
            return Err(KindError::Mismatch(
                "summaries of different hidden states".into(),
            ));
        }
        for (a, b) in s.moments.iter_mut().zip(right.moments) {
            a.join(b)?;
        }
        for (a, b) in s.max_abs.iter_mut().zip(right.max_abs) {
            keep_larger(a, b);
        }
        Ok(())
    }

    fn finish(s: SummaryState) -> Result<SummaryResult, KindError> {
        let rows = s
            .labels
            .into_iter()
            .zip(s.moments)
            .zip(s.max_abs)
            .map(|((label, tree), max)| {
                let m = tree.fold().unwrap_or_default();
                SummaryRow {
                    label,
                    count: m.count(),
                    non_finite: m.non_finite(),
                    mean: m.mean(),
                    std: m.std(),
                    min: m.min(),
                    max: m.max(),
                    skewness: m.skewness(),
                    kurtosis: m.kurtosis(),
                    max_abs: max.as_ref().map(|e| e.value),
                    max_abs_at: max.map(|e| e.at),
                }
            })
            .collect();
        Ok(SummaryResult { rows })
    }

    fn validate(o: &SummaryResult, cx: &Context) -> Result<(), KindError> {
        let labels: Vec<String> = o.rows.iter().map(|r| r.label.clone()).collect();
        super::kind::expect_known_labels(&labels, cx.labels)?;
        super::kind::expect_len(
            "rows (one per hidden state of settings.layers)",
            o.rows.len(),
            cx.layers.len(),
        )
    }

    fn section(o: &SummaryResult, _: &Context, _: super::kind::Medium) -> Section {
        Section {
            wide: false,
            collapsed: None,
            heading: "Summary statistics".into(),
            intro: "Moments over every (token, dimension) value; std ddof 0, skewness and excess kurtosis biased (as scipy).".into(),
            notes: vec![],
            charts: vec![],
            tables: vec![columns::table("Per hidden state", COLUMNS, o, &labels(o))],
        }
    }

    fn scalars(out: &SummaryResult) -> Vec<super::kind::Scalars> {
        columns::scalars(COLUMNS, out, &labels(out))
    }

    fn compare(a: &SummaryResult, b: &SummaryResult, c: &mut Comparer) -> Result<(), Mismatch> {
        let (la, lb) = (labels(a), labels(b));
        c.same("hidden states", &la, &lb)?;
        columns::compare(COLUMNS, a, b, &la, c);
        Ok(())
    }
}
