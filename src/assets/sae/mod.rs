//! Published sparse autoencoders and transcoders, read into one form: the encoder
//! `W_enc [d_in, d_sae]` and `b_enc`, the decoder `W_dec [d_sae, d_in]` and `b_dec`, the
//! activation (`standard` ReLU, `jumprelu` with per-feature thresholds, `topk`, `gated`)
//! and what the SAE does to its input before encoding (`apply_b_dec_to_input`, the
//! normalisations). Every format people publish is read as SAELens reads it
//! ([`formats`]): SAELens 6 and its earlier configs, Gemma Scope (`params.npz`), Gemma
//! Scope 2 (`params.safetensors`), EleutherAI's sparsify, dictionary_learning's `ae.pt`
//! and Llama Scope. A dataset-wide input scale (`expected_average_only_in`, Llama Scope's
//! average norm) is folded into the weights as SAELens folds it, so the SAE is applied to
//! the stream as captured.
//!
//! Read once by the run's setup ([`super::Assets`]); the `sae` kind maps the hook onto a
//! capture site and applies it.

pub mod formats;
pub mod types;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::env::AssetEnv;
use crate::hub::{looks_like_path, repo_pick};
pub use types::{Activation, Normalize, Sae, SaeError, SaeFormat, SaeSource};

/// Where an SAE is, as a spec names it: a local folder, or a folder of a Hub repo.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum SaeLocation {
    /// A local folder holding one SAE's files.
    Folder(String),
    /// A folder of a Hub model repo: `{repo: ORG/NAME, path: FOLDER, revision: main}`.
    Hub {
        /// The repo.
        repo: String,
        /// The SAE's folder in it (empty or absent: the repo's root).
        #[serde(default)]
        path: String,
        /// Branch, tag or commit (default `main`).
        #[serde(default = "main")]
        revision: String,
    },
}

fn main() -> String {
    "main".into()
}

impl std::fmt::Display for SaeLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Folder(p) => f.write_str(p),
            Self::Hub {
                repo,
                path,
                revision,
            } => write!(f, "{repo}/{path}@{revision}"),
        }
    }
}

/// The file sets each format comes in, most complete first (optional files make the
/// first of two sets), relative to the SAE's folder.
const LAYOUTS: &[(SaeFormat, &[&str])] = &[
    (
        SaeFormat::SaeLens,
        &[
            "cfg.json",
            "sae_weights.safetensors",
            "sparsity.safetensors",
        ],
    ),
    (SaeFormat::SaeLens, &["cfg.json", "sae_weights.safetensors"]),
    (SaeFormat::Sparsify, &["cfg.json", "sae.safetensors"]),
    (SaeFormat::GemmaScope, &["params.npz"]),
    (
        SaeFormat::GemmaScope2,
        &["params.safetensors", "config.json"],
    ),
    (SaeFormat::GemmaScope2, &["params.safetensors"]),
    (SaeFormat::DictionaryLearning, &["ae.pt", "config.json"]),
    (
        SaeFormat::LlamaScope,
        &["hyperparams.json", "checkpoints/final.safetensors"],
    ),
];

/// The files of the SAE at `at`: its format, the paths of that format's file set, and
/// the repo and commit they came from.
type Located = (SaeFormat, Vec<PathBuf>, Option<String>, Option<String>);

fn locate(at: &SaeLocation, env: &AssetEnv) -> Result<Located, SaeError> {
    match at {
        SaeLocation::Folder(dir) => {
            let folder = Path::new(dir);
            if !folder.is_dir() {
                if looks_like_path(dir) || folder.exists() {
                    return Err(SaeError::NoFolder(dir.clone()));
                }
                return Err(SaeError::NoFolder(format!(
                    "{dir}` (a Hub SAE is written `{{repo: ORG/NAME, path: FOLDER}}`)"
                )));
            }
            let (format, names) = LAYOUTS
                .iter()
                .find(|(_, names)| names.iter().all(|n| folder.join(n).is_file()))
                .ok_or_else(|| SaeError::NoFormat(folder.to_path_buf()))?;
            let paths = names.iter().map(|n| folder.join(n)).collect();
            Ok((*format, paths, None, None))
        }
        SaeLocation::Hub {
            repo,
            path,
            revision,
        } => {
            let prefix = path.trim_matches('/');
            let full = |n: &str| match prefix {
                "" => n.to_string(),
                p => format!("{p}/{n}"),
            };
            let candidates: Vec<Vec<String>> = LAYOUTS
                .iter()
                .map(|(_, names)| names.iter().map(|n| full(n)).collect())
                .collect();
            let (commit, i, paths) = repo_pick(
                repo,
                hf_hub::RepoType::Model,
                revision,
                &candidates,
                &env.hf,
            )?;
            Ok((LAYOUTS[i].0, paths, Some(repo.clone()), Some(commit)))
        }
    }
}

/// Reads the SAE at `at` (a folder, relative to `base` unless absolute, or a folder of a
/// Hub repo); `scale` is the dataset-wide input scale of an `expected_average_only_in`
/// SAE whose files do not give it.
pub fn load(
    at: &SaeLocation,
    base: &Path,
    scale: Option<f64>,
    env: &AssetEnv,
) -> Result<Sae, SaeError> {
    let found = match at {
        SaeLocation::Folder(dir) => SaeLocation::Folder(base.join(dir).to_string_lossy().into()),
        hub => hub.clone(),
    };
    let (format, paths, repo, commit) = locate(&found, env)?;
    let folder = paths[0].parent().unwrap_or(Path::new(".")).to_path_buf();
    let read = formats::read(format, &folder, &paths)?;
    let weights_sha256 = crate::digest::sha256_cached(&read.weights_path)?;
    let source = SaeSource {
        id: at.to_string(),
        format: read.format,
        repo,
        commit,
        model_name: read.model_name.clone(),
        weights_sha256,
    };
    read.into_sae(source, scale)
}
