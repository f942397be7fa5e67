//! Gemma 2 (`gemma2`) and Gemma 3's text model (`gemma3_text`), returning every hidden state
//! with `transformers`' semantics: index 0 = the scaled token embeddings, index `i` = block
//! `i-1`, index `L` = the final norm applied.
//!
//! What sets the family apart: RMSNorms that multiply by `1 + weight`, a norm before and
//! after both attention and the MLP, embeddings scaled by `sqrt(hidden_size)`, a GeGLU MLP,
//! attention scaled by `query_pre_attn_scalar`, local (sliding-window) layers between global
//! ones, attention logit soft-capping and a soft-capped head (Gemma 2), and per-head q/k
//! norms with separate local and global rotary bases (Gemma 3).

use std::path::Path;

use rayon::prelude::*;
use serde::Deserialize;

use super::capture::Site;
use super::decoder::{DecoderGeometry, GgufDefaults};
use super::error::ModelError;
use super::family::{Architecture, Params};
use super::gguf::meta::Meta;
use super::kernels::{AttentionShape, Dense, HeadView};
use super::ops::{
    check_sliding_window, parse_rope_scaling, rms_norm, sliding_layer_types, Activation, BadField,
    Rope, RopeScaling, RopeTable,
};
use super::stack::{add, Batch, HiddenStateModel, ModelInfo, Stack, Tap};
use super::weights::{RowMatrix, Scope, Store};

/// `model_type`s this file runs.
pub const MODEL_TYPES: &[&str] = &["gemma2", "gemma3_text"];

/// The fields of a Gemma 2 / Gemma 3 text `config.json` strata reads.
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_activation: Option<String>,
    max_position_embeddings: usize,
    rms_norm_eps: Option<f64>,
    attention_bias: Option<bool>,
    query_pre_attn_scalar: Option<f64>,
    sliding_window: Option<usize>,
    layer_types: Option<Vec<String>>,
    sliding_window_pattern: Option<usize>,
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
    rope_parameters: Option<serde_json::Value>,
    rope_theta: Option<f64>,
    rope_local_base_freq: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    use_bidirectional_attention: Option<bool>,
    tie_word_embeddings: Option<bool>,
}

/// The hyper-parameters that change the math.
#[derive(Debug, Clone)]
pub struct GemmaParams {
    /// Widths, heads, the global layers' rotary embedding, norm epsilon and window
    /// (`architecture`: `gemma2` or `gemma3_text`).
    pub geometry: DecoderGeometry,
    /// The MLP's gate activation.
    pub activation: Activation,
    /// Attention scores are scaled by `query_pre_attn_scalar ** -0.5`.
    pub query_pre_attn_scalar: f64,
    /// Biases on q, k, v and o.
    pub attention_bias: bool,
    /// Gemma 2's attention logit cap.
    pub attn_softcap: Option<f64>,
    /// Gemma 2's cap on the head's logits (the logit lens applies it).
    pub final_softcap: Option<f64>,
    /// Rotary base and scaling of the local layers.
    pub rope_local: (f64, RopeScaling),
    /// q and k RMS-normalized per head (Gemma 3).
    pub qk_norm: bool,
}

