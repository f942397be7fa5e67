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
//!
//! With `lens: {tuned: ID}` the hidden states are read through a pretrained tuned lens
//! ([`crate::assets::tuned_lens`], read by the run's setup) instead, and with `side_by_side` through both.

use crate::analyses::scratch::Scratch;
use std::sync::Arc;

use charming::component::{Axis, Grid, VisualMap, VisualMapChannel};
use charming::element::{AxisType, Label, NameLocation, Orient, Tooltip, Trigger};
use charming::series::Heatmap;
use charming::Chart;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::columns::{self, Column, Values};
use super::kind::{
    Analysis, Check, Context, KindError, Lens, Medium, Section, Setup, TextActivations,
};
use crate::charts::{option, per_layer_lines, r, title, ChartSpec, VIRIDIS};
use crate::compare::rules::{Comparer, Mismatch};

use crate::assets::tuned_lens::Translators;
use crate::assets::{AssetRef, TunedLensSource};
use crate::spec::error::SpecError;
use crate::spec::layers::LayerRef;
use crate::stats::{Merge, Tree};

/// Rows (positions x hidden states) whose logits are computed in one product: 512 x
/// 50,257 f32 is 103 MB. One product for every hidden state of a block of positions packs
/// the unembedding once, not once per hidden state.
const ROWS_PER_PRODUCT: usize = 512;

/// `lens: {tuned: ID}`: read every hidden state but the last through a pretrained tuned
/// lens instead of the identity.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LensSpec {
    /// A folder holding the lens's `config.json` and `params.pt` (as `TunedLens.save`
    /// writes them), or the id a lens is published under in the tuned-lens repo on the
    /// Hub (`gpt2`, `EleutherAI/pythia-160m-deduped`: the files `lens/ID/config.json` and
    /// `lens/ID/params.pt` of the Space `AlignmentResearch/tuned-lens`, or of the repo
    /// `TUNED_LENS_REPO_ID` / `TUNED_LENS_REPO_TYPE` name, as in the tuned-lens package).
    pub tuned: String,
    /// Also read the plain logit lens and show it beside the tuned one (the head is then
    /// applied twice per position). Default false.
    #[serde(default)]
    pub side_by_side: bool,
}

/// `{kind: logit_lens, layers: [0, 6, 12], text: ID, positions: 32}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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
    #[schemars(range(min = 1, max = 256))]
    pub positions: usize,
    /// Read the hidden states through a pretrained tuned lens (`{tuned: ID}`) instead
    /// of the identity. Default: the plain logit lens.
    #[serde(default)]
    pub lens: Option<LensSpec>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// The tuned lens read (`None`: the logit lens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned: Option<Box<TunedLensSource>>,
    /// The plain logit lens read beside the tuned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beside: Option<Box<Beside>>,
    /// The tuned lens's translators (read at setup; a merged partial needs none).
    #[serde(skip)]
    pub translators: Option<Arc<Translators>>,
    /// The logits buffer, kept from text to text.
    #[serde(skip)]
    pub scratch: Scratch,
}

/// The plain logit lens's sums and grid, kept beside a tuned lens's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Beside {
    /// Per label, per-text sums merged by text index.
    pub trees: Vec<Tree<LensSums>>,
    /// The grid, once its text was seen.
    pub grid: Option<LensGrid>,
}

/// One lens's means per hidden state and its grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LensReading {
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

