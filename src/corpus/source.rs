//! A checked corpus: where its texts are, and what provenance records of them.

use std::path::PathBuf;

use super::hub::{DatasetProvenance, DatasetRef};

/// A checked corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    /// Where the texts are.
    pub source: Source,
    /// The text column, if not `text`.
    pub column: Option<String>,
    /// The id column, if not `id`.
    pub id_column: Option<String>,
    /// The label column, if not `label`.
    pub label: Option<String>,
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
    Dataset(DatasetRef),
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

/// What provenance records of a corpus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CorpusProvenance {
    /// sha256 of a corpus file.
    pub sha256: Option<String>,
    /// The Hub dataset, its commit and files.
    pub dataset: Option<DatasetProvenance>,
}

/// The id of a text without an id column: `line7` / `row7`, from 1.
pub(super) fn numbered(prefix: &str, n: usize) -> String {
    format!("{prefix}{n}")
}