impl GemmaParams {
    /// Reads and checks a `config.json`.
    pub fn from_config(path: &Path) -> Result<Self, ModelError> {
        let raw: RawConfig = super::error::read_config(
            path,
            "a Gemma config.json from the Hub has vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads and max_position_embeddings",
        )?;
        let bad = super::error::unsupported(path);
        let gemma3 = raw.model_type == "gemma3_text";
        if raw.use_bidirectional_attention == Some(true) {
            return Err(bad(
                "use_bidirectional_attention",
                "true".into(),
                "bidirectional Gemma (an encoder) is not supported; strata runs the causal model"
                    .into(),
            ));
        }
        let act_name = raw
            .hidden_activation
            .as_deref()
            .unwrap_or("gelu_pytorch_tanh");
        let activation = Activation::parse(act_name).ok_or_else(|| {
            bad(
                "hidden_activation",
                format!("`{act_name}`"),
                format!("supported: {}", Activation::supported()),
            )
        })?;
        let n_head = raw.num_attention_heads;
        let n_kv_head = raw.num_key_value_heads.unwrap_or(n_head);
        if n_head == 0 || n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) {
            return Err(bad(
                "num_key_value_heads",
                n_kv_head.to_string(),
                format!("it must divide num_attention_heads = {n_head}"),
            ));
        }
        let head_dim = raw.head_dim.unwrap_or(256);
        let sliding_layers = layer_types(&raw, gemma3).map_err(|(f, v, fix)| bad(f, v, fix))?;
        let (rope_global, rope_local) = rope_bases(&raw, gemma3)
            .map_err(|fix| bad("rope_parameters", rope_shown(&raw), fix))?;
        let geometry = DecoderGeometry {
            architecture: raw.model_type.clone(),
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            n_layer: raw.num_hidden_layers,
            n_head,
            n_kv_head,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope: rope_global,
            max_positions: raw.max_position_embeddings,
            sliding_window: check_sliding_window(raw.sliding_window)
                .map_err(|(f, v, fix)| bad(f, v, fix))?,
            sliding_layers,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(true),
        };
        Ok(Self {
            geometry,
            activation,
            query_pre_attn_scalar: raw.query_pre_attn_scalar.unwrap_or(256.0),
            attention_bias: raw.attention_bias.unwrap_or(false),
            attn_softcap: raw.attn_logit_softcapping,
            final_softcap: raw.final_logit_softcapping,
            rope_local,
            qk_norm: gemma3,
        })
    }

    /// Labels and shape.
    pub fn info(&self) -> ModelInfo {
        self.geometry.info()
    }
}

impl std::ops::Deref for GemmaParams {
    type Target = DecoderGeometry;
    /// The shared geometry's fields read as the parameters' own (`p.hidden_size`).
    fn deref(&self) -> &DecoderGeometry {
        &self.geometry
    }
}

/// Which layers are local: `layer_types` when given, else every second layer (Gemma 2) or
/// all but every `sliding_window_pattern`-th (Gemma 3, default 6), as transformers derives.
fn layer_types(raw: &RawConfig, gemma3: bool) -> Result<Vec<bool>, BadField> {
    let n = raw.num_hidden_layers;
    let Some(types) = &raw.layer_types else {
        let pattern = if gemma3 {
            raw.sliding_window_pattern.unwrap_or(6)
        } else {
            2
        };
        return Ok((0..n)
            .map(|i| pattern > 0 && (i + 1) % pattern != 0)
            .collect());
    };
    sliding_layer_types(types, n)
}

/// The rotary base and scaling of the global and the local layers. Gemma 3 gives each
/// layer type its own (`rope_parameters.{full,sliding}_attention`, or the older
/// `rope_theta` + `rope_scaling` and `rope_local_base_freq`); Gemma 2 one for both.
type Bases = ((f64, RopeScaling), (f64, RopeScaling));

// Private: the error is the `fix` of the caller's ModelError::UnsupportedConfig, as
// `parse_rope_scaling` gives it.
fn rope_bases(raw: &RawConfig, gemma3: bool) -> Result<Bases, String> {
    let theta = |v: Option<&serde_json::Value>| {
        v.and_then(|p| p.get("rope_theta")).and_then(|t| t.as_f64())
    };
    let params = raw.rope_parameters.as_ref();
    if !gemma3 {
        let base = theta(params).or(raw.rope_theta).unwrap_or(10_000.0);
        let scaling = parse_rope_scaling(params.or(raw.rope_scaling.as_ref()))?;
        return Ok(((base, scaling), (base, scaling)));
    }
    let per_type = |name: &str| params.and_then(|p| p.get(name));
    let global = per_type("full_attention");
    let local = per_type("sliding_attention");
    let global_base = theta(global).or(raw.rope_theta).unwrap_or(1_000_000.0);
    let local_base = theta(local)
        .or(raw.rope_local_base_freq)
        .unwrap_or(10_000.0);
    Ok((
        (
            global_base,
            parse_rope_scaling(global.or(raw.rope_scaling.as_ref()))?,
        ),
        (local_base, parse_rope_scaling(local)?),
    ))
}

