//! AVX2 dot products of quantized weight rows against `R` activation rows at once.
//!
//! The integer products are ggml's (`maddubs` of unsigned weight bytes against signed
//! activation bytes, pairs widened by `madd`), and exact: no sum can saturate, since
//! weight values are at most 6 bits wide, and the signed 8-bit formats go through
//! `sign` so both operands stay within `maddubs`'s range. Each block's integer sums are
//! scaled in f32 with FMA into 8 lanes, summed across lanes once at the end, as ggml's
//! AVX2 kernels do. A row's operations are the same whatever `R` is, so a result does not
//! depend on how rows are tiled (nor on batch size or thread count).

use std::arch::x86_64::*;

use super::blocks::{scale_min_k4, Format, Q8, Q8K};

/// The format tags the 32-value kernel is compiled for.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;

/// Whether this CPU runs these kernels (AVX2, FMA and F16C).
pub(crate) fn available() -> bool {
    crate::simd::simd_level() >= 1 && std::arch::is_x86_feature_detected!("f16c")
}

/// Whether the integer products can use AVX-512 VNNI's `vpdpbusd` (256 bits wide), which
/// gives the same sums as `maddubs` + `madd` in one instruction.
fn vnni() -> bool {
    crate::simd::simd_level() >= 2
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// One weight row of a 32-value format against each of `out.len()` activation rows of
/// `per_row` [`Q8`] blocks (`acts`), into `out`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C ([`available`]); `w` holds `per_row` whole
/// blocks of `format`, and `acts` `out.len() * per_row` blocks.
pub(crate) unsafe fn rows_q8(
    format: Format,
    w: &[u8],
    acts: &[Q8],
    per_row: usize,
    out: &mut [f32],
) {
    macro_rules! go {
        ($f:expr) => {
            match vnni() {
                true => rows32_vnni::<{ $f }>(w, acts, per_row, out),
                false => rows32::<{ $f }>(w, acts, per_row, out),
            }
        };
    }
    match format {
        Format::Q4_0 => go!(Q4_0),
        Format::Q4_1 => go!(Q4_1),
        Format::Q5_0 => go!(Q5_0),
        Format::Q5_1 => go!(Q5_1),
        Format::Q8_0 => go!(Q8_0),
        _ => unreachable!("{format:?} reads Q8_K activations"),
    }
}

/// One K-quant weight row against each of `out.len()` rows of [`Q8K`] blocks (see
/// [`rows_q8`]).
///
/// # Safety
/// As [`rows_q8`].
pub(crate) unsafe fn rows_q8k(
    format: Format,
    w: &[u8],
    acts: &[Q8K],
    per_row: usize,
    out: &mut [f32],
) {
    match format {
        Format::Q4K => rows_k::<0>(w, acts, per_row, out),
        Format::Q5K => rows_k::<1>(w, acts, per_row, out),
        Format::Q6K => rows_k::<2>(w, acts, per_row, out),
        _ => unreachable!("{format:?} reads 32-value activations"),
    }
}

/// Rows `N` at a time through `dotn`, the rest one at a time through `dot1`: the same
/// operations per row either way.
#[inline(always)]
unsafe fn by_n<A, const N: usize>(
    acts: &[A],
    per_row: usize,
    out: &mut [f32],
    dotn: impl Fn([&[A]; N]) -> [f32; N],
    dot1: impl Fn([&[A]; 1]) -> [f32; 1],
) {
    let row = |r: usize| acts.get_unchecked(r * per_row..(r + 1) * per_row);
    let mut r = 0;
    while r + N <= out.len() {
        let v = dotn(std::array::from_fn(|k| row(r + k)));
        out[r..r + N].copy_from_slice(&v);
        r += N;
    }
    while r < out.len() {
        out[r] = dot1([row(r)])[0];
        r += 1;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows32<const F: u8>(w: &[u8], acts: &[Q8], per_row: usize, out: &mut [f32]) {
    by_n(
        acts,
        per_row,
        out,
        |ys| q8_family::<F, 4, false>(w, ys),
        |ys| q8_family::<F, 1, false>(w, ys),
    )
}

/// [`rows32`] with `vpdpbusd`, eight rows at a time: AVX-512 VL's 32 vector registers
/// hold eight accumulators and a block's unpacked values (measured 8-10% faster than four
/// rows on SmolLM2's Q8_0 and Q5_0 layers). The integer sums, and so the results, are
/// [`rows32`]'s.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn rows32_vnni<const F: u8>(w: &[u8], acts: &[Q8], per_row: usize, out: &mut [f32]) {
    by_n(
        acts,
        per_row,
        out,
        |ys| q8_family::<F, 8, true>(w, ys),
        |ys| q8_family::<F, 1, true>(w, ys),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_k<const K: u8>(w: &[u8], acts: &[Q8K], per_row: usize, out: &mut [f32]) {
    match K {
        0 => by_n(
            acts,
            per_row,
            out,
            |y| q45k::<false, 4>(w, y),
            |y| q45k::<false, 1>(w, y),
        ),
        1 => by_n(
            acts,
            per_row,
            out,
            |y| q45k::<true, 4>(w, y),
            |y| q45k::<true, 1>(w, y),
        ),
        _ => by_n(acts, per_row, out, |y| q6k::<4>(w, y), |y| q6k::<1>(w, y)),
    }
}

/// The f16 at `b[at..at + 2]`, widened by F16C (in the kernels' own instruction set,
/// rather than `half`'s run-time dispatch per call).
#[inline(always)]
unsafe fn f16_at(b: &[u8], at: usize) -> f32 {
    let bits = (b.as_ptr().add(at) as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The sum of `v`'s 8 lanes, in ggml's order.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let x = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    let x = _mm_add_ss(x, _mm_movehdup_ps(x));
    _mm_cvtss_f32(x)
}

/// Unsigned bytes `a` times signed bytes `b`, summed in fours into i32 lanes: one
/// `vpdpbusd` with VNNI, else `maddubs` (no pair can saturate here) and `madd`.
#[inline(always)]
unsafe fn dot_u8_i8<const VNNI: bool>(a: __m256i, b: __m256i) -> __m256i {
    if VNNI {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b)
    } else {
        _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
    }
}

/// Bytes `0xFF` where bit `j` of `bits` is set, else 0 (ggml's `bytes_from_bits_32`).
#[inline(always)]
unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    let shuffle = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let b = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuffle);
    let b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1))
}

