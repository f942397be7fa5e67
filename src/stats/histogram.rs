//! Histograms with `np.histogram`'s semantics on the edges `np.linspace(lo, hi, bins + 1)`:
//! bin `i` is `[e_i, e_{i+1})`, the last bin also holds `hi`; values outside the range are
//! counted as underflow or overflow instead of being dropped silently.

use super::error::StatsError;

/// Bin edges computed exactly as `np.linspace(lo, hi, bins + 1)` does: `i * step + lo`, the
/// last edge set to `hi`.
pub fn linspace_edges(lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    let step = (hi - lo) / bins as f64;
    let mut e: Vec<f64> = (0..=bins).map(|i| i as f64 * step + lo).collect();
    if let Some(last) = e.last_mut() {
        *last = hi;
    }
    e
}

/// Streaming counts over fixed edges.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Histogram {
    edges: Vec<f64>,
    counts: Vec<u64>,
    underflow: u64,
    overflow: u64,
    non_finite: u64,
}

impl Histogram {
    /// `bins >= 1` equal bins over `[lo, hi]`, `lo < hi` (callers validate).
    pub fn new(lo: f64, hi: f64, bins: usize) -> Self {
        Self {
            edges: linspace_edges(lo, hi, bins),
            counts: vec![0; bins],
            underflow: 0,
            overflow: 0,
            non_finite: 0,
        }
    }

    /// Counts every value of `data`.
    pub fn add(&mut self, data: &[f32]) {
        let bins = self.counts.len();
        let (lo, hi) = (self.edges[0], self.edges[bins]);
        let norm = bins as f64 / (hi - lo);
        for &v in data {
            if v.is_nan() {
                self.non_finite += 1;
                continue;
            }
            let x = v as f64;
            if x < lo {
                self.underflow += 1;
            } else if x > hi {
                self.overflow += 1;
            } else {
                // A first guess by arithmetic, then corrected against the edges themselves,
                // so a value exactly on an edge lands where searchsorted puts it.
                let mut i = (((x - lo) * norm) as usize).min(bins - 1);
                while i > 0 && x < self.edges[i] {
                    i -= 1;
                }
                while i + 1 < bins && x >= self.edges[i + 1] {
                    i += 1;
                }
                self.counts[i] += 1;
            }
        }
    }

    /// Adds another histogram over the same edges; refuses other edges.
    pub fn merge(&mut self, other: &Histogram) -> Result<(), StatsError> {
        if self.edges != other.edges {
            return Err(StatsError::Differ("histograms over different edges"));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.underflow += other.underflow;
        self.overflow += other.overflow;
        self.non_finite += other.non_finite;
        Ok(())
    }

    /// The `bins + 1` edges.
    pub fn edges(&self) -> &[f64] {
        &self.edges
    }
    /// Count per bin.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }
    /// Values below `lo`.
    pub fn underflow(&self) -> u64 {
        self.underflow
    }
    /// Values above `hi` (including +inf; -inf is underflow).
    pub fn overflow(&self) -> u64 {
        self.overflow
    }
    /// NaN values (in no bin).
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_match_numpy_linspace() {
        // np.linspace(-15, 15, 301)[[0, 1, 150, 299, 300]]
        let e = linspace_edges(-15.0, 15.0, 300);
        assert_eq!(e.len(), 301);
        assert_eq!(e[0], -15.0);
        assert_eq!(e[1], -14.9);
        assert_eq!(e[150], 0.0);
        assert_eq!(e[300], 15.0);
    }

    #[test]
    fn edges_and_range_ends() {
        let mut h = Histogram::new(0.0, 1.0, 4);
        h.add(&[
            0.0,
            0.25,
            0.2499999,
            1.0,
            1.0000001,
            -0.0000001,
            f32::NAN,
            f32::INFINITY,
        ]);
        assert_eq!(h.counts(), &[2, 1, 0, 1]);
        assert_eq!((h.underflow(), h.overflow(), h.non_finite()), (1, 2, 1));
    }
}
