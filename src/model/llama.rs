//! Llama-family decoders (Llama, SmolLM2, Mistral, Qwen2, Qwen3, Phi-3): RMSNorm, rotary position
//! embeddings, grouped-query attention (with a sliding window on the layers that have one)
//! and a SwiGLU MLP, returning every hidden state with
//! `transformers`' semantics (index 0 = token embeddings, index `L` = the final norm applied
//! to the last block's output).
//!
//! Weights come from a Hugging Face folder (`config.json` + safetensors, `nn.Linear` layout
//! `[out, in]`) or from a GGUF file ([`super::gguf`]), which fills the same [`LlamaWeights`].

use std::path::Path;

use serde::Deserialize;

use super::capture::Site;
use super::decoder::{DecoderGeometry, GgufDefaults};
use super::error::ModelError;
use super::family::{Architecture, Params};
use super::gguf::meta::Meta;
use super::kernels::{AttentionShape, Dense, HeadView};
use super::moe::{Expert, MoeParams, RawMoe, SparseMlp};
pub use super::ops::RopeScaling;
use super::ops::{
    check_sliding_window, parse_rope_scaling, rms_norm, sliding_layer_types, BadField, Rope,
    RopeTable,
};
use super::stack::{add_scaled, Batch, HiddenStateModel, ModelInfo, MoeInfo, Stack, Tap};
pub use super::variants::QkNorm;
use super::variants::{self, Variant, WindowRule};
use super::weights::{RowMatrix, Scope, Store};

/// `model_type`s this file runs: one per row of the variants table.
pub const MODEL_TYPES: &[&str] = &variants::MODEL_TYPES;

/// The hyper-parameters that change the math, whatever file they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaParams {
    /// Widths, heads, rotary embedding, norm epsilon and window.
    pub geometry: DecoderGeometry,
    /// How q and k are RMS-normalized before the rotation.
    pub qk_norm: QkNorm,
    /// q, k and v are clamped to `[-clip, clip]` after their norms (OLMoE's `clip_qkv`).
    pub clip_qkv: Option<f32>,
    /// The norms sit after the attention and the MLP, on what they add to the residual
    /// stream, instead of before them (OLMo 2's `post_attention_layernorm` and
    /// `post_feedforward_layernorm`).
    pub post_norms: bool,
    /// The sparse MLPs of a mixture of experts (Mixtral, Qwen-MoE, OLMoE).
    pub moe: Option<MoeParams>,
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
    /// Granite's multipliers (all 1, and the attention scaled by `1/sqrt(head_dim)`,
    /// elsewhere).
    pub multipliers: Multipliers,
    /// Per-frequency divisors of the rotary inverse frequencies, `rotary_dim / 2` of them:
    /// how llama.cpp's converter stores Llama 3's `rope_scaling` (the `rope_freqs` tensor)
    /// instead of its parameters.
    pub rope_factors: Option<Vec<f32>>,
}

/// Granite's multipliers, as transformers applies them, in f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Multipliers {
    /// The token embeddings are multiplied by this (`embedding_multiplier`).
    pub embedding: f32,
    /// Attention scores are scaled by this instead of `1/sqrt(head_dim)`
    /// (`attention_multiplier`).
    pub attention: Option<f32>,
    /// The attention's and the MLP's outputs are multiplied by this before they are added
    /// to the residual stream (`residual_multiplier`).
    pub residual: f32,
    /// The logits are divided by this (`logits_scaling`).
    pub logits: f32,
}

impl Multipliers {
    /// None: Llama's own arithmetic.
    pub const NONE: Self = Self {
        embedding: 1.0,
        attention: None,
        residual: 1.0,
        logits: 1.0,
    };
}

impl std::ops::Deref for LlamaParams {
    type Target = DecoderGeometry;
    /// The shared geometry's fields read as the parameters' own (`p.hidden_size`).
    fn deref(&self) -> &DecoderGeometry {
        &self.geometry
    }
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
    clip_qkv: Option<f64>,
    qkv_bias: Option<bool>,
    embedding_multiplier: Option<f64>,
    attention_multiplier: Option<f64>,
    residual_multiplier: Option<f64>,
    logits_scaling: Option<f64>,
    #[serde(flatten)]
    moe: RawMoe,
}