fn rope_shown(raw: &RawConfig) -> String {
    raw.rope_parameters
        .as_ref()
        .or(raw.rope_scaling.as_ref())
        .map(|v| v.to_string())
        .unwrap_or_default()
}

struct Layer {
    input_layernorm: Vec<f32>,
    post_attention_layernorm: Vec<f32>,
    pre_feedforward_layernorm: Vec<f32>,
    post_feedforward_layernorm: Vec<f32>,
    q: Dense,
    k: Dense,
    v: Dense,
    o: Dense,
    /// Per-head q and k norm weights, `1 + weight` (Gemma 3).
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    gate: Dense,
    up: Dense,
    down: Dense,
    /// The layer is local.
    sliding: bool,
}

/// A Gemma 2 or Gemma 3 text decoder.
pub struct Gemma {
    p: GemmaParams,
    embed: RowMatrix,
    /// `lm_head` of an untied checkpoint.
    lm_head: Option<RowMatrix>,
    /// `sqrt(hidden_size)` in f32, as transformers multiplies the embeddings by it.
    embed_scale: f32,
    layers: Vec<Layer>,
    /// `1 + model.norm.weight`.
    norm: Vec<f32>,
    rope_global: Rope,
    rope_local: Rope,
    info: ModelInfo,
}

impl Gemma {
    fn norm(&self, x: &[f32], w: &[f32]) -> Vec<f32> {
        rms_norm(x, w, self.p.rms_norm_eps)
    }

    /// `x`: `[rows, c]` -> the block's output, in a new buffer.
    fn layer(
        &self,
        l: &Layer,
        x: &[f32],
        batch: &Batch,
        tables: &(RopeTable, RopeTable),
        tap: &mut Tap,
    ) -> Result<Vec<f32>, ModelError> {
        let p = &self.p;
        let h = self.norm(x, &l.input_layernorm);
        let (mut q, mut k, v) = (l.q.forward(&h), l.k.forward(&h), l.v.forward(&h));
        if let Some((qn, kn)) = &l.qk_norm {
            q = self.norm(&q, qn);
            k = self.norm(&k, kn);
        }
        let (rope, table) = if l.sliding {
            (&self.rope_local, &tables.1)
        } else {
            (&self.rope_global, &tables.0)
        };
        rope.apply(&mut q, p.n_head, &batch.positions, table);
        rope.apply(&mut k, p.n_kv_head, &batch.positions, table);
        let view = |data, heads: usize| HeadView {
            data,
            row_stride: heads * p.head_dim,
            offset: 0,
        };
        let shape = AttentionShape {
            n_head: p.n_head,
            n_kv_head: p.n_kv_head,
            head_dim: p.head_dim,
            scale: p.query_pre_attn_scalar.powf(-0.5) as f32,
            causal: true,
            window: p.sliding_window.filter(|_| l.sliding),
            softcap: p.attn_softcap.map(|c| c as f32),
        };
        let att = tap.attention(
            (
                view(&q, p.n_head),
                view(&k, p.n_kv_head),
                view(&v, p.n_kv_head),
            ),
            shape,
            batch.spans(),
        );
        let mut a = self.norm(&l.o.forward(&att), &l.post_attention_layernorm);
        tap.pass(Site::AttnOut, &mut a);
        let h = add(x, &a);
        let m = self.norm(&h, &l.pre_feedforward_layernorm);
        tap.keep(Site::MlpIn, &m);
        // GeGLU: act(gate) * up.
        let mut gate = l.gate.forward(&m);
        p.activation.apply_in_place(&mut gate)?;
        let up = l.up.forward(&m);
        gate.par_iter_mut().zip(&up).for_each(|(g, u)| *g *= u);
        tap.pass(Site::MlpAct, &mut gate);
        let mut f = self.norm(&l.down.forward(&gate), &l.post_feedforward_layernorm);
        tap.pass(Site::MlpOut, &mut f);
        Ok(add(&h, &f))
    }
}

