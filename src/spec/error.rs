//! Why a spec cannot be used: below every module that checks part of one.

use std::path::PathBuf;

/// A spec that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file cannot be read.
    #[error("{path}: {cause}")]
    Io {
        /// The spec file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// Not valid YAML for the spec format (unknown field or kind, wrong type, alias bomb).
    #[error("{path}: {message}")]
    Parse {
        /// The spec file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A field holds a value that cannot work.
    #[error("{path}: `{field}` = {value}: {fix}")]
    Invalid {
        /// The spec file.
        path: PathBuf,
        /// The field, e.g. `analyses[2].bins`.
        field: String,
        /// Its value.
        value: String,
        /// What would work.
        fix: String,
    },
}
