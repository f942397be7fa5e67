//! `attention`: per layer and head, where attention goes, computed inside strata's own
//! attention kernel from the probabilities the forward uses, without storing them:
//! - the mass on the first position, and which heads are attention sinks (Xiao et al.
//!   2023; Gu et al., "When Attention Sink Emerges", ICLR 2025, whose ε = 0.3 is the
//!   default threshold);
//! - the entropy of each query's distribution, the mean attention distance, and the
//!   previous-token and self masses (the classic previous-token and self heads);
//! - the key positions that receive the most attention over a text.
//!
//! Sums are kept on a fixed-point grid and counts as integers, so any split of the texts
//! merges to the same bits. Sliding windows, soft-capping and grouped-query attention are
//! in the probabilities already, as the forward computes them. In an encoder (BERT) every
//! query sees every key: the first position is `[CLS]`, and the distance is `|q − k|`
//! both ways (for a decoder `k ≤ q`, so it is `q − k`).

use crate::analyses::axes::{Axes, Axis};
use serde::{Deserialize, Serialize};

use super::kind::{
    Analysis, Check, Context, KindError, Medium, Scalars, Section, Setup, TextActivations,
};
use super::top::{keep_top, Ranked};
use crate::charts::{grid_heatmap, option, per_layer_lines, ChartSpec, Grid2};
use crate::compare::rules::{Comparer, Mismatch};
use crate::model::capture::HeadStats;
use crate::model::Site;
use crate::spec::error::SpecError;
use crate::stats::gram::Fixed;
use crate::view::{fmt_num, Table};

/// `{kind: attention, threshold: 0.3, k: 5, exclude_first_query: false}` over the blocks
/// the spec's `layers` select (hidden state `l` selects block `l`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Attention {
    /// A head is an attention sink when its mean mass on the first position exceeds this
    /// (in (0, 1); default 0.3, Gu et al.'s ε).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// A head is a previous-token head when its mean mass on the previous position
    /// exceeds this (in (0, 1); default 0.5).
    #[serde(default = "default_prev_threshold")]
    pub prev_threshold: f64,
    /// Key positions kept per head: those receiving the most attention (default 5).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Leave each text's first position out as a query (it still counts as a key).
    /// Every `attention` analysis of a spec must agree on it. Default false.
    #[serde(default)]
    pub exclude_first_query: bool,
}

fn default_threshold() -> f64 {
    0.3
}

fn default_prev_threshold() -> f64 {
    0.5
}

fn default_k() -> usize {
    5
}

/// The per-head sums, in this order on the fixed-point grid.
const SUMS: usize = 5;
const FIRST: usize = 0;
const ENTROPY: usize = 1;
const DISTANCE: usize = 2;
const PREV: usize = 3;
const SELF: usize = 4;

/// A key position of one text and the attention it received from the text's queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Received {
    /// `Σ_q A[q, k]` over the text's counted queries.
    pub mass: f64,
    /// Global index of the text (ties break by it, then by position).
    pub text_index: usize,
    /// Text id.
    pub text: String,
    /// Key position in the text (0-based).
    pub position: usize,
    /// The token, decoded.
    pub token: String,
}

impl Ranked for Received {
    fn before(&self, o: &Self) -> std::cmp::Ordering {
        o.mass
            .total_cmp(&self.mass)
            .then((self.text_index, self.position).cmp(&(o.text_index, o.position)))
    }
}

/// Attention sums so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionState {
    /// The parameters.
    pub threshold: f64,
    /// Previous-token threshold.
    pub prev_threshold: f64,
    /// Positions kept per head.
    pub k: usize,
    /// Whether position 0 is left out as a query.
    pub exclude_first_query: bool,
    /// The blocks measured.
    pub layers: Vec<usize>,
    /// Query heads per block.
    pub n_heads: usize,
    /// Per (block, head): queries counted, and queries with a previous position.
    pub queries: Vec<[u64; 2]>,
    /// Per (block, head), [`SUMS`] sums on the fixed-point grid.
    pub sums: Fixed,
    /// Per (block, head): the `k` positions that received the most.
    pub top: Vec<Vec<Received>>,
}

