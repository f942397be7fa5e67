//! `divergence`: how a second version of a model (a new checkpoint, a fine-tune, a
//! quantization, a conversion) predicts differently from the spec's model on the same
//! token ids, token by token: `KL(p || q)` of the two next-token distributions with its
//! mean, standard error, extremes and quantiles; how often the two top-1 tokens agree; the
//! change in the probability of the actual next token (`delta_p`); both models' loss and
//! perplexity and their log ratio; the same KL through the logit lens at every selected
//! hidden state (`lens_kl`, where the two part); every text's loss difference with a
//! paired bootstrap interval over texts; and the tokens that diverge most. llama.cpp's
//! `llama-perplexity --kl-divergence` reports the same figures, from a saved logits file.
//!
//! `p` is the spec's model's softmax and `q` the second model's, both of the f32 logits
//! of each model's own head, normalised in f64. KL, the top-1 agreement and `lens_kl` are
//! taken at every analysed position; the loss, `delta_p` and the per-text differences at
//! every analysed position with a next token in the text (the positions `logit_lens`
//! reads). Sums sit on a fixed-point grid, quantiles come from a sketch with integer counts
//! ([`crate::stats::sketch`]), extremes and kept tokens break ties by place: every split of
//! the texts merges to the same bytes.

mod result;
mod view;

pub use self::result::*;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::columns::{self, Column, Values};
use super::kind::{Analysis, Check, Context, KindError, Medium, Section, Setup, TextActivations};
use super::next_token::{self as tokens, Row};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::spec::model::ModelSpec;
use crate::stats::bootstrap::{self, DEFAULT_RESAMPLES, RESAMPLES};
use crate::stats::gram::Fixed;
use crate::stats::sketch::Sketch;

/// `{kind: divergence, model: {id: ...}, k: 10}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Divergence {
    /// The new version, as the spec's `model` (`id`, `revision`, `file`, `quantized`); the
    /// spec's model is the base. It must use the same tokenizer and vocabulary; its width
    /// and layer count may differ.
    pub model: ModelSpec,
    /// How many of the most divergent tokens to list, with their context (1 to 1000).
    /// Default 10.
    #[serde(default = "default_k")]
    #[schemars(range(min = 1, max = 1000))]
    pub k: usize,
    /// Tokens of context shown before each of them (0 to 64). Default 12.
    #[serde(default = "default_context")]
    #[schemars(range(min = 0, max = 64))]
    pub context: usize,
    /// The hidden states `lens_kl` reads through both models' heads (the last reads
    /// `pre_final_norm`, as `logit_lens` does), e.g. `all`. Default: none, as each one
    /// costs two head products per position (on GPT-2 small, about a forward pass each).
    /// Needs both models to have the same number of hidden states.
    #[serde(default)]
    pub layers: Option<crate::spec::layers::LayersSpec>,
    /// Resamples of the paired bootstrap over texts (100 to 1,000,000), drawn from the
    /// spec's `seed`. Default 10,000.
    #[serde(default = "default_resamples")]
    #[schemars(range(min = 100, max = 1_000_000))]
    pub resamples: usize,
}

fn default_k() -> usize {
    10
}
fn default_context() -> usize {
    12
}
fn default_resamples() -> usize {
    DEFAULT_RESAMPLES
}

/// Where in [`DivergenceState::sums`] each sum sits; `lens_kl`'s per hidden state follow.
const KL: usize = 0;
const KL2: usize = 1;
const DP: usize = 2;
const DP2: usize = 3;
const NLL_BASE: usize = 4;
const NLL_NEW: usize = 5;
const RATIO: usize = 6;
const RATIO2: usize = 7;
const LENS: usize = 8;

/// The state so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DivergenceState {
    /// Which of the spec's second models (`Spec::companions`).
    pub companion: usize,
    /// Its id.
    pub model: String,
    /// The spec's model's `pre_final_norm` index.
    pub final_layer: usize,
    /// The second model's.
    pub their_final: usize,
    /// The spec's model's last hidden-state label.
    pub label: String,
    /// `lens_kl`'s hidden-state labels.
    pub lens_labels: Vec<String>,
    /// Their indices (the last hidden state's: `pre_final_norm`), the same in both models.
    pub lens_layers: Vec<usize>,
    /// Why `lens_kl` is left out, when it is.
    pub lens_note: Option<String>,
    /// Tokens listed.
    pub k: usize,
    /// Context tokens shown.
    pub context: usize,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// The spec's seed.
    pub seed: u64,
    /// Analysed positions (KL, top-1).
    pub positions: u64,
    /// Of them, those with a next token.
    pub predicted: u64,
    /// Positions whose two top-1 tokens agree.
    pub same_top1: u64,
    /// Positions where the base model's two largest logits tie.
    pub ties: u64,
    /// The sums, at `KL`..`LENS` and per `lens_kl` hidden state.
    pub sums: Fixed,
    /// KL's sketch.
    pub kl_sketch: Sketch,
    /// `delta_p`'s sketch.
    pub dp_sketch: Sketch,
    /// The smallest KL.
    pub min: Option<Extreme>,
    /// The largest KL.
    pub max: Option<Extreme>,
    /// The most divergent positions, most first.
    pub top: Vec<Divergent>,
    /// Every text's loss difference, in order.
    pub per_text: Vec<TextDivergence>,
}

