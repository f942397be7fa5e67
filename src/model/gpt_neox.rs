//! GPT-NeoX (`gpt_neox`: Pythia, GPT-NeoX-20B), returning every hidden state with
//! `transformers`' semantics: index 0 = token embeddings, index `i` = block `i-1`, index `L` =
//! `final_layer_norm` applied to the last block's output.
//!
//! What sets the family apart: LayerNorms with biases, one fused `query_key_value`
//! projection laid out per head (`[q k v]` of head 0, then of head 1, ...), rotary
//! embeddings on the leading `rotary_pct` of each head only, and the parallel residual
//! `x + attn(ln1(x)) + mlp(ln2(x))` (`use_parallel_residual`, Pythia's) or the sequential
//! one.

use std::path::Path;

use serde::Deserialize;

use super::capture::Site;
use super::error::ModelError;
use super::family::{Architecture, Params};
use super::gguf::meta::Meta;
use super::kernels::{AttentionShape, Dense, HeadView};
use super::ops::{parse_rope_scaling, Activation, LayerNorm, Rope, RopeTable};
use super::stack::{Batch, HiddenStateModel, ModelInfo, Stack, Tap};
use super::weights::{RowMatrix, Scope, Store};

/// The fields of a GPT-NeoX `config.json` that change the math.
#[derive(Debug, Clone, Deserialize)]
pub struct GptNeoxConfig {
    /// Rows of `embed_in`.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Blocks.
    pub num_hidden_layers: usize,
    /// Attention heads (`hidden_size / num_attention_heads` floats each).
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// The MLP activation (`gelu`, the exact erf form, for Pythia).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Longest text, in tokens.
    pub max_position_embeddings: usize,
    /// Epsilon of every LayerNorm.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// `x + attn(ln1(x)) + mlp(ln2(x))` when true; `h = x + attn(ln1(x)); h + mlp(ln2(h))`
    /// when false.
    #[serde(default = "default_true")]
    pub use_parallel_residual: bool,
    /// Biases on `query_key_value` and `dense`.
    #[serde(default = "default_true")]
    pub attention_bias: bool,
    /// The rotated fraction of each head (older configs; transformers 5 writes
    /// `rope_parameters.partial_rotary_factor`).
    #[serde(default)]
    pub rotary_pct: Option<f64>,
    /// The rotary base (older configs; transformers 5 writes `rope_parameters.rope_theta`).
    #[serde(default)]
    pub rotary_emb_base: Option<f64>,
    /// transformers 5's rotary parameters (`rope_theta`, `partial_rotary_factor`,
    /// `rope_type`).
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Older configs' rotary scaling.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// The unembedding is `embed_in` rather than `embed_out`.
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

impl GptNeoxConfig {
    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let cfg: Self = super::error::read_config(
            path,
            "a GPT-NeoX config.json from the Hub has vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size and max_position_embeddings",
        )?;
        let bad = super::error::unsupported(path);
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(bad(
                "num_attention_heads",
                cfg.num_attention_heads.to_string(),
                format!("it must divide hidden_size = {}", cfg.hidden_size),
            ));
        }
        if Activation::parse(&cfg.hidden_act).is_none() {
            return Err(bad(
                "hidden_act",
                format!("`{}`", cfg.hidden_act),
                format!("supported: {}", Activation::supported()),
            ));
        }
        let factor = cfg.rotary_factor();
        if !(0.0..=1.0).contains(&factor) {
            return Err(bad(
                "rope_parameters.partial_rotary_factor (rotary_pct)",
                factor.to_string(),
                "the rotated fraction of a head is between 0 and 1".into(),
            ));
        }
        parse_rope_scaling(cfg.rope_type_source()).map_err(|fix| {
            bad(
                "rope_parameters",
                cfg.rope_type_source()
                    .cloned()
                    .unwrap_or_default()
                    .to_string(),
                fix,
            )
        })?;
        Ok(cfg)
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// `partial_rotary_factor`, else `rotary_pct`, else transformers' default 0.25.
    fn rotary_factor(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.get("partial_rotary_factor"))
            .and_then(|v| v.as_f64())
            .or(self.rotary_pct)
            .unwrap_or(0.25)
    }

    /// `rope_theta`, else `rotary_emb_base`, else 10000.
    fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(|v| v.as_f64())
            .or(self.rotary_emb_base)
            .unwrap_or(10_000.0)
    }

    fn rope_type_source(&self) -> Option<&serde_json::Value> {
        self.rope_parameters.as_ref().or(self.rope_scaling.as_ref())
    }

    /// Rotated floats per head: `int(head_dim * factor)` as transformers truncates it.
    fn rotary_dim(&self) -> usize {
        (self.head_dim() as f64 * self.rotary_factor()) as usize
    }

    /// Labels and shape.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            layer_norm: true,
            ..ModelInfo::decoder(
                "gpt_neox",
                self.num_hidden_layers,
                self.hidden_size,
                self.max_position_embeddings,
                self.vocab_size,
            )
            .with_block(
                self.num_attention_heads,
                self.head_dim(),
                self.intermediate_size,
            )
        }
    }
}

