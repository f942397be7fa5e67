//! `logit_lens`: what each hidden state already predicts, read through the model's own
//! head (nostalgebraist, "interpreting GPT: the logit lens", 2020): the logits of hidden
//! state `i` are `W_U final_norm(r_i)`, with `r_i = hidden_states[i]` for `i < L` and, for
//! the last, the last block's output before the final norm, so the last entry is the
//! model's own logits (transformers' `hidden_states[L]` already has the norm applied).
//!
//! Over every analysed position that has a next token, per hidden state: the
//! cross-entropy against the next token, `KL(p_L || p_i)`, how often the top-1 token is
//! the model's, and the entropy. Logits come from gemm in f32 as transformers computes
//! them, `BLOCK` positions at a time (never a whole text's `[tokens, vocab]`), and every
//! softmax sum is taken in f64. Each text's sums are merged in a tree fixed by text index.
//! For one text, the token x hidden state grid of top-1 predictions is kept.

use charming::component::{Axis, Grid, VisualMap, VisualMapChannel};
use charming::element::{AxisType, Label, NameLocation, Orient, Tooltip, Trigger};
use charming::series::Heatmap;
use charming::Chart;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::columns::{self, Column, Values};
use super::kind::{Analysis, Check, Context, Medium, Section, Setup, TextActivations};
use crate::charts::{option, per_layer_lines, r, title, ChartSpec, VIRIDIS};
use crate::compare::rules::{Comparer, Mismatch};

use crate::spec::error::SpecError;
use crate::spec::layers::LayerRef;
use crate::stats::{Merge, Tree};

/// Rows (positions x hidden states) whose logits are computed in one product: 512 x
/// 50,257 f32 is 103 MB. One product for every hidden state of a block of positions packs
/// the unembedding once, not once per hidden state.
const ROWS_PER_PRODUCT: usize = 512;

/// `{kind: logit_lens, layers: [0, 6, 12], text: ID, positions: 32}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogitLens {
    /// The hidden states to read (default: the spec's `layers`); the last hidden state
    /// reads the last block's output before the final norm. `pre_final_norm` itself is
    /// not a separate lens position: name the last hidden state instead.
    #[serde(default)]
    pub layers: Option<Vec<LayerRef>>,
    /// The text drawn as the token x hidden state grid. Default: the first text.
    #[serde(default)]
    pub text: Option<String>,
    /// How many of that text's first analysed positions the grid shows (1 to 256).
    /// Default 32.
    #[serde(default = "default_positions")]
    pub positions: usize,
}

fn default_positions() -> usize {
    32
}

/// Sums of the lens metrics over positions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LensSums {
    /// Positions with a next token.
    pub positions: u64,
    /// Sum of `-log p_i(next token)`, nats.
    pub cross_entropy: f64,
    /// Sum of `KL(p_L || p_i)`, nats.
    pub kl_to_final: f64,
    /// Positions whose top-1 token is the final hidden state's.
    pub top1_agree: u64,
    /// Sum of the entropy of `p_i`, nats.
    pub entropy: f64,
}

impl Merge for LensSums {
    fn merge(&mut self, r: &Self) {
        self.positions += r.positions;
        self.cross_entropy += r.cross_entropy;
        self.kl_to_final += r.kl_to_final;
        self.top1_agree += r.top1_agree;
        self.entropy += r.entropy;
    }
}

/// One cell of the grid: the top-1 token a hidden state predicts at a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prediction {
    /// The token id.
    pub id: u32,
    /// The token, decoded.
    pub token: String,
    /// Its probability.
    pub prob: f64,
}

/// The top-1 predictions of every lens hidden state over one text's first positions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LensGrid {
    /// The text's id.
    pub text: String,
    /// Token positions shown.
    pub token_index: Vec<usize>,
    /// The tokens at those positions.
    pub tokens: Vec<String>,
    /// The token that follows each position (`null` after the last).
    pub next: Vec<Option<String>>,
    /// `[label][position]`: the top-1 prediction.
    pub top1: Vec<Vec<Prediction>>,
}

/// Lens sums so far, per lens hidden state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogitLensState {
    /// Hidden-state indices read, per label (the last label reads `pre_final_norm`).
    pub layers: Vec<usize>,
    /// The labels.
    pub labels: Vec<String>,
    /// The index the final logits come from (`pre_final_norm`).
    pub final_layer: usize,
    /// The grid's text (`None`: the first text).
    pub text: Option<String>,
    /// Grid positions.
    pub positions: usize,
    /// Per label, per-text sums merged by text index.
    pub trees: Vec<Tree<LensSums>>,
    /// The grid, once its text was seen.
    pub grid: Option<LensGrid>,
}

