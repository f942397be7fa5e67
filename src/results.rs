//! The schema of `results.json`: every number a report shows, and where it came from.
//! Versioned; every field documented here is the format's documentation. Maps are
//! `BTreeMap` and lists keep spec order, so the same run gives the same bytes.

use serde::{Deserialize, Serialize};

use crate::analyses::kind::Context;
pub use crate::analyses::kind::Location;
pub use crate::analyses::{Analysed, AnalysisResult};
use crate::model::ModelProvenance;

/// Version of this schema; bumped on any incompatible change (2: `texts` lists the first
/// `settings.keep_texts` texts, `corpus` summarises them all).
pub const SCHEMA_VERSION: u32 = 2;

/// A whole `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
    pub analyses: Vec<Analysed>,
}

/// Every text of a run, in a size that does not grow with the corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Companion {
    /// Model id, revision, commit and file hashes.
    pub model: ModelProvenance,
    /// Its architecture (`model_type`).
    pub architecture: String,
    /// A GGUF file's tensor type, and whether its matmuls ran quantized.
    pub quantization: Option<String>,
}

/// `, GGUF Q4_1` after an architecture, for a quantized model.
pub fn gguf_note(quantization: &Option<String>) -> String {
    quantization
        .as_deref()
        .map(|q| format!(", GGUF {q}"))
        .unwrap_or_default()
}

/// Second model `i` (from 0): id and architecture, commit, weight hashes.
fn companion_rows(i: usize, c: &Companion) -> Vec<(String, String)> {
    let name = format!("second model {}", i + 1);
    let mut rows = vec![(
        name.clone(),
        format!(
            "{} ({}{})",
            c.model.id,
            c.architecture,
            gguf_note(&c.quantization)
        ),
    )];
    if let Some(commit) = &c.model.commit {
        rows.push((format!("{name} commit"), commit.clone()));
    }
    for (f, h) in &c.model.weights_sha256 {
        rows.push((format!("{name}: {f} sha256"), h.clone()));
    }
    rows
}

/// A Hub dataset: id, config and split, commit, every file's sha256.
fn dataset_rows(d: &crate::corpus::hub::DatasetProvenance) -> Vec<(String, String)> {
    let mut rows = vec![
        (
            "dataset".to_string(),
            format!("{} (config {}, split {})", d.id, d.config, d.split),
        ),
        (
            "dataset commit".to_string(),
            format!("{} ({})", d.commit, d.revision),
        ),
    ];
    for (f, h) in &d.files_sha256 {
        rows.push((format!("dataset {f} sha256"), h.clone()));
    }
    rows
}

/// Settings of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// Most tokens per forward pass (0 in results written before it existed).
    #[serde(default)]
    pub batch_tokens: usize,
    /// Tolerances pinned by the spec for `strata compare` (`null`: the defaults).
    pub compare: Option<crate::compare::rules::Tolerances>,
    /// How many texts `texts` lists with their tokens (the rest are in `corpus` only).
    pub keep_texts: usize,
    /// The windows texts were cut into (absent when texts ran whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSettings>,
}

/// How texts were cut into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSettings {
    /// Most tokens in a window.
    pub tokens: usize,
    /// Tokens between window starts.
    pub stride: usize,
}

/// The model's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSummary {
    /// Architecture: `config.json`'s `model_type` (`gpt2`, `llama`, `qwen2`, `bert`) or a
    /// GGUF file's `general.architecture`.
    pub architecture: String,
    /// GGUF only: the predominant tensor type of the weights (`Q4_1`), with
    /// ` (quantized matmul)` when they ran quantized. Absent for unquantized checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// GGUF only: every tensor type the file holds (`F32`, `Q4_K`, `Q6_K`), sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor_types: Option<Vec<String>>,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Width of the MLP's inner activation: recorded when an analysis reads `mlp_act`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<usize>,
    /// Labels of all `n_layers + 1` hidden states (`emb`, `h.0`, ...).
    pub labels: Vec<String>,
    /// A mixture of experts: experts per sparse block. Absent for a dense model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_experts: Option<usize>,
    /// A mixture of experts: experts chosen per token. Absent for a dense model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// A mixture of experts: its sparse blocks (the others have a dense MLP). Absent for a
    /// dense model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_blocks: Option<Vec<usize>>,
}

