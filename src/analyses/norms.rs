//! `norms`: the L2 norm of every token's hidden-state vector, per hidden state: how fast
//! the residual stream grows through the layers (Heimersheim & Turner, "Residual stream
//! norms grow exponentially over the forward pass", 2023), with the first token apart,
//! where attention sinks and massive activations make it an outlier. Each text's norm
//! moments are computed alone and merged in a tree fixed by text index.

use serde::{Deserialize, Serialize};

use super::columns::{self, Column, Values};
use super::kind::{Analysis, Context, KindError, Medium, Section, Setup, TextActivations};
use crate::charts::{option, per_layer_lines, ChartSpec};
use crate::spec::error::SpecError;
use crate::stats::{Merge, Moments, Tree};
use crate::view::fmt_num;

/// `{kind: norms}` over the spec's `layers`.
#[derive(Debug, Clone, schemars::JsonSchema)]
pub struct Norms {}

impl<'de> Deserialize<'de> for Norms {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::kind::no_parameters(d, "norms").map(|()| Norms {})
    }
}

/// One text's (or block of texts') norm moments: all tokens, token 0, the rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormMoments {
    /// Every analysed token.
    pub all: Moments,
    /// Token 0 of each text (empty when it is excluded).
    pub first: Moments,
    /// Tokens 1 and after.
    pub rest: Moments,
}

impl Merge for NormMoments {
    fn merge(&mut self, right: &Self) {
        self.all.merge(&right.all);
        self.first.merge(&right.first);
        self.rest.merge(&right.rest);
    }
}

/// Norm moments so far, per hidden state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormsState {
    /// Hidden-state indices.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// Per hidden state, per-text moments merged by text index.
    pub trees: Vec<Tree<NormMoments>>,
}

/// Token-vector norms per hidden state. Every per-label list has one entry per label;
/// `null` where a value does not exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NormsResult {
    /// Hidden-state labels.
    pub labels: Vec<String>,
    /// Token vectors measured per hidden state.
    pub tokens: Vec<u64>,
    /// Mean of `|h|` over the tokens (`np.linalg.norm(h, axis=-1).mean()`).
    pub mean: Vec<Option<f64>>,
    /// Standard deviation of `|h|`, ddof 0.
    pub std: Vec<Option<f64>>,
    /// Smallest `|h|`.
    pub min: Vec<Option<f64>>,
    /// Largest `|h|`.
    pub max: Vec<Option<f64>>,
    /// Mean `|h|` of token 0 of each text; `null` when token 0 is excluded.
    pub first_token_mean: Vec<Option<f64>>,
    /// Mean `|h|` of the tokens after token 0.
    pub rest_mean: Vec<Option<f64>>,
    /// `mean[i] / mean[i-1]`: how much the norm grows from one hidden state to the next
    /// (in the order of `labels`); `null` for the first.
    pub growth: Vec<Option<f64>>,
}

impl NormsState {
    /// An empty state over hidden states `layers`, labelled `labels`.
    pub fn new(layers: Vec<usize>, labels: Vec<String>) -> Self {
        Self {
            trees: vec![Tree::default(); layers.len()],
            layers,
            labels,
        }
    }
}

