//! `surprisal`: the loss of the model's own next-token prediction, token by token, from
//! its final logits (the head the logit lens reads): per text and for the corpus the mean
//! negative log-likelihood, the perplexity and the token count; the mean loss by token
//! position; the in-context learning score of Olsson et al. 2022 (the loss at token 500
//! minus the loss at token 50, averaged over the texts long enough); a histogram of
//! surprisal; and the most surprising tokens with their context.
//!
//! Each analysed token is scored from the logits of the position before it, so a text
//! that skips its first token still has that token's successor scored, and a window's
//! first new token is scored from the last token of its context: with `window:` every
//! token of a text is predicted once, the context only conditions, and the corpus
//! perplexity is exactly that of `transformers`' strided-perplexity loop. A text's (or a
//! window's) first token has nothing to be predicted from and is not scored.
//!
//! Logits are gemm products in f32 as transformers computes them, 128 rows at a time;
//! each `log sum exp` forms its exponentials in f32, as torch's f32 cross-entropy does,
//! and sums them in f64. Sums sit on a fixed-point grid and counts are
//! integers, so any split of the texts merges to the same bits.

use crate::analyses::axes::{self, Axes};
use crate::analyses::scratch::Scratch;
use charming::component::{Axis, Grid};
use charming::element::{AxisType, NameLocation, Tooltip, Trigger};
use charming::series::{Bar, Line};
use charming::Chart;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::kind::{
    expect_len, Analysis, Check, Context, KindError, Medium, Scalars, Section, Setup,
    TextActivations,
};
use crate::charts::{option, r, title, ChartSpec};
use crate::compare::rules::{total_variation, Comparer, Mismatch};
use crate::model::kernels::log_sum_exp;
use crate::spec::error::SpecError;
use crate::stats::gram::Fixed;
use crate::view::{fmt_num, Table};

/// Rows whose logits are computed in one product (128 x 50,257 f32 is 26 MB; more rows
/// make gemm no faster).
const ROWS_PER_PRODUCT: usize = 512;
/// The histogram's bins: `BIN_WIDTH` nats wide from 0, `BINS` of them; larger losses are
/// counted apart (`above`).
const BINS: usize = 80;
const BIN_WIDTH: f64 = 0.25;

/// `{kind: surprisal, k: 20, context: 12, icl: [50, 500], texts: 100}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Surprisal {
    /// The most surprising tokens kept, with their context (0 to 1000). Default 20.
    #[serde(default = "default_k")]
    #[schemars(range(min = 0, max = 1000))]
    pub k: usize,
    /// Tokens of context shown before each of them (0 to 64). Default 12.
    #[serde(default = "default_context")]
    #[schemars(range(min = 0, max = 64))]
    pub context: usize,
    /// The in-context learning score's two token positions `[early, late]`: the mean over
    /// texts of the loss at token `late` minus the loss at token `early` (0-based
    /// positions in the text, or in the window). Default `[50, 500]` (Olsson et al. 2022).
    #[serde(default = "default_icl")]
    pub icl: [usize; 2],
    /// How many texts (the first, in order) results.json lists with their own loss.
    /// Default 100.
    #[serde(default = "default_texts")]
    pub texts: usize,
}

fn default_k() -> usize {
    20
}
fn default_context() -> usize {
    12
}
fn default_icl() -> [usize; 2] {
    [50, 500]
}
fn default_texts() -> usize {
    100
}

/// Where in [`SurprisalState::sums`] each sum sits: the corpus's summed loss, the summed
/// ICL differences, then the summed loss per token position.
const NLL: usize = 0;
const ICL: usize = 1;
const POSITIONS: usize = 2;

/// One very surprising token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Surprise {
    /// Text id (a window's: `ID#k`).
    pub text: String,
    /// Index of the text in the run's order.
    pub index: usize,
    /// Token position in the text (or window).
    pub token_index: usize,
    /// The token, decoded.
    pub token: String,
    /// The tokens before it, decoded and joined.
    pub context: String,
    /// Its loss, `-ln p(token | prefix)`, nats.
    pub nll: f64,
}

/// One text's loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextSurprisal {
    /// Text id.
    pub id: String,
    /// Tokens scored.
    pub tokens: u64,
    /// Mean loss, nats (`null` with no token scored).
    pub nll: Option<f64>,
    /// `exp(nll)`.
    pub perplexity: Option<f64>,
}

