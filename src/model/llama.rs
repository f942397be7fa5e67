//! Llama-family decoders (Llama, SmolLM2, Mistral, Qwen2, Qwen3, Phi-3): RMSNorm, rotary position
//! embeddings, grouped-query attention (with a sliding window on the layers that have one)
//! and a SwiGLU MLP, returning every hidden state with
//! `transformers`' semantics (index 0 = token embeddings, index `L` = the final norm applied
//! to the last block's output).
//!
//! Weights come from a Hugging Face folder (`config.json` + safetensors, `nn.Linear` layout
//! `[out, in]`) or from a GGUF file ([`super::gguf`]), which fills the same [`LlamaWeights`].

use std::path::Path;

use rayon::prelude::*;
use serde::Deserialize;

use super::capture::Site;
use super::error::ModelError;
use super::kernels::{self, AttentionShape, Dense, HeadView};
pub use super::ops::RopeScaling;
use super::ops::{
    check_window, parse_rope_scaling, rms_norm, sliding_layer_types, BadField, Rope, RopeTable,
};
use super::stack::{Batch, ModelInfo, Stack, Tap};
use super::weights::{RowMatrix, Scope, Store, WeightFiles};

/// `model_type`s this file runs.
pub const MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2", "qwen3", "phi3"];

/// The hyper-parameters that change the math, whatever file they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaParams {
    /// `model_type` (or the GGUF `general.architecture`).
    pub architecture: String,
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_kv_head: usize,
    /// Floats per head (`hidden_size / n_head` unless the config says otherwise).
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary base.
    pub rope_theta: f64,
    /// Rotary frequency scaling.
    pub rope_scaling: RopeScaling,
    /// Longest text, in tokens (`max_position_embeddings`).
    pub max_positions: usize,
    /// The attention window of the sliding layers (Mistral's `sliding_window`; Qwen's when
    /// `use_sliding_window`): query `i` sees keys `i - window < j <= i`.
    pub sliding_window: Option<usize>,
    /// Which layers use [`LlamaParams::sliding_window`] (`layer_types`, or derived as
    /// transformers derives it); empty means none.
    pub sliding_layers: Vec<bool>,
    /// q and k are RMS-normalized per head before the rotation (Qwen3's `q_norm`, `k_norm`).
    pub qk_norm: bool,
    /// The leading floats of each head that are rotated (`partial_rotary_factor`, Phi-3's
    /// variants); `head_dim` elsewhere.
    pub rotary_dim: usize,
    /// q, k and v come from one `qkv_proj`, gate and up from one `gate_up_proj` (Phi-3).
    pub fused_projections: bool,
    /// q, k and v projections carry biases (Qwen2, or `attention_bias`).
    pub qkv_bias: bool,
    /// The output projection carries a bias (`attention_bias` in Llama's config).
    pub o_bias: bool,
    /// The MLP projections carry biases (`mlp_bias`).
    pub mlp_bias: bool,
    /// Rotary pairs are adjacent (`2i`, `2i+1`) instead of `i`, `i + d/2`: GGUF files store
    /// q and k rows permuted for llama.cpp's kernel. Rotating the stored rows that way
    /// equals un-permuting them and using transformers' `rotate_half`; the scores (and so
    /// every hidden state) are the same, and quantized rows need no reshuffling.
    pub rope_interleaved: bool,
    /// The unembedding is `embed_tokens` (`tie_word_embeddings`; GGUF files without an
    /// `output.weight`).
    pub tie_word_embeddings: bool,
    /// Per-frequency divisors of the rotary inverse frequencies, `rotary_dim / 2` of them:
    /// how llama.cpp's converter stores Llama 3's `rope_scaling` (the `rope_freqs` tensor)
    /// instead of its parameters.
    pub rope_factors: Option<Vec<f32>>,
}

/// The fields of a Llama/Mistral/Qwen2 `config.json` strata reads.
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: String,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    layer_types: Option<Vec<String>>,
    partial_rotary_factor: Option<f64>,
    tie_word_embeddings: Option<bool>,
}

/// Makes the error for a config field, its value and what would work.
type Bad<'a> = dyn Fn(&str, String, String) -> ModelError + 'a;
/// A config size that must be a positive integer.
type Need<'a> = dyn Fn(Option<usize>, &str) -> Result<usize, ModelError> + 'a;

