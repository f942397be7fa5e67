//! The block formats the batched quantized matmul reads, and llama.cpp's quantization of
//! activation rows into its 8-bit blocks.
//!
//! Weights stay in the GGUF file's bytes (ggml's `block_q4_K` and friends, little-endian,
//! no padding); activations are quantized per call into [`Q8`] (32 values: ggml's
//! `block_q8_0` and `block_q8_1`) or [`Q8K`] (256 values: `block_q8_K`). The quantizers
//! reproduce ggml's x86 builds bit for bit: `quantize_row_q8_0` and `quantize_row_q8_1`
//! (AVX2: scale `127 / amax`, round half to even) and `quantize_row_q8_K_ref` (scale
//! `-127 / max`, `nearest_int`, which also rounds half to even).

use half::f16;

/// Values per block of the 32-value formats.
pub(crate) const QK: usize = 32;
/// Values per block of the K-quants.
pub(crate) const QK_K: usize = 256;

/// A weight format with a batched kernel: ggml's type, as stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// `block_q4_0`: f16 scale, 32 nibbles, value `(q - 8) d`.
    Q4_0,
    /// `block_q4_1`: f16 scale and minimum, 32 nibbles, value `q d + m`.
    Q4_1,
    /// `block_q5_0`: f16 scale, 32 high bits, 32 nibbles, value `(q - 16) d`.
    Q5_0,
    /// `block_q5_1`: f16 scale and minimum, high bits, nibbles, value `q d + m`.
    Q5_1,
    /// `block_q8_0`: f16 scale, 32 signed bytes.
    Q8_0,
    /// `block_q4_K`: 8 sub-blocks of 32 with 6-bit scales and minimums.
    Q4K,
    /// `block_q5_K`: as Q4_K with a fifth bit per value.
    Q5K,
    /// `block_q6_K`: 16 groups of 16 with 8-bit scales, values `q - 32` of 6 bits.
    Q6K,
}

/// The activation block a format is multiplied against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// [`Q8`] with its sum unused (ggml's `block_q8_0`).
    Q8_0,
    /// [`Q8`] with `s = d * sum(q)` (ggml's `block_q8_1`), for the formats with a minimum.
    Q8_1,
    /// [`Q8K`].
    Q8K,
}

impl Format {
    /// The format of ggml type `t`, if it has a batched kernel.
    pub(crate) fn of(t: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType as T;
        Some(match t {
            T::Q4_0 => Self::Q4_0,
            T::Q4_1 => Self::Q4_1,
            T::Q5_0 => Self::Q5_0,
            T::Q5_1 => Self::Q5_1,
            T::Q8_0 => Self::Q8_0,
            T::Q4K => Self::Q4K,
            T::Q5K => Self::Q5K,
            T::Q6K => Self::Q6K,
            _ => return None,
        })
    }

    /// Values per block.
    pub(crate) const fn block_len(self) -> usize {
        match self {
            Self::Q4K | Self::Q5K | Self::Q6K => QK_K,
            _ => QK,
        }
    }

    /// Bytes per block in the file.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// The activation blocks this format's dot product reads (ggml's `vec_dot_type`).
    pub(crate) fn act(self) -> Act {
        match self {
            Self::Q4_1 | Self::Q5_1 => Act::Q8_1,
            Self::Q4K | Self::Q5K | Self::Q6K => Act::Q8K,
            _ => Act::Q8_0,
        }
    }
}

/// 32 activations quantized to 8 bits: ggml's `block_q8_0` / `block_q8_1`, with its f16
/// fields held widened (the values are those of the f16s).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct Q8 {
    /// The quantized values.
    pub(crate) qs: [i8; QK],
    /// The scale, as ggml stores it (an f16).
    pub(crate) d: f32,
    /// `d * sum(qs)` as ggml stores it (an f16); only the Q8_1 form sets it.
    pub(crate) s: f32,
}

/// 256 activations quantized to 8 bits: ggml's `block_q8_K`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Q8K {
    /// The quantized values.
    pub(crate) qs: [i8; QK_K],
    /// Sums of each 16 values of `qs`.
    pub(crate) bsums: [i16; QK_K / 16],
    /// The scale (an f32 in ggml too).
    pub(crate) d: f32,
}

impl Default for Q8K {
    fn default() -> Self {
        Self {
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
            d: 0.0,
        }
    }
}

