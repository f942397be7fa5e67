//! Errors of loading and running a model, and the helpers that make them.

use std::path::{Path, PathBuf};

/// Errors of loading and running a model. Each names what was wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `HF_HUB_OFFLINE` is set and the cache does not hold the model.
    #[error("model `{repo}` (revision `{revision}`) is not in the Hugging Face cache at {cache}, and HF_HUB_OFFLINE is set so nothing can be downloaded: {detail}; unset HF_HUB_OFFLINE to download it, or point HF_HUB_CACHE / HF_HOME at a cache that holds it")]
    NotCached {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// The cache folder searched.
        cache: PathBuf,
        /// What exactly is missing.
        detail: String,
    },
    /// The Hub answered that the repo or revision does not exist (or is private).
    #[error("model `{repo}` (revision `{revision}`) was not found on {endpoint} (HTTP {status}): check the repo id and revision; for a private or gated repo set HF_TOKEN; for a local folder pass a path that exists")]
    RepoNotFound {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// Hub endpoint asked.
        endpoint: String,
        /// HTTP status.
        status: u16,
    },
    /// Talking to the Hub failed for another reason (network, server).
    #[error("could not fetch `{file}` of model `{repo}` from {endpoint}: {detail}; check the network, or set HF_HUB_OFFLINE=1 to use the cache only")]
    Hub {
        /// Repo id.
        repo: String,
        /// File asked for (`(repo info)` for the revision lookup).
        file: String,
        /// Hub endpoint asked.
        endpoint: String,
        /// The underlying error.
        detail: String,
    },
    /// A local folder or snapshot lacks a file the model needs.
    #[error("{dir}: no {what}; a model folder needs config.json, model.safetensors (or model.safetensors.index.json and its shards), and tokenizer.json (or vocab.json + merges.txt)")]
    MissingFile {
        /// The folder looked in.
        dir: PathBuf,
        /// What is missing.
        what: String,
    },
    /// `--model` looks like a path but there is nothing there.
    #[error("model folder `{0}` does not exist: pass an existing folder, or a Hub repo id such as `gpt2` or `openai-community/gpt2`")]
    NoSuchFolder(String),
    /// `config.json` is not valid JSON or lacks a field.
    #[error("{path}: {cause}; {expect}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The parse error (names the field, line and column).
        cause: serde_json::Error,
        /// What a config of this family holds, as a fix.
        expect: &'static str,
    },
    /// `config.json` holds a value this loader does not support.
    #[error("{path}: field `{field}` = {value} is not supported: {fix}")]
    UnsupportedConfig {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: String,
        /// Its value.
        value: String,
        /// What would work.
        fix: String,
    },
    /// A safetensors file lacks a tensor, or holds one of the wrong shape or dtype.
    #[error("weights {path}: {detail}")]
    Weights {
        /// The weight file (the first shard when the tensor is missing).
        path: PathBuf,
        /// What is wrong, and what would work.
        detail: String,
    },
    /// A safetensors file fails the structural check.
    #[error("weights {path}: {detail}; the file is corrupt or incomplete: delete it and download it again")]
    CorruptWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The tokenizer files cannot be loaded.
    #[error("tokenizer {path}: {detail}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A text has more tokens than the model has positions.
    #[error("text `{text}` has {n_tokens} tokens but the model accepts at most {max} (n_positions): split the text (in a spec, `window: {{tokens: {max}}}` cuts every text into windows); strata never truncates silently")]
    TextTooLong {
        /// Text id.
        text: String,
        /// Its token count.
        n_tokens: usize,
        /// The model's limit.
        max: usize,
    },
    /// A token id has no row in the model's embedding.
    #[error("token id {id} is outside the model's vocabulary of {vocab}: the tokenizer does not belong to this model; use the tokenizer files that came with it")]
    TokenOutOfVocab {
        /// The id.
        id: u32,
        /// The embedding's rows.
        vocab: usize,
    },
    /// A text has no tokens.
    #[error("text `{0}` is empty: give it some content or remove it")]
    EmptyText(String),
    /// `config.json` names an architecture strata does not run.
    #[error("{path}: model_type `{model_type}` is not supported; supported: {supported}")]
    UnsupportedArchitecture {
        /// The config (or GGUF) file.
        path: PathBuf,
        /// Its `model_type` / `general.architecture`.
        model_type: String,
        /// What is supported.
        supported: String,
    },
    /// `--quantized` was asked of a model that is not a GGUF file.
    #[error("model `{0}`: quantized mode needs a GGUF file (its weights are what gets kept quantized); drop --quantized / `quantized: true`, or load a .gguf")]
    QuantizedNeedsGguf(String),
    /// A GGUF file is unreadable or lacks what a model needs.
    #[error("GGUF {path}: {detail}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what would work.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// A tensor operation failed during the forward pass.
    #[error("forward pass failed: {0}")]
    Forward(candle_core::Error),
}

// By hand rather than `#[from]`, which would also make candle's error the `source()`: the
// message already quotes it, and an error chain prints each cause once.
impl From<crate::digest::DigestError> for ModelError {
    fn from(e: crate::digest::DigestError) -> Self {
        Self::Io {
            path: e.path,
            cause: e.cause,
        }
    }
}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        Self::Forward(e)
    }
}

/// Makes [`ModelError::UnsupportedConfig`]s for the config at `path`, from (field, value,
/// what would work).
pub(crate) fn unsupported(path: &Path) -> impl Fn(&str, String, String) -> ModelError + '_ {
    move |field, value, fix| ModelError::UnsupportedConfig {
        path: path.to_path_buf(),
        field: field.to_string(),
        value,
        fix,
    }
}

/// Reads and parses a `config.json`; a parse error (bad JSON, a missing or mistyped field)
/// names the file and `expect`, what a config of this family holds.
pub(crate) fn read_config<T: serde::de::DeserializeOwned>(
    path: &Path,
    expect: &'static str,
) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        cause: source,
    })?;
    serde_json::from_str(&text).map_err(|source| ModelError::Config {
        path: path.to_path_buf(),
        cause: source,
        expect,
    })
}
