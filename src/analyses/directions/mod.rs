//! `directions`: where a labelled concept is linearly readable, and its direction, per
//! hidden state: the classes' means and the difference of means (for two classes the
//! second against the first in sorted order, for more each class against the rest), its
//! norm, the classes' mean projections onto it, Cohen's d of the projections, LDA's
//! direction and the Fisher criterion it reaches, and a closed-form ridge probe scored
//! by exact k-fold cross-validation (folds by a hash of each text's id).
//!
//! Everything is a function of per-fold, per-class first and second moments
//! ([`crate::stats::labelled`]), streamed once and merged exactly, so a corpus of any size
//! and any number of shards give the same bytes; the numerics are in
//! [`crate::stats::linear`]. `save: DIR` writes each class's difference of means as
//! safetensors (`{label}.{state}`), for `project` or for steering.

mod result;
mod section;

pub use result::{ClassTokens, Contrast, DirectionsResult, FoldTokens};

use crate::analyses::axes::{Axes, Axis};
use std::collections::BTreeMap;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::kind::{
    Analysis, Check, Column, Context, Files, KindError, Medium, MemoryLimit, Scalars, Section,
    Setup, TextActivations,
};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::spec::layers::LayerRef;
use crate::stats::labelled::{self, fold_of, LabelledMoments};
use crate::stats::linear::{self, cosine, LayerValues, Penalties};

/// `{kind: directions, folds: 5, alpha: 1.0, save: directions/}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Directions {
    /// The hidden states (or blocks, at a site) to read, as in the spec's `layers`.
    /// Default: the spec's `layers`.
    #[serde(default)]
    pub layers: Option<Vec<LayerRef>>,
    /// Which rows of a text enter the sums: `all` its analysed tokens (the default),
    /// `last` its last token (where a causal model has read the whole text), or `mean`
    /// the mean of its analysed tokens (one row per text, as persona and refusal
    /// directions average a response).
    #[serde(default)]
    pub rows: Rows,
    /// Cross-validation folds of the probe (2 to the number of texts). A text's fold is
    /// `u64::from_be_bytes(sha256(id)[0..8]) mod folds`, every window of a text in its
    /// text's fold. Default 5.
    #[serde(default = "default_folds")]
    pub folds: usize,
    /// The probe's penalty `alpha |w|^2` on its least squares (with an unpenalised
    /// intercept), above 0. Default 1.0.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// LDA's ridge, as a fraction of the mean within-class variance, added to the
    /// within-class covariance before it is inverted. Default 1e-6.
    #[serde(default = "crate::stats::cca::default_ridge")]
    pub ridge: f64,
    /// A folder (relative to the spec file) to write `directions.safetensors` to: each
    /// class's difference of means at every selected state, named `{label}.{state}`.
    #[serde(default)]
    pub save: Option<PathBuf>,
    /// The most memory the sums may take: `folds x L x d^2 / 2` sums of 16 bytes for `L`
    /// hidden states of size `d`. Default `"2 GiB"`.
    #[serde(default)]
    pub max_memory: MemoryLimit,
}

/// Which rows of a text the directions are computed from.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Rows {
    /// Every analysed token.
    #[default]
    All,
    /// The text's last token.
    Last,
    /// The mean of the text's analysed tokens (accumulated in f64).
    Mean,
}

fn default_folds() -> usize {
    5
}

fn default_alpha() -> f64 {
    1.0
}

/// The sums so far, and what the result is computed with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionsState {
    /// Per-fold, per-class exact sums.
    pub sums: LabelledMoments,
    /// The probe's penalty.
    pub alpha: f64,
    /// LDA's ridge.
    pub ridge: f64,
    /// Where the directions are saved, resolved against the spec's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save: Option<PathBuf>,
    /// Which rows of a text enter the sums.
    #[serde(default)]
    pub rows: Rows,
}

impl Analysis for Directions {
    const KIND: &'static str = "directions";
    const AXES: Axes = Axes {
        label_is_block: false,
        paths: &[
            ("projection.{class}", &[]),
            ("by_class.{class}", &[]),
            ("classes", &[Axis::Class]),
        ],
    };
    type State = DirectionsState;
    type Output = DirectionsResult;

    const COLUMNS: &'static [Column<DirectionsResult>] = section::COLUMNS;