/// Makes the error for a config field, its value and what would work.
type Bad<'a> = dyn Fn(&str, String, String) -> ModelError + 'a;
/// A config size that must be a positive integer.
type Need<'a> = dyn Fn(Option<usize>, &str) -> Result<usize, ModelError> + 'a;

/// Query heads, key/value heads (dividing them) and the head width (Qwen3's defaults to
/// 128 whatever the width, as in transformers).
fn heads(
    raw: &RawConfig,
    v: &Variant,
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
    let head_dim = raw.head_dim.or(v.head_dim).unwrap_or(hidden_size / n_head);
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
        let v = variant(&raw);
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let (n_head, n_kv_head, head_dim) = heads(&raw, v, hidden_size, &bad, &need)?;
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
        let (sliding_window, sliding_layers) = sliding(&raw, v.window, n_layer)
            .map_err(|(field, value, fix)| bad(field, value, fix))?;
        let moe = raw
            .moe
            .params(v.moe.as_ref(), raw.intermediate_size, n_layer)
            .map_err(|(field, value, fix)| bad(field, value, fix))?;
        let geometry = DecoderGeometry {
            architecture: raw.model_type.clone(),
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            n_layer,
            n_head,
            n_kv_head,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope: (rope_theta, rope_scaling),
            max_positions: need(raw.max_position_embeddings, "max_position_embeddings")?,
            sliding_window,
            sliding_layers,
            // transformers' default for these configs.
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        };
        Ok(Self {
            geometry,
            qk_norm: v.qk_norm,
            clip_qkv: raw.clip_qkv.map(|c| c as f32),
            post_norms: v.post_norms,
            moe,
            rotary_dim: (head_dim as f64 * rotary_factor) as usize,
            fused_projections: v.fused_projections,
            qkv_bias: (v.qkv_bias && raw.qkv_bias.unwrap_or(true))
                || raw.attention_bias.unwrap_or(false),
            o_bias: !v.qkv_bias && raw.attention_bias.unwrap_or(false),
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            rope_interleaved: false,
            multipliers: match v.multipliers {
                true => Multipliers {
                    embedding: raw.embedding_multiplier.unwrap_or(1.0) as f32,
                    attention: Some(raw.attention_multiplier.unwrap_or(1.0) as f32),
                    residual: raw.residual_multiplier.unwrap_or(1.0) as f32,
                    logits: raw.logits_scaling.unwrap_or(1.0) as f32,
                },
                false => Multipliers::NONE,
            },
            rope_factors: None,
        })
    }

    /// Labels and shape. A mixture of experts has no single `mlp_act` (each expert has
    /// its own), so it lacks that site.
    pub fn info(&self) -> ModelInfo {
        let info = self.geometry.info();
        match &self.moe {
            None => info,
            Some(m) => ModelInfo {
                intermediate_size: None,
                moe: Some(MoeInfo {
                    n_experts: m.n_experts,
                    top_k: m.top_k,
                    sparse_layers: m.sparse_layers.clone(),
                }),
                ..info
            },
        }
    }

    /// The rotary embeddings these parameters describe.
    fn rope(&self) -> Rope {
        let rope = Rope::new(
            self.head_dim,
            self.rotary_dim,
            self.rope.0,
            self.rope.1,
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
fn sliding(
    raw: &RawConfig,
    rule: WindowRule,
    n_layer: usize,
) -> Result<(Option<usize>, Vec<bool>), BadField> {
    let window = match rule {
        WindowRule::EveryLayer => raw.sliding_window,
        WindowRule::UseSlidingWindow if raw.use_sliding_window.unwrap_or(false) => {
            raw.sliding_window
        }
        _ => None,
    };
    let Some(w) = check_sliding_window(window)? else {
        return Ok((None, Vec::new()));
    };
    let layers = match (&raw.layer_types, rule) {
        // transformers' Mistral ignores `layer_types` (it warns) and windows every layer.
        (_, WindowRule::EveryLayer) => vec![true; n_layer],
        (Some(types), _) => sliding_layer_types(types, n_layer)?,
        _ => {
            let from = raw.max_window_layers.unwrap_or(28);
            (0..n_layer).map(|i| i >= from).collect()
        }
    };
    Ok((Some(w), layers))
}

/// The row of the variants table a config's `model_type` names (the family was chosen
/// by it, so it has one).
fn variant(raw: &RawConfig) -> &'static Variant {
    variants::by_model_type(&raw.model_type).unwrap_or(&variants::VARIANTS[0])
}

/// One block's weights.
pub struct LayerWeights {
    /// `input_layernorm` (RMSNorm weight); with post-norms, `post_attention_layernorm`,
    /// applied to the attention's output.
    pub attn_norm: Vec<f32>,
    /// `q_proj`, rows in transformers' order (GGUF files are un-permuted on load).
    pub q: Dense,
    /// `k_proj`.
    pub k: Dense,
    /// `v_proj`.
    pub v: Dense,
    /// The RMSNorm weights of q and k (`q_norm`, `k_norm`): `[head_dim]` each per head
    /// (Qwen3), or the whole projections' widths (OLMo).
    pub qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    /// The layer attends through [`LlamaParams::sliding_window`].
    pub window: Option<usize>,
    /// `o_proj`.
    pub o: Dense,
    /// `post_attention_layernorm`, before the MLP; with post-norms,
    /// `post_feedforward_layernorm`, applied to the MLP's output.
    pub mlp_norm: Vec<f32>,
    /// The MLP.
    pub mlp: Mlp,
}

/// A block's MLP.
// One per block: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Mlp {
    /// SwiGLU: `down(silu(gate(x)) * up(x))`.
    Gated(Expert),
    /// A mixture of experts.
    Sparse(SparseMlp),
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
        let r = self.p.multipliers.residual;
        let pre = |norm: &[f32]| match self.p.post_norms {
            true => None,
            false => Some(self.rms_norm(x, norm)),
        };
        let h = pre(&l.attn_norm);
        let att = self.attention(l, h.as_deref().unwrap_or(x), batch, table, tap);
        let x = if self.p.post_norms {
            let mut y = self.rms_norm(&l.o.forward(&att), &l.attn_norm);
            tap.pass(Site::AttnOut, &mut y);
            add_scaled(x, &y, r)
        } else {
            tap.scaled_residual(Site::AttnOut, &l.o, &att, x, r)
        };
        let h = match self.p.post_norms {
            true => None,
            false => Some(self.rms_norm(&x, &l.mlp_norm)),
        };
        let h = h.as_deref().unwrap_or(&x);
        tap.keep(Site::MlpIn, h);
        match &l.mlp {
            Mlp::Gated(m) if !self.p.post_norms => {
                let mut act = m.act(h);
                tap.pass(Site::MlpAct, &mut act);
                tap.scaled_residual(Site::MlpOut, &m.down, &act, &x, r)
            }
            mlp => {
                let y = match mlp {
                    Mlp::Gated(m) => {
                        let mut act = m.act(h);
                        tap.pass(Site::MlpAct, &mut act);
                        m.down.forward(&act)
                    }
                    Mlp::Sparse(m) => {
                        let (y, routing) = m.forward(h, self.p.hidden_size);
                        tap.route(routing);
                        y
                    }
                };
                let y = match self.p.post_norms {
                    true => self.rms_norm(&y, &l.mlp_norm),
                    false => y,
                };
                let mut y = y;
                tap.pass(Site::MlpOut, &mut y);
                add_scaled(&x, &y, r)
            }
        }
    }

    /// The attention of block `l` on its input `h` (normed or not), before the output
    /// projection.
    fn attention(
        &self,
        l: &LayerWeights,
        h: &[f32],
        batch: &Batch,
        table: &RopeTable,
        tap: &mut Tap,
    ) -> Vec<f32> {
        let p = &self.p;
        let mut q = l.q.forward(h);
        let mut k = l.k.forward(h);
        let mut v = l.v.forward(h);
        if let Some((qn, kn)) = &l.qk_norm {
            // One RMSNorm row per head (Qwen3) or per token (OLMo): the weight's width.
            q = self.rms_norm(&q, qn);
            k = self.rms_norm(&k, kn);
        }
        if let Some(c) = p.clip_qkv {
            for t in [&mut q, &mut k, &mut v] {
                t.iter_mut().for_each(|x| *x = x.clamp(-c, c));
            }
        }
        self.rope.apply(&mut q, p.n_head, &batch.positions, table);
        self.rope
            .apply(&mut k, p.n_kv_head, &batch.positions, table);
        let shape = AttentionShape {
            n_head: p.n_head,
            n_kv_head: p.n_kv_head,
            head_dim: p.head_dim,
            scale: p
                .multipliers
                .attention
                .unwrap_or((1.0 / (p.head_dim as f64).sqrt()) as f32),
            causal: true,
            window: l.window,
            softcap: None,
        };
        fn view(data: &[f32], heads: usize, head_dim: usize) -> HeadView<'_> {
            HeadView {
                data,
                row_stride: heads * head_dim,
                offset: 0,
            }
        }
        let qkv = (
            view(&q, p.n_head, p.head_dim),
            view(&k, p.n_kv_head, p.head_dim),
            view(&v, p.n_kv_head, p.head_dim),
        );
        tap.attention(qkv, shape, batch.spans())
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
        let mut x = self.w.embed.gather(ids);
        let m = self.p.multipliers.embedding;
        if m != 1.0 {
            x.iter_mut().for_each(|v| *v *= m);
        }
        (x, self.rope.table(batch.t))
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
        let s = self.p.multipliers.logits;
        if s != 1.0 {
            out.iter_mut().for_each(|v| *v /= s);
        }
    }
}

