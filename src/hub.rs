//! The Hugging Face Hub, for every file strata fetches (models, datasets, tuned lenses, and
//! whatever a run names next): the environment variables `huggingface_hub` reads, the
//! cache Python shares (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), one commit per revision, and the offline rules. A leaf:
//! it knows no model, corpus or analysis.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Hub repo ids are `name` or `owner/name`; anything else that does not exist is a path typo.
pub fn looks_like_path(id: &str) -> bool {
    id.starts_with('.')
        || id.starts_with('/')
        || id.starts_with('~')
        || id.contains('\\')
        || id.matches('/').count() > 1
        || id.ends_with(".safetensors")
        || id.ends_with(".gguf")
        || id.ends_with(".json")
}

/// The Hugging Face environment variables, read once.
#[derive(Debug, Clone)]
pub struct HfEnv {
    /// The hub cache folder.
    pub cache: PathBuf,
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: String,
    /// `HF_TOKEN`, else the token file Python's `huggingface-cli login` writes.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE` set to a true value.
    pub offline: bool,
    /// Show a download progress bar (stderr is a terminal).
    pub progress: bool,
}

impl HfEnv {
    /// Reads the variables the way `huggingface_hub` does.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let home = var("HOME").map(PathBuf::from).unwrap_or_default();
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache"))
                .join("huggingface")
        });
        let cache = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = var("HF_TOKEN").or_else(|| {
            let path = var("HF_TOKEN_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| hf_home.join("token"));
            std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = var("HF_HUB_OFFLINE")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false);
        Self {
            cache,
            endpoint: var("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| "https://huggingface.co".into()),
            token,
            offline,
            progress: std::io::stderr().is_terminal(),
        }
    }

    /// An offline environment over `cache` (for tests and tools).
    pub fn offline_cache(cache: impl Into<PathBuf>) -> Self {
        Self {
            cache: cache.into(),
            endpoint: "https://huggingface.co".into(),
            token: None,
            offline: true,
            progress: false,
        }
    }

    /// A model repo's folder in the cache (`models--owner--name`).
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.repo_dir_of(hf_hub::RepoType::Model, repo)
    }

    /// A repo's folder in the cache, of any kind (`datasets--owner--name`, ...).
    pub fn repo_dir_of(&self, kind: hf_hub::RepoType, repo: &str) -> PathBuf {
        self.cache
            .join(format!("{}--{}", plural(kind), repo.replace('/', "--")))
    }
}

/// Whether `s` is a full 40-hex commit id.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit a revision names in the cache: a 40-hex commit with a snapshot, or the
/// content of `refs/<revision>`.
pub fn cached_commit(repo_dir: &Path, revision: &str) -> Option<String> {
    if is_commit_hash(revision) && repo_dir.join("snapshots").join(revision).is_dir() {
        return Some(revision.to_string());
    }
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
    let commit = commit.trim().to_string();
    repo_dir
        .join("snapshots")
        .join(&commit)
        .is_dir()
        .then_some(commit)
}

/// An hf-hub client honouring `env`: its cache, endpoint, token and progress bars.
pub fn client(env: &HfEnv) -> Result<hf_hub::api::sync::Api, hf_hub::api::sync::ApiError> {
    hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(env.cache.clone()))
        .with_endpoint(env.endpoint.clone())
        .with_token(env.token.clone())
        .with_progress(env.progress)
        .build()
}

/// Records in the cache that `revision` of the repo in `repo_dir` is `commit`, as
/// huggingface_hub does (`refs/REVISION`). hf-hub records a pinned download under a ref
/// named after the commit itself; that one is removed unless `had_stray_ref` says it
/// was there before.
pub fn record_ref(
    repo_dir: &Path,
    revision: &str,
    commit: &str,
    had_stray_ref: bool,
) -> std::io::Result<()> {
    if revision == commit {
        return Ok(());
    }
    if !had_stray_ref {
        let _ = std::fs::remove_file(repo_dir.join("refs").join(commit));
    }
    let ref_path = repo_dir.join("refs").join(revision);
    if let Some(parent) = ref_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&ref_path, commit)
}