/// Sums and counts so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurprisalState {
    /// The hidden-state index the logits come from (`pre_final_norm`).
    pub final_layer: usize,
    /// The model's last hidden-state label (what results.json names).
    pub label: String,
    /// Tokens kept.
    pub k: usize,
    /// Context tokens shown.
    pub context: usize,
    /// ICL positions.
    pub icl: [usize; 2],
    /// Texts listed.
    pub limit: usize,
    /// Tokens scored.
    pub tokens: u64,
    /// Texts long enough for the ICL score.
    pub icl_texts: u64,
    /// Tokens scored per position.
    pub position_counts: Vec<u64>,
    /// Histogram counts (`BINS`), then the count above the last edge.
    pub histogram: Vec<u64>,
    /// Loss sums at `NLL`, `ICL`, then per position from `POSITIONS`.
    pub sums: Fixed,
    /// The most surprising tokens so far, most surprising first.
    pub top: Vec<Surprise>,
    /// The first texts' own losses, in order.
    pub texts: Vec<TextSurprisal>,
    /// The logits buffer, kept from text to text.
    #[serde(skip)]
    scratch: Scratch,
}

/// The in-context learning score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IclScore {
    /// The early token position.
    pub early: usize,
    /// The late token position.
    pub late: usize,
    /// Texts that reach the late position (and score both).
    pub texts: u64,
    /// Mean of `loss[late] - loss[early]` over them, nats (`null` when none reach it).
    pub score: Option<f64>,
}

/// The loss of the model's own predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SurprisalResult {
    /// The hidden state whose logits are scored: the model's last.
    pub label: String,
    /// Tokens scored (each token of a text but its first; with windows, every token a
    /// window newly predicts).
    pub tokens: u64,
    /// Mean negative log-likelihood, nats (`null` with no token scored).
    pub nll: Option<f64>,
    /// `exp(nll)`.
    pub perplexity: Option<f64>,
    /// Mean loss at each token position (index = position), `null` where no text
    /// reaches it.
    pub by_position: Vec<Option<f64>>,
    /// Tokens scored at each position.
    pub position_tokens: Vec<u64>,
    /// The in-context learning score.
    pub icl: IclScore,
    /// Bin edges of the surprisal histogram, nats.
    pub edges: Vec<f64>,
    /// Tokens per bin.
    pub counts: Vec<u64>,
    /// Tokens above the last edge.
    pub above: u64,
    /// The most surprising tokens, most surprising first (ties: text, then position).
    pub most_surprising: Vec<Surprise>,
    /// The first texts' own losses, in order.
    pub texts: Vec<TextSurprisal>,
}

/// The order of [`SurprisalState::top`]: larger loss first, then text and position.
fn rank(a: &Surprise, b: &Surprise) -> std::cmp::Ordering {
    b.nll
        .total_cmp(&a.nll)
        .then(a.index.cmp(&b.index))
        .then(a.token_index.cmp(&b.token_index))
}

/// One text's losses: `(position, loss)` for every token scored, from the logits of
/// hidden state `final_layer` (`pre_final_norm`).
fn losses(t: &TextActivations, final_layer: usize, scratch: &mut Scratch) -> Vec<(usize, f64)> {
    let Some(lens) = t.lens else {
        return Vec::new();
    };
    let (n, first, d) = (t.token_ids.len(), t.first_token, t.dim.max(1));
    // Token p is scored from the logits at p - 1: the row before the first analysed one
    // (the context's last, or token 0 when it is skipped) scores the first.
    let rows = t.state(final_layer);
    let mut input: Vec<f32> = Vec::new();
    let start = match (first, t.previous) {
        (0, _) => 1,
        (_, Some(prev)) => {
            input.extend_from_slice(prev);
            first
        }
        (_, None) => first + 1,
    };
    if start >= n {
        return Vec::new();
    }
    let from_rows = n - 1 - first.max(start - 1);
    input.extend_from_slice(&rows[..from_rows * d]);
    let vocab = lens.readout.vocab();
    let targets: Vec<usize> = (start..n).collect();
    let mut out = Vec::with_capacity(targets.len());
    for (block, chunk) in input
        .chunks(ROWS_PER_PRODUCT * d)
        .zip(targets.chunks(ROWS_PER_PRODUCT))
    {
        let logits = scratch.get(chunk.len() * vocab);
        lens.readout.logits(block, logits);
        let nll: Vec<f64> = logits
            .par_chunks(vocab)
            .zip(chunk)
            .map(|(z, &p)| {
                let target = (t.token_ids[p] as usize).min(vocab - 1);
                log_sum_exp(z) - z[target] as f64
            })
            .collect();
        out.extend(chunk.iter().copied().zip(nll));
    }
    out
}