/// What each hidden state predicts. Every per-label list has one entry per label; `null`
/// with no position that has a next token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// The tuned lens these figures read through (absent: the logit lens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned: Option<Box<TunedLensSource>>,
    /// With `side_by_side`: the plain logit lens over the same positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_lens: Option<Box<LensReading>>,
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
            tuned: None,
            beside: None,
            translators: None,
            scratch: Scratch::default(),
        }
    }

    /// Reads through the tuned lens `spec` names (and, `side_by_side`, the logit lens
    /// too), once it is found and fits the model.
    fn use_tuned(&mut self, spec: &LensSpec, at: &Setup) -> Result<(), SpecError> {
        if at.site != crate::model::Site::Hidden {
            return Err(at.invalid(
                "site",
                at.site,
                "a tuned lens was trained on the residual stream's hidden states: use site hidden (the default)",
            ));
        }
        let lens = match at.assets.tuned_lens(&spec.tuned) {
            Some(Ok(lens)) => lens,
            Some(Err(e)) => return Err(at.invalid("lens.tuned", &spec.tuned, e.to_string())),
            None => {
                return Err(at.invalid(
                    "lens.tuned",
                    &spec.tuned,
                    "the run's setup did not read this lens: read it before the analyses start",
                ))
            }
        };
        self.translators = Some(lens.translators.clone());
        self.tuned = Some(Box::new(lens.source.clone()));
        if spec.side_by_side {
            self.beside = Some(Box::new(Beside {
                trees: vec![Tree::default(); self.layers.len()],
                grid: None,
            }));
        }
        Ok(())
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
    Column::new(
        "top1_agreement",
        "top-1 agreement (%)",
        |r: &LogitLensResult| Values::Stat(r.top1_agreement.clone()),
    )
    .percent(),
    Column::new("entropy", "entropy (nats)", |r| {
        Values::Stat(r.entropy.clone())
    }),
];

impl Analysis for LogitLens {
    const KIND: &'static str = "logit_lens";
    type State = LogitLensState;
    type Output = LogitLensResult;
    const COLUMNS: &'static [Column<LogitLensResult>] = COLUMNS;

    fn labels(o: &LogitLensResult) -> &[String] {
        &o.labels
    }

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

    fn needs(&self) -> Vec<AssetRef> {
        self.lens
            .iter()
            .map(|l| AssetRef::TunedLens(l.tuned.clone()))
            .collect()
    }

    fn start(&self, at: &Setup) -> Result<LogitLensState, SpecError> {
        if !at.info.lm_head {
            return Err(at.invalid(
                "kind",
                "logit_lens",
                format!(
                    "{} has no language-model head to read hidden states through (an encoder, or a checkpoint saved without lm_head.weight): use a decoder with its head",
                    at.info.architecture
                ),
            ));
        }
        if at.site == crate::model::Site::MlpAct {
            return Err(at.invalid(
                "site",
                at.site.to_string(),
                "the lens reads vectors of the residual stream's width through the final norm: use hidden, attn_out or mlp_out",
            ));
        }
        let selected = match &self.layers {
            Some(refs) => at.layers("layers", refs)?,
            None => at.selected.to_vec(),
        };
        let (labels, layers) = at.through_head(selected, "the lens")?;
        let final_layer = at.info.n_layers + 1; // pre_final_norm
        let mut state = LogitLensState::new(
            layers,
            labels,
            final_layer,
            self.text.clone(),
            self.positions,
        );
        if let Some(spec) = &self.lens {
            state.use_tuned(spec, at)?;
        }
        Ok(state)
    }

    fn reads_head(_: &LogitLensState) -> bool {
        true
    }
    fn layers(s: &LogitLensState) -> Vec<usize> {
        let mut l = s.layers.clone();
        l.push(s.final_layer);
        l
    }

    fn observe(s: &mut LogitLensState, t: &TextActivations) {
        let Some(lens) = t.lens else { return };
        let wants_grid = s.wants_grid(t);
        let grid_rows = if wants_grid {
            s.positions.min(t.rows())
        } else {
            0
        };
        let mut lenses = vec![s.translators.as_deref()];
        if s.beside.is_some() {
            lenses.push(None);
        }
        let mut scratch = std::mem::take(&mut s.scratch);
        let readings = read_text(s, t, (&lens, &mut scratch), &lenses, grid_rows);
        s.scratch = scratch;
        let mut readings = readings.into_iter();
        let (Some(main), plain) = (readings.next(), readings.next()) else {
            return;
        };
        for (tree, sum) in s.trees.iter_mut().zip(main.sums) {
            tree.push(t.index as u64, sum);
        }
        if wants_grid {
            s.grid = Some(grid_of(t, grid_rows, main.grid));
        }
        if let (Some(b), Some(plain)) = (&mut s.beside, plain) {
            for (tree, sum) in b.trees.iter_mut().zip(plain.sums) {
                tree.push(t.index as u64, sum);
            }
            if wants_grid {
                b.grid = Some(grid_of(t, grid_rows, plain.grid));
            }
        }
    }

