//! The directions kind's result in results.json: below the kind and its section, which
//! both read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::analyses::kind::Files;

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
