//! The schema of `results.json`: every number a report shows, and where it came from.
//! Versioned; every field documented here is the format's documentation. Maps are
//! `BTreeMap` and lists keep spec order, so the same run gives the same bytes.

use serde::{Deserialize, Serialize};

use crate::model::ModelProvenance;

/// Version of this schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Results {
    /// Schema version of this file (currently 1).
    pub schema_version: u32,
    /// The experiment's name (output folder).
    pub name: String,
    /// The report title.
    pub title: String,
    /// Where every input came from.
    pub provenance: Provenance,
    /// Run settings taken from the spec.
    pub settings: Settings,
    /// The model's shape.
    pub model: ModelSummary,
    /// Every text, in input order.
    pub texts: Vec<TextRecord>,
    /// One entry per analysis, in spec order.
    pub analyses: Vec<AnalysisResult>,
}

/// Provenance of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Model id, requested revision, resolved commit, file hashes.
    pub model: ModelProvenance,
    /// sha256 of the spec file's bytes.
    pub spec_sha256: String,
    /// sha256 of the corpus file, when the texts come from one.
    pub corpus_sha256: Option<String>,
    /// strata's version.
    pub strata_version: String,
    /// The git commit strata was built from (`unknown` outside a checkout).
    pub strata_commit: String,
    /// candle-core's version.
    pub candle_version: String,
    /// Compute dtype (`f32`).
    pub dtype: String,
    /// Compute device (`cpu`).
    pub device: String,
}

/// Settings of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The spec's seed.
    pub seed: u64,
    /// Whether token 0 of each text was left out of every analysis.
    pub exclude_first_token: bool,
    /// Labels of the hidden states the spec's `layers` selected.
    pub layers: Vec<String>,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Tolerances pinned by the spec for `strata compare` (`null`: the defaults).
    pub compare: Option<crate::compare::Tolerances>,
}

/// The model's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSummary {
    /// Architecture: `config.json`'s `model_type` (`gpt2`, `llama`, `qwen2`, `bert`) or a
    /// GGUF file's `general.architecture`.
    pub architecture: String,
    /// GGUF only: the predominant tensor type of the weights (`Q4_1`), with
    /// ` (quantized matmul)` when they ran quantized. Absent for unquantized checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Labels of all `n_layers + 1` hidden states (`emb`, `h.0`, ...).
    pub labels: Vec<String>,
}

/// One text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextRecord {
    /// The text's id.
    pub id: String,
    /// Token count (including token 0, even when excluded from analyses).
    pub n_tokens: usize,
    /// Token ids.
    pub token_ids: Vec<u32>,
    /// Each token decoded on its own.
    pub tokens: Vec<String>,
}

/// Where a value sits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Text id.
    pub text: String,
    /// Token position in the text (0-based, counting token 0).
    pub token_index: usize,
    /// The token, decoded.
    pub token: String,
    /// Embedding dimension.
    pub dim: usize,
}

/// One hidden state's summary statistics. Moments are over every finite (token, dim)
/// value; `null` where undefined (no values, or zero variance for skewness/kurtosis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryRow {
    /// Hidden-state label.
    pub label: String,
    /// Finite values counted.
    pub count: u64,
    /// NaN or infinite values (left out of everything else).
    pub non_finite: u64,
    /// Mean (`np.mean`).
    pub mean: Option<f64>,
    /// Standard deviation, ddof 0 (`np.std`).
    pub std: Option<f64>,
    /// Minimum.
    pub min: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
    /// Skewness, biased (`scipy.stats.skew`).
    pub skewness: Option<f64>,
    /// Excess kurtosis, Fisher, biased (`scipy.stats.kurtosis`): 0 for a normal.
    pub kurtosis: Option<f64>,
    /// The value of largest magnitude (first occurrence on ties).
    pub max_abs: Option<f64>,
    /// Where `max_abs` sits.
    pub max_abs_at: Option<Location>,
}

