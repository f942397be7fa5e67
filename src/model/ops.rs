//! The layers the model families share: normalizations, activations and rotary position
//! embeddings, each computed as `transformers` computes it.

use rayon::prelude::*;

use candle_core::{Device, Tensor};

use super::error::ModelError;
use super::kernels;
use super::weights::Scope;

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
    pub(crate) const SUPPORTED: &'static str =
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

/// A LayerNorm computed in two passes with f64 sums. candle's fused layer-norm uses
/// `E[x^2] - E[x]^2` in f32, which loses digits when a row's mean is large next to its
/// spread (GPT-2's residual stream has such rows); torch does not, so neither do we.
pub(crate) struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f64,
}

impl LayerNorm {
    /// `weight` and `bias` of `dim` under `w`.
    pub(crate) fn load(w: &Scope, dim: usize, eps: f64) -> Result<Self, ModelError> {
        Ok(Self {
            weight: w.vec("weight", &[dim])?,
            bias: w.vec("bias", &[dim])?,
            eps,
        })
    }

    /// A LayerNorm of these parameters.
    #[cfg(test)]
    pub(crate) fn new(weight: Vec<f32>, bias: Vec<f32>, eps: f64) -> Self {
        Self { weight, bias, eps }
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

/// RMSNorm as transformers computes it: `w * (x * rsqrt(mean(x^2) + eps))`, the mean
/// accumulated in f64. `x`: `[rows, w.len()]` -> normalized copy.
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let mut y = x.to_vec();
    y.par_chunks_mut(w.len())
        .for_each(|row| kernels::rms_norm_row(row, w, eps));
    y
}

/// Rotary position embeddings of one model: its frequencies and pairing.
pub(crate) struct Rope {
    /// `rotary_dim / 2` inverse frequencies.
    inv_freq: Vec<f32>,
    /// Floats per head.
    head_dim: usize,
    /// The leading floats of each head that are rotated (GPT-NeoX's partial rotary; the
    /// whole head elsewhere); the rest pass through.
    rotary_dim: usize,
    /// Pairs are adjacent (`2i`, `2i+1`), as GGUF files store q and k rows, instead of
    /// transformers' `rotate_half` pairs `i`, `i + d/2`.
    interleaved: bool,
}

/// cos and sin of every rotary angle for positions `0..t`, `[t, head_dim / 2]` each.
pub(crate) struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// Inverse frequencies computed in f32 as transformers does
    /// (`1 / base ** (arange(0, dim, 2) / dim)` with `dim = rotary_dim`), then scaled.
    pub(crate) fn new(
        head_dim: usize,
        rotary_dim: usize,
        theta: f64,
        scaling: RopeScaling,
        interleaved: bool,
    ) -> Self {
        let base = theta as f32;
        let inv_freq = (0..rotary_dim / 2)
            .map(|i| scaling.apply(1.0 / base.powf((2 * i) as f32 / rotary_dim as f32)))
            .collect();
        Self {
            inv_freq,
            head_dim,
            rotary_dim,
            interleaved,
        }
    }

    /// Every inverse frequency divided by its factor in `factors` (llama.cpp's
    /// `rope_freqs`), in f32 as llama.cpp divides the angle.
    pub(crate) fn divided_by(mut self, factors: &[f32]) -> Self {
        for (f, d) in self.inv_freq.iter_mut().zip(factors) {
            *f /= d;
        }
        self
    }

