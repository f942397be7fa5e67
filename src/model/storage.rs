//! Tensor storage, below every other model module: buffers used in place from a
//! memory-mapped file or owned ([`Buf`]), float tensors in their file's dtype
//! ([`Floats`]), GGUF quantized blocks ([`Blocks`]), and the transpose that reorders them.
//! The loaders (safetensors, GGUF) make these values and the kernels read them.

use std::ops::Range;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;

/// Elements of one tensor: borrowed from a memory-mapped file, or owned.
pub(crate) enum Buf<T: 'static> {
    /// `len` elements of `T` at byte `start` of the map; `start` is aligned for `T` (checked
    /// when the buffer is made).
    Mapped {
        /// The file's map, kept alive as long as a tensor points into it.
        map: Arc<Mmap>,
        /// Byte offset of the first element.
        start: usize,
        /// Elements.
        len: usize,
    },
    /// A copy (reordered, or read from an unaligned offset).
    Owned(Vec<T>),
}

impl<T: Copy + 'static> std::ops::Deref for Buf<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Self::Owned(v) => v,
            // SAFETY: Buf::mapped() checked that start is aligned for T and that
            // start + len * size_of::<T>() lies inside the map, which lives as long as self;
            // the map is read-only, and T (f32, bf16, f16) is valid for every bit pattern.
            Self::Mapped { map, start, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(*start) as *const T, *len)
            },
        }
    }
}

impl<T: Copy + 'static> Buf<T> {
    /// `len` elements at byte `start` of `map`, in place when aligned, else copied.
    pub(crate) fn mapped(map: &Arc<Mmap>, start: usize, len: usize) -> Self {
        let size = std::mem::size_of::<T>();
        assert!(
            start + len * size <= map.len(),
            "tensor bounds checked on open"
        );
        if (map.as_ptr() as usize + start).is_multiple_of(std::mem::align_of::<T>()) {
            return Self::Mapped {
                map: map.clone(),
                start,
                len,
            };
        }
        // Headers are padded to 8 bytes by every safetensors writer since 2023, so this is
        // for older files only. Copied element by element from their little-endian bytes.
        let bytes = &map[start..start + len * size];
        let mut v: Vec<T> = Vec::with_capacity(len);
        // SAFETY: v has room for len elements of T = len * size bytes; the copy is
        // byte-wise, so alignment of the source does not matter, and every bit pattern is
        // a valid T.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr() as *mut u8, bytes.len());
            v.set_len(len);
        }
        Self::Owned(v)
    }
}

/// A tensor's elements in the dtype its file stores them in.
pub(crate) enum Floats {
    /// f32, used as it is.
    F32(Buf<f32>),
    /// bfloat16, widened to f32 when used.
    Bf16(Buf<bf16>),
    /// IEEE half, widened to f32 when used.
    F16(Buf<f16>),
}

impl std::fmt::Debug for Floats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dtype = match self {
            Self::F32(_) => "f32",
            Self::Bf16(_) => "bf16",
            Self::F16(_) => "f16",
        };
        write!(f, "Floats({dtype} x {})", self.len())
    }
}

/// Elements per parallel task when widening: large enough to amortize a task, small enough
/// to spread one projection over every core.
const WIDEN_CHUNK: usize = 1 << 16;

