//! A model as a spec names it.

use std::path::Path;

use serde::Deserialize;

use crate::model::ModelRef;

/// Which model, at which revision.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A Hub repo id (`gpt2`) or a local folder, relative to the spec file or absolute.
    pub id: String,
    /// Hub branch, tag or commit. Default `main`.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// A GGUF file inside the Hub repo `id` names (for a local GGUF, give its path as `id`).
    #[serde(default)]
    pub file: Option<String>,
    /// GGUF only: keep the weights quantized and run quantized matmuls. Default false:
    /// weights are dequantized to f32, as transformers does, so the numbers match it.
    #[serde(default)]
    pub quantized: bool,
}

fn default_revision() -> String {
    "main".into()
}

impl ModelSpec {
    /// The model, with a folder or file named relative to `base` (the spec's folder)
    /// found from anywhere.
    pub fn resolve(&self, base: &Path) -> ModelRef {
        let path = base.join(&self.id);
        let id = if !Path::new(&self.id).is_absolute() && path.exists() {
            path.to_string_lossy().into_owned()
        } else {
            self.id.clone()
        };
        ModelRef {
            id,
            revision: self.revision.clone(),
            file: self.file.clone(),
            quantized: self.quantized,
        }
    }
}
