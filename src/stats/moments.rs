//! Streaming moments up to the fourth, merged batch by batch (Pébay's pairwise update, the
//! generalisation of Chan et al.), in f64, so a corpus of any size gives the same numbers
//! as one pass over all of it, and a large common offset costs no digits.

use serde::{Deserialize, Serialize};

use super::double_double::{sum_finite, Dd};

/// Where an extreme value sits. Positions are as the caller numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Located {
    /// The value.
    pub value: f64,
    /// The caller's index of the batch (a text).
    pub batch: usize,
    /// Row within the batch (a token).
    pub row: usize,
    /// Column within the row (a dimension).
    pub col: usize,
}

/// Count, mean, central moments M2..M4, min, max, and the largest |x| with its position.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moments {
    n: u64,
    /// The sum of the finite values, as a double-double: the mean comes from it, so a
    /// merge's mean difference keeps its digits far from zero.
    sum: Dd,
    m2: f64,
    m3: f64,
    m4: f64,
    min: Option<f64>,
    max: Option<f64>,
    max_abs: Option<Located>,
    non_finite: u64,
}

impl Moments {
    /// The moments of one row-major `[rows, cols]` batch. Non-finite values are counted
    /// apart and kept out of the moments.
    pub fn of_batch<T: Copy + Into<f64>>(
        data: &[T],
        cols: usize,
        batch: usize,
        row_offset: usize,
    ) -> Self {
        let mut b = Moments::default();
        // Two passes over the batch: the sum (so the mean) first, then central sums.
        let (sum, n) = sum_finite(data);
        b.non_finite = data.len() as u64 - n;
        for (k, &v) in data.iter().enumerate() {
            let x: f64 = v.into();
            if !x.is_finite() {
                continue;
            }
            b.min = Some(b.min.map_or(x, |m| m.min(x)));
            b.max = Some(b.max.map_or(x, |m| m.max(x)));
            if b.max_abs.is_none_or(|m| x.abs() > m.value.abs()) {
                b.max_abs = Some(Located {
                    value: x,
                    batch,
                    row: row_offset + k / cols.max(1),
                    col: k % cols.max(1),
                });
            }
        }
        if n > 0 {
            let mean = sum.over(n as f64);
            let (mut m2, mut m3, mut m4) = (0f64, 0f64, 0f64);
            for x in data
                .iter()
                .map(|&v| v.into())
                .filter(|x: &f64| x.is_finite())
            {
                let d = (x - mean.hi) - mean.lo;
                let d2 = d * d;
                m2 += d2;
                m3 += d2 * d;
                m4 += d2 * d2;
            }
            b.n = n;
            b.sum = sum;
            b.m2 = m2;
            b.m3 = m3;
            b.m4 = m4;
        }
        b
    }

    /// Folds `other` into `self` (order-independent up to rounding).
    pub fn merge(&mut self, other: &Moments) {
        self.non_finite += other.non_finite;
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            let nf = self.non_finite;
            *self = other.clone();
            self.non_finite = nf;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta = other.sum.over(nb).minus(self.sum.over(na));
        let d_n = delta / n;
        let d_n2 = d_n * d_n;
        let m2 = self.m2 + other.m2 + delta * d_n * na * nb;
        let m3 = self.m3
            + other.m3
            + d_n2 * delta * na * nb * (na - nb)
            + 3.0 * d_n * (na * other.m2 - nb * self.m2);
        let m4 = self.m4
            + other.m4
            + d_n2 * d_n * delta * na * nb * (na * na - na * nb + nb * nb)
            + 6.0 * d_n2 * (na * na * other.m2 + nb * nb * self.m2)
            + 4.0 * d_n * (na * other.m3 - nb * self.m3);
        self.sum = self.sum.plus_dd(other.sum);
        self.m2 = m2;
        self.m3 = m3;
        self.m4 = m4;
        self.n += other.n;
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        // Ties keep the earlier position, as a single pass would.
        if let Some(o) = other.max_abs {
            if self.max_abs.is_none_or(|m| o.value.abs() > m.value.abs()) {
                self.max_abs = Some(o);
            }
        }
    }