impl Floats {
    /// Elements.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::F32(b) => b.len(),
            Self::Bf16(b) => b.len(),
            Self::F16(b) => b.len(),
        }
    }

    /// `values` in `dtype` (bf16 or f16) when each of them is exactly a value of it, as
    /// values read from such a file and not rescaled are; else in f32.
    pub(crate) fn exact(values: Vec<f32>, dtype: candle_core::DType) -> Self {
        /// `values` in `T`, when each comes back to its own bits.
        fn narrowed<T>(values: &[f32], to: fn(f32) -> T, back: fn(&T) -> f32) -> Option<Vec<T>> {
            let narrow: Vec<T> = values.iter().map(|&v| to(v)).collect();
            let same = narrow
                .iter()
                .zip(values)
                .all(|(n, v)| back(n).to_bits() == v.to_bits());
            same.then_some(narrow)
        }
        let kept =
            match dtype {
                candle_core::DType::BF16 => narrowed(&values, bf16::from_f32, |n| n.to_f32())
                    .map(|v| Self::Bf16(Buf::Owned(v))),
                candle_core::DType::F16 => narrowed(&values, f16::from_f32, |n| n.to_f32())
                    .map(|v| Self::F16(Buf::Owned(v))),
                _ => None,
            };
        kept.unwrap_or(Self::F32(Buf::Owned(values)))
    }

    /// The elements themselves when they are f32.
    pub(crate) fn as_f32(&self) -> Option<&[f32]> {
        match self {
            Self::F32(b) => Some(b),
            _ => None,
        }
    }

    /// Bytes the elements take.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Self::F32(b) => 4 * b.len(),
            Self::Bf16(b) => 2 * b.len(),
            Self::F16(b) => 2 * b.len(),
        }
    }

    /// Elements `range` as f32 into `dst` (`range.len()` long): exact for every dtype.
    pub(crate) fn widen_into(&self, range: Range<usize>, dst: &mut [f32]) {
        debug_assert_eq!(range.len(), dst.len());
        fn par<T: Sync>(src: &[T], dst: &mut [f32], f: impl Fn(&[T], &mut [f32]) + Sync) {
            dst.par_chunks_mut(WIDEN_CHUNK)
                .zip(src.par_chunks(WIDEN_CHUNK))
                .for_each(|(d, s)| f(s, d));
        }
        if range.len() <= WIDEN_CHUNK {
            match self {
                Self::F32(b) => dst.copy_from_slice(&b[range]),
                Self::Bf16(b) => widen_bf16(&b[range], dst),
                Self::F16(b) => widen_f16(&b[range], dst),
            }
            return;
        }
        match self {
            Self::F32(b) => par(&b[range], dst, |s, d| d.copy_from_slice(s)),
            Self::Bf16(b) => par(&b[range], dst, widen_bf16),
            Self::F16(b) => par(&b[range], dst, widen_f16),
        }
    }

    /// Every element as an owned f32 vector (norm weights, biases: small tensors).
    pub(crate) fn to_vec(&self) -> Vec<f32> {
        if let Some(v) = self.as_f32() {
            return v.to_vec();
        }
        let mut v = vec![0f32; self.len()];
        self.widen_into(0..self.len(), &mut v);
        v
    }

    /// `[rows, cols]` -> an owned `[cols, rows]` copy in the same dtype.
    pub(crate) fn transposed(&self, rows: usize, cols: usize) -> Self {
        match self {
            Self::F32(b) => Self::F32(Buf::Owned(transpose(b, rows, cols))),
            Self::Bf16(b) => Self::Bf16(Buf::Owned(transpose(b, rows, cols))),
            Self::F16(b) => Self::F16(Buf::Owned(transpose(b, rows, cols))),
        }
    }

    /// Rows `rows` (in that order) of a `[.., width]` matrix, as an owned copy in the
    /// same dtype: a fused projection split into its parts.
    pub(crate) fn gather_rows(&self, rows: &[usize], width: usize) -> Self {
        fn pick<T: Copy>(b: &[T], rows: &[usize], width: usize) -> Vec<T> {
            rows.iter()
                .flat_map(|&r| &b[r * width..(r + 1) * width])
                .copied()
                .collect()
        }
        match self {
            Self::F32(b) => Self::F32(Buf::Owned(pick(b, rows, width))),
            Self::Bf16(b) => Self::Bf16(Buf::Owned(pick(b, rows, width))),
            Self::F16(b) => Self::F16(Buf::Owned(pick(b, rows, width))),
        }
    }

    /// Where the elements sit in a map, if they do: (map, byte range).
    pub(crate) fn mapped_range(&self) -> Option<(&Arc<Mmap>, Range<usize>)> {
        let bytes = self.bytes();
        match self {
            Self::F32(Buf::Mapped { map, start, .. })
            | Self::Bf16(Buf::Mapped { map, start, .. })
            | Self::F16(Buf::Mapped { map, start, .. }) => Some((map, *start..*start + bytes)),
            _ => None,
        }
    }
}

crate::simd::multiversion! {
/// bf16 -> f32: the bits shifted into the high half, exact. half's slice conversion goes
/// element by element through a call; this loop vectorizes.
fn widen_bf16(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits((s.to_bits() as u32) << 16);
    }
}
}

