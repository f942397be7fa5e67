//! Exact second moments of whole hidden-state vectors: per-dimension sums and the `d x d`
//! (or `d x d'`) sums of cross products `X^T Y` over tokens, for covariance spectra and CKA.
//!
//! A merge tree ([`super::tree::Tree`]) would keep O(log n) copies of a `d x d` matrix, which is
//! too much at 768 x 768 and many hidden states. Instead each text's sums are computed in
//! f64 (by gemm: the cross products of f32 values are exact in f64, their sum over the
//! text is rounded once per text, the same way whatever else is running), then rounded to
//! a fixed-point grid of `2^-52` and added into `i128` accumulators. Integer addition is
//! associative, so the sums over any split of the texts are the same integers: one
//! process, any batch size and any number of shards give the same bits. The grid keeps
//! 2.2e-16 absolute per text; `i128` holds sums up to 3.8e22 before it overflows, which is
//! reported as an error rather than wrapped.

use base64::Engine as _;
use gemm::{gemm, Parallelism};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bits below the binary point of the fixed-point sums.
pub const FRACTION_BITS: i32 = 52;
const SCALE: f64 = (1u64 << FRACTION_BITS) as f64;
/// Scaled values below this convert through `i64` (one instruction); larger ones through
/// `i128`.
const FAST_LIMIT: f64 = 9.0e18;
/// Scaled values from here on do not fit `i128` (2^126, with a bit of headroom).
const LIMIT: f64 = 8.5e37;

/// Fixed-point sums (`value = raw / 2^52`), written to partials as base64 of their
/// little-endian bytes: a 768 x 768 matrix would be 10 MB of JSON digits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fixed {
    /// The raw sums.
    pub raw: Vec<i128>,
    /// Set when a value or a sum left the `i128` range (or was not finite): the sums are
    /// then unusable and `finish` says so.
    pub overflow: bool,
}

/// Adds the rounded `src` values into `acc`; returns false on a value or sum out of
/// range. The same loop as every other, compiled for the CPU's widest vectors.
fn add_scaled(acc: &mut [i128], src: &[f64]) -> bool {
    let mut ok = true;
    add_scaled_simd(acc, src, &mut ok);
    ok
}

crate::simd::multiversion! {
fn add_scaled_simd(acc: &mut [i128], src: &[f64], ok: &mut bool) {
    for (a, &v) in acc.iter_mut().zip(src) {
        let s = v * SCALE;
        let x = if s.abs() < FAST_LIMIT {
            s.round_ties_even() as i64 as i128
        } else if s.abs() < LIMIT {
            s.round_ties_even() as i128
        } else {
            *ok = false;
            0
        };
        match a.checked_add(x) {
            Some(y) => *a = y,
            None => *ok = false,
        }
    }
}
}

impl Fixed {
    /// `len` zero sums.
    pub fn zeros(len: usize) -> Self {
        Self {
            raw: vec![0; len],
            overflow: false,
        }
    }

    /// Adds `src` (the same length) rounded to the grid.
    pub fn add(&mut self, src: &[f64]) {
        debug_assert_eq!(src.len(), self.raw.len());
        if !add_scaled(&mut self.raw, src) {
            self.overflow = true;
        }
    }

    /// Adds the upper triangle (`j >= i`, row by row) of the row-major `d x d` matrix
    /// `src`; `self` holds `d (d + 1) / 2` sums.
    pub fn add_upper(&mut self, src: &[f64], d: usize) {
        let mut at = 0;
        for i in 0..d {
            let row = &src[i * d + i..(i + 1) * d];
            if !add_scaled(&mut self.raw[at..at + row.len()], row) {
                self.overflow = true;
            }
            at += row.len();
        }
    }

    /// Adds another set of sums of the same length.
    pub fn merge(&mut self, other: &Fixed) {
        if self.raw.is_empty() {
            self.raw = vec![0; other.raw.len()];
        }
        self.overflow |= other.overflow;
        for (a, &b) in self.raw.iter_mut().zip(&other.raw) {
            match a.checked_add(b) {
                Some(y) => *a = y,
                None => self.overflow = true,
            }
        }
    }

    /// Sum `i` as f64 (rounded once).
    pub fn get(&self, i: usize) -> f64 {
        self.raw[i] as f64 / SCALE
    }