struct Layer {
    input_layernorm: LayerNorm,
    post_attention_layernorm: LayerNorm,
    q: Dense,
    k: Dense,
    v: Dense,
    dense: Dense,
    up: Dense,
    down: Dense,
}

/// A GPT-NeoX decoder.
pub struct GptNeox {
    cfg: GptNeoxConfig,
    act: Activation,
    rope: Rope,
    embed_in: RowMatrix,
    layers: Vec<Layer>,
    final_layer_norm: LayerNorm,
    /// `embed_out`, or `embed_in` again when tied; `None` for a bare `GPTNeoXModel` file.
    embed_out: Option<RowMatrix>,
    info: ModelInfo,
}

impl GptNeox {
    /// `x`: `[rows, c]` -> the block's output, in a new buffer.
    fn layer(
        &self,
        l: &Layer,
        x: &[f32],
        batch: &Batch,
        table: &RopeTable,
        tap: &mut Tap,
    ) -> Result<Vec<f32>, ModelError> {
        let h = self.cfg.num_attention_heads;
        let d = self.cfg.head_dim();
        let a = l.input_layernorm.forward(x);
        let (mut q, mut k, v) = (l.q.forward(&a), l.k.forward(&a), l.v.forward(&a));
        self.rope.apply(&mut q, h, &batch.positions, table);
        self.rope.apply(&mut k, h, &batch.positions, table);
        let view = |data| HeadView {
            data,
            row_stride: h * d,
            offset: 0,
        };
        let shape = AttentionShape {
            n_head: h,
            n_kv_head: h,
            head_dim: d,
            scale: (1.0 / (d as f64).sqrt()) as f32,
            causal: true,
            window: None,
            softcap: None,
        };
        let att = tap.attention((view(&q), view(&k), view(&v)), shape, batch.spans());
        let mut attn_out = l.dense.forward(&att);
        tap.pass(Site::AttnOut, &mut attn_out);
        if self.cfg.use_parallel_residual {
            // mlp(ln2(x)) + attn + x, in transformers' order.
            let mlp = self.mlp(l, &l.post_attention_layernorm.forward(x), tap)?;
            Ok(mlp
                .iter()
                .zip(&attn_out)
                .zip(x)
                .map(|((m, a), x)| m + a + x)
                .collect())
        } else {
            let h1: Vec<f32> = attn_out.iter().zip(x).map(|(a, x)| a + x).collect();
            let mlp = self.mlp(l, &l.post_attention_layernorm.forward(&h1), tap)?;
            Ok(mlp.iter().zip(&h1).map(|(m, h)| m + h).collect())
        }
    }

    /// `dense_4h_to_h(act(dense_h_to_4h(x)))`.
    fn mlp(&self, l: &Layer, x: &[f32], tap: &mut Tap) -> Result<Vec<f32>, ModelError> {
        tap.keep(Site::MlpIn, x);
        let mut up = l.up.matmul(x);
        self.act.apply_with_bias(&mut up, l.up.bias())?;
        tap.pass(Site::MlpAct, &mut up);
        let mut out = l.down.forward(&up);
        tap.pass(Site::MlpOut, &mut out);
        Ok(out)
    }
}

impl Stack for GptNeox {
    type Shared = RopeTable;

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn readout(&self) -> Option<&dyn super::stack::Readout> {
        self.embed_out
            .as_ref()
            .map(|_| self as &dyn super::stack::Readout)
    }

    fn embed(&self, ids: &[usize], batch: &Batch) -> (Vec<f32>, RopeTable) {
        (self.embed_in.gather(ids), self.rope.table(batch.t))
    }

    fn block(
        &self,
        i: usize,
        x: &[f32],
        batch: &Batch,
        table: &RopeTable,
        tap: &mut Tap,
    ) -> Result<Vec<f32>, ModelError> {
        self.layer(&self.layers[i], x, batch, table, tap)
    }

    fn last(&self, x: &[f32]) -> Vec<f32> {
        self.final_layer_norm.forward(x)
    }
}

impl super::stack::Readout for GptNeox {
    fn vocab(&self) -> usize {
        self.cfg.vocab_size
    }

