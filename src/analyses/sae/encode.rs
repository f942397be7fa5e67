//! One text's rows through an SAE, as SAELens' `encode` and `decode` compute them: the
//! input normalised and `b_dec` subtracted in f32, the whole encoder in one GEMM per
//! text (so a text's features do not depend on the batch it ran in), the activation, and
//! the decoder over the active features only, in feature-index order, accumulated in f64
//! (fixed sums, whatever the batch or thread count).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::assets::sae::{Activation, Normalize, Sae};

/// Tolerance of a boundary case: a pre-activation within `TOL · (1 + |cut|)` of its cut.
pub const TOL: f64 = 1e-5;

/// One row's active features: `(feature, activation)`, by feature index.
pub type Active = Vec<(u32, f32)>;

/// What an SAE made of one text's rows.
pub struct Encoded {
    /// Per row, its active features (the rest are zero).
    pub active: Vec<Active>,
    /// `[rows, d_out]` reconstructions, any input normalisation undone.
    pub recon: Vec<f64>,
    /// Pre-activations within [`TOL`] of a cut (a threshold, ReLU's 0, a top-k tie).
    pub boundary: u64,
}

/// How a row was normalised, to undo it after decoding.
#[derive(Clone, Copy)]
enum Undo {
    None,
    Scale(f32),
    Affine { mu: f32, std: f32 },
}

/// A row's mean, summed in f64 and rounded once to f32: what centring and a LayerNorm
/// subtract.
pub fn row_mean(row: &[f32]) -> f32 {
    (row.iter().map(|&x| x as f64).sum::<f64>() / row.len() as f64) as f32
}

/// Normalises one row in place as SAELens' run-time normalisation does.
fn normalize(row: &mut [f32], how: Normalize) -> Undo {
    let d = row.len() as f64;
    match how {
        Normalize::None => Undo::None,
        Normalize::ConstantNormRescale => {
            let norm = row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt() as f32;
            let coeff = d.sqrt() as f32 / norm;
            row.iter_mut().for_each(|x| *x *= coeff);
            Undo::Scale(coeff)
        }
        Normalize::LayerNorm => {
            let mu = row_mean(row);
            row.iter_mut().for_each(|x| *x -= mu);
            let var = row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / (d - 1.0);
            let std = var.sqrt() as f32;
            row.iter_mut().for_each(|x| *x /= std + 1e-5);
            Undo::Affine { mu, std }
        }
    }
}

/// `x` (`[rows, d_in]`, the SAE's input as captured and centred) through `sae`.
pub fn encode(sae: &Sae, x: &[f32]) -> Encoded {
    let (d_in, d_sae) = (sae.d_in, sae.d_sae);
    let mut input = x.to_vec();
    let undo: Vec<Undo> = input
        .chunks_exact_mut(d_in)
        .map(|row| {
            let u = normalize(row, sae.normalize);
            if sae.apply_b_dec_to_input {
                row.iter_mut().zip(&sae.b_dec).for_each(|(x, b)| *x -= b);
            }
            u
        })
        .collect();
    let mut pre = sae.encoder.forward(&input);
    let magnitude = match &sae.activation {
        Activation::Gated { magnitude } => Some(magnitude.forward(&input)),
        _ => None,
    };
    // Rows are independent, and the boundary count an integer: any split gives the same.
    let per_row: Vec<(Active, u64)> = pre
        .par_chunks_mut(d_sae.max(1))
        .enumerate()
        .map(|(r, row)| {
            let mag = magnitude.as_ref().map(|m| &m[r * d_sae..(r + 1) * d_sae]);
            let b = activate(&sae.activation, row, mag);
            let active = row
                .iter()
                .enumerate()
                .filter(|(_, &a)| a > 0.0)
                .map(|(j, &a)| (j as u32, a))
                .collect();
            (active, b)
        })
        .collect();
    let boundary = per_row.iter().map(|(_, b)| b).sum();
    let active: Vec<Active> = per_row.into_iter().map(|(a, _)| a).collect();
    let mut recon: Vec<f64> = active
        .par_iter()
        .zip(&undo)
        .flat_map_iter(|(a, &u)| decode(sae, a, u))
        .collect();
    // A skip transcoder adds `x W_skip`, in f32 as torch forms it, to the decoded output.
    if let Some(skip) = &sae.skip {
        recon
            .iter_mut()
            .zip(skip.forward(x))
            .for_each(|(r, s)| *r += s as f64);
    }
    Encoded {
        active,
        recon,
        boundary,
    }
}

fn near(v: f32, cut: f32) -> bool {
    ((v - cut).abs() as f64) <= TOL * (1.0 + cut.abs() as f64)
}

