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

impl SpecError {
    /// `field` of the spec at `path` holds `value`, which cannot work; `fix` says what would.
    pub fn invalid(
        path: &std::path::Path,
        field: impl Into<String>,
        value: impl ToString,
        fix: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            value: value.to_string(),
            fix: fix.into(),
        }
    }
}