    fn merge(s: &mut LogitLensState, right: LogitLensState) -> Result<(), KindError> {
        if (&s.layers, &s.text, s.positions) != (&right.layers, &right.text, right.positions)
            || s.trees.len() != right.trees.len()
        {
            return Err(KindError::Mismatch(
                "logit lenses of different hidden states or texts".into(),
            ));
        }
        if s.tuned != right.tuned || s.beside.is_some() != right.beside.is_some() {
            return Err(KindError::Mismatch(
                "lenses read through different tuned lenses".into(),
            ));
        }
        join(&mut s.trees, &mut s.grid, right.trees, right.grid)?;
        if let (Some(a), Some(b)) = (&mut s.beside, right.beside) {
            join(&mut a.trees, &mut a.grid, b.trees, b.grid)?;
        }
        Ok(())
    }

    fn finish(s: LogitLensState) -> Result<LogitLensResult, KindError> {
        if let (None, Some(id)) = (&s.grid, &s.text) {
            return Err(KindError::NoResult(format!(
                "`text` = {id:?}: no text has this id; name one of the texts"
            )));
        }
        let (positions, main) = reading(s.trees, s.grid);
        Ok(LogitLensResult {
            positions,
            cross_entropy: main.cross_entropy,
            kl_to_final: main.kl_to_final,
            top1_agreement: main.top1_agreement,
            entropy: main.entropy,
            labels: s.labels,
            grid: main.grid,
            tuned: s.tuned,
            logit_lens: s.beside.map(|b| Box::new(reading(b.trees, b.grid).1)),
        })
    }

    fn validate(o: &LogitLensResult, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(o, cx)?;
        let l = &o.labels;
        validate_grid("grid", &o.grid, l)?;
        if let Some(plain) = &o.logit_lens {
            if o.tuned.is_none() {
                return Err(KindError::Invalid(
                    "`logit_lens` is the plain lens beside a tuned one, but `tuned` is absent"
                        .into(),
                ));
            }
            columns::validate(BESIDE_COLUMNS, o, l)?;
            validate_grid("logit_lens.grid", &plain.grid, l)?;
        }
        Ok(())
    }

    fn section(o: &LogitLensResult, _: &Context, _: Medium) -> Section {
        let Some(source) = &o.tuned else {
            return plain_section(o);
        };
        let mut tables = vec![columns::table(
            "Tuned lens, per hidden state (means over positions)",
            COLUMNS,
            o,
            &o.labels,
        )];
        if o.logit_lens.is_some() {
            tables.push(columns::table(
                "The logit lens beside it, per hidden state (means over positions)",
                BESIDE_COLUMNS,
                o,
                &o.labels,
            ));
        }
        Section {
            wide: false,
            collapsed: None,
            heading: "Tuned lens".into(),
            intro: format!(
                "Each hidden state but the last read through the tuned lens `{}` (trained on `{}`): an affine map per layer, `h + A h + b`, then the model's final norm and unembedding, over {} positions that have a next token; the last hidden state is the model's own prediction.{}",
                source.id,
                source.base_model,
                o.positions,
                if o.logit_lens.is_some() { " The plain logit lens is read beside it." } else { "" }
            ),
            notes: vec![],
            charts: tuned_charts(o),
            tables,
        }
    }

    fn scalars(out: &LogitLensResult) -> Vec<super::kind::Scalars> {
        let mut s = columns::scalars(COLUMNS, out, &out.labels);
        if out.logit_lens.is_some() {
            s.extend(columns::scalars(BESIDE_COLUMNS, out, &out.labels));
        }
        s
    }

