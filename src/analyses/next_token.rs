//! One text's token-level comparison of two next-token distributions: logits from each
//! model's own head, `ROWS_PER_PRODUCT` rows at a time, then per row the log-softmax of
//! both in f64 (the maximum, the f64 sum of `exp(z - max)`, its log), `KL(p || q)`, both
//! argmaxes, and at rows with a next token that token's two log-probabilities.

use rayon::prelude::*;

use crate::model::Readout;

/// Rows whose logits are computed in one product (256 x 50,257 f32 is 51 MB per model).
const ROWS_PER_PRODUCT: usize = 256;

/// What one row (position) gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// `KL(p || q)`, nats.
    pub kl: f64,
    /// The base model's most likely next token (the first of equal maxima).
    pub top_base: u32,
    /// The new model's.
    pub top_new: u32,
    /// Whether the two largest base logits are equal (an exact tie, which makes the
    /// argmax depend on the order of a scan).
    pub tie: bool,
    /// With a next token: `(ln p[next], ln q[next])`.
    pub next: Option<(f64, f64)>,
}

/// The log-softmax normaliser of one row of logits, in f64.
fn log_norm(z: &[f32]) -> (f64, usize, bool) {
    let (mut top, mut second) = (0usize, f32::NEG_INFINITY);
    for (i, &x) in z.iter().enumerate().skip(1) {
        if x > z[top] {
            second = z[top];
            top = i;
        } else if x > second {
            second = x;
        }
    }
    let m = z[top] as f64;
    let s: f64 = z.iter().map(|&x| (x as f64 - m).exp()).sum();
    (m + s.ln(), top, second == z[top])
}

/// `KL(p || q)` of the softmaxes of base logits `z` and new logits `y`, with their log
/// normalisers.
fn kl(z: &[f32], lz: f64, y: &[f32], ly: f64) -> f64 {
    z.iter()
        .zip(y)
        .map(|(&a, &b)| {
            let lp = a as f64 - lz;
            let lq = b as f64 - ly;
            lp.exp() * (lp - lq)
        })
        .sum()
}

/// One row of both models' logits.
fn row(z: &[f32], y: &[f32], next: Option<u32>) -> Row {
    let (lz, top_base, tie) = log_norm(z);
    let (ly, top_new, _) = log_norm(y);
    let vocab = z.len();
    Row {
        kl: kl(z, lz, y, ly),
        top_base: top_base as u32,
        top_new: top_new as u32,
        tie,
        next: next.map(|t| {
            let t = (t as usize).min(vocab - 1);
            (z[t] as f64 - lz, y[t] as f64 - ly)
        }),
    }
}

/// The rows of one text: `base` and `new` are the two models' vectors `[rows, width]` (each
/// its own width), read through their own heads; `next[r]` is the token row `r` predicts,
/// if any.
pub fn rows(
    base: (&dyn Readout, &[f32]),
    new: (&dyn Readout, &[f32]),
    next: &[Option<u32>],
) -> Vec<Row> {
    let n = next.len();
    if n == 0 {
        return Vec::new();
    }
    let (wa, wb) = (base.1.len() / n, new.1.len() / n);
    let vocab = base.0.vocab();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(ROWS_PER_PRODUCT) {
        let end = (start + ROWS_PER_PRODUCT).min(n);
        let mut za = vec![0f32; (end - start) * vocab];
        let mut zb = vec![0f32; (end - start) * vocab];
        base.0.logits(&base.1[start * wa..end * wa], &mut za);
        new.0.logits(&new.1[start * wb..end * wb], &mut zb);
        let block: Vec<Row> = za
            .par_chunks(vocab)
            .zip(zb.par_chunks(vocab))
            .zip(&next[start..end])
            .map(|((z, y), &t)| row(z, y, t))
            .collect();
        out.extend(block);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_equal_logits_is_zero_and_of_shifted_logits_too() {
        let z = [1.0f32, 2.0, -3.0, 0.5];
        let y = [2.0f32, 3.0, -2.0, 1.5];
        let r = row(&z, &y, Some(1));
        assert!(r.kl.abs() < 1e-15, "{}", r.kl);
        assert_eq!((r.top_base, r.top_new, r.tie), (1, 1, false));
        let (lp, lq) = r.next.unwrap();
        assert!((lp - lq).abs() < 1e-15);
    }

    #[test]
    fn kl_matches_its_definition() {
        let z = [0.3f32, -1.0, 2.0];
        let y = [1.0f32, 0.0, -1.0];
        let soft = |v: &[f32]| {
            let s: f64 = v.iter().map(|&x| (x as f64).exp()).sum();
            v.iter()
                .map(|&x| (x as f64).exp() / s)
                .collect::<Vec<f64>>()
        };
        let (p, q) = (soft(&z), soft(&y));
        let want: f64 = p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum();
        let r = row(&z, &y, None);
        assert!((r.kl - want).abs() < 1e-14, "{} {}", r.kl, want);
        assert_eq!((r.top_base, r.top_new), (2, 0));
        assert!(row(&[1.0, 1.0], &[0.0, 1.0], None).tie);
    }
}