/// Query heads, key/value heads (dividing them) and the head width (Qwen3's defaults to
/// 128 whatever the width, as in transformers).
fn heads(
    raw: &RawConfig,
    hidden_size: usize,
    bad: &Bad,
    need: &Need,
) -> Result<(usize, usize, usize), ModelError> {
    let n_head = need(raw.num_attention_heads, "num_attention_heads")?;
    let n_kv_head = raw.num_key_value_heads.unwrap_or(n_head);
    if n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) {
        return Err(bad(
            "num_key_value_heads",
            n_kv_head.to_string(),
            format!("it must divide num_attention_heads = {n_head}"),
        ));
    }
    let head_dim = match (raw.model_type.as_str(), raw.head_dim) {
        ("qwen3", None) => 128,
        (_, d) => d.unwrap_or(hidden_size / n_head),
    };
    Ok((n_head, n_kv_head, head_dim))
}

/// The rotary embedding: base, scaling, and the rotated fraction of each head (Phi-3's
/// `partial_rotary_factor`, rotating `int(head_dim * factor)` dimensions). transformers 5
/// writes `rope_parameters`; older files `rope_theta` + `rope_scaling`.
fn rope(raw: &RawConfig, bad: &Bad) -> Result<(f64, RopeScaling, f64), ModelError> {
    let params = raw.rope_parameters.as_ref();
    let number = |key: &str| params.and_then(|p| p.get(key)).and_then(|v| v.as_f64());
    let rope = params.or(raw.rope_scaling.as_ref());
    let theta = number("rope_theta").or(raw.rope_theta).unwrap_or(10_000.0);
    let scaling = parse_rope_scaling(rope).map_err(|fix| {
        bad(
            "rope_scaling",
            format!("{}", rope.cloned().unwrap_or_default()),
            fix,
        )
    })?;
    let factor = number("partial_rotary_factor")
        .or(raw.partial_rotary_factor)
        .unwrap_or(1.0);
    if !(0.0..=1.0).contains(&factor) {
        return Err(bad(
            "partial_rotary_factor",
            factor.to_string(),
            "the rotated fraction of a head is between 0 and 1".into(),
        ));
    }
    Ok((theta, scaling, factor))
}

impl LlamaParams {
    /// Reads and checks a Hugging Face `config.json`.
    pub fn from_config(path: &Path) -> Result<Self, ModelError> {
        let bad = super::error::unsupported(path);
        let raw: RawConfig = super::error::read_config(
            path,
            "a Llama-family config.json from the Hub gives its sizes (hidden_size, num_hidden_layers, ...) as integers and rope_theta / rms_norm_eps as numbers",
        )?;
        let need = |v: Option<usize>, field: &str| {
            v.filter(|&n| n > 0).ok_or_else(|| {
                bad(
                    field,
                    format!("{v:?}"),
                    "a Llama-family config.json must give it as a positive integer".into(),
                )
            })
        };
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let (n_head, n_kv_head, head_dim) = heads(&raw, hidden_size, &bad, &need)?;
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                return Err(bad(
                    "hidden_act",
                    format!("`{act}`"),
                    "Llama-family models here use `silu` (SwiGLU)".into(),
                ));
            }
        }
        let (rope_theta, rope_scaling, rotary_factor) = rope(&raw, &bad)?;
        let n_layer = need(raw.num_hidden_layers, "num_hidden_layers")?;
        let (sliding_window, sliding_layers) =
            sliding(&raw, n_layer).map_err(|(field, value, fix)| bad(field, value, fix))?;
        let qwen2 = raw.model_type == "qwen2";
        let qwen3 = raw.model_type == "qwen3";
        Ok(Self {
            architecture: raw.model_type.clone(),
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            n_layer,
            n_head,
            n_kv_head,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_positions: need(raw.max_position_embeddings, "max_position_embeddings")?,
            sliding_window,
            sliding_layers,
            qk_norm: qwen3,
            rotary_dim: (head_dim as f64 * rotary_factor) as usize,
            fused_projections: raw.model_type == "phi3",
            qkv_bias: qwen2 || raw.attention_bias.unwrap_or(false),
            o_bias: !qwen2 && raw.attention_bias.unwrap_or(false),
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            rope_interleaved: false,
            // transformers' default for these configs.
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            rope_factors: None,
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
        .with_block(self.n_head, self.intermediate_size)
    }

    /// The attention window of layer `i`, if it slides.
    pub fn window(&self, i: usize) -> Option<usize> {
        self.sliding_window
            .filter(|_| self.sliding_layers.get(i).copied().unwrap_or(false))
    }

    /// The rotary embeddings these parameters describe.
    fn rope(&self) -> Rope {
        let rope = Rope::new(
            self.head_dim,
            self.rotary_dim,
            self.rope_theta,
            self.rope_scaling,
            self.rope_interleaved,
        );
        match &self.rope_factors {
            Some(f) => rope.divided_by(f),
            None => rope,
        }
    }
}