/// Whether the Hub could not be reached at all (rather than answering no).
pub fn is_transport(e: &hf_hub::api::sync::ApiError) -> bool {
    matches!(e, hf_hub::api::sync::ApiError::RequestError(inner) if matches!(inner.as_ref(), ureq::Error::Transport(_)))
}

/// Named files of any Hub repo (`kind`: a model, dataset or space) at one commit: the
/// revision resolved once, each file taken from the cache or downloaded pinned to that
/// commit, the cache's `refs/REVISION` written as huggingface_hub writes it; offline (or
/// with the Hub out of reach), the cache alone. The commit and the paths, in order; an
/// error says what is missing and how to get it.
pub fn repo_files(
    repo: &str,
    kind: hf_hub::RepoType,
    revision: &str,
    names: &[String],
    env: &HfEnv,
) -> Result<(String, Vec<PathBuf>), HubError> {
    repo_pick(repo, kind, revision, &[names.to_vec()], env)
        .map(|(commit, _, paths)| (commit, paths))
}

/// [`repo_files`] for the first of several sets of files the repo holds whole (the
/// layouts a format may come in, most complete first): the commit, which set, and its
/// paths. With none held whole, the error names the first set's first missing file.
pub fn repo_pick(
    repo: &str,
    kind: hf_hub::RepoType,
    revision: &str,
    candidates: &[Vec<String>],
    env: &HfEnv,
) -> Result<(String, usize, Vec<PathBuf>), HubError> {
    let plural = plural(kind);
    let repo_dir = env.repo_dir_of(kind, repo);
    let cached = || cached_pick(&repo_dir, revision, candidates);
    let names = &candidates[0];
    let what = format!(
        "{} of {plural} repo `{repo}` (revision `{revision}`)",
        names.join(" and ")
    );
    if env.offline {
        return cached().ok_or_else(|| HubError::NotCached {
            what,
            cache: env.cache.clone(),
        });
    }
    let api = client(env).map_err(|e| HubError::Client {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    let at = |rev: &str| api.repo(hf_hub::Repo::with_revision(repo.into(), kind, rev.into()));
    let info = match at(revision).info() {
        Ok(info) => info,
        Err(e) if is_transport(&e) => {
            return cached().ok_or_else(|| HubError::Unreachable {
                endpoint: env.endpoint.clone(),
                what,
                detail: e.to_string(),
            })
        }
        Err(e) => {
            return Err(HubError::Refused {
                endpoint: env.endpoint.clone(),
                what,
                detail: e.to_string(),
            })
        }
    };
    let listed: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let Some(chosen) = candidates
        .iter()
        .position(|names| names.iter().all(|n| listed.contains(n)))
    else {
        let missing = names
            .iter()
            .find(|n| !listed.contains(*n))
            .unwrap_or(&names[0]);
        return Err(HubError::NoSuchFile {
            plural,
            repo: repo.to_string(),
            revision: revision.to_string(),
            name: missing.clone(),
        });
    };
    let names = &candidates[chosen];
    let had_stray_ref = repo_dir.join("refs").join(&info.sha).exists();
    let snapshot = repo_dir.join("snapshots").join(&info.sha);
    let paths = names
        .iter()
        .map(|name| fetch_pinned(&at(&info.sha), &snapshot, name, repo, plural, env))
        .collect::<Result<Vec<_>, _>>()?;
    record_ref(&repo_dir, revision, &info.sha, had_stray_ref).map_err(|e| HubError::RecordRef {
        dir: repo_dir.clone(),
        cause: e,
    })?;
    Ok((info.sha, chosen, paths))
}

/// The first of `candidates` the cache holds whole at `revision`: the commit, which
/// set, and its paths.
fn cached_pick(
    repo_dir: &Path,
    revision: &str,
    candidates: &[Vec<String>],
) -> Option<(String, usize, Vec<PathBuf>)> {
    let commit = cached_commit(repo_dir, revision)?;
    let snapshot = repo_dir.join("snapshots").join(&commit);
    candidates.iter().enumerate().find_map(|(i, names)| {
        let paths: Vec<PathBuf> = names.iter().map(|n| snapshot.join(n)).collect();
        paths
            .iter()
            .all(|p| p.is_file())
            .then(|| (commit.clone(), i, paths))
    })
}

/// File `name` of a repo at a pinned commit: from its `snapshot` in the cache, else
/// downloaded.
fn fetch_pinned(
    pinned: &hf_hub::api::sync::ApiRepo,
    snapshot: &Path,
    name: &str,
    repo: &str,
    plural: &'static str,
    env: &HfEnv,
) -> Result<PathBuf, HubError> {
    let cached = snapshot.join(name);
    if cached.is_file() {
        return Ok(cached);
    }
    pinned.download(name).map_err(|e| HubError::Download {
        name: name.to_string(),
        plural,
        repo: repo.to_string(),
        endpoint: env.endpoint.clone(),
        detail: e.to_string(),
    })
}

/// `models`, `datasets` or `spaces`: how the cache and the Hub's URLs name a repo kind.
pub fn plural(kind: hf_hub::RepoType) -> &'static str {
    match kind {
        hf_hub::RepoType::Model => "models",
        hf_hub::RepoType::Dataset => "datasets",
        hf_hub::RepoType::Space => "spaces",
    }
}

/// Why named files of a Hub repo cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Offline, and the cache lacks them.
    #[error("{what} is not in the Hugging Face cache at {}, and HF_HUB_OFFLINE is set so nothing can be downloaded: unset HF_HUB_OFFLINE, or point HF_HUB_CACHE / HF_HOME at a cache that holds it", cache.display())]
    NotCached {
        /// The files and the repo.
        what: String,
        /// The cache folder.
        cache: PathBuf,
    },
    /// The client cannot be built (its cache folder, its token).
    #[error("{what}: {detail}")]
    Client {
        /// The files and the repo.
        what: String,
        /// hf-hub's message.
        detail: String,
    },
    /// The Hub is out of reach and the cache lacks them.
    #[error("could not reach {endpoint} for {what}: {detail}; check the network, or fill the cache and set HF_HUB_OFFLINE=1")]
    Unreachable {
        /// The Hub's address.
        endpoint: String,
        /// The files and the repo.
        what: String,
        /// The transport's message.
        detail: String,
    },
    /// The Hub answered no (a wrong id or revision, a private repo).
    #[error("{endpoint} did not give {what}: {detail}; check the id and revision, and set HF_TOKEN for a private repo")]
    Refused {
        /// The Hub's address.
        endpoint: String,
        /// The files and the repo.
        what: String,
        /// The Hub's answer.
        detail: String,
    },
    /// The repo exists but lacks a file.
    #[error("{plural} repo `{repo}` at revision `{revision}` has no `{name}`: check the id")]
    NoSuchFile {
        /// The repo kind, plural.
        plural: &'static str,
        /// The repo.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The missing file.
        name: String,
    },
    /// A download failed.
    #[error("downloading `{name}` of {plural} repo `{repo}` from {endpoint}: {detail}")]
    Download {
        /// The file.
        name: String,
        /// The repo kind, plural.
        plural: &'static str,
        /// The repo.
        repo: String,
        /// The Hub's address.
        endpoint: String,
        /// hf-hub's message.
        detail: String,
    },
    /// `refs/REVISION` cannot be written.
    #[error("recording the revision in {}: {cause}", dir.display())]
    RecordRef {
        /// The repo's cache folder.
        dir: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_like_ids_are_not_repo_ids() {
        assert!(!looks_like_path("gpt2"));
        assert!(!looks_like_path("openai-community/gpt2"));
        assert!(looks_like_path("./models/gpt2"));
        assert!(looks_like_path("/abs/model"));
        assert!(looks_like_path("a/b/c"));
    }

    #[test]
    fn commit_hashes_are_40_hex() {
        assert!(is_commit_hash("607a30d783dfa663caf39e06633721c8d4cfcd7e"));
        assert!(!is_commit_hash("main"));
    }
}