impl Analysis for Divergence {
    const KIND: &'static str = "divergence";
    // Boxed: both are large beside other kinds', and sit in the registry's enums.
    type State = Box<DivergenceState>;
    type Output = Box<DivergenceResult>;
    const SITE: Option<crate::model::Site> = None;

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        if !(1..=1000).contains(&self.k) {
            return Err(at.invalid("k", self.k, "list 1 to 1000 tokens, e.g. 10"));
        }
        if self.context > 64 {
            return Err(at.invalid("context", self.context, "show 0 to 64 tokens of context"));
        }
        if !RESAMPLES.contains(&self.resamples) {
            return Err(at.invalid(
                "resamples",
                self.resamples,
                "draw 100 to 1000000 bootstrap resamples, e.g. 10000",
            ));
        }
        Ok(())
    }

    fn companion(&self) -> Option<&ModelSpec> {
        Some(&self.model)
    }

    fn start(&self, at: &Setup) -> Result<Box<DivergenceState>, SpecError> {
        self.start_state(at).map(Box::new)
    }

    fn reads_head(_: &Box<DivergenceState>) -> bool {
        true
    }
    fn layers(s: &Box<DivergenceState>) -> Vec<usize> {
        let mut l = s.lens_layers.clone();
        l.push(s.final_layer);
        l
    }

    fn companion_layers(s: &Box<DivergenceState>) -> Option<(usize, Vec<usize>)> {
        let mut l = s.lens_layers.clone();
        l.push(s.their_final);
        Some((s.companion, l))
    }

    fn observe(s: &mut Box<DivergenceState>, t: &TextActivations) {
        s.observe_text(t);
    }

    fn merge(s: &mut Box<DivergenceState>, right: Box<DivergenceState>) -> Result<(), KindError> {
        s.merge_right(*right)
    }

    fn finish(s: Box<DivergenceState>) -> Result<Box<DivergenceResult>, KindError> {
        s.finish_result().map(Box::new)
    }

    fn section(o: &Box<DivergenceResult>, cx: &Context, medium: Medium) -> Section {
        view::section(o, cx, medium)
    }

    const COLUMNS: &'static [Column<Box<DivergenceResult>>] =
        &[Column::new("lens_kl", "lens KL (nats)", |r| {
            Values::Stat(r.lens_kl.clone())
        })];

    fn labels(o: &Box<DivergenceResult>) -> &[String] {
        &o.lens_labels
    }

    fn validate(o: &Box<DivergenceResult>, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(o, cx)?;
        super::kind::expect_known_labels(std::slice::from_ref(&o.label), cx.labels)?;
        let counted: u64 = o.kl.log_bins.iter().map(|b| b.1).sum::<u64>() + o.kl.zero;
        if counted > o.positions || o.predicted > o.positions {
            return Err(KindError::Invalid(format!(
                "the KL histogram counts {counted} positions and `predicted` is {}, but `positions` is {}",
                o.predicted, o.positions
            )));
        }
        // The histogram is drawn by bin offset from the first: the bins must increase.
        if let Some(w) = o.kl.log_bins.windows(2).find(|w| w[0].0 >= w[1].0) {
            return Err(KindError::Invalid(format!(
                "`kl.log_bins` must list bins in increasing order, but bin {} follows bin {}",
                w[1].0, w[0].0
            )));
        }
        if o.top.len() > 1000 {
            return Err(KindError::Invalid(format!(
                "`top` lists {} tokens; at most 1000 are kept",
                o.top.len()
            )));
        }
        Ok(())
    }

    fn scalars(o: &Box<DivergenceResult>) -> Vec<columns::Scalars> {
        let mut out = columns::scalars(Self::COLUMNS, o, &o.lens_labels);
        let label = std::slice::from_ref(&o.label);
        for (name, v) in o.headline() {
            out.push(columns::Scalars::new(name, label, vec![v]));
        }
        out
    }

    fn compare(
        a: &Box<DivergenceResult>,
        b: &Box<DivergenceResult>,
        c: &mut Comparer,
    ) -> Result<(), Mismatch> {
        // Per text first: it pairs whatever texts both results hold.
        c.paired("nll_diff", &a.paired_values(), &b.paired_values());
        // The second model's id is provenance (a path moves with its folder): the
        // provenance rows show when it changes, as they do for the first model.
        c.same("positions", &a.positions, &b.positions)?;
        for ((name, x), (_, y)) in a.headline().into_iter().zip(b.headline()) {
            let mut m = c.metric(name);
            m.opt(x, y, || "corpus".into());
            c.push(m);
        }
        Self::compare_columns(a, b, c)
    }
}