/// The Llama family in the table of families.
pub(crate) struct Family;

impl Architecture for Family {
    fn model_types(&self) -> &'static [&'static str] {
        MODEL_TYPES
    }
    fn gguf_architectures(&self) -> &'static [&'static str] {
        variants::GGUF_ARCHITECTURES
    }
    fn config_params(&self, config: &Path) -> Result<Box<dyn Params>, ModelError> {
        Ok(Box::new(LlamaParams::from_config(config)?))
    }
    fn gguf_params(&self, meta: &Meta) -> Result<Box<dyn Params>, ModelError> {
        Ok(Box::new(from_gguf_meta(meta)?))
    }
}

impl Params for LlamaParams {
    fn info(&self) -> ModelInfo {
        LlamaParams::info(self)
    }
    fn n_head(&self) -> usize {
        self.n_head
    }
    fn n_experts(&self) -> usize {
        self.moe.as_ref().map_or(0, |m| m.n_experts)
    }
    fn load(&self, store: &dyn Store) -> Result<Box<dyn HiddenStateModel>, ModelError> {
        Ok(Box::new(from_store(self, store)?))
    }
}

/// Loads a Llama-family model from the tensors of `store`, by their Hugging Face names.
fn from_store(p: &LlamaParams, store: &dyn Store) -> Result<Llama, ModelError> {
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
    let (c, d) = (p.hidden_size, p.head_dim);
    let a = l.pp("self_attn");
    let qk_norm = match p.qk_norm {
        QkNorm::None => None,
        QkNorm::PerHead => Some((a.vec("q_norm.weight", &[d])?, a.vec("k_norm.weight", &[d])?)),
        QkNorm::Whole => Some((
            a.vec("q_norm.weight", &[p.n_head * d])?,
            a.vec("k_norm.weight", &[p.n_kv_head * d])?,
        )),
    };
    let (q, k, v) = if p.fused_projections {
        // Phi-3: `qkv_proj` rows are q, then k, then v.
        let (nq, nkv) = (p.n_head * d, p.n_kv_head * d);
        let qkv = a.pp("qkv_proj");
        let fused = nq + 2 * nkv;
        (
            qkv.linear_rows(c, fused, &rows(0, nq), p.qkv_bias)?,
            qkv.linear_rows(c, fused, &rows(nq, nkv), p.qkv_bias)?,
            qkv.linear_rows(c, fused, &rows(nq + nkv, nkv), p.qkv_bias)?,
        )
    } else {
        (
            a.pp("q_proj").linear(c, p.n_head * d, p.qkv_bias)?,
            a.pp("k_proj").linear(c, p.n_kv_head * d, p.qkv_bias)?,
            a.pp("v_proj").linear(c, p.n_kv_head * d, p.qkv_bias)?,
        )
    };
    let (attn_norm, mlp_norm) = match p.post_norms {
        true => ("post_attention_layernorm", "post_feedforward_layernorm"),
        false => ("input_layernorm", "post_attention_layernorm"),
    };
    Ok(LayerWeights {
        attn_norm: l.vec(&format!("{attn_norm}.weight"), &[c])?,
        q,
        k,
        v,
        qk_norm,
        window: p.window(i),
        o: a.pp("o_proj").linear(p.n_head * d, c, p.o_bias)?,
        mlp_norm: l.vec(&format!("{mlp_norm}.weight"), &[c])?,
        mlp: mlp(p, i, l)?,
    })
}