    fn labels(o: &DirectionsResult) -> &[String] {
        &o.layers
    }

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        if self.folds < 2 {
            return Err(at.invalid(
                "folds",
                self.folds,
                "give at least 2 folds (each is held out once), e.g. 5",
            ));
        }
        if let crate::spec::TextSource::Inline(texts) = at.texts {
            if !at.windows && self.folds > texts.len() {
                return Err(at.invalid(
                    "folds",
                    self.folds,
                    format!("give at most {} folds, one per text", texts.len()),
                ));
            }
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(at.invalid("alpha", self.alpha, "give a penalty above 0, e.g. 1.0"));
        }
        at.ridge(self.ridge)
    }

    fn start(&self, at: &Setup) -> Result<DirectionsState, SpecError> {
        let selected = match &self.layers {
            Some(refs) => at.layers("layers", refs)?,
            None => at.selected.to_vec(),
        };
        let (l, d) = (selected.len(), at.info.hidden_size);
        at.fits(
            labelled::state_bytes(l, d, self.folds, 2),
            self.max_memory,
            &format!(
                "{} folds of {l} hidden states' d x d exact sums of 16 bytes, d = {d}",
                self.folds
            ),
        )?;
        let base = at.path.parent().unwrap_or(std::path::Path::new("."));
        Ok(DirectionsState {
            sums: LabelledMoments::new(selected.clone(), at.names(&selected), self.folds),
            alpha: self.alpha,
            ridge: self.ridge,
            save: self.save.as_ref().map(|dir| base.join(dir)),
            rows: self.rows,
        })
    }

    fn layers(s: &DirectionsState) -> Vec<usize> {
        s.sums.layers.clone()
    }

    fn reads_labels(_: &DirectionsState) -> bool {
        true
    }

    fn observe(s: &mut DirectionsState, t: &TextActivations) {
        let Some(label) = t.label else { return };
        let states: Vec<&[f32]> = s.sums.layers.iter().map(|&l| t.state(l)).collect();
        // Every window of a text in the text's fold: its windows share words and context,
        // so a window held out beside one trained on would flatter the probe.
        let fold = fold_of(t.text_id(), s.sums.folds);
        let d = t.dim.max(1);
        let rows: Vec<Vec<f32>> = match s.rows {
            Rows::All => return s.sums.observe(&states, t.dim, fold, label),
            Rows::Last => states
                .iter()
                .map(|x| x[x.len().saturating_sub(d)..].to_vec())
                .collect(),
            Rows::Mean => states.iter().map(|x| mean_row(x, d)).collect(),
        };
        let rows: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        s.sums.observe(&rows, t.dim, fold, label);
    }

    fn merge(s: &mut DirectionsState, right: DirectionsState) -> Result<(), KindError> {
        Ok(s.sums.merge(right.sums)?)
    }

    fn finish(s: DirectionsState) -> Result<DirectionsResult, KindError> {
        finish(s)
    }

    fn files(o: &DirectionsResult) -> &[(PathBuf, Vec<u8>)] {
        &o.files.0
    }

    fn validate(o: &DirectionsResult, cx: &Context) -> Result<(), KindError> {
        section::validate(o, cx)
    }

    fn scalars(o: &DirectionsResult) -> Vec<Scalars> {
        section::scalars(o)
    }

    fn compare(
        base: &DirectionsResult,
        new: &DirectionsResult,
        c: &mut Comparer,
    ) -> Result<(), Mismatch> {
        section::compare(base, new, c)
    }

    fn section(o: &DirectionsResult, cx: &Context, _: Medium) -> Section {
        section::section(o, cx)
    }
}

/// The mean of the finite rows of `[rows, d]` (accumulated in f64), or a row of NaN
/// (left out as non-finite) when no row is.
fn mean_row(x: &[f32], d: usize) -> Vec<f32> {
    let mut sum = vec![0f64; d];
    let mut n = 0usize;
    for row in x
        .chunks_exact(d)
        .filter(|r| r.iter().all(|v| v.is_finite()))
    {
        for (a, &v) in sum.iter_mut().zip(row) {
            *a += v as f64;
        }
        n += 1;
    }
    if x.is_empty() {
        return Vec::new();
    }
    sum.iter()
        .map(|&v| {
            if n == 0 {
                f32::NAN
            } else {
                (v / n as f64) as f32
            }
        })
        .collect()
}

/// The contrasts of the sums: refuses one class, more folds than texts, and overflow.
fn finish(s: DirectionsState) -> Result<DirectionsResult, KindError> {
    let m = &s.sums;
    if m.overflowed() {
        return Err(crate::stats::StatsError::Overflow.into());
    }
    let labels: Vec<String> = m.classes.keys().cloned().collect();
    if labels.len() < 2 {
        return Err(KindError::NoResult(format!(
            "the labelled texts have {} class(es) ({}): directions compares at least two; label texts of another class too",
            labels.len(),
            labels.join(", ")
        )));
    }
    let texts: u64 = m.classes.values().flat_map(|c| &c.texts).sum();
    if (m.folds as u64) > texts {
        return Err(KindError::NoResult(format!(
            "folds is {} but the run has {texts} labelled text(s): give at most {texts} folds",
            m.folds
        )));
    }
    let positive: Vec<usize> = match labels.len() {
        2 => vec![1],
        k => (0..k).collect(),
    };
    let penalties = Penalties {
        alpha: s.alpha,
        ridge: s.ridge,
    };
    let values: Vec<LayerValues> = (0..m.layers.len())
        .into_par_iter()
        .map(|li| linear::layer_values(m, li, &positive, penalties))
        .collect();
    let contrasts: Vec<Contrast> = (0..positive.len())
        .map(|k| contrast(&values, k, &labels))
        .collect();
    let files = Files(match &s.save {
        Some(dir) => vec![(
            dir.join("directions.safetensors"),
            saved(&values, &positive, &labels, &m.labels)?,
        )],
        None => Vec::new(),
    });
    Ok(result(&s, labels, positive, contrasts, &values, files))
}