/// f16 -> f32, exact: with the CPU's F16C instructions 8 at a time where it has them.
/// half's slice conversion checks for F16C and calls a routine per 4 elements, which made
/// widening an F16 weight a tenth of a forward of an F16 GGUF file.
fn widen_f16(src: &[f16], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has F16C and AVX (checked just above).
        unsafe { widen_f16_f16c(src, dst) };
        return;
    }
    src.convert_to_f32_slice(dst);
}

/// [`widen_f16`] with F16C: 8 elements per instruction, the tail by half's conversion.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn widen_f16_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    let n = src.len().min(dst.len());
    let whole = n / 8 * 8;
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 <= n, within both slices; unaligned loads and stores.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
    }
    src[whole..n].convert_to_f32_slice(&mut dst[whole..n]);
}

/// A GGUF tensor's quantized blocks, used in place in the memory-mapped file: the
/// weights of the dequantized mode, and the embedding and head in either mode.
pub(crate) struct Blocks {
    /// The file's map.
    pub(crate) map: Arc<Mmap>,
    /// Byte offset of the tensor's data in the file (aligned for its blocks: checked by
    /// whoever makes the value).
    pub(crate) start: usize,
    /// Bytes of data.
    pub(crate) len: usize,
    /// The block type.
    pub(crate) dtype: GgmlDType,
    /// Elements per row.
    pub(crate) width: usize,
}

impl Blocks {
    /// Rows `rows`, dequantized into `dst` (`rows.len() * width` long).
    pub(crate) fn rows_into(&self, rows: Range<usize>, dst: &mut [f32]) {
        let bytes = &self.map[self.start..self.start + self.len];
        per_type!(self.dtype, rows_of)(bytes, rows, self.width, dst);
    }

    /// The whole `[n_out, width]` tensor dequantized and transposed into `dst`
    /// (`[width, n_out]`): the layout the forward's matmul reads. Each block is
    /// dequantized once and written straight to its place, so no `[n_out, width]` copy
    /// goes through memory (that copy and its transpose were a fifth of a GGUF forward).
    pub(crate) fn transposed_into(&self, n_out: usize, dst: &mut [f32]) {
        let bytes = &self.map[self.start..self.start + self.len];
        per_type!(self.dtype, transposed)(bytes, n_out, self.width, dst);
    }
}

/// A Q8_0 `[n_out, width]` weight laid out once, at load, as the matmul reads it: the
/// int8 values `[width, n_out]` and each block's f16 scale `[width / 32, n_out]`. These
/// are exactly the file's bytes (34 per block of 32), so memory stays the file's size,
/// and dequantizing per call becomes one contiguous pass, `q * d` (ggml's product, to the
/// bit), as cheap as widening an F16 weight. Dequantizing the file's blocks per call had
/// to scatter each block across 32 rows of the output: 11% of a Q8_0 GPT-2 forward.
pub(crate) struct Int8Columns {
    /// `[width, n_out]` values.
    q: Vec<i8>,
    /// `[width / 32, n_out]` scales.
    d: Vec<f16>,
    /// Output features (columns).
    n_out: usize,
}

/// Values per Q8_0 block; a block is an f16 scale then that many i8.
const Q8_0_BLOCK: usize = 32;

impl Int8Columns {
    /// `blocks` (Q8_0, `[n_out, width]`) relaid; their pages are handed back after.
    pub(crate) fn from_q8_0(blocks: &Blocks, n_out: usize) -> Self {
        assert_eq!(blocks.dtype, GgmlDType::Q8_0);
        let range = blocks.start..blocks.start + blocks.len;
        let relaid = Self::from_q8_0_bytes(&blocks.map[range.clone()], n_out, blocks.width);
        release_range(&blocks.map, range);
        relaid
    }