impl Divergence {
    /// Refuses models without a head, and vocabularies of two sizes.
    fn check_models(
        &self,
        at: &Setup,
        id: &str,
        other: Option<&crate::model::ModelInfo>,
    ) -> Result<(), SpecError> {
        let no_head = |arch: &str| {
            format!(
                "{arch} has no language-model head to predict the next token with (an encoder, or a checkpoint saved without lm_head.weight): divergence compares next-token distributions, so use decoders with their heads"
            )
        };
        if !at.info.lm_head {
            return Err(at.invalid("kind", "divergence", no_head(&at.info.architecture)));
        }
        let Some(other) = other else { return Ok(()) };
        if !other.lm_head {
            return Err(at.invalid("model", id, no_head(&other.architecture)));
        }
        if other.vocab_size != at.info.vocab_size {
            return Err(at.invalid(
                "model",
                format!("{id} (vocabulary of {} tokens)", other.vocab_size),
                format!(
                    "the spec's model has a vocabulary of {} tokens: divergence compares distributions over the same tokens, so use a version with the same vocabulary",
                    at.info.vocab_size
                ),
            ));
        }
        Ok(())
    }

    /// `lens_kl`'s labels and indices, or why it is left out.
    fn lens(
        &self,
        at: &Setup,
        other: Option<&crate::model::ModelInfo>,
    ) -> Result<LensPlan, SpecError> {
        let Some(layers) = &self.layers else {
            let note = "lens_kl was not asked for: name hidden states in the analysis' `layers` (e.g. `all`) to see where the two versions part; each costs two head products per position";
            return Ok((Vec::new(), Vec::new(), Some(note.to_string())));
        };
        let selected = at.layers_spec("layers", layers)?;
        let (labels, layers) = at.through_head(selected, "lens_kl")?;
        if let Some(o) = other.filter(|o| o.n_layers != at.info.n_layers) {
            let note = format!(
                "lens_kl is left out: the spec's model has {} hidden states and the new version {}, so no hidden state of one has a counterpart in the other",
                at.info.n_layers + 1,
                o.n_layers + 1
            );
            return Ok((Vec::new(), Vec::new(), Some(note)));
        }
        Ok((labels, layers, None))
    }

    fn start_state(&self, at: &Setup) -> Result<DivergenceState, SpecError> {
        let (companion, id, other) = at.companion(&self.model);
        self.check_models(at, &id, other)?;
        let (lens_labels, lens_layers, lens_note) = self.lens(at, other)?;
        let sums = Fixed::zeros(LENS + lens_layers.len());
        Ok(DivergenceState {
            companion,
            model: id,
            final_layer: at.info.n_layers + 1,
            their_final: other.map_or(at.info.n_layers, |o| o.n_layers) + 1,
            label: at.labels[at.info.n_layers].clone(),
            lens_labels,
            lens_layers,
            lens_note,
            k: self.k,
            context: self.context,
            resamples: self.resamples,
            seed: at.seed,
            positions: 0,
            predicted: 0,
            same_top1: 0,
            ties: 0,
            sums,
            kl_sketch: Sketch::default(),
            dp_sketch: Sketch::default(),
            min: None,
            max: None,
            top: Vec::new(),
            per_text: Vec::new(),
        })
    }
}

/// `lens_kl`'s labels, their indices, and why it is left out when it is.
type LensPlan = (Vec<String>, Vec<usize>, Option<String>);

/// `a` comes before `b` among the most divergent: larger KL, then text, then position.
fn rank(a: &Divergent, b: &Divergent) -> std::cmp::Ordering {
    b.kl.total_cmp(&a.kl)
        .then(a.index.cmp(&b.index))
        .then(a.token_index.cmp(&b.token_index))
}

