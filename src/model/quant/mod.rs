//! GGUF's quantized mode: a batch of activation rows multiplied against a weight's
//! quantized blocks in place in the mapped file, with llama.cpp's numerics.
//!
//! Each call quantizes the activation rows into llama.cpp's 8-bit blocks (the same
//! rounding as its x86 build), then multiplies every weight row against every activation
//! row with integer dot products per block, four activation rows per weight row at a
//! time (eight with AVX-512 VNNI) so a block's unpacking is shared. The weight is never
//! copied or dequantized: memory stays the file's size. Formats without a kernel here
//! (Q2_K, Q3_K and the i-quants) go through candle's row-at-a-time quantized matmul
//! instead, and the report names them (see [`Format::of`]).

pub(crate) mod blocks;
#[cfg(target_arch = "x86_64")]
mod x86;

use rayon::prelude::*;

use super::storage::Blocks;
pub(crate) use blocks::Format;
use blocks::{Act, Q8, Q8K};

/// Activation rows per tile: a tile stays in L1/L2 while a column chunk's weight rows
/// stream past it (32 measured 8% faster than 64 on SmolLM2's Q8_0 layers; 16 was
/// within noise of 32).
const ROW_TILE: usize = 32;
/// Weight rows per parallel task.
const COL_CHUNK: usize = 16;

/// A `[n_out, n_in]` quantized weight multiplied as stored.
pub(crate) struct QuantMatrix {
    blocks: Blocks,
    format: Format,
    n_in: usize,
    n_out: usize,
}

/// The output's pointer, shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes only its own columns of the output (see `QuantMatrix::run`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// Writes `v` at element `i`.
    ///
    /// # Safety
    /// `i` lies inside the output, and no other task writes it.
    unsafe fn write(self, i: usize, v: f32) {
        *self.0.add(i) = v;
    }
}

impl QuantMatrix {
    /// `blocks` (`[n_out, n_in]`) as a batched quantized weight, if its format has a
    /// kernel here; the blocks back if not.
    pub(crate) fn new(blocks: Blocks, n_in: usize, n_out: usize) -> Result<Self, Blocks> {
        let Some(format) = Format::of(blocks.dtype) else {
            return Err(blocks);
        };
        debug_assert_eq!(
            blocks.len,
            n_out * n_in / format.block_len() * format.block_bytes()
        );
        Ok(Self {
            blocks,
            format,
            n_in,
            n_out,
        })
    }

    /// Weight row `c`'s bytes.
    fn row(&self, c: usize) -> &[u8] {
        let row = self.n_in / self.format.block_len() * self.format.block_bytes();
        let start = self.blocks.start + c * row;
        &self.blocks.map[start..start + row]
    }

    /// `x` (`[rows, n_in]`) times the weight's transpose: `[rows, n_out]`.
    pub(crate) fn matmul(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let f = self.format;
        match f.act() {
            Act::Q8K => {
                let acts = quantize_rows(x, self.n_in, blocks::QK_K, blocks::quantize_q8k);
                self.run(&acts, rows, move |w, a, n, out| rows_k(f, w, a, n, out))
            }
            act => {
                let sum = act == Act::Q8_1;
                let acts = quantize_rows(x, self.n_in, blocks::QK, |b| blocks::quantize_q8(b, sum));
                self.run(&acts, rows, move |w, a, n, out| rows_32(f, w, a, n, out))
            }
        }
    }

    /// Every weight row against every activation row (`acts`: `rows` rows of whole
    /// blocks); `kernel` takes one weight row and a tile of activation rows.
    fn run<A: Sync>(
        &self,
        acts: &[A],
        rows: usize,
        kernel: impl Fn(&[u8], &[A], usize, &mut [f32]) + Sync,
    ) -> Vec<f32> {
        let n_out = self.n_out;
        let per_row = acts.len() / rows.max(1);
        let mut y = vec![0f32; rows * n_out];
        let out = Out(y.as_mut_ptr());
        (0..n_out.div_ceil(COL_CHUNK))
            .into_par_iter()
            .for_each(|chunk| {
                let cols = chunk * COL_CHUNK..((chunk + 1) * COL_CHUNK).min(n_out);
                let mut tile = [0f32; ROW_TILE];
                for r0 in (0..rows).step_by(ROW_TILE) {
                    let r1 = (r0 + ROW_TILE).min(rows);
                    let tile = &mut tile[..r1 - r0];
                    for c in cols.clone() {
                        kernel(
                            self.row(c),
                            &acts[r0 * per_row..r1 * per_row],
                            per_row,
                            tile,
                        );
                        for (k, &v) in tile.iter().enumerate() {
                            // SAFETY: row r0 + k < rows and column c < n_out lie inside y,
                            // and only this task writes column c.
                            unsafe { out.write((r0 + k) * n_out + c, v) };
                        }
                    }
                }
            });
        y
    }
}

