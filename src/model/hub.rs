//! Where a model's files come from: a local folder, or a Hub repo through `hf-hub` and the
//! cache Python shares (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`; `gpt2` lives in `models--gpt2`).
//!
//! Online, the requested revision is first resolved to one commit and every file is taken
//! from that commit, so a branch that moves mid-download cannot mix two versions. Offline
//! (`HF_HUB_OFFLINE=1`) only the cache is read: `refs/<revision>` names the commit, whose
//! files sit in `snapshots/<commit>/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ModelError;
use crate::hub::{cached_commit, client, is_transport, looks_like_path, record_ref, HfEnv};

/// A model as the user names it: a Hub repo id or a local folder, and a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// Hub repo id (`gpt2`, `openai-community/gpt2`) or a path to a model folder.
    pub id: String,
    /// Branch, tag or commit on the Hub; ignored for a local folder.
    pub revision: String,
    /// A GGUF file in the Hub repo to load instead of `config.json` + safetensors.
    pub file: Option<String>,
    /// GGUF only: keep the weights quantized and run quantized matmuls with llama.cpp's
    /// numerics (8-bit activations; the numbers then differ from transformers, which
    /// dequantizes).
    pub quantized: bool,
}

impl ModelRef {
    /// A model at revision `main`.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            revision: "main".into(),
            file: None,
            quantized: false,
        }
    }

    /// Finds every file, downloading what the cache lacks unless `HF_HUB_OFFLINE` is set.
    pub fn resolve(&self) -> Result<ModelFiles, ModelError> {
        self.resolve_with(&HfEnv::from_env())
    }

    /// [`ModelRef::resolve`] with an explicit environment (tests use this instead of
    /// mutating the process environment).
    pub fn resolve_with(&self, env: &HfEnv) -> Result<ModelFiles, ModelError> {
        let path = Path::new(&self.id);
        if path.is_file() && super::gguf::is_gguf(path) {
            let dir = path.parent().unwrap_or(Path::new("."));
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            return collect(dir, Origin::Local, name.as_deref(), &|name| {
                let p = dir.join(name);
                Ok(p.is_file().then_some(p))
            });
        }
        if path.is_dir() {
            return collect(path, Origin::Local, None, &|name| {
                let p = path.join(name);
                Ok(p.is_file().then_some(p))
            });
        }
        if looks_like_path(&self.id) {
            return Err(ModelError::NoSuchFolder(self.id.clone()));
        }
        let file = self.file.as_deref();
        if env.offline {
            resolve_offline(&self.id, &self.revision, file, env)
        } else {
            resolve_online(&self.id, &self.revision, file, env)
        }
    }
}

/// The tokenizer's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerFiles {
    /// A `tokenizer.json` (the fast tokenizer's serialization).
    Json(PathBuf),
    /// A GGUF file's metadata (`tokenizer.ggml.*`).
    Gguf(PathBuf),
    /// GPT-2's original pair, read as byte-level BPE.
    VocabMerges {
        /// `vocab.json`.
        vocab: PathBuf,
        /// `merges.txt`.
        merges: PathBuf,
    },
}

impl TokenizerFiles {
    fn paths(&self) -> Vec<&Path> {
        match self {
            Self::Json(p) | Self::Gguf(p) => vec![p],
            Self::VocabMerges { vocab, merges } => vec![vocab, merges],
        }
    }
}

/// Where files came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Local,
    Hub {
        repo: String,
        revision: String,
        commit: String,
    },
}

