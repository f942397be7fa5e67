//! `anisotropy`: how much the token vectors of a hidden state point the same way, as the
//! mean cosine similarity over all ordered pairs of distinct tokens in the corpus
//! (Ethayarajh, "How Contextual are Contextualized Word Representations?", 2019), and the
//! "rogue" dimensions that make most of it (Timkey & van Schijndel, "All Bark and No
//! Bite", 2021). Exact in streaming form: with `u = h/|h|`, `S = sum of u` and
//! `Q_j = sum of u_j^2` over the `N` tokens, the mean cosine is `(|S|^2 - N) / (N (N-1))`
//! and dimension `j` contributes `(S_j^2 - Q_j) / (N (N-1))`. Each text's sums are
//! computed alone and merged in a tree fixed by text index.

use charming::element::{Tooltip, Trigger};
use charming::series::Bar;
use serde::{Deserialize, Serialize};

use super::columns::{self, Column, Values};
use super::kind::{Analysis, Check, Context, KindError, Medium, Section, Setup, TextActivations};
use crate::charts::{option, per_layer_frame, per_layer_lines, r, ChartSpec};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::stats::{Merge, Tree};
use crate::view::fmt_num;

/// `{kind: anisotropy, k: 5}` over the spec's `layers`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Anisotropy {
    /// How many rogue dimensions to name per hidden state (1 to 100). Default 5.
    #[serde(default = "default_k")]
    #[schemars(range(min = 1, max = 100))]
    pub k: usize,
}

fn default_k() -> usize {
    5
}

/// Sums of one text's (or block of texts') unit vectors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSums {
    /// Token vectors summed (those of norm 0 have no direction and are left out).
    pub n: u64,
    /// Token vectors of norm 0.
    pub zero: u64,
    /// `sum of h/|h|`, per dimension.
    pub s: Vec<f64>,
    /// `sum of (h_j/|h|)^2`, per dimension.
    pub q: Vec<f64>,
}

impl Merge for UnitSums {
    fn merge(&mut self, right: &Self) {
        if self.s.is_empty() {
            self.s = vec![0.0; right.s.len()];
            self.q = vec![0.0; right.q.len()];
        }
        for (a, b) in self.s.iter_mut().zip(&right.s) {
            *a += b;
        }
        for (a, b) in self.q.iter_mut().zip(&right.q) {
            *a += b;
        }
        self.n += right.n;
        self.zero += right.zero;
    }
}

/// Unit-vector sums so far, per hidden state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnisotropyState {
    /// Hidden-state indices.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// Rogue dimensions to name.
    pub k: usize,
    /// Per hidden state, per-text sums merged by text index.
    pub trees: Vec<Tree<UnitSums>>,
}

/// A dimension's part of a hidden state's mean cosine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RogueDim {
    /// The dimension.
    pub dim: usize,
    /// `(S_j^2 - Q_j) / (N (N-1))`: what it adds to the mean cosine.
    pub contribution: f64,
    /// `contribution / mean_cosine`: its share (can exceed 1 when other dimensions
    /// contribute negatively).
    pub share: Option<f64>,
}

/// Mean cosine similarity of token vectors, and the dimensions behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnisotropyResult {
    /// Hidden-state labels.
    pub labels: Vec<String>,
    /// How many rogue dimensions are named per hidden state.
    pub k: usize,
    /// Token vectors with a direction, per hidden state (norm-0 vectors are left out).
    pub tokens: Vec<u64>,
    /// The mean of `cos(h_a, h_b)` over all ordered pairs of distinct tokens; `null` with
    /// fewer than two tokens.
    pub mean_cosine: Vec<Option<f64>>,
    /// `[label][rank]`: the `k` dimensions of largest contribution, largest first (ties:
    /// lower dimension first).
    pub rogue_dims: Vec<Vec<RogueDim>>,
}

impl AnisotropyState {
    /// An empty state naming `k` rogue dimensions per hidden state of `layers`.
    pub fn new(layers: Vec<usize>, labels: Vec<String>, k: usize) -> Self {
        Self {
            trees: vec![Tree::default(); layers.len()],
            layers,
            labels,
            k,
        }
    }
}

