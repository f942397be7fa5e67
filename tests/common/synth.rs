//! Seeded random checkpoints in the Hub's own file layout, for benchmarks and for tests at
//! real sizes (a 124M GPT-2, a 1.1B bf16 Llama) on machines that cannot download real
//! weights.
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

/// Shape of a synthetic Llama, written in bf16 as most released checkpoints are.
#[derive(Debug, Clone, Copy)]
pub struct SynthLlama {
    /// Blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub hidden: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Vocabulary.
    pub vocab_size: usize,
    /// Context length.
    pub max_positions: usize,
    /// Safetensors shards the weights are split into (with `model.safetensors.index.json`).
    pub shards: usize,
}

impl SynthLlama {
    /// TinyLlama-1.1B's shape: 22 layers, 2048 wide, 32 heads, 4 key/value heads.
    pub const TINYLLAMA_1B: Self = Self {
        n_layer: 22,
        hidden: 2048,
        intermediate: 5632,
        n_head: 32,
        n_kv_head: 4,
        vocab_size: 32000,
        max_positions: 2048,
        shards: 2,
    };

    /// Writes `config.json`, the bf16 shards and their index into `dir` (no tokenizer).
    pub fn write(&self, dir: &Path, seed: u64) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let config = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.n_layer,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_kv_head,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_positions,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": false,
            "torch_dtype": "bfloat16",
        });
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&config).map_err(std::io::Error::other)?,
        )?;
        let mut rng = Rng(seed);
        let names = self.tensor_names();
        let per_shard = names.len().div_ceil(self.shards);
        let mut weight_map = serde_json::Map::new();
        for (k, chunk) in names.chunks(per_shard).enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", k + 1, self.shards);
            let data: Vec<Vec<u8>> = chunk
                .iter()
                .map(|(name, shape)| bf16_bytes(&mut rng, name, shape.iter().product()))
                .collect();
            let views = chunk
                .iter()
                .zip(&data)
                .map(|((name, shape), b)| {
                    weight_map.insert(name.clone(), file.clone().into());
                    TensorView::new(Dtype::BF16, shape.clone(), b)
                        .map(|v| (name.clone(), v))
                        .map_err(std::io::Error::other)
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            let meta = std::collections::HashMap::from([("format".into(), "pt".into())]);
            safetensors::serialize_to_file(views, Some(meta), &dir.join(file))
                .map_err(std::io::Error::other)?;
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string())
    }

    /// Every tensor's name and shape, in the order of the Hub's files.
    fn tensor_names(&self) -> Vec<(String, Vec<usize>)> {
        let (c, ff) = (self.hidden, self.intermediate);
        let head_dim = c / self.n_head;
        let kv = self.n_kv_head * head_dim;
        let mut t = vec![("model.embed_tokens.weight".into(), vec![self.vocab_size, c])];
        for i in 0..self.n_layer {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            t.extend([
                (p("input_layernorm.weight"), vec![c]),
                (p("self_attn.q_proj.weight"), vec![c, c]),
                (p("self_attn.k_proj.weight"), vec![kv, c]),
                (p("self_attn.v_proj.weight"), vec![kv, c]),
                (p("self_attn.o_proj.weight"), vec![c, c]),
                (p("post_attention_layernorm.weight"), vec![c]),
                (p("mlp.gate_proj.weight"), vec![ff, c]),
                (p("mlp.up_proj.weight"), vec![ff, c]),
                (p("mlp.down_proj.weight"), vec![c, ff]),
            ]);
        }
        t.push(("model.norm.weight".into(), vec![c]));
        t.push(("lm_head.weight".into(), vec![self.vocab_size, c]));
        t
    }
}

/// `n` seeded bf16 values for tensor `name`: norm weights near 1, the rest uniform with a
/// standard deviation of 0.02 (uniform rather than normal: a billion Box-Muller draws
/// would take a minute).
fn bf16_bytes(rng: &mut Rng, name: &str, n: usize) -> Vec<u8> {
    let norm = name.ends_with("norm.weight");
    let half_width = 0.02 * 3f64.sqrt();
    let mut out = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let u = (rng.uniform() * 2.0 - 1.0) * half_width;
        let x = if norm { 1.0 + 5.0 * u } else { u };
        out.extend_from_slice(&half::bf16::from_f64(x).to_le_bytes());
    }
    out
}

/// A byte-level BPE tokenizer of `vocab` entries cut from GPT-2's (`vocab.json` and
/// `merges.txt` in `gpt2_dir`): GPT-2's ids past the 256 byte tokens are its merges in
/// order, so its first `vocab - 256` merges make exactly ids `0..vocab`.
pub fn write_gpt2_tokenizer_cut(gpt2_dir: &Path, vocab: usize, dir: &Path) -> std::io::Result<()> {
    let full: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(gpt2_dir.join("vocab.json"))?)
            .map_err(std::io::Error::other)?;
    let cut: serde_json::Map<String, serde_json::Value> = full
        .into_iter()
        .filter(|(_, id)| id.as_u64().is_some_and(|id| (id as usize) < vocab))
        .collect();
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::Value::Object(cut).to_string(),
    )?;
    let merges = std::fs::read_to_string(gpt2_dir.join("merges.txt"))?;
    let mut lines = merges.lines();
    let header = lines.next().unwrap_or_default();
    let kept: Vec<&str> = std::iter::once(header)
        .chain(lines.take(vocab.saturating_sub(256)))
        .collect();
    std::fs::write(dir.join("merges.txt"), kept.join("\n") + "\n")
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