/// `from..from + n`, as the row list of a fused projection's part.
fn rows(from: usize, n: usize) -> Vec<usize> {
    (from..from + n).collect()
}

/// Block `i`'s MLP under `l`: sparse where the model routes, else SwiGLU (Phi-3's fused
/// `gate_up_proj` rows are gate, then up).
fn mlp(p: &LlamaParams, i: usize, l: &Scope) -> Result<Mlp, ModelError> {
    if let Some(moe) = p.moe.as_ref().filter(|m| m.sparse_layers[i]) {
        return sparse_mlp(moe, p.hidden_size, l).map(Mlp::Sparse);
    }
    let (c, ff, m) = (p.hidden_size, p.intermediate_size, l.pp("mlp"));
    let (gate, up) = if p.fused_projections {
        let gate_up = m.pp("gate_up_proj");
        (
            gate_up.linear_rows(c, 2 * ff, &rows(0, ff), p.mlp_bias)?,
            gate_up.linear_rows(c, 2 * ff, &rows(ff, ff), p.mlp_bias)?,
        )
    } else {
        (
            m.pp("gate_proj").linear(c, ff, p.mlp_bias)?,
            m.pp("up_proj").linear(c, ff, p.mlp_bias)?,
        )
    };
    Ok(Mlp::Gated(Expert {
        gate,
        up,
        down: m.pp("down_proj").linear(ff, c, p.mlp_bias)?,
    }))
}

