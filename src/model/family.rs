//! What a family of architectures is to strata: the names it goes by (config.json's
//! `model_type`s, GGUF's `general.architecture`s), how its hyper-parameters are read from
//! either file, and how its network is built from any store of weights. Each family's file
//! implements [`Architecture`] once; [`super::families`] lists them, and both the
//! safetensors and the GGUF paths look a model up there.

use std::path::Path;

use super::error::ModelError;
use super::gguf::meta::Meta;
use super::stack::{HiddenStateModel, ModelInfo};
use super::weights::Store;

/// One family: a row of the table of families.
pub(crate) trait Architecture: Sync {
    /// The `model_type`s of a Hugging Face config.json it runs.
    fn model_types(&self) -> &'static [&'static str];
    /// The GGUF `general.architecture`s it runs (none: it is read from safetensors only).
    fn gguf_architectures(&self) -> &'static [&'static str] {
        &[]
    }
    /// Its hyper-parameters from a Hugging Face `config.json`, checked.
    fn config_params(&self, config: &Path) -> Result<Box<dyn Params>, ModelError>;
    /// Its hyper-parameters from a GGUF file's metadata (and, where llama.cpp's loader
    /// decides by them, its tensors' presence and shapes).
    fn gguf_params(&self, meta: &Meta) -> Result<Box<dyn Params>, ModelError>;
}

/// A family's hyper-parameters, whichever file they came from.
pub(crate) trait Params {
    /// Shape and labels.
    fn info(&self) -> ModelInfo;
    /// Attention heads (a GGUF store finds GPT-NeoX's fused rows by them).
    fn n_head(&self) -> usize;
    /// Experts per sparse block; 0 for a dense model (a GGUF store's stacked experts).
    fn n_experts(&self) -> usize {
        0
    }
    /// The network, its tensors read from `store` by their Hugging Face names.
    fn load(&self, store: &dyn Store) -> Result<Box<dyn HiddenStateModel>, ModelError>;
}
