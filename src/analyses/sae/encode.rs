//! One text's rows through an SAE, as SAELens' `encode` and `decode` compute them: the
//! input normalised and `b_dec` subtracted in f32, the whole encoder in one GEMM per
//! text (so a text's features do not depend on the batch it ran in), the activation, and
//! the decoder over the active features only, in feature-index order, accumulated in f64
//! (fixed sums, whatever the batch or thread count).

use crate::assets::sae::{Activation, Normalize, Sae};

/// Tolerance of a boundary case: a pre-activation within `TOL · (1 + |cut|)` of its cut.
pub const TOL: f64 = 1e-5;

/// What an SAE made of one text's rows.
pub struct Encoded {
    /// `[rows, d_sae]` feature activations.
    pub acts: Vec<f32>,
    /// `[rows, d_in]` reconstructions, any input normalisation undone.
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
            let mu = (row.iter().map(|&x| x as f64).sum::<f64>() / d) as f32;
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
    let rows = x.len() / d_in.max(1);
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
    let mut boundary = 0u64;
    for r in 0..rows {
        let row = &mut pre[r * d_sae..(r + 1) * d_sae];
        let mag = magnitude.as_ref().map(|m| &m[r * d_sae..(r + 1) * d_sae]);
        boundary += activate(&sae.activation, row, mag);
    }
    let recon = (0..rows)
        .flat_map(|r| decode(sae, &pre[r * d_sae..(r + 1) * d_sae], undo[r]))
        .collect();
    Encoded {
        acts: pre,
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

/// Keeps the `k` largest values of `row` (ties to the lower index), ReLU'd, and zeroes the
/// rest; returns 1 when the k-th and the next are within [`TOL`] of each other.
fn top_k(row: &mut [f32], k: usize) -> u64 {
    let mut order: Vec<usize> = (0..row.len()).collect();
    let by = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    if k < order.len() {
        order.select_nth_unstable_by(k, by);
        order[..k].sort_unstable_by(by);
    }
    let kept = &order[..k.min(order.len())];
    let tie = match (kept.last(), order.get(k)) {
        (Some(&a), Some(&b)) => u64::from(near(row[b], row[a])),
        _ => 0,
    };
    let mut keep = vec![false; row.len()];
    kept.iter().for_each(|&j| keep[j] = true);
    for (v, keep) in row.iter_mut().zip(keep) {
        *v = if keep { v.max(0.0) } else { 0.0 };
    }
    tie
}

/// One row's reconstruction from its activations `f`: `b_dec + Σ f_j W_dec[j]` over the
/// active features in index order, in f64, then the input normalisation undone.
fn decode(sae: &Sae, f: &[f32], undo: Undo) -> Vec<f64> {
    let d_in = sae.d_in;
    let mut out: Vec<f64> = sae.b_dec.iter().map(|&b| b as f64).collect();
    for (j, &a) in f.iter().enumerate().filter(|(_, &a)| a != 0.0) {
        let mut a = a;
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
        let w = &sae.w_dec[j * d_in..(j + 1) * d_in];
        out.iter_mut()
            .zip(w)
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
