//! Hyper-parameters from a GGUF file's metadata (`{arch}.block_count`, ...), for each
//! architecture llama.cpp names, into the parameters the safetensors path reads from a
//! `config.json`: one forward per family, whatever file it came from.
//!
//! What the converter leaves out, llama.cpp's loader fixes per architecture (Gemma's
//! local-layer pattern and local rotary base, its attention scale): those rules are
//! followed here as llama.cpp applies them.

use super::file::Gguf;
use crate::model::error::ModelError;
use crate::model::gemma::GemmaParams;
use crate::model::gpt2::Gpt2Config;
use crate::model::gpt_neox::GptNeoxConfig;
use crate::model::llama::{LlamaParams, QkNorm};
use crate::model::moe::MoeParams;
use crate::model::ops::{Activation, RopeScaling};
use crate::model::stack::ModelInfo;

/// `general.architecture` values strata reads.
pub const ARCHITECTURES: &[&str] = &[
    "llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3", "gpt2", "gptneox", "qwen2moe",
    "qwen3moe", "olmoe", "olmo2",
];

/// A file's model, as the parameters of the family that runs it.
pub(super) enum Params {
    /// `llama` (and Mistral and Mixtral, which the converter writes as `llama`), `qwen2`,
    /// `qwen3`, `phi3`, `qwen2moe`, `qwen3moe`, `olmoe`, `olmo2`.
    Llama(LlamaParams),
    /// `gemma2`, `gemma3`.
    Gemma(GemmaParams),
    /// `gpt2`.
    Gpt2(Gpt2Config),
    /// `gptneox`.
    GptNeox(GptNeoxConfig),
}

impl Params {
    /// Shape and labels.
    pub(super) fn info(&self) -> ModelInfo {
        match self {
            Self::Llama(p) => p.info(),
            Self::Gemma(p) => p.info(),
            Self::Gpt2(c) => crate::model::gpt2::info(c),
            Self::GptNeox(c) => c.info(),
        }
    }

    /// Experts per sparse block; 0 for a dense model.
    pub(super) fn n_experts(&self) -> usize {
        match self {
            Self::Llama(LlamaParams { moe: Some(m), .. }) => m.n_experts,
            _ => 0,
        }
    }

    /// Attention heads.
    pub(super) fn n_head(&self) -> usize {
        match self {
            Self::Llama(p) => p.n_head,
            Self::Gemma(p) => p.n_head,
            Self::Gpt2(c) => c.n_head,
            Self::GptNeox(c) => c.num_attention_heads,
        }
    }
}

/// The file's `general.architecture`, checked to be one strata reads.
fn architecture(g: &Gguf) -> Result<String, ModelError> {
    let arch = g.string("general.architecture").ok_or_else(|| {
        g.err("metadata `general.architecture` is missing; every GGUF model file names its architecture there: the file is damaged or not a model".into())
    })?;
    if !ARCHITECTURES.contains(&arch.as_str()) {
        return Err(ModelError::UnsupportedArchitecture {
            path: g.path.clone(),
            model_type: arch,
            supported: format!("GGUF: {}", ARCHITECTURES.join(", ")),
        });
    }
    Ok(arch)
}

/// Reads the file's architecture and hyper-parameters (no tensors).
pub(super) fn read(g: &Gguf) -> Result<(String, Params), ModelError> {
    let arch = architecture(g)?;
    let m = Meta { g, arch: &arch };
    let p = match arch.as_str() {
        "gemma2" | "gemma3" => Params::Gemma(gemma(&m)?),
        "gpt2" => Params::Gpt2(gpt2(&m)?),
        "gptneox" => Params::GptNeox(gpt_neox(&m)?),
        _ => Params::Llama(llama(&m)?),
    };
    Ok((arch, p))
}

