//! Weights as their files store them.
//!
//! A safetensors file is memory-mapped and its tensors are used in place wherever their
//! dtype and layout allow: an f32 tensor laid out as the forward pass reads it costs no copy
//! and no memory beyond the file's pages. Half-precision tensors (bf16, f16) stay in the
//! file's dtype and are widened to f32 one projection at a time, into a reused buffer, as
//! the forward pass reaches them ([`Floats::widen_into`]); widening is exact, so the
//! numbers are those of the same weights stored in f32. Tensors that must be reordered
//! (`nn.Linear`'s `[out, in]`, see [`Scope::linear`]) are copied once, in their own dtype,
//! and the mapped pages they came from are handed back to the kernel.
//!
//! candle's `VarBuilder` copied every tensor into a fresh f32 buffer: 1.9x the file's size
//! in memory for GPT-2, 3.2x for a bf16 Llama, and half of a short report's time.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use rayon::prelude::*;

use super::error::ModelError;
use super::storage::{Buf, Floats};

/// A `[rows, width]` matrix read a row at a time: a token embedding, an unembedding.
pub(crate) struct RowMatrix {
    rows: usize,
    width: usize,
    data: RowMatrixData,
}

enum RowMatrixData {
    /// As a safetensors file stores it.
    Floats(Floats),
    /// GGUF quantized blocks in place in the mapped file, dequantized row by row when read.
    Quantized(super::storage::Blocks),
}

/// Unembedding rows widened per block by [`RowMatrix::logits`]: 16 MiB of f32 at width 2048.
const LOGIT_ROWS: usize = 2048;

impl RowMatrix {
    /// A table of elements as a file stores them.
    pub(crate) fn floats(w: Floats, rows: usize, width: usize) -> Self {
        debug_assert_eq!(w.len(), rows * width);
        Self {
            rows,
            width,
            data: RowMatrixData::Floats(w),
        }
    }

    /// A table of GGUF quantized blocks (`[rows, width]` in candle's order).
    pub(crate) fn quantized(q: super::storage::Blocks, rows: usize, width: usize) -> Self {
        Self {
            rows,
            width,
            data: RowMatrixData::Quantized(q),
        }
    }

    /// Rows `range` as f32 into `dst`.
    fn rows_into(&self, range: Range<usize>, dst: &mut [f32]) {
        let w = self.width;
        match &self.data {
            RowMatrixData::Floats(f) => f.widen_into(range.start * w..range.end * w, dst),
            RowMatrixData::Quantized(q) => q.rows_into(range, dst),
        }
    }

    /// Rows `ids` as f32, `[ids.len(), width]`: the embedding lookup.
    pub(crate) fn gather(&self, ids: &[usize]) -> Vec<f32> {
        let w = self.width;
        let mut x = vec![0f32; ids.len() * w];
        x.par_chunks_mut(w)
            .zip(ids)
            .for_each(|(row, &id)| self.rows_into(id..id + 1, row));
        x
    }

    /// `out = x W^T` for `[m, width]` rows `x`: `[m, rows]` logits. An f32 table is used in
    /// place; any other is widened [`LOGIT_ROWS`] rows at a time into a reused buffer.
    pub(crate) fn logits(&self, x: &[f32], m: usize, out: &mut [f32]) {
        use super::kernels::{matmul_transposed, with_scratch};
        let (n, k) = (self.rows, self.width);
        if let RowMatrixData::Floats(f) = &self.data {
            if let Some(w) = f.as_f32() {
                return matmul_transposed(x, w, m, k, n, n, out);
            }
        }
        for r0 in (0..n).step_by(LOGIT_ROWS) {
            let r1 = (r0 + LOGIT_ROWS).min(n);
            with_scratch((r1 - r0) * k, 0, |w, _| {
                self.rows_into(r0..r1, w);
                matmul_transposed(x, w, m, k, r1 - r0, n, &mut out[r0..]);
            });
        }
    }
}

/// A tensor's dtype as the safetensors header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    Bf16,
    F16,
}

