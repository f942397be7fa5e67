//! Seeded random GPT-2 checkpoints in the Hub's own file layout, for benchmarks and for tests
//! at real sizes (12 x 768 and up) on machines that cannot download real weights.
//!
//! Not a substitute for parity fixtures: those come from `transformers` itself
//! (`tests/fixtures/make_gpt2_fixtures.py`). This only makes files of the right shape.

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

/// Shape of a synthetic GPT-2.
#[derive(Debug, Clone, Copy)]
pub struct SynthGpt2 {
    /// Blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Heads.
    pub n_head: usize,
    /// Context length.
    pub n_positions: usize,
    /// Vocabulary (50257 for the real GPT-2 vocabulary).
    pub vocab_size: usize,
}

impl SynthGpt2 {
    /// The shape of `gpt2` (124M).
    pub const GPT2_124M: Self = Self {
        n_layer: 12,
        n_embd: 768,
        n_head: 12,
        n_positions: 1024,
        vocab_size: 50257,
    };

    /// Writes `config.json` and `model.safetensors` (no `transformer.` prefix, no `lm_head`,
    /// `h.N.attn.bias` mask buffers included, as the Hub's `gpt2` has) into `dir`.
    pub fn write(&self, dir: &Path, seed: u64) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let config = serde_json::json!({
            "activation_function": "gelu_new",
            "architectures": ["GPT2LMHeadModel"],
            "layer_norm_epsilon": 1e-5,
            "model_type": "gpt2",
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_head": self.n_head,
            "n_inner": null,
            "n_layer": self.n_layer,
            "n_positions": self.n_positions,
            "scale_attn_weights": true,
            "vocab_size": self.vocab_size,
        });
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&config).map_err(std::io::Error::other)?,
        )?;

        let mut rng = Rng(seed);
        let c = self.n_embd;
        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, f: &mut dyn FnMut() -> f32| {
            let n = shape.iter().product();
            tensors.push((name, shape, (0..n).map(|_| f()).collect()));
        };
        add("wte.weight".into(), vec![self.vocab_size, c], &mut || {
            rng.normal(0.02)
        });
        add("wpe.weight".into(), vec![self.n_positions, c], &mut || {
            rng.normal(0.01)
        });
        let n = self.n_positions;
        for i in 0..self.n_layer {
            let p = |s: &str| format!("h.{i}.{s}");
            for ln in ["ln_1", "ln_2"] {
                add(p(&format!("{ln}.weight")), vec![c], &mut || {
                    1.0 + rng.normal(0.1)
                });
                add(p(&format!("{ln}.bias")), vec![c], &mut || rng.normal(0.02));
            }
            for (name, n_in, n_out) in [
                ("attn.c_attn", c, 3 * c),
                ("attn.c_proj", c, c),
                ("mlp.c_fc", c, 4 * c),
                ("mlp.c_proj", 4 * c, c),
            ] {
                add(p(&format!("{name}.weight")), vec![n_in, n_out], &mut || {
                    rng.normal(0.02)
                });
                add(p(&format!("{name}.bias")), vec![n_out], &mut || {
                    rng.normal(0.02)
                });
            }
            let mut k = 0usize;
            add(p("attn.bias"), vec![1, 1, n, n], &mut || {
                let (row, col) = (k / n, k % n);
                k += 1;
                if col <= row {
                    1.0
                } else {
                    0.0
                }
            });
        }
        add("ln_f.weight".into(), vec![c], &mut || 1.0 + rng.normal(0.1));
        add("ln_f.bias".into(), vec![c], &mut || rng.normal(0.02));

        let bytes: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let views = tensors
            .iter()
            .zip(&bytes)
            .map(|((name, shape, _), b)| {
                TensorView::new(Dtype::F32, shape.clone(), b)
                    .map(|v| (name.clone(), v))
                    .map_err(std::io::Error::other)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(meta), &dir.join("model.safetensors"))
            .map_err(std::io::Error::other)
    }
}

/// splitmix64 with Box-Muller: seeded, dependency-free, good enough for weights.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self, std: f64) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
    }
}
