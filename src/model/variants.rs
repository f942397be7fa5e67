//! The Llama family's variants, one row each: a `model_type` and the switches that set it
//! apart from Llama (how q and k are normalised, where the norms sit, fused projections,
//! biases, the window rule, a mixture of experts' routing defaults). The Llama file reads
//! its config.json and GGUF metadata through this table; no other place branches on a
//! variant's name.

use super::moe::{ExpertWidth, MoeDefaults};

/// How q and k are RMS-normalized before the rotation, if they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    /// They are not.
    None,
    /// Each head's `head_dim` values on their own (Qwen3's `q_norm`, `k_norm`).
    PerHead,
    /// The whole projection at once, `n_head * head_dim` values (OLMoE's, OLMo 2's).
    Whole,
}

/// How a variant's config.json chooses the layers that attend through a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowRule {
    /// None does.
    None,
    /// Every layer when `sliding_window` is set; `layer_types` is ignored, as
    /// transformers' Mistral ignores it (Mistral, Phi-3, Mixtral). A GGUF file's
    /// `attention.sliding_window` is read the same way.
    EveryLayer,
    /// Only with `use_sliding_window`: the layers `layer_types` names, by default those
    /// from `max_window_layers` on (Qwen2, Qwen3).
    UseSlidingWindow,
}

/// One `model_type` of the Llama family.
#[derive(Debug)]
pub struct Variant {
    /// Its config.json `model_type`.
    pub model_type: &'static str,
    /// The GGUF `general.architecture` llama.cpp's converter writes it as (Mistral and
    /// Mixtral are written as `llama`, so the `llama` row reads them back).
    pub gguf: &'static str,
    /// Floats per head when config.json gives no `head_dim` (`None`: the width over the
    /// heads; Qwen3: 128 whatever the width, as in transformers).
    pub head_dim: Option<usize>,
    /// q, k and v carry biases unless config.json says `qkv_bias: false`, and the output
    /// projection never does (Qwen2); elsewhere `attention_bias` covers all four.
    pub qkv_bias: bool,
    /// How q and k are normalised (config.json; a GGUF file says by its tensors' shapes).
    pub qk_norm: QkNorm,
    /// The norms follow the attention and the MLP, on what they add to the residual
    /// stream (OLMo 2).
    pub post_norms: bool,
    /// q, k and v come from one `qkv_proj`, gate and up from one `gate_up_proj` (Phi-3's
    /// config.json; a GGUF file says by its tensors).
    pub fused_projections: bool,
    /// Which layers slide.
    pub window: WindowRule,
    /// A mixture of experts' routing, with transformers' defaults for what config.json
    /// leaves out (`None`: dense).
    pub moe: Option<MoeDefaults>,
    /// GGUF: llama.cpp renormalises the chosen experts' weights unless the file says
    /// (`expert_weights_norm`): for `llama` (Mixtral) and `qwen3moe`.
    pub gguf_renormalise: bool,
    /// GGUF: the converter permuted q and k rows for llama.cpp's rotation (the `llama`
    /// architecture and those converted as it, Granite), and names experts as Mixtral's.
    pub gguf_permuted: bool,
    /// Granite's multipliers on the embeddings, the attention scores, the residual
    /// branches and the logits (config.json's `embedding_multiplier`,
    /// `attention_multiplier`, `residual_multiplier`, `logits_scaling`; GGUF's
    /// `embedding_scale`, `attention.scale`, `residual_scale`, `logit_scale`).
    pub multipliers: bool,
}

/// Llama itself: every switch off.
const LLAMA: Variant = Variant {
    model_type: "llama",
    gguf: "llama",
    head_dim: None,
    qkv_bias: false,
    qk_norm: QkNorm::None,
    post_norms: false,
    fused_projections: false,
    window: WindowRule::None,
    moe: None,
    gguf_renormalise: true,
    gguf_permuted: true,
    multipliers: false,
};

