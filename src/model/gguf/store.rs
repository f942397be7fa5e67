//! A GGUF file as a [`Store`]: every family's loader asks for its tensors by their
//! Hugging Face names, and gets them from the GGUF tensor llama.cpp's converter wrote
//! for each, laid out as the forward reads them.

use super::file::Gguf;
use super::names::{gguf_name, stored_row};
use crate::model::error::ModelError;
use crate::model::kernels::Dense;
use crate::model::weights::{RowMatrix, Store};

/// A GGUF file read by Hugging Face names.
pub(super) struct GgufStore {
    /// The file.
    pub(super) g: Gguf,
    /// Its `general.architecture`.
    pub(super) arch: String,
    /// Attention heads (to find GPT-NeoX's fused rows).
    pub(super) n_head: usize,
    /// Projections multiplied as stored instead of dequantized.
    pub(super) quantized: bool,
}

impl GgufStore {
    /// The GGUF name of `hf`; a name the converter does not write is reported missing.
    fn name(&self, hf: &str) -> Result<String, ModelError> {
        gguf_name(&self.arch, hf).ok_or_else(|| {
            self.g.err(format!(
                "strata has no GGUF name for the tensor `{hf}` of a `{}` model",
                self.arch
            ))
        })
    }

    /// The stored rows of `rows` of the GGUF tensor `name` of `n_out` rows, which must
    /// be consecutive (they are for every fused projection the converter writes).
    fn row_range(
        &self,
        name: &str,
        rows: &[usize],
        n_out: usize,
    ) -> Result<std::ops::Range<usize>, ModelError> {
        let mapped: Vec<usize> = rows
            .iter()
            .map(|&r| stored_row(&self.arch, name, r, n_out, self.n_head))
            .collect();
        let first = mapped.first().copied().unwrap_or(0);
        if mapped.iter().enumerate().any(|(i, &r)| r != first + i) {
            return Err(self.g.err(format!(
                "tensor `{name}`: the rows a projection needs are not stored together; the file is not laid out as llama.cpp's converter writes a `{}` model",
                self.arch
            )));
        }
        Ok(first..first + mapped.len())
    }
}

impl Store for GgufStore {
    fn contains(&self, name: &str) -> bool {
        gguf_name(&self.arch, name).is_some_and(|n| self.g.has(&n))
    }

    fn vec(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        self.g.f32(&self.name(name)?, shape)
    }

    /// The converter stores Gemma's norm weights as `1 + w` already.
    fn plus_one(&self, name: &str, dim: usize) -> Result<Vec<f32>, ModelError> {
        self.g.f32(&self.name(name)?, &[dim])
    }

    fn table(&self, name: &str, rows: usize, width: usize) -> Result<RowMatrix, ModelError> {
        self.g.table(&self.name(name)?, rows, width)
    }

    fn linear(
        &self,
        prefix: &str,
        n_in: usize,
        n_out: usize,
        rows: Option<&[usize]>,
        bias: bool,
    ) -> Result<Dense, ModelError> {
        let name = self.name(&format!("{prefix}.weight"))?;
        let range = rows.map(|r| self.row_range(&name, r, n_out)).transpose()?;
        let dense = self
            .g
            .dense(&name, n_in, n_out, range.clone(), self.quantized)?;
        if !bias {
            return Ok(dense);
        }
        let all = self
            .g
            .f32(&self.name(&format!("{prefix}.bias"))?, &[n_out])?;
        Ok(dense.with_bias(match range {
            Some(r) => all[r].to_vec(),
            None => all,
        }))
    }

    /// The converter transposes GPT-2's `Conv1D` weights to `[out, in]`, as an
    /// `nn.Linear` stores them.
    fn conv1d(&self, prefix: &str, n_in: usize, n_out: usize) -> Result<Dense, ModelError> {
        self.linear(prefix, n_in, n_out, None, true)
    }
}
