//! Why shard partials cannot be read or merged: below the run, its partials and its
//! shards, which all report through it.

use std::path::PathBuf;

use crate::analyses::KindError;

/// A partial file that cannot be used, or a set of them that is not one run.
#[derive(Debug, thiserror::Error)]
pub enum PartialError {
    /// Not a partial, a truncated or corrupted one, or one of another format version:
    /// what is wrong and what to do.
    #[error("{0}")]
    Damaged(String),
    /// A partial's shard says it holds other texts than its index gives, or its texts do
    /// not add up.
    #[error("{0}")]
    Inconsistent(String),
    /// Partials that are not the shards of one run, split once each.
    #[error("{0}")]
    Split(String),
    /// No partial file was named.
    #[error("no partial files given")]
    NoPartials,
    /// A named file or folder that is missing or holds no partial.
    #[error("{}: {detail}", path.display())]
    Path {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// One file's error.
    #[error("{}: {error}", path.display())]
    File {
        /// The partial.
        path: PathBuf,
        /// What is wrong with it.
        error: Box<PartialError>,
    },
    /// Two runs' analyses that do not merge.
    #[error("{0} analyses in one, {1} in the other")]
    Analyses(usize, usize),
    /// An analysis's states that do not merge.
    #[error("analyses[{index}] ({kind}): {error}")]
    State {
        /// Its position in the spec.
        index: usize,
        /// Its kind.
        kind: &'static str,
        /// Why.
        error: KindError,
    },
    /// A shard whose states do not fit the shards before it.
    #[error("{}: its states do not fit the shards before it: {error}", path.display())]
    Misfit {
        /// The partial.
        path: PathBuf,
        /// Why.
        error: Box<PartialError>,
    },
}
