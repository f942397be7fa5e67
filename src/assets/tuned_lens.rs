//! Pretrained tuned lenses (Belrose et al. 2023, "Eliciting latent predictions from
//! transformers with the tuned lens"): hidden state `i < L` is read through a learned
//! affine map before the model's own head, `unembed(final_norm(h + A_i h + b_i))`. The
//! last hidden state needs none: it is the model's output.
//!
//! Lenses are read as the `tuned-lens` package saves and publishes them: a folder with a
//! `config.json` (`d_model`, `num_hidden_layers`, `bias`) and a `params.pt`, the torch
//! zip-pickle of the translators' state dict (`0.weight`, `0.bias`, ... per layer), read
//! with candle's pickle reader. Published lenses live in the Hub repo the package reads
//! (the Space `AlignmentResearch/tuned-lens`, `lens/MODEL/`), found through the same
//! cache, token and offline rules as models.
//!
//! The final norm's statistics are computed from the translated row itself: the norm runs
//! after the translator, row by row, in the same readout the logit lens uses.
//!
//! Read once by the run's setup ([`super::Assets`]); the `logit_lens` kind only checks the
//! lens fits the model and applies it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::env::AssetEnv;
use crate::hub::{looks_like_path, repo_files};

/// The repo the `tuned-lens` package reads published lenses from.
pub const LENS_REPO: &str = "AlignmentResearch/tuned-lens";

/// Where a tuned lens came from, exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TunedLensSource {
    /// The lens as the spec names it.
    pub id: String,
    /// The Hub repo it was read from (`null`: a local folder).
    pub repo: Option<String>,
    /// That repo's commit.
    pub commit: Option<String>,
    /// The model the lens was trained on, as its config.json names it.
    pub base_model: String,
    /// sha256 of its params.pt.
    pub params_sha256: String,
}

/// config.json as the tuned-lens package writes it; other keys are ignored, as the
/// package ignores them.
#[derive(Deserialize)]
struct LensConfig {
    base_model_name_or_path: String,
    d_model: usize,
    num_hidden_layers: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default = "linear")]
    lens_type: String,
}

fn yes() -> bool {
    true
}

fn linear() -> String {
    "linear_tuned_lens".into()
}

/// The translators: per layer, `A` as torch's `Linear` stores it (`[out, in]`) and `b`.
pub struct Translators {
    d: usize,
    weights: Vec<Vec<f32>>,
    biases: Vec<Option<Vec<f32>>>,
}

impl std::fmt::Debug for Translators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Translators({} layers of width {})",
            self.weights.len(),
            self.d
        )
    }
}

impl Translators {
    /// `h + (h A^T + b)` for `[n, d]` rows of hidden state `layer`, in f32 and in that
    /// order, as the package's `h + Linear(h)` computes it.
    pub fn apply(&self, layer: usize, rows: &[f32]) -> Vec<f32> {
        let d = self.d;
        let n = rows.len() / d;
        let mut out = vec![0.0f32; n * d];
        crate::model::kernels::matmul_transposed(rows, &self.weights[layer], n, d, d, d, &mut out);
        for (o, h) in out.chunks_mut(d).zip(rows.chunks(d)) {
            if let Some(b) = &self.biases[layer] {
                o.iter_mut().zip(b).for_each(|(o, b)| *o += b);
            }
            o.iter_mut().zip(h).for_each(|(o, h)| *o += h);
        }
        out
    }
}

/// A tuned lens, read: its translators, its shape and where it came from.
#[derive(Debug, Clone)]
pub struct TunedLens {
    /// The translators, shared by every analysis that reads this lens.
    pub translators: Arc<Translators>,
    /// Where it came from, as results.json records it.
    pub source: TunedLensSource,
}

