//! Why an analysis's state or result cannot be used: two states that do not merge, data
//! that gives no result, a result read from a file that is inconsistent. Below the kind
//! interface and its columns, with the checks every kind's `validate` shares.

use crate::stats::StatsError;

/// What the kind interface's merges, finishes and checks refuse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KindError {
    /// Two states that do not fit together (of other parameters, hidden states or kinds).
    #[error("{0}")]
    Mismatch(String),
    /// The run's data cannot give the result (a text never seen, too few tokens).
    #[error("{0}")]
    NoResult(String),
    /// A list in a result read from a file has the wrong length.
    #[error("{what} has {got} entries, expected {want}")]
    Length {
        /// The list, and what it has one entry per.
        what: String,
        /// Its entries.
        got: usize,
        /// Those expected.
        want: usize,
    },
    /// A result names a hidden state the model lacks.
    #[error("hidden state {label:?} is not one of the model's ({first} ... {last})")]
    UnknownLabel {
        /// The label.
        label: String,
        /// The model's first label.
        first: String,
        /// Its last.
        last: String,
    },
    /// Histogram edges that are not two or more ascending values.
    #[error("{what}: {edges} edges, not two or more ascending values")]
    Edges {
        /// The histogram.
        what: String,
        /// How many edges it has.
        edges: usize,
    },
    /// Any other inconsistency of a result read from a file: what it is.
    #[error("{0}")]
    Invalid(String),
    /// Exact sums that do not merge or overflowed.
    #[error(transparent)]
    Stats(#[from] StatsError),
}

/// Checks `got == want` for a length in a result being validated.
pub fn expect_len(what: &str, got: usize, want: usize) -> Result<(), KindError> {
    if got == want {
        Ok(())
    } else {
        Err(KindError::Length {
            what: what.to_string(),
            got,
            want,
        })
    }
}

/// Checks that a `[label][...]` result is one entry per label.
pub fn expect_per_label<T>(what: &str, rows: &[T], labels: &[String]) -> Result<(), KindError> {
    expect_len(
        &format!("{what} (one entry per hidden state)"),
        rows.len(),
        labels.len(),
    )
}

/// Checks the labels of a result name hidden states of the model (`model`: its labels).
pub fn expect_known_labels(labels: &[String], model: &[String]) -> Result<(), KindError> {
    for l in labels {
        if !model.contains(l) && l != crate::model::PRE_FINAL_NORM {
            return Err(KindError::UnknownLabel {
                label: l.clone(),
                first: model.first().cloned().unwrap_or_default(),
                last: model.last().cloned().unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// Checks histogram `edges` against its `counts`: at least two edges, strictly ascending,
/// one count per bin.
pub fn check_edges(what: &str, edges: &[f64], counts: &[u64]) -> Result<(), KindError> {
    if edges.len() < 2 || !edges.windows(2).all(|w| w[0] < w[1]) {
        return Err(KindError::Edges {
            what: what.to_string(),
            edges: edges.len(),
        });
    }
    expect_len(
        &format!("{what}: counts (one per bin between the edges)"),
        counts.len(),
        edges.len() - 1,
    )
}