impl Stack for Gemma {
    /// The global and the local layers' rotary tables.
    type Shared = (RopeTable, RopeTable);

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn readout(&self) -> Option<&dyn super::stack::Readout> {
        self.info
            .lm_head
            .then_some(self as &dyn super::stack::Readout)
    }

    /// The embeddings times `sqrt(hidden_size)`.
    fn embed(&self, ids: &[usize], batch: &Batch) -> (Vec<f32>, Self::Shared) {
        let mut x = self.embed.gather(ids);
        x.par_iter_mut().for_each(|v| *v *= self.embed_scale);
        let tables = (
            self.rope_global.table(batch.t),
            self.rope_local.table(batch.t),
        );
        (x, tables)
    }

    fn block(
        &self,
        i: usize,
        x: &[f32],
        batch: &Batch,
        tables: &Self::Shared,
        tap: &mut Tap,
    ) -> Result<Vec<f32>, ModelError> {
        self.layer(&self.layers[i], x, batch, tables, tap)
    }

    fn last(&self, x: &[f32]) -> Vec<f32> {
        self.norm(x, &self.norm)
    }
}

impl super::stack::Readout for Gemma {
    fn vocab(&self) -> usize {
        self.p.vocab_size
    }

    /// The tied unembedding, then Gemma 2's `final_logit_softcapping`, as its LM head does.
    fn logits(&self, rows: &[f32], out: &mut [f32]) {
        let c = self.p.hidden_size;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        head.logits(&self.norm(rows, &self.norm), rows.len() / c, out);
        if let Some(cap) = self.p.final_softcap {
            let cap = cap as f32;
            out.par_iter_mut()
                .for_each(|l| *l = (*l / cap).tanh() * cap);
        }
    }
}

/// Loads Gemma from a checked config and safetensors files (with or without `model.`).
/// Gemma 2 and 3 in the table of families.
pub(crate) struct Family;

impl Architecture for Family {
    fn model_types(&self) -> &'static [&'static str] {
        MODEL_TYPES
    }
    fn gguf_architectures(&self) -> &'static [&'static str] {
        &["gemma2", "gemma3"]
    }
    fn config_params(&self, config: &Path) -> Result<Box<dyn Params>, ModelError> {
        Ok(Box::new(GemmaParams::from_config(config)?))
    }
    fn gguf_params(&self, meta: &Meta) -> Result<Box<dyn Params>, ModelError> {
        Ok(Box::new(from_gguf_meta(meta)?))
    }
}

impl Params for GemmaParams {
    fn info(&self) -> ModelInfo {
        GemmaParams::info(self)
    }
    fn n_head(&self) -> usize {
        self.n_head
    }
    fn load(&self, store: &dyn Store) -> Result<Box<dyn HiddenStateModel>, ModelError> {
        Ok(Box::new(from_store(self, store)?))
    }
}