/// A 32-value block's values as bytes in order: signed for Q4_0, Q5_0 and Q8_0,
/// unsigned for the formats with a minimum.
#[inline(always)]
unsafe fn values32<const F: u8>(b: *const u8) -> __m256i {
    if F == Q8_0 {
        return _mm256_loadu_si256(b.add(2) as *const __m256i);
    }
    let qs_at = match F {
        Q4_0 => 2,
        Q4_1 => 4,
        Q5_0 => 6,
        _ => 8,
    };
    let qs = _mm_loadu_si128(b.add(qs_at) as *const __m128i);
    let v = _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(qs, 4), qs),
        _mm256_set1_epi8(0xF),
    );
    match F {
        Q4_0 => _mm256_sub_epi8(v, _mm256_set1_epi8(8)),
        Q4_1 => v,
        _ => {
            let qh = (b.add(qs_at - 4) as *const u32).read_unaligned();
            let v = _mm256_or_si256(
                v,
                _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10)),
            );
            if F == Q5_0 {
                _mm256_sub_epi8(v, _mm256_set1_epi8(16))
            } else {
                v
            }
        }
    }
}

#[inline(always)]
unsafe fn q8_family<const F: u8, const R: usize, const VNNI: bool>(
    w: &[u8],
    ys: [&[Q8]; R],
) -> [f32; R] {
    const BYTES: [usize; 5] = [
        Format::Q4_0.block_bytes(),
        Format::Q4_1.block_bytes(),
        Format::Q5_0.block_bytes(),
        Format::Q5_1.block_bytes(),
        Format::Q8_0.block_bytes(),
    ];
    let signed = matches!(F, Q4_0 | Q5_0 | Q8_0);
    let mut acc = [_mm256_setzero_ps(); R];
    // The minimums' term, `m * s` per block, in scalar FMAs: left to itself the compiler
    // gathers the four rows' `s` into one vector, a chain of gathers that cost a third of
    // the kernel.
    let mut mins = [_mm_setzero_ps(); R];
    for (i, b) in w.chunks_exact(BYTES[F as usize]).enumerate() {
        let x = values32::<F>(b.as_ptr());
        let ax = if signed { _mm256_sign_epi8(x, x) } else { x };
        let d = f16_at(b, 0);
        let m = if signed { 0.0 } else { f16_at(b, 2) };
        for r in 0..R {
            let y = ys[r].get_unchecked(i);
            let yq = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let yq = if signed { _mm256_sign_epi8(yq, x) } else { yq };
            let p = _mm256_cvtepi32_ps(dot_u8_i8::<VNNI>(ax, yq));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * y.d), p, acc[r]);
            if !signed {
                mins[r] = _mm_fmadd_ss(_mm_set_ss(m), _mm_load_ss(&y.s), mins[r]);
            }
        }
    }
    std::array::from_fn(|r| hsum(acc[r]) + _mm_cvtss_f32(mins[r]))
}