/// One text's unit-vector sums over `dim`-wide rows.
fn unit_sums(rows: &[f32], dim: usize) -> UnitSums {
    let mut u = UnitSums {
        s: vec![0.0; dim],
        q: vec![0.0; dim],
        ..Default::default()
    };
    for row in rows.chunks(dim.max(1)) {
        let norm = row
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 || !norm.is_finite() {
            u.zero += 1;
            continue;
        }
        for ((s, q), &x) in u.s.iter_mut().zip(u.q.iter_mut()).zip(row) {
            let v = x as f64 / norm;
            *s += v;
            *q += v * v;
        }
        u.n += 1;
    }
    u
}

/// A hidden state's rogue dimensions with their share of the mean cosine (or their
/// contribution, when the mean cosine is too small to share).
fn rogue_list(dims: &[RogueDim]) -> String {
    dims.iter()
        .map(|d| {
            format!(
                "{} ({})",
                d.dim,
                d.share
                    .map(|s| format!("{}%", fmt_num(100.0 * s)))
                    .unwrap_or_else(|| fmt_num(d.contribution))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The per-hidden-state columns of an anisotropy result.
const COLUMNS: &[Column<AnisotropyResult>] = &[
    Column::new("tokens", "tokens", |r| Values::Count(r.tokens.clone())),
    Column::new("mean_cosine", "mean cosine", |r| {
        Values::Stat(r.mean_cosine.clone())
    }),
    Column::new("rogue_dims", "rogue dimensions", |r| {
        Values::Text(r.rogue_dims.iter().map(|d| rogue_list(d)).collect())
    }),
];

impl Analysis for Anisotropy {
    const KIND: &'static str = "anisotropy";
    type State = AnisotropyState;
    type Output = AnisotropyResult;
    const COLUMNS: &'static [Column<AnisotropyResult>] = COLUMNS;

    fn labels(o: &AnisotropyResult) -> &[String] {
        &o.labels
    }

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        if self.k == 0 || self.k > 100 {
            return Err(at.invalid("k", self.k, "use k from 1 to 100 rogue dimensions"));
        }
        Ok(())
    }

    fn start(&self, at: &Setup) -> Result<AnisotropyState, SpecError> {
        if self.k > at.info.hidden_size {
            return Err(at.invalid(
                "k",
                self.k,
                format!(
                    "the model has {} dimensions: use k up to that",
                    at.info.hidden_size
                ),
            ));
        }
        Ok(AnisotropyState::new(
            at.selected.to_vec(),
            at.names(at.selected),
            self.k,
        ))
    }

    fn layers(s: &AnisotropyState) -> Vec<usize> {
        s.layers.clone()
    }

    fn observe(s: &mut AnisotropyState, t: &TextActivations) {
        for (tree, &l) in s.trees.iter_mut().zip(&s.layers) {
            tree.push(t.index as u64, unit_sums(t.state(l), t.dim));
        }
    }

    fn merge(s: &mut AnisotropyState, right: AnisotropyState) -> Result<(), KindError> {
        if (&s.layers, s.k) != (&right.layers, right.k) || right.trees.len() != s.trees.len() {
            return Err(KindError::Mismatch(
                "anisotropy of different hidden states or k".into(),
            ));
        }
        for (a, b) in s.trees.iter_mut().zip(right.trees) {
            let widths: Vec<usize> = a
                .blocks
                .iter()
                .chain(&b.blocks)
                .map(|x| x.state.s.len())
                .filter(|&w| w > 0)
                .collect();
            if widths.windows(2).any(|w| w[0] != w[1]) {
                return Err(KindError::Mismatch(
                    "unit-vector sums of different widths".into(),
                ));
            }
            a.join(b)?;
        }
        Ok(())
    }

    fn finish(s: AnisotropyState) -> Result<AnisotropyResult, KindError> {
        let (mut tokens, mut mean_cosine, mut rogue_dims) = (vec![], vec![], vec![]);
        for tree in s.trees {
            let u = tree.fold().unwrap_or_default();
            if u.s.len() != u.q.len() {
                return Err(KindError::NoResult(
                    "unit-vector sums of different widths".into(),
                ));
            }
            let n = u.n as f64;
            let pairs = n * (n - 1.0);
            let mc = (u.n >= 2).then(|| (u.s.iter().map(|x| x * x).sum::<f64>() - n) / pairs);
            let mut dims: Vec<RogueDim> =
                u.s.iter()
                    .zip(&u.q)
                    .enumerate()
                    .filter(|_| u.n >= 2)
                    .map(|(j, (s, q))| {
                        let contribution = (s * s - q) / pairs;
                        RogueDim {
                            dim: j,
                            contribution,
                            share: mc.filter(|m| *m != 0.0).map(|m| contribution / m),
                        }
                    })
                    .collect();
            dims.sort_by(|a, b| {
                b.contribution
                    .total_cmp(&a.contribution)
                    .then(a.dim.cmp(&b.dim))
            });
            dims.truncate(s.k);
            tokens.push(u.n);
            mean_cosine.push(mc);
            rogue_dims.push(dims);
        }
        Ok(AnisotropyResult {
            labels: s.labels,
            k: s.k,
            tokens,
            mean_cosine,
            rogue_dims,
        })
    }

    fn validate(o: &AnisotropyResult, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(o, cx)?;
        for (l, dims) in o.rogue_dims.iter().enumerate() {
            if dims.len() > o.k {
                return Err(KindError::Invalid(format!(
                    "rogue_dims[{l}] has {} entries, more than k = {}",
                    dims.len(),
                    o.k
                )));
            }
        }
        Ok(())
    }

    fn section(o: &AnisotropyResult, _: &Context, _: Medium) -> Section {
        let cos = ChartSpec {
            title: "anisotropy-mean-cosine".into(),
            option: option(per_layer_lines(
                "Mean cosine similarity of token vectors",
                "over all ordered pairs of distinct tokens",
                &o.labels,
                &[("mean cosine", &o.mean_cosine)],
                "cos",
                false,
            )),
            height: 360,
        };
        Section {
            wide: false,
            collapsed: None,
            heading: "Anisotropy and rogue dimensions".into(),
            intro: format!(
                "How much token vectors point the same way (0: no preferred direction), and the {} dimensions that contribute most to it.",
                o.k
            ),
            notes: vec![],
            charts: vec![cos, shares_chart(o)],
            tables: vec![columns::table(
                "Mean cosine and rogue dimensions (share of the mean cosine)",
                COLUMNS,
                o,
                &o.labels,
            )],
        }
    }

    fn compare(
        a: &AnisotropyResult,
        b: &AnisotropyResult,
        c: &mut Comparer,
    ) -> Result<(), Mismatch> {
        Self::compare_columns(a, b, c)?;
        c.ranked(
            "rogue_contribution",
            &a.labels,
            &a.rogue_dims,
            &b.rogue_dims,
            |d| d.contribution,
        );
        Ok(())
    }
}

/// Each hidden state's mean cosine split into its rogue dimensions' shares: one stacked
/// bar per hidden state, one segment per rank.
fn shares_chart(o: &AnisotropyResult) -> ChartSpec {
    let mut chart = per_layer_frame(
        "Share of the mean cosine from the rogue dimensions",
        "stacked by rank",
        &o.labels,
        "share",
        false,
    )
    .tooltip(Tooltip::new().trigger(Trigger::Item).formatter("{a}: {c}"));
    for rank in 0..o.k {
        let data: Vec<charming::datatype::DataPoint> = o
            .rogue_dims
            .iter()
            .map(|dims| match dims.get(rank).and_then(|d| d.share) {
                Some(s) => charming::datatype::DataPoint::from(r(s)),
                None => charming::datatype::DataPoint::from("-"),
            })
            .collect();
        chart = chart.series(
            Bar::new()
                .name(format!("rank {}", rank + 1))
                .stack("share")
                .data(data),
        );
    }
    ChartSpec {
        title: "anisotropy-rogue-shares".into(),
        option: option(chart),
        height: 360,
    }
}
