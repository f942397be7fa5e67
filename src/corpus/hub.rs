//! Hub datasets as corpora: the Parquet files of one split, from the branch where the Hub
//! keeps its Parquet conversion of every public dataset (`refs/convert/parquet`, laid out
//! `CONFIG/SPLIT/0000.parquet`, ...), fetched with the client, cache, token, offline rules
//! and progress bars models use. The revision is resolved to one commit and every file
//! taken from it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{invalid, CorpusError, FieldError};
use super::map::CorpusMap;
use crate::hub::{self, HfEnv};

/// The branch holding the Hub's Parquet conversion of a dataset.
pub const PARQUET_BRANCH: &str = "refs/convert/parquet";

/// A split of a Hub dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRef {
    /// The dataset's repo id.
    pub id: String,
    /// Its configuration (subset).
    pub config: String,
    /// The split.
    pub split: String,
    /// The revision holding its Parquet files.
    pub revision: String,
}

/// Where a dataset corpus came from, exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetProvenance {
    /// The dataset's repo id.
    pub id: String,
    /// Its configuration.
    pub config: String,
    /// The split.
    pub split: String,
    /// The revision asked for.
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
    /// sha256 of every Parquet file read, by its path in the repo.
    pub files_sha256: BTreeMap<String, String>,
}

