//! The table of families: every architecture strata runs, each named once with the
//! `model_type`s and GGUF architectures it goes by. The safetensors path looks a model up
//! here by its config.json, the GGUF path by its `general.architecture`, and messages
//! list what is supported from it. Adding a family is a file that implements
//! [`Architecture`] and a row below.

use std::path::Path;

use super::error::{read_config, ModelError};
use super::family::Architecture;

/// Every family, in the order messages list them.
static FAMILIES: &[&dyn Architecture] = &[
    &super::gpt2::Family,
    &super::gpt_neox::Family,
    &super::llama::Family,
    &super::gemma::Family,
    &super::bert::Family,
];

/// Every supported `model_type`, for messages.
pub fn model_types() -> String {
    FAMILIES
        .iter()
        .flat_map(|f| f.model_types().iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every GGUF `general.architecture` strata reads.
pub fn gguf_architectures() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.gguf_architectures().iter().copied())
        .collect()
}

/// The family of a Hugging Face `config.json`, by its `model_type`.
pub(crate) fn of_config(config: &Path) -> Result<&'static dyn Architecture, ModelError> {
    #[derive(serde::Deserialize)]
    struct Head {
        model_type: Option<String>,
    }
    let head: Head = read_config(
        config,
        "a Hugging Face config.json is a JSON object whose `model_type` names the architecture",
    )?;
    // GPT-2 checkpoints predating `model_type` carry GPT-2's own field names.
    let t = head.model_type.unwrap_or_else(|| "gpt2".into());
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.model_types().contains(&t.as_str()))
        .ok_or_else(|| ModelError::UnsupportedArchitecture {
            path: config.to_path_buf(),
            model_type: t,
            supported: model_types(),
        })
}

/// The family of a GGUF `general.architecture`.
pub(crate) fn of_gguf(arch: &str) -> Option<&'static dyn Architecture> {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.gguf_architectures().contains(&arch))
}