/// ggml's `nearest_int`: round half to even through the float adder (for |v| < 2^22;
/// activations scaled to +-127 are). Inline arithmetic rather than `round_ties_even`,
/// which the baseline x86-64 target compiles to a libm call.
#[inline(always)]
fn nearest_int(v: f32) -> i32 {
    ((v + 12582912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Rounds an f32 through f16, as ggml stores a block's scale.
fn via_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// ggml's x86 `quantize_row_q8_0` / `quantize_row_q8_1` of one block of 32.
pub(crate) fn quantize_q8(x: &[f32], with_sum: bool) -> Q8 {
    debug_assert_eq!(x.len(), QK);
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut out = Q8 {
        d: via_f16(d),
        ..Q8::default()
    };
    let mut sum = 0i32;
    for (q, &v) in out.qs.iter_mut().zip(x) {
        *q = nearest_int(v * id).clamp(-128, 127) as i8;
        sum += *q as i32;
    }
    if with_sum {
        out.s = via_f16(d * sum as f32);
    }
    out
}

/// ggml's `quantize_row_q8_K_ref` of one block of 256.
pub(crate) fn quantize_q8k(x: &[f32]) -> Q8K {
    debug_assert_eq!(x.len(), QK_K);
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let mut out = Q8K::default();
    if amax == 0.0 {
        return out;
    }
    let iscale = -127.0 / max;
    for (q, &v) in out.qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (s, g) in out.bsums.iter_mut().zip(out.qs.chunks_exact(16)) {
        *s = g.iter().map(|&q| q as i16).sum();
    }
    out.d = 1.0 / iscale;
    out
}

/// An f16 at `b[at..at + 2]`, widened.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Scale and minimum `j` (0..8) of a Q4_K/Q5_K block's 12 packed bytes: ggml's
/// `get_scale_min_k4`.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The integer values of one weight block (before its scales): what the scalar kernel
/// multiplies and the tests check the SIMD unpacking against.
pub(crate) fn unpack(format: Format, b: &[u8], out: &mut [i8]) {
    match format {
        Format::Q4_0 | Format::Q4_1 => {
            let off = if format == Format::Q4_0 { 8 } else { 0 };
            let qs = &b[b.len() - 16..];
            for j in 0..16 {
                out[j] = (qs[j] & 0xF) as i8 - off;
                out[j + 16] = (qs[j] >> 4) as i8 - off;
            }
        }
        Format::Q5_0 | Format::Q5_1 => {
            let off = if format == Format::Q5_0 { 16 } else { 0 };
            let h = b.len() - 20;
            let qh = u32::from_le_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]]);
            let qs = &b[h + 4..];
            for j in 0..16 {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                out[j] = ((qs[j] & 0xF) | h0) as i8 - off;
                out[j + 16] = ((qs[j] >> 4) | h1) as i8 - off;
            }
        }
        Format::Q8_0 => {
            for (o, &v) in out.iter_mut().zip(&b[2..34]) {
                *o = v as i8;
            }
        }
        Format::Q4K | Format::Q5K => unpack_k(format, b, out),
        Format::Q6K => unpack_q6k(b, out),
    }
}

/// Q4_K/Q5_K values, `0..16` / `0..32` (the minimum is applied through the sums).
fn unpack_k(format: Format, b: &[u8], out: &mut [i8]) {
    let (qh, qs) = match format {
        Format::Q5K => (Some(&b[16..48]), &b[48..176]),
        _ => (None, &b[16..144]),
    };
    for j in 0..4 {
        for l in 0..32 {
            let (mut lo, mut hi) = (qs[32 * j + l] & 0xF, qs[32 * j + l] >> 4);
            if let Some(qh) = qh {
                lo |= ((qh[l] >> (2 * j)) & 1) << 4;
                hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
            }
            out[64 * j + l] = lo as i8;
            out[64 * j + 32 + l] = hi as i8;
        }
    }
}

/// Q6_K values, `-32..32`.
fn unpack_q6k(b: &[u8], out: &mut [i8]) {
    for n in 0..2 {
        let (ql, qh) = (&b[64 * n..64 * n + 64], &b[128 + 32 * n..128 + 32 * n + 32]);
        let o = &mut out[128 * n..128 * n + 128];
        for l in 0..32 {
            o[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            o[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            o[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            o[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
}

/// Integer dot product of `a` and `b`.
fn idot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// One weight row (`w`, whole blocks) against one activation row of [`Q8`] blocks: the
/// kernel for CPUs without AVX2, and the reference the SIMD kernels are tested against.
pub(crate) fn dot_q8(format: Format, w: &[u8], y: &[Q8]) -> f32 {
    let mut v = [0i8; QK];
    let mut acc = 0f32;
    for (b, y) in w.chunks_exact(format.block_bytes()).zip(y) {
        unpack(format, b, &mut v);
        let d = f16_at(b, 0);
        acc += d * y.d * idot(&v, &y.qs) as f32;
        if matches!(format, Format::Q4_1 | Format::Q5_1) {
            acc += f16_at(b, 2) * y.s;
        }
    }
    acc
}

/// One K-quant weight row against one activation row of [`Q8K`] blocks (see [`dot_q8`]).
pub(crate) fn dot_q8k(format: Format, w: &[u8], y: &[Q8K]) -> f32 {
    let mut v = [0i8; QK_K];
    let mut acc = 0f32;
    for (b, y) in w.chunks_exact(format.block_bytes()).zip(y) {
        unpack(format, b, &mut v);
        if format == Format::Q6K {
            let sc = &b[192..208];
            let sum: i32 = (0..16)
                .map(|g| sc[g] as i8 as i32 * idot(&v[16 * g..16 * g + 16], &y.qs[16 * g..]))
                .sum();
            acc += f16_at(b, 208) * y.d * sum as f32;
            continue;
        }
        let (mut sum, mut mins) = (0i32, 0i32);
        for s in 0..8 {
            let (sc, m) = scale_min_k4(s, &b[4..16]);
            sum += sc as i32 * idot(&v[32 * s..32 * s + 32], &y.qs[32 * s..]);
            mins += m as i32 * (y.bsums[2 * s] as i32 + y.bsums[2 * s + 1] as i32);
        }
        acc += f16_at(b, 0) * y.d * sum as f32 - f16_at(b, 2) * y.d * mins as f32;
    }
    acc
}