    /// Q8_0 blocks `[n_out, width]` relaid.
    fn from_q8_0_bytes(bytes: &[u8], n_out: usize, width: usize) -> Self {
        const SIZE: usize = 2 + Q8_0_BLOCK;
        let per_row = width / Q8_0_BLOCK;
        assert_eq!(bytes.len(), n_out * per_row * SIZE);
        let mut q = vec![0i8; width * n_out];
        let mut d = vec![f16::ZERO; per_row * n_out];
        // One task per block column: its 32 rows of `q` and one row of `d`.
        q.par_chunks_mut(Q8_0_BLOCK * n_out)
            .zip(d.par_chunks_mut(n_out))
            .enumerate()
            .for_each(|(b, (q, d))| {
                for (j, d) in d.iter_mut().enumerate() {
                    let raw = &bytes[(j * per_row + b) * SIZE..][..SIZE];
                    *d = f16::from_le_bytes([raw[0], raw[1]]);
                    for (t, &v) in raw[2..].iter().enumerate() {
                        q[t * n_out + j] = v as i8;
                    }
                }
            });
        Self { q, d, n_out }
    }

    /// Elements (`width * n_out`).
    pub(crate) fn len(&self) -> usize {
        self.q.len()
    }

    /// The weight dequantized into `dst` (`[width, n_out]`).
    pub(crate) fn widen_into(&self, dst: &mut [f32]) {
        let n = self.n_out;
        debug_assert_eq!(dst.len(), self.q.len());
        dst.par_chunks_mut(Q8_0_BLOCK * n)
            .zip(self.q.par_chunks(Q8_0_BLOCK * n))
            .zip(self.d.par_chunks(n))
            .for_each(|((out, q), d)| {
                let mut scale = vec![0f32; n];
                d.convert_to_f32_slice(&mut scale);
                for (out, q) in out.chunks_exact_mut(n).zip(q.chunks_exact(n)) {
                    scale_row(out, q, &scale);
                }
            });
    }
}

crate::simd::multiversion! {
/// `out = q * scale`, element by element.
fn scale_row(out: &mut [f32], q: &[i8], scale: &[f32]) {
    for ((o, &q), &s) in out.iter_mut().zip(q).zip(scale) {
        *o = q as f32 * s;
    }
}
}

/// Hands the pages of `range` of `map` back to the kernel, once their contents have been
/// copied out: without this a relaid weight would sit in memory twice. The file's pages
/// stay in the page cache; the map reads them again if touched. Elsewhere than on Unix
/// (no `madvise`) the pages stay mapped until the map is dropped.
#[cfg(unix)]
pub(crate) fn release_range(map: &Mmap, range: Range<usize>) {
    // SAFETY: MADV_DONTNEED on a read-only file mapping only drops this process's page
    // table entries: a later read of the range sees the file's unchanged contents, so no
    // live reference observes a change. A refusal leaves the pages mapped, which is only
    // memory.
    let _ = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.len())
    };
}

#[cfg(not(unix))]
pub(crate) fn release_range(_map: &Mmap, _range: Range<usize>) {}

/// `f::<T>` for the block type `T` of `dtype`: candle's own per-type routines, so the
/// values are those `QTensor::dequantize` gives for the whole tensor.
macro_rules! per_type {
    ($dtype:expr, $f:ident) => {{
        use candle_core::quantized::k_quants::*;
        use half::{bf16, f16};
        match $dtype {
            GgmlDType::F32 => $f::<f32>,
            GgmlDType::F16 => $f::<f16>,
            GgmlDType::BF16 => $f::<bf16>,
            GgmlDType::Q4_0 => $f::<BlockQ4_0>,
            GgmlDType::Q4_1 => $f::<BlockQ4_1>,
            GgmlDType::Q5_0 => $f::<BlockQ5_0>,
            GgmlDType::Q5_1 => $f::<BlockQ5_1>,
            GgmlDType::Q8_0 => $f::<BlockQ8_0>,
            GgmlDType::Q8_1 => $f::<BlockQ8_1>,
            GgmlDType::Q2K => $f::<BlockQ2K>,
            GgmlDType::Q3K => $f::<BlockQ3K>,
            GgmlDType::Q4K => $f::<BlockQ4K>,
            GgmlDType::Q5K => $f::<BlockQ5K>,
            GgmlDType::Q6K => $f::<BlockQ6K>,
            GgmlDType::Q8K => $f::<BlockQ8K>,
        }
    }};
}
use per_type;