impl SurprisalState {
    /// Folds one text's losses into the counts, and its surprises into the top.
    fn add(&mut self, t: &TextActivations, scored: &[(usize, f64)]) {
        let mut sums = vec![0f64; self.sums.raw.len()];
        let positions = self.position_counts.len();
        for &(p, nll) in scored {
            sums[NLL] += nll;
            if p < positions {
                sums[POSITIONS + p] += nll;
                self.position_counts[p] += 1;
            }
            let bin = (nll.max(0.0) / BIN_WIDTH) as usize;
            self.histogram[bin.min(BINS)] += 1;
        }
        let at = |q: usize| scored.iter().find(|(p, _)| *p == q).map(|x| x.1);
        if let (Some(early), Some(late)) = (at(self.icl[0]), at(self.icl[1])) {
            sums[ICL] += late - early;
            self.icl_texts += 1;
        }
        self.sums.add(&sums);
        self.tokens += scored.len() as u64;
        // The first texts of this state's range; a merge keeps the first of both.
        if self.texts.len() < self.limit {
            self.texts.push(text_entry(t.id, scored));
        }
        self.keep_top(t, scored);
    }

    /// Keeps the `k` most surprising tokens of what was kept and this text's.
    fn keep_top(&mut self, t: &TextActivations, scored: &[(usize, f64)]) {
        let mut mine: Vec<(usize, f64)> = scored.to_vec();
        mine.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        mine.truncate(self.k);
        let surprise = |&(p, nll): &(usize, f64)| Surprise {
            text: t.id.to_string(),
            index: t.index,
            token_index: p,
            token: t.tokens.get(p).cloned().unwrap_or_default(),
            context: t.tokens[p.saturating_sub(self.context)..p].concat(),
            nll,
        };
        self.top.extend(mine.iter().map(surprise));
        self.top.sort_by(rank);
        self.top.truncate(self.k);
    }
}

/// A text's own entry.
fn text_entry(id: &str, scored: &[(usize, f64)]) -> TextSurprisal {
    let n = scored.len();
    let nll = (n > 0).then(|| scored.iter().map(|x| x.1).sum::<f64>() / n as f64);
    TextSurprisal {
        id: id.to_string(),
        tokens: n as u64,
        nll,
        perplexity: nll.map(f64::exp),
    }
}

