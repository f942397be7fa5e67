//! Reading a GGUF file: its metadata, and its tensors as quantized blocks used in place,
//! as f32, or as candle's quantized tensors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::model::error::ModelError;
use crate::model::kernels::Dense;
use crate::model::storage::Blocks;
use crate::model::weights::RowMatrix;

/// Tensor types candle dequantizes (and so this loader reads).
pub const TENSOR_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";

/// An open GGUF file: its header (metadata and tensor descriptions) and, once a tensor
/// is used in place, its memory map.
pub(super) struct Gguf {
    /// The file.
    pub(super) path: PathBuf,
    /// Metadata and tensor descriptions.
    pub(super) content: Content,
    file: std::fs::File,
    /// The file mapped read-only, once a tensor is used in place.
    map: Option<Arc<memmap2::Mmap>>,
}

impl Gguf {
    pub(super) fn open(path: &Path) -> Result<Self, ModelError> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            cause: source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let content = Content::read(&mut file).map_err(|e| ModelError::Gguf {
            path: path.to_path_buf(),
            detail: format!(
                "{e}; the file is not a complete GGUF file, or holds a tensor type candle cannot read (it reads {})",
                TENSOR_TYPES
            ),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            file,
            map: None,
        })
    }

    pub(super) fn err(&self, detail: String) -> ModelError {
        ModelError::Gguf {
            path: self.path.clone(),
            detail,
        }
    }

    pub(super) fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub(super) fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.meta(key)
            .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
            .map(|v| v as usize)
            .ok_or_else(|| self.err(format!("metadata `{key}` is missing or not an integer")))
    }

    pub(super) fn f64_or(&self, key: &str, default: f64) -> f64 {
        self.meta(key)
            .and_then(|v| v.to_f32().ok().map(f64::from).or_else(|| v.to_f64().ok()))
            .unwrap_or(default)
    }

    pub(super) fn string(&self, key: &str) -> Option<String> {
        self.meta(key).and_then(|v| v.to_string().ok()).cloned()
    }

    /// Where tensor `name` is described, checked to have `shape` (candle's order:
    /// `[out, in]`).
    fn tensor_info(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<&candle_core::quantized::gguf_file::TensorInfo, ModelError> {
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Err(self.err(format!("tensor `{name}` is missing")));
        };
        if info.shape.dims() != shape {
            return Err(self.err(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?} from the metadata",
                info.shape.dims()
            )));
        }
        Ok(info)
    }

    /// A small tensor (a norm's weight) dequantized to f32.
    pub(super) fn f32(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let blocks = self.blocks(name, shape)?;
        let mut v = vec![0f32; shape.iter().product()];
        blocks.rows_into(0..v.len() / blocks.width.max(1), &mut v);
        Ok(v)
    }

    /// A tensor read into candle's quantized tensor, for its quantized matmul.
    fn stored(&mut self, name: &str, shape: &[usize]) -> Result<QTensor, ModelError> {
        self.tensor_info(name, shape)?;
        self.content
            .tensor(&mut self.file, name, &Device::Cpu)
            .map_err(|e| self.err(format!("tensor `{name}`: {e}")))
    }

    /// A tensor's quantized blocks in place in the mapped file, checked to have `shape`
    /// (candle's order: `[out, in]`).
    fn blocks(&mut self, name: &str, shape: &[usize]) -> Result<Blocks, ModelError> {
        let info = self.tensor_info(name, shape)?;
        let dtype = info.ggml_dtype;
        let len = info.shape.elem_count() / dtype.block_size() * dtype.type_size();
        let start = (self.content.tensor_data_offset + info.offset) as usize;
        let map = match &self.map {
            Some(map) => map.clone(),
            None => {
                // SAFETY: mapped read-only; as with any map, a file truncated while mapped
                // would fault, and Hub caches never rewrite a blob in place.
                let map =
                    unsafe { memmap2::Mmap::map(&self.file) }.map_err(|cause| ModelError::Io {
                        path: self.path.clone(),
                        cause,
                    })?;
                self.map.insert(Arc::new(map)).clone()
            }
        };
        if start + len > map.len() {
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
            width: shape.last().copied().unwrap_or(0),
        })
    }

    pub(super) fn dense(
        &mut self,
        name: &str,
        n_in: usize,
        n_out: usize,
        quantized: bool,
    ) -> Result<Dense, ModelError> {
        if !quantized {
            return Ok(Dense::dequantized(
                self.blocks(name, &[n_out, n_in])?,
                n_in,
                n_out,
            ));
        }
        let q = self.stored(name, &[n_out, n_in])?;
        Dense::quantized(q, n_in, n_out).map_err(|e| self.err(format!("tensor `{name}`: {e}")))
    }

    /// A `[rows, width]` table kept quantized in place, read a row at a time.
    pub(super) fn table(
        &mut self,
        name: &str,
        rows: usize,
        width: usize,
    ) -> Result<RowMatrix, ModelError> {
        Ok(RowMatrix::quantized(
            self.blocks(name, &[rows, width])?,
            rows,
            width,
        ))
    }

    /// The predominant tensor type of the 2-D weights (`Q4_1`), as a report shows it.
    pub(super) fn quantization(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for info in self.content.tensor_infos.values() {
            if info.shape.dims().len() == 2 {
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