/// Keeps the smaller (`lower`) or larger extreme; ties: the earlier place.
fn keep(slot: &mut Option<Extreme>, cand: Extreme, lower: bool) {
    let better = match slot {
        None => true,
        Some(e) => {
            let by_value = if lower {
                cand.value.total_cmp(&e.value)
            } else {
                e.value.total_cmp(&cand.value)
            };
            by_value
                .then((cand.index, cand.token_index).cmp(&(e.index, e.token_index)))
                .is_lt()
        }
    };
    if better {
        *slot = Some(cand);
    }
}

impl DivergenceState {
    /// Folds in one text.
    fn observe_text(&mut self, t: &TextActivations) {
        let (Some(lens), Some(Some(theirs))) = (t.lens, t.companion_readouts.get(self.companion))
        else {
            return;
        };
        let Some(other) = t.companions.get(self.companion) else {
            return;
        };
        fn row_of(rows: &[Option<Vec<f32>>], l: usize) -> &[f32] {
            rows.get(l).and_then(|x| x.as_deref()).unwrap_or(&[])
        }
        let next = t.next_token_ids();
        let rows = tokens::rows(
            (lens.readout, t.state(self.final_layer)),
            (*theirs, row_of(other, self.their_final)),
            &next,
        );
        let mut lens_sums = Vec::with_capacity(self.lens_layers.len());
        for &l in &self.lens_layers {
            lens_sums.push(if l == self.final_layer {
                rows.iter().map(|r| r.kl).sum::<f64>()
            } else {
                let at = tokens::rows(
                    (lens.readout, t.state(l)),
                    (*theirs, row_of(other, l)),
                    &vec![None; next.len()],
                );
                at.iter().map(|r| r.kl).sum::<f64>()
            });
        }
        self.add(t, &rows, &lens_sums);
    }

    /// Adds one text's rows and its `lens_kl` sums.
    fn add(&mut self, t: &TextActivations, rows: &[Row], lens_sums: &[f64]) {
        let mut sums = vec![0f64; self.sums.raw.len()];
        let (mut predicted, mut diff) = (0u64, 0f64);
        for r in rows {
            sums[KL] += r.kl;
            sums[KL2] += r.kl * r.kl;
            self.kl_sketch.add(r.kl);
            self.same_top1 += u64::from(r.top_base == r.top_new);
            self.ties += u64::from(r.tie);
            if let Some((lp, lq)) = r.next {
                let dp = lq.exp() - lp.exp();
                sums[DP] += dp;
                sums[DP2] += dp * dp;
                self.dp_sketch.add(dp);
                sums[NLL_BASE] -= lp;
                sums[NLL_NEW] -= lq;
                sums[RATIO] += lp - lq;
                sums[RATIO2] += (lp - lq) * (lp - lq);
                predicted += 1;
                diff += lp - lq;
            }
        }
        sums[LENS..].copy_from_slice(lens_sums);
        self.sums.add(&sums);
        self.positions += rows.len() as u64;
        self.predicted += predicted;
        self.per_text.push(TextDivergence {
            id: t.id.to_string(),
            tokens: predicted,
            nll_diff: (predicted > 0).then(|| diff / predicted as f64),
        });
        self.keep_places(t, rows);
    }