impl Analysis for Surprisal {
    const KIND: &'static str = "surprisal";
    const AXES: Axes = Axes {
        label_is_block: false,
        paths: &[
            ("counts", &[axes::Axis::Bin]),
            ("edges", &[axes::Axis::Bin]),
        ],
    };
    type State = SurprisalState;
    type Output = SurprisalResult;
    const SITE: Option<crate::model::Site> = None;

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        if self.k > 1000 {
            return Err(at.invalid("k", self.k, "keep 0 to 1000 tokens"));
        }
        if self.context > 64 {
            return Err(at.invalid("context", self.context, "show 0 to 64 tokens of context"));
        }
        let [early, late] = self.icl;
        if early < 1 || late <= early {
            return Err(at.invalid(
                "icl",
                format!("[{early}, {late}]"),
                "give two token positions [early, late] with 1 <= early < late, e.g. [50, 500]",
            ));
        }
        Ok(())
    }

    fn start(&self, at: &Setup) -> Result<SurprisalState, SpecError> {
        if !at.info.lm_head {
            return Err(at.invalid(
                "kind",
                "surprisal",
                format!(
                    "{} has no language-model head to predict the next token with (an encoder, or a checkpoint saved without lm_head.weight): use a decoder with its head",
                    at.info.architecture
                ),
            ));
        }
        let positions = at.info.max_positions;
        Ok(SurprisalState {
            final_layer: at.info.n_layers + 1,
            label: at.labels[at.info.n_layers].clone(),
            k: self.k,
            context: self.context,
            icl: self.icl,
            limit: self.texts,
            tokens: 0,
            icl_texts: 0,
            position_counts: vec![0; positions],
            histogram: vec![0; BINS + 1],
            sums: Fixed::zeros(POSITIONS + positions),
            top: Vec::new(),
            texts: Vec::new(),
            scratch: Scratch::default(),
        })
    }

    fn reads_head(_: &SurprisalState) -> bool {
        true
    }
    fn layers(s: &SurprisalState) -> Vec<usize> {
        vec![s.final_layer]
    }

    fn observe(s: &mut SurprisalState, t: &TextActivations) {
        let scored = losses(t, s.final_layer, &mut s.scratch);
        s.add(t, &scored);
    }

    fn merge(s: &mut SurprisalState, right: SurprisalState) -> Result<(), KindError> {
        if (s.final_layer, s.k, s.context, s.icl, s.limit)
            != (
                right.final_layer,
                right.k,
                right.context,
                right.icl,
                right.limit,
            )
            || s.position_counts.len() != right.position_counts.len()
        {
            return Err(KindError::Mismatch(
                "surprisal states of different parameters or models".into(),
            ));
        }
        s.tokens += right.tokens;
        s.icl_texts += right.icl_texts;
        add_counts(&mut s.position_counts, &right.position_counts);
        add_counts(&mut s.histogram, &right.histogram);
        s.sums.merge(&right.sums);
        s.top.extend(right.top);
        s.top.sort_by(rank);
        s.top.truncate(s.k);
        s.texts.extend(right.texts);
        s.texts.truncate(s.limit);
        Ok(())
    }

    fn finish(s: SurprisalState) -> Result<SurprisalResult, KindError> {
        if s.sums.overflow {
            return Err(KindError::NoResult(
                "surprisal sums left the fixed-point range (a loss was not finite)".into(),
            ));
        }
        let sums = s.sums.values();
        let mean = |sum: f64, n: u64| (n > 0).then(|| sum / n as f64);
        let reached = s
            .position_counts
            .iter()
            .rposition(|&c| c > 0)
            .map_or(0, |p| p + 1);
        let nll = mean(sums[NLL], s.tokens);
        Ok(SurprisalResult {
            label: s.label,
            tokens: s.tokens,
            nll,
            perplexity: nll.map(f64::exp),
            by_position: (0..reached)
                .map(|p| mean(sums[POSITIONS + p], s.position_counts[p]))
                .collect(),
            position_tokens: s.position_counts[..reached].to_vec(),
            icl: IclScore {
                early: s.icl[0],
                late: s.icl[1],
                texts: s.icl_texts,
                score: mean(sums[ICL], s.icl_texts),
            },
            edges: (0..=BINS).map(|b| b as f64 * BIN_WIDTH).collect(),
            counts: s.histogram[..BINS].to_vec(),
            above: s.histogram[BINS],
            most_surprising: s.top,
            texts: s.texts,
        })
    }

    fn validate(o: &SurprisalResult, cx: &Context) -> Result<(), KindError> {
        super::kind::expect_known_labels(std::slice::from_ref(&o.label), cx.labels)?;
        expect_len(
            "position_tokens",
            o.position_tokens.len(),
            o.by_position.len(),
        )?;
        super::kind::check_edges("histogram", &o.edges, &o.counts)?;
        let counted = o.counts.iter().sum::<u64>() + o.above;
        if counted != o.tokens {
            return Err(KindError::Invalid(format!(
                "the histogram counts {counted} tokens, but `tokens` is {}",
                o.tokens
            )));
        }
        Ok(())
    }

    fn section(o: &SurprisalResult, _: &Context, _: Medium) -> Section {
        Section {
            heading: "Surprisal".into(),
            intro: intro(o),
            notes: notes(o),
            charts: vec![position_chart(o), histogram_chart(o)],
            tables: vec![surprise_table(o), text_table(o)],
            wide: false,
            collapsed: None,
        }
    }

    fn scalars(o: &SurprisalResult) -> Vec<Scalars> {
        let one = |name: &str, v: Option<f64>| {
            Scalars::new(name, std::slice::from_ref(&o.label), vec![v])
        };
        vec![
            one("nll", o.nll),
            one("perplexity", o.perplexity),
            one("icl_score", o.icl.score),
        ]
    }

    fn compare(a: &SurprisalResult, b: &SurprisalResult, c: &mut Comparer) -> Result<(), Mismatch> {
        // Per text first: it pairs whatever texts both results list, even when the
        // corpora differ and the corpus-level figures below do not compare.
        c.paired("text nll", &a.paired_values(), &b.paired_values());
        c.same("scored tokens", &a.tokens, &b.tokens)?;
        c.same(
            "ICL positions",
            &(a.icl.early, a.icl.late),
            &(b.icl.early, b.icl.late),
        )?;
        for (name, x, y) in [
            ("nll", a.nll, b.nll),
            ("perplexity", a.perplexity, b.perplexity),
            ("icl_score", a.icl.score, b.icl.score),
        ] {
            let mut m = c.metric(name);
            m.opt(x, y, || "corpus".into());
            c.push(m);
        }
        let mut m = c.metric("by_position");
        for (p, (x, y)) in a.by_position.iter().zip(&b.by_position).enumerate() {
            m.opt(*x, *y, || format!("position {p}"));
        }
        c.push(m);
        let with_above = |r: &SurprisalResult| [r.counts.as_slice(), &[r.above]].concat();
        c.histogram(&a.label, total_variation(&with_above(a), &with_above(b)));
        Ok(())
    }
}

