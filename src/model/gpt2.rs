//! GPT-2 on candle, returning every hidden state with `transformers`' semantics.
//!
//! candle-transformers has no GPT-2, so this follows the layout of its model files
//! (`Config` from `config.json`, private blocks with `load(vb, cfg)` + `forward`) and keeps
//! the Hub's tensor names unchanged. GPT-2 stores its projections as `Conv1D` weights of
//! shape `[in, out]`, so every projection here is `x @ W + b` with no transpose.

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

/// The fields of a Hugging Face GPT-2 `config.json` that change the math. The shape fields
/// are required (a config without them is not one we can trust to mean GPT-2's defaults);
/// the switches default as `transformers.GPT2Config` does.
#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size: rows of `wte`.
    pub vocab_size: usize,
    /// Context length: rows of `wpe`; longer texts are rejected, never truncated.
    pub n_positions: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// MLP inner size; `null` means `4 * n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Name of the MLP activation (`gelu_new` for every released GPT-2).
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Epsilon of every LayerNorm.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Divide attention scores by `sqrt(head_dim)`.
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    /// Also divide attention scores of block `i` by `i + 1`.
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Cross-attention blocks (encoder-decoder use); not supported.
    #[serde(default)]
    pub add_cross_attention: bool,
    /// `model_type` as written by transformers; checked to be `gpt2` when present.
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_activation() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

impl Gpt2Config {
    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let cfg: Self = super::error::read_config(
            path,
            "a GPT-2 config.json from the Hub has vocab_size, n_positions, n_embd, n_layer and n_head",
        )?;
        cfg.check(path)?;
        Ok(cfg)
    }

    fn check(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |field: &str, value: String, fix: &str| ModelError::UnsupportedConfig {
            path: path.to_path_buf(),
            field: field.to_string(),
            value,
            fix: fix.to_string(),
        };
        if let Some(mt) = &self.model_type {
            if mt != "gpt2" {
                return Err(bad(
                    "model_type",
                    mt.clone(),
                    "this loader reads GPT-2 family configs (model_type \"gpt2\")",
                ));
            }
        }
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            if v == 0 {
                return Err(bad(field, "0".into(), "must be at least 1"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(bad(
                "n_head",
                self.n_head.to_string(),
                &format!("must divide n_embd = {}", self.n_embd),
            ));
        }
        if self.n_inner == Some(0) {
            return Err(bad("n_inner", "0".into(), "use null for 4 * n_embd"));
        }
        if Activation::parse(&self.activation_function).is_none() {
            return Err(bad(
                "activation_function",
                self.activation_function.clone(),
                &format!("supported: {}", Activation::SUPPORTED),
            ));
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return Err(bad(
                "layer_norm_epsilon",
                self.layer_norm_epsilon.to_string(),
                "must be positive",
            ));
        }
        if self.add_cross_attention {
            return Err(bad(
                "add_cross_attention",
                "true".into(),
                "cross-attention GPT-2 (encoder-decoder) is not supported",
            ));
        }
        Ok(())
    }

    fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    fn activation(&self) -> Activation {
        // check() has already rejected unknown names.
        Activation::parse(&self.activation_function).unwrap_or(Activation::GeluTanh)
    }
}

struct Attention {
    c_attn: Dense,
    c_proj: Dense,
    n_head: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    fn load(w: &Scope, cfg: &Gpt2Config, layer_idx: usize) -> Result<Self, ModelError> {
        let c = cfg.n_embd;
        let head_dim = c / cfg.n_head;
        let mut scale = 1.0;
        if cfg.scale_attn_weights {
            scale /= (head_dim as f64).sqrt();
        }
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (layer_idx + 1) as f64;
        }
        // `attn.bias` / `attn.masked_bias` are mask buffers the Hub file carries; we build
        // the mask from the batch instead, so they are never read.
        Ok(Self {
            c_attn: w.pp("c_attn").conv1d(c, 3 * c)?,
            c_proj: w.pp("c_proj").conv1d(c, c)?,
            n_head: cfg.n_head,
            head_dim,
            scale,
        })
    }

    /// `x`: `[rows, c]` after `ln_1`, the batch's texts packed. Returns `residual + attn(x)`.
    fn forward(&self, x: &[f32], residual: &[f32], batch: &Batch, tap: &mut Tap) -> Vec<f32> {
        let c = self.n_head * self.head_dim;
        // [rows, 3c]: transformers splits q|k|v along the last axis, then each into heads,
        // which is exactly where the views below read them.
        let qkv = self.c_attn.forward(x);
        let view = |part: usize| HeadView {
            data: &qkv,
            row_stride: 3 * c,
            offset: part * c,
        };
        let shape = AttentionShape {
            n_head: self.n_head,
            n_kv_head: self.n_head,
            head_dim: self.head_dim,
            scale: self.scale as f32,
            causal: true,
            window: None,
            softcap: None,
        };
        let out = tap.attention((view(0), view(1), view(2)), shape, batch.spans());
        tap.residual(Site::AttnOut, &self.c_proj, &out, residual)
    }
}

struct Mlp {
    c_fc: Dense,
    c_proj: Dense,
    act: Activation,
}

impl Mlp {
    fn load(w: &Scope, cfg: &Gpt2Config) -> Result<Self, ModelError> {
        Ok(Self {
            c_fc: w.pp("c_fc").conv1d(cfg.n_embd, cfg.inner())?,
            c_proj: w.pp("c_proj").conv1d(cfg.inner(), cfg.n_embd)?,
            act: cfg.activation(),
        })
    }

