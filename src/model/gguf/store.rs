//! A GGUF file as a [`Store`]: every family's loader asks for its tensors by their
//! Hugging Face names, and gets them from the GGUF tensor llama.cpp's converter wrote
//! for each, laid out as the forward reads them.

use super::file::Gguf;
use super::names::{expert_name, gguf_name, stored_row};
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
    /// Experts per sparse block (0 for a dense model): the leading dimension of the
    /// stacked expert tensors.
    pub(super) n_experts: usize,
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

    /// Expert `e`'s `[n_out, n_in]` projection: its slab of the stacked `[experts, n_out,
    /// n_in]` tensor `name`.
    fn expert(&self, name: &str, e: usize, n_in: usize, n_out: usize) -> Result<Dense, ModelError> {
        if e >= self.n_experts {
            return Err(self.g.err(format!(
                "tensor `{name}`: expert {e} asked of a file whose metadata counts {} experts",
                self.n_experts
            )));
        }
        let shape = [self.n_experts, n_out, n_in];
        let rows = e * n_out..(e + 1) * n_out;
        self.g.dense(name, &shape, Some(rows), self.quantized)
    }

    /// The stored shape of a one-row projection: converters write Qwen2-MoE's
    /// `ffn_gate_inp_shexp` as a `[1, n_in]` matrix or, older ones, as an `[n_in]` vector.
    fn one_row_shape(&self, name: &str, n_in: usize) -> Vec<usize> {
        match self.g.shape(name) {
            Some(&[n]) if n == n_in => vec![n_in],
            _ => vec![1, n_in],
        }
    }
}

impl Store for GgufStore {
    fn contains(&self, name: &str) -> bool {
        match expert_name(name) {
            Some((stacked, _)) => self.g.has(&stacked),
            None => gguf_name(&self.arch, name).is_some_and(|n| self.g.has(&n)),
        }
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
        if let Some((stacked, e)) = expert_name(&format!("{prefix}.weight")) {
            return self.expert(&stacked, e, n_in, n_out);
        }
        let name = self.name(&format!("{prefix}.weight"))?;
        let range = rows.map(|r| self.row_range(&name, r, n_out)).transpose()?;
        let shape = match n_out {
            1 => self.one_row_shape(&name, n_in),
            _ => vec![n_out, n_in],
        };
        let dense = self.g.dense(&name, &shape, range.clone(), self.quantized)?;
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
