//! The paired bootstrap over texts: a percentile interval of the mean of per-text
//! differences, resampling texts (not tokens: tokens of one text are not independent),
//! from a seeded generator so the interval is the same bytes on every run.

use serde::{Deserialize, Serialize};

use super::SplitMix64;

/// The fewest and the most resamples a spec or `compare` may ask for.
pub const RESAMPLES: std::ops::RangeInclusive<usize> = 100..=1_000_000;
/// The resamples when none are given.
pub const DEFAULT_RESAMPLES: usize = 10_000;

/// The mean of paired differences, its 95% bootstrap interval and the signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Paired {
    /// Texts paired (each one difference).
    pub texts: u64,
    /// Mean of the per-text differences (`null` with no text).
    pub mean: Option<f64>,
    /// The 2.5th percentile of the resampled means (`null` with no text).
    pub low: Option<f64>,
    /// The 97.5th percentile of the resampled means (`null` with no text).
    pub high: Option<f64>,
    /// Resamples drawn.
    pub resamples: usize,
    /// Texts whose difference is below zero.
    pub below: u64,
    /// Texts whose difference is above zero.
    pub above: u64,
}

impl Paired {
    /// Whether the interval leaves out zero: the change is beyond the corpus's noise.
    pub fn beyond_noise(&self) -> bool {
        matches!((self.low, self.high), (Some(l), Some(h)) if l > 0.0 || h < 0.0)
    }
}

/// A uniform index below `n` (Lemire's multiply-shift; `n` is far below 2^32, so the bias
/// is under 2^-32 and the draw is the same on every platform).
fn index(rng: &mut SplitMix64, n: usize) -> usize {
    (((rng.next_u64() >> 32) * n as u64) >> 32) as usize
}

/// The paired bootstrap of `diffs` (in a fixed order: the texts' global order), with
/// `resamples` resamples drawn from `seed`.
pub fn paired(diffs: &[f64], resamples: usize, seed: u64) -> Paired {
    let n = diffs.len();
    let below = diffs.iter().filter(|&&d| d < 0.0).count() as u64;
    let above = diffs.iter().filter(|&&d| d > 0.0).count() as u64;
    let mut out = Paired {
        texts: n as u64,
        mean: None,
        low: None,
        high: None,
        resamples,
        below,
        above,
    };
    if n == 0 {
        return out;
    }
    out.mean = Some(diffs.iter().sum::<f64>() / n as f64);
    let mut rng = SplitMix64::new(seed ^ 0x424f_4f54_5354_5250);
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..n).map(|_| diffs[index(&mut rng, n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    out.low = Some(at(0.025));
    out.high = Some(at(0.975));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_texts_are_within_noise_and_a_shift_is_beyond_it() {
        let zero = paired(&[0.0; 40], 1000, 1);
        assert_eq!(
            (zero.low, zero.high, zero.mean),
            (Some(0.0), Some(0.0), Some(0.0))
        );
        assert!(!zero.beyond_noise());
        let noisy: Vec<f64> = (0..40).map(|i| ((i * 7919) % 13) as f64 - 6.0).collect();
        let p = paired(&noisy, 2000, 1);
        assert!(!p.beyond_noise(), "{p:?}");
        let shifted: Vec<f64> = noisy.iter().map(|d| d + 5.0).collect();
        let p = paired(&shifted, 2000, 1);
        assert!(p.beyond_noise() && p.low.unwrap() > 0.0, "{p:?}");
        assert_eq!(
            p.above + p.below,
            40 - shifted.iter().filter(|&&d| d == 0.0).count() as u64
        );
    }

    #[test]
    fn the_interval_is_the_same_for_the_same_seed() {
        let d: Vec<f64> = (0..100).map(|i| (i as f64).sin()).collect();
        assert_eq!(paired(&d, 500, 3), paired(&d, 500, 3));
        assert_ne!(paired(&d, 500, 3), paired(&d, 500, 4));
        assert_eq!(paired(&[], 500, 3).mean, None);
    }
}