/// The norm of each `dim`-wide row, in f64.
fn row_norms(rows: &[f32], dim: usize) -> Vec<f64> {
    rows.chunks(dim.max(1))
        .map(|r| {
            r.iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

/// The columns of a norms result, one value per hidden state.
const COLUMNS: &[Column<NormsResult>] = &[
    Column::new("tokens", "tokens", |r| Values::Count(r.tokens.clone())),
    Column::new("mean", "mean", |r| Values::Stat(r.mean.clone())),
    Column::new("std", "std", |r| Values::Stat(r.std.clone())),
    Column::new("min", "min", |r| Values::Stat(r.min.clone())),
    Column::new("max", "max", |r| Values::Stat(r.max.clone())),
    Column::new("first_token_mean", "token 0 mean", |r| {
        Values::Stat(r.first_token_mean.clone())
    }),
    Column::new("rest_mean", "tokens 1+ mean", |r| {
        Values::Stat(r.rest_mean.clone())
    }),
    Column::new("growth", "growth", |r| Values::Stat(r.growth.clone())),
];

impl Analysis for Norms {
    const KIND: &'static str = "norms";
    type State = NormsState;
    type Output = NormsResult;
    const COLUMNS: &'static [Column<NormsResult>] = COLUMNS;

    fn labels(o: &NormsResult) -> &[String] {
        &o.labels
    }

    fn start(&self, at: &Setup) -> Result<NormsState, SpecError> {
        Ok(NormsState::new(at.selected.to_vec(), at.names(at.selected)))
    }

    fn layers(s: &NormsState) -> Vec<usize> {
        s.layers.clone()
    }

    fn observe(s: &mut NormsState, t: &TextActivations) {
        for (tree, &l) in s.trees.iter_mut().zip(&s.layers) {
            let norms = row_norms(t.state(l), t.dim);
            // Row 0 is token 0 only when token 0 is analysed.
            let split = usize::from(t.first_token == 0).min(norms.len());
            let (first, rest) = norms.split_at(split);
            tree.push(
                t.index as u64,
                NormMoments {
                    all: Moments::of_batch(&norms, 1, t.index, t.first_token),
                    first: Moments::of_batch(first, 1, t.index, 0),
                    rest: Moments::of_batch(rest, 1, t.index, t.first_token + split),
                },
            );
        }
    }

    fn merge(s: &mut NormsState, right: NormsState) -> Result<(), KindError> {
        if s.layers != right.layers || right.trees.len() != s.trees.len() {
            return Err(KindError::Mismatch(
                "norms of different hidden states".into(),
            ));
        }
        for (a, b) in s.trees.iter_mut().zip(right.trees) {
            a.join(b)?;
        }
        Ok(())
    }

    fn finish(s: NormsState) -> Result<NormsResult, KindError> {
        let m: Vec<NormMoments> = s
            .trees
            .into_iter()
            .map(|t| t.fold().unwrap_or_default())
            .collect();
        let mean: Vec<Option<f64>> = m.iter().map(|x| x.all.mean()).collect();
        let growth = (0..mean.len())
            .map(
                |i| match (i.checked_sub(1).and_then(|p| mean[p]), mean[i]) {
                    (Some(a), Some(b)) if a != 0.0 => Some(b / a),
                    _ => None,
                },
            )
            .collect();
        Ok(NormsResult {
            labels: s.labels,
            tokens: m.iter().map(|x| x.all.count()).collect(),
            std: m.iter().map(|x| x.all.std()).collect(),
            min: m.iter().map(|x| x.all.min()).collect(),
            max: m.iter().map(|x| x.all.max()).collect(),
            first_token_mean: m.iter().map(|x| x.first.mean()).collect(),
            rest_mean: m.iter().map(|x| x.rest.mean()).collect(),
            mean,
            growth,
        })
    }

    fn section(o: &NormsResult, cx: &Context, _: Medium) -> Section {
        let mut series: Vec<(&str, &[Option<f64>])> = vec![("all tokens", &o.mean)];
        if o.first_token_mean.iter().any(Option::is_some) {
            series.push(("token 0", &o.first_token_mean));
            series.push(("tokens 1+", &o.rest_mean));
        }
        let chart = |log: bool| ChartSpec {
            title: if log { "norms-log" } else { "norms-linear" }.into(),
            option: option(per_layer_lines(
                if log {
                    "Mean token-vector norm (log scale)"
                } else {
                    "Mean token-vector norm"
                },
                "",
                &o.labels,
                &series,
                "|h|",
                log,
            )),
            height: 380,
        };
        let first = if cx.exclude_first_token {
            "Token 0 is excluded, so it has no column of its own."
        } else {
            "Token 0 of each text is also shown apart: attention sinks make it an outlier."
        };
        let fastest = o
            .growth
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.map(|g| (i, g)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let notes = fastest
            .map(|(i, g)| {
                vec![format!(
                    "The norm grows fastest into {} ({}x the hidden state before).",
                    o.labels[i],
                    fmt_num(g)
                )]
            })
            .unwrap_or_default();
        Section {
            wide: false,
            collapsed: None,
            heading: "Residual-stream norms".into(),
            intro: format!("The L2 norm of every token's vector, per hidden state. {first}"),
            notes,
            charts: vec![chart(false), chart(true)],
            tables: vec![columns::table(
                "Norm of the token vectors, per hidden state",
                COLUMNS,
                o,
                &o.labels,
            )],
        }
    }
}