    /// Every sum as f64.
    pub fn values(&self) -> Vec<f64> {
        self.raw.iter().map(|&x| x as f64 / SCALE).collect()
    }
}

/// As written in a partial.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedRepr {
    /// Base64 of the sums as little-endian `i128`.
    raw: String,
    overflow: bool,
}

impl Serialize for Fixed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.raw.iter().flat_map(|x| x.to_le_bytes()).collect();
        FixedRepr {
            raw: base64::engine::general_purpose::STANDARD.encode(bytes),
            overflow: self.overflow,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Fixed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = FixedRepr::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(r.raw.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("fixed-point sums: {e}")))?;
        if bytes.len() % 16 != 0 {
            return Err(serde::de::Error::custom(format!(
                "fixed-point sums: {} bytes is not a whole number of 16-byte values",
                bytes.len()
            )));
        }
        let raw = bytes
            .chunks_exact(16)
            .map(|c| i128::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        Ok(Fixed {
            raw,
            overflow: r.overflow,
        })
    }
}

/// `out = x^T y` for row-major `[rows, d]` matrices `x`, `y`: `out` is row-major `d x d`.
/// One thread: callers parallelise over matrices, so the bits never depend on how many
/// threads there are.
pub fn cross_products(x: &[f64], y: &[f64], rows: usize, d: usize, out: &mut [f64]) {
    assert!(x.len() >= rows * d && y.len() >= rows * d && out.len() >= d * d);
    // SAFETY: the assert bounds every index gemm reads and writes: lhs (i, t) = x[t d + i]
    // for i < d, t < rows; rhs (t, j) = y[t d + j]; dst (i, j) = out[i d + j].
    unsafe {
        gemm(
            d,
            d,
            rows,
            out.as_mut_ptr(),
            1,
            d as isize,
            false,
            x.as_ptr(),
            d as isize,
            1,
            y.as_ptr(),
            1,
            d as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// `|X_c^T Y_c|_F^2 / n^2` from the exact sums `p` of `X^T Y` over `n` tokens and the
/// column means `ma`, `mb`: the centred cross-product is `p / n - ma mb^T`. `symmetric`:
/// `p` holds the upper triangle of `X^T X` only (`ma` = `mb`).
pub fn centred_frobenius2(p: &Fixed, ma: &[f64], mb: &[f64], n: f64, symmetric: bool) -> f64 {
    let mut total = 0.0;
    let mut at = 0;
    for (i, &mi) in ma.iter().enumerate() {
        for (j, &mj) in mb.iter().enumerate().skip(if symmetric { i } else { 0 }) {
            let v = p.get(at) / n - mi * mj;
            total += if symmetric && j != i {
                2.0 * v * v
            } else {
                v * v
            };
            at += 1;
        }
    }
    total
}

/// The centred second moments `sum(x y^T) / n - mean_x mean_y^T` as a row-major `d x d`
/// matrix, from sums `p` (the upper triangle, row by row, when `symmetric`; else all
/// `d x d`) and the means.
pub fn centred_matrix(p: &Fixed, ma: &[f64], mb: &[f64], n: f64, symmetric: bool) -> Vec<f64> {
    let d = ma.len();
    let mut out = vec![0.0; d * d];
    let mut at = 0;
    for i in 0..d {
        for j in if symmetric { i } else { 0 }..d {
            let v = p.get(at) / n - ma[i] * mb[j];
            out[i * d + j] = v;
            if symmetric {
                out[j * d + i] = v;
            }
            at += 1;
        }
    }
    out
}

/// Per-dimension sums of the rows of a row-major `[rows, d]` matrix, in row order.
pub fn column_sums(x: &[f64], d: usize) -> Vec<f64> {
    let mut s = vec![0.0; d];
    for row in x.chunks_exact(d.max(1)) {
        for (a, &v) in s.iter_mut().zip(row) {
            *a += v;
        }
    }
    s
}

/// The rows of one text at which every listed `[rows, d]` state is finite.
pub struct FiniteRows {
    /// Each state's kept rows, widened to f64, row-major `[kept, d]`.
    pub x: Vec<Vec<f64>>,
    /// The indices of the kept rows.
    pub kept: Vec<usize>,
    /// Rows left out.
    pub left_out: u64,
}

/// The rows of one text at which every listed `[rows, d]` state is finite, widened to
/// f64: a token with a NaN or infinity in any of them is left out of all of them, so
/// cross products pair the same tokens.
pub fn finite_rows(states: &[&[f32]], d: usize) -> FiniteRows {
    let rows = states.first().map_or(0, |s| s.len() / d.max(1));
    let kept: Vec<usize> = (0..rows)
        .filter(|&t| {
            states
                .iter()
                .all(|s| s[t * d..(t + 1) * d].iter().all(|v| v.is_finite()))
        })
        .collect();
    let x = states
        .iter()
        .map(|s| {
            kept.iter()
                .flat_map(|&t| s[t * d..(t + 1) * d].iter().map(|&v| v as f64))
                .collect()
        })
        .collect();
    FiniteRows {
        x,
        left_out: (rows - kept.len()) as u64,
        kept,
    }
}

/// Bytes of `n` fixed-point sums.
pub fn bytes_of(n: usize) -> u64 {
    n as u64 * 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SplitMix64;

    fn matrix(rng: &mut SplitMix64, rows: usize, d: usize, offset: f64) -> Vec<f64> {
        (0..rows * d)
            .map(|_| {
                offset + ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 as f64
            })
            .collect()
    }

    #[test]
    fn cross_products_are_x_transpose_y() {
        let mut rng = SplitMix64::new(3);
        let (rows, d) = (7, 5);
        let x = matrix(&mut rng, rows, d, 0.0);
        let y = matrix(&mut rng, rows, d, 2.0);
        let mut out = vec![0.0; d * d];
        cross_products(&x, &y, rows, d, &mut out);
        for i in 0..d {
            for j in 0..d {
                let want: f64 = (0..rows).map(|t| x[t * d + i] * y[t * d + j]).sum();
                assert!((out[i * d + j] - want).abs() < 1e-12, "{i} {j}");
            }
        }
    }

    #[test]
    fn sums_are_the_same_integers_for_any_split_and_order() {
        let mut rng = SplitMix64::new(9);
        let d = 6;
        let texts: Vec<Vec<f64>> = (0..40)
            .map(|i| matrix(&mut rng, 1 + i % 9, d, 1e3))
            .collect();
        let sums = |range: std::ops::Range<usize>| {
            let mut f = Fixed::zeros(d * (d + 1) / 2);
            let mut out = vec![0.0; d * d];
            for x in &texts[range] {
                cross_products(x, x, x.len() / d, d, &mut out);
                f.add_upper(&out, d);
            }
            f
        };
        let whole = sums(0..40);
        for cut in [1, 13, 39] {
            let mut right = sums(cut..40);
            right.merge(&sums(0..cut));
            assert_eq!(right, whole, "cut at {cut}");
        }
        assert!(!whole.overflow);
        let mut diag = 0.0;
        for x in &texts {
            diag += x.chunks(d).map(|r| r[0] * r[0]).sum::<f64>();
        }
        assert!((whole.get(0) - diag).abs() <= 1e-9 * diag);
    }

    #[test]
    fn large_values_convert_and_overflow_is_reported() {
        let mut f = Fixed::zeros(3);
        f.add(&[3e4, -1e7, 0.5]);
        assert_eq!(f.values(), vec![3e4, -1e7, 0.5]);
        assert!(!f.overflow);
        f.add(&[f64::NAN, 0.0, 0.0]);
        assert!(f.overflow);
        let mut g = Fixed::zeros(1);
        g.add(&[1e22]);
        assert!(!g.overflow);
        g.add(&[3e22]);
        assert!(g.overflow, "the sum 4e22 leaves the i128 range");
    }

    #[test]
    fn partial_encoding_round_trips() {
        let mut f = Fixed::zeros(3);
        f.add(&[-1.25, 7e10, 1e-9]);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Fixed>(&json).unwrap(), f);
        let bad = r#"{"raw":"AAAA","overflow":false}"#;
        let e = serde_json::from_str::<Fixed>(bad).unwrap_err().to_string();
        assert!(e.contains("16-byte"), "{e}");
    }
}
