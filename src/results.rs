//! The schema of `results.json`: every number a report shows, and where it came from.
//! Versioned; every field documented here is the format's documentation. Maps are
//! `BTreeMap` and lists keep spec order, so the same run gives the same bytes.

use serde::{Deserialize, Serialize};

pub use crate::analyses::kind::Location;
use crate::analyses::kind::{Context, KindError};
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
    /// (see [`crate::digest::text_digest`]): equal exactly when every id and token id is.
    pub sha256: String,
    /// `[tokens, texts]` pairs, ascending: how many texts have each token count.
    pub lengths: Vec<[u64; 2]>,
    /// The texts' labels in sorted order (byte order), each with its texts and tokens;
    /// absent when no text has a label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<ClassCount>,
}

/// One label of a corpus, and how much of the corpus has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassCount {
    /// The label.
    pub label: String,
    /// Texts (windows, with `window`) with it.
    pub texts: u64,
    /// Their tokens, counted as `corpus.tokens` counts them.
    pub tokens: u64,
}

impl CorpusSummary {
    /// Checks the counts agree with one another.
    pub fn validate(&self) -> Result<(), Inconsistent> {
        if self.texts == 0 {
            return Err(Inconsistent::Corpus(
                "corpus.texts is 0 (a run has at least one text)".into(),
            ));
        }
        let (texts, tokens) = self
            .lengths
            .iter()
            .fold((0u64, 0u64), |(n, t), [len, count]| {
                (n + count, t + len * count)
            });
        if (texts, tokens) != (self.texts as u64, self.tokens) {
            return Err(Inconsistent::Corpus(format!(
                "corpus.lengths counts {texts} texts of {tokens} tokens, corpus says {} of {}",
                self.texts, self.tokens
            )));
        }
        if !self.lengths.windows(2).all(|w| w[0][0] < w[1][0]) {
            return Err(Inconsistent::Corpus(
                "corpus.lengths is not in ascending order of token counts".into(),
            ));
        }
        if !self.labels.windows(2).all(|w| w[0].label < w[1].label) {
            return Err(Inconsistent::Corpus(
                "corpus.labels is not in sorted order of labels, each once".into(),
            ));
        }
        let (labelled, labelled_tokens) = self
            .labels
            .iter()
            .fold((0u64, 0u64), |(n, t), c| (n + c.texts, t + c.tokens));
        if labelled > self.texts as u64 || labelled_tokens > self.tokens {
            return Err(Inconsistent::Corpus(format!(
                "corpus.labels counts {labelled} texts of {labelled_tokens} tokens, more than the corpus' {} of {}",
                self.texts, self.tokens
            )));
        }
        Ok(())
    }
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
    /// ` (quantized matmul)` when they ran quantized, and `; Q3_K one row at a time` naming
    /// the types without a batched kernel (slower, same numerics). Absent for unquantized
    /// checkpoints.
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
    /// Width of the `attn_z` site (heads × head width): recorded when an analysis reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_width: Option<usize>,
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
    /// The text's label, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl Results {
    /// What the analyses' results are checked and shown against.
    pub fn context(&self) -> Context<'_> {
        Context {
            labels: &self.model.labels,
            hidden_size: self.model.hidden_size,
            intermediate_size: self.model.intermediate_size,
            attention_width: self.model.attention_width,
            layers: &self.settings.layers,
            seed: self.settings.seed,
            exclude_first_token: self.settings.exclude_first_token,
        }
    }

    /// The file's bytes: [`crate::json::pretty_json`].
    pub fn to_json(&self) -> Vec<u8> {
        crate::json::pretty_json(self)
    }

    /// Reads a `results.json`, checking its schema version first so an old or future
    /// file gets a clear message rather than a field error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ResultsError> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(ResultsError::NotJson)?;
        Self::from_value(v)
    }

    /// [`Results::from_json`] of a file already parsed as JSON.
    pub fn from_value(v: serde_json::Value) -> Result<Self, ResultsError> {
        crate::json::check_schema_version(
            &v,
            SCHEMA_VERSION,
            "version",
            "results.json",
            "re-run the experiment with this strata",
        )?;
        let results: Results = serde_json::from_value(v).map_err(ResultsError::Fields)?;
        results.validate().map_err(ResultsError::Damaged)?;
        Ok(results)
    }

    /// Checks that every part fits the rest (one entry per label, square matrices,
    /// ascending edges with a count per bin, ...), so rendering or comparing a damaged
    /// file fails with a message instead of indexing out of bounds.
    pub fn validate(&self) -> Result<(), Inconsistent> {
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
            .map_err(Inconsistent::Layers)?;
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
            a.validate(&cx).map_err(|error| Inconsistent::Analysis {
                index: i,
                kind: a.kind(),
                error,
            })?;
        }
        Ok(())
    }
}

/// Why bytes are not a results.json strata can use.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// Not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    /// Another schema version, or none.
    #[error(transparent)]
    Version(#[from] crate::json::VersionError),
    /// JSON whose fields are not results.json's.
    #[error("not a valid results.json: {0}")]
    Fields(serde_json::Error),
    /// Fields that do not fit together.
    #[error(
        "{0}: the file is damaged or was edited by hand; run `strata report` again to rewrite it"
    )]
    Damaged(Inconsistent),
}

/// Parts of a results.json that do not fit the rest.
#[derive(Debug, thiserror::Error)]
pub enum Inconsistent {
    /// The corpus summary's counts.
    #[error("{0}")]
    Corpus(String),
    /// A list of the wrong length, outside the analyses.
    #[error(transparent)]
    List(#[from] KindError),
    /// The spec's `layers` name hidden states the model lacks.
    #[error("settings.layers: {0}")]
    Layers(KindError),
    /// An analysis's result.
    #[error("analyses[{index}] ({kind}): {error}")]
    Analysis {
        /// Its position in `analyses`.
        index: usize,
        /// Its kind.
        kind: &'static str,
        /// What does not fit.
        error: KindError,
    },
}