/// What each hidden state predicts. Every per-label list has one entry per label; `null`
/// with no position that has a next token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogitLensResult {
    /// Hidden-state labels; the last model label means the model's own logits.
    pub labels: Vec<String>,
    /// Positions with a next token.
    pub positions: u64,
    /// Mean cross-entropy against the next token, nats.
    pub cross_entropy: Vec<Option<f64>>,
    /// Mean `KL(p_L || p_i)`, nats.
    pub kl_to_final: Vec<Option<f64>>,
    /// Share of positions whose top-1 token is the model's.
    pub top1_agreement: Vec<Option<f64>>,
    /// Mean entropy of the predicted distribution, nats.
    pub entropy: Vec<Option<f64>>,
    /// The top-1 grid of one text.
    pub grid: LensGrid,
}

/// `log sum exp` of a row of logits and its first largest entry, in f64.
fn log_sum_exp(z: &[f32]) -> (f64, usize) {
    let (mut arg, mut m) = (0, f32::NEG_INFINITY);
    for (j, &v) in z.iter().enumerate() {
        if v > m {
            (arg, m) = (j, v);
        }
    }
    let m = m as f64;
    let s: f64 = z.iter().map(|&v| (v as f64 - m).exp()).sum();
    (m + s.ln(), arg)
}

/// The final hidden state's distribution at one position.
struct Reference {
    lse: f64,
    arg: usize,
    /// `p_L`, f64.
    p: Vec<f64>,
    /// `sum of p_L z_L`.
    expected: f64,
}

impl Reference {
    fn of(z: &[f32]) -> Self {
        let (lse, arg) = log_sum_exp(z);
        let p: Vec<f64> = z.iter().map(|&v| (v as f64 - lse).exp()).collect();
        let mut expected = 0.0;
        for (&v, &pf) in z.iter().zip(&p) {
            expected += pf * v as f64;
        }
        Self {
            lse,
            arg,
            p,
            expected,
        }
    }
}

/// What one hidden state predicts at one position.
struct RowStats {
    /// `-log p_i(next)`, when there is a next token.
    cross_entropy: Option<f64>,
    kl_to_final: f64,
    agrees: bool,
    entropy: f64,
    arg: usize,
    prob: f64,
}

/// One position's metrics for logits `z` against the final distribution.
fn row_stats(z: &[f32], reference: &Reference, next: Option<usize>) -> RowStats {
    let (lse, arg) = log_sum_exp(z);
    let mut expected = 0.0; // sum of p_i z_i
    let mut cross = 0.0; // sum of p_L z_i
    for (&v, &pf) in z.iter().zip(&reference.p) {
        let v = v as f64;
        expected += (v - lse).exp() * v;
        cross += pf * v;
    }
    RowStats {
        cross_entropy: next.map(|j| lse - z[j] as f64),
        // KL(p_L || p_i) = sum p_L (z_L - lse_L) - sum p_L (z_i - lse_i), grouped so
        // that it is exactly 0 for the final hidden state itself.
        kl_to_final: (reference.expected - cross) - (reference.lse - lse),
        agrees: arg == reference.arg,
        entropy: lse - expected,
        arg,
        prob: (z[arg] as f64 - lse).exp(),
    }
}

impl LogitLensState {
    /// An empty state over lens hidden states `layers` (indices; the final one reads
    /// `final_layer`).
    pub fn new(
        layers: Vec<usize>,
        labels: Vec<String>,
        final_layer: usize,
        text: Option<String>,
        positions: usize,
    ) -> Self {
        Self {
            trees: vec![Tree::default(); layers.len()],
            layers,
            labels,
            final_layer,
            text,
            positions,
            grid: None,
        }
    }

    fn wants_grid(&self, t: &TextActivations) -> bool {
        self.grid.is_none()
            && match &self.text {
                Some(id) => id == t.id,
                None => t.rows() > 0,
            }
    }
}