/// The result of one analysis, tagged by `kind` as in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AnalysisResult {
    /// One hidden state of one text.
    Scatter {
        /// Hidden-state label.
        label: String,
        /// Text id.
        text: String,
        /// Token positions of the rows (token 0 absent when excluded).
        token_index: Vec<usize>,
        /// The tokens of the rows, decoded.
        tokens: Vec<String>,
        /// `[rows][dim]` activations (f32).
        #[serde(serialize_with = "short_f32_rows")]
        values: Vec<Vec<f32>>,
    },
    /// Covariance and shared variance across hidden states.
    Covariance {
        /// Hidden-state labels, the rows and columns of both matrices.
        labels: Vec<String>,
        /// (token, dim) points per hidden state.
        n_points: u64,
        /// Mean of each hidden state.
        means: Vec<f64>,
        /// Sample covariance, ddof 1 (`np.cov`).
        covariance: Vec<Vec<f64>>,
        /// Squared Pearson correlation (`np.corrcoef**2`); `null` where a hidden state
        /// has zero variance.
        r2: Vec<Vec<Option<f64>>>,
    },
    /// A joint sample of points across a few hidden states.
    Pairplot {
        /// Hidden-state labels, one column each.
        labels: Vec<String>,
        /// `first` or `random`.
        sample: crate::spec::SampleMode,
        /// Points available in the stream.
        n_seen: u64,
        /// Each point's position in the stream of (text, token, dim) points.
        point_index: Vec<u64>,
        /// `[label][point]` values (f32), the same points for every label.
        #[serde(serialize_with = "short_f32_rows")]
        columns: Vec<Vec<f32>>,
        /// Per label, the edges of the sample's histogram drawn on the grid's diagonal
        /// (`PAIRPLOT_BINS` equal bins from the sample's min to max).
        diagonal_edges: Vec<Vec<f64>>,
        /// Per label, the sample's counts on `diagonal_edges`.
        diagonal_counts: Vec<Vec<u64>>,
    },
    /// Histogram counts per hidden state.
    Histogram {
        /// Hidden-state labels, one row of counts each.
        labels: Vec<String>,
        /// `bins + 1` edges, `np.linspace(lo, hi, bins + 1)`.
        edges: Vec<f64>,
        /// `[label][bin]` counts; bin `i` is `[edges[i], edges[i+1])`, the last closed.
        counts: Vec<Vec<u64>>,
        /// Values below `edges[0]`, per label.
        underflow: Vec<u64>,
        /// Values above the last edge, per label.
        overflow: Vec<u64>,
        /// NaN values, per label.
        nan: Vec<u64>,
    },
    /// Summary statistics per hidden state.
    Summary {
        /// One row per hidden state.
        rows: Vec<SummaryRow>,
    },
    /// The values of largest magnitude per hidden state.
    Outliers {
        /// How many were kept per hidden state.
        k: usize,
        /// Hidden-state labels, one list each.
        labels: Vec<String>,
        /// `[label][rank]`: largest |value| first; ties keep the first occurrence (texts in
        /// order, then token, then dimension). Fewer than `k` when there are fewer values.
        top: Vec<Vec<Outlier>>,
    },
}

/// One large activation and where it sits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// The value (signed).
    pub value: f64,
    /// Text id.
    pub text: String,
    /// Token position in the text (0-based, counting token 0).
    pub token_index: usize,
    /// The token, decoded.
    pub token: String,
    /// Embedding dimension.
    pub dim: usize,
}

impl AnalysisResult {
    /// The `kind` as in the spec.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Scatter { .. } => "scatter",
            Self::Covariance { .. } => "covariance",
            Self::Pairplot { .. } => "pairplot",
            Self::Histogram { .. } => "histogram",
            Self::Summary { .. } => "summary",
            Self::Outliers { .. } => "outliers",
        }
    }
}

impl Results {
    /// JSON with a final newline: objects indented, arrays of plain values on one line
    /// (readable and diffable without a number per line). Same results, same bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).unwrap_or_default();
        let mut out = String::new();
        write_json(&value, 0, &mut out);
        out.push('\n');
        out.into_bytes()
    }

    /// Reads a `results.json`, checking its schema version first so an old or future
    /// file gets a clear message rather than a field error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        match v.get("schema_version").and_then(|s| s.as_u64()) {
            Some(n) if n == SCHEMA_VERSION as u64 => {}
            Some(n) => {
                return Err(format!(
                    "schema_version {n} is not supported (this strata reads version {SCHEMA_VERSION}): re-run the experiment with this strata"
                ))
            }
            None => return Err("no schema_version: not a strata results.json".into()),
        }
        serde_json::from_value(v).map_err(|e| format!("not a valid results.json: {e}"))
    }
}

/// f32 values written with the shortest decimals that read back as the same f32
/// (`0.54871857`, not the f64 widening `0.5487185716629028`).
fn short_f32_rows<S: serde::Serializer>(rows: &[Vec<f32>], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(rows.len()))?;
    for row in rows {
        let short: Vec<f64> = row
            .iter()
            .map(|x| x.to_string().parse::<f64>().unwrap_or(*x as f64))
            .collect();
        seq.serialize_element(&short)?;
    }
    seq.end()
}

/// Writes `v` indented by `depth` levels; arrays of scalars stay on one line.
fn write_json(v: &serde_json::Value, depth: usize, out: &mut String) {
    use serde_json::Value;
    let pad = |d: usize| "  ".repeat(d);
    match v {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (k, val)) in map.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_json(val, depth + 1, out);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
        Value::Array(items) if items.iter().any(|x| x.is_object() || x.is_array()) => {
            out.push_str("[\n");
            for (i, val) in items.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                write_json(val, depth + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push(']');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, val) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&val.to_string());
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