/// Where one tensor lives.
struct Entry {
    /// Index into [`WeightFiles::maps`].
    file: usize,
    /// Its dtype, or the header's name for one strata does not read.
    // Not an error path: a tensor of a dtype strata does not read is refused only when a
    // loader asks for it, by this name.
    dtype: Result<Dtype, String>,
    /// Its shape.
    shape: Vec<usize>,
    /// Byte offset of its data in the file.
    start: usize,
}

/// Every tensor of a checkpoint (one safetensors file, or every shard), memory-mapped.
pub(crate) struct WeightFiles {
    paths: Vec<PathBuf>,
    maps: Vec<Arc<Mmap>>,
    tensors: HashMap<String, Entry>,
}

impl WeightFiles {
    /// Checks ([`check_safetensors`]) and maps every file, and reads their headers.
    pub(crate) fn open(paths: &[PathBuf]) -> Result<Self, ModelError> {
        let mut files = Self {
            paths: paths.to_vec(),
            maps: Vec::new(),
            tensors: HashMap::new(),
        };
        for (i, path) in paths.iter().enumerate() {
            check_safetensors(path)?;
            let io = |cause| ModelError::Io {
                path: path.clone(),
                cause,
            };
            let file = std::fs::File::open(path).map_err(io)?;
            // SAFETY: mapped read-only. As with any memory map, a file truncated while it
            // is mapped would fault on access; Hub caches never rewrite a blob in place.
            let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(io)?);
            files.index(i, path, &map)?;
            files.maps.push(map);
        }
        Ok(files)
    }

    fn index(&mut self, file: usize, path: &Path, map: &Mmap) -> Result<(), ModelError> {
        let corrupt = |detail: String| ModelError::CorruptWeights {
            path: path.to_path_buf(),
            detail,
        };
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(map)
            .map_err(|e| corrupt(format!("unreadable header ({e})")))?;
        for (name, info) in meta.tensors() {
            let dtype = match info.dtype {
                safetensors::Dtype::F32 => Ok(Dtype::F32),
                safetensors::Dtype::BF16 => Ok(Dtype::Bf16),
                safetensors::Dtype::F16 => Ok(Dtype::F16),
                other => Err(format!("{other:?}")),
            };
            self.tensors.insert(
                name,
                Entry {
                    file,
                    dtype,
                    shape: info.shape.clone(),
                    start: 8 + header_len + info.data_offsets.0,
                },
            );
        }
        Ok(())
    }

    fn error(&self, file: usize, detail: String) -> ModelError {
        ModelError::Weights {
            path: self.paths.get(file).cloned().unwrap_or_default(),
            detail,
        }
    }

    /// The tensor `name`, checked to have `shape`, in place.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Floats, ModelError> {
        let Some(e) = self.tensors.get(name) else {
            return Err(self.error(
                0,
                format!("tensor `{name}` is missing; the checkpoint does not match its config.json, or is not a model of this family"),
            ));
        };
        if e.shape != shape {
            return Err(self.error(
                e.file,
                format!(
                    "tensor `{name}` has shape {:?}, but config.json implies {shape:?}; the checkpoint does not match its config.json",
                    e.shape
                ),
            ));
        }
        let len = shape.iter().product();
        let map = &self.maps[e.file];
        match &e.dtype {
            Ok(Dtype::F32) => Ok(Floats::F32(Buf::mapped(map, e.start, len))),
            Ok(Dtype::Bf16) => Ok(Floats::Bf16(Buf::mapped(map, e.start, len))),
            Ok(Dtype::F16) => Ok(Floats::F16(Buf::mapped(map, e.start, len))),
            Err(other) => Err(self.error(
                e.file,
                format!("tensor `{name}` is stored as {other}; strata reads F32, BF16 and F16 weights: convert the checkpoint to one of them"),
            )),
        }
    }
}

/// Hands the pages of `copied` (a tensor just copied out of its map) back to the kernel:
/// the copy replaces them, and without this a reordered checkpoint would sit in memory
/// twice.
fn release(copied: &Floats) {
    if let Some((map, range)) = copied.mapped_range() {
        super::storage::release_range(map, range);
    }
}