/// `bytes` as blocks of `T`.
fn as_blocks<T: candle_core::quantized::k_quants::GgmlType>(bytes: &[u8]) -> &[T] {
    let size = std::mem::size_of::<T>();
    assert!(bytes.len().is_multiple_of(size));
    assert!((bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()));
    // SAFETY: the bytes hold whole blocks of T and are aligned for it (both asserted;
    // Gguf::blocks checked the range and alignment when it mapped them); blocks are plain
    // numbers, valid for every bit pattern.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) }
}

/// Rows `rows` of a `[.., width]` tensor of `T` blocks, dequantized into `dst`.
fn rows_of<T: candle_core::quantized::k_quants::GgmlType>(
    bytes: &[u8],
    rows: Range<usize>,
    width: usize,
    dst: &mut [f32],
) {
    debug_assert_eq!(dst.len(), rows.len() * width);
    let per_row = width / T::BLCK_SIZE;
    let blocks = &as_blocks::<T>(bytes)[rows.start * per_row..rows.end * per_row];
    // Blocks of 64 rows per task: each block dequantizes on its own.
    dst.par_chunks_mut(64 * width)
        .zip(blocks.par_chunks(64 * per_row))
        .for_each(|(d, b)| T::to_float(b, d));
}

/// A `[n_out, width]` tensor of `T` blocks dequantized into `dst` as `[width, n_out]`.
/// Each task owns 64 input positions (one block for the K-quants' 256): 16 output rows at
/// a time, their blocks for those positions are dequantized into a tile in cache, then
/// each position's 16 values are written as one whole cache line of `dst`. Dequantizing
/// into a `[n_out, width]` buffer and transposing it after went through memory twice:
/// 17% of a Q8_0 GPT-2 forward against 11% this way (0.61 against 0.55 s). Measured
/// slower: 32 or 128 positions per task, and tasks owning 16 whole output rows.
fn transposed<T: candle_core::quantized::k_quants::GgmlType + Sync>(
    bytes: &[u8],
    n_out: usize,
    width: usize,
    dst: &mut [f32],
) {
    const MAX_BLOCK: usize = 256;
    const J: usize = 16;
    debug_assert_eq!(dst.len(), n_out * width);
    assert!(T::BLCK_SIZE <= MAX_BLOCK);
    let per_row = width / T::BLCK_SIZE;
    let blocks = as_blocks::<T>(bytes);
    let chunk_blocks = (64 / T::BLCK_SIZE).max(1);
    dst.par_chunks_mut(chunk_blocks * T::BLCK_SIZE * n_out)
        .enumerate()
        .for_each(|(c, out)| {
            let b0 = c * chunk_blocks;
            let nb = out.len() / n_out / T::BLCK_SIZE;
            let cw = nb * T::BLCK_SIZE;
            let mut tile = [[0f32; MAX_BLOCK]; J];
            for j0 in (0..n_out).step_by(J) {
                let nj = J.min(n_out - j0);
                for (jj, t) in tile.iter_mut().enumerate().take(nj) {
                    let j = j0 + jj;
                    T::to_float(&blocks[j * per_row + b0..][..nb], &mut t[..cw]);
                }
                for k in 0..cw {
                    let line = &mut out[k * n_out + j0..][..nj];
                    for (jj, v) in line.iter_mut().enumerate() {
                        *v = tile[jj][k];
                    }
                }
            }
        });
}

/// `[rows, cols]` -> `[cols, rows]`, in cache-sized tiles, tile rows in parallel.
pub(crate) fn transpose<T: Copy + Default + Send + Sync>(
    a: &[T],
    rows: usize,
    cols: usize,
) -> Vec<T> {
    let mut out = vec![T::default(); a.len()];
    transpose_into(a, rows, cols, &mut out);
    out
}