    fn compare(a: &LogitLensResult, b: &LogitLensResult, c: &mut Comparer) -> Result<(), Mismatch> {
        c.same("hidden states", &a.labels, &b.labels)?;
        let lens = |o: &LogitLensResult| o.tuned.as_ref().map(|t| t.id.clone());
        c.same("tuned lens", &lens(a), &lens(b))?;
        columns::compare(COLUMNS, a, b, &a.labels, c);
        if a.logit_lens.is_some() && b.logit_lens.is_some() {
            columns::compare(BESIDE_COLUMNS, a, b, &a.labels, c);
        }
        Ok(())
    }
}

/// The per-hidden-state columns of the plain logit lens read beside a tuned one.
const BESIDE_COLUMNS: &[Column<LogitLensResult>] = &[
    Column::new(
        "logit_lens_cross_entropy",
        "logit lens cross-entropy (nats)",
        |r| Values::Stat(beside(r, |x| &x.cross_entropy)),
    ),
    Column::new(
        "logit_lens_kl_to_final",
        "logit lens KL to final (nats)",
        |r| Values::Stat(beside(r, |x| &x.kl_to_final)),
    ),
    Column::new(
        "logit_lens_top1_agreement",
        "logit lens top-1 agreement (%)",
        |r: &LogitLensResult| Values::Stat(beside(r, |x| &x.top1_agreement)),
    )
    .percent(),
    Column::new("logit_lens_entropy", "logit lens entropy (nats)", |r| {
        Values::Stat(beside(r, |x| &x.entropy))
    }),
];

/// A column of the plain lens read beside a tuned one (empty without one).
fn beside(r: &LogitLensResult, f: fn(&LensReading) -> &Vec<Option<f64>>) -> Vec<Option<f64>> {
    r.logit_lens
        .as_ref()
        .map(|x| f(x).clone())
        .unwrap_or_default()
}

/// A chart of per-hidden-state curves.
fn curves(
    o: &LogitLensResult,
    name: &str,
    heading: &str,
    series: &[(&str, &[Option<f64>])],
    y: &str,
) -> ChartSpec {
    ChartSpec {
        title: name.into(),
        option: option(per_layer_lines(heading, "", &o.labels, series, y, false)),
        height: 360,
    }
}