fn from_store(p: &GemmaParams, store: &dyn Store) -> Result<Gemma, ModelError> {
    let root = Scope::root(store);
    let w = root.nested("model", "embed_tokens.weight");
    let (c, v) = (p.hidden_size, p.vocab_size);
    let embed = w.pp("embed_tokens").table(v, c)?;
    let lm_head = root.untied_head(p.tie_word_embeddings, v, c)?;
    let layers = (0..p.n_layer)
        .map(|i| layer(p, i, &w.pp(format!("layers.{i}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let rope = |(theta, scaling): (f64, RopeScaling)| {
        Rope::new(p.head_dim, p.head_dim, theta, scaling, false)
    };
    let info = ModelInfo {
        lm_head: p.tie_word_embeddings || lm_head.is_some(),
        ..p.info()
    };
    Ok(Gemma {
        embed,
        lm_head,
        embed_scale: (c as f64).sqrt() as f32,
        layers,
        norm: w.pp("norm").plus_one(c)?,
        rope_global: rope(p.rope),
        rope_local: rope(p.rope_local),
        info,
        p: p.clone(),
    })
}

fn layer(p: &GemmaParams, i: usize, l: &Scope) -> Result<Layer, ModelError> {
    let (c, d, ff, bias) = (
        p.hidden_size,
        p.head_dim,
        p.intermediate_size,
        p.attention_bias,
    );
    let (a, m) = (l.pp("self_attn"), l.pp("mlp"));
    let qk_norm = if p.qk_norm {
        Some((a.pp("q_norm").plus_one(d)?, a.pp("k_norm").plus_one(d)?))
    } else {
        None
    };
    Ok(Layer {
        input_layernorm: l.pp("input_layernorm").plus_one(c)?,
        post_attention_layernorm: l.pp("post_attention_layernorm").plus_one(c)?,
        pre_feedforward_layernorm: l.pp("pre_feedforward_layernorm").plus_one(c)?,
        post_feedforward_layernorm: l.pp("post_feedforward_layernorm").plus_one(c)?,
        q: a.pp("q_proj").linear(c, p.n_head * d, bias)?,
        k: a.pp("k_proj").linear(c, p.n_kv_head * d, bias)?,
        v: a.pp("v_proj").linear(c, p.n_kv_head * d, bias)?,
        o: a.pp("o_proj").linear(p.n_head * d, c, bias)?,
        qk_norm,
        gate: m.pp("gate_proj").linear(c, ff, false)?,
        up: m.pp("up_proj").linear(c, ff, false)?,
        down: m.pp("down_proj").linear(ff, c, false)?,
        sliding: p.sliding_layers.get(i).copied().unwrap_or(false),
    })
}

/// Gemma 2 and 3. llama.cpp fixes what the converter does not write: local layers every
/// other layer (Gemma 2) or five in six (Gemma 3), a local rotary base of 10 000 (Gemma 3),
/// and attention scaled by `1/sqrt(head_dim)`, or `1/sqrt(hidden / heads)` for the 27B
/// models (46 and 62 blocks).
fn from_gguf_meta(m: &Meta) -> Result<GemmaParams, ModelError> {
    let gemma3 = m.arch == "gemma3";
    let mut geometry = DecoderGeometry::from_gguf(
        m,
        GgufDefaults {
            head_dim: Some(256),
            rms_norm_eps: 1e-6,
            rope_base: if gemma3 { 1_000_000.0 } else { 10_000.0 },
        },
    )?;
    let (n_layer, n_head, head_dim) = (geometry.n_layer, geometry.n_head, geometry.head_dim);
    let is_27b = n_layer == if gemma3 { 62 } else { 46 };
    let sliding_window = m.opt("attention.sliding_window").filter(|&w| w > 0);
    let pattern = match (gemma3, sliding_window) {
        (_, None) => 0,
        (true, _) => m.opt("attention.sliding_window_pattern").unwrap_or(6),
        (false, _) => 2,
    };
    geometry.sliding_window = sliding_window;
    geometry.sliding_layers = (0..n_layer)
        .map(|i| pattern > 0 && (i + 1) % pattern != 0)
        .collect();
    Ok(GemmaParams {
        activation: Activation::GeluTanh,
        query_pre_attn_scalar: if is_27b {
            (geometry.hidden_size / n_head) as f64
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
        rope_local: if gemma3 {
            (10_000.0, RopeScaling::Default)
        } else {
            geometry.rope
        },
        qk_norm: gemma3,
        geometry,
    })
}