/// [`transpose`] into `out` (`rows * cols` long).
pub(crate) fn transpose_into<T: Copy + Send + Sync>(
    a: &[T],
    rows: usize,
    cols: usize,
    out: &mut [T],
) {
    const T: usize = 32;
    debug_assert_eq!(out.len(), rows * cols);
    // Each task owns T rows of the output (= T columns of the input).
    out.par_chunks_mut(T * rows.max(1))
        .enumerate()
        .for_each(|(tc, block)| {
            let c0 = tc * T;
            let nc = block.len() / rows.max(1);
            for r0 in (0..rows).step_by(T) {
                for c in 0..nc {
                    for r in r0..(r0 + T).min(rows) {
                        block[c * rows + r] = a[r * cols + c0 + c];
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Widening every f16 and bf16 bit pattern gives each value's own f32 (NaNs stay NaN),
    /// at every instruction set.
    #[test]
    fn widening_is_exact_for_every_half_value() {
        let bits: Vec<u16> = (0..=u16::MAX).collect();
        let halves: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
        let brains: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b)).collect();
        let same = |got: f32, want: f32| {
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
        };
        let mut wide = vec![0f32; bits.len()];
        widen_f16(&halves, &mut wide);
        for (h, &w) in halves.iter().zip(&wide) {
            assert!(same(w, h.to_f32()), "f16 {:#06x}: {w}", h.to_bits());
        }
        for level in 0..=2 {
            crate::simd::SIMD_CAP.store(level, std::sync::atomic::Ordering::Relaxed);
            widen_bf16(&brains, &mut wide);
            for (h, &w) in brains.iter().zip(&wide) {
                assert!(same(w, h.to_f32()), "bf16 {:#06x}: {w}", h.to_bits());
            }
        }
        crate::simd::SIMD_CAP.store(2, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every tensor type strata reads, dequantized here from random blocks, equals the
    /// `gguf` package's `dequantize` of the same bytes (tests/fixtures/make_gguf_fixtures.py).
    #[test]
    fn dequantization_matches_the_gguf_package() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reference/gguf/dequant.safetensors");
        let bytes = std::fs::read(path).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (rows, width) = (3, 512);
        let types = [
            ("F32", GgmlDType::F32),
            ("F16", GgmlDType::F16),
            ("BF16", GgmlDType::BF16),
            ("Q4_0", GgmlDType::Q4_0),
            ("Q4_1", GgmlDType::Q4_1),
            ("Q5_0", GgmlDType::Q5_0),
            ("Q5_1", GgmlDType::Q5_1),
            ("Q8_0", GgmlDType::Q8_0),
            ("Q2_K", GgmlDType::Q2K),
            ("Q3_K", GgmlDType::Q3K),
            ("Q4_K", GgmlDType::Q4K),
            ("Q5_K", GgmlDType::Q5K),
            ("Q6_K", GgmlDType::Q6K),
        ];
        for (name, dtype) in types {
            let raw = file
                .tensor(&format!("{name}.bytes"))
                .unwrap()
                .data()
                .to_vec();
            let want: Vec<f32> = file
                .tensor(&format!("{name}.values"))
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            // Aligned for every block type, as a mapped GGUF tensor is.
            let mut words = vec![0u64; raw.len().div_ceil(8)];
            // SAFETY: `words` holds at least raw.len() bytes.
            let aligned =
                unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, raw.len()) };
            aligned.copy_from_slice(&raw);
            let mut got = vec![0f32; rows * width];
            per_type!(dtype, rows_of)(aligned, 0..rows, width, &mut got);
            // One row alone gives the same numbers as that row of the whole tensor, and the
            // transposed dequantization the same numbers transposed.
            let mut row = vec![0f32; width];
            per_type!(dtype, rows_of)(aligned, 2..3, width, &mut row);
            assert_eq!(row, got[2 * width..]);
            let mut t = vec![0f32; rows * width];
            per_type!(dtype, transposed)(aligned, rows, width, &mut t);
            let mut want_t = vec![0f32; rows * width];
            transpose_into(&got, rows, width, &mut want_t);
            assert_eq!(t, want_t, "{name}: transposed");
            if dtype == GgmlDType::Q8_0 {
                // The relaid form widens to the same bits at every instruction set.
                let relaid = Int8Columns::from_q8_0_bytes(aligned, rows, width);
                for level in 0..=2 {
                    crate::simd::SIMD_CAP.store(level, std::sync::atomic::Ordering::Relaxed);
                    let mut wide = vec![0f32; rows * width];
                    relaid.widen_into(&mut wide);
                    assert_eq!(wide, want_t, "Q8_0 relaid, SIMD level {level}");
                }
                crate::simd::SIMD_CAP.store(2, std::sync::atomic::Ordering::Relaxed);
            }
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-6,
                "{name}: dequantized values differ by {worst:e}"
            );
        }
    }
}
