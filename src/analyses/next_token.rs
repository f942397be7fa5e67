//! One text's token-level comparison of two next-token distributions (two models', or one
//! model's with and without a spliced site): logits from each model's own head,
//! `ROWS_PER_PRODUCT` rows at a time, then per row the log-softmax of both in f64 (the maximum, the f64 sum of `exp(z - max)`, its log), `KL(p || q)`, both
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

/// One row of base logits, read once for every comparison against it: its log
/// normaliser, argmax and tie, and `p = exp(z − lz)` (filled into a reused buffer).
struct Base<'a> {
    z: &'a [f32],
    lz: f64,
    top: usize,
    tie: bool,
    p: &'a [f64],
}

impl<'a> Base<'a> {
    fn new(z: &'a [f32], p: &'a mut Vec<f64>) -> Self {
        let (lz, top, tie) = log_norm(z);
        p.clear();
        p.extend(z.iter().map(|&a| (a as f64 - lz).exp()));
        Self { z, lz, top, tie, p }
    }

    /// The row against new logits `y`.
    fn against(&self, y: &[f32], next: Option<u32>) -> Row {
        let (ly, top_new, _) = log_norm(y);
        let kl = self
            .z
            .iter()
            .zip(y)
            .zip(self.p)
            .map(|((&a, &b), &p)| p * ((a as f64 - self.lz) - (b as f64 - ly)))
            .sum();
        let vocab = self.z.len();
        Row {
            kl,
            top_base: self.top as u32,
            top_new: top_new as u32,
            tie: self.tie,
            next: next.map(|t| {
                let t = (t as usize).min(vocab - 1);
                (self.z[t] as f64 - self.lz, y[t] as f64 - ly)
            }),
        }
    }
}

/// One row of both models' logits.
#[cfg(test)]
fn row(z: &[f32], y: &[f32], next: Option<u32>) -> Row {
    Base::new(z, &mut Vec::new()).against(y, next)
}

/// The rows of one text: `base` and `new` are the two models' vectors `[rows, width]` (each
/// its own width), read through their own heads; `next[r]` is the token row `r` predicts,
/// if any.
pub fn rows(
    base: (&dyn Readout, &[f32]),
    new: (&dyn Readout, &[f32]),
    next: &[Option<u32>],
) -> Vec<Row> {
    rows_against(base, &[new], next).pop().unwrap_or_default()
}

/// [`rows`] for several `news` against one `base`, whose logits are computed once.
pub fn rows_against(
    base: (&dyn Readout, &[f32]),
    news: &[(&dyn Readout, &[f32])],
    next: &[Option<u32>],
) -> Vec<Vec<Row>> {
    let n = next.len();
    let mut out: Vec<Vec<Row>> = news.iter().map(|_| Vec::with_capacity(n)).collect();
    if n == 0 || news.is_empty() {
        return out;
    }
    let wa = base.1.len() / n;
    let vocab = base.0.vocab();
    // Every comparison's logits are held at once: fewer rows per product when there are
    // several, so the buffers stay the size one comparison's were.
    let step = (2 * ROWS_PER_PRODUCT / (1 + news.len())).max(1);
    for start in (0..n).step_by(step) {
        let end = (start + step).min(n);
        let mut za = vec![0f32; (end - start) * vocab];
        base.0.logits(&base.1[start * wa..end * wa], &mut za);
        let zs: Vec<Vec<f32>> = news
            .iter()
            .map(|new| {
                let wb = new.1.len() / n;
                let mut zb = vec![0f32; (end - start) * vocab];
                new.0.logits(&new.1[start * wb..end * wb], &mut zb);
                zb
            })
            .collect();
        let block: Vec<Vec<Row>> = za
            .par_chunks(vocab)
            .enumerate()
            .map_init(Vec::new, |p, (r, z)| {
                let base = Base::new(z, p);
                let t = next[start + r];
                zs.iter()
                    .map(|zb| base.against(&zb[r * vocab..(r + 1) * vocab], t))
                    .collect()
            })
            .collect();
        for rows in block {
            for (o, row) in out.iter_mut().zip(rows) {
                o.push(row);
            }
        }
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
