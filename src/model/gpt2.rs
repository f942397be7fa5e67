//! GPT-2 on candle, returning every hidden state with `transformers`' semantics.
//!
//! candle-transformers has no GPT-2, so this follows the layout of its model files
//! (`Config` from `config.json`, private blocks with `load(vb, cfg)` + `forward`) and keeps
//! the Hub's tensor names unchanged. GPT-2 stores its projections as `Conv1D` weights of
//! shape `[in, out]`, so every projection here is `x @ W + b` with no transpose.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::Deserialize;

use super::kernels::{self, AttentionShape, Dense, HeadView};
use super::{HiddenStateModel, ModelError, ModelInfo, TextStates};

/// The activation functions `transformers`' `ACT2FN` maps GPT-2's `activation_function` to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation GPT-2 was trained with.
    GeluTanh,
    /// `gelu`: the exact erf form.
    GeluErf,
    /// `gelu_fast`: the tanh form written as `x * 0.7978845608 * (1 + 0.044715 x^2)`.
    GeluFast,
    /// `quick_gelu`: `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
    /// `tanh`.
    Tanh,
}

impl Activation {
    const SUPPORTED: &'static str =
        "gelu_new, gelu_pytorch_tanh, gelu, gelu_fast, quick_gelu, relu, silu, swish, tanh";

    /// The activation `transformers`' `ACT2FN` maps `name` to.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            "gelu" => Self::GeluErf,
            "gelu_fast" => Self::GeluFast,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            "tanh" => Self::Tanh,
            _ => return None,
        })
    }

    /// Every name [`Activation::parse`] accepts, for messages.
    pub fn supported() -> &'static str {
        Self::SUPPORTED
    }

    /// Applies the activation to every element of `v`.
    pub fn apply_in_place(self, v: &mut [f32]) -> candle_core::Result<()> {
        // The rarer activations keep candle's implementations.
        let candle = |v: &mut [f32], f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| {
            let x = Tensor::from_slice(v, v.len(), &Device::Cpu)?;
            v.copy_from_slice(&f(&x)?.to_vec1::<f32>()?);
            Ok(())
        };
        match self {
            // candle's unary ops run on one core; the MLP's activation is large enough
            // (tokens x 4*n_embd) that a parallel pass cuts it ~2x on two cores.
            Self::GeluTanh | Self::GeluFast => {
                v.par_chunks_mut(1 << 14).for_each(kernels::gelu_tanh);
                Ok(())
            }
            Self::GeluErf => candle(v, &|x| x.gelu_erf()),
            Self::QuickGelu => candle(v, &|x| x * candle_nn::ops::sigmoid(&(x * 1.702)?)?),
            Self::Relu => candle(v, &|x| x.relu()),
            Self::Silu => candle(v, &|x| x.silu()),
            Self::Tanh => candle(v, &|x| x.tanh()),
        }
    }

    /// `v = act(v + bias)` on rows of `bias.len()` (no bias: `act(v)`). The GELU adds the
    /// bias in its own pass, which saves a pass over the MLP's widest buffer.
    pub fn apply_with_bias(self, v: &mut [f32], bias: Option<&[f32]>) -> candle_core::Result<()> {
        match (self, bias) {
            (_, None) => self.apply_in_place(v),
            (Self::GeluTanh | Self::GeluFast, Some(b)) => {
                kernels::bias_gelu_tanh_rows(v, b);
                Ok(())
            }
            (_, Some(b)) => {
                kernels::add_bias_rows(v, b);
                self.apply_in_place(v)
            }
        }
    }
}

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
        let cfg: Self = super::read_config(
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

/// A LayerNorm computed in two passes with f64 sums. candle's fused layer-norm uses
/// `E[x^2] - E[x]^2` in f32, which loses digits when a row's mean is large next to its
/// spread (GPT-2's residual stream has such rows); torch does not, so neither do we.
pub(crate) struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f64,
}

impl LayerNorm {
    pub(crate) fn load(vb: VarBuilder, dim: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?.to_vec1()?,
            bias: vb.get(dim, "bias")?.to_vec1()?,
            eps,
        })
    }

    /// `x`: `[rows, dim]` -> normalized copy.
    pub(crate) fn forward(&self, x: &[f32]) -> Vec<f32> {
        let dim = self.weight.len();
        let mut data = x.to_vec();
        data.par_chunks_mut(dim)
            .for_each(|row| kernels::layer_norm_row(row, &self.weight, &self.bias, self.eps));
        data
    }
}

/// A `Conv1D` projection: weight `[in, out]`, bias `[out]`.
fn conv1d(vb: &VarBuilder, name: &str, n_in: usize, n_out: usize) -> candle_core::Result<Dense> {
    let vb = vb.pp(name);
    let w = super::weight_vec(&vb, (n_in, n_out), "weight")?;
    let b = vb.get(n_out, "bias")?.to_vec1()?;
    Ok(Dense::in_major(w, n_in, n_out, Some(b)))
}

