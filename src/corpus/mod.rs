//! Where a run's texts come from, when not written in the spec: a corpus file (`.txt`,
//! `.jsonl` or `.parquet`, each optionally `.gz` or `.zst`) or a split of a Hub dataset
//! (its Parquet files), read as a stream of [`TextInput`]s, with what provenance records
//! of them.

mod files;
pub mod hub;
mod parquet;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::extract::TextInput;
use crate::model::hub::HfEnv;
use crate::spec::SpecError;

/// `corpus:` as written: a path, or a map.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusMap {
    /// A corpus file, relative to the spec file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A Hub dataset (`Salesforce/wikitext`): the Parquet files the Hub keeps of it are read.
    #[serde(default)]
    pub dataset: Option<String>,
    /// The dataset's configuration (subset). Default `default`.
    #[serde(default)]
    pub config: Option<String>,
    /// The dataset's split. Default `train`.
    #[serde(default)]
    pub split: Option<String>,
    /// The revision holding the dataset's Parquet files. Default `refs/convert/parquet`,
    /// the branch where the Hub keeps its Parquet conversion of every public dataset; a
    /// commit of it pins the files.
    #[serde(default)]
    pub revision: Option<String>,
    /// The text column (JSONL field, Parquet column). Default `text`.
    #[serde(default)]
    pub column: Option<String>,
    /// The id column. Default: `id` when there is one, else the line or row number
    /// (`line7`, `row7`, from 1).
    #[serde(default)]
    pub id_column: Option<String>,
    /// Read only the first N texts.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `corpus:` in a spec: a file path, or a [`CorpusMap`].
#[derive(Debug, Clone)]
pub struct CorpusSpec(pub CorpusMap);

impl<'de> Deserialize<'de> for CorpusSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CorpusSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a corpus file, or a map {path: FILE} or {dataset: ID, split: ...}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CorpusSpec, E> {
                Ok(CorpusSpec(CorpusMap {
                    path: Some(v.into()),
                    ..Default::default()
                }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<CorpusSpec, A::Error> {
                CorpusMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(CorpusSpec)
            }
        }
        d.deserialize_any(V)
    }
}

/// A checked corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    /// Where the texts are.
    pub source: Source,
    /// The text column, if not `text`.
    pub column: Option<String>,
    /// The id column, if not `id`.
    pub id_column: Option<String>,
    /// Read only the first N texts.
    pub limit: Option<usize>,
}

/// Where a corpus' texts are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file, resolved against the spec's folder.
    File {
        /// The file.
        path: PathBuf,
        /// What it holds.
        format: Format,
        /// How it is compressed.
        compression: Compression,
    },
    /// A split of a Hub dataset.
    Dataset(hub::DatasetRef),
}

/// A corpus file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.txt`: one text a line.
    Txt,
    /// `.jsonl`: one JSON object a line.
    Jsonl,
    /// `.parquet`.
    Parquet,
}

/// A corpus file's compression, from its last extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain.
    None,
    /// `.gz`.
    Gzip,
    /// `.zst`.
    Zstd,
}

/// Why a corpus cannot be read. Each names the file (or dataset), what is wrong and a fix.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A line of a text or JSONL corpus is unusable.
    #[error("corpus {path}, line {line}: {detail}")]
    Line {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// A row of a Parquet file is unusable.
    #[error("corpus {path}, row {row}: {detail}")]
    Row {
        /// The Parquet file.
        path: PathBuf,
        /// 1-based row within the file.
        row: usize,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// A file cannot be opened, decompressed or parsed, or lacks what is needed.
    #[error("corpus {path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// A Hub dataset cannot be found or fetched.
    #[error("{0}")]
    Dataset(String),
}

/// What provenance records of a corpus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CorpusProvenance {
    /// sha256 of a corpus file.
    pub sha256: Option<String>,
    /// The Hub dataset, its commit and files.
    pub dataset: Option<hub::DatasetProvenance>,
}

/// A corpus opened for reading.
pub struct Opened {
    /// The texts, in order, at most `limit` of them.
    pub texts: Box<dyn Iterator<Item = Result<TextInput, CorpusError>>>,
    /// Where they came from.
    pub provenance: CorpusProvenance,
}

impl CorpusSpec {
    /// Checks the corpus fields (files relative to `base`, the spec's folder); `invalid`
    /// makes the spec error for a field, its value and a fix.
    pub fn check(
        self,
        base: &Path,
        invalid: &dyn Fn(&str, String, &str) -> SpecError,
    ) -> Result<Corpus, SpecError> {
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
                files::check(base, path, &m, invalid)?
            }
            (None, Some(id)) => Source::Dataset(hub::DatasetRef::check(id, &m, invalid)?),
        };
        Ok(Corpus {
            source,
            column: m.column,
            id_column: m.id_column,
            limit: m.limit,
        })
    }
}

impl Corpus {
    /// The text column.
    pub fn column(&self) -> &str {
        self.column.as_deref().unwrap_or("text")
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
                let sha = crate::model::hashcache::sha256_cached(path).map_err(|e| {
                    CorpusError::File {
                        path: path.clone(),
                        detail: e.to_string(),
                    }
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

/// The id of a text without an id column: `line7` / `row7`, from 1.
fn numbered(prefix: &str, n: usize) -> String {
    format!("{prefix}{n}")
}