/// Scales and minimums of a Q4_K/Q5_K block.
#[inline(always)]
fn scales_mins(packed: &[u8]) -> ([i16; 8], [i32; 8]) {
    let mut sc = [0i16; 8];
    let mut m = [0i32; 8];
    for j in 0..8 {
        let (s, mm) = scale_min_k4(j, packed);
        sc[j] = s as i16;
        m[j] = mm as i32;
    }
    (sc, m)
}

#[inline(always)]
unsafe fn q45k<const FIVE: bool, const R: usize>(w: &[u8], ys: [&[Q8K]; R]) -> [f32; R] {
    let bytes = match FIVE {
        true => Format::Q5K.block_bytes(),
        false => Format::Q4K.block_bytes(),
    };
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut accm = [0f32; R];
    for (i, b) in w.chunks_exact(bytes).enumerate() {
        let (sc, mins) = scales_mins(&b[4..16]);
        let p = b.as_ptr();
        let qs = p.add(if FIVE { 48 } else { 16 });
        let hb = _mm256_loadu_si256(p.add(16) as *const __m256i);
        let mut sumi = [_mm256_setzero_si256(); R];
        for j in 0..4 {
            let q = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
            let mut lo = _mm256_and_si256(q, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if FIVE {
                let one = _mm256_set1_epi8(1);
                let bit = |s: usize| {
                    let v = _mm256_srl_epi16(hb, _mm_cvtsi32_si128(s as i32));
                    _mm256_slli_epi16(_mm256_and_si256(v, one), 4)
                };
                lo = _mm256_or_si256(lo, bit(2 * j));
                hi = _mm256_or_si256(hi, bit(2 * j + 1));
            }
            let (s_lo, s_hi) = (
                _mm256_set1_epi16(sc[2 * j]),
                _mm256_set1_epi16(sc[2 * j + 1]),
            );
            for r in 0..R {
                let y = ys[r].get_unchecked(i).qs.as_ptr().add(64 * j);
                let y0 = _mm256_loadu_si256(y as *const __m256i);
                let y1 = _mm256_loadu_si256(y.add(32) as *const __m256i);
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), s_lo);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), s_hi);
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p0, p1));
            }
        }
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        for r in 0..R {
            let y = ys[r].get_unchecked(i);
            let m: i32 = (0..8)
                .map(|s| mins[s] * (y.bsums[2 * s] as i32 + y.bsums[2 * s + 1] as i32))
                .sum();
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * y.d), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
            accm[r] += dmin * y.d * m as f32;
        }
    }
    std::array::from_fn(|r| hsum(acc[r]) - accm[r])
}

#[inline(always)]
unsafe fn q6k<const R: usize>(w: &[u8], ys: [&[Q8K]; R]) -> [f32; R] {
    let (m4, m3) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(3));
    let mut acc = [_mm256_setzero_ps(); R];
    for (i, b) in w.chunks_exact(Format::Q6K.block_bytes()).enumerate() {
        let p = b.as_ptr();
        let sc: [i16; 16] = std::array::from_fn(|g| b[192 + g] as i8 as i16);
        let mut sumi = [_mm256_setzero_si256(); R];
        for n in 0..2 {
            let ql0 = _mm256_loadu_si256(p.add(64 * n) as *const __m256i);
            let ql1 = _mm256_loadu_si256(p.add(64 * n + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(p.add(128 + 32 * n) as *const __m256i);
            let high = |shift: i32| {
                let v = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(shift));
                _mm256_slli_epi16(_mm256_and_si256(v, m3), 4)
            };
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), high(0)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), high(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), high(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), high(6)),
            ];
            for (c, &q) in q.iter().enumerate() {
                let g = 8 * n + 2 * c;
                let s = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
                for r in 0..R {
                    let y = ys[r].get_unchecked(i).qs.as_ptr().add(128 * n + 32 * c);
                    let y = _mm256_loadu_si256(y as *const __m256i);
                    let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), s);
                    sumi[r] = _mm256_add_epi32(sumi[r], prod);
                }
            }
        }
        let d = f16_at(b, 208);
        for r in 0..R {
            let y = ys[r].get_unchecked(i);
            // The values are stored as q + 32: take 32 times each group's sum back out.
            let c: i32 = (0..16).map(|g| sc[g] as i32 * y.bsums[g] as i32).sum();
            let s = _mm256_sub_epi32(sumi[r], _mm256_setr_epi32(32 * c, 0, 0, 0, 0, 0, 0, 0));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * y.d), _mm256_cvtepi32_ps(s), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]))
}
