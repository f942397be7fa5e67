//! Sums carried as double-doubles (`hi + lo`, about 106 bits), so a mean far from zero
//! (activations shifted by 1e4) keeps the digits a merge needs: the difference of two
//! texts' means is then taken from sums that lost nothing, not from two f64 means each
//! rounded at the 1e4 scale (spacing 1.8e-12). Written here rather than taken from a
//! crate because it is four error-free transformations (Knuth's TwoSum, Dekker's
//! FastTwoSum, a fused multiply-add for the division's remainder).

use serde::{Deserialize, Serialize};

/// `hi + lo` with `|lo| <= ulp(hi) / 2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dd {
    /// The leading part.
    pub hi: f64,
    /// The rounding error of `hi`.
    pub lo: f64,
}

/// `a + b` as a rounded sum and its exact error (Knuth).
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// `a + b` as a rounded sum and its exact error, for `|a| >= |b|` (Dekker).
fn fast_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    (s, b - (s - a))
}

impl Dd {
    /// Adds an f64.
    pub fn plus(self, x: f64) -> Self {
        let (s, e) = two_sum(self.hi, x);
        let (hi, lo) = fast_two_sum(s, e + self.lo);
        Self { hi, lo }
    }

    /// Adds another double-double.
    pub fn plus_dd(self, o: Self) -> Self {
        let (s, e) = two_sum(self.hi, o.hi);
        let (hi, lo) = fast_two_sum(s, e + self.lo + o.lo);
        Self { hi, lo }
    }

    /// Divides by a count (`n > 0`).
    pub fn over(self, n: f64) -> Self {
        let hi = self.hi / n;
        // The remainder of hi * n, exactly, with a fused multiply-add.
        let r = (-hi).mul_add(n, self.hi) + self.lo;
        let (hi, lo) = fast_two_sum(hi, r / n);
        Self { hi, lo }
    }

    /// `self - o`, rounded once to f64.
    pub fn minus(self, o: Self) -> f64 {
        let (s, e) = two_sum(self.hi, -o.hi);
        s + (e + (self.lo - o.lo))
    }

    /// Rounded to f64.
    pub fn value(self) -> f64 {
        self.hi + self.lo
    }
}

/// Values per block summed in plain f64 before the block joins the double-double: f32
/// values of one scale (a block of activations near 1e4 lies on a 2^-10 grid) add up
/// exactly in f64, and the loop vectorizes.
const BLOCK: usize = 256;

/// The sum of finite values (non-finite ones are skipped), with how many were summed.
pub fn sum_finite<T: Copy + Into<f64>>(xs: &[T]) -> (Dd, u64) {
    let mut total = Dd::default();
    let mut n = 0u64;
    for chunk in xs.chunks(BLOCK) {
        let mut s = 0f64;
        for &x in chunk {
            let x: f64 = x.into();
            if x.is_finite() {
                s += x;
                n += 1;
            }
        }
        total = total.plus(s);
    }
    (total, n)
}

/// The sum of every value, NaN and infinities included (they make it non-finite).
pub fn sum_all(xs: &[f32]) -> Dd {
    xs.chunks(BLOCK).fold(Dd::default(), |total, chunk| {
        total.plus(chunk.iter().map(|&x| x as f64).sum())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_keep_what_f64_loses() {
        // 1e16 + 1 - 1e16: f64 gives 0 (or 2); a double-double gives 1.
        let d = Dd::default().plus(1e16).plus(1.0).plus(-1e16);
        assert_eq!(d.value(), 1.0);
        let mean = Dd::default().plus(1e4).plus(1e4 + 2f64.powi(-30)).over(2.0);
        assert_eq!(mean.minus(Dd { hi: 1e4, lo: 0.0 }), 2f64.powi(-31));
        let (s, n) = sum_finite(&[1.5, f32::NAN, 2.5, f32::INFINITY]);
        assert_eq!((s.value(), n), (4.0, 2));
        assert_eq!(
            Dd::default()
                .plus(3.0)
                .plus_dd(Dd { hi: 1e-20, lo: 0.0 })
                .lo,
            1e-20
        );
    }
}