    /// Finite values seen.
    pub fn count(&self) -> u64 {
        self.n
    }
    /// Non-finite values seen (excluded from everything else).
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }
    /// Mean (`np.mean`).
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum.over(self.n as f64).value())
    }
    /// Population variance (`np.var`, ddof 0).
    pub fn variance(&self) -> Option<f64> {
        (self.n > 0).then(|| self.m2 / self.n as f64)
    }
    /// Population standard deviation (`np.std`, ddof 0).
    pub fn std(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }
    /// Skewness, biased (`scipy.stats.skew`).
    pub fn skewness(&self) -> Option<f64> {
        (self.n > 0 && self.m2 > 0.0).then(|| {
            let n = self.n as f64;
            (self.m3 / n) / (self.m2 / n).powf(1.5)
        })
    }
    /// Excess kurtosis, Fisher, biased (`scipy.stats.kurtosis` defaults): 0 for a normal.
    pub fn kurtosis(&self) -> Option<f64> {
        (self.n > 0 && self.m2 > 0.0).then(|| {
            let n = self.n as f64;
            n * self.m4 / (self.m2 * self.m2) - 3.0
        })
    }
    /// Smallest finite value.
    pub fn min(&self) -> Option<f64> {
        self.min
    }
    /// Largest finite value.
    pub fn max(&self) -> Option<f64> {
        self.max
    }
    /// The value of largest magnitude and where it is (first occurrence on ties).
    pub fn max_abs(&self) -> Option<Located> {
        self.max_abs
    }
}

impl super::tree::Merge for Moments {
    fn merge(&mut self, right: &Self) {
        Moments::merge(self, right);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(xs: &[f64]) -> (f64, f64, f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let m = |p: i32| xs.iter().map(|x| (x - mean).powi(p)).sum::<f64>();
        (
            mean,
            m(2) / n,
            (m(3) / n) / (m(2) / n).powf(1.5),
            n * m(4) / (m(2) * m(2)) - 3.0,
        )
    }

    #[test]
    fn merged_batches_equal_one_pass() {
        let xs: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37 + (i as f32).sqrt())
            .collect();
        let mut m = Moments::default();
        for (b, chunk) in xs.chunks(77).enumerate() {
            m.merge(&Moments::of_batch(chunk, 7, b, 0));
        }
        let (mean, var, skew, kurt) = direct(&xs.iter().map(|&x| x as f64).collect::<Vec<_>>());
        assert!((m.mean().unwrap() - mean).abs() < 1e-12);
        assert!((m.variance().unwrap() - var).abs() < 1e-10 * var);
        assert!((m.skewness().unwrap() - skew).abs() < 1e-10);
        assert!((m.kurtosis().unwrap() - kurt).abs() < 1e-10);
        assert_eq!(m.count(), 1000);
    }

    #[test]
    fn large_offset_keeps_digits() {
        // 1e6 + small spread, in f32: a naive sum of squares in f64 loses the variance.
        let xs: Vec<f32> = (0..10_000)
            .map(|i| 1.0e6 + (i % 10) as f32 * 0.25)
            .collect();
        let mut m = Moments::default();
        for (b, chunk) in xs.chunks(333).enumerate() {
            m.merge(&Moments::of_batch(chunk, 1, b, 0));
        }
        let (mean, var, _, kurt) = direct(&xs.iter().map(|&x| x as f64).collect::<Vec<_>>());
        assert!((m.mean().unwrap() - mean).abs() < 1e-9);
        assert!(
            (m.variance().unwrap() - var).abs() < 1e-9 * var,
            "{} vs {var}",
            m.variance().unwrap()
        );
        assert!((m.kurtosis().unwrap() - kurt).abs() < 1e-8);
    }

    #[test]
    fn max_abs_is_located_and_nan_is_counted_apart() {
        let mut m = Moments::default();
        m.merge(&Moments::of_batch(&[1.0f32, -2.0, 0.5, 3.0], 2, 0, 5));
        m.merge(&Moments::of_batch(&[f32::NAN, -7.5, 1.0, 7.5], 2, 1, 0));
        let loc = m.max_abs().unwrap();
        assert_eq!((loc.value, loc.batch, loc.row, loc.col), (-7.5, 1, 0, 1));
        assert_eq!(m.non_finite(), 1);
        assert_eq!(m.count(), 7);
        assert_eq!((m.min(), m.max()), (Some(-7.5), Some(7.5)));
    }
}
