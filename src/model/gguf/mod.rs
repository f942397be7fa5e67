//! GGUF files (llama.cpp's format): a Llama-family decoder and its tokenizer from the one
//! file, as `transformers` loads them with `gguf_file=`.
//!
//! Weights stay in memory as the file stores them, quantized. By default each projection
//! is dequantized to f32 when the forward pass reaches it, into a reused buffer, which
//! gives the f32 weights transformers dequantizes on load, so the hidden states match it,
//! while memory stays near the file's size. With `quantized` the projections run through
//! candle's quantized matmul instead: faster, but the numbers are those of llama.cpp-style
//! int8 dot products, not transformers'.

pub(crate) mod file;
pub mod tokenizer;

use std::path::Path;

use self::file::Gguf;
pub use self::file::TENSOR_TYPES;
use super::error::ModelError;
use super::llama::{LayerWeights, Llama, LlamaParams, LlamaWeights, RopeScaling};
use super::stack::{HiddenStateModel, ModelInfo};

/// `general.architecture` values this loader runs.
pub const ARCHITECTURES: &[&str] = &["llama"];
/// Whether `path` is a GGUF file (by its magic bytes).
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

/// Reads the hyper-parameters (no tensors).
fn params(g: &Gguf) -> Result<LlamaParams, ModelError> {
    let arch = g
        .string("general.architecture")
        .ok_or_else(|| g.err("metadata `general.architecture` is missing".into()))?;
    if !ARCHITECTURES.contains(&arch.as_str()) {
        return Err(ModelError::UnsupportedArchitecture {
            path: g.path.clone(),
            model_type: arch,
            supported: format!("GGUF: {}", ARCHITECTURES.join(", ")),
        });
    }
    let k = |s: &str| format!("{arch}.{s}");
    let hidden_size = g.usize(&k("embedding_length"))?;
    let n_head = g.usize(&k("attention.head_count"))?;
    let n_kv_head = g.usize(&k("attention.head_count_kv")).unwrap_or(n_head);
    let head_dim = g
        .usize(&k("attention.key_length"))
        .or_else(|_| g.usize(&k("rope.dimension_count")))
        .unwrap_or(hidden_size / n_head);
    let vocab_size = match g.usize(&k("vocab_size")) {
        Ok(v) => v,
        Err(_) => g
            .meta("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.len())
            .ok_or_else(|| g.err("neither `{arch}.vocab_size` nor tokenizer tokens".into()))?,
    };
    if n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) {
        return Err(g.err(format!(
            "head_count_kv = {n_kv_head} does not divide head_count = {n_head}"
        )));
    }
    Ok(LlamaParams {
        architecture: arch.clone(),
        vocab_size,
        hidden_size,
        intermediate_size: g.usize(&k("feed_forward_length"))?,
        n_layer: g.usize(&k("block_count"))?,
        n_head,
        n_kv_head,
        head_dim,
        rms_norm_eps: g.f64_or(&k("attention.layer_norm_rms_epsilon"), 1e-5),
        rope_theta: g.f64_or(&k("rope.freq_base"), 10_000.0),
        rope_scaling: RopeScaling::Default,
        max_positions: g.usize(&k("context_length"))?,
        sliding_window: None,
        sliding_layers: Vec::new(),
        qk_norm: false,
        rotary_dim: head_dim,
        fused_projections: false,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        rope_interleaved: true,
        tie_word_embeddings: !g.content.tensor_infos.contains_key("output.weight"),
    })
}

/// Shape, labels and quantization type, from the header alone.
pub fn read_info(path: &Path) -> Result<ModelInfo, ModelError> {
    let g = Gguf::open(path)?;
    let mut info = params(&g)?.info();
    info.quantization = Some(g.quantization());
    Ok(info)
}

/// Loads the model; `quantized` multiplies by the quantized projections directly.
pub fn load(path: &Path, quantized: bool) -> Result<Box<dyn HiddenStateModel>, ModelError> {
    let mut g = Gguf::open(path)?;
    let p = params(&g)?;
    let mut info = p.info();
    info.quantization = Some(g.quantization());
    let (c, d, ff) = (p.hidden_size, p.head_dim, p.intermediate_size);
    let embed = g.table("token_embd.weight", p.vocab_size, c)?;
    let mut layers = Vec::with_capacity(p.n_layer);
    for i in 0..p.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        layers.push(LayerWeights {
            attn_norm: g.f32(&n("attn_norm"), &[c])?,
            q: g.dense(&n("attn_q"), c, p.n_head * d, quantized)?,
            k: g.dense(&n("attn_k"), c, p.n_kv_head * d, quantized)?,
            v: g.dense(&n("attn_v"), c, p.n_kv_head * d, quantized)?,
            qk_norm: None,
            window: None,
            o: g.dense(&n("attn_output"), p.n_head * d, c, quantized)?,
            mlp_norm: g.f32(&n("ffn_norm"), &[c])?,
            gate: g.dense(&n("ffn_gate"), c, ff, quantized)?,
            up: g.dense(&n("ffn_up"), c, ff, quantized)?,
            down: g.dense(&n("ffn_down"), ff, c, quantized)?,
        });
    }
    let norm = g.f32("output_norm.weight", &[c])?;
    // The head is used only by the logit lens, dequantized (f32 logits) in either mode.
    let lm_head = if p.tie_word_embeddings {
        None
    } else {
        Some(g.table("output.weight", p.vocab_size, c)?)
    };
    if quantized {
        info.quantization = info.quantization.map(|q| format!("{q} (quantized matmul)"));
    }
    Ok(Box::new(Llama::new(
        p,
        LlamaWeights {
            embed,
            layers,
            norm,
            lm_head,
        },
        info,
    )))
}
