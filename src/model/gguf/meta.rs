//! A GGUF file's metadata as a family reads its hyper-parameters from it: the keys of its
//! architecture (`{arch}.block_count`, ...), checked, and the tensors whose presence or
//! shape llama.cpp's loader decides by.

use super::file::Gguf;
use crate::model::error::ModelError;
use crate::model::ops::RopeScaling;

/// The metadata of one architecture's keys (`{arch}.{key}`).
pub(crate) struct Meta<'a> {
    /// The file.
    pub(crate) g: &'a Gguf,
    /// Its `general.architecture`.
    pub(crate) arch: &'a str,
}

impl Meta<'_> {
    pub(crate) fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }
    /// A required positive integer.
    pub(crate) fn size(&self, k: &str) -> Result<usize, ModelError> {
        let key = self.key(k);
        match self.g.usize(&key)? {
            0 => Err(self.g.err(format!(
                "metadata `{key}` is 0; a model needs a positive value: the file is damaged"
            ))),
            n => Ok(n),
        }
    }
    pub(crate) fn opt(&self, k: &str) -> Option<usize> {
        self.g.usize(&self.key(k)).ok()
    }
    pub(crate) fn float(&self, k: &str, default: f64) -> f64 {
        self.g.f64(&self.key(k)).unwrap_or(default)
    }
    pub(crate) fn has(&self, tensor: &str) -> bool {
        self.g.has(tensor)
    }
    /// Rows of the token embedding: the vocabulary the file holds (Gemma 3's converter
    /// drops the rows past its tokenizer).
    pub(crate) fn vocab(&self, width: usize) -> Result<usize, ModelError> {
        match self.g.shape("token_embd.weight") {
            Some([rows, w]) if *w == width => Ok(*rows),
            Some(other) => Err(self.g.err(format!(
                "tensor `token_embd.weight` has shape {other:?}, expected [vocab, {width}] for a `{}` model of this metadata: the file is damaged or from another converter",
                self.arch
            ))),
            None => Err(self.g.err(format!(
                "tensor `token_embd.weight` is missing; every `{}` file from llama.cpp's converter has it",
                self.arch
            ))),
        }
    }
    /// Query heads and key/value heads, which must divide them.
    pub(crate) fn heads(&self) -> Result<(usize, usize), ModelError> {
        let n_head = self.size("attention.head_count")?;
        let n_kv = self.opt("attention.head_count_kv").unwrap_or(n_head);
        if n_kv == 0 || !n_head.is_multiple_of(n_kv) {
            return Err(self.g.err(format!(
                "metadata `{}` = {n_kv} does not divide `{}` = {n_head}: the file is damaged",
                self.key("attention.head_count_kv"),
                self.key("attention.head_count")
            )));
        }
        Ok((n_head, n_kv))
    }
    /// `rope.scaling.type`: none or linear; others (yarn, longrope) are refused.
    pub(crate) fn rope_scaling(&self) -> Result<RopeScaling, ModelError> {
        let key = self.key("rope.scaling.type");
        match self.g.string(&key).as_deref() {
            None | Some("none") => Ok(RopeScaling::Default),
            Some("linear") => Ok(RopeScaling::Linear {
                factor: self.float("rope.scaling.factor", 1.0),
            }),
            Some(other) => Err(self.g.err(format!(
                "metadata `{key}` = `{other}`: strata reads unscaled and linear rotary embeddings from GGUF (and Llama 3's, as `rope_freqs`)"
            ))),
        }
    }
}