/// One text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

impl Results {
    /// What the analyses' results are checked and shown against.
    pub fn context(&self) -> Context<'_> {
        Context {
            labels: &self.model.labels,
            hidden_size: self.model.hidden_size,
            intermediate_size: self.model.intermediate_size,
            layers: &self.settings.layers,
            seed: self.settings.seed,
            exclude_first_token: self.settings.exclude_first_token,
        }
    }

    /// The provenance as `(label, value)` rows: what the report shows, and exactly what
    /// `strata compare` diffs.
    pub fn provenance_rows(&self) -> Vec<(String, String)> {
        let p = &self.provenance;
        let mut rows = self.model_rows();
        for (i, c) in p.companions.iter().enumerate() {
            rows.extend(companion_rows(i, c));
        }
        rows.push(("spec sha256".into(), p.spec_sha256.clone()));
        if let Some(c) = &p.corpus_sha256 {
            rows.push(("corpus sha256".into(), c.clone()));
        }
        if let Some(d) = &p.dataset {
            rows.extend(dataset_rows(d));
        }
        rows.extend(self.run_rows());
        rows
    }

    /// The model: id, source, revision, commit, shape and every file's sha256.
    fn model_rows(&self) -> Vec<(String, String)> {
        let m = &self.provenance.model;
        let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "—".into());
        let mut rows = vec![
            ("model".to_string(), m.id.clone()),
            ("source".to_string(), m.source.clone()),
            ("revision".to_string(), dash(&m.revision)),
            ("commit".to_string(), dash(&m.commit)),
            (
                "architecture".to_string(),
                format!(
                    "{} ({} layers, {} dims){}",
                    self.model.architecture,
                    self.model.n_layers,
                    self.model.hidden_size,
                    gguf_note(&self.model.quantization)
                ),
            ),
            ("config.json sha256".to_string(), m.config_sha256.clone()),
        ];
        for (f, h) in m.weights_sha256.iter().chain(&m.tokenizer_sha256) {
            rows.push((format!("{f} sha256"), h.clone()));
        }
        rows
    }

    /// How strata ran: its build, candle, the numerics, the seed and token 0.
    fn run_rows(&self) -> Vec<(String, String)> {
        let p = &self.provenance;
        let first = if self.settings.exclude_first_token {
            "excluded from analyses"
        } else {
            "included"
        };
        vec![
            (
                "strata".to_string(),
                format!("{} ({})", p.strata_version, p.strata_commit),
            ),
            ("candle".to_string(), p.candle_version.clone()),
            (
                "numerics".to_string(),
                format!("{} on {}", p.dtype, p.device),
            ),
            ("seed".to_string(), self.settings.seed.to_string()),
            ("first token".to_string(), first.to_string()),
        ]
    }

    /// The file's bytes: [`crate::json::pretty_json`].
    pub fn to_json(&self) -> Vec<u8> {
        crate::json::pretty_json(self)
    }

    /// Reads a `results.json`, checking its schema version first so an old or future
    /// file gets a clear message rather than a field error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        Self::from_value(v)
    }

    /// [`Results::from_json`] of a file already parsed as JSON.
    pub fn from_value(v: serde_json::Value) -> Result<Self, String> {
        crate::json::check_schema_version(
            &v,
            SCHEMA_VERSION,
            "version",
            "results.json",
            "re-run the experiment with this strata",
        )?;
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
        crate::analyses::expect_known_labels(&self.settings.layers, &self.model.labels)
            .map_err(|e| format!("settings.layers: {e}"))?;
        for (i, t) in self.texts.iter().enumerate() {
            crate::analyses::expect_len(
                &format!("texts[{i}].token_ids"),
                t.token_ids.len(),
                t.n_tokens,
            )?;
            crate::analyses::expect_len(&format!("texts[{i}].tokens"), t.tokens.len(), t.n_tokens)?;
        }
        let cx = self.context();
        for (i, a) in self.analyses.iter().enumerate() {
            a.validate(&cx)
                .map_err(|e| format!("analyses[{i}] ({}): {e}", a.kind()))?;
        }
        Ok(())
    }
}
