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

mod section;

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
    /// Cross-validation folds of the probe (2 to the number of texts). A text's fold is
    /// `u64::from_be_bytes(sha256(id)[0..8]) mod folds`. Default 5.
    #[serde(default = "default_folds")]
    pub folds: usize,
    /// The probe's penalty `alpha |w|^2` on its least squares (with an unpenalised
    /// intercept), above 0. Default 1.0.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// LDA's ridge, as a fraction of the mean within-class variance, added to the
    /// within-class covariance before it is inverted. Default 1e-6.
    #[serde(default = "default_ridge")]
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

fn default_folds() -> usize {
    5
}

fn default_alpha() -> f64 {
    1.0
}

fn default_ridge() -> f64 {
    1e-6
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
}

/// One label and how many of the analysed texts and tokens have it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassTokens {
    /// The label.
    pub label: String,
    /// Its texts.
    pub texts: u64,
    /// Its analysed tokens (finite in every selected state).
    pub tokens: u64,
}

/// One cross-validation fold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FoldTokens {
    /// Its texts.
    pub texts: u64,
    /// Their analysed tokens.
    pub tokens: u64,
}

/// One contrast (a class against the rest), one value per hidden state in the order of
/// `layers`. Every field is absent for the top level of a result with more than two
/// classes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Contrast {
    /// `|mean(class) - mean(rest)|`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diff_norm: Vec<f64>,
    /// Per label, its tokens' mean projection onto the unit difference of means.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub projection: BTreeMap<String, Vec<Option<f64>>>,
    /// Cohen's d of the projections onto the unit difference, `(m_b - m_a) / s` with `s`
    /// the pooled standard deviation over tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cohen_d: Vec<Option<f64>>,
    /// The Fisher criterion of the LDA direction: `diff^T (S_w + lambda I)^-1 diff`, the
    /// squared separation (Mahalanobis D^2) the best linear direction reaches; `S_w` is
    /// the pooled within-class covariance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fisher: Vec<Option<f64>>,
    /// Cosine between the LDA direction and the difference of means.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lda_cos: Vec<Option<f64>>,
    /// The probe's held-out R^2: `1 - sum_f SSE_f / sum_i (y_i - mean y)^2`, targets +1
    /// for the class and -1 for the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r2: Vec<Option<f64>>,
    /// The probe's held-out squared error summed over the folds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heldout_sse: Vec<Option<f64>>,
    /// Per hidden state, each fold's held-out squared error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fold_sse: Vec<Vec<Option<f64>>>,
    /// Cohen's d of the held-out predictions (each token scored by the probe fitted
    /// without its fold), class against rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heldout_cohen_d: Vec<Option<f64>>,
    /// Cosine between the difference of means here and at the previous selected state
    /// (`null` for the first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consecutive_cos: Vec<Option<f64>>,
}

/// Linear structure of the labelled classes, per hidden state.
// No `deny_unknown_fields`: serde does not combine it with the flattened contrast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DirectionsResult {
    /// Hidden-state labels.
    pub layers: Vec<String>,
    /// The labels in sorted order, with their texts and tokens.
    pub classes: Vec<ClassTokens>,
    /// The cross-validation folds, in order.
    pub folds: Vec<FoldTokens>,
    /// The probe's penalty.
    pub alpha: f64,
    /// LDA's ridge, as a fraction of the mean within-class variance.
    pub ridge: f64,
    /// The hidden states whose within-class covariance was singular, so LDA leaned on
    /// its ridge.
    pub ridge_needed: Vec<String>,
    /// Tokens left out for a NaN or infinite value.
    pub nonfinite_tokens: u64,
    /// With two classes: the second against the first.
    #[serde(flatten)]
    pub contrast: Contrast,
    /// With more than two classes: each against the rest, by label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_class: BTreeMap<String, Contrast>,
    /// The saved directions (`save:`), not part of results.json.
    #[serde(skip)]
    #[schemars(skip)]
    pub files: Files,
}

impl Analysis for Directions {
    const KIND: &'static str = "directions";
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
        if !(self.ridge >= 0.0 && self.ridge.is_finite()) {
            return Err(at.invalid(
                "ridge",
                self.ridge,
                "give a fraction of the mean variance, at least 0, e.g. 1e-6",
            ));
        }
        Ok(())
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
        let fold = fold_of(t.id, s.sums.folds);
        s.sums.observe(&states, t.dim, fold, label);
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
