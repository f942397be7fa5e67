//! One head product per row per text: a [`Readout`] that remembers the logits of one text's
//! final hidden state (and the row before its first, which scores the first token) and
//! hands them to every analysis that asks again, so the logit lens, `surprisal`,
//! `divergence` and the SAE splice metrics in one spec pay for the 50,257 x 768 product
//! (on GPT-2, 43% of the forward's work) once.
//!
//! A row's logits must not depend on which rows shared its product, or a result would
//! change with the analyses beside it. gemm sums each output over the same `k`-blocks
//! whatever the number of rows, except that a single row takes its matrix-vector path,
//! which sums in another order; so a product of one row is computed as two (the row twice),
//! whether or not anything is shared.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use super::stack::Readout;

/// A row, compared and hashed by its bits.
#[derive(Clone, Copy)]
struct Row<'a>(&'a [f32]);

impl PartialEq for Row<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}
impl Eq for Row<'_> {}
impl Hash for Row<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        for x in self.0 {
            h.write_u32(x.to_bits());
        }
    }
}

/// Logits kept at most: 512 MiB (2,600 rows of GPT-2's vocabulary, 500 of Gemma 3's);
/// rows beyond it are computed again by each analysis that reads them.
const BUDGET_BYTES: usize = 512 << 20;

/// The head, with one text's final rows remembered.
pub struct SharedHead<'a> {
    inner: &'a dyn Readout,
    /// Each remembered row's slot.
    slots: HashMap<Row<'a>, usize>,
    /// The logits of each slot once computed.
    logits: Mutex<Vec<Option<Box<[f32]>>>>,
}

impl<'a> SharedHead<'a> {
    /// `inner` remembering the logits of `rows` (`[n, d]`, row-major; empty: nothing is
    /// remembered and every product is computed, one-row products as two rows).
    pub fn new(inner: &'a dyn Readout, rows: &[&'a [f32]], d: usize) -> Self {
        let keep = BUDGET_BYTES / (inner.vocab().max(1) * 4);
        let mut slots = HashMap::new();
        for row in rows.iter().flat_map(|r| r.chunks_exact(d.max(1))) {
            if slots.len() == keep {
                break;
            }
            let n = slots.len();
            slots.entry(Row(row)).or_insert(n);
        }
        let n = slots.len();
        Self {
            inner,
            slots,
            logits: Mutex::new(vec![None; n]),
        }
    }

    /// `inner`'s logits of `rows` into `out`, never through a one-row product.
    fn compute(&self, rows: &[f32], out: &mut [f32]) {
        let vocab = self.inner.vocab();
        if out.len() != vocab {
            return self.inner.logits(rows, out);
        }
        let twice = [rows, rows].concat();
        let mut both = vec![0f32; 2 * vocab];
        self.inner.logits(&twice, &mut both);
        out.copy_from_slice(&both[..vocab]);
    }
}

impl Readout for SharedHead<'_> {
    fn vocab(&self) -> usize {
        self.inner.vocab()
    }

    fn logits(&self, rows: &[f32], out: &mut [f32]) {
        let vocab = self.inner.vocab();
        let n = out.len() / vocab.max(1);
        if n == 0 || rows.is_empty() {
            return;
        }
        let d = rows.len() / n;
        let row = |i: usize| &rows[i * d..(i + 1) * d];
        let mut kept = self.logits.lock().unwrap_or_else(|e| e.into_inner());
        let slot = |i: usize| self.slots.get(&Row(row(i))).copied();
        let mut missing = Vec::new();
        for i in 0..n {
            match slot(i).and_then(|s| kept[s].as_deref()) {
                Some(z) => out[i * vocab..(i + 1) * vocab].copy_from_slice(z),
                None => missing.push(i),
            }
        }
        if missing.len() == n {
            self.compute(rows, out);
        } else if !missing.is_empty() {
            let packed: Vec<f32> = missing.iter().flat_map(|&i| row(i)).copied().collect();
            let mut z = vec![0f32; missing.len() * vocab];
            self.compute(&packed, &mut z);
            for (k, &i) in missing.iter().enumerate() {
                out[i * vocab..(i + 1) * vocab].copy_from_slice(&z[k * vocab..(k + 1) * vocab]);
            }
        }
        for &i in &missing {
            if let Some(s) = slot(i) {
                kept[s] = Some(out[i * vocab..(i + 1) * vocab].into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A head that counts the rows it multiplies: `z_j = j + sum(row)`.
    struct Counting(AtomicUsize);
    impl Readout for Counting {
        fn vocab(&self) -> usize {
            3
        }
        fn logits(&self, rows: &[f32], out: &mut [f32]) {
            let n = out.len() / 3;
            self.0.fetch_add(n, Ordering::Relaxed);
            for (i, z) in out.chunks_mut(3).enumerate() {
                let s: f32 = rows[i * 2..i * 2 + 2].iter().sum();
                for (j, x) in z.iter_mut().enumerate() {
                    *x = j as f32 + s;
                }
            }
        }
    }

    #[test]
    fn remembered_rows_are_multiplied_once_and_others_every_time() {
        let head = Counting(AtomicUsize::new(0));
        let finals = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let shared = SharedHead::new(&head, &[&finals], 2);
        let mut out = vec![0.0; 9];
        shared.logits(&finals, &mut out);
        assert_eq!(head.0.load(Ordering::Relaxed), 3);
        // Again, with one other row between: only that row is multiplied (as two rows).
        let mixed = [3.0, 4.0, 9.0, 9.0, 5.0, 6.0];
        let mut again = vec![0.0; 9];
        shared.logits(&mixed, &mut again);
        assert_eq!(head.0.load(Ordering::Relaxed), 5);
        assert_eq!(&again[..3], &out[3..6]);
        assert_eq!(&again[3..6], &[18.0, 19.0, 20.0]);
        assert_eq!(&again[6..], &out[6..]);
        // Nothing remembered: a one-row product still runs as two rows.
        let plain = SharedHead::new(&head, &[], 2);
        let mut one = vec![0.0; 3];
        plain.logits(&[1.0, 1.0], &mut one);
        assert_eq!(head.0.load(Ordering::Relaxed), 7);
        assert_eq!(one, [2.0, 3.0, 4.0]);
    }
}