impl SurprisalResult {
    /// The listed texts' mean losses, keyed by text id (texts with a scored token).
    pub fn paired_values(&self) -> Vec<(String, f64)> {
        self.texts
            .iter()
            .filter_map(|t| t.nll.map(|v| (t.id.clone(), v)))
            .collect()
    }
}

fn add_counts(a: &mut [u64], b: &[u64]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

fn intro(o: &SurprisalResult) -> String {
    let show = |v: Option<f64>| v.map_or("-".into(), fmt_num);
    format!(
        "The loss of the model's own next-token prediction over {} scored tokens: mean {} nats, perplexity {}. In-context learning score (loss at token {} minus loss at token {}, over {} texts that reach it): {} nats.",
        o.tokens,
        show(o.nll),
        show(o.perplexity),
        o.icl.late,
        o.icl.early,
        o.icl.texts,
        show(o.icl.score)
    )
}

fn notes(o: &SurprisalResult) -> Vec<String> {
    let mut notes = Vec::new();
    if o.above > 0 {
        notes.push(format!(
            "{} tokens lost more than {} nats and are counted above the histogram's last bin.",
            o.above,
            fmt_num(o.edges[o.edges.len() - 1])
        ));
    }
    if o.icl.texts == 0 {
        notes.push(format!(
            "No text reaches token {}: the in-context learning score is undefined (set `icl: [early, late]` within the texts' lengths).",
            o.icl.late
        ));
    }
    notes
}

/// Mean loss against token position.
fn position_chart(o: &SurprisalResult) -> ChartSpec {
    let data: Vec<Vec<f64>> = o
        .by_position
        .iter()
        .enumerate()
        .filter_map(|(p, v)| v.map(|v| vec![p as f64, r(v)]))
        .collect();
    let chart = Chart::new()
        .title(title(
            "Mean loss by token position",
            "nats; each position averaged over the texts that reach it",
        ))
        .tooltip(Tooltip::new().trigger(Trigger::Axis))
        .grid(Grid::new().top(70).bottom(50).left(70).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Value)
                .name("Token position")
                .name_location(NameLocation::Middle)
                .name_gap(28)
                .min(0),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name("nats").scale(true))
        .series(Line::new().name("mean loss").show_symbol(false).data(data));
    ChartSpec {
        title: "surprisal-by-position".into(),
        option: option(chart),
        height: 360,
    }
}

/// Tokens per surprisal bin.
fn histogram_chart(o: &SurprisalResult) -> ChartSpec {
    let labels: Vec<String> = o.edges[..o.edges.len() - 1]
        .iter()
        .map(|e| fmt_num(*e))
        .collect();
    let chart = Chart::new()
        .title(title(
            "Surprisal of each scored token",
            "tokens per bin of 0.25 nats",
        ))
        .tooltip(Tooltip::new().trigger(Trigger::Axis))
        .grid(Grid::new().top(70).bottom(50).left(70).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name("nats (bin start)")
                .name_location(NameLocation::Middle)
                .name_gap(28)
                .data(labels),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name("tokens").min(0))
        .series(
            Bar::new()
                .name("tokens")
                .data(o.counts.iter().map(|&c| c as f64).collect::<Vec<f64>>()),
        );
    ChartSpec {
        title: "surprisal-histogram".into(),
        option: option(chart),
        height: 340,
    }
}

fn surprise_table(o: &SurprisalResult) -> Table {
    Table {
        caption: "The most surprising tokens".into(),
        headers: ["text", "position", "context", "token", "loss (nats)"]
            .map(String::from)
            .to_vec(),
        rows: o
            .most_surprising
            .iter()
            .map(|s| {
                vec![
                    s.text.clone(),
                    s.token_index.to_string(),
                    format!("{:?}", s.context),
                    format!("{:?}", s.token),
                    fmt_num(s.nll),
                ]
            })
            .collect(),
        text_columns: vec![0, 2, 3],
    }
}

fn text_table(o: &SurprisalResult) -> Table {
    let show = |v: Option<f64>| v.map_or("-".into(), fmt_num);
    Table {
        caption: format!("Per text (the first {})", o.texts.len()),
        headers: ["text", "tokens scored", "mean loss (nats)", "perplexity"]
            .map(String::from)
            .to_vec(),
        rows: o
            .texts
            .iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    t.tokens.to_string(),
                    show(t.nll),
                    show(t.perplexity),
                ]
            })
            .collect(),
        text_columns: vec![0],
    }
}