/// Where a family's loader reads its tensors, by their Hugging Face names: a checkpoint's
/// safetensors files ([`WeightFiles`]) or a GGUF file, which translates each name and
/// layout to llama.cpp's. The methods say what a tensor is for (a norm's weight, an
/// `nn.Linear`, a GPT-2 `Conv1D`), so each store lays it out as the forward reads it.
pub(crate) trait Store {
    /// Whether the tensor `name` exists.
    fn contains(&self, name: &str) -> bool;
    /// The tensor `name` of `shape` as owned f32 (small tensors: norms, biases).
    fn vec(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError>;
    /// The scale `1 + w` of a Gemma RMSNorm whose weight is `name`, `[dim]`, in f32.
    fn plus_one(&self, name: &str, dim: usize) -> Result<Vec<f32>, ModelError> {
        Ok(self.vec(name, &[dim])?.iter().map(|x| 1.0 + x).collect())
    }
    /// The `[rows, width]` tensor `name` as a table read a row at a time.
    fn table(&self, name: &str, rows: usize, width: usize) -> Result<RowMatrix, ModelError>;
    /// Output rows `rows` (all when `None`) of the `nn.Linear` `prefix` of `n_out` outputs,
    /// with its bias when `bias`.
    fn linear(
        &self,
        prefix: &str,
        n_in: usize,
        n_out: usize,
        rows: Option<&[usize]>,
        bias: bool,
    ) -> Result<super::kernels::Dense, ModelError>;
    /// The GPT-2 `Conv1D` `prefix` (`weight` `[in, out]` in a checkpoint) and its bias.
    fn conv1d(
        &self,
        prefix: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<super::kernels::Dense, ModelError>;
}

impl Store for WeightFiles {
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn vec(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        Ok(self.get(name, shape)?.to_vec())
    }

    fn table(&self, name: &str, rows: usize, width: usize) -> Result<RowMatrix, ModelError> {
        Ok(RowMatrix::floats(
            self.get(name, &[rows, width])?,
            rows,
            width,
        ))
    }

    /// The weight is transposed once, here, in its own dtype: gemm runs 15-50% faster on
    /// these shapes with the weight `[in, out]` (measured 183-216 against 85-184 GFLOP/s on
    /// 512 x 768 x 2304 up to 512 x 2048 x 5632, and 128 x 2048 x 5632). Selected rows (a
    /// fused `query_key_value` or `gate_up_proj` split into its parts) are laid out as the
    /// separate projections would be.
    fn linear(
        &self,
        prefix: &str,
        n_in: usize,
        n_out: usize,
        rows: Option<&[usize]>,
        bias: bool,
    ) -> Result<super::kernels::Dense, ModelError> {
        let stored = self.get(&format!("{prefix}.weight"), &[n_out, n_in])?;
        let (w, n) = match rows {
            Some(rows) => (
                stored.gather_rows(rows, n_in).transposed(rows.len(), n_in),
                rows.len(),
            ),
            None => (stored.transposed(n_out, n_in), n_out),
        };
        release(&stored);
        let b = if bias {
            let all = self.vec(&format!("{prefix}.bias"), &[n_out])?;
            Some(match rows {
                Some(rows) => rows.iter().map(|&r| all[r]).collect(),
                None => all,
            })
        } else {
            None
        };
        Ok(super::kernels::Dense::in_major(w, n_in, n, b))
    }

    /// Used in place: a `Conv1D` is already `[in, out]`.
    fn conv1d(
        &self,
        prefix: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<super::kernels::Dense, ModelError> {
        Ok(super::kernels::Dense::in_major(
            self.get(&format!("{prefix}.weight"), &[n_in, n_out])?,
            n_in,
            n_out,
            Some(self.vec(&format!("{prefix}.bias"), &[n_out])?),
        ))
    }
}

/// Tensors under a name prefix, as the Hub's names nest (`h.0.attn.c_attn.weight`).
#[derive(Clone)]
pub(crate) struct Scope<'a> {
    store: &'a dyn Store,
    prefix: String,
}

impl<'a> Scope<'a> {
    /// The root scope (no prefix) of `store`.
    pub(crate) fn root(store: &'a dyn Store) -> Self {
        Scope {
            store,
            prefix: String::new(),
        }
    }

    /// The scope `prefix.name`.
    pub(crate) fn pp(&self, name: impl std::fmt::Display) -> Scope<'a> {
        Scope {
            store: self.store,
            prefix: self.name(&name.to_string()),
        }
    }

    fn name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// `prefix` when the checkpoint nests its tensors there (`model.`, `transformer.`, as
    /// the `...ForCausalLM` classes save them), judged by whether `prefix.probe` exists;
    /// else this scope.
    pub(crate) fn nested(&self, prefix: &str, probe: &str) -> Scope<'a> {
        if self.contains(&format!("{prefix}.{probe}")) {
            self.pp(prefix)
        } else {
            self.clone()
        }
    }