struct Attention {
    c_attn: Dense,
    c_proj: Dense,
    n_head: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &Gpt2Config, layer_idx: usize) -> candle_core::Result<Self> {
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
            c_attn: conv1d(&vb, "c_attn", c, 3 * c)?,
            c_proj: conv1d(&vb, "c_proj", c, c)?,
            n_head: cfg.n_head,
            head_dim,
            scale,
        })
    }

    /// `x`: `[b*t, c]` after `ln_1`; `lengths`: real tokens of each sequence (the rest is
    /// padding). Returns `residual + attn(x)`.
    fn forward(
        &self,
        x: &[f32],
        residual: &[f32],
        b: usize,
        t: usize,
        lengths: &[usize],
    ) -> Vec<f32> {
        let c = self.n_head * self.head_dim;
        // [b*t, 3c]: transformers splits q|k|v along the last axis, then each into heads,
        // which is exactly where the views below read them.
        let qkv = self.c_attn.forward(x);
        let view = |part: usize| HeadView {
            data: &qkv,
            row_stride: 3 * c,
            offset: part * c,
        };
        let shape = AttentionShape {
            batch: b,
            seq: t,
            n_head: self.n_head,
            n_kv_head: self.n_head,
            head_dim: self.head_dim,
            scale: self.scale as f32,
            causal: true,
        };
        let out = kernels::attention(view(0), view(1), view(2), shape, lengths);
        self.c_proj.forward_residual(&out, residual)
    }
}

struct Mlp {
    c_fc: Dense,
    c_proj: Dense,
    act: Activation,
}

impl Mlp {
    fn load(vb: VarBuilder, cfg: &Gpt2Config) -> candle_core::Result<Self> {
        Ok(Self {
            c_fc: conv1d(&vb, "c_fc", cfg.n_embd, cfg.inner())?,
            c_proj: conv1d(&vb, "c_proj", cfg.inner(), cfg.n_embd)?,
            act: cfg.activation(),
        })
    }

    /// `x`: `[rows, c]` after `ln_2`. Returns `residual + mlp(x)`.
    fn forward(&self, x: &[f32], residual: &[f32]) -> candle_core::Result<Vec<f32>> {
        let mut h = self.c_fc.matmul(x);
        self.act.apply_with_bias(&mut h, self.c_fc.bias())?;
        Ok(self.c_proj.forward_residual(&h, residual))
    }
}

struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &Gpt2Config, layer_idx: usize) -> candle_core::Result<Self> {
        let eps = cfg.layer_norm_epsilon;
        Ok(Self {
            ln_1: LayerNorm::load(vb.pp("ln_1"), cfg.n_embd, eps)?,
            attn: Attention::load(vb.pp("attn"), cfg, layer_idx)?,
            ln_2: LayerNorm::load(vb.pp("ln_2"), cfg.n_embd, eps)?,
            mlp: Mlp::load(vb.pp("mlp"), cfg)?,
        })
    }

    /// `x`: `[b*t, c]` -> the block's output, in a new buffer (`x` is kept as a hidden
    /// state, so it is never updated in place).
    fn forward(
        &self,
        x: &[f32],
        b: usize,
        t: usize,
        lengths: &[usize],
    ) -> candle_core::Result<Vec<f32>> {
        let h = self.attn.forward(&self.ln_1.forward(x), x, b, t, lengths);
        self.mlp.forward(&self.ln_2.forward(&h), &h)
    }
}

/// GPT-2 (`GPT2Model`, no LM head): the whole family, distilgpt2 to gpt2-xl.
pub struct Gpt2 {
    /// `[vocab, c]`.
    wte: Vec<f32>,
    /// `[n_positions, c]`.
    wpe: Vec<f32>,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    info: ModelInfo,
}

impl Gpt2 {
    /// Loads the weights under `vb`, with or without the `transformer.` prefix.
    pub fn load(vb: VarBuilder, cfg: &Gpt2Config) -> candle_core::Result<Self> {
        let vb = if vb.contains_tensor("transformer.wte.weight") {
            vb.pp("transformer")
        } else {
            vb
        };
        let c = cfg.n_embd;
        let wte = super::weight_vec(&vb, (cfg.vocab_size, c), "wte.weight")?;
        let wpe = super::weight_vec(&vb, (cfg.n_positions, c), "wpe.weight")?;
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::load(vb.pp(format!("h.{i}")), cfg, i))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ln_f = LayerNorm::load(vb.pp("ln_f"), c, cfg.layer_norm_epsilon)?;
        let info = info(cfg);
        Ok(Self {
            wte,
            wpe,
            blocks,
            ln_f,
            info,
        })
    }
}

