//! The largest activations of a text, kept by magnitude across texts: what the
//! `outliers` and `outlier_dims` kinds both track.

use serde::{Deserialize, Serialize};

use super::kind::TextActivations;
use crate::view::fmt_num;

/// An outlier being tracked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// |value|.
    pub abs: f32,
    /// The value.
    pub value: f32,
    /// (global text index, token index, dim): the position order of ties.
    pub pos: (usize, usize, usize),
    /// Text id.
    pub text: String,
    /// The token, decoded.
    pub token: String,
}

impl Candidate {
    fn before(&self, o: &Self) -> std::cmp::Ordering {
        o.abs.total_cmp(&self.abs).then(self.pos.cmp(&o.pos))
    }

    /// The reported outlier.
    pub fn outlier(&self) -> Outlier {
        Outlier {
            value: self.value as f64,
            text: self.text.clone(),
            token_index: self.pos.1,
            token: self.token.clone(),
            dim: self.pos.2,
        }
    }
}

/// The `k` values of one text's `[rows, dim]` state of largest magnitude that pass
/// `keep`, as candidates (with text and token filled in).
pub(crate) fn top_candidates(
    t: &TextActivations,
    rows: &[f32],
    k: usize,
    keep: impl Fn(f32) -> bool,
) -> Vec<Candidate> {
    let dim = t.dim.max(1);
    let mut fresh: Vec<Candidate> = rows
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite() && keep(v.abs()))
        .map(|(i, &v)| Candidate {
            abs: v.abs(),
            value: v,
            pos: (t.index, t.first_token + i / dim, i % dim),
            text: String::new(),
            token: String::new(),
        })
        .collect();
    fresh.sort_by(Candidate::before);
    fresh.truncate(k);
    for c in &mut fresh {
        c.text = t.id.to_string();
        c.token = t.tokens.get(c.pos.1).cloned().unwrap_or_default();
    }
    fresh
}

/// One large activation and where it sits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// The value (signed).
    pub value: f64,
    /// Text id.
    pub text: String,
    /// Token position in the text (0-based, counting token 0).
    pub token_index: usize,
    /// The token, decoded.
    pub token: String,
    /// Embedding dimension.
    pub dim: usize,
}

impl Outlier {
    /// The value and where it sits, as table cells: value, text, token #, token, dim.
    pub fn cells(&self) -> [String; 5] {
        [
            fmt_num(self.value),
            self.text.clone(),
            self.token_index.to_string(),
            format!("{:?}", self.token),
            self.dim.to_string(),
        ]
    }
}

/// Something kept in a top-`k` list: the order it ranks in (ties broken by position, so
/// any split of the texts keeps the same list).
pub(crate) trait Ranked {
    /// `Less` when `self` ranks before `other`.
    fn before(&self, other: &Self) -> std::cmp::Ordering;
}

impl Ranked for Candidate {
    fn before(&self, o: &Self) -> std::cmp::Ordering {
        Candidate::before(self, o)
    }
}

/// Merges `fresh` into `kept`: the first `k` in rank order.
pub(crate) fn keep_top<T: Ranked>(kept: &mut Vec<T>, fresh: Vec<T>, k: usize) {
    kept.extend(fresh);
    kept.sort_by(T::before);
    kept.truncate(k);
}
