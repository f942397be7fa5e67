//! BERT-family encoders (BERT, MiniLM, ...), returning every hidden state as
//! `transformers`' `BertModel` does: index 0 = the embeddings after their LayerNorm, index
//! `i` = the output of layer `i - 1` (post-LayerNorm blocks, so there is no final norm).
//! Attention is bidirectional, within each text of a packed batch.

use std::path::Path;

use serde::Deserialize;

use super::capture::Site;
use super::error::ModelError;
use super::family::{Architecture, Params};
use super::gguf::meta::Meta;
use super::kernels::{AttentionShape, Dense, HeadView};
use super::ops::{Activation, LayerNorm};
use super::stack::{Batch, HiddenStateModel, ModelInfo, Stack, Tap};
use super::weights::{RowMatrix, Scope, Store};

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
        let cfg: Self = super::error::read_config(
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
            causal: false,
            layer_norm: true,
            ..ModelInfo::decoder(
                "bert",
                self.num_hidden_layers,
                self.hidden_size,
                self.max_position_embeddings,
                self.vocab_size,
            )
            .with_block(
                self.num_attention_heads,
                self.hidden_size / self.num_attention_heads,
                self.intermediate_size,
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
    word: RowMatrix,
    pos: RowMatrix,
    type0: Vec<f32>,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    info: ModelInfo,
}

impl Stack for Bert {
    type Shared = ();

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// word + token type 0 + position, summed in transformers' order, then LayerNorm.
    fn embed(&self, ids: &[usize], batch: &Batch) -> (Vec<f32>, ()) {
        let c = self.cfg.hidden_size;
        let mut x = self.word.gather(ids);
        for row in x.chunks_exact_mut(c) {
            row.iter_mut().zip(&self.type0).for_each(|(x, ty)| *x += ty);
        }
        super::stack::add_positions(&mut x, &self.pos, batch, c);
        (self.emb_norm.forward(&x), ())
    }

    fn block(
        &self,
        i: usize,
        x: &[f32],
        batch: &Batch,
        _: &(),
        tap: &mut Tap,
    ) -> Result<Vec<f32>, ModelError> {
        let (l, c) = (&self.layers[i], self.cfg.hidden_size);
        let h = self.cfg.num_attention_heads;
        let d = c / h;
        let (q, k, v) = (l.q.forward(x), l.k.forward(x), l.v.forward(x));
        let view = |data| HeadView {
            data,
            row_stride: c,
            offset: 0,
        };
        let shape = AttentionShape {
            n_head: h,
            n_kv_head: h,
            head_dim: d,
            scale: (1.0 / (d as f64).sqrt()) as f32,
            causal: false,
            window: None,
            softcap: None,
        };
        let att = tap.attention((view(&q), view(&k), view(&v)), shape, batch.spans());
        // Post-norm: each sub-block's output is added before the norm, not after it.
        let a = tap.residual(Site::AttnOut, &l.o, &att, x);
        let x1 = l.attn_norm.forward(&a);
        tap.keep(Site::MlpIn, &x1);
        let mut f = l.inter.matmul(&x1);
        self.act.apply_with_bias(&mut f, l.inter.bias())?;
        tap.pass(Site::MlpAct, &mut f);
        let o = tap.residual(Site::MlpOut, &l.out, &f, &x1);
        Ok(l.out_norm.forward(&o))
    }

    /// An encoder has no final norm: the last state is also the "pre-final-norm" one.
    fn last(&self, x: &[f32]) -> Vec<f32> {
        x.to_vec()
    }
}

/// BERT (an encoder; llama.cpp's converter writes none strata reads) in the table of families.
pub(crate) struct Family;

impl Architecture for Family {
    fn model_types(&self) -> &'static [&'static str] {
        MODEL_TYPES
    }
    fn config_params(&self, config: &Path) -> Result<Box<dyn Params>, ModelError> {
        Ok(Box::new(BertConfig::from_file(config)?))
    }
    fn gguf_params(&self, meta: &Meta) -> Result<Box<dyn Params>, ModelError> {
        Err(meta
            .g
            .err(format!("`{}` has no GGUF form strata reads", meta.arch)))
    }
}

impl Params for BertConfig {
    fn info(&self) -> ModelInfo {
        BertConfig::info(self)
    }
    fn n_head(&self) -> usize {
        self.num_attention_heads
    }
    fn load(&self, store: &dyn Store) -> Result<Box<dyn HiddenStateModel>, ModelError> {
        Ok(Box::new(from_store(self, store)?))
    }
}

/// Loads a BERT encoder from the tensors of `store` (names with or without the `bert.`
/// prefix of task checkpoints; the pooler and any head are ignored).
fn from_store(cfg: &BertConfig, store: &dyn Store) -> Result<Bert, ModelError> {
    let root = Scope::root(store);
    let w = root.nested("bert", "embeddings.word_embeddings.weight");
    let (c, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
    let e = w.pp("embeddings");
    let table = |name: &str, rows: usize| e.pp(name).table(rows, c);
    let types = e
        .pp("token_type_embeddings")
        .vec("weight", &[cfg.type_vocab_size, c])?;
    let layers = (0..cfg.num_hidden_layers)
        .map(|i| layer(cfg, &w.pp(format!("encoder.layer.{i}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Bert {
        act: Activation::parse(&cfg.hidden_act).unwrap_or(Activation::GeluErf),
        word: table("word_embeddings", cfg.vocab_size)?,
        pos: table("position_embeddings", cfg.max_position_embeddings)?,
        type0: types[..c].to_vec(),
        emb_norm: LayerNorm::load(&e.pp("LayerNorm"), c, eps)?,
        layers,
        info: cfg.info(),
        cfg: cfg.clone(),
    })
}

/// One encoder layer's weights under `l` (`encoder.layer.{i}`).
fn layer(cfg: &BertConfig, l: &Scope) -> Result<Layer, ModelError> {
    let (c, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
    let a = l.pp("attention");
    Ok(Layer {
        q: a.pp("self.query").linear(c, c, true)?,
        k: a.pp("self.key").linear(c, c, true)?,
        v: a.pp("self.value").linear(c, c, true)?,
        o: a.pp("output.dense").linear(c, c, true)?,
        attn_norm: LayerNorm::load(&a.pp("output.LayerNorm"), c, eps)?,
        inter: l
            .pp("intermediate.dense")
            .linear(c, cfg.intermediate_size, true)?,
        out: l
            .pp("output.dense")
            .linear(cfg.intermediate_size, c, true)?,
        out_norm: LayerNorm::load(&l.pp("output.LayerNorm"), c, eps)?,
    })
}
