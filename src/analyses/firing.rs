//! What a unit that fires does over a corpus, for the kinds that count units: MLP neurons
//! (`neurons`) and sparse-autoencoder features (`sae`). Per unit: the tokens where it
//! fired, the sum of its values on a fixed-point grid, and its largest values with where
//! they sit, one per text (distinct contexts rather than one text repeated; ties break by
//! global position, text then token). Counts are integers and sums fixed-point, so any
//! split of the texts merges to the same bits. Below the kinds that use it.

use serde::{Deserialize, Serialize};

use super::kind::{KindError, TextActivations};
use super::top::{keep_top, Ranked};
use crate::stats::gram::Fixed;

/// Log10-frequency histogram: 1e-6 (and below) to 1, 4 bins a decade.
pub const LOG_LO: f64 = -6.0;
/// Bins of the log10-frequency histogram.
pub const BINS: usize = 24;

/// One large activation of a unit and where it sits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// The activation.
    pub value: f32,
    /// Global index of the text.
    pub text_index: usize,
    /// Text id.
    pub text: String,
    /// Token position in the text.
    pub position: usize,
    /// The token, decoded.
    pub token: String,
    /// The tokens just before it, decoded and joined (kinds that show context only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// The tokens just after it, decoded and joined (kinds that show context only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl Ranked for Example {
    fn before(&self, o: &Self) -> std::cmp::Ordering {
        o.value
            .total_cmp(&self.value)
            .then((self.text_index, self.position).cmp(&(o.text_index, o.position)))
    }
}

/// Tokens of context an example keeps on each side, when a kind asks for context.
pub const CONTEXT: usize = 8;

/// One group of units' counts and sums so far (a block's neurons, an SAE's features).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockNeurons {
    /// Tokens seen.
    pub tokens: u64,
    /// Per unit: tokens where it fired.
    pub fired: Vec<u64>,
    /// Per unit: the sum of its activations, on the fixed-point grid.
    pub sums: Fixed,
    /// Per unit: its largest activations, one per text, largest first.
    pub examples: Vec<Vec<Example>>,
}

impl BlockNeurons {
    /// `width` units that have seen nothing.
    pub fn new(width: usize) -> Self {
        Self {
            tokens: 0,
            fired: vec![0; width],
            sums: Fixed::zeros(width),
            examples: vec![Vec::new(); width],
        }
    }

    /// Adds one text's `[rows, width]` activations: a unit fires where it exceeds
    /// `threshold`; `keep` examples per unit, its largest value whatever it is.
    pub fn add(&mut self, t: &TextActivations, rows: &[f32], threshold: f32, keep: usize) {
        let width = self.fired.len();
        if width == 0 || rows.len() < width {
            return;
        }
        let mut fired = vec![0u32; width];
        let mut sums = vec![0f64; width];
        let mut best = vec![(f32::NEG_INFINITY, 0usize); width];
        for (r, row) in rows.chunks_exact(width).enumerate() {
            count_row(row, threshold, &mut fired, &mut sums);
            for (b, &x) in best.iter_mut().zip(row) {
                // Strictly greater: the earliest position wins a tie.
                if x > b.0 {
                    *b = (x, r);
                }
            }
        }
        self.tokens += (rows.len() / width) as u64;
        for (a, f) in self.fired.iter_mut().zip(&fired) {
            *a += *f as u64;
        }
        self.sums.add(&sums);
        self.keep_best(t, &best, threshold, keep, false);
    }

    /// Adds one text's features, given per row as its active `(feature, value)` pairs
    /// (the rest zero): the same counts, sums and examples as [`BlockNeurons::add`] of
    /// the dense rows with a threshold of 0 and context, without reading the zeros.
    pub fn add_active(&mut self, t: &TextActivations, rows: &[Vec<(u32, f32)>], keep: usize) {
        let width = self.fired.len();
        let mut fired = vec![0u32; width];
        let mut sums = vec![0f64; width];
        let mut best = vec![(f32::NEG_INFINITY, 0usize); width];
        for (r, row) in rows.iter().enumerate() {
            for &(j, x) in row {
                let j = j as usize;
                fired[j] += 1;
                sums[j] += x as f64;
                if x > best[j].0 {
                    best[j] = (x, r);
                }
            }
        }
        self.tokens += rows.len() as u64;
        for (a, f) in self.fired.iter_mut().zip(&fired) {
            *a += *f as u64;
        }
        self.sums.add(&sums);
        self.keep_best(t, &best, 0.0, keep, true);
    }