/// Which layers attend through a sliding window, and its width, as transformers decides:
/// Mistral windows every layer when `sliding_window` is set; Qwen2 and Qwen3 only with
/// `use_sliding_window`, on the layers `layer_types` names (by default those from
/// `max_window_layers` on). An error is (field, value, fix).
fn sliding(raw: &RawConfig, n_layer: usize) -> Result<(Option<usize>, Vec<bool>), BadField> {
    let window = match raw.model_type.as_str() {
        "mistral" | "phi3" => raw.sliding_window,
        "qwen2" | "qwen3" if raw.use_sliding_window.unwrap_or(false) => raw.sliding_window,
        _ => None,
    };
    let Some(w) = check_window(window)? else {
        return Ok((None, Vec::new()));
    };
    let layers = match (&raw.layer_types, raw.model_type.as_str()) {
        // transformers' Mistral ignores `layer_types` (it warns) and windows every layer.
        (Some(types), t) if t != "mistral" && t != "phi3" => sliding_layer_types(types, n_layer)?,
        (_, "mistral" | "phi3") => vec![true; n_layer],
        _ => {
            let from = raw.max_window_layers.unwrap_or(28);
            (0..n_layer).map(|i| i >= from).collect()
        }
    };
    Ok((Some(w), layers))
}

/// One block's weights.
pub struct LayerWeights {
    /// `input_layernorm` (RMSNorm weight).
    pub attn_norm: Vec<f32>,
    /// `q_proj`, rows in transformers' order (GGUF files are un-permuted on load).
    pub q: Dense,
    /// `k_proj`.
    pub k: Dense,
    /// `v_proj`.
    pub v: Dense,
    /// Qwen3's per-head RMSNorm weights of q and k (`q_norm`, `k_norm`), `[head_dim]` each.
    pub qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    /// The layer attends through [`LlamaParams::sliding_window`].
    pub window: Option<usize>,
    /// `o_proj`.
    pub o: Dense,
    /// `post_attention_layernorm`.
    pub mlp_norm: Vec<f32>,
    /// `gate_proj`.
    pub gate: Dense,
    /// `up_proj`.
    pub up: Dense,
    /// `down_proj`.
    pub down: Dense,
}

/// Every weight of the model.
pub struct LlamaWeights {
    /// `embed_tokens`, `[vocab, hidden]`.
    pub(crate) embed: RowMatrix,
    /// The blocks.
    pub layers: Vec<LayerWeights>,
    /// The final RMSNorm.
    pub norm: Vec<f32>,
    /// `lm_head`, `[vocab, hidden]`; `None` when it is tied to `embed` or absent (see
    /// `LlamaParams::tie_word_embeddings`).
    pub(crate) lm_head: Option<RowMatrix>,
}

/// A Llama-family decoder.
pub struct Llama {
    p: LlamaParams,
    w: LlamaWeights,
    rope: Rope,
    info: ModelInfo,
}

impl Llama {
    /// Assembles a model; `info` may carry extra facts (a GGUF quantization type).
    pub fn new(p: LlamaParams, w: LlamaWeights, info: ModelInfo) -> Self {
        let rope = p.rope();
        Self { p, w, rope, info }
    }

    fn rms_norm(&self, x: &[f32], w: &[f32]) -> Vec<f32> {
        rms_norm(x, w, self.p.rms_norm_eps)
    }