/// The logit lens's section: its curves, its grid, its table.
fn plain_section(o: &LogitLensResult) -> Section {
    let mut charts = vec![
        curves(
            o,
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
            o,
            "logit-lens-top1",
            "Top-1 agreement with the model's prediction",
            &[("top-1 agreement", &o.top1_agreement)],
            "share",
        ),
    ];
    if !o.grid.top1.is_empty() && !o.grid.tokens.is_empty() {
        charts.push(grid_chart("logit-lens-grid", "", &o.grid, &o.labels));
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

/// A tuned lens's curves (the logit lens's beside them, when read) and grids.
fn tuned_charts(o: &LogitLensResult) -> Vec<ChartSpec> {
    let mut nats: Vec<(&str, &[Option<f64>])> = vec![
        ("cross-entropy, tuned lens", &o.cross_entropy),
        ("KL to the final, tuned lens", &o.kl_to_final),
    ];
    let mut top1: Vec<(&str, &[Option<f64>])> = vec![("tuned lens", &o.top1_agreement)];
    if let Some(p) = &o.logit_lens {
        nats.push(("cross-entropy, logit lens", &p.cross_entropy));
        nats.push(("KL to the final, logit lens", &p.kl_to_final));
        top1.push(("logit lens", &p.top1_agreement));
    }
    let mut charts = vec![
        curves(
            o,
            "tuned-lens-nats",
            "What each hidden state predicts, in nats",
            &nats,
            "nats",
        ),
        curves(
            o,
            "tuned-lens-top1",
            "Top-1 agreement with the model's prediction",
            &top1,
            "share",
        ),
    ];
    for (name, lens, g) in [
        ("tuned-lens-grid", "Tuned lens: ", Some(&o.grid)),
        (
            "logit-lens-grid",
            "Logit lens: ",
            o.logit_lens.as_ref().map(|p| &p.grid),
        ),
    ] {
        if let Some(g) = g.filter(|g| !g.top1.is_empty() && !g.tokens.is_empty()) {
            charts.push(grid_chart(name, lens, g, &o.labels));
        }
    }
    charts
}

/// One lens's reading of one text: per label, the sums over the positions that have a
/// next token, and the grid's cells.
struct Reading {
    sums: Vec<LensSums>,
    grid: Vec<Vec<Prediction>>,
}

/// One block of head inputs: a hidden state, translated first when a lens is given.
type Stacked<'a> = (usize, Option<&'a Translators>);

/// Reads text `t` through the head once per lens of `lenses` (`None`: the identity, the
/// logit lens), each hidden state but the final one first through that lens; the grid's
/// first `grid_rows` positions too. Every lens's rows go through one product with the
/// final hidden state's, whose logits (the reference every lens is measured against) are
/// computed once.
fn read_text(
    s: &LogitLensState,
    t: &TextActivations,
    (lens, scratch): (&Lens, &mut Scratch),
    lenses: &[Option<&Translators>],
    grid_rows: usize,
) -> Vec<Reading> {
    let (rows, first) = (t.rows(), t.first_token);
    // Rows with a next token; the grid also shows the last position.
    let predicted = (t.token_ids.len().saturating_sub(first + 1)).min(rows);
    let mut out: Vec<Reading> = lenses
        .iter()
        .map(|_| Reading {
            sums: vec![LensSums::default(); s.layers.len()],
            grid: vec![vec![]; s.layers.len()],
        })
        .collect();
    // The final logits first, then each lens's other hidden states.
    let others: Vec<usize> = s
        .layers
        .iter()
        .copied()
        .filter(|&l| l != s.final_layer)
        .collect();
    let mut stacked: Vec<Stacked> = vec![(s.final_layer, None)];
    for tr in lenses {
        stacked.extend(others.iter().map(|&l| (l, *tr)));
    }
    let block = (ROWS_PER_PRODUCT / stacked.len()).max(1);
    let end = predicted.max(grid_rows);
    let vocab = lens.readout.vocab();
    for r0 in (0..end).step_by(block) {
        let r1 = (r0 + block).min(end);
        let n = r1 - r0;
        let input = stacked_rows(t, &stacked, r0..r1);
        let logits = scratch.get(stacked.len() * n * vocab);
        lens.readout.logits(&input, logits);
        let refs: Vec<Reference> = logits[..n * vocab]
            .par_chunks(vocab)
            .map(Reference::of)
            .collect();
        let next = |row: usize| {
            (row < predicted).then(|| (t.token_ids[first + row + 1] as usize).min(vocab - 1))
        };
        for (j, reading) in out.iter_mut().enumerate() {
            for (li, layer) in s.layers.iter().enumerate() {
                let slot = others
                    .iter()
                    .position(|l| l == layer)
                    .map_or(0, |k| 1 + j * others.len() + k);
                let z = &logits[slot * n * vocab..(slot + 1) * n * vocab];
                let stats: Vec<RowStats> = z
                    .par_chunks(vocab)
                    .enumerate()
                    .map(|(k, zr)| row_stats(zr, &refs[k], next(r0 + k)))
                    .collect();
                reading.add(li, r0, &stats, (predicted, grid_rows), lens);
            }
        }
    }
    out
}

impl Reading {
    /// Adds label `li`'s row statistics of positions `r0..`: to the sums where a next
    /// token is predicted, to the grid within its first `grid_rows` positions.
    fn add(
        &mut self,
        li: usize,
        r0: usize,
        stats: &[RowStats],
        (predicted, grid_rows): (usize, usize),
        lens: &Lens,
    ) {
        for (k, st) in stats.iter().enumerate() {
            if r0 + k < predicted {
                self.sums[li].add(st);
            }
            if r0 + k < grid_rows {
                self.grid[li].push(Prediction {
                    id: st.arg as u32,
                    token: lens.tokenizer.token_strings(&[st.arg as u32]).remove(0),
                    prob: st.prob,
                });
            }
        }
    }
}

impl LensSums {
    fn add(&mut self, st: &RowStats) {
        self.positions += 1;
        self.cross_entropy += st.cross_entropy.unwrap_or(0.0);
        self.kl_to_final += st.kl_to_final;
        self.top1_agree += u64::from(st.agrees);
        self.entropy += st.entropy;
    }
}

/// The rows `range` of every hidden state in `stacked`, hidden state by hidden state
/// (`[stacked.len() * rows, d]`): the input of one product with the head. A hidden state
/// stacked with a lens is translated first.
fn stacked_rows(
    t: &TextActivations,
    stacked: &[Stacked],
    range: std::ops::Range<usize>,
) -> Vec<f32> {
    let d = t.dim.max(1);
    let mut input = Vec::with_capacity(stacked.len() * range.len() * d);
    for &(l, tr) in stacked {
        let rows = &t.state(l)[range.start * d..range.end * d];
        match tr {
            Some(tr) => input.extend(tr.apply(l, rows)),
            None => input.extend_from_slice(rows),
        }
    }
    input
}

/// Joins the right-hand side's per-text sums and grid onto the left's.
fn join(
    trees: &mut [Tree<LensSums>],
    grid: &mut Option<LensGrid>,
    right: Vec<Tree<LensSums>>,
    right_grid: Option<LensGrid>,
) -> Result<(), KindError> {
    for (a, b) in trees.iter_mut().zip(right) {
        a.join(b)?;
    }
    if grid.is_none() {
        *grid = right_grid;
    }
    Ok(())
}

/// The positions with a next token, and the means per label of one lens's sums.
fn reading(trees: Vec<Tree<LensSums>>, grid: Option<LensGrid>) -> (u64, LensReading) {
    let sums: Vec<LensSums> = trees
        .into_iter()
        .map(|t| t.fold().unwrap_or_default())
        .collect();
    let mean = |f: fn(&LensSums) -> f64| -> Vec<Option<f64>> {
        sums.iter()
            .map(|x| (x.positions > 0).then(|| f(x) / x.positions as f64))
            .collect()
    };
    let out = LensReading {
        cross_entropy: mean(|x| x.cross_entropy),
        kl_to_final: mean(|x| x.kl_to_final),
        top1_agreement: mean(|x| x.top1_agree as f64),
        entropy: mean(|x| x.entropy),
        grid: grid.unwrap_or_default(),
    };
    (sums.first().map_or(0, |x| x.positions), out)
}

/// A grid has a row per label (when it has any) and a cell per position.
fn validate_grid(what: &str, g: &LensGrid, labels: &[String]) -> Result<(), KindError> {
    if !g.top1.is_empty() {
        super::kind::expect_per_label(&format!("{what}.top1"), &g.top1, labels)?;
    }
    let n = g.token_index.len();
    super::kind::expect_len(&format!("{what}.tokens"), g.tokens.len(), n)?;
    super::kind::expect_len(&format!("{what}.next"), g.next.len(), n)?;
    for (i, row) in g.top1.iter().enumerate() {
        super::kind::expect_len(&format!("{what}.top1[{i}]"), row.len(), n)?;
    }
    Ok(())
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
fn grid_chart(name: &str, lens: &str, g: &LensGrid, labels: &[String]) -> ChartSpec {
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
            &format!("{lens}Top-1 prediction per position, text {}", g.text),
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
        .y_axis(Axis::new().type_(AxisType::Category).data(labels.to_vec()))
        .visual_map(
            VisualMap::new()
                .min(0)
                .max(1)
                .calculable(true)
                .orient(Orient::Vertical)
                .right(10)
                .top("middle")
                .in_range(
                    VisualMapChannel::new().color(
                        VIRIDIS
                            .iter()
                            .map(|c| c.to_string().into())
                            .collect::<Vec<charming::element::Color>>(),
                    ),
                ),
        )
        .series(
            Heatmap::new()
                .name("top-1")
                .label(Label::new().show(true).formatter("{b}").font_size(9)),
        );
    let mut option = option(chart);
    option["series"][0]["data"] = serde_json::Value::Array(data);
    ChartSpec {
        title: name.into(),
        option,
        height: (160 + 26 * labels.len()) as u32,
    }
}