    /// The `weight` of this scope as a `[rows, width]` table (an embedding, an
    /// unembedding), in place.
    pub(crate) fn table(&self, rows: usize, width: usize) -> Result<RowMatrix, ModelError> {
        self.store.table(&self.name("weight"), rows, width)
    }

    /// An untied `lm_head` of `[rows, width]` under this scope (the root: it sits beside
    /// `model.`), or `None` when the head is tied to the embedding (`tied`) or the file
    /// holds no head (a bare `...Model` checkpoint).
    pub(crate) fn untied_head(
        &self,
        tied: bool,
        rows: usize,
        width: usize,
    ) -> Result<Option<RowMatrix>, ModelError> {
        if tied || !self.contains("lm_head.weight") {
            return Ok(None);
        }
        self.pp("lm_head").table(rows, width).map(Some)
    }

    /// Whether `name` exists under this scope.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.store.contains(&self.name(name))
    }

    /// The tensor `name` of `shape` as owned f32 (small tensors: norms, biases).
    pub(crate) fn vec(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        self.store.vec(&self.name(name), shape)
    }

    /// `1 + weight` of the Gemma RMSNorm under this scope, in f32 as transformers adds it.
    pub(crate) fn plus_one(&self, dim: usize) -> Result<Vec<f32>, ModelError> {
        self.store.plus_one(&self.name("weight"), dim)
    }

    /// A GPT-2 `Conv1D` under this scope: `weight` `[in, out]`, and `bias`.
    pub(crate) fn conv1d(
        &self,
        n_in: usize,
        n_out: usize,
    ) -> Result<super::kernels::Dense, ModelError> {
        self.store.conv1d(&self.prefix, n_in, n_out)
    }

    /// Output rows `rows` (in that order) of a fused `nn.Linear` of `n_out` outputs under
    /// this scope, as one projection: a `query_key_value` or `gate_up_proj` split into its
    /// parts.
    pub(crate) fn linear_rows(
        &self,
        n_in: usize,
        n_out: usize,
        rows: &[usize],
        bias: bool,
    ) -> Result<super::kernels::Dense, ModelError> {
        self.store
            .linear(&self.prefix, n_in, n_out, Some(rows), bias)
    }

    /// An `nn.Linear` under this scope (`weight` `[out, in]`, `bias` `[out]` when `bias`).
    pub(crate) fn linear(
        &self,
        n_in: usize,
        n_out: usize,
        bias: bool,
    ) -> Result<super::kernels::Dense, ModelError> {
        self.store.linear(&self.prefix, n_in, n_out, None, bias)
    }
}

