//! Models: where their files come from ([`hub`]), how text becomes ids ([`tokenizer`]), and
//! one file per architecture, each returning every hidden state of a batch of texts.

pub mod bert;
pub mod capture;
pub mod decoder;
pub mod error;
pub mod families;
pub(crate) mod family;
pub mod gemma;
pub mod gguf;
pub mod gpt2;
pub mod gpt_neox;
pub mod hub;
pub mod kernels;
pub mod llama;
pub mod moe;
pub mod ops;
pub(crate) mod quant;
pub mod shared_head;
pub mod stack;
pub(crate) mod storage;
pub mod tokenizer;
pub mod topk;
pub mod variants;
pub(crate) mod weights;

use std::path::{Path, PathBuf};

pub use capture::{Capture, Site};
pub use error::ModelError;
pub use hub::{ModelFiles, ModelProvenance, ModelRef};
pub use stack::{HiddenStateModel, ModelInfo, Patch, Readout, TextStates, PRE_FINAL_NORM};
pub use tokenizer::TextTokenizer;
pub use weights::check_safetensors;

/// A model ready to run: weights, tokenizer, and where they came from.
pub struct LoadedModel {
    /// The network.
    pub model: Box<dyn HiddenStateModel>,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// Model id, revision, commit and file hashes.
    pub provenance: ModelProvenance,
}

/// Tells glibc's malloc to keep freed memory for reuse instead of handing it back to the
/// kernel. A forward allocates and frees buffers of megabytes at every layer (ours, and the
/// packing buffers inside `gemm`). By default glibc serves those from fresh `mmap`s or
/// trims them off the heap as soon as they are freed, so every layer paid page faults and
/// zeroing again: 10-13% of a 124M GPT-2 forward on 512 tokens (0.67 -> 0.59 s, measured
/// with both settings; either alone gained nothing). The cost is that the process's
/// resident memory stays at its peak instead of shrinking between forwards. Process-wide
/// and idempotent; a no-op off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            unsafe extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            // <malloc.h>: M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3. 32 MiB is glibc's
            // largest mmap threshold (HEAP_MAX / 2); bigger blocks (embedding tables) are
            // still mapped, and freed, on their own.
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            // SAFETY: mallopt only changes malloc's tuning; both values are in range, and a
            // refused setting (return 0) leaves the default, which is still correct.
            unsafe {
                mallopt(M_TRIM_THRESHOLD, 1 << 30);
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
            }
        });
    }
}

impl LoadedModel {
    /// Resolves `model` (Hub id or folder) at `revision`, then loads it.
    pub fn load(model: &ModelRef) -> Result<Self, ModelError> {
        let files = model.resolve()?;
        Self::from_files_with(&files, model.quantized)
    }

    /// Loads resolved files (GGUF weights dequantized).
    pub fn from_files(files: &ModelFiles) -> Result<Self, ModelError> {
        Self::from_files_with(files, false)
    }

    /// Loads resolved files; `quantized` keeps GGUF weights quantized.
    pub fn from_files_with(files: &ModelFiles, quantized: bool) -> Result<Self, ModelError> {
        keep_freed_memory();
        let model = match Format::of(&files.config) {
            Format::Gguf => gguf::load(&files.config, quantized)?,
            Format::Safetensors if quantized => {
                return Err(ModelError::QuantizedNeedsGguf(files.id.clone()))
            }
            Format::Safetensors => load_network(&files.config, &files.weights)?,
        };
        let tokenizer = TextTokenizer::load(&files.tokenizer)?;
        let provenance = files.provenance()?;
        Ok(Self {
            model,
            tokenizer,
            provenance,
        })
    }

    /// A text's token ids, of any length (to be cut into windows); an empty one fails.
    pub fn tokenize(&self, text_id: &str, text: &str) -> Result<Vec<u32>, ModelError> {
        let ids = self.tokenizer.encode(text)?;
        if ids.is_empty() {
            return Err(ModelError::EmptyText(text_id.to_string()));
        }
        Ok(ids)
    }

    /// Tokenizes `text` (id `text_id` for messages), checking it fits the model.
    pub fn encode(&self, text_id: &str, text: &str) -> Result<Vec<u32>, ModelError> {
        let ids = self.tokenize(text_id, text)?;
        let max = self.model.info().max_positions;
        if ids.len() > max {
            return Err(ModelError::TextTooLong {
                text: text_id.to_string(),
                n_tokens: ids.len(),
                max,
            });
        }
        Ok(ids)
    }
}

/// The shape and labels a model will have, from its `config.json` alone (no weights).
pub fn read_info(config: &Path) -> Result<ModelInfo, ModelError> {
    match Format::of(config) {
        Format::Gguf => gguf::read_info(config),
        Format::Safetensors => Ok(families::of_config(config)?.config_params(config)?.info()),
    }
}

/// How a checkpoint's files store it, apart from what architecture it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A Hugging Face folder: `config.json` and safetensors weights.
    Safetensors,
    /// One GGUF file: hyper-parameters, tokenizer and weights (llama.cpp's format); its
    /// `general.architecture` names the family.
    Gguf,
}

impl Format {
    /// A GGUF file by its magic bytes; anything else is a `config.json`.
    pub fn of(config: &Path) -> Self {
        if gguf::is_gguf(config) {
            Self::Gguf
        } else {
            Self::Safetensors
        }
    }
}

/// The network of a Hugging Face folder's `config.json` and safetensors `weights`, by the
/// family its `model_type` names (no tokenizer: what the parity tests load).
pub fn load_network(
    config: &Path,
    weights: &[PathBuf],
) -> Result<Box<dyn HiddenStateModel>, ModelError> {
    let params = families::of_config(config)?.config_params(config)?;
    params.load(&weights::WeightFiles::open(weights)?)
}

/// Bytes a model's weights take in memory once loaded: their files' size, since weights
/// stay in the dtype (or GGUF blocks) their files store. What `strata validate` reports
/// when a spec holds two models at once.
pub fn loaded_weight_bytes(files: &ModelFiles) -> Result<u64, ModelError> {
    let mut total = 0;
    for path in &files.weights {
        total += std::fs::metadata(path)
            .map_err(|cause| ModelError::Io {
                path: path.clone(),
                cause,
            })?
            .len();
    }
    Ok(total)
}
