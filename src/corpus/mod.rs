//! Where a run's texts come from, when not written in the spec: a corpus file (`.txt`,
//! `.jsonl` or `.parquet`, each optionally `.gz` or `.zst`) or a split of a Hub dataset
//! (its Parquet files), read as a stream of [`TextInput`]s, with what provenance records
//! of them.

pub mod error;
mod files;
pub mod hub;
pub mod map;
mod parquet;
pub mod source;
mod text;

use std::path::Path;

use self::error::invalid;
pub use self::error::{CorpusError, FieldError};
pub use self::files::text_lines;
pub use self::map::{CorpusMap, CorpusSpec};
pub use self::source::{Compression, Corpus, CorpusProvenance, Format, Source};
pub use self::text::TextInput;
use crate::hub::HfEnv;

/// A corpus opened for reading.
pub struct Opened {
    /// The texts, in order, at most `limit` of them.
    pub texts: Box<dyn Iterator<Item = Result<TextInput, CorpusError>>>,
    /// Where they came from.
    pub provenance: CorpusProvenance,
}

impl CorpusSpec {
    /// Checks the corpus fields (files relative to `base`, the spec's folder); the error
    /// names the field, its value and a fix, for the spec to place in its file.
    pub fn check(self, base: &Path) -> Result<Corpus, FieldError> {
        let m = self.0;
        if m.limit == Some(0) {
            return Err(invalid(
                "corpus.limit",
                "0".into(),
                "read at least 1 text, or leave `limit` out",
            ));
        }
        let source = match (&m.path, &m.dataset) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(
                    "corpus",
                    "(a map)".into(),
                    "give exactly one of `path: FILE` and `dataset: ID`",
                ))
            }
            (Some(path), None) => {
                for (field, set) in [
                    ("config", &m.config),
                    ("split", &m.split),
                    ("revision", &m.revision),
                ] {
                    if set.is_some() {
                        return Err(invalid(
                            &format!("corpus.{field}"),
                            format!("{set:?}"),
                            "applies to a Hub dataset (`dataset: ID`); remove it for a file",
                        ));
                    }
                }
                files::check(base, path, &m)?
            }
            (None, Some(id)) => Source::Dataset(hub::DatasetRef::check(id, &m)?),
        };
        Ok(Corpus {
            source,
            column: m.column,
            id_column: m.id_column,
            label: m.label,
            limit: m.limit,
        })
    }
}

impl Corpus {
    /// The text column.
    pub fn column(&self) -> &str {
        self.column.as_deref().unwrap_or("text")
    }

    /// The label column.
    pub fn label_column(&self) -> &str {
        self.label.as_deref().unwrap_or("label")
    }

    /// Opens the texts: a file is read as a stream; a Hub dataset's Parquet files are
    /// found (downloaded unless cached, under `env`'s rules) and read one after another.
    pub fn open(&self, env: &HfEnv) -> Result<Opened, CorpusError> {
        let (texts, provenance) = match &self.source {
            Source::File {
                path,
                format,
                compression,
            } => {
                // Remembered between runs, as for weights: a shard or a re-run of a
                // large corpus does not hash it again.
                let sha = crate::digest::sha256_cached(path).map_err(|e| CorpusError::File {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
                let texts = files::read(self, path, *format, *compression)?;
                let provenance = CorpusProvenance {
                    sha256: Some(sha),
                    dataset: None,
                };
                (texts, provenance)
            }
            Source::Dataset(d) => {
                let (files, dataset) = d.resolve(env)?;
                let texts = parquet::read(self, files)?;
                let provenance = CorpusProvenance {
                    sha256: None,
                    dataset: Some(dataset),
                };
                (texts, provenance)
            }
        };
        let texts: Box<dyn Iterator<Item = _>> = match self.limit {
            Some(n) => Box::new(texts.take(n)),
            None => texts,
        };
        Ok(Opened { texts, provenance })
    }
}
