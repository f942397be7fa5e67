//! Reading a GGUF file: its metadata, and its tensors as quantized blocks used in place,
//! as f32, or as candle's quantized tensors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::Device;

use super::header::{tensor_types, GGML_TYPES};
use crate::model::error::ModelError;
use crate::model::kernels::Dense;
use crate::model::storage::Blocks;
use crate::model::weights::RowMatrix;

/// What a header candle could not read means: a tensor of a type strata does not read
/// (named with its tensor, from a scan of the header), or a file that is not whole.
fn header_error(path: &Path, cause: &str) -> String {
    if let Ok(Some((tensor, ty))) = super::header::first_unread_type(path) {
        let name = GGML_TYPES
            .iter()
            .find(|t| t.0 == ty)
            .map(|t| t.1.to_string())
            .unwrap_or_else(|| format!("type number {ty}"));
        return format!(
            "tensor `{tensor}` is stored as {name}, a type strata does not read (it reads {}); use a file quantized to one of them",
            tensor_types()
        );
    }
    format!("{cause}; the file is not a complete GGUF file: download it again")
}

/// An open GGUF file: its header (metadata and tensor descriptions) and, once a tensor
/// is used, its memory map.
pub(crate) struct Gguf {
    /// The file.
    pub(crate) path: PathBuf,
    /// Metadata and tensor descriptions.
    pub(crate) content: Content,
    file: std::fs::File,
    /// The file mapped read-only, once a tensor is used.
    map: OnceLock<Arc<memmap2::Mmap>>,
}