/// Replaces one row's pre-activations by its activations; returns its boundary cases.
fn activate(activation: &Activation, row: &mut [f32], magnitude: Option<&[f32]>) -> u64 {
    let mut boundary = 0u64;
    match activation {
        Activation::Standard => {
            for v in row.iter_mut() {
                boundary += u64::from(near(*v, 0.0));
                *v = v.max(0.0);
            }
        }
        Activation::JumpRelu { threshold } => {
            for (v, &t) in row.iter_mut().zip(threshold) {
                boundary += u64::from(near(*v, t));
                *v = if *v > t { v.max(0.0) } else { 0.0 };
            }
        }
        Activation::Gated { .. } => {
            let mag = magnitude.unwrap_or(&[]);
            for (v, &m) in row.iter_mut().zip(mag) {
                boundary += u64::from(near(*v, 0.0));
                *v = if *v > 0.0 { m.max(0.0) } else { 0.0 };
            }
        }
        Activation::TopK { k, decoder_norms } => {
            if let Some(n) = decoder_norms {
                row.iter_mut().zip(n).for_each(|(v, n)| *v *= n);
            }
            boundary += top_k(row, *k);
        }
    }
    boundary
}

/// A value's rank key: larger values first, and among equal values the lower index.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Key(OrdF32, Reverse<usize>);

/// f32 under IEEE total order.
struct OrdF32(f32);

impl PartialEq for OrdF32 {
    fn eq(&self, o: &Self) -> bool {
        self.0.total_cmp(&o.0).is_eq()
    }
}

impl Eq for OrdF32 {}

impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for OrdF32 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// Keeps the `k` largest values of `row` (ties to the lower index), ReLU'd, and zeroes the
/// rest; returns 1 when the k-th and the next are within [`TOL`] of each other. One pass
/// with a heap of the `k` best so far: most values lose to its least at once.
fn top_k(row: &mut [f32], k: usize) -> u64 {
    if k >= row.len() {
        row.iter_mut().for_each(|v| *v = v.max(0.0));
        return 0;
    }
    let mut best: BinaryHeap<Reverse<Key>> = BinaryHeap::with_capacity(k + 1);
    let mut runner_up = f32::NEG_INFINITY;
    let least =
        |b: &BinaryHeap<Reverse<Key>>| b.peek().map_or(f32::NEG_INFINITY, |Reverse(Key(x, _))| x.0);
    for (j, &v) in row.iter().enumerate().take(k) {
        best.push(Reverse(Key(OrdF32(v), Reverse(j))));
    }
    let mut floor = least(&best);
    for (j, &v) in row.iter().enumerate().skip(k) {
        // Scanning in index order, an equal value never displaces an earlier one.
        if v.total_cmp(&floor).is_gt() {
            if let Some(Reverse(Key(out, _))) = best.pop() {
                runner_up = runner_up.max(out.0);
            }
            best.push(Reverse(Key(OrdF32(v), Reverse(j))));
            floor = least(&best);
        } else if v > runner_up {
            runner_up = v;
        }
    }
    let kth = floor;
    let tie = u64::from(near(runner_up, kth));
    let mut kept = vec![false; row.len()];
    for Reverse(Key(_, Reverse(j))) in best {
        kept[j] = true;
    }
    for (v, keep) in row.iter_mut().zip(kept) {
        *v = if keep { v.max(0.0) } else { 0.0 };
    }
    tie
}

/// One row's reconstruction from its active features: `b_dec + Σ f_j W_dec[j]` in index
/// order, in f64, then the input normalisation undone (`d_out` wide: a transcoder's
/// output).
fn decode(sae: &Sae, active: &Active, undo: Undo) -> Vec<f64> {
    let d_out = sae.d_out;
    let mut out: Vec<f64> = sae.b_dec.iter().map(|&b| b as f64).collect();
    let mut w = vec![0f32; d_out];
    for &(j, a) in active {
        let (j, mut a) = (j as usize, a);
        if let Some(s) = &sae.decoder_scale {
            a *= s[j];
        }
        if let Activation::TopK {
            decoder_norms: Some(n),
            ..
        } = &sae.activation
        {
            a *= 1.0 / n[j];
        }
        // The decoder stays in its file's dtype; a row widens exactly.
        sae.w_dec.widen_into(j * d_out..(j + 1) * d_out, &mut w);
        out.iter_mut()
            .zip(&w)
            .for_each(|(o, &w)| *o += a as f64 * w as f64);
    }
    match undo {
        Undo::None => {}
        Undo::Scale(c) => out.iter_mut().for_each(|o| *o /= c as f64),
        Undo::Affine { mu, std } => out
            .iter_mut()
            .for_each(|o| *o = *o * std as f64 + mu as f64),
    }
    out
}
