//! The project kind's parameters, state and result: below the kind and its section,
//! which both read them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::model::ModelSpec;
use crate::stats::gram::Fixed;
use crate::stats::sketch::Sketch;

/// `{kind: project, vectors: directions/directions.safetensors, k: 10}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// The vectors file (safetensors, relative to the spec file): `NAME` names one `[d]`
    /// vector for every state, `NAME.{state}` (`NAME.h.12`) one for that state.
    pub vectors: PathBuf,
    /// Only these vectors (by `NAME`). Default: every vector of the file.
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// Tokens listed per vector and state: those that project highest. Default 10.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Histogram bins, between the lowest and highest projection. Default 30.
    #[serde(default = "default_bins")]
    pub bins: usize,
    /// A second model (a fine-tune, a new version) whose hidden states are projected
    /// onto the same vectors, on the same token ids: it must have the spec's model's
    /// layers and hidden size.
    #[serde(default)]
    pub model: Option<ModelSpec>,
}

fn default_k() -> usize {
    10
}

fn default_bins() -> usize {
    30
}

/// One class's sums at one state of one vector.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSums {
    /// Tokens projected.
    pub n: u64,
    /// `[sum p, sum p^2]` on the fixed-point grid.
    pub sums: Fixed,
    /// The projections, by log bucket.
    pub sketch: Sketch,
    /// The second model's tokens and `sum p`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub companion: Option<(u64, Fixed)>,
}

/// A token that projects high.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopToken {
    /// Its projection.
    pub value: f64,
    /// The text's id.
    pub text: String,
    /// The text's label, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Token position in the text (0-based, counting token 0).
    pub token_index: usize,
    /// The token, decoded.
    pub token: String,
}

/// One vector's sums.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorState {
    /// Its name.
    pub name: String,
    /// The indices (into the state's `layers`) of the states it has a vector for.
    pub states: Vec<usize>,
    /// Per such state, the vector's norm.
    pub norms: Vec<f64>,
    /// Per such state, the unit vector (from the file, not kept in partials).
    #[serde(skip)]
    pub units: Vec<Vec<f64>>,
    /// Per such state, every token's sums.
    pub all: Vec<ClassSums>,
    /// Per label, per such state, its tokens' sums.
    pub by_label: BTreeMap<String, Vec<ClassSums>>,
    /// Per such state, the `k` tokens that project highest, each with its text's global
    /// index (which orders ties).
    pub top: Vec<Vec<(usize, TopToken)>>,
    /// The indices (into `layers`) of the states where the file's vector is zero.
    #[serde(default)]
    pub zero: Vec<usize>,
}

/// The sums so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectState {
    /// The vectors file as the spec names it.
    pub file: String,
    /// Its sha256.
    pub sha256: String,
    /// Hidden-state indices read.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// Tokens listed.
    pub k: usize,
    /// Histogram bins.
    pub bins: usize,
    /// The second model: its index among the spec's, and its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub companion: Option<(usize, String)>,
    /// Every vector's sums.
    pub vectors: Vec<VectorState>,
}

/// One class's projections at every state of one vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Projection {
    /// Tokens projected, per state.
    pub tokens: Vec<u64>,
    /// Mean projection, per state.
    pub mean: Vec<Option<f64>>,
    /// Standard deviation of the projections (ddof 0), per state.
    pub std: Vec<Option<f64>>,
    /// Per state, the histogram's counts on that state's `edges`.
    pub counts: Vec<Vec<u64>>,
    /// The second model's mean projection, per state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub companion_mean: Option<Vec<Option<f64>>>,
    /// `companion_mean - mean`, per state: how far the second model moved along the
    /// vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<Vec<Option<f64>>>,
}

/// One vector's projections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorResult {
    /// Its name.
    pub name: String,
    /// The hidden states it has a vector for.
    pub states: Vec<String>,
    /// The selected states where its vector is zero (left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zero: Vec<String>,
    /// Its norm at each.
    pub norm: Vec<f64>,
    /// Per state, the histogram's bin edges (from the lowest to the highest projection,
    /// within 0.5%).
    pub edges: Vec<Vec<f64>>,
    /// Every token.
    pub all: Projection,
    /// Per label, its tokens (empty when the texts have no labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_label: BTreeMap<String, Projection>,
    /// Per state, the `k` tokens that project highest.
    pub top: Vec<Vec<TopToken>>,
}

/// Projections of the corpus onto the vectors of a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectResult {
    /// The vectors file as the spec names it.
    pub file: String,
    /// Its sha256.
    pub sha256: String,
    /// The second model's id, when one was projected too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub companion: Option<String>,
    /// Every vector, in name order.
    pub vectors: Vec<VectorResult>,
}