/// Why a tuned lens cannot be read or used; each says what would work.
#[derive(Debug, thiserror::Error)]
pub enum LensError {
    /// The folder lacks one of its two files.
    #[error("{} does not exist: a tuned lens's folder holds config.json and params.pt, as TunedLens.save writes them", .0.display())]
    Missing(PathBuf),
    /// A path that is no folder.
    #[error("no lens folder `{0}`: give a folder holding config.json and params.pt, or the id of a published lens such as `gpt2`")]
    NoFolder(String),
    /// `TUNED_LENS_REPO_TYPE` names no repo kind.
    #[error("TUNED_LENS_REPO_TYPE = {0:?} is not a repo type: use space, model or dataset")]
    RepoType(String),
    /// The Hub could not give the files.
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    /// A file cannot be read.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// config.json is not a tuned lens's.
    #[error("{}: {detail}; a tuned lens's config.json gives d_model, num_hidden_layers and bias", path.display())]
    Config {
        /// config.json.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// A lens of another type than the linear tuned lens.
    #[error("{}: lens_type {lens_type:?} is not a linear tuned lens, the only kind strata reads", path.display())]
    LensType {
        /// config.json.
        path: PathBuf,
        /// Its `lens_type`.
        lens_type: String,
    },
    /// params.pt is not the translators' state dict.
    #[error("{}: {detail}; a tuned lens's params.pt is the state dict of its translators (`0.weight`, `0.bias`, ... per layer), as TunedLens.save writes it", path.display())]
    Params {
        /// params.pt.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// params.pt cannot be hashed.
    #[error(transparent)]
    Digest(#[from] crate::digest::DigestError),
    /// A lens trained on a model of another shape.
    #[error("the lens has {} layers of width {} (trained on `{base_model}`) but the model has {} blocks of width {}: use the lens trained on this model", lens.0, lens.1, model.0, model.1)]
    Shape {
        /// The lens's layers and width.
        lens: (usize, usize),
        /// The model it was trained on.
        base_model: String,
        /// The model's blocks and width.
        model: (usize, usize),
    },
}

/// Reads lens `id` (a folder, beside the spec at `base` or from where strata runs, or a lens
/// published in the tuned-lens repo on the Hub) for a
/// model of `layers` blocks of `width`: a lens of another shape is refused before its
/// translators are read.
pub fn load(
    id: &str,
    base: &Path,
    env: &AssetEnv,
    (layers, width): (usize, usize),
) -> Result<TunedLens, LensError> {
    let (files, repo, commit) = locate(id, base, env)?;
    let [config_path, params_path] = files;
    let text = std::fs::read_to_string(&config_path).map_err(|cause| LensError::Io {
        path: config_path.clone(),
        cause,
    })?;
    let config: LensConfig = serde_json::from_str(&text).map_err(|e| LensError::Config {
        path: config_path.clone(),
        detail: e.to_string(),
    })?;
    if config.lens_type != "linear_tuned_lens" {
        return Err(LensError::LensType {
            path: config_path,
            lens_type: config.lens_type,
        });
    }
    if (config.num_hidden_layers, config.d_model) != (layers, width) {
        return Err(LensError::Shape {
            lens: (config.num_hidden_layers, config.d_model),
            base_model: config.base_model_name_or_path,
            model: (layers, width),
        });
    }
    let translators = read_params(&params_path, &config)?;
    let params_sha256 = crate::digest::sha256_cached(&params_path)?;
    let source = TunedLensSource {
        id: id.to_string(),
        repo,
        commit,
        base_model: config.base_model_name_or_path,
        params_sha256,
    };
    Ok(TunedLens {
        translators: Arc::new(translators),
        source,
    })
}

type Located = ([PathBuf; 2], Option<String>, Option<String>);

/// config.json and params.pt of lens `id`: a local folder, else the tuned-lens repo on
/// the Hub (and the repo and commit they came from).
fn locate(id: &str, base: &Path, env: &AssetEnv) -> Result<Located, LensError> {
    // A folder beside the spec, as every path a spec names; else one from where strata
    // runs.
    let beside = base.join(id);
    let dir = if beside.is_dir() {
        beside.as_path()
    } else {
        Path::new(id)
    };
    if dir.is_dir() {
        let files = [dir.join("config.json"), dir.join("params.pt")];
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(LensError::Missing(missing.clone()));
        }
        return Ok((files, None, None));
    }
    if looks_like_path(id) || dir.exists() {
        return Err(LensError::NoFolder(id.to_string()));
    }
    let repo = env.lens_repo.clone().unwrap_or_else(|| LENS_REPO.into());
    let kind = match env.lens_repo_type.as_deref() {
        None | Some("space") | Some("spaces") => hf_hub::RepoType::Space,
        Some("model") | Some("models") => hf_hub::RepoType::Model,
        Some("dataset") | Some("datasets") => hf_hub::RepoType::Dataset,
        Some(other) => return Err(LensError::RepoType(other.to_string())),
    };
    let names = [
        format!("lens/{id}/config.json"),
        format!("lens/{id}/params.pt"),
    ];
    let (commit, paths) = repo_files(&repo, kind, "main", &names, &env.hf)?;
    // repo_files gives one path per name asked for, in order.
    let [config, params] = [paths[0].clone(), paths[1].clone()];
    Ok(([config, params], Some(repo), Some(commit)))
}

/// The translators of params.pt, checked against config.json: a `[d, d]` weight per
/// layer and, with `bias`, a `[d]` bias, and nothing else.
fn read_params(path: &Path, config: &LensConfig) -> Result<Translators, LensError> {
    let not_dict = |detail: String| LensError::Params {
        path: path.to_path_buf(),
        detail,
    };
    let pth = candle_core::pickle::PthTensors::new(path, None)
        .map_err(|e| not_dict(format!("not a torch zip-pickle ({e})")))?;
    let infos = pth.tensor_infos();
    if infos.is_empty() {
        return Err(not_dict("it holds no named tensors".into()));
    }
    let d = config.d_model;
    let n = config.num_hidden_layers;
    let mut expected = Vec::new();
    let mut read = |key: String, shape: &[usize]| -> Result<Vec<f32>, LensError> {
        let name = [key.clone(), format!("layer_translators.{key}")]
            .into_iter()
            .find(|k| infos.contains_key(k))
            .ok_or_else(|| not_dict(format!("no tensor `{key}`")))?;
        let t = pth
            .get(&name)
            .map_err(|e| not_dict(format!("`{name}`: {e}")))?
            .ok_or_else(|| not_dict(format!("no tensor `{name}`")))?;
        if t.dims() != shape {
            return Err(not_dict(format!(
                "`{name}` has shape {:?}, not {shape:?}",
                t.dims()
            )));
        }
        expected.push(name.clone());
        t.to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| not_dict(format!("`{name}`: {e}")))
    };
    let mut weights = Vec::with_capacity(n);
    let mut biases = Vec::with_capacity(n);
    for i in 0..n {
        weights.push(read(format!("{i}.weight"), &[d, d])?);
        biases.push(if config.bias {
            Some(read(format!("{i}.bias"), &[d])?)
        } else {
            None
        });
    }
    if let Some(extra) = infos.keys().filter(|k| !expected.contains(k)).min() {
        return Err(not_dict(format!(
            "`{extra}` is not a translator of a lens of {n} layers{}",
            if config.bias { "" } else { " without biases" }
        )));
    }
    Ok(Translators { d, weights, biases })
}