    /// `x`: `[rows, width]` -> the block's output, in a new buffer (`x` is kept as a hidden
    /// state).
    fn layer(
        &self,
        l: &LayerWeights,
        x: &[f32],
        batch: &Batch,
        table: &RopeTable,
        tap: &mut Tap,
    ) -> Vec<f32> {
        let p = &self.p;
        let h = self.rms_norm(x, &l.attn_norm);
        let mut q = l.q.forward(&h);
        let mut k = l.k.forward(&h);
        let v = l.v.forward(&h);
        if let Some((qn, kn)) = &l.qk_norm {
            // Each head's `head_dim` values are one RMSNorm row.
            q = self.rms_norm(&q, qn);
            k = self.rms_norm(&k, kn);
        }
        self.rope.apply(&mut q, p.n_head, &batch.positions, table);
        self.rope
            .apply(&mut k, p.n_kv_head, &batch.positions, table);
        let shape = AttentionShape {
            n_head: p.n_head,
            n_kv_head: p.n_kv_head,
            head_dim: p.head_dim,
            scale: (1.0 / (p.head_dim as f64).sqrt()) as f32,
            causal: true,
            window: l.window,
            softcap: None,
        };
        let att = tap.attention(
            (
                HeadView {
                    data: &q,
                    row_stride: p.n_head * p.head_dim,
                    offset: 0,
                },
                HeadView {
                    data: &k,
                    row_stride: p.n_kv_head * p.head_dim,
                    offset: 0,
                },
                HeadView {
                    data: &v,
                    row_stride: p.n_kv_head * p.head_dim,
                    offset: 0,
                },
            ),
            shape,
            batch.spans(),
        );
        let x = tap.residual(Site::AttnOut, &l.o, &att, x);
        let h = self.rms_norm(&x, &l.mlp_norm);
        let mut gate = l.gate.forward(&h);
        let up = l.up.forward(&h);
        // SwiGLU: silu(gate) * up
        gate.par_chunks_mut(1 << 14)
            .zip(up.par_chunks(1 << 14))
            .for_each(|(g, u)| kernels::silu_mul(g, u));
        tap.keep(Site::MlpAct, &gate);
        tap.residual(Site::MlpOut, &l.down, &gate, &x)
    }
}

impl Stack for Llama {
    type Shared = RopeTable;

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn readout(&self) -> Option<&dyn super::stack::Readout> {
        self.info
            .lm_head
            .then_some(self as &dyn super::stack::Readout)
    }

    fn embed(&self, ids: &[usize], batch: &Batch) -> (Vec<f32>, RopeTable) {
        (self.w.embed.gather(ids), self.rope.table(batch.t))
    }

    fn block(
        &self,
        i: usize,
        x: &[f32],
        batch: &Batch,
        table: &RopeTable,
        tap: &mut Tap,
    ) -> Result<Vec<f32>, ModelError> {
        Ok(self.layer(&self.w.layers[i], x, batch, table, tap))
    }

    fn last(&self, x: &[f32]) -> Vec<f32> {
        self.rms_norm(x, &self.w.norm)
    }
}

impl super::stack::Readout for Llama {
    fn vocab(&self) -> usize {
        self.p.vocab_size
    }

    fn logits(&self, rows: &[f32], out: &mut [f32]) {
        let c = self.p.hidden_size;
        let normed = self.rms_norm(rows, &self.w.norm);
        let w = self.w.lm_head.as_ref().unwrap_or(&self.w.embed);
        w.logits(&normed, rows.len() / c, out);
    }
}

/// Loads a Llama-family model from a checked config and safetensors files.
pub fn load(p: &LlamaParams, weights: &[std::path::PathBuf]) -> Result<Llama, ModelError> {
    from_store(p, &WeightFiles::open(weights)?)
}