impl HiddenStateModel for Gpt2 {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<TextStates>, ModelError> {
        let Some(super::Padded { lengths, t, ids }) =
            super::pad_batch(batch, self.info.vocab_size)?
        else {
            return Ok(Vec::new());
        };
        let (b, c) = (batch.len(), self.info.hidden_size);
        // token + position embeddings, [b*t, c]
        let mut x = Vec::with_capacity(b * t * c);
        for (r, &id) in ids.iter().enumerate() {
            let (tok, pos) = (id * c, (r % t) * c);
            x.extend(
                self.wte[tok..tok + c]
                    .iter()
                    .zip(&self.wpe[pos..pos + c])
                    .map(|(a, b)| a + b),
            );
        }

        let mut states = Vec::with_capacity(self.blocks.len() + 1);
        for block in &self.blocks {
            let next = block.forward(&x, b, t, &lengths)?;
            states.push(std::mem::replace(&mut x, next));
        }
        let last = self.ln_f.forward(&x);
        let pre_final = x;
        states.push(last);

        super::cut_batch(states, pre_final, &lengths, t, c)
    }

    fn readout(&self) -> Option<&dyn super::Readout> {
        Some(self)
    }
}

impl super::Readout for Gpt2 {
    fn vocab(&self) -> usize {
        self.info.vocab_size
    }

    fn logits(&self, rows: &[f32], out: &mut [f32]) {
        let c = self.info.hidden_size;
        let normed = self.ln_f.forward(rows);
        kernels::matmul_transposed(
            &normed,
            &self.wte,
            rows.len() / c,
            c,
            self.info.vocab_size,
            out,
        );
    }
}

/// Shape and labels of a GPT-2 with this config.
pub fn info(cfg: &Gpt2Config) -> ModelInfo {
    ModelInfo::decoder(
        "gpt2",
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_positions,
        cfg.vocab_size,
    )
}

/// Loads GPT-2 from a checked config and safetensors files (one file, or every shard).
pub fn load(cfg: &Gpt2Config, weights: &[std::path::PathBuf]) -> Result<Gpt2, ModelError> {
    super::load_safetensors(weights, |vb| Gpt2::load(vb, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_keeps_digits_with_a_large_mean() {
        // A row with mean 3000 and spread 1: E[x^2]-E[x]^2 in f32 would lose it all.
        let ln = LayerNorm {
            weight: vec![1.0; 4],
            bias: vec![0.0; 4],
            eps: 1e-5,
        };
        let y = ln.forward(&[2999.0f32, 3001.0, 2999.0, 3001.0]);
        for (a, b) in y.iter().zip([-1.0f32, 1.0, -1.0, 1.0]) {
            assert!((a - b).abs() < 1e-4, "{y:?}");
        }
    }

    #[test]
    fn fast_tanh_is_accurate() {
        let mut worst = 0f64;
        for i in -40_000..=40_000 {
            let u = i as f32 * 2.5e-4;
            worst = worst.max((kernels::tanh_fast(u) as f64 - (u as f64).tanh()).abs());
        }
        assert!(worst < 2e-7, "{worst}");
        assert_eq!(kernels::tanh_fast(100.0), 1.0);
        assert_eq!(kernels::tanh_fast(-100.0), -1.0);
        assert_eq!(kernels::tanh_fast(0.0), 0.0);
    }

    #[test]
    fn activation_names_follow_act2fn() {
        assert_eq!(Activation::parse("gelu_new"), Some(Activation::GeluTanh));
        assert_eq!(Activation::parse("gelu"), Some(Activation::GeluErf));
        assert_eq!(Activation::parse("swish"), Some(Activation::Silu));
        assert_eq!(Activation::parse("mish"), None);
    }

    #[test]
    fn activations_match_their_formulas() {
        let xs = [-3.0f32, -0.5, 0.0, 0.7, 2.5];
        let gelu_tanh = |v: f64| {
            0.5 * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
        };
        let quick = |v: f64| v / (1.0 + (-1.702 * v).exp());
        for (act, f) in [
            (Activation::GeluTanh, &gelu_tanh as &dyn Fn(f64) -> f64),
            (Activation::QuickGelu, &quick),
            (Activation::Relu, &|v: f64| v.max(0.0)),
            (Activation::Silu, &|v: f64| v / (1.0 + (-v).exp())),
        ] {
            let mut y = xs.to_vec();
            act.apply_in_place(&mut y).unwrap();
            for (&v, &got) in xs.iter().zip(&y) {
                assert!(
                    (got as f64 - f(v as f64)).abs() < 1e-5,
                    "{act:?}({v}) = {got}"
                );
            }
        }
    }
}
