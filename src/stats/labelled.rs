//! Exact first and second moments of labelled tokens, kept per cross-validation fold: per
//! fold and hidden state the sums `X^T X` over its tokens, and per fold, class and hidden
//! state the sums of `x`. Every linear question of two or more classes (their means, the
//! difference of means, its separation, LDA, a ridge probe fitted and scored on held-out
//! folds) is a function of these, so they are streamed once and merged exactly: the sums
//! are fixed-point integers ([`super::gram`]), and a fold's training sums are the total's
//! minus its own, an integer subtraction with no rounding.
//!
//! A text's fold comes from its id alone ([`fold_of`]), so a text lands in the same fold
//! whatever the shard count, batch size or order of the other texts.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::StatsError;
use super::gram::{bytes_of, column_sums, cross_products, finite_rows, FiniteRows, Fixed};

/// The fold of the text `id` among `folds`: the first 8 bytes of `sha256(id)`, read big
/// endian, modulo `folds`.
pub fn fold_of(id: &str, folds: usize) -> usize {
    let digest = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % folds.max(1) as u64) as usize
}

/// One class's sums.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSums {
    /// Per fold, its texts of this class.
    pub texts: Vec<u64>,
    /// Per fold, their tokens summed (finite in every selected state).
    pub tokens: Vec<u64>,
    /// Per fold, per hidden state, `sum of x` (empty until the fold's first token).
    pub sums: Vec<Vec<Fixed>>,
}

/// Exact per-fold, per-class sums so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelledMoments {
    /// Hidden-state indices.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// Cross-validation folds.
    pub folds: usize,
    /// Tokens left out for a NaN or infinite value in any selected state.
    pub nonfinite: u64,
    /// Per fold, per hidden state, the upper triangle of `X^T X` (empty until the fold's
    /// first token).
    pub products: Vec<Vec<Fixed>>,
    /// Per label (in sorted order), its sums.
    pub classes: BTreeMap<String, ClassSums>,
}

/// Bytes of the sums of `l` hidden states of size `d` over `folds` folds and `classes`
/// classes.
pub fn state_bytes(l: usize, d: usize, folds: usize, classes: usize) -> u64 {
    bytes_of(folds * l * (d * (d + 1) / 2 + classes * d))
}

impl LabelledMoments {
    /// Empty sums over `layers` (labelled `labels`) in `folds` folds.
    pub fn new(layers: Vec<usize>, labels: Vec<String>, folds: usize) -> Self {
        Self {
            products: vec![Vec::new(); folds],
            layers,
            labels,
            folds,
            nonfinite: 0,
            classes: BTreeMap::new(),
        }
    }

    /// Takes one text of class `label` in fold `fold`: its rows of every selected state
    /// (`[rows, d]` each, in `layers` order) that are finite in all of them.
    pub fn observe(&mut self, states: &[&[f32]], d: usize, fold: usize, label: &str) {
        let FiniteRows { x, left_out, .. } = finite_rows(states, d);
        self.nonfinite += left_out;
        let (l, folds) = (self.layers.len(), self.folds);
        let class = self.classes.entry(label.to_string()).or_default();
        if class.texts.is_empty() {
            class.texts = vec![0; folds];
            class.tokens = vec![0; folds];
            class.sums = vec![Vec::new(); folds];
        }
        class.texts[fold] += 1;
        let n = x.first().map_or(0, |x| x.len() / d.max(1));
        if n == 0 {
            return;
        }
        class.tokens[fold] += n as u64;
        let sums = &mut class.sums[fold];
        if sums.is_empty() {
            *sums = vec![Fixed::zeros(d); l];
        }
        for (sum, x) in sums.iter_mut().zip(&x) {
            sum.add(&column_sums(x, d));
        }
        let products = &mut self.products[fold];
        if products.is_empty() {
            *products = vec![Fixed::zeros(d * (d + 1) / 2); l];
        }
        products
            .par_iter_mut()
            .zip(&x)
            .for_each_init(Vec::new, |buf, (p, x)| {
                buf.resize(d * d, 0.0);
                cross_products(x, x, n, d, buf);
                p.add_upper(buf, d);
            });
    }

    /// Folds in the sums of the texts that follow.
    pub fn merge(&mut self, right: LabelledMoments) -> Result<(), StatsError> {
        if self.layers != right.layers || self.folds != right.folds {
            return Err(StatsError::Differ(
                "labelled sums of other hidden states or folds",
            ));
        }
        for (mine, theirs) in self.products.iter_mut().zip(right.products) {
            merge_fixed(mine, theirs)?;
        }
        for (label, theirs) in right.classes {
            let mine = self.classes.entry(label).or_default();
            if mine.texts.is_empty() {
                *mine = theirs;
                continue;
            }
            for f in 0..self.folds {
                mine.texts[f] += theirs.texts.get(f).copied().unwrap_or(0);
                mine.tokens[f] += theirs.tokens.get(f).copied().unwrap_or(0);
            }
            for (a, b) in mine.sums.iter_mut().zip(theirs.sums) {
                merge_fixed(a, b)?;
            }
        }
        self.nonfinite += right.nonfinite;
        Ok(())
    }

    /// Whether any sum overflowed.
    pub fn overflowed(&self) -> bool {
        let sums = self.classes.values().flat_map(|c| c.sums.iter().flatten());
        self.products
            .iter()
            .flatten()
            .chain(sums)
            .any(|f| f.overflow)
    }
}

/// Adds per-state sums `b` into `a` (either may be empty: no token yet).
fn merge_fixed(a: &mut Vec<Fixed>, b: Vec<Fixed>) -> Result<(), StatsError> {
    if b.is_empty() {
        return Ok(());
    }
    if a.is_empty() {
        *a = b;
        return Ok(());
    }
    if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| x.raw.len() != y.raw.len()) {
        return Err(StatsError::Differ(
            "labelled sums of different hidden sizes",
        ));
    }
    for (x, y) in a.iter_mut().zip(&b) {
        x.merge(y);
    }
    Ok(())
}