    /// The inverse frequencies.
    #[cfg(test)]
    pub(crate) fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// cos and sin for positions `0..t`: the same for q and k and for every layer, so
    /// computed once per forward (per row and per layer they cost 2 x layers x t x
    /// head_dim/2 libm calls). In f32 of the f32 angle, as transformers computes them.
    pub(crate) fn table(&self, t: usize) -> RopeTable {
        let half = self.inv_freq.len();
        let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for pos in 0..t {
            for &f in &self.inv_freq {
                let a = pos as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        RopeTable { cos, sin }
    }

    /// Rotates every head of `x` (`[rows, heads*head_dim]`) in place, row `r` at position
    /// `positions[r]`.
    pub(crate) fn apply(
        &self,
        x: &mut [f32],
        heads: usize,
        positions: &[usize],
        table: &RopeTable,
    ) {
        let d = self.head_dim;
        let half = self.rotary_dim / 2;
        let interleaved = self.interleaved;
        x.par_chunks_mut(heads * d)
            .enumerate()
            .for_each(|(r, row)| {
                let at = positions[r] * half;
                let (cos, sin) = (&table.cos[at..at + half], &table.sin[at..at + half]);
                for head in row.chunks_exact_mut(d) {
                    if interleaved {
                        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                            let (a, b) = (pair[0], pair[1]);
                            pair[0] = a * cos[i] - b * sin[i];
                            pair[1] = b * cos[i] + a * sin[i];
                        }
                    } else {
                        let (lo, hi) = head.split_at_mut(half);
                        for i in 0..half {
                            let (a, b) = (lo[i], hi[i]);
                            lo[i] = a * cos[i] - b * sin[i];
                            hi[i] = b * cos[i] + a * sin[i];
                        }
                    }
                }
            });
    }
}

impl RopeScaling {
    /// One inverse frequency, scaled.
    fn apply(self, f: f32) -> f32 {
        match self {
            Self::Default => f,
            Self::Linear { factor } => f / factor as f32,
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: orig,
            } => {
                let wavelen = 2.0 * std::f64::consts::PI / f as f64;
                let (low_wl, high_wl) = (orig / low_freq_factor, orig / high_freq_factor);
                if wavelen < high_wl {
                    f
                } else if wavelen > low_wl {
                    (f as f64 / factor) as f32
                } else {
                    let smooth =
                        (orig / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    ((1.0 - smooth) * f as f64 / factor + smooth * f as f64) as f32
                }
            }
        }
    }
}

/// How rotary frequencies are scaled (`rope_scaling` / `rope_parameters.rope_type`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RopeScaling {
    /// Plain rotary embeddings.
    #[default]
    Default,
    /// `linear`: every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// `llama3`: long wavelengths divided by `factor`, short ones kept, smooth in between.
    Llama3 {
        /// The divisor for long wavelengths.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was trained with.
        original_max_position_embeddings: f64,
    },
}

/// The supported `rope_type`s, for messages.
pub(crate) const ROPE_TYPES: &str = "default, linear, llama3";

pub(crate) fn parse_rope_scaling(v: Option<&serde_json::Value>) -> Result<RopeScaling, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(RopeScaling::Default);
    };
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let num = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_f64())
            .ok_or_else(|| format!("rope type `{kind}` needs `{k}`"))
    };
    match kind {
        "default" => Ok(RopeScaling::Default),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        other => Err(format!(
            "rope type `{other}` is not supported; supported: {ROPE_TYPES}"
        )),
    }
}

/// A config field strata cannot honour: (field, value, what would work).
pub(crate) type BadField = (&'static str, String, String);

/// A sliding window of at least one token (`None`: no window).
pub(crate) fn check_sliding_window(window: Option<usize>) -> Result<Option<usize>, BadField> {
    match window {
        Some(0) => Err((
            "sliding_window",
            "0".into(),
            "a window must hold at least one token, or be null for none".into(),
        )),
        w => Ok(w),
    }
}

/// `layer_types` as one flag per layer, true for `sliding_attention`; any other entry, or
/// a list of another length, is refused by name.
pub(crate) fn sliding_layer_types(types: &[String], n_layer: usize) -> Result<Vec<bool>, BadField> {
    if types.len() != n_layer {
        return Err((
            "layer_types",
            format!("{} entries", types.len()),
            format!("it needs one per layer, num_hidden_layers = {n_layer}"),
        ));
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            "full_attention" => Ok(false),
            "sliding_attention" => Ok(true),
            other => Err((
                "layer_types",
                format!("`{other}`"),
                "supported: full_attention, sliding_attention".into(),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_keeps_digits_with_a_large_mean() {
        // A row with mean 3000 and spread 1: E[x^2]-E[x]^2 in f32 would lose it all.
        let ln = LayerNorm::new(vec![1.0; 4], vec![0.0; 4], 1e-5);
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
