//! What the decoder families share, whichever file their parameters came from: the
//! widths, heads, rotary embedding, norm epsilon and attention window. The Llama and Gemma
//! families hold one [`DecoderGeometry`] each and add their own switches beside it; a GGUF
//! file's common keys are read into it in one place ([`DecoderGeometry::from_gguf`]).

use super::error::ModelError;
use super::gguf::meta::Meta;
use super::ops::RopeScaling;
use super::stack::ModelInfo;

/// The shape of a decoder and the numbers its blocks share.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderGeometry {
    /// `model_type` (or the GGUF `general.architecture`).
    pub architecture: String,
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_kv_head: usize,
    /// Floats per head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary base and frequency scaling (of the global layers, where local ones differ).
    pub rope: (f64, RopeScaling),
    /// Longest text, in tokens (`max_position_embeddings`).
    pub max_positions: usize,
    /// The attention window of the sliding layers: query `i` sees keys
    /// `i - window < j <= i`.
    pub sliding_window: Option<usize>,
    /// Which layers use [`DecoderGeometry::sliding_window`]; empty means none.
    pub sliding_layers: Vec<bool>,
    /// The unembedding is the token embedding (no `lm_head` of its own).
    pub tie_word_embeddings: bool,
}

/// What a family's GGUF files leave to the family to fix: the defaults llama.cpp's loader
/// uses for the keys the converter may omit.
pub struct GgufDefaults {
    /// Floats per head without `attention.key_length` (`None`: the width over the heads).
    pub head_dim: Option<usize>,
    /// Epsilon without `attention.layer_norm_rms_epsilon`.
    pub rms_norm_eps: f64,
    /// Rotary base without `rope.freq_base`.
    pub rope_base: f64,
}

impl DecoderGeometry {
    /// The common keys of a GGUF file's metadata; the window is the family's to set.
    pub(crate) fn from_gguf(m: &Meta, d: GgufDefaults) -> Result<Self, ModelError> {
        let hidden_size = m.size("embedding_length")?;
        let (n_head, n_kv_head) = m.heads()?;
        let head_dim = m
            .opt("attention.key_length")
            .or(d.head_dim)
            .unwrap_or(hidden_size / n_head);
        let n_layer = m.size("block_count")?;
        Ok(Self {
            architecture: m.arch.to_string(),
            vocab_size: m.vocab(hidden_size)?,
            hidden_size,
            intermediate_size: m.size("feed_forward_length")?,
            n_layer,
            n_head,
            n_kv_head,
            head_dim,
            rms_norm_eps: m.float("attention.layer_norm_rms_epsilon", d.rms_norm_eps),
            rope: (m.float("rope.freq_base", d.rope_base), m.rope_scaling()?),
            max_positions: m.size("context_length")?,
            sliding_window: None,
            sliding_layers: Vec::new(),
            tie_word_embeddings: !m.has("output.weight"),
        })
    }

    /// Labels and shape.
    pub fn info(&self) -> ModelInfo {
        ModelInfo::decoder(
            &self.architecture,
            self.n_layer,
            self.hidden_size,
            self.max_positions,
            self.vocab_size,
        )
        .with_block(self.n_head, self.head_dim, self.intermediate_size)
    }

    /// The attention window of layer `i`, if it slides.
    pub fn window(&self, i: usize) -> Option<usize> {
        self.sliding_window
            .filter(|_| self.sliding_layers.get(i).copied().unwrap_or(false))
    }
}