/// The per-hidden-state columns of a logit lens result.
const COLUMNS: &[Column<LogitLensResult>] = &[
    Column::new("cross_entropy", "cross-entropy (nats)", |r| {
        Values::Stat(r.cross_entropy.clone())
    }),
    Column::new("kl_to_final", "KL to final (nats)", |r| {
        Values::Stat(r.kl_to_final.clone())
    }),
    Column::new("top1_agreement", "top-1 agreement (%)", |r: &LogitLensResult| {
        Values::Stat(r.top1_agreement.clone())
    })
    .percent(),
    Column::new("entropy", "entropy (nats)", |r| Values::Stat(r.entropy.clone())),
];

impl Analysis for LogitLens {
    const KIND: &'static str = "logit_lens";
    type State = LogitLensState;
    type Output = LogitLensResult;

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        if self.positions == 0 || self.positions > 256 {
            return Err(at.invalid(
                "positions",
                self.positions,
                "show 1 to 256 positions of the grid's text",
            ));
        }
        at.text_id(self.text.as_ref())
    }

    fn start(&self, at: &Setup) -> Result<LogitLensState, SpecError> {
        let invalid = |field: &str, value: String, fix: String| SpecError::Invalid {
            path: at.path.to_path_buf(),
            field: format!("analyses[{}].{field}", at.index),
            value,
            fix,
        };
        if !at.info.lm_head {
            return Err(invalid(
                "kind",
                "logit_lens".into(),
                format!(
                    "{} has no language-model head to read hidden states through (an encoder, or a checkpoint saved without lm_head.weight): use a decoder with its head",
                    at.info.architecture
                ),
            ));
        }
        if at.site == crate::model::Site::MlpAct {
            return Err(invalid(
                "site",
                at.site.to_string(),
                "the lens reads vectors of the residual stream's width through the final norm: use hidden, attn_out or mlp_out".into(),
            ));
        }
        let selected = match &self.layers {
            Some(refs) => at.layers("layers", refs)?,
            None => at.selected.to_vec(),
        };
        let last = at.info.n_layers; // hidden_states[L]
        let final_layer = last + 1; // pre_final_norm
        if selected.contains(&final_layer) {
            return Err(invalid(
                "layers",
                crate::model::PRE_FINAL_NORM.into(),
                format!(
                    "the lens reads the last hidden state ({}) from pre_final_norm already: select {} instead",
                    at.labels[last], at.labels[last]
                ),
            ));
        }
        let labels = at.names(&selected);
        let layers = selected
            .into_iter()
            .map(|l| if l == last { final_layer } else { l })
            .collect();
        Ok(LogitLensState::new(
            layers,
            labels,
            final_layer,
            self.text.clone(),
            self.positions,
        ))
    }

    fn layers(s: &LogitLensState) -> Vec<usize> {
        let mut l = s.layers.clone();
        l.push(s.final_layer);
        l
    }

    fn observe(s: &mut LogitLensState, t: &TextActivations) {
        let Some(lens) = t.lens else { return };
        let (rows, first) = (t.rows(), t.first_token);
        // Rows with a next token; the grid also shows the last position.
        let predicted = (t.token_ids.len().saturating_sub(first + 1)).min(rows);
        let wants_grid = s.wants_grid(t);
        let grid_rows = if wants_grid { s.positions.min(rows) } else { 0 };
        let mut sums = vec![LensSums::default(); s.layers.len()];
        let mut grid: Vec<Vec<Prediction>> = vec![vec![]; s.layers.len()];
        // The final logits first, then each other hidden state's.
        let stacked: Vec<usize> = std::iter::once(s.final_layer)
            .chain(s.layers.iter().copied().filter(|&l| l != s.final_layer))
            .collect();
        let block = (ROWS_PER_PRODUCT / stacked.len()).max(1);
        let end = predicted.max(grid_rows);
        for r0 in (0..end).step_by(block) {
            let r1 = (r0 + block).min(end);
            let logits = stacked_logits(lens.readout, t, &stacked, r0..r1);
            let (n, vocab) = (r1 - r0, lens.readout.vocab());
            let refs: Vec<Reference> = logits[..n * vocab]
                .par_chunks(vocab)
                .map(Reference::of)
                .collect();
            for (li, layer) in s.layers.iter().enumerate() {
                let slot = stacked.iter().position(|l| l == layer).unwrap_or(0);
                let z = &logits[slot * n * vocab..(slot + 1) * n * vocab];
                let stats: Vec<RowStats> = z
                    .par_chunks(vocab)
                    .enumerate()
                    .map(|(k, zr)| {
                        let row = r0 + k;
                        let next = (row < predicted)
                            .then(|| (t.token_ids[first + row + 1] as usize).min(vocab - 1));
                        row_stats(zr, &refs[k], next)
                    })
                    .collect();
                for (k, st) in stats.iter().enumerate() {
                    if r0 + k < predicted {
                        let x = &mut sums[li];
                        x.positions += 1;
                        x.cross_entropy += st.cross_entropy.unwrap_or(0.0);
                        x.kl_to_final += st.kl_to_final;
                        x.top1_agree += u64::from(st.agrees);
                        x.entropy += st.entropy;
                    }
                    if r0 + k < grid_rows {
                        grid[li].push(Prediction {
                            id: st.arg as u32,
                            token: lens.tokenizer.token_strings(&[st.arg as u32]).remove(0),
                            prob: st.prob,
                        });
                    }
                }
            }
        }
        for (tree, sum) in s.trees.iter_mut().zip(sums) {
            tree.push(t.index as u64, sum);
        }
        if wants_grid {
            s.grid = Some(grid_of(t, grid_rows, grid));
        }
    }

    fn merge(s: &mut LogitLensState, right: LogitLensState) -> Result<(), String> {
        if (&s.layers, &s.text, s.positions) != (&right.layers, &right.text, right.positions)
            || s.trees.len() != right.trees.len()
        {
            return Err("logit lenses of different hidden states or texts".into());
        }
        for (a, b) in s.trees.iter_mut().zip(right.trees) {
            a.join(b)?;
        }
        if s.grid.is_none() {
            s.grid = right.grid;
        }
        Ok(())
    }

    fn finish(s: LogitLensState) -> Result<LogitLensResult, String> {
        if let (None, Some(id)) = (&s.grid, &s.text) {
            return Err(format!(
                "`text` = {id:?}: no text has this id; name one of the texts"
            ));
        }
        let sums: Vec<LensSums> = s
            .trees
            .into_iter()
            .map(|t| t.fold().unwrap_or_default())
            .collect();
        let mean = |f: fn(&LensSums) -> f64| -> Vec<Option<f64>> {
            sums.iter()
                .map(|x| (x.positions > 0).then(|| f(x) / x.positions as f64))
                .collect()
        };
        Ok(LogitLensResult {
            positions: sums.first().map_or(0, |x| x.positions),
            cross_entropy: mean(|x| x.cross_entropy),
            kl_to_final: mean(|x| x.kl_to_final),
            top1_agreement: mean(|x| x.top1_agree as f64),
            entropy: mean(|x| x.entropy),
            labels: s.labels,
            grid: s.grid.unwrap_or_default(),
        })
    }

    fn validate(o: &LogitLensResult, cx: &Context) -> Result<(), String> {
        super::kind::expect_known_labels(&o.labels, cx.labels)?;
        let l = &o.labels;
        columns::validate(COLUMNS, o, l)?;
        let g = &o.grid;
        if !g.top1.is_empty() {
            super::kind::expect_per_label("grid.top1", &g.top1, l)?;
        }
        let n = g.token_index.len();
        super::kind::expect_len("grid.tokens", g.tokens.len(), n)?;
        super::kind::expect_len("grid.next", g.next.len(), n)?;
        for (i, row) in g.top1.iter().enumerate() {
            super::kind::expect_len(&format!("grid.top1[{i}]"), row.len(), n)?;
        }
        Ok(())
    }

    fn section(o: &LogitLensResult, _: &Context, _: Medium) -> Section {
        let curves = |name: &str, heading: &str, series: &[(&str, &[Option<f64>])], y: &str| {
            ChartSpec {
                title: name.into(),
                option: option(per_layer_lines(heading, "", &o.labels, series, y, false)),
                height: 360,
            }
        };
        let mut charts = vec![
            curves(
                "logit-lens-nats",
                "What each hidden state predicts, in nats",
                &[
                    ("cross-entropy (next token)", &o.cross_entropy),
                    ("KL to the final", &o.kl_to_final),
                    ("entropy", &o.entropy),
                ],
                "nats",
            ),
            curves(
                "logit-lens-top1",
                "Top-1 agreement with the model's prediction",
                &[("top-1 agreement", &o.top1_agreement)],
                "share",
            ),
        ];
        if !o.grid.top1.is_empty() && !o.grid.tokens.is_empty() {
            charts.push(grid_chart(o));
        }
        Section {
            wide: false,
            collapsed: None,
            heading: "Logit lens".into(),
            intro: format!(
                "Each hidden state read through the model's final norm and unembedding, over {} positions that have a next token; the last hidden state is the model's own prediction.",
                o.positions
            ),
            notes: vec![],
            charts,
            tables: vec![columns::table(
                "Logit lens, per hidden state (means over positions)",
                COLUMNS,
                o,
                &o.labels,
            )],
        }
    }

    fn scalars(out: &LogitLensResult) -> Vec<super::kind::Scalars> {
        columns::scalars(COLUMNS, out, &out.labels)
    }

    fn compare(
        a: &LogitLensResult,
        b: &LogitLensResult,
        c: &mut Comparer,
    ) -> Result<(), Mismatch> {
        c.same("hidden states", &a.labels, &b.labels)?;
        columns::compare(COLUMNS, a, b, &a.labels, c);
        Ok(())
    }
}