/// `x`'s rows of `width`, each quantized block by block with `quantize`.
fn quantize_rows<A: Send>(
    x: &[f32],
    width: usize,
    block: usize,
    quantize: impl Fn(&[f32]) -> A + Sync,
) -> Vec<A> {
    debug_assert_eq!(width % block, 0);
    x.par_chunks(block * 64)
        .flat_map_iter(|c| c.chunks_exact(block).map(&quantize))
        .collect()
}

/// A 32-value format's row against a tile of activation rows, on the best kernel this
/// CPU has.
fn rows_32(f: Format, w: &[u8], acts: &[Q8], per_row: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has AVX2, FMA and F16C; rows hold whole blocks of matching widths.
        return unsafe { x86::rows_q8(f, w, acts, per_row, out) };
    }
    for (r, o) in out.iter_mut().enumerate() {
        *o = blocks::dot_q8(f, w, &acts[r * per_row..(r + 1) * per_row]);
    }
}

/// A K-quant row against a tile of activation rows, on the best kernel this CPU has.
fn rows_k(f: Format, w: &[u8], acts: &[Q8K], per_row: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: as in `rows_32`.
        return unsafe { x86::rows_q8k(f, w, acts, per_row, out) };
    }
    for (r, o) in out.iter_mut().enumerate() {
        *o = blocks::dot_q8k(f, w, &acts[r * per_row..(r + 1) * per_row]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;

    /// The fixture's weights (random blocks, 3 rows of 512) and their values as the `gguf`
    /// package dequantizes them (tests/fixtures/make_gguf_fixtures.py).
    fn fixture(name: &str) -> (Vec<u8>, Vec<f32>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reference/gguf/dequant.safetensors");
        let bytes = std::fs::read(path).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let raw = file
            .tensor(&format!("{name}.bytes"))
            .unwrap()
            .data()
            .to_vec();
        let values = file.tensor(&format!("{name}.values")).unwrap().data();
        let values = values
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (raw, values)
    }

    /// `bytes` as a mapped tensor of `dtype`, `[n_out, width]`.
    fn blocks(bytes: &[u8], dtype: GgmlDType, width: usize) -> Blocks {
        let mut map = memmap2::MmapMut::map_anon(bytes.len()).unwrap();
        map.copy_from_slice(bytes);
        Blocks {
            map: std::sync::Arc::new(map.make_read_only().unwrap()),
            start: 0,
            len: bytes.len(),
            dtype,
            width,
        }
    }

    /// Seeded activations with a spread of magnitudes, and a row of zeros.
    fn activations(rows: usize, width: usize) -> Vec<f32> {
        let mut s = 0x9E3779B97F4A7C15u64;
        (0..rows * width)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                if i / width == 3 {
                    0.0
                } else {
                    (u * (1 + i % 7) as f64) as f32
                }
            })
            .collect()
    }

    /// The activations as llama.cpp's blocks hold them, dequantized.
    fn dequantized_acts(format: Format, x: &[f32]) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len());
        if format.act() == Act::Q8K {
            for b in x.chunks_exact(blocks::QK_K) {
                let q = blocks::quantize_q8k(b);
                out.extend(q.qs.iter().map(|&v| v as f64 * q.d as f64));
            }
        } else {
            for b in x.chunks_exact(blocks::QK) {
                let q = blocks::quantize_q8(b, false);
                out.extend(q.qs.iter().map(|&v| v as f64 * q.d as f64));
            }
        }
        out
    }

    /// What Q8_1's f16 sum `s` adds to a row's product for a format with a minimum: each
    /// block's `m * (s - d * sum(q))`.
    fn sum_rounding(format: Format, raw: &[u8], c: usize, x: &[f32]) -> f64 {
        let row = x.len() / blocks::QK * format.block_bytes();
        let w = &raw[c * row..(c + 1) * row];
        w.chunks_exact(format.block_bytes())
            .zip(x.chunks_exact(blocks::QK))
            .map(|(b, x)| {
                let q = blocks::quantize_q8(x, true);
                let sum: i32 = q.qs.iter().map(|&v| v as i32).sum();
                blocks::f16_at(b, 2) as f64 * (q.s as f64 - q.d as f64 * sum as f64)
            })
            .sum()
    }

    /// Every format's batched product, at every instruction set (the same bits with AVX2
    /// as with VNNI), equals the gguf
    /// package's dequantized weights times llama.cpp's quantized activations, to f32
    /// rounding of the block sums; and stays within 8-bit quantization of the f32 product.
    #[test]
    fn batched_products_match_the_dequantized_weights() {
        // 19 rows: two tiles of eight (VNNI), four of four (AVX2), and a remainder.
        let (n_out, width, rows) = (3, 512, 19);
        let types = [
            ("Q4_0", GgmlDType::Q4_0),
            ("Q4_1", GgmlDType::Q4_1),
            ("Q5_0", GgmlDType::Q5_0),
            ("Q5_1", GgmlDType::Q5_1),
            ("Q8_0", GgmlDType::Q8_0),
            ("Q4_K", GgmlDType::Q4K),
            ("Q5_K", GgmlDType::Q5K),
            ("Q6_K", GgmlDType::Q6K),
        ];
        let x = activations(rows, width);
        for (name, dtype) in types {
            let (raw, w) = fixture(name);
            // The block layout the kernels assume is candle's (and ggml's).
            let f = Format::of(dtype).unwrap();
            assert_eq!(
                (f.block_len(), f.block_bytes()),
                (dtype.block_size(), dtype.type_size()),
                "{name}"
            );
            let m = QuantMatrix::new(blocks(&raw, dtype, width), width, n_out)
                .ok()
                .unwrap();
            let xq = dequantized_acts(m.format, &x);
            let mut by_level = Vec::new();
            for level in [0, 1, 2] {
                crate::simd::SIMD_CAP.store(level, std::sync::atomic::Ordering::Relaxed);
                by_level.push(m.matmul(&x, rows));
            }
            crate::simd::SIMD_CAP.store(2, std::sync::atomic::Ordering::Relaxed);
            for got in &by_level {
                for r in 0..rows {
                    for c in 0..n_out {
                        let (wr, xr) = (&w[c * width..][..width], r * width);
                        let mut want: f64 = (0..width).map(|i| wr[i] as f64 * xq[xr + i]).sum();
                        if m.format.act() == Act::Q8_1 {
                            want += sum_rounding(m.format, &raw, c, &x[xr..xr + width]);
                        }
                        let scale: f64 =
                            (0..width).map(|i| (wr[i] as f64 * xq[xr + i]).abs()).sum();
                        let g = got[r * n_out + c] as f64;
                        assert!(
                            (g - want).abs() <= 1e-6 * scale + 1e-30,
                            "{name} row {r} col {c}: {g} against {want} (scale {scale})"
                        );
                        let exact: f64 = (0..width).map(|i| wr[i] as f64 * x[xr + i] as f64).sum();
                        assert!(
                            (g - exact).abs() <= 2e-2 * scale + 1e-30,
                            "{name}: {g} vs f32 {exact}"
                        );
                    }
                }
            }
            // One row alone gives the bits it gives in a batch.
            let alone = m.matmul(&x[5 * width..6 * width], 1);
            assert_eq!(
                alone,
                by_level[1][5 * n_out..6 * n_out],
                "{name}: row alone"
            );
        }
    }

    /// llama.cpp's activation quantization: round half to even, and Q8_K's scale from the
    /// signed value of largest magnitude.
    #[test]
    fn activations_quantize_as_llama_cpp_does() {
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        x[3] = 0.5;
        let q = blocks::quantize_q8(&x, true);
        assert_eq!(&q.qs[..4], &[127, 2, -4, 0]);
        assert_eq!(q.d, 1.0);
        assert_eq!(q.s, 125.0);
        let mut x = [0f32; 256];
        x[0] = -254.0;
        x[1] = 5.0;
        x[2] = 3.0;
        let q = blocks::quantize_q8k(&x);
        // iscale = -127 / -254 = 0.5: 5 * 0.5 = 2.5 rounds to 2, 1.5 to 2.
        assert_eq!(&q.qs[..3], &[-127, 2, 2]);
        assert_eq!(q.d, 2.0);
        assert_eq!(q.bsums[0], -123);
    }
}
