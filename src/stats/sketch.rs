//! A mergeable quantile sketch with a relative-error guarantee (DDSketch: Masson, Rim and
//! Lee, VLDB 2019). A value `x > 0` is counted in bucket `ceil(log_gamma(x))`, with
//! `gamma = (1 + a) / (1 - a)`; a bucket's representative `2 gamma^i / (gamma + 1)` lies
//! within relative error `a` of every value the bucket holds, so every quantile does too.
//! Negative values are counted in a mirrored store, and values of magnitude below
//! [`MIN_VALUE`] (exact zeros among them) in a zero bucket.
//!
//! Written here rather than taken from a crate: the sketches on the registry keep float
//! counts or grow their stores by insertion order, and strata needs integer counts in a
//! sorted map, so that any split of the texts merges to the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The relative accuracy of every quantile: 0.5%, within the 1% the reports promise.
pub const RELATIVE_ACCURACY: f64 = 0.005;
/// Magnitudes below this are counted as zero (and reported as 0).
pub const MIN_VALUE: f64 = 1e-30;

/// `gamma` of the sketch.
fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// The bucket of a magnitude `x >= MIN_VALUE`.
fn bucket(x: f64) -> i32 {
    (x.ln() / gamma().ln()).ceil() as i32
}

/// What bucket `i` reports: the value with equal relative error to both of its edges.
fn representative(i: i32) -> f64 {
    let g = gamma();
    2.0 * g.powi(i) / (g + 1.0)
}

/// Counts of values by bucket: an exact integer histogram on a log grid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sketch {
    /// Positive values by bucket, written as `[bucket, count]` pairs in bucket order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "pairs")]
    pub positive: BTreeMap<i32, u64>,
    /// Negative values by the bucket of their magnitude.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "pairs")]
    pub negative: BTreeMap<i32, u64>,
    /// Values of magnitude below [`MIN_VALUE`].
    #[serde(default)]
    pub zero: u64,
    /// Values that were not finite (not counted in any bucket).
    #[serde(default)]
    pub nan: u64,
}

impl Sketch {
    /// Counts `x`.
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.nan += 1;
        } else if x.abs() < MIN_VALUE {
            self.zero += 1;
        } else if x > 0.0 {
            *self.positive.entry(bucket(x)).or_default() += 1;
        } else {
            *self.negative.entry(bucket(-x)).or_default() += 1;
        }
    }

    /// Adds another sketch's counts: the result does not depend on the order of merges.
    pub fn merge(&mut self, other: &Sketch) {
        for (&i, &c) in &other.positive {
            *self.positive.entry(i).or_default() += c;
        }
        for (&i, &c) in &other.negative {
            *self.negative.entry(i).or_default() += c;
        }
        self.zero += other.zero;
        self.nan += other.nan;
    }

    /// Finite values counted.
    pub fn count(&self) -> u64 {
        self.positive.values().sum::<u64>() + self.negative.values().sum::<u64>() + self.zero
    }

    /// Every bucket as `(representative value, count)`, in increasing order of value
    /// (zeros as 0): the sketch as a histogram to re-bin.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let negative = self
            .negative
            .iter()
            .rev()
            .map(|(&i, &c)| (-representative(i), c));
        let zero = (self.zero > 0).then_some((0.0, self.zero));
        let positive = self.positive.iter().map(|(&i, &c)| (representative(i), c));
        negative.chain(zero).chain(positive).collect()
    }

    /// The positive values by bin of a log axis with `per_decade` bins a decade, as
    /// `(k, count)` for the bin `[10^(k / per_decade), 10^((k + 1) / per_decade))` that
    /// holds each bucket's representative, in increasing order.
    pub fn log_bins(&self, per_decade: u32) -> Vec<(i32, u64)> {
        let mut bins: BTreeMap<i32, u64> = BTreeMap::new();
        for (&i, &c) in &self.positive {
            let k = (representative(i).log10() * per_decade as f64).floor() as i32;
            *bins.entry(k).or_default() += c;
        }
        bins.into_iter().collect()
    }

    /// The value of rank `floor(q (n - 1))` (0-based) among the `n` finite values, within
    /// [`RELATIVE_ACCURACY`] of the exact order statistic (numpy's `method="lower"`);
    /// `None` with no value.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (n - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        for (&i, &c) in self.negative.iter().rev() {
            seen += c;
            if seen > rank {
                return Some(-representative(i));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Some(0.0);
        }
        for (&i, &c) in &self.positive {
            seen += c;
            if seen > rank {
                return Some(representative(i));
            }
        }
        None
    }
}

/// A store as `[bucket, count]` pairs: JSON object keys are strings, which not every
/// reader of a partial turns back into integers.
pub(crate) mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(m: &BTreeMap<i32, u64>, s: S) -> Result<S::Ok, S::Error> {
        m.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<i32, u64>, D::Error> {
        Ok(Vec::<(i32, u64)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact order statistic numpy's `quantile(..., method="lower")` returns.
    fn lower(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn quantiles_lie_within_the_relative_accuracy_of_the_exact_ones() {
        let mut rng = crate::stats::SplitMix64::new(7);
        let mut values: Vec<f64> = (0..20_000)
            .map(|i| {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let x = (u * 40.0 - 30.0).exp();
                if i % 3 == 0 {
                    -x
                } else if i % 97 == 0 {
                    0.0
                } else {
                    x
                }
            })
            .collect();
        let mut s = Sketch::default();
        values.iter().for_each(|&x| s.add(x));
        values.sort_by(f64::total_cmp);
        for q in [0.0, 0.001, 0.01, 0.05, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let (got, want) = (s.quantile(q).unwrap(), lower(&values, q));
            assert!(
                (got - want).abs() <= RELATIVE_ACCURACY * want.abs() * 1.000_001,
                "q {q}: {got} against {want}"
            );
        }
    }

    #[test]
    fn merges_equal_the_sketch_of_every_value() {
        let values: Vec<f64> = (1..500)
            .map(|i| (i as f64 * 0.37).sin() * i as f64)
            .collect();
        let mut whole = Sketch::default();
        values.iter().for_each(|&x| whole.add(x));
        for cut in [0, 1, 250, 499] {
            let (mut a, mut b) = (Sketch::default(), Sketch::default());
            values[..cut].iter().for_each(|&x| a.add(x));
            values[cut..].iter().for_each(|&x| b.add(x));
            a.merge(&b);
            assert_eq!(a, whole);
        }
        assert_eq!(whole.count(), 499);
        let counted: u64 = whole.log_bins(10).iter().map(|b| b.1).sum();
        let negative: u64 = whole.negative.values().sum();
        assert_eq!(counted + negative + whole.zero, 499);
    }

    #[test]
    fn an_empty_sketch_has_no_quantile_and_non_finite_values_are_set_apart() {
        let mut s = Sketch::default();
        assert_eq!(s.quantile(0.5), None);
        s.add(f64::NAN);
        assert_eq!((s.count(), s.nan), (0, 1));
        s.add(0.0);
        assert_eq!(s.quantile(0.5), Some(0.0));
    }
}