/// Every variant, Llama first.
pub const VARIANTS: &[Variant] = &[
    LLAMA,
    Variant {
        model_type: "mistral",
        window: WindowRule::EveryLayer,
        ..LLAMA
    },
    Variant {
        model_type: "qwen2",
        gguf: "qwen2",
        qkv_bias: true,
        window: WindowRule::UseSlidingWindow,
        ..ROW
    },
    Variant {
        model_type: "qwen3",
        gguf: "qwen3",
        head_dim: Some(128),
        qk_norm: QkNorm::PerHead,
        window: WindowRule::UseSlidingWindow,
        ..ROW
    },
    Variant {
        model_type: "phi3",
        gguf: "phi3",
        fused_projections: true,
        window: WindowRule::EveryLayer,
        ..ROW
    },
    Variant {
        model_type: "mixtral",
        window: WindowRule::EveryLayer,
        moe: Some(MoeDefaults {
            n_experts: 8,
            top_k: 2,
            renormalise: Some(true),
            expert_width: ExpertWidth::Intermediate,
            shared_width: None,
            sparse_step: false,
            mixtral_names: true,
        }),
        ..LLAMA
    },
    Variant {
        model_type: "qwen2_moe",
        gguf: "qwen2moe",
        qkv_bias: true,
        window: WindowRule::UseSlidingWindow,
        moe: Some(MoeDefaults {
            n_experts: 60,
            top_k: 4,
            renormalise: None,
            expert_width: ExpertWidth::Moe(1408),
            shared_width: Some(5632),
            sparse_step: true,
            mixtral_names: false,
        }),
        ..ROW
    },
    Variant {
        model_type: "qwen3_moe",
        gguf: "qwen3moe",
        head_dim: Some(128),
        qk_norm: QkNorm::PerHead,
        window: WindowRule::UseSlidingWindow,
        moe: Some(MoeDefaults {
            n_experts: 128,
            top_k: 8,
            renormalise: None,
            expert_width: ExpertWidth::Moe(768),
            shared_width: None,
            sparse_step: true,
            mixtral_names: false,
        }),
        gguf_renormalise: true,
        ..ROW
    },
    Variant {
        model_type: "olmoe",
        gguf: "olmoe",
        qk_norm: QkNorm::Whole,
        moe: Some(MoeDefaults {
            n_experts: 64,
            top_k: 8,
            renormalise: None,
            expert_width: ExpertWidth::Intermediate,
            shared_width: None,
            sparse_step: false,
            mixtral_names: false,
        }),
        ..ROW
    },
    Variant {
        model_type: "olmo2",
        gguf: "olmo2",
        qk_norm: QkNorm::Whole,
        post_norms: true,
        ..ROW
    },
    Variant {
        model_type: "granite",
        gguf: "granite",
        multipliers: true,
        gguf_permuted: true,
        ..ROW
    },
];

/// A variant written under a GGUF architecture of its own: neither renormalised nor
/// permuted there unless its row says.
const ROW: Variant = Variant {
    gguf_renormalise: false,
    gguf_permuted: false,
    ..LLAMA
};

/// The variant of a config.json `model_type`.
pub fn by_model_type(model_type: &str) -> Option<&'static Variant> {
    VARIANTS.iter().find(|v| v.model_type == model_type)
}

/// The variant a GGUF `general.architecture` reads back as.
pub fn by_gguf(arch: &str) -> Option<&'static Variant> {
    VARIANTS.iter().find(|v| v.gguf == arch)
}

/// Every config.json `model_type` of the family.
pub const MODEL_TYPES: [&str; VARIANTS.len()] = {
    let mut out = [""; VARIANTS.len()];
    let mut i = 0;
    while i < VARIANTS.len() {
        out[i] = VARIANTS[i].model_type;
        i += 1;
    }
    out
};

/// Every GGUF architecture of the family, each once.
pub const GGUF_ARCHITECTURES: &[&str] = &[
    "llama", "qwen2", "qwen3", "phi3", "qwen2moe", "qwen3moe", "olmoe", "olmo2", "granite",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gguf_architecture_reads_back_as_its_row() {
        for arch in GGUF_ARCHITECTURES {
            let v = by_gguf(arch).unwrap();
            assert_eq!(v.gguf, *arch);
        }
        let listed: std::collections::BTreeSet<&str> = VARIANTS.iter().map(|v| v.gguf).collect();
        assert_eq!(listed.len(), GGUF_ARCHITECTURES.len());
        assert_eq!(by_gguf("llama").unwrap().model_type, "llama");
    }
}