/// Attention per block and head. Every `[block][head]` list has one row per entry of
/// `layers`, one value per head; `null` where no query was counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttentionResult {
    /// Block labels (`attn.0`, ...).
    pub labels: Vec<String>,
    /// Query heads per block.
    pub n_heads: usize,
    /// The sink threshold.
    pub threshold: f64,
    /// The previous-token threshold.
    pub prev_threshold: f64,
    /// Whether position 0 was left out as a query.
    pub exclude_first_query: bool,
    /// Queries counted per block (every head counts the same).
    pub queries: Vec<u64>,
    /// Mean attention probability on position 0.
    pub first_token_mass: Vec<Vec<Option<f64>>>,
    /// Whether `first_token_mass > threshold`.
    pub sink: Vec<Vec<bool>>,
    /// Per block: the fraction of its heads that are sinks.
    pub sink_rate: Vec<f64>,
    /// The fraction of all heads of the measured blocks that are sinks.
    pub model_sink_rate: f64,
    /// Mean entropy of a query's attention distribution, in nats.
    pub entropy: Vec<Vec<Option<f64>>>,
    /// Mean attention distance `Σ_k A[q, k] |q − k|`, in positions.
    pub distance: Vec<Vec<Option<f64>>>,
    /// Mean mass on the previous position, over queries that have one.
    pub prev_token_mass: Vec<Vec<Option<f64>>>,
    /// Mean mass on the query's own position.
    pub self_mass: Vec<Vec<Option<f64>>>,
    /// Per block and head, the positions that received the most attention in a text.
    pub max_positions: Vec<Vec<Vec<Received>>>,
}

impl AttentionState {
    fn head(&self, l: usize, h: usize) -> usize {
        l * self.n_heads + h
    }

    /// The mean of sum `which` of every head of block `l` (`None` per head without queries).
    fn means(&self, l: usize, which: usize) -> Vec<Option<f64>> {
        (0..self.n_heads)
            .map(|h| {
                let i = self.head(l, h);
                let n = self.queries[i][usize::from(which == PREV)];
                (n > 0).then(|| self.sums.get(i * SUMS + which) / n as f64)
            })
            .collect()
    }
}

/// The `k` positions of one text that received the most, in [`Received::before`] order.
fn text_top(t: &TextActivations, stats: &HeadStats, k: usize) -> Vec<Received> {
    let mut order: Vec<usize> = (0..stats.received.len()).collect();
    order.sort_by(|&a, &b| {
        stats.received[b]
            .total_cmp(&stats.received[a])
            .then(a.cmp(&b))
    });
    order
        .into_iter()
        .take(k)
        .map(|p| Received {
            mass: stats.received[p],
            text_index: t.index,
            text: t.id.to_string(),
            position: p,
            token: t.tokens.get(p).cloned().unwrap_or_default(),
        })
        .collect()
}

/// A rate as a percentage with one decimal.
fn percent(rate: f64) -> String {
    format!("{:.1}%", 100.0 * rate)
}

