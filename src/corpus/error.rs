//! How a corpus fails: below every reader.

use std::path::PathBuf;

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

/// A corpus field of a spec that cannot work; the spec names its file around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, e.g. `corpus.limit`.
    pub field: String,
    /// Its value.
    pub value: String,
    /// What would work.
    pub fix: String,
}

/// A [`FieldError`] for `field`, its value and a fix.
pub(crate) fn invalid(field: &str, value: String, fix: &str) -> FieldError {
    FieldError {
        field: field.to_string(),
        value,
        fix: fix.to_string(),
    }
}