    /// Updates the extremes and the most divergent positions with one text's rows.
    fn keep_places(&mut self, t: &TextActivations, rows: &[Row]) {
        let token = |p: usize| t.tokens.get(p).cloned().unwrap_or_default();
        let extreme = |r: usize, v: f64| Extreme {
            value: v,
            text: t.id.to_string(),
            index: t.index,
            token_index: t.first_token + r,
            token: token(t.first_token + r),
        };
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| rows[b].kl.total_cmp(&rows[a].kl).then(a.cmp(&b)));
        if let Some(&hi) = order.first() {
            keep(&mut self.max, extreme(hi, rows[hi].kl), false);
        }
        // The smallest, the earliest of equals: the order `keep` and merges use.
        let lo = (0..rows.len()).min_by(|&a, &b| rows[a].kl.total_cmp(&rows[b].kl).then(a.cmp(&b)));
        if let Some(lo) = lo {
            keep(&mut self.min, extreme(lo, rows[lo].kl), true);
        }
        let decode = |id: u32| {
            t.lens
                .map(|l| l.tokenizer.token_strings(&[id]).concat())
                .unwrap_or_default()
        };
        for &r in order.iter().take(self.k) {
            let p = t.first_token + r;
            self.top.push(Divergent {
                text: t.id.to_string(),
                index: t.index,
                token_index: p,
                token: token(p),
                context: t.tokens[p.saturating_sub(self.context)..p].concat(),
                next: t.tokens.get(p + 1).cloned(),
                kl: rows[r].kl,
                base_top1: decode(rows[r].top_base),
                new_top1: decode(rows[r].top_new),
            });
        }
        self.top.sort_by(rank);
        self.top.truncate(self.k);
    }

    fn merge_right(&mut self, right: DivergenceState) -> Result<(), KindError> {
        let key = |s: &DivergenceState| {
            (
                s.companion,
                s.model.clone(),
                s.final_layer,
                s.their_final,
                s.lens_layers.clone(),
                (s.k, s.context, s.resamples, s.seed),
            )
        };
        if key(self) != key(&right) || self.sums.raw.len() != right.sums.raw.len() {
            return Err(KindError::Mismatch(
                "divergence states of different parameters or models".into(),
            ));
        }
        self.positions += right.positions;
        self.predicted += right.predicted;
        self.same_top1 += right.same_top1;
        self.ties += right.ties;
        self.sums.merge(&right.sums);
        self.kl_sketch.merge(&right.kl_sketch);
        self.dp_sketch.merge(&right.dp_sketch);
        if let Some(e) = right.max {
            keep(&mut self.max, e, false);
        }
        if let Some(e) = right.min {
            keep(&mut self.min, e, true);
        }
        self.top.extend(right.top);
        self.top.sort_by(rank);
        self.top.truncate(self.k);
        self.per_text.extend(right.per_text);
        Ok(())
    }

    fn finish_result(self) -> Result<DivergenceResult, KindError> {
        if self.sums.overflow {
            return Err(KindError::NoResult(
                "divergence sums left the fixed-point range (a logit was not finite)".into(),
            ));
        }
        let s = self.sums.values();
        let (n, m) = (self.positions, self.predicted);
        let mean_se = |sum: f64, sum2: f64, n: u64| MeanSe {
            mean: (n > 0).then(|| sum / n as f64),
            se: (n > 1).then(|| {
                let mean = sum / n as f64;
                ((sum2 - n as f64 * mean * mean).max(0.0) / (n - 1) as f64 / n as f64).sqrt()
            }),
        };
        let quantiles = |sk: &Sketch| -> BTreeMap<String, Option<f64>> {
            QUANTILES
                .iter()
                .map(|k| (k.to_string(), sk.quantile(k.parse().unwrap_or(0.5))))
                .collect()
        };
        let kl = mean_se(s[KL], s[KL2], n);
        let dp = mean_se(s[DP], s[DP2], m);
        let rate = (n > 0).then(|| self.same_top1 as f64 / n as f64);
        let nll = |sum: f64| (m > 0).then(|| sum / m as f64);
        let diffs: Vec<f64> = self.per_text.iter().filter_map(|t| t.nll_diff).collect();
        Ok(DivergenceResult {
            model: self.model,
            label: self.label,
            positions: n,
            predicted: m,
            kl: KlSummary {
                mean: kl.mean,
                se: kl.se,
                min: self.min,
                max: self.max,
                quantiles: quantiles(&self.kl_sketch),
                log_bins: self.kl_sketch.log_bins(10),
                zero: self.kl_sketch.count() - self.kl_sketch.positive.values().sum::<u64>(),
            },
            same_top1: Rate {
                rate,
                se: rate.map(|r| (r * (1.0 - r) / n as f64).sqrt()),
                ties: self.ties,
            },
            delta_p: DeltaP {
                mean: dp.mean,
                se: dp.se,
                rms: (m > 0).then(|| (s[DP2] / m as f64).sqrt()),
                quantiles: quantiles(&self.dp_sketch),
            },
            nll_base: nll(s[NLL_BASE]),
            nll_new: nll(s[NLL_NEW]),
            ppl_base: nll(s[NLL_BASE]).map(f64::exp),
            ppl_new: nll(s[NLL_NEW]).map(f64::exp),
            ln_ppl_ratio: mean_se(s[RATIO], s[RATIO2], m),
            lens_kl: s[LENS..]
                .iter()
                .map(|&v| (n > 0).then(|| v / n as f64))
                .collect(),
            lens_labels: self.lens_labels,
            lens_note: self.lens_note,
            per_text: self.per_text,
            paired: bootstrap::paired(&diffs, self.resamples, self.seed),
            top: self.top,
        })
    }
}