    fn logits(&self, rows: &[f32], out: &mut [f32]) {
        let c = self.cfg.hidden_size;
        if let Some(w) = &self.embed_out {
            w.logits(&self.final_layer_norm.forward(rows), rows.len() / c, out);
        }
    }
}

/// GPT-NeoX (Pythia) in the table of families.
pub(crate) struct Family;

impl Architecture for Family {
    fn model_types(&self) -> &'static [&'static str] {
        &["gpt_neox"]
    }
    fn gguf_architectures(&self) -> &'static [&'static str] {
        &["gptneox"]
    }
    fn config_params(&self, config: &Path) -> Result<Box<dyn Params>, ModelError> {
        Ok(Box::new(GptNeoxConfig::from_file(config)?))
    }
    fn gguf_params(&self, meta: &Meta) -> Result<Box<dyn Params>, ModelError> {
        Ok(Box::new(from_gguf_meta(meta)?))
    }
}

impl Params for GptNeoxConfig {
    fn info(&self) -> ModelInfo {
        GptNeoxConfig::info(self)
    }
    fn n_head(&self) -> usize {
        self.num_attention_heads
    }
    fn load(&self, store: &dyn Store) -> Result<Box<dyn HiddenStateModel>, ModelError> {
        Ok(Box::new(from_store(self, store)?))
    }
}

/// Loads GPT-NeoX from the tensors of `store`, by their Hugging Face names.
fn from_store(cfg: &GptNeoxConfig, store: &dyn Store) -> Result<GptNeox, ModelError> {
    let root = Scope::root(store);
    let w = root.nested("gpt_neox", "embed_in.weight");
    let (c, v) = (cfg.hidden_size, cfg.vocab_size);
    let embed_in = w.pp("embed_in").table(v, c)?;
    let layers = (0..cfg.num_hidden_layers)
        .map(|i| layer(cfg, &w.pp(format!("layers.{i}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let final_layer_norm = LayerNorm::load(&w.pp("final_layer_norm"), c, cfg.layer_norm_eps)?;
    let embed_out = if cfg.tie_word_embeddings {
        Some(w.pp("embed_in").table(v, c)?)
    } else if root.contains("embed_out.weight") {
        Some(root.pp("embed_out").table(v, c)?)
    } else {
        None
    };
    let info = ModelInfo {
        lm_head: embed_out.is_some(),
        ..cfg.info()
    };
    Ok(GptNeox {
        act: Activation::parse(&cfg.hidden_act).unwrap_or(Activation::GeluErf),
        rope: Rope::new(
            cfg.head_dim(),
            cfg.rotary_dim(),
            cfg.rope_theta(),
            parse_rope_scaling(cfg.rope_type_source()).unwrap_or_default(),
            false,
        ),
        embed_in,
        layers,
        final_layer_norm,
        embed_out,
        info,
        cfg: cfg.clone(),
    })
}

/// One block's weights under `l` (`layers.{i}`). The fused `query_key_value` holds, per
/// head, that head's q, k and v rows; they are split into three projections laid out
/// head after head, as separate q, k and v projections would be.
fn layer(cfg: &GptNeoxConfig, l: &Scope) -> Result<Layer, ModelError> {
    let (c, h, d, eps) = (
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.head_dim(),
        cfg.layer_norm_eps,
    );
    let part = |p: usize| -> Vec<usize> {
        (0..h)
            .flat_map(|head| (0..d).map(move |j| head * 3 * d + p * d + j))
            .collect()
    };
    let qkv = l.pp("attention.query_key_value");
    let bias = cfg.attention_bias;
    Ok(Layer {
        input_layernorm: LayerNorm::load(&l.pp("input_layernorm"), c, eps)?,
        post_attention_layernorm: LayerNorm::load(&l.pp("post_attention_layernorm"), c, eps)?,
        q: qkv.linear_rows(c, 3 * c, &part(0), bias)?,
        k: qkv.linear_rows(c, 3 * c, &part(1), bias)?,
        v: qkv.linear_rows(c, 3 * c, &part(2), bias)?,
        dense: l.pp("attention.dense").linear(c, c, bias)?,
        up: l
            .pp("mlp.dense_h_to_4h")
            .linear(c, cfg.intermediate_size, true)?,
        down: l
            .pp("mlp.dense_4h_to_h")
            .linear(cfg.intermediate_size, c, true)?,
    })
}

/// GPT-NeoX (Pythia): the rotated fraction from `rope.dimension_count`, biases and head
/// from the tensors present.
fn from_gguf_meta(m: &Meta) -> Result<GptNeoxConfig, ModelError> {
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
