//! The schema of `results.json`: every number a report shows, and where it came from.
//! Versioned; every field documented here is the format's documentation. Maps are
//! `BTreeMap` and lists keep spec order, so the same run gives the same bytes.

use serde::{Deserialize, Serialize};

pub use crate::analyses::AnalysisResult;
use crate::model::ModelProvenance;

/// Version of this schema; bumped on any incompatible change (2: `texts` lists the first
/// `settings.keep_texts` texts, `corpus` summarises them all).
pub const SCHEMA_VERSION: u32 = 2;

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
    /// Every text of the run: how many, their tokens, one digest of their token ids.
    pub corpus: CorpusSummary,
    /// The first `settings.keep_texts` texts, in input order, with their tokens.
    pub texts: Vec<TextRecord>,
    /// One entry per analysis, in spec order.
    pub analyses: Vec<AnalysisResult>,
}

/// Every text of a run, in a size that does not grow with the corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSummary {
    /// Texts (windows, with `window`).
    pub texts: usize,
    /// Their tokens (token 0 included, even when excluded from analyses).
    pub tokens: u64,
    /// sha256 over every text's digest in order, each the sha256 of its id and token ids
    /// (see [`text_digest`]): equal exactly when every id and token id is.
    pub sha256: String,
    /// `[tokens, texts]` pairs, ascending: how many texts have each token count.
    pub lengths: Vec<[u64; 2]>,
}

impl CorpusSummary {
    /// Checks the counts agree with one another.
    pub fn validate(&self) -> Result<(), String> {
        if self.texts == 0 {
            return Err("corpus.texts is 0 (a run has at least one text)".into());
        }
        let (texts, tokens) = self
            .lengths
            .iter()
            .fold((0u64, 0u64), |(n, t), [len, count]| {
                (n + count, t + len * count)
            });
        if (texts, tokens) != (self.texts as u64, self.tokens) {
            return Err(format!(
                "corpus.lengths counts {texts} texts of {tokens} tokens, corpus says {} of {}",
                self.texts, self.tokens
            ));
        }
        if !self.lengths.windows(2).all(|w| w[0][0] < w[1][0]) {
            return Err("corpus.lengths is not in ascending order of token counts".into());
        }
        Ok(())
    }
}

/// The digest of one text: sha256 of its id's length (u64 LE), its id's UTF-8 bytes, and
/// its token ids (u32 LE each).
pub fn text_digest(id: &str, token_ids: &[u32]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((id.len() as u64).to_le_bytes());
    h.update(id.as_bytes());
    for t in token_ids {
        h.update(t.to_le_bytes());
    }
    h.finalize().into()
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
    /// The Hub dataset the texts come from: id, split, resolved commit and every file's
    /// sha256 (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<crate::corpus::hub::DatasetProvenance>,
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
    /// The second models of `agreement` analyses, in spec order (absent when there are
    /// none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub companions: Vec<Companion>,
}

/// A second model run on the same token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Companion {
    /// Model id, revision, commit and file hashes.
    pub model: ModelProvenance,
    /// Its architecture (`model_type`).
    pub architecture: String,
    /// A GGUF file's tensor type, and whether its matmuls ran quantized.
    pub quantization: Option<String>,
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
    /// Most texts per forward pass.
    pub batch_size: usize,
    /// Most padded tokens per forward pass (0 in results written before it existed).
    #[serde(default)]
    pub batch_tokens: usize,
    /// Tolerances pinned by the spec for `strata compare` (`null`: the defaults).
    pub compare: Option<crate::compare::Tolerances>,
    /// How many texts `texts` lists with their tokens (the rest are in `corpus` only).
    pub keep_texts: usize,
    /// The windows texts were cut into (absent when texts ran whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSettings>,
}

/// How texts were cut into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSettings {
    /// Most tokens in a window.
    pub tokens: usize,
    /// Tokens between window starts.
    pub stride: usize,
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

/// JSON with a final newline: objects indented, arrays of plain values on one line
/// (readable and diffable without a number per line). Same value, same bytes.
pub fn pretty_json<T: Serialize>(value: &T) -> Vec<u8> {
    let value = serde_json::to_value(value).unwrap_or_default();
    let mut out = String::new();
    write_json(&value, 0, &mut out);
    out.push('\n');
    out.into_bytes()
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

impl Results {
    /// The file's bytes: [`pretty_json`].
    pub fn to_json(&self) -> Vec<u8> {
        pretty_json(self)
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
        let results: Results =
            serde_json::from_value(v).map_err(|e| format!("not a valid results.json: {e}"))?;
        results.validate().map_err(|e| {
            format!("{e}: the file is damaged or was edited by hand; run `strata report` again to rewrite it")
        })?;
        Ok(results)
    }

    /// Checks that every part fits the rest (one entry per label, square matrices,
    /// ascending edges with a count per bin, ...), so rendering or comparing a damaged
    /// file fails with a message instead of indexing out of bounds.
    pub fn validate(&self) -> Result<(), String> {
        self.corpus.validate()?;
        crate::analyses::expect_len(
            "texts (the first settings.keep_texts of corpus.texts)",
            self.texts.len(),
            self.corpus.texts.min(self.settings.keep_texts),
        )?;
        crate::analyses::expect_len(
            "model.labels (n_layers + 1)",
            self.model.labels.len(),
            self.model.n_layers + 1,
        )?;
        crate::analyses::expect_known_labels(&self.settings.layers, self)
            .map_err(|e| format!("settings.layers: {e}"))?;
        for (i, t) in self.texts.iter().enumerate() {
            crate::analyses::expect_len(
                &format!("texts[{i}].token_ids"),
                t.token_ids.len(),
                t.n_tokens,
            )?;
            crate::analyses::expect_len(&format!("texts[{i}].tokens"), t.tokens.len(), t.n_tokens)?;
        }
        for (i, a) in self.analyses.iter().enumerate() {
            a.validate(self)
                .map_err(|e| format!("analyses[{i}] ({}): {e}", a.kind()))?;
        }
        Ok(())
    }
}

/// f32 values written with the shortest decimals that read back as the same f32
/// (`0.54871857`, not the f64 widening `0.5487185716629028`).
pub fn short_f32_rows<S: serde::Serializer>(rows: &[Vec<f32>], s: S) -> Result<S::Ok, S::Error> {
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

/// Checks histogram `edges` against its `counts`: at least two edges, strictly ascending,
/// one count per bin.
pub fn check_edges(what: &str, edges: &[f64], counts: &[u64]) -> Result<(), String> {
    if edges.len() < 2 || !edges.windows(2).all(|w| w[0] < w[1]) {
        return Err(format!(
            "{what}: {} edges, not two or more ascending values",
            edges.len()
        ));
    }
    crate::analyses::expect_len(
        &format!("{what}: counts (one per bin between the edges)"),
        counts.len(),
        edges.len() - 1,
    )
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