/// Checks a safetensors file's header and size before it is memory-mapped, so a truncated
/// download is reported as such rather than as a confusing tensor error.
pub fn check_safetensors(path: &Path) -> Result<(), ModelError> {
    use std::io::Read;
    let corrupt = |detail: String| ModelError::CorruptWeights {
        path: path.to_path_buf(),
        detail,
    };
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        cause: source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let mut len_bytes = [0u8; 8];
    f.read_exact(&mut len_bytes).map_err(|_| {
        corrupt(format!(
            "only {file_len} bytes, too short for a safetensors header"
        ))
    })?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > 100_000_000 || 8 + header_len > file_len {
        return Err(corrupt(format!(
            "header claims {header_len} bytes but the file has {file_len}"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(io)?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| corrupt(format!("header is not valid JSON ({e})")))?;
    let entries = header
        .as_object()
        .ok_or_else(|| corrupt("header is not a JSON object".into()))?;
    let mut data_len = 0u64;
    for (name, entry) in entries {
        if name == "__metadata__" {
            continue;
        }
        let end = entry
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt(format!("tensor `{name}` has no data_offsets")))?;
        data_len = data_len.max(end);
    }
    let have = file_len - 8 - header_len;
    if have != data_len {
        return Err(corrupt(format!(
            "truncated or padded: the header describes {data_len} bytes of tensor data, the file holds {have}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    #[test]
    fn half_precision_widens_exactly() {
        let xs = [0.0f32, -1.5, 3.140625, 65504.0, 1e-3];
        let b: Vec<bf16> = xs.iter().map(|&x| bf16::from_f32(x)).collect();
        let h: Vec<f16> = xs.iter().map(|&x| f16::from_f32(x)).collect();
        for (floats, back) in [
            (
                Floats::Bf16(Buf::Owned(b.clone())),
                b.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
            ),
            (
                Floats::F16(Buf::Owned(h.clone())),
                h.iter().map(|x| x.to_f32()).collect(),
            ),
        ] {
            assert_eq!(floats.to_vec(), back);
            let mut part = vec![0f32; 2];
            floats.widen_into(1..3, &mut part);
            assert_eq!(part, back[1..3]);
        }
    }

    #[test]
    fn transposing_keeps_the_dtype() {
        let b: Vec<bf16> = (0..6).map(|i| bf16::from_f32(i as f32)).collect();
        let t = Floats::Bf16(Buf::Owned(b)).transposed(2, 3);
        assert!(matches!(t, Floats::Bf16(_)));
        assert_eq!(t.to_vec(), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    /// The bf16 fixtures' tensors stay bf16: GPT-2's `[in, out]` weights in the map
    /// itself, Llama's `[out, in]` ones as a transposed bf16 copy.
    #[test]
    fn half_precision_weights_stay_in_their_dtype() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let files = WeightFiles::open(&[dir.join("tiny-gpt2-bf16/model.safetensors")]).unwrap();
        let w = files.get("h.0.mlp.c_fc.weight", &[32, 128]).unwrap();
        assert!(matches!(w, Floats::Bf16(Buf::Mapped { .. })));
        let files = WeightFiles::open(&[dir.join("tiny-llama-bf16/model.safetensors")]).unwrap();
        let stored = files.get("layers.0.mlp.up_proj.weight", &[80, 48]).unwrap();
        let t = stored.transposed(80, 48);
        assert!(matches!(t, Floats::Bf16(Buf::Owned(_))));
        let (wide, t) = (stored.to_vec(), t.to_vec());
        // [in, out] element (1, 2) is [out, in] element (2, 1).
        assert_eq!(t[80 + 2], wide[2 * 48 + 1]);
    }

    /// Logits from a bf16 unembedding, widened in blocks of rows, agree with those from
    /// the same matrix widened whole, across a block boundary (to rounding: gemm may pick
    /// another kernel for a narrower block).
    #[test]
    fn blockwise_logits_equal_whole_ones() {
        let (rows, width, m) = (LOGIT_ROWS + 37, 8, 3);
        let w: Vec<bf16> = (0..rows * width)
            .map(|i| bf16::from_f32(((i * 7919) % 201) as f32 / 100.0 - 1.0))
            .collect();
        let x: Vec<f32> = (0..m * width).map(|i| (i as f32).sin()).collect();
        let half = RowMatrix::floats(Floats::Bf16(Buf::Owned(w.clone())), rows, width);
        let wide = RowMatrix::floats(
            Floats::F32(Buf::Owned(w.iter().map(|v| v.to_f32()).collect())),
            rows,
            width,
        );
        let (mut a, mut b) = (vec![0f32; m * rows], vec![0f32; m * rows]);
        half.logits(&x, m, &mut a);
        wide.logits(&x, m, &mut b);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "worst relative difference {worst}");
    }
}
