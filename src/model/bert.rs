//! BERT-family encoders (BERT, MiniLM, ...), returning every hidden state as
//! `transformers`' `BertModel` does: index 0 = the embeddings after their LayerNorm, index
//! `i` = the output of layer `i - 1` (post-LayerNorm blocks, so there is no final norm).
//! Attention is bidirectional; padding keys are masked.

use std::path::Path;

use serde::Deserialize;

use super::gpt2::{Activation, LayerNorm};
use super::kernels::{self, AttentionShape, Dense, HeadView};
use super::{HiddenStateModel, ModelError, ModelInfo, TextStates};

/// `model_type`s this file runs.
pub const MODEL_TYPES: &[&str] = &["bert"];

/// The fields of a BERT `config.json` that change the math.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Rows of the word embedding.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation (`gelu` = the erf form).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Position embeddings.
    pub max_position_embeddings: usize,
    /// Token-type (segment) embeddings; single texts use type 0.
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` is supported.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let cfg: Self = super::read_config(
            path,
            "a BERT config.json from the Hub has vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size and max_position_embeddings",
        )?;
        let bad = |field: &str, value: String, fix: &str| ModelError::UnsupportedConfig {
            path: path.to_path_buf(),
            field: field.into(),
            value,
            fix: fix.into(),
        };
        if Activation::parse(&cfg.hidden_act).is_none() {
            return Err(bad(
                "hidden_act",
                format!("`{}`", cfg.hidden_act),
                Activation::supported(),
            ));
        }
        if let Some(p) = cfg.position_embedding_type.as_deref() {
            if p != "absolute" {
                return Err(bad(
                    "position_embedding_type",
                    format!("`{p}`"),
                    "only `absolute` position embeddings are supported",
                ));
            }
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(bad(
                "num_attention_heads",
                cfg.num_attention_heads.to_string(),
                "it must divide hidden_size",
            ));
        }
        Ok(cfg)
    }

    /// Labels and shape: `emb`, then `h.{i}` for layer `i`'s output.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            lm_head: false,
            ..ModelInfo::decoder(
                "bert",
                self.num_hidden_layers,
                self.hidden_size,
                self.max_position_embeddings,
                self.vocab_size,
            )
        }
    }
}

struct Layer {
    q: Dense,
    k: Dense,
    v: Dense,
    o: Dense,
    attn_norm: LayerNorm,
    inter: Dense,
    out: Dense,
    out_norm: LayerNorm,
}

/// A BERT encoder (`BertModel` without the pooler).
pub struct Bert {
    cfg: BertConfig,
    act: Activation,
    word: Vec<f32>,
    pos: Vec<f32>,
    type0: Vec<f32>,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    info: ModelInfo,
}

impl HiddenStateModel for Bert {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<TextStates>, ModelError> {
        let Some(super::Padded { lengths, t, ids }) = super::pad_batch(batch, self.cfg.vocab_size)?
        else {
            return Ok(Vec::new());
        };
        let (b, c) = (batch.len(), self.cfg.hidden_size);
        let mut x = Vec::with_capacity(b * t * c);
        for (r, &id) in ids.iter().enumerate() {
            let j = r % t;
            // word + position + token type 0, summed in transformers' order
            x.extend(
                self.word[id * c..(id + 1) * c]
                    .iter()
                    .zip(&self.type0)
                    .zip(&self.pos[j * c..(j + 1) * c])
                    .map(|((w, ty), p)| w + ty + p),
            );
        }
        let mut x = self.emb_norm.forward(&x);
        let h = self.cfg.num_attention_heads;
        let d = c / h;
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        for l in &self.layers {
            let (q, k, v) = (l.q.forward(&x), l.k.forward(&x), l.v.forward(&x));
            let view = |data| HeadView {
                data,
                row_stride: c,
                offset: 0,
            };
            let att = kernels::attention(
                view(&q),
                view(&k),
                view(&v),
                AttentionShape {
                    batch: b,
                    seq: t,
                    n_head: h,
                    n_kv_head: h,
                    head_dim: d,
                    scale: (1.0 / (d as f64).sqrt()) as f32,
                    causal: false,
                },
                &lengths,
            );
            let a = l.o.forward_residual(&att, &x);
            let x1 = l.attn_norm.forward(&a);
            let mut f = l.inter.matmul(&x1);
            self.act.apply_with_bias(&mut f, l.inter.bias())?;
            let o = l.out.forward_residual(&f, &x1);
            let next = l.out_norm.forward(&o);
            states.push(std::mem::replace(&mut x, next));
        }
        // An encoder has no final norm: the last state is also the "pre-final-norm" one.
        states.push(x.clone());
        super::cut_batch(states, x, &lengths, t, c)
    }
}

/// Loads a BERT encoder from a checked config and safetensors files (names with or without
/// the `bert.` prefix of task checkpoints; the pooler and any head are ignored).
pub fn load(cfg: &BertConfig, weights: &[std::path::PathBuf]) -> Result<Bert, ModelError> {
    use super::linear;
    let c = cfg.hidden_size;
    let eps = cfg.layer_norm_eps;
    super::load_safetensors(weights, |vb| {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let e = vb.pp("embeddings");
        let table = |name: &str, rows: usize| super::weight_vec(&e.pp(name), (rows, c), "weight");
        let types = table("token_type_embeddings", cfg.type_vocab_size)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let a = l.pp("attention");
                Ok(Layer {
                    q: linear(&a.pp("self.query"), c, c, true)?,
                    k: linear(&a.pp("self.key"), c, c, true)?,
                    v: linear(&a.pp("self.value"), c, c, true)?,
                    o: linear(&a.pp("output.dense"), c, c, true)?,
                    attn_norm: LayerNorm::load(a.pp("output.LayerNorm"), c, eps)?,
                    inter: linear(&l.pp("intermediate.dense"), c, cfg.intermediate_size, true)?,
                    out: linear(&l.pp("output.dense"), cfg.intermediate_size, c, true)?,
                    out_norm: LayerNorm::load(l.pp("output.LayerNorm"), c, eps)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Bert {
            act: Activation::parse(&cfg.hidden_act).unwrap_or(Activation::GeluErf),
            word: table("word_embeddings", cfg.vocab_size)?,
            pos: table("position_embeddings", cfg.max_position_embeddings)?,
            type0: types[..c].to_vec(),
            emb_norm: LayerNorm::load(e.pp("LayerNorm"), c, eps)?,
            layers,
            info: cfg.info(),
            cfg: cfg.clone(),
        })
    })
}