impl Analysis for Attention {
    const KIND: &'static str = "attention";
    const AXES: Axes = Axes {
        label_is_block: true,
        paths: &[
            ("entropy", &[Axis::Head]),
            ("distance", &[Axis::Head]),
            ("first_token_mass", &[Axis::Head]),
            ("prev_token_mass", &[Axis::Head]),
            ("self_mass", &[Axis::Head]),
            ("sink", &[Axis::Head]),
            ("max_positions", &[Axis::Head]),
        ],
    };
    const SITE: Option<Site> = None;
    type State = AttentionState;
    type Output = AttentionResult;

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        at.fraction("threshold", self.threshold, "a mass", 0.3)?;
        at.fraction("prev_threshold", self.prev_threshold, "a mass", 0.3)?;
        if self.k == 0 {
            return Err(at.invalid("k", 0, "keep at least 1 position per head"));
        }
        Ok(())
    }

    fn start(&self, at: &Setup) -> Result<AttentionState, SpecError> {
        let layers = Site::blocks(at.selected, at.info.n_layers);
        if layers.is_empty() {
            let hint = format!("add an index below {}", at.info.n_layers);
            return Err(at.no_blocks("blocks", &hint));
        }
        let heads = layers.len() * at.info.n_heads;
        Ok(AttentionState {
            threshold: self.threshold,
            prev_threshold: self.prev_threshold,
            k: self.k,
            exclude_first_query: self.exclude_first_query,
            n_heads: at.info.n_heads,
            queries: vec![[0, 0]; heads],
            sums: Fixed::zeros(heads * SUMS),
            top: vec![Vec::new(); heads],
            layers,
        })
    }

    fn layers(_: &AttentionState) -> Vec<usize> {
        Vec::new()
    }

    fn attention_from(s: &AttentionState) -> Option<usize> {
        Some(usize::from(s.exclude_first_query))
    }

    fn observe(s: &mut AttentionState, t: &TextActivations) {
        let mut sums = vec![0f64; s.sums.raw.len()];
        for (li, &l) in s.layers.iter().enumerate() {
            let Some(heads) = t.attention.get(l) else {
                continue;
            };
            for (h, head) in heads.iter().enumerate().take(s.n_heads) {
                let (i, st) = (li * s.n_heads + h, &head.stats);
                s.queries[i][0] += st.queries;
                s.queries[i][1] += st.prev_queries;
                let at = &mut sums[i * SUMS..(i + 1) * SUMS];
                at[FIRST] = st.first;
                at[ENTROPY] = st.entropy;
                at[DISTANCE] = st.distance;
                at[PREV] = st.prev;
                at[SELF] = st.self_mass;
                if st.queries > 0 {
                    keep_top(&mut s.top[i], text_top(t, st, s.k), s.k);
                }
            }
        }
        s.sums.add(&sums);
    }

    fn merge(s: &mut AttentionState, r: AttentionState) -> Result<(), KindError> {
        if (s.layers != r.layers) || s.n_heads != r.n_heads || s.k != r.k {
            return Err(KindError::Mismatch(
                "the states measure other blocks, heads or k".into(),
            ));
        }
        for (a, b) in s.queries.iter_mut().zip(&r.queries) {
            a[0] += b[0];
            a[1] += b[1];
        }
        s.sums.merge(&r.sums);
        for (a, b) in s.top.iter_mut().zip(r.top) {
            keep_top(a, b, s.k);
        }
        Ok(())
    }

    fn finish(s: AttentionState) -> Result<AttentionResult, KindError> {
        if s.sums.overflow {
            return Err(KindError::NoResult(
                "an attention sum left the fixed-point range".into(),
            ));
        }
        let per_block = |which: usize| -> Vec<Vec<Option<f64>>> {
            (0..s.layers.len()).map(|l| s.means(l, which)).collect()
        };
        let first_token_mass = per_block(FIRST);
        let sink: Vec<Vec<bool>> = first_token_mass
            .iter()
            .map(|row| {
                row.iter()
                    .map(|m| m.is_some_and(|m| m > s.threshold))
                    .collect()
            })
            .collect();
        let rate =
            |row: &[bool]| row.iter().filter(|&&x| x).count() as f64 / row.len().max(1) as f64;
        let all: Vec<bool> = sink.iter().flatten().copied().collect();
        let queries = (0..s.layers.len())
            .map(|l| s.queries[s.head(l, 0)][0])
            .collect();
        let mut top = s.top.clone().into_iter();
        Ok(AttentionResult {
            labels: s.layers.iter().map(|l| format!("attn.{l}")).collect(),
            n_heads: s.n_heads,
            threshold: s.threshold,
            prev_threshold: s.prev_threshold,
            exclude_first_query: s.exclude_first_query,
            queries,
            sink_rate: sink.iter().map(|row| rate(row)).collect(),
            model_sink_rate: rate(&all),
            sink,
            first_token_mass,
            entropy: per_block(ENTROPY),
            distance: per_block(DISTANCE),
            prev_token_mass: per_block(PREV),
            self_mass: per_block(SELF),
            max_positions: (0..s.layers.len())
                .map(|_| top.by_ref().take(s.n_heads).collect())
                .collect(),
        })
    }

    fn validate(o: &AttentionResult, _: &Context) -> Result<(), KindError> {
        use super::kind::expect_len;
        let n = o.labels.len();
        expect_len("queries (one per block)", o.queries.len(), n)?;
        expect_len("sink_rate (one per block)", o.sink_rate.len(), n)?;
        for (name, rows) in o.statistics() {
            expect_len(&format!("{name} (one row per block)"), rows.len(), n)?;
            for (l, row) in rows.iter().enumerate() {
                expect_len(&format!("{name}[{l}] (one per head)"), row.len(), o.n_heads)?;
            }
        }
        expect_len("sink (one row per block)", o.sink.len(), n)?;
        expect_len(
            "max_positions (one row per block)",
            o.max_positions.len(),
            n,
        )?;
        for l in 0..n {
            expect_len(
                &format!("sink[{l}] (one per head)"),
                o.sink[l].len(),
                o.n_heads,
            )?;
            expect_len(
                &format!("max_positions[{l}] (one per head)"),
                o.max_positions[l].len(),
                o.n_heads,
            )?;
        }
        Ok(())
    }

    fn section(o: &AttentionResult, _: &Context, _: Medium) -> Section {
        let mut charts: Vec<ChartSpec> = o
            .statistics()
            .into_iter()
            .map(|(name, rows)| o.heatmap(name, rows))
            .collect();
        let rates: Vec<Option<f64>> = o.sink_rate.iter().map(|&r| Some(r)).collect();
        charts.insert(
            0,
            ChartSpec {
                title: "Sink rate per block".into(),
                option: option(per_layer_lines(
                    "Sink rate per block",
                    &format!("heads with first_token_mass > {}", fmt_num(o.threshold)),
                    &o.labels,
                    &[("sink rate", &rates)],
                    "sink rate",
                    false,
                )),
                height: 320,
            },
        );
        Section {
            heading: "Attention: sinks, entropy and distance".into(),
            intro: format!(
                "Per block and head, over {} queries a block: the mean attention on position 0, the entropy (nats) and distance (positions) of each query's distribution, and the mass on the previous and on the query's own position. {} of all heads are sinks.",
                o.queries.first().copied().unwrap_or(0),
                percent(o.model_sink_rate)
            ),
            notes: o.notes(),
            charts,
            tables: vec![o.head_table(true), o.head_table(false)],
            wide: true,
            collapsed: None,
        }
    }

    fn compare(a: &AttentionResult, b: &AttentionResult, c: &mut Comparer) -> Result<(), Mismatch> {
        c.same("blocks", &a.labels, &b.labels)?;
        c.same("heads", &a.n_heads, &b.n_heads)?;
        for ((name, ra), (_, rb)) in a.statistics().into_iter().zip(b.statistics()) {
            let mut m = c.metric(name);
            for (l, (xa, xb)) in ra.iter().zip(rb).enumerate() {
                for (h, (va, vb)) in xa.iter().zip(xb).enumerate() {
                    m.opt(*va, *vb, || format!("{} head {h}", a.labels[l]));
                }
            }
            c.push(m);
        }
        let mut m = c.metric("sink_rate");
        for (l, (va, vb)) in a.sink_rate.iter().zip(&b.sink_rate).enumerate() {
            m.add(*va, *vb, || a.labels[l].clone());
        }
        c.push(m);
        Ok(())
    }

    fn scalars(o: &AttentionResult) -> Vec<Scalars> {
        let mean = |rows: &[Vec<Option<f64>>]| -> Vec<Option<f64>> {
            rows.iter()
                .map(|row| {
                    let v: Vec<f64> = row.iter().flatten().copied().collect();
                    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                })
                .collect()
        };
        let mut out = vec![Scalars::new(
            "sink_rate",
            &o.labels,
            o.sink_rate.iter().map(|&r| Some(r)).collect(),
        )];
        for (name, rows) in o.statistics() {
            out.push(Scalars::new(&format!("mean_{name}"), &o.labels, mean(rows)));
        }
        out
    }
}

