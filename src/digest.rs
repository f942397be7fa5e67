//! sha256 of files and bytes, in lower-case hex; large files' hashes remembered between
//! runs.
//!
//! Provenance hashes every weight file (and corpus file) on every run; for gpt2 that is 548 MB and ~2.5 s on
//! a CPU without SHA extensions (gpt2-xl: ~30 s). The hash is remembered under the file's
//! canonical path together with its device, inode, size and modification time to the
//! nanosecond; any change to those (a new download, an edit, a copy) means hashing again.
//! A read-only, missing or damaged cache only costs the hashing: it is never an error.
//!
//! The cache lives in `$STRATA_CACHE`, else `$XDG_CACHE_HOME/strata`, else
//! `~/.cache/strata`, as `sha256.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A file that could not be read for hashing.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {cause}")]
pub struct DigestError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    pub cause: std::io::Error,
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, DigestError> {
    let io = |cause| DigestError {
        path: path.to_path_buf(),
        cause,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The digest of one text: sha256 of its id's length (u64 LE), its id's UTF-8 bytes, and
/// its token ids (u32 LE each).
pub fn text_digest(id: &str, token_ids: &[u32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((id.len() as u64).to_le_bytes());
    h.update(id.as_bytes());
    for t in token_ids {
        h.update(t.to_le_bytes());
    }
    h.finalize().into()
}

/// Files below this size are hashed directly; the cache is for weights and large corpora.
const MIN_SIZE: u64 = 16 << 20;
/// Entries kept; the oldest-looking (missing files first) are dropped beyond it.
const MAX_ENTRIES: usize = 512;

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// Device id.
    dev: u64,
    /// Inode number.
    ino: u64,
    /// Size in bytes.
    size: u64,
    /// Modification time, nanoseconds since the epoch.
    mtime_ns: i128,
    /// sha256, hex.
    sha256: String,
}

/// The cache folder, if one can be named.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("STRATA_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("strata")))
        .or_else(|| var("HOME").map(|p| p.join(".cache/strata")))
}

fn stamp(meta: &std::fs::Metadata) -> (u64, u64, u64, i128) {
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0, 0);
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(-1);
    (dev, ino, meta.len(), mtime_ns)
}

fn load(file: &Path) -> BTreeMap<String, Entry> {
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// sha256 (hex) of `path`, from the cache when the file is unchanged since it was hashed.
pub fn sha256_cached(path: &Path) -> Result<String, DigestError> {
    sha256_cached_in(path, cache_dir().as_deref())
}

/// As [`sha256_cached`], with the cache folder given (`None`: no cache).
pub fn sha256_cached_in(path: &Path, dir: Option<&Path>) -> Result<String, DigestError> {
    let io = |cause| DigestError {
        path: path.to_path_buf(),
        cause,
    };
    let canonical = std::fs::canonicalize(path).map_err(io)?;
    let meta = std::fs::metadata(&canonical).map_err(io)?;
    let (Some(dir), true) = (dir, meta.len() >= MIN_SIZE) else {
        return sha256_file(path);
    };
    let (dev, ino, size, mtime_ns) = stamp(&meta);
    let key = canonical.to_string_lossy().into_owned();
    let file = dir.join("sha256.json");
    if let Some(e) = load(&file).get(&key) {
        if (e.dev, e.ino, e.size, e.mtime_ns) == (dev, ino, size, mtime_ns) && e.mtime_ns >= 0 {
            return Ok(e.sha256.clone());
        }
    }
    let sha256 = sha256_file(path)?;
    // The file must not have changed while it was read, or the hash belongs to neither
    // version.
    let after = std::fs::metadata(&canonical).map_err(io)?;
    if stamp(&after) != (dev, ino, size, mtime_ns) {
        return Ok(sha256);
    }
    // Re-read: another run may have added entries meanwhile.
    let mut entries = load(&file);
    entries.insert(
        key,
        Entry {
            dev,
            ino,
            size,
            mtime_ns,
            sha256: sha256.clone(),
        },
    );
    if entries.len() > MAX_ENTRIES {
        entries.retain(|k, _| Path::new(k).exists());
        while entries.len() > MAX_ENTRIES {
            let first = entries.keys().next().cloned();
            first.map(|k| entries.remove(&k));
        }
    }
    if let Ok(bytes) = serde_json::to_vec_pretty(&entries) {
        // Best effort: a cache that cannot be written only means hashing next time.
        let _ = crate::io::write_atomic(&file, &bytes);
    }
    Ok(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_the_file_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let f = tmp.path().join("w.bin");
        std::fs::write(&f, vec![7u8; MIN_SIZE as usize]).unwrap();
        let want = sha256_file(&f).unwrap();
        assert_eq!(sha256_cached_in(&f, Some(&cache)).unwrap(), want);
        assert!(cache.join("sha256.json").exists());

        // A planted entry for the same stamp is believed: the file is not read again.
        let key = std::fs::canonicalize(&f)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut entries = load(&cache.join("sha256.json"));
        entries.get_mut(&key).unwrap().sha256 = "planted".into();
        std::fs::write(
            cache.join("sha256.json"),
            serde_json::to_vec(&entries).unwrap(),
        )
        .unwrap();
        assert_eq!(sha256_cached_in(&f, Some(&cache)).unwrap(), "planted");

        // Rewritten (new size and mtime): hashed again, and the entry replaced.
        std::fs::write(&f, vec![8u8; MIN_SIZE as usize + 1]).unwrap();
        let want2 = sha256_file(&f).unwrap();
        assert_ne!(want, want2);
        assert_eq!(sha256_cached_in(&f, Some(&cache)).unwrap(), want2);
        assert_eq!(sha256_cached_in(&f, Some(&cache)).unwrap(), want2);

        // A damaged cache file is ignored, then replaced.
        std::fs::write(cache.join("sha256.json"), b"{not json").unwrap();
        assert_eq!(sha256_cached_in(&f, Some(&cache)).unwrap(), want2);
        assert!(!load(&cache.join("sha256.json")).is_empty());

        // Small files and no cache folder: always hashed directly.
        let small = tmp.path().join("config.json");
        std::fs::write(&small, b"{}").unwrap();
        assert_eq!(
            sha256_cached_in(&small, Some(&cache)).unwrap(),
            sha256_file(&small).unwrap()
        );
        assert_eq!(sha256_cached_in(&f, None).unwrap(), want2);
    }
}