/// The metadata of one architecture's keys (`{arch}.{key}`).
struct Meta<'a> {
    g: &'a Gguf,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }
    /// A required positive integer.
    fn size(&self, k: &str) -> Result<usize, ModelError> {
        let key = self.key(k);
        match self.g.usize(&key)? {
            0 => Err(self.g.err(format!(
                "metadata `{key}` is 0; a model needs a positive value: the file is damaged"
            ))),
            n => Ok(n),
        }
    }
    fn opt(&self, k: &str) -> Option<usize> {
        self.g.usize(&self.key(k)).ok()
    }
    fn float(&self, k: &str, default: f64) -> f64 {
        self.g.f64(&self.key(k)).unwrap_or(default)
    }
    fn has(&self, tensor: &str) -> bool {
        self.g.has(tensor)
    }
    /// Rows of the token embedding: the vocabulary the file holds (Gemma 3's converter
    /// drops the rows past its tokenizer).
    fn vocab(&self, width: usize) -> Result<usize, ModelError> {
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
    fn heads(&self) -> Result<(usize, usize), ModelError> {
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
    fn rope_scaling(&self) -> Result<RopeScaling, ModelError> {
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

/// The Llama family: which optional parts a file has is read from its tensors, as
/// llama.cpp's loader does.
fn llama(m: &Meta) -> Result<LlamaParams, ModelError> {
    let hidden_size = m.size("embedding_length")?;
    let (n_head, n_kv_head) = m.heads()?;
    let head_dim = m
        .opt("attention.key_length")
        .unwrap_or(hidden_size / n_head);
    let rotary_dim = m.opt("rope.dimension_count").unwrap_or(head_dim);
    if m.has("rope_factors_long.weight") {
        return Err(m.g.err("tensors `rope_factors_long.weight` / `rope_factors_short.weight`: Phi-3's long-context rotary scaling (longrope) is not supported; use a 4k-context Phi-3 file".into()));
    }
    let n_layer = m.size("block_count")?;
    // Phi-3 windows every layer when its window is set (0 means none).
    let sliding_window = match m.arch {
        "phi3" => m.opt("attention.sliding_window").filter(|&w| w > 0),
        _ => None,
    };
    let rope_factors = if m.has("rope_freqs.weight") {
        Some(m.g.f32("rope_freqs.weight", &[rotary_dim / 2])?)
    } else {
        None
    };
    Ok(LlamaParams {
        architecture: m.arch.to_string(),
        vocab_size: m.vocab(hidden_size)?,
        hidden_size,
        intermediate_size: m.size("feed_forward_length")?,
        n_layer,
        n_head,
        n_kv_head,
        head_dim,
        rms_norm_eps: m.float("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: m.float("rope.freq_base", 10_000.0),
        rope_scaling: m.rope_scaling()?,
        max_positions: m.size("context_length")?,
        sliding_window,
        sliding_layers: vec![sliding_window.is_some(); n_layer],
        qk_norm: qk_norm(m, head_dim),
        clip_qkv: m.g.f64(&m.key("attention.clamp_kqv")).map(|c| c as f32),
        // OLMo 2's norms follow the attention and the MLP.
        post_norms: m.arch == "olmo2",
        moe: moe(m, n_layer)?,
        rotary_dim,
        fused_projections: m.has("blk.0.attn_qkv.weight"),
        qkv_bias: m.has("blk.0.attn_q.bias") || m.has("blk.0.attn_qkv.bias"),
        o_bias: m.has("blk.0.attn_output.bias"),
        mlp_bias: m.has("blk.0.ffn_down.bias"),
        // Only the `llama` converter permutes q and k for llama.cpp's rotation.
        rope_interleaved: m.arch == "llama",
        tie_word_embeddings: !m.has("output.weight"),
        rope_factors,
    })
}

/// Whether q and k are normalized per head (`[head_dim]` weights: Qwen3) or whole
/// (`[heads * head_dim]`: OLMoE, OLMo 2), as the tensors' shapes say.
fn qk_norm(m: &Meta, head_dim: usize) -> QkNorm {
    match m.g.shape("blk.0.attn_q_norm.weight") {
        None => QkNorm::None,
        Some(&[d]) if d == head_dim => QkNorm::PerHead,
        Some(_) => QkNorm::Whole,
    }
}

/// The routing of a mixture of experts (`{arch}.expert_count` present). llama.cpp
/// renormalises the chosen weights for `llama` (Mixtral) and `qwen3moe` and not for
/// `qwen2moe` and `olmoe`, unless the file says (`expert_weights_norm`); which blocks are
/// sparse, and whether there is a shared expert, it reads from the tensors present.
fn moe(m: &Meta, n_layer: usize) -> Result<Option<MoeParams>, ModelError> {
    let Some(n_experts) = m.opt("expert_count").filter(|&n| n > 0) else {
        return Ok(None);
    };
    refuse_other_routing(m)?;
    let top_k = m.size("expert_used_count")?;
    if top_k > n_experts {
        return Err(m.g.err(format!(
            "metadata `{}` = {top_k} is more than the {n_experts} experts: the file is damaged",
            m.key("expert_used_count")
        )));
    }
    let norm_key = m.key("expert_weights_norm");
    let norm_topk_prob = match m.g.meta(&norm_key) {
        Some(v) => v.to_bool().map_err(|_| {
            m.g.err(format!(
                "metadata `{norm_key}` is not a boolean: the file is damaged"
            ))
        })?,
        None => matches!(m.arch, "llama" | "qwen3moe"),
    };
    let shared_size = match m.has("blk.0.ffn_up_shexp.weight") {
        true => Some(m.size("expert_shared_feed_forward_length")?),
        false => None,
    };
    Ok(Some(MoeParams {
        n_experts,
        top_k,
        norm_topk_prob,
        expert_size: match m.opt("expert_feed_forward_length") {
            Some(f) => f,
            None => m.size("feed_forward_length")?,
        },
        shared_size,
        sparse_layers: (0..n_layer)
            .map(|i| m.has(&format!("blk.{i}.ffn_gate_inp.weight")))
            .collect(),
        mixtral_names: m.arch == "llama",
    }))
}

/// Routing other than a softmax over every expert then top-k, and the experts' gate and
/// up projections fused into one tensor (which llama.cpp's converter writes for other
/// architectures only), are refused by the key or tensor that asks for them.
fn refuse_other_routing(m: &Meta) -> Result<(), ModelError> {
    let unsupported = crate::model::moe::ROUTING;
    if let Some(f) = m.opt("expert_gating_func").filter(|&f| f != 1) {
        return Err(m.g.err(format!(
            "metadata `{}` = {f} (1 is softmax): {unsupported}",
            m.key("expert_gating_func")
        )));
    }
    if let Some(g) = m.opt("expert_group_count").filter(|&g| g > 1) {
        return Err(m.g.err(format!(
            "metadata `{}` = {g}: group-limited routing is not implemented; {unsupported}",
            m.key("expert_group_count")
        )));
    }
    let scale = m.float("expert_weights_scale", 1.0);
    if scale != 1.0 {
        return Err(m.g.err(format!(
            "metadata `{}` = {scale}: scaled routing weights are not implemented; {unsupported}",
            m.key("expert_weights_scale")
        )));
    }
    if m.has("blk.0.ffn_gate_up_exps.weight") {
        return Err(m.g.err(format!(
            "tensor `blk.0.ffn_gate_up_exps.weight`: fused expert gate and up projections are not how llama.cpp's converter writes a `{}` model; convert without `--fuse-gate-up-exps`",
            m.arch
        )));
    }
    Ok(())
}

/// Gemma 2 and 3. llama.cpp fixes what the converter does not write: local layers every
/// other layer (Gemma 2) or five in six (Gemma 3), a local rotary base of 10 000 (Gemma 3),
/// and attention scaled by `1/sqrt(head_dim)`, or `1/sqrt(hidden / heads)` for the 27B
/// models (46 and 62 blocks).
fn gemma(m: &Meta) -> Result<GemmaParams, ModelError> {
    let gemma3 = m.arch == "gemma3";
    let hidden_size = m.size("embedding_length")?;
    let (n_head, n_kv_head) = m.heads()?;
    let head_dim = m.opt("attention.key_length").unwrap_or(256);
    let n_layer = m.size("block_count")?;
    let is_27b = n_layer == if gemma3 { 62 } else { 46 };
    let sliding_window = m.opt("attention.sliding_window").filter(|&w| w > 0);
    let pattern = match (gemma3, sliding_window) {
        (_, None) => 0,
        (true, _) => m.opt("attention.sliding_window_pattern").unwrap_or(6),
        (false, _) => 2,
    };
    let scaling = m.rope_scaling()?;
    let base = m.float(
        "rope.freq_base",
        if gemma3 { 1_000_000.0 } else { 10_000.0 },
    );
    Ok(GemmaParams {
        architecture: m.arch.to_string(),
        vocab_size: m.vocab(hidden_size)?,
        hidden_size,
        intermediate_size: m.size("feed_forward_length")?,
        n_layer,
        n_head,
        n_kv_head,
        head_dim,
        rms_norm_eps: m.float("attention.layer_norm_rms_epsilon", 1e-6),
        activation: Activation::GeluTanh,
        query_pre_attn_scalar: if is_27b {
            (hidden_size / n_head) as f64
        } else {
            head_dim as f64
        },
        attention_bias: false,
        attn_softcap: (!gemma3).then(|| m.float("attn_logit_softcapping", 50.0)),
        final_softcap: match m.float("final_logit_softcapping", 0.0) {
            c if c > 0.0 => Some(c),
            _ if !gemma3 => Some(30.0),
            _ => None,
        },
        sliding_window,
        sliding_layers: (0..n_layer)
            .map(|i| pattern > 0 && (i + 1) % pattern != 0)
            .collect(),
        rope_global: (base, scaling),
        rope_local: if gemma3 {
            (10_000.0, RopeScaling::Default)
        } else {
            (base, scaling)
        },
        qk_norm: gemma3,
        max_positions: m.size("context_length")?,
        tie_word_embeddings: !m.has("output.weight"),
    })
}

/// GPT-2. The converter also writes the tied head as `output.weight`; GPT-2 unembeds with
/// its token embedding either way.
fn gpt2(m: &Meta) -> Result<Gpt2Config, ModelError> {
    let n_embd = m.size("embedding_length")?;
    Ok(Gpt2Config {
        vocab_size: m.vocab(n_embd)?,
        n_positions: m.size("context_length")?,
        n_embd,
        n_layer: m.size("block_count")?,
        n_head: m.size("attention.head_count")?,
        n_inner: Some(m.size("feed_forward_length")?),
        activation_function: "gelu_new".into(),
        layer_norm_epsilon: m.float("attention.layer_norm_epsilon", 1e-5),
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: false,
        add_cross_attention: false,
        model_type: Some("gpt2".into()),
    })
}

/// GPT-NeoX (Pythia): the rotated fraction from `rope.dimension_count`, biases and head
/// from the tensors present.
fn gpt_neox(m: &Meta) -> Result<GptNeoxConfig, ModelError> {
    let hidden_size = m.size("embedding_length")?;
    let n_head = m.size("attention.head_count")?;
    let head_dim = hidden_size / n_head;
    let rotary = m.opt("rope.dimension_count").unwrap_or(head_dim);
    let factor = rotary as f64 / head_dim as f64;
    if (head_dim as f64 * factor) as usize != rotary {
        return Err(m.g.err(format!(
            "metadata `gptneox.rope.dimension_count` = {rotary} is not a fraction of the head ({head_dim}) transformers can express"
        )));
    }
    let parallel =
        m.g.meta("gptneox.use_parallel_residual")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(true);
    Ok(GptNeoxConfig {
        vocab_size: m.vocab(hidden_size)?,
        hidden_size,
        num_hidden_layers: m.size("block_count")?,
        num_attention_heads: n_head,
        intermediate_size: m.size("feed_forward_length")?,
        hidden_act: "gelu".into(),
        max_position_embeddings: m.size("context_length")?,
        layer_norm_eps: m.float("attention.layer_norm_epsilon", 1e-5),
        use_parallel_residual: parallel,
        attention_bias: m.has("blk.0.attn_qkv.bias"),
        rotary_pct: None,
        rotary_emb_base: None,
        rope_parameters: Some(serde_json::json!({
            "rope_theta": m.float("rope.freq_base", 10_000.0),
            "partial_rotary_factor": factor,
        })),
        rope_scaling: None,
        tie_word_embeddings: !m.has("output.weight"),
    })
}