/// A sparse MLP under `l`, by the Hub's per-expert names: Mixtral's
/// `block_sparse_moe.{gate, experts.{e}.w1/w3/w2}`, the others'
/// `mlp.{gate, experts.{e}.gate_proj/up_proj/down_proj}` (and Qwen2-MoE's
/// `shared_expert`, `shared_expert_gate`).
fn sparse_mlp(moe: &MoeParams, c: usize, l: &Scope) -> Result<SparseMlp, ModelError> {
    let (block, names) = match moe.mixtral_names {
        true => (l.pp("block_sparse_moe"), ["w1", "w3", "w2"]),
        false => (l.pp("mlp"), ["gate_proj", "up_proj", "down_proj"]),
    };
    let expert = |s: Scope, f: usize| -> Result<Expert, ModelError> {
        Ok(Expert {
            gate: s.pp(names[0]).linear(c, f, false)?,
            up: s.pp(names[1]).linear(c, f, false)?,
            down: s.pp(names[2]).linear(f, c, false)?,
        })
    };
    let experts = (0..moe.n_experts)
        .map(|e| expert(block.pp(format!("experts.{e}")), moe.expert_size))
        .collect::<Result<Vec<_>, _>>()?;
    let shared = match moe.shared_size {
        Some(f) => Some((
            expert(block.pp("shared_expert"), f)?,
            block.pp("shared_expert_gate").linear(c, 1, false)?,
        )),
        None => None,
    };
    Ok(SparseMlp {
        router: block.pp("gate").linear(c, moe.n_experts, false)?,
        experts,
        shared,
        top_k: moe.top_k,
        norm_topk_prob: moe.norm_topk_prob,
    })
}