impl Gguf {
    pub(crate) fn open(path: &Path) -> Result<Self, ModelError> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            cause: source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // Buffered: candle reads the metadata a field at a time, and a 262,144-piece
        // vocabulary (Gemma 3's) was then a million read() calls, a second of loading.
        let mut reader = std::io::BufReader::with_capacity(1 << 16, &file);
        let content = Content::read(&mut reader).map_err(|e| ModelError::Gguf {
            path: path.to_path_buf(),
            detail: header_error(path, &e.to_string()),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            file,
            map: OnceLock::new(),
        })
    }

    pub(crate) fn err(&self, detail: String) -> ModelError {
        ModelError::Gguf {
            path: self.path.clone(),
            detail,
        }
    }

    pub(crate) fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.meta(key)
            .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
            .map(|v| v as usize)
            .ok_or_else(|| self.err(format!("metadata `{key}` is missing or not an integer; the file was not written by llama.cpp's converter, or is damaged")))
    }

    /// An optional number (a float or an integer key).
    pub(crate) fn f64(&self, key: &str) -> Option<f64> {
        let v = self.meta(key)?;
        v.to_f32()
            .ok()
            .map(f64::from)
            .or_else(|| v.to_f64().ok())
            .or_else(|| v.to_u32().ok().map(f64::from))
            .or_else(|| v.to_u64().ok().map(|x| x as f64))
    }

    pub(crate) fn string(&self, key: &str) -> Option<String> {
        self.meta(key).and_then(|v| v.to_string().ok()).cloned()
    }

    /// Whether the file holds tensor `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The shape of tensor `name` in candle's order (`[out, in]`), if present.
    pub(crate) fn shape(&self, name: &str) -> Option<&[usize]> {
        self.content.tensor_infos.get(name).map(|i| i.shape.dims())
    }

    /// Where tensor `name` is described, checked to have `shape` (candle's order:
    /// `[out, in]`).
    fn tensor_info(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<&candle_core::quantized::gguf_file::TensorInfo, ModelError> {
        let arch = self.string("general.architecture").unwrap_or_default();
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Err(self.err(format!(
                "tensor `{name}` is missing; a `{arch}` file from llama.cpp's converter has it: the file is damaged or from another converter"
            )));
        };
        if info.shape.dims() != shape {
            return Err(self.err(format!(
                "tensor `{name}` has shape {:?}, but a `{arch}` model of this file's metadata has {shape:?}: the file is damaged or from another converter",
                info.shape.dims()
            )));
        }
        Ok(info)
    }

    /// The file's map, made on first use.
    fn map(&self) -> Result<Arc<memmap2::Mmap>, ModelError> {
        if let Some(map) = self.map.get() {
            return Ok(map.clone());
        }
        // SAFETY: mapped read-only; as with any map, a file truncated while mapped would
        // fault, and Hub caches never rewrite a blob in place.
        let map = unsafe { memmap2::Mmap::map(&self.file) }.map_err(|cause| ModelError::Io {
            path: self.path.clone(),
            cause,
        })?;
        Ok(self.map.get_or_init(|| Arc::new(map)).clone())
    }

    /// A small tensor (a norm's weight) dequantized to f32.
    pub(crate) fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let blocks = self.blocks(name, shape, None)?;
        let mut v = vec![0f32; shape.iter().product()];
        blocks.rows_into(0..v.len() / blocks.width.max(1), &mut v);
        Ok(v)
    }

    /// Rows `rows` (all when `None`) of tensor `name`, checked to have `shape` (candle's
    /// order: `[out, in]`), as quantized blocks in place in the mapped file.
    pub(crate) fn blocks(
        &self,
        name: &str,
        shape: &[usize],
        rows: Option<std::ops::Range<usize>>,
    ) -> Result<Blocks, ModelError> {
        let info = self.tensor_info(name, shape)?;
        let dtype = info.ggml_dtype;
        let width = shape.last().copied().unwrap_or(0);
        let all_rows = info.shape.elem_count() / width.max(1);
        let row_bytes = width / dtype.block_size() * dtype.type_size();
        if width % dtype.block_size() != 0 {
            return Err(self.err(format!(
                "tensor `{name}` has rows of {width}, not a whole number of {} blocks of {}: the file is damaged",
                type_name(dtype),
                dtype.block_size()
            )));
        }
        let rows = rows.unwrap_or(0..all_rows);
        let start =
            (self.content.tensor_data_offset + info.offset) as usize + rows.start * row_bytes;
        let len = rows.len() * row_bytes;
        let map = self.map()?;
        let end = (self.content.tensor_data_offset + info.offset) as usize + all_rows * row_bytes;
        if end > map.len() {
            return Err(self.err(format!(
                "tensor `{name}` runs past the end of the file ({} bytes): the file is truncated; download it again",
                map.len()
            )));
        }
        // Every block type holds f16 or f32 fields: 4-byte alignment suits them all, and
        // GGUF writers align tensor data to 32 bytes.
        if !(map.as_ptr() as usize + start).is_multiple_of(4) {
            return Err(self.err(format!(
                "tensor `{name}` starts at byte {start}, not aligned for its blocks: the file is not a valid GGUF"
            )));
        }
        Ok(Blocks {
            map,
            start,
            len,
            dtype,
            width,
        })
    }

    /// Rows `rows` (all when `None`) of the weight `name`, checked to have `shape` (`[n_out,
    /// n_in]`, or `[experts, rows, n_in]` for stacked experts, whose rows then count through
    /// the experts) as a projection: dequantized per call (transformers' f32 numbers), or
    /// multiplied as stored when `quantized`.
    pub(crate) fn dense(
        &self,
        name: &str,
        shape: &[usize],
        rows: Option<std::ops::Range<usize>>,
        quantized: bool,
    ) -> Result<Dense, ModelError> {
        let n_in = shape.last().copied().unwrap_or(0);
        let all: usize = shape.iter().product::<usize>() / n_in.max(1);
        let n = rows.as_ref().map_or(all, |r| r.len());
        let blocks = self.blocks(name, shape, rows)?;
        if !quantized {
            return Ok(Dense::dequantized(blocks, n_in, n));
        }
        let blocks = match Dense::batched(blocks, n_in, n) {
            Ok(dense) => return Ok(dense),
            Err(blocks) => blocks,
        };
        let bytes = &blocks.map[blocks.start..blocks.start + blocks.len];
        let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
            blocks.dtype,
            bytes,
            vec![n, n_in],
            &Device::Cpu,
        )
        .map_err(|e| self.err(format!("tensor `{name}`: {e}")))?;
        Dense::quantized(q, n_in, n).map_err(|e| self.err(format!("tensor `{name}`: {e}")))
    }

    /// A `[rows, width]` table kept quantized in place, read a row at a time.
    pub(crate) fn table(
        &self,
        name: &str,
        rows: usize,
        width: usize,
    ) -> Result<RowMatrix, ModelError> {
        Ok(RowMatrix::quantized(
            self.blocks(name, &[rows, width], None)?,
            rows,
            width,
        ))
    }

    /// The tensor types present, llama.cpp's spelling, each once, sorted.
    pub(crate) fn types(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .content
            .tensor_infos
            .values()
            .map(|i| type_name(i.ggml_dtype))
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// The quantized types of the weight matrices that have no batched kernel (Q2_K,
    /// Q3_K, i-quants): quantized mode multiplies them one activation row at a time.
    pub(crate) fn unbatched_types(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .content
            .tensor_infos
            .values()
            .filter(|i| i.shape.dims().len() >= 2)
            .map(|i| i.ggml_dtype)
            .filter(|&t| {
                !matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
                    && crate::model::quant::Format::of(t).is_none()
            })
            .map(type_name)
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// The predominant tensor type of the weight matrices (`Q4_1`; stacked experts count
    /// as matrices), as a report shows it.
    pub(crate) fn quantization(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for info in self.content.tensor_infos.values() {
            if info.shape.dims().len() >= 2 {
                *counts.entry(type_name(info.ggml_dtype)).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(name.clone())))
            .map(|(name, _)| name)
            .unwrap_or_else(|| "F32".into())
    }
}

/// llama.cpp's spelling of a tensor type.
fn type_name(t: GgmlDType) -> String {
    match t {
        GgmlDType::Q2K => "Q2_K".into(),
        GgmlDType::Q3K => "Q3_K".into(),
        GgmlDType::Q4K => "Q4_K".into(),
        GgmlDType::Q5K => "Q5_K".into(),
        GgmlDType::Q6K => "Q6_K".into(),
        GgmlDType::Q8K => "Q8_K".into(),
        other => format!("{other:?}"),
    }
}