    /// `x`: `[rows, c]` after `ln_2`. Returns `residual + mlp(x)`.
    fn forward(&self, x: &[f32], residual: &[f32], tap: &mut Tap) -> candle_core::Result<Vec<f32>> {
        let mut h = self.c_fc.matmul(x);
        self.act.apply_with_bias(&mut h, self.c_fc.bias())?;
        tap.pass(Site::MlpAct, &mut h);
        Ok(tap.residual(Site::MlpOut, &self.c_proj, &h, residual))
    }
}

struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn load(w: &Scope, cfg: &Gpt2Config, layer_idx: usize) -> Result<Self, ModelError> {
        let eps = cfg.layer_norm_epsilon;
        Ok(Self {
            ln_1: LayerNorm::load(&w.pp("ln_1"), cfg.n_embd, eps)?,
            attn: Attention::load(&w.pp("attn"), cfg, layer_idx)?,
            ln_2: LayerNorm::load(&w.pp("ln_2"), cfg.n_embd, eps)?,
            mlp: Mlp::load(&w.pp("mlp"), cfg)?,
        })
    }

    /// `x`: `[rows, c]` -> the block's output, in a new buffer (`x` is kept as a hidden
    /// state, so it is never updated in place).
    fn forward(&self, x: &[f32], batch: &Batch, tap: &mut Tap) -> candle_core::Result<Vec<f32>> {
        let h = self.attn.forward(&self.ln_1.forward(x), x, batch, tap);
        let m = self.ln_2.forward(&h);
        tap.keep(Site::MlpIn, &m);
        self.mlp.forward(&m, &h, tap)
    }
}

/// GPT-2 (`GPT2Model`, no LM head): the whole family, distilgpt2 to gpt2-xl.
pub struct Gpt2 {
    /// `[vocab, c]`; also the tied unembedding.
    wte: RowMatrix,
    /// `[n_positions, c]`.
    wpe: RowMatrix,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    info: ModelInfo,
}

impl Gpt2 {
    /// Loads the weights under `w`, with or without the `transformer.` prefix.
    fn load(w: Scope, cfg: &Gpt2Config) -> Result<Self, ModelError> {
        let w = w.nested("transformer", "wte.weight");
        let c = cfg.n_embd;
        // In the file's order, so a mismatch names the first tensor a reader meets.
        let wte = w.pp("wte").table(cfg.vocab_size, c)?;
        let wpe = w.pp("wpe").table(cfg.n_positions, c)?;
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::load(&w.pp(format!("h.{i}")), cfg, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            wte,
            wpe,
            blocks,
            ln_f: LayerNorm::load(&w.pp("ln_f"), c, cfg.layer_norm_epsilon)?,
            info: info(cfg),
        })
    }
}

impl Stack for Gpt2 {
    type Shared = ();

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn readout(&self) -> Option<&dyn super::stack::Readout> {
        Some(self)
    }

    /// Token + position embeddings.
    fn embed(&self, ids: &[usize], batch: &Batch) -> (Vec<f32>, ()) {
        let mut x = self.wte.gather(ids);
        super::stack::add_positions(&mut x, &self.wpe, batch, self.info.hidden_size);
        (x, ())
    }

    fn block(
        &self,
        i: usize,
        x: &[f32],
        batch: &Batch,
        _: &(),
        tap: &mut Tap,
    ) -> Result<Vec<f32>, ModelError> {
        Ok(self.blocks[i].forward(x, batch, tap)?)
    }

    fn last(&self, x: &[f32]) -> Vec<f32> {
        self.ln_f.forward(x)
    }
}

impl super::stack::Readout for Gpt2 {
    fn vocab(&self) -> usize {
        self.info.vocab_size
    }

    fn logits(&self, rows: &[f32], out: &mut [f32]) {
        let c = self.info.hidden_size;
        self.wte
            .logits(&self.ln_f.forward(rows), rows.len() / c, out);
    }
}

/// Shape and labels of a GPT-2 with this config.
pub fn info(cfg: &Gpt2Config) -> ModelInfo {
    ModelInfo {
        layer_norm: true,
        ..ModelInfo::decoder(
            "gpt2",
            cfg.n_layer,
            cfg.n_embd,
            cfg.n_positions,
            cfg.vocab_size,
        )
        .with_block(cfg.n_head, cfg.n_embd / cfg.n_head, cfg.inner())
    }
}

/// GPT-2 in the table of families.
pub(crate) struct Family;

impl Architecture for Family {
    fn model_types(&self) -> &'static [&'static str] {
        &["gpt2"]
    }
    fn gguf_architectures(&self) -> &'static [&'static str] {
        &["gpt2"]
    }
    fn config_params(&self, config: &Path) -> Result<Box<dyn Params>, ModelError> {
        Ok(Box::new(Gpt2Config::from_file(config)?))
    }
    fn gguf_params(&self, meta: &Meta) -> Result<Box<dyn Params>, ModelError> {
        Ok(Box::new(from_gguf_meta(meta)?))
    }
}

impl Params for Gpt2Config {
    fn info(&self) -> ModelInfo {
        info(self)
    }
    fn n_head(&self) -> usize {
        self.n_head
    }
    /// GPT-2's tensors, with or without the `transformer.` prefix.
    fn load(&self, store: &dyn Store) -> Result<Box<dyn HiddenStateModel>, ModelError> {
        Ok(Box::new(Gpt2::load(Scope::root(store), self)?))
    }
}

/// GPT-2. The converter also writes the tied head as `output.weight`; GPT-2 unembeds with
/// its token embedding either way.
fn from_gguf_meta(m: &Meta) -> Result<Gpt2Config, ModelError> {
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
