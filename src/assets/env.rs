//! Where assets are found: the environment, read once by the run's setup.

use crate::hub::HfEnv;

/// The environment assets are found in, read once: the Hub's variables and the tuned-lens
/// package's own (`TUNED_LENS_REPO_ID`, `TUNED_LENS_REPO_TYPE`).
#[derive(Debug, Clone)]
pub struct AssetEnv {
    /// The Hugging Face variables.
    pub hf: HfEnv,
    /// `TUNED_LENS_REPO_ID`: the repo published lenses are read from.
    pub lens_repo: Option<String>,
    /// `TUNED_LENS_REPO_TYPE`: that repo's kind (`space`, `model`, `dataset`).
    pub lens_repo_type: Option<String>,
}

impl AssetEnv {
    /// Reads the variables.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            hf: HfEnv::from_env(),
            lens_repo: var("TUNED_LENS_REPO_ID"),
            lens_repo_type: var("TUNED_LENS_REPO_TYPE"),
        }
    }
}