/// The logits of rows `range` of every hidden state in `stacked`, in one product:
/// `[stacked.len() * rows, vocab]`, hidden state by hidden state.
fn stacked_logits(
    readout: &dyn crate::model::Readout,
    t: &TextActivations,
    stacked: &[usize],
    range: std::ops::Range<usize>,
) -> Vec<f32> {
    let d = t.dim.max(1);
    let input: Vec<f32> = stacked
        .iter()
        .flat_map(|&l| &t.state(l)[range.start * d..range.end * d])
        .copied()
        .collect();
    let mut logits = vec![0.0; stacked.len() * range.len() * readout.vocab()];
    readout.logits(&input, &mut logits);
    logits
}

/// The grid of text `t`'s first `rows` analysed positions.
fn grid_of(t: &TextActivations, rows: usize, top1: Vec<Vec<Prediction>>) -> LensGrid {
    let first = t.first_token;
    LensGrid {
        text: t.id.to_string(),
        token_index: (first..first + rows).collect(),
        tokens: t.tokens[first..first + rows].to_vec(),
        next: (first..first + rows)
            .map(|p| t.tokens.get(p + 1).cloned())
            .collect(),
        top1,
    }
}

/// The classic picture: positions across, hidden states up, each cell the top-1 token
/// (its text) and its probability (its colour).
fn grid_chart(o: &LogitLensResult) -> ChartSpec {
    let g = &o.grid;
    let x: Vec<String> = g
        .token_index
        .iter()
        .zip(&g.tokens)
        .map(|(i, t)| format!("{i}: {}", t.escape_debug()))
        .collect();
    // Named cells ({value, name}), which charming's heatmap data cannot express: set on
    // the option's JSON below.
    let data: Vec<serde_json::Value> = g
        .top1
        .iter()
        .enumerate()
        .flat_map(|(li, row)| {
            row.iter().enumerate().map(move |(p, cell)| {
                serde_json::json!({
                    "value": [p, li, r(cell.prob)],
                    "name": cell.token.escape_debug().to_string(),
                })
            })
        })
        .collect();
    let chart = Chart::new()
        .title(title(
            &format!("Top-1 prediction per position, text {}", g.text),
            "cell: the token each hidden state predicts next; colour: its probability",
        ))
        .tooltip(Tooltip::new().trigger(Trigger::Item).formatter("{b}: {c}"))
        .grid(Grid::new().top(70).bottom(110).left(70).right(90))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name("Position: token")
                .name_location(NameLocation::Middle)
                .name_gap(90)
                .axis_label(charming::element::AxisLabel::new().rotate(60))
                .data(x),
        )
        .y_axis(Axis::new().type_(AxisType::Category).data(o.labels.clone()))
        .visual_map(
            VisualMap::new()
                .min(0)
                .max(1)
                .calculable(true)
                .orient(Orient::Vertical)
                .right(10)
                .top("middle")
                .in_range(VisualMapChannel::new().color(
                    VIRIDIS
                        .iter()
                        .map(|c| c.to_string().into())
                        .collect::<Vec<charming::element::Color>>(),
                )),
        )
        .series(
            Heatmap::new()
                .name("top-1")
                .label(Label::new().show(true).formatter("{b}").font_size(9)),
        );
    let mut option = option(chart);
    option["series"][0]["data"] = serde_json::Value::Array(data);
    ChartSpec {
        title: "logit-lens-grid".into(),
        option,
        height: (160 + 26 * o.labels.len()) as u32,
    }
}