impl AttentionResult {
    /// The per-head statistics, by name.
    fn statistics(&self) -> [(&'static str, &Vec<Vec<Option<f64>>>); 5] {
        [
            ("first_token_mass", &self.first_token_mass),
            ("entropy", &self.entropy),
            ("distance", &self.distance),
            ("prev_token_mass", &self.prev_token_mass),
            ("self_mass", &self.self_mass),
        ]
    }

    /// A block × head heatmap of one statistic.
    fn heatmap(&self, name: &str, rows: &[Vec<Option<f64>>]) -> ChartSpec {
        let heads: Vec<String> = (0..self.n_heads).map(|h| h.to_string()).collect();
        let values = rows.iter().flatten().flatten().copied();
        let hi = values.fold(0f64, f64::max);
        let (lo, hi) = match name {
            "entropy" | "distance" => (0.0, hi.max(1e-9)),
            _ => (0.0, 1.0),
        };
        let axes = Grid2 {
            x: &heads,
            x_name: "Head",
            y: &self.labels,
            y_name: "Block",
        };
        let cell = |l: usize, h: usize| rows[l][h];
        let mut chart = grid_heatmap(
            name,
            "per block and head",
            &axes,
            &cell,
            (lo, hi),
            &["#0d0887", "#cc4778", "#f0f921"],
        );
        chart.height = chart.height.max(120 + 18 * self.labels.len() as u32);
        chart
    }

    /// Sink heads (by first-token mass) or previous-token heads.
    fn head_table(&self, sinks: bool) -> Table {
        let (title, values, cut) = if sinks {
            ("Sink heads", &self.first_token_mass, self.threshold)
        } else {
            (
                "Previous-token heads",
                &self.prev_token_mass,
                self.prev_threshold,
            )
        };
        let mut rows: Vec<(f64, usize, usize)> = Vec::new();
        for (l, row) in values.iter().enumerate() {
            for (h, v) in row.iter().enumerate() {
                if let Some(v) = v.filter(|&v| v > cut) {
                    rows.push((v, l, h));
                }
            }
        }
        rows.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        Table {
            caption: format!("{title}: mean mass above {}, largest first", fmt_num(cut)),
            headers: ["block", "head", "mass", "entropy", "top position"]
                .map(String::from)
                .to_vec(),
            rows: rows
                .iter()
                .map(|&(v, l, h)| self.head_row(v, l, h))
                .collect(),
            text_columns: vec![0, 4],
        }
    }

    fn head_row(&self, v: f64, l: usize, h: usize) -> Vec<String> {
        let top = self.max_positions[l][h]
            .first()
            .map_or("—".to_string(), |r| {
                format!(
                    "{} #{} {:?} ({})",
                    r.text,
                    r.position,
                    r.token,
                    fmt_num(r.mass)
                )
            });
        vec![
            self.labels[l].clone(),
            h.to_string(),
            fmt_num(v),
            self.entropy[l][h].map_or("—".into(), fmt_num),
            top,
        ]
    }

    /// Where sinks first appear, and what the first position means here.
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(l) = self.sink_rate.iter().position(|&r| r > 0.0) {
            notes.push(format!(
                "The first block with a sink head is {} ({} of its heads).",
                self.labels[l],
                percent(self.sink_rate[l])
            ));
        } else {
            notes.push("No head is a sink at this threshold.".into());
        }
        if self.exclude_first_query {
            notes.push("Position 0 was left out as a query; it still counts as a key.".into());
        }
        notes
    }
}