/// The Llama family: which optional parts a file has is read from its tensors, as
/// llama.cpp's loader does.
fn from_gguf_meta(m: &Meta) -> Result<LlamaParams, ModelError> {
    if m.has("rope_factors_long.weight") {
        return Err(m.g.err("tensors `rope_factors_long.weight` / `rope_factors_short.weight`: Phi-3's long-context rotary scaling (longrope) is not supported; use a 4k-context Phi-3 file".into()));
    }
    let mut geometry = DecoderGeometry::from_gguf(
        m,
        GgufDefaults {
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_base: 10_000.0,
        },
    )?;
    let (n_layer, head_dim) = (geometry.n_layer, geometry.head_dim);
    let rotary_dim = m.opt("rope.dimension_count").unwrap_or(head_dim);
    let v = variants::by_gguf(m.arch).unwrap_or(&variants::VARIANTS[0]);
    // Phi-3 windows every layer when its window is set (0 means none).
    geometry.sliding_window = match v.window {
        WindowRule::EveryLayer => m.opt("attention.sliding_window").filter(|&w| w > 0),
        _ => None,
    };
    geometry.sliding_layers = vec![geometry.sliding_window.is_some(); n_layer];
    let rope_factors = if m.has("rope_freqs.weight") {
        Some(m.g.f32("rope_freqs.weight", &[rotary_dim / 2])?)
    } else {
        None
    };
    Ok(LlamaParams {
        geometry,
        qk_norm: qk_norm(m, head_dim),
        clip_qkv: m.g.f64(&m.key("attention.clamp_kqv")).map(|c| c as f32),
        post_norms: v.post_norms,
        moe: moe(m, v, n_layer)?,
        rotary_dim,
        fused_projections: m.has("blk.0.attn_qkv.weight"),
        qkv_bias: m.has("blk.0.attn_q.bias") || m.has("blk.0.attn_qkv.bias"),
        o_bias: m.has("blk.0.attn_output.bias"),
        mlp_bias: m.has("blk.0.ffn_down.bias"),
        rope_interleaved: v.gguf_permuted,
        multipliers: match v.multipliers {
            true => gguf_multipliers(m),
            false => Multipliers::NONE,
        },
        rope_factors,
    })
}

/// Granite's multipliers as llama.cpp's loader reads them: a missing key is 1, and a
/// missing (or zero) attention scale is `1/sqrt(head_dim)`.
fn gguf_multipliers(m: &Meta) -> Multipliers {
    Multipliers {
        embedding: m.float("embedding_scale", 1.0) as f32,
        attention: m
            .g
            .f64(&m.key("attention.scale"))
            .filter(|&s| s != 0.0)
            .map(|s| s as f32),
        residual: m.float("residual_scale", 1.0) as f32,
        logits: m.float("logit_scale", 1.0) as f32,
    }
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
fn moe(m: &Meta, v: &Variant, n_layer: usize) -> Result<Option<MoeParams>, ModelError> {
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
        None => v.gguf_renormalise,
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
        mixtral_names: v.gguf_permuted,
    }))
}

/// Routing other than a softmax over every expert then top-k, and the experts' gate and
/// up projections fused into one tensor (which llama.cpp's converter writes for other
/// architectures only), are refused by the key or tensor that asks for them.
fn refuse_other_routing(m: &Meta) -> Result<(), ModelError> {
    let unsupported = super::moe::ROUTING;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::ROPE_TYPES;

    #[test]
    fn llama3_rope_scaling_keeps_short_and_divides_long_wavelengths() {
        let mut p = LlamaParams {
            geometry: DecoderGeometry {
                architecture: "llama".into(),
                vocab_size: 10,
                hidden_size: 64,
                intermediate_size: 8,
                n_layer: 1,
                n_head: 1,
                n_kv_head: 1,
                head_dim: 64,
                rms_norm_eps: 1e-5,
                rope: (500_000.0, RopeScaling::Default),
                max_positions: 8,
                sliding_window: None,
                sliding_layers: Vec::new(),
                tie_word_embeddings: false,
            },
            qk_norm: QkNorm::None,
            clip_qkv: None,
            post_norms: false,
            moe: None,
            rotary_dim: 64,
            fused_projections: false,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            rope_interleaved: false,
            multipliers: Multipliers::NONE,
            rope_factors: None,
        };
        let plain = p.rope().inv_freq().to_vec();
        p.geometry.rope.1 = RopeScaling::Llama3 {
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