    /// Offers each unit's best value of a text (`(value, row)`) to its examples.
    fn keep_best(
        &mut self,
        t: &TextActivations,
        best: &[(f32, usize)],
        threshold: f32,
        keep: usize,
        context: bool,
    ) {
        for (kept, &(value, r)) in self.examples.iter_mut().zip(best) {
            let worst = kept.get(keep.saturating_sub(1)).map(|e| e.value);
            if !value.is_finite()
                || (context && value <= threshold)
                || (kept.len() >= keep && worst.is_some_and(|w| value <= w))
            {
                continue;
            }
            keep_top(
                kept,
                vec![example(t, value, t.first_token + r, context)],
                keep,
            );
        }
    }

    /// Folds in the counts of the texts that follow.
    pub fn merge(&mut self, b: BlockNeurons, keep: usize) -> Result<(), KindError> {
        if self.fired.len() != b.fired.len() {
            return Err(KindError::Mismatch(
                "the states count groups of other widths".into(),
            ));
        }
        self.tokens += b.tokens;
        self.fired
            .iter_mut()
            .zip(&b.fired)
            .for_each(|(x, y)| *x += y);
        self.sums.merge(&b.sums);
        for (x, y) in self.examples.iter_mut().zip(b.examples) {
            keep_top(x, y, keep);
        }
        Ok(())
    }

    /// Per unit: the fraction of tokens where it fired, its mean and its largest value
    /// (NaN for a unit that saw no finite value).
    pub fn profile(&self) -> (Vec<f64>, Vec<f64>, Vec<f32>) {
        let n = self.tokens as f64;
        let frequency = self.fired.iter().map(|&f| f as f64 / n).collect();
        let mean = (0..self.fired.len())
            .map(|j| self.sums.get(j) / n)
            .collect();
        let max = self
            .examples
            .iter()
            .map(|e| e.first().map_or(f32::NAN, |e| e.value))
            .collect();
        (frequency, mean, max)
    }
}

/// The example of `value` at `position` of text `t`, with its context when asked for.
fn example(t: &TextActivations, value: f32, position: usize, context: bool) -> Example {
    let join = |from: usize, to: usize| -> String {
        t.tokens[from.min(t.tokens.len())..to.min(t.tokens.len())].concat()
    };
    Example {
        value,
        text_index: t.index,
        text: t.id.to_string(),
        position,
        token: t.tokens.get(position).cloned().unwrap_or_default(),
        before: context.then(|| join(position.saturating_sub(CONTEXT), position)),
        after: context.then(|| join(position + 1, position + 1 + CONTEXT)),
    }
}

/// Edges of the log10-frequency histogram.
pub fn log_frequency_edges() -> Vec<f64> {
    (0..=BINS)
        .map(|i| LOG_LO + i as f64 * (-LOG_LO) / BINS as f64)
        .collect()
}

/// Units per log10-frequency bin; units that never fired are left out.
pub fn log_frequency_counts(frequency: &[f64]) -> Vec<u64> {
    let mut counts = vec![0u64; BINS];
    for &f in frequency.iter().filter(|&&f| f > 0.0) {
        let bin = ((f.log10() - LOG_LO) / (-LOG_LO) * BINS as f64).floor();
        counts[(bin.max(0.0) as usize).min(BINS - 1)] += 1;
    }
    counts
}

crate::simd::multiversion! {
/// `fired[j] += row[j] > threshold`, `sums[j] += row[j]` (in f64).
fn count_row(row: &[f32], threshold: f32, fired: &mut [u32], sums: &mut [f64]) {
    for ((f, s), &x) in fired.iter_mut().zip(sums.iter_mut()).zip(row) {
        *f += u32::from(x > threshold);
        *s += x as f64;
    }
}
}