impl DatasetRef {
    /// Checks `corpus: {dataset: ID, ...}` and fills in the defaults.
    pub(super) fn check(id: &str, m: &CorpusMap) -> Result<Self, FieldError> {
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() > 2 || parts.iter().any(|p| p.is_empty() || p.starts_with('.')) {
            return Err(invalid(
                "corpus.dataset",
                id.to_string(),
                "give a Hub dataset id, `name` or `owner/name` (for a local file use `path:`)",
            ));
        }
        let name = |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.into());
        for (field, v) in [("config", &m.config), ("split", &m.split)] {
            if v.as_deref()
                .is_some_and(|v| v.is_empty() || v.contains('/'))
            {
                return Err(invalid(
                    &format!("corpus.{field}"),
                    format!("{v:?}"),
                    "give a name without `/`",
                ));
            }
        }
        Ok(Self {
            id: id.to_string(),
            config: name(&m.config, "default"),
            split: name(&m.split, "train"),
            revision: name(&m.revision, PARQUET_BRANCH),
        })
    }

    fn repo_dir(&self, env: &HfEnv) -> PathBuf {
        env.repo_dir_of(hf_hub::RepoType::Dataset, &self.id)
    }

    /// The split's Parquet files on disk (downloaded unless cached, or, offline, from
    /// the cache alone), in order, and their provenance.
    pub fn resolve(&self, env: &HfEnv) -> Result<(Vec<PathBuf>, DatasetProvenance), CorpusError> {
        let (commit, files) = if env.offline {
            self.offline(env)?
        } else {
            self.online(env)?
        };
        let mut files_sha256 = BTreeMap::new();
        for (name, path) in &files {
            let sha = crate::digest::sha256_cached(path)
                .map_err(|e| CorpusError::Dataset(e.to_string()))?;
            files_sha256.insert(name.clone(), sha);
        }
        let provenance = DatasetProvenance {
            id: self.id.clone(),
            config: self.config.clone(),
            split: self.split.clone(),
            revision: self.revision.clone(),
            commit,
            files_sha256,
        };
        Ok((files.into_iter().map(|(_, p)| p).collect(), provenance))
    }

    fn online(&self, env: &HfEnv) -> Result<(String, Vec<(String, PathBuf)>), CorpusError> {
        use hf_hub::{Repo, RepoType};
        let at = |revision: &str| {
            Repo::with_revision(self.id.clone(), RepoType::Dataset, revision.into())
        };
        let api = hub::client(env).map_err(|e| self.hub_error("(client)", e, env))?;
        let info = match api.repo(at(&self.revision)).info() {
            Ok(info) => info,
            Err(e) if hub::is_transport(&e) => {
                // No network: the cache, if it holds the split, as for models.
                return self
                    .offline(env)
                    .map_err(|_| self.hub_error("(repo info)", e, env));
            }
            Err(e) => return Err(self.hub_error("(repo info)", e, env)),
        };
        let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        let chosen = self.select(&names)?;
        let repo_dir = self.repo_dir(env);
        let had_stray_ref = repo_dir.join("refs").join(&info.sha).exists();
        let pinned = api.repo(at(&info.sha));
        let snapshot = repo_dir.join("snapshots").join(&info.sha);
        let mut files = Vec::new();
        for name in chosen {
            let cached = snapshot.join(&name);
            let path = if cached.is_file() {
                cached
            } else {
                pinned
                    .download(&name)
                    .map_err(|e| self.hub_error(&name, e, env))?
            };
            files.push((name, path));
        }
        hub::record_ref(&repo_dir, &self.revision, &info.sha, had_stray_ref).map_err(|e| {
            CorpusError::Dataset(format!(
                "recording the revision in {}: {e}",
                repo_dir.display()
            ))
        })?;
        Ok((info.sha, files))
    }

    fn offline(&self, env: &HfEnv) -> Result<(String, Vec<(String, PathBuf)>), CorpusError> {
        let repo_dir = self.repo_dir(env);
        let not_cached = |detail: String| {
            CorpusError::Dataset(format!(
                "dataset `{}` (revision `{}`) is not in the Hugging Face cache at {}, and HF_HUB_OFFLINE is set so nothing can be downloaded: {detail}; unset HF_HUB_OFFLINE to download it, or point HF_HUB_CACHE / HF_HOME at a cache that holds it",
                self.id,
                self.revision,
                env.cache.display()
            ))
        };
        let commit = hub::cached_commit(&repo_dir, &self.revision).ok_or_else(|| {
            not_cached(format!(
                "{} has no refs/{}",
                repo_dir.display(),
                self.revision
            ))
        })?;
        let snapshot = repo_dir.join("snapshots").join(&commit);
        let mut names = Vec::new();
        list_files(&snapshot, &snapshot, &mut names);
        let chosen = self.select(&names)?;
        Ok((
            commit,
            chosen
                .into_iter()
                .map(|n| {
                    let p = snapshot.join(&n);
                    (n, p)
                })
                .collect(),
        ))
    }

    /// The split's Parquet files among a revision's `names`: `CONFIG/SPLIT/*.parquet`,
    /// else `CONFIG/partial-SPLIT/*.parquet` (the Hub's conversion of a split too large
    /// to convert whole), sorted. A missing configuration or split is named, with the
    /// ones there are.
    fn select(&self, names: &[String]) -> Result<Vec<String>, CorpusError> {
        for dir in [
            format!("{}/{}/", self.config, self.split),
            format!("{}/partial-{}/", self.config, self.split),
        ] {
            let mut found: Vec<String> = names
                .iter()
                .filter(|n| n.starts_with(&dir) && n.ends_with(".parquet"))
                .cloned()
                .collect();
            if !found.is_empty() {
                found.sort();
                return Ok(found);
            }
        }
        let level = |prefix: &str| -> BTreeSet<String> {
            names
                .iter()
                .filter(|n| n.ends_with(".parquet"))
                .filter_map(|n| n.strip_prefix(prefix)?.split('/').next().map(String::from))
                .filter(|d| !d.ends_with(".parquet"))
                .map(|d| d.trim_start_matches("partial-").to_string())
                .collect()
        };
        let splits = level(&format!("{}/", self.config));
        let (what, have, field) = if splits.is_empty() {
            (
                format!("configuration `{}`", self.config),
                level(""),
                "config",
            )
        } else {
            (
                format!("split `{}` in configuration `{}`", self.split, self.config),
                splits,
                "split",
            )
        };
        let have: Vec<String> = have.into_iter().collect();
        Err(CorpusError::Dataset(format!(
            "dataset `{}` (revision `{}`) has no Parquet files for {what} (it has: {}): set `corpus.{field}` to one of them",
            self.id,
            self.revision,
            if have.is_empty() { "none".to_string() } else { have.join(", ") }
        )))
    }

    fn hub_error(&self, file: &str, e: hf_hub::api::sync::ApiError, env: &HfEnv) -> CorpusError {
        if let hf_hub::api::sync::ApiError::RequestError(inner) = &e {
            if let ureq::Error::Status(status @ (401 | 403 | 404), _) = inner.as_ref() {
                if file == "(repo info)" {
                    return CorpusError::Dataset(format!(
                        "dataset `{}` (revision `{}`) was not found on {} (HTTP {status}): check the dataset id and revision; for a private or gated dataset set HF_TOKEN",
                        self.id, self.revision, env.endpoint
                    ));
                }
            }
        }
        CorpusError::Dataset(format!(
            "could not fetch `{file}` of dataset `{}` from {}: {e}; check the network, or set HF_HUB_OFFLINE=1 to use the cache only",
            self.id, env.endpoint
        ))
    }
}

/// Every file under `dir`, as paths relative to `root` with `/`.
fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            list_files(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}