/// Loads a Llama-family model from the tensors of `store`, by their Hugging Face names.
pub(crate) fn from_store(p: &LlamaParams, store: &dyn Store) -> Result<Llama, ModelError> {
    let root = Scope::root(store);
    let (c, v) = (p.hidden_size, p.vocab_size);
    let lm_head = root.untied_head(p.tie_word_embeddings, v, c)?;
    let w = root.nested("model", "embed_tokens.weight");
    let embed = w.pp("embed_tokens").table(v, c)?;
    let layers = (0..p.n_layer)
        .map(|i| layer(p, i, &w.pp(format!("layers.{i}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let w = LlamaWeights {
        embed,
        layers,
        norm: w.vec("norm.weight", &[c])?,
        lm_head,
    };
    // An untied checkpoint saved without its head (`LlamaModel`) has no logits.
    let info = ModelInfo {
        lm_head: p.tie_word_embeddings || w.lm_head.is_some(),
        ..p.info()
    };
    Ok(Llama::new(p.clone(), w, info))
}

/// One block's weights under `l` (`model.layers.{i}`).
fn layer(p: &LlamaParams, i: usize, l: &Scope) -> Result<LayerWeights, ModelError> {
    let (c, d, ff) = (p.hidden_size, p.head_dim, p.intermediate_size);
    let (a, m) = (l.pp("self_attn"), l.pp("mlp"));
    let qk_norm = if p.qk_norm {
        Some((a.vec("q_norm.weight", &[d])?, a.vec("k_norm.weight", &[d])?))
    } else {
        None
    };
    let (q, k, v, gate, up) = if p.fused_projections {
        // Phi-3: `qkv_proj` rows are q, then k, then v; `gate_up_proj` rows gate, then up.
        let (nq, nkv) = (p.n_head * d, p.n_kv_head * d);
        let qkv = a.pp("qkv_proj");
        let rows = |from: usize, n: usize| (from..from + n).collect::<Vec<_>>();
        let fused = nq + 2 * nkv;
        let gate_up = m.pp("gate_up_proj");
        (
            qkv.linear_rows(c, fused, &rows(0, nq), p.qkv_bias)?,
            qkv.linear_rows(c, fused, &rows(nq, nkv), p.qkv_bias)?,
            qkv.linear_rows(c, fused, &rows(nq + nkv, nkv), p.qkv_bias)?,
            gate_up.linear_rows(c, 2 * ff, &rows(0, ff), p.mlp_bias)?,
            gate_up.linear_rows(c, 2 * ff, &rows(ff, ff), p.mlp_bias)?,
        )
    } else {
        (
            a.pp("q_proj").linear(c, p.n_head * d, p.qkv_bias)?,
            a.pp("k_proj").linear(c, p.n_kv_head * d, p.qkv_bias)?,
            a.pp("v_proj").linear(c, p.n_kv_head * d, p.qkv_bias)?,
            m.pp("gate_proj").linear(c, ff, p.mlp_bias)?,
            m.pp("up_proj").linear(c, ff, p.mlp_bias)?,
        )
    };
    Ok(LayerWeights {
        attn_norm: l.vec("input_layernorm.weight", &[c])?,
        q,
        k,
        v,
        qk_norm,
        window: p.window(i),
        o: a.pp("o_proj").linear(p.n_head * d, c, p.o_bias)?,
        mlp_norm: l.vec("post_attention_layernorm.weight", &[c])?,
        gate,
        up,
        down: m.pp("down_proj").linear(ff, c, p.mlp_bias)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::ROPE_TYPES;

    #[test]
    fn llama3_rope_scaling_keeps_short_and_divides_long_wavelengths() {
        let mut p = LlamaParams {
            architecture: "llama".into(),
            vocab_size: 10,
            hidden_size: 64,
            intermediate_size: 8,
            n_layer: 1,
            n_head: 1,
            n_kv_head: 1,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: RopeScaling::Default,
            max_positions: 8,
            sliding_window: None,
            sliding_layers: Vec::new(),
            qk_norm: false,
            rotary_dim: 64,
            fused_projections: false,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            rope_interleaved: false,
            tie_word_embeddings: false,
            rope_factors: None,
        };
        let plain = p.rope().inv_freq().to_vec();
        p.rope_scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let scaled = p.rope().inv_freq().to_vec();
        assert_eq!(scaled[0], plain[0], "the shortest wavelength is kept");
        let last = plain.len() - 1;
        assert!((scaled[last] * 8.0 - plain[last]).abs() < 1e-12);
    }

    #[test]
    fn unknown_rope_types_name_the_supported_ones() {
        let v = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
        let e = parse_rope_scaling(Some(&v)).unwrap_err();
        assert!(e.contains("yarn") && e.contains(ROPE_TYPES), "{e}");
    }
}