/// Every file a model needs, found on disk.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The folder (local folder or cache snapshot).
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors`, or every shard named by `model.safetensors.index.json`.
    pub weights: Vec<PathBuf>,
    /// Tokenizer files.
    pub tokenizer: TokenizerFiles,
    /// The id the user gave.
    pub id: String,
    origin: Origin,
}

/// Where a model came from, exactly: enough to fetch the same bytes again and to notice
/// when they change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ModelProvenance {
    /// The model as given: a Hub repo id or a local folder path.
    pub id: String,
    /// `hub` or `local`.
    pub source: String,
    /// The revision asked for (branch, tag or commit); `null` for a local folder.
    pub revision: Option<String>,
    /// The commit the revision resolved to; `null` for a local folder.
    pub commit: Option<String>,
    /// sha256 of `config.json`.
    pub config_sha256: String,
    /// sha256 of every weight file, by file name.
    pub weights_sha256: BTreeMap<String, String>,
    /// sha256 of every tokenizer file, by file name.
    pub tokenizer_sha256: BTreeMap<String, String>,
}

impl ModelFiles {
    /// The Hub commit the files come from (`None` for a local folder).
    pub fn commit(&self) -> Option<String> {
        match &self.origin {
            Origin::Local => None,
            Origin::Hub { commit, .. } => Some(commit.clone()),
        }
    }

    /// Hashes every file. Computed, never trusted from file names, so a corrupted cache
    /// blob shows up as a changed hash; a weight file's hash is remembered between runs
    /// while the file is unchanged (see [`crate::digest`]).
    pub fn provenance(&self) -> Result<ModelProvenance, ModelError> {
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let hash_all = |paths: Vec<&Path>| -> Result<BTreeMap<String, String>, ModelError> {
            paths
                .into_iter()
                .map(|p| Ok((name(p), crate::digest::sha256_cached(p)?)))
                .collect()
        };
        let (source, revision, commit) = match &self.origin {
            Origin::Local => ("local", None, None),
            Origin::Hub {
                revision, commit, ..
            } => ("hub", Some(revision.clone()), Some(commit.clone())),
        };
        Ok(ModelProvenance {
            id: self.id.clone(),
            source: source.into(),
            revision,
            commit,
            config_sha256: crate::digest::sha256_cached(&self.config)?,
            weights_sha256: hash_all(self.weights.iter().map(|p| p.as_path()).collect())?,
            tokenizer_sha256: hash_all(self.tokenizer.paths())?,
        })
    }
}

type Fetch<'a> = dyn Fn(&str) -> Result<Option<PathBuf>, ModelError> + 'a;

/// Picks the files of a model from a source that can `fetch` a file by name (returning
/// `None` when the source does not have it).
fn collect(
    dir: &Path,
    origin: Origin,
    gguf: Option<&str>,
    fetch: &Fetch,
) -> Result<ModelFiles, ModelError> {
    let missing = |what: &str| ModelError::MissingFile {
        dir: dir.to_path_buf(),
        what: what.to_string(),
    };
    let id = match &origin {
        Origin::Hub { repo, .. } => repo.clone(),
        Origin::Local => dir.to_string_lossy().into_owned(),
    };
    // A GGUF file carries config, weights and tokenizer in one.
    if let Some(name) = gguf {
        let path = fetch(name)?.ok_or_else(|| missing(name))?;
        let id = match &origin {
            Origin::Hub { .. } => format!("{id}/{name}"),
            Origin::Local => path.to_string_lossy().into_owned(),
        };
        return Ok(ModelFiles {
            dir: dir.to_path_buf(),
            config: path.clone(),
            weights: vec![path.clone()],
            tokenizer: TokenizerFiles::Gguf(path),
            id,
            origin,
        });
    }
    let config = fetch("config.json")?.ok_or_else(|| missing("config.json"))?;
    let weights = if let Some(single) = fetch("model.safetensors")? {
        vec![single]
    } else if let Some(index) = fetch("model.safetensors.index.json")? {
        shard_names(&index)?
            .iter()
            .map(|shard| {
                fetch(shard)?.ok_or_else(|| {
                    missing(&format!(
                        "{shard} (a shard named by model.safetensors.index.json)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    } else if fetch("pytorch_model.bin")?.is_some() {
        return Err(missing(
            "model.safetensors (only pytorch_model.bin, a pickle strata does not load: convert it with transformers' save_pretrained(safe_serialization=True))",
        ));
    } else {
        return Err(missing("model.safetensors or model.safetensors.index.json"));
    };
    let tokenizer = if let Some(json) = fetch("tokenizer.json")? {
        TokenizerFiles::Json(json)
    } else {
        match (fetch("vocab.json")?, fetch("merges.txt")?) {
            (Some(vocab), Some(merges)) => TokenizerFiles::VocabMerges { vocab, merges },
            _ => return Err(missing("tokenizer.json, nor vocab.json + merges.txt")),
        }
    };
    Ok(ModelFiles {
        dir: dir.to_path_buf(),
        config,
        weights,
        tokenizer,
        id,
        origin,
    })
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// The distinct shard files of a sharded checkpoint, in name order.
fn shard_names(index: &Path) -> Result<Vec<String>, ModelError> {
    let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io {
        path: index.to_path_buf(),
        cause: source,
    })?;
    let parsed: ShardIndex =
        serde_json::from_str(&text).map_err(|e| ModelError::CorruptWeights {
            path: index.to_path_buf(),
            detail: format!("not a safetensors index ({e})"),
        })?;
    let names: BTreeSet<String> = parsed.weight_map.into_values().collect();
    for n in &names {
        if n.contains("..") || n.starts_with('/') {
            return Err(ModelError::CorruptWeights {
                path: index.to_path_buf(),
                detail: format!("shard name `{n}` leaves the model folder"),
            });
        }
    }
    Ok(names.into_iter().collect())
}

fn resolve_offline(
    repo: &str,
    revision: &str,
    file: Option<&str>,
    env: &HfEnv,
) -> Result<ModelFiles, ModelError> {
    let repo_dir = env.repo_dir(repo);
    let not_cached = |detail: String| ModelError::NotCached {
        repo: repo.to_string(),
        revision: revision.to_string(),
        cache: env.cache.clone(),
        detail,
    };
    let commit = cached_commit(&repo_dir, revision).ok_or_else(|| {
        not_cached(if repo_dir.is_dir() {
            format!(
                "{} has no refs/{revision} and no snapshot of that commit",
                repo_dir.display()
            )
        } else {
            format!("{} does not exist", repo_dir.display())
        })
    })?;
    let snapshot = repo_dir.join("snapshots").join(&commit);
    let origin = Origin::Hub {
        repo: repo.to_string(),
        revision: revision.to_string(),
        commit,
    };
    collect(&snapshot, origin, file, &|name| {
        let p = snapshot.join(name);
        Ok(p.is_file().then_some(p))
    })
    .map_err(|e| match e {
        ModelError::MissingFile { what, .. } => {
            not_cached(format!("snapshot {} has no {what}", snapshot.display()))
        }
        other => other,
    })
}

/// The hf-hub client for `env`, and how its errors read.
struct Hub<'a> {
    api: hf_hub::api::sync::Api,
    repo: &'a str,
    revision: &'a str,
    env: &'a HfEnv,
}

impl<'a> Hub<'a> {
    fn new(repo: &'a str, revision: &'a str, env: &'a HfEnv) -> Result<Self, ModelError> {
        let api = client(env).map_err(|e| hub_error(repo, revision, env, "(client)", e))?;
        Ok(Self {
            api,
            repo,
            revision,
            env,
        })
    }

    fn error(&self, file: &str, e: hf_hub::api::sync::ApiError) -> ModelError {
        hub_error(self.repo, self.revision, self.env, file, e)
    }

    fn repo_at(&self, revision: &str) -> hf_hub::api::sync::ApiRepo {
        self.api.repo(hf_hub::Repo::with_revision(
            self.repo.into(),
            hf_hub::RepoType::Model,
            revision.into(),
        ))
    }

    /// The revision's commit and file list.
    fn info(&self) -> Result<hf_hub::api::RepoInfo, hf_hub::api::sync::ApiError> {
        self.repo_at(self.revision).info()
    }
}

/// An error of the Hub's answer about `file` (`(repo info)`: the revision lookup).
fn hub_error(
    repo: &str,
    revision: &str,
    env: &HfEnv,
    file: &str,
    e: hf_hub::api::sync::ApiError,
) -> ModelError {
    if let hf_hub::api::sync::ApiError::RequestError(inner) = &e {
        if let ureq::Error::Status(status, _) = inner.as_ref() {
            if matches!(status, 401 | 403 | 404) && file == "(repo info)" {
                return ModelError::RepoNotFound {
                    repo: repo.to_string(),
                    revision: revision.to_string(),
                    endpoint: env.endpoint.clone(),
                    status: *status,
                };
            }
        }
    }
    ModelError::Hub {
        repo: repo.to_string(),
        file: file.to_string(),
        endpoint: env.endpoint.clone(),
        detail: e.to_string(),
    }
}

impl ModelRef {
    /// The commit the revision names, without downloading any file (`None` for a local
    /// path, which has no revisions): a missing revision fails here, before anything is
    /// fetched or written.
    pub fn commit_with(&self, env: &HfEnv) -> Result<Option<String>, ModelError> {
        if Path::new(&self.id).exists() || looks_like_path(&self.id) {
            return Ok(None);
        }
        if env.offline {
            return resolve_offline(&self.id, &self.revision, self.file.as_deref(), env)
                .map(|f| f.commit());
        }
        let hub = Hub::new(&self.id, &self.revision, env)?;
        match hub.info() {
            Ok(info) => Ok(Some(info.sha)),
            Err(e) if is_transport(&e) => {
                resolve_offline(&self.id, &self.revision, self.file.as_deref(), env)
                    .map(|f| f.commit())
                    .map_err(|_| hub.error("(repo info)", e))
            }
            Err(e) => Err(hub.error("(repo info)", e)),
        }
    }
}

fn resolve_online(
    repo: &str,
    revision: &str,
    file: Option<&str>,
    env: &HfEnv,
) -> Result<ModelFiles, ModelError> {
    let hub = Hub::new(repo, revision, env)?;
    let info = match hub.info() {
        Ok(info) => info,
        Err(e) => {
            // A transport failure (no network) with the model already cached: use the
            // cache, as huggingface_hub does.
            if is_transport(&e) {
                if let Ok(files) = resolve_offline(repo, revision, file, env) {
                    return Ok(files);
                }
            }
            return Err(hub.error("(repo info)", e));
        }
    };
    let commit = info.sha.clone();
    let listed: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let repo_dir = env.repo_dir(repo);
    let snapshot = repo_dir.join("snapshots").join(&commit);
    let pinned = hub.repo_at(&commit);
    let stray_ref = repo_dir.join("refs").join(&commit);
    let had_stray_ref = stray_ref.exists();
    let fetch = |name: &str| -> Result<Option<PathBuf>, ModelError> {
        if !listed.contains(name) {
            return Ok(None);
        }
        let cached = snapshot.join(name);
        if cached.is_file() {
            return Ok(Some(cached));
        }
        pinned
            .download(name)
            .map(Some)
            .map_err(|e| hub.error(name, e))
    };
    let files = collect(
        &snapshot,
        Origin::Hub {
            repo: repo.to_string(),
            revision: revision.to_string(),
            commit: commit.clone(),
        },
        file,
        &fetch,
    )?;
    // Leave the cache as Python would: refs/REVISION names the commit.
    record_ref(&repo_dir, revision, &commit, had_stray_ref).map_err(|source| ModelError::Io {
        path: repo_dir.join("refs").join(revision),
        cause: source,
    })?;
    Ok(files)
}