/// The result around its contrasts.
fn result(
    s: &DirectionsState,
    labels: Vec<String>,
    positive: Vec<usize>,
    mut contrasts: Vec<Contrast>,
    values: &[LayerValues],
    files: Files,
) -> DirectionsResult {
    let m = &s.sums;
    let classes = m
        .classes
        .iter()
        .map(|(label, c)| ClassTokens {
            label: label.clone(),
            texts: c.texts.iter().sum(),
            tokens: c.tokens.iter().sum(),
        })
        .collect();
    let folds = (0..m.folds)
        .map(|f| FoldTokens {
            texts: m.classes.values().map(|c| c.texts[f]).sum(),
            tokens: m.classes.values().map(|c| c.tokens[f]).sum(),
        })
        .collect();
    let ridge_needed = values
        .iter()
        .zip(&m.labels)
        .filter(|(v, _)| v.ridge_needed)
        .map(|(_, l)| l.clone())
        .collect();
    let (contrast, by_class) = match positive.len() {
        1 => (contrasts.remove(0), BTreeMap::new()),
        _ => (
            Contrast::default(),
            labels.iter().cloned().zip(contrasts).collect(),
        ),
    };
    DirectionsResult {
        layers: m.labels.clone(),
        classes,
        folds,
        alpha: s.alpha,
        ridge: s.ridge,
        ridge_needed,
        nonfinite_tokens: m.nonfinite,
        contrast,
        by_class,
        files,
    }
}

/// Contrast `k`'s arrays over the hidden states.
fn contrast(values: &[LayerValues], k: usize, labels: &[String]) -> Contrast {
    let at = |l: usize| &values[l].contrasts[k];
    let n = values.len();
    let fin = |x: f64| x.is_finite().then_some(x);
    Contrast {
        diff_norm: (0..n).map(|l| at(l).diff_norm).collect(),
        projection: labels
            .iter()
            .enumerate()
            .map(|(c, label)| {
                let v = (0..n).map(|l| at(l).projections.get(c).copied().flatten());
                (label.clone(), v.collect())
            })
            .collect(),
        cohen_d: (0..n).map(|l| at(l).cohen_d).collect(),
        fisher: (0..n).map(|l| at(l).fisher).collect(),
        lda_cos: (0..n).map(|l| at(l).lda_cos).collect(),
        r2: (0..n).map(|l| at(l).r2).collect(),
        heldout_sse: (0..n).map(|l| fin(at(l).fold_sse.iter().sum())).collect(),
        fold_sse: (0..n)
            .map(|l| at(l).fold_sse.iter().map(|&x| fin(x)).collect())
            .collect(),
        heldout_cohen_d: (0..n).map(|l| at(l).heldout_cohen_d).collect(),
        consecutive_cos: (0..n)
            .map(|l| match l {
                0 => None,
                _ => cosine(&at(l - 1).diff, &at(l).diff),
            })
            .collect(),
    }
}

/// The safetensors bytes of every class's difference of means at every state, named
/// `{label}.{state}` (for two classes, the first's is the second's negated).
fn saved(
    values: &[LayerValues],
    positive: &[usize],
    labels: &[String],
    states: &[String],
) -> Result<Vec<u8>, KindError> {
    let mut tensors: Vec<(String, Vec<u8>, usize)> = Vec::new();
    for (l, state) in states.iter().enumerate() {
        for (k, &c) in positive.iter().enumerate() {
            let diff = &values[l].contrasts[k].diff;
            let mut put = |label: &str, sign: f64| {
                let bytes = diff
                    .iter()
                    .flat_map(|&v| ((sign * v) as f32).to_le_bytes())
                    .collect();
                tensors.push((format!("{label}.{state}"), bytes, diff.len()));
            };
            put(&labels[c], 1.0);
            if positive.len() == 1 {
                put(&labels[0], -1.0);
            }
        }
    }
    let views = tensors
        .iter()
        .map(|(name, bytes, d)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*d], bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| KindError::Invalid(format!("direction {name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One metadata entry: safetensors writes its map in hash order, which would differ
    // from run to run with two.
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| KindError::Invalid(format!("the directions do not serialize: {e}")))
}
