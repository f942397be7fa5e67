//! The sparse mixture-of-experts MLP of Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE, as
//! `transformers` computes it: a linear router, a softmax over the experts, `torch.topk`'s
//! `k` choices (ties broken as it breaks them: [`super::topk`]), their probabilities
//! renormalised to sum to 1 where the model says so, then each chosen expert's SwiGLU MLP
//! on its tokens only, scaled by its weight and added up expert by expert in index order
//! (`index_add_`'s order, so each token's sum has transformers' rounding). Qwen2-MoE adds
//! a shared expert behind a sigmoid gate.
//!
//! Only routed rows are computed: the tokens are grouped by expert and each expert runs
//! one matmul per projection over its group. What the router did is returned as a
//! [`Routing`] for the `router` analysis and the `router_logits` site.

use rayon::prelude::*;

use super::kernels::{self, Dense};
use super::topk::topk;

/// How a model's sparse layers route.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeParams {
    /// Experts per sparse layer (`num_local_experts`, `num_experts`).
    pub n_experts: usize,
    /// Experts chosen per token (`num_experts_per_tok`).
    pub top_k: usize,
    /// The chosen probabilities are divided by their sum (`norm_topk_prob`; always for
    /// Mixtral).
    pub norm_topk_prob: bool,
    /// Width of each expert's MLP (`moe_intermediate_size`; Mixtral's and OLMoE's
    /// `intermediate_size`).
    pub expert_size: usize,
    /// Width of Qwen2-MoE's shared expert (`shared_expert_intermediate_size`).
    pub shared_size: Option<usize>,
    /// Which blocks have a sparse MLP (Qwen's `decoder_sparse_step` and
    /// `mlp_only_layers`; every block elsewhere).
    pub sparse_layers: Vec<bool>,
    /// The checkpoint's names: Mixtral's `block_sparse_moe.experts.{e}.w1/w3/w2`, or
    /// `mlp.experts.{e}.gate_proj/up_proj/down_proj`.
    pub mixtral_names: bool,
}

/// One expert (or the shared expert): a SwiGLU MLP.
pub struct Expert {
    /// `gate_proj` (`w1`).
    pub gate: Dense,
    /// `up_proj` (`w3`).
    pub up: Dense,
    /// `down_proj` (`w2`).
    pub down: Dense,
}

impl Expert {
    /// `silu(gate(x)) * up(x)`: the input of the down projection (a dense block's
    /// `mlp_act`).
    pub fn act(&self, x: &[f32]) -> Vec<f32> {
        let mut gate = self.gate.forward(x);
        let up = self.up.forward(x);
        gate.par_chunks_mut(1 << 14)
            .zip(up.par_chunks(1 << 14))
            .for_each(|(g, u)| kernels::silu_mul(g, u));
        gate
    }

    /// `down(silu(gate(x)) * up(x))`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.down.forward(&self.act(x))
    }
}

/// A sparse MLP's weights.
pub struct SparseMlp {
    /// The router, `[n_experts, hidden]` (`gate`).
    pub router: Dense,
    /// The experts, in index order.
    pub experts: Vec<Expert>,
    /// Qwen2-MoE's shared expert and its gate (`shared_expert_gate`, one output).
    pub shared: Option<(Expert, Dense)>,
    /// Experts per token.
    pub top_k: usize,
    /// Renormalise the chosen probabilities.
    pub norm_topk_prob: bool,
}

/// What one sparse layer's router did, for every row of a forward.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    /// Experts.
    pub n_experts: usize,
    /// Choices per row.
    pub top_k: usize,
    /// `[rows, n_experts]` router logits, as `output_router_logits` returns them.
    pub logits: Vec<f32>,
    /// `[rows, top_k]` chosen experts, in `torch.topk`'s order.
    pub experts: Vec<u32>,
    /// `[rows, top_k]` their weights as applied.
    pub weights: Vec<f32>,
}

impl Routing {
    /// Rows `rows` of it (one text of a packed batch).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Routing {
        let (e, k) = (self.n_experts, self.top_k);
        Routing {
            n_experts: e,
            top_k: k,
            logits: self.logits[rows.start * e..rows.end * e].to_vec(),
            experts: self.experts[rows.start * k..rows.end * k].to_vec(),
            weights: self.weights[rows.start * k..rows.end * k].to_vec(),
        }
    }

    /// The rows that chose expert `e`, in row order, with the weight each gives it.
    fn members(&self, e: u32) -> Vec<(usize, f32)> {
        self.experts
            .iter()
            .zip(&self.weights)
            .enumerate()
            .filter(|(_, (&x, _))| x == e)
            .map(|(i, (_, &w))| (i / self.top_k, w))
            .collect()
    }
}

impl SparseMlp {
    /// The layer's output for `h` (`[rows, width]`), and what the router did.
    pub fn forward(&self, h: &[f32], width: usize) -> (Vec<f32>, Routing) {
        let routing = self.route(h);
        let mut out = vec![0f32; h.len()];
        for (e, expert) in self.experts.iter().enumerate() {
            let members = routing.members(e as u32);
            if members.is_empty() {
                continue;
            }
            let mut x = Vec::with_capacity(members.len() * width);
            for &(row, _) in &members {
                x.extend_from_slice(&h[row * width..(row + 1) * width]);
            }
            let y = expert.forward(&x);
            for (&(row, weight), y) in members.iter().zip(y.chunks_exact(width)) {
                for (o, &v) in out[row * width..(row + 1) * width].iter_mut().zip(y) {
                    *o += v * weight;
                }
            }
        }
        if let Some((shared, gate)) = &self.shared {
            let y = shared.forward(h);
            let g = gate.forward(h);
            for ((o, y), &g) in out
                .chunks_exact_mut(width)
                .zip(y.chunks_exact(width))
                .zip(&g)
            {
                let s = sigmoid(g);
                o.iter_mut().zip(y).for_each(|(o, &y)| *o += s * y);
            }
        }
        (out, routing)
    }

    /// The router's logits, softmax and choices for every row.
    fn route(&self, h: &[f32]) -> Routing {
        let logits = self.router.forward(h);
        let n = self.experts.len();
        let k = self.top_k;
        let rows = logits.len() / n.max(1);
        let mut experts = vec![0u32; rows * k];
        let mut weights = vec![0f32; rows * k];
        experts
            .par_chunks_mut(k)
            .zip(weights.par_chunks_mut(k))
            .zip(logits.par_chunks(n))
            .for_each(|((e, w), z)| {
                let p: Vec<f32> = probabilities(z).into_iter().map(|p| p as f32).collect();
                let chosen = topk(&p, k);
                let sum: f32 = chosen.iter().map(|&i| p[i]).sum();
                for ((e, w), &i) in e.iter_mut().zip(w.iter_mut()).zip(&chosen) {
                    *e = i as u32;
                    *w = if self.norm_topk_prob {
                        p[i] / sum
                    } else {
                        p[i]
                    };
                }
            });
        Routing {
            n_experts: n,
            top_k: k,
            logits,
            experts,
            weights,
        }
    }
}

/// The router's softmax of one row, in f64: the model rounds it to f32 as torch's f32
/// softmax gives it (torch sums in f32 lanes; the difference is far below the tolerance,
/// and a choice it could flip needs two probabilities within an f32 ulp), the `router`
/// analysis sums it as is.
pub fn probabilities(z: &[f32]) -> Vec<f64> {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// `sigmoid(x)`, in f64 rounded to f32.
fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + (-(x as f64)).exp())) as f32
}

/// The routing fields of a `config.json`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct RawMoe {
    num_local_experts: Option<usize>,
    num_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    norm_topk_prob: Option<bool>,
    moe_intermediate_size: Option<usize>,
    shared_expert_intermediate_size: Option<usize>,
    decoder_sparse_step: Option<usize>,
    mlp_only_layers: Option<Vec<usize>>,
    n_group: Option<serde_json::Value>,
    topk_group: Option<serde_json::Value>,
    topk_method: Option<serde_json::Value>,
    scoring_func: Option<serde_json::Value>,
    routed_scaling_factor: Option<serde_json::Value>,
    n_shared_experts: Option<serde_json::Value>,
    first_k_dense_replace: Option<serde_json::Value>,
}

/// How strata routes, as a refusal of other routing says it (configs and GGUF files alike).
pub(crate) const ROUTING: &str =
    "strata routes as Mixtral, Qwen-MoE and OLMoE do (a softmax over every expert, then top-k)";

/// How wide each expert's MLP is when config.json does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertWidth {
    /// The config's `intermediate_size` (Mixtral, OLMoE).
    Intermediate,
    /// `moe_intermediate_size`, by default this (Qwen-MoE).
    Moe(usize),
}

/// A Llama variant's routing, with transformers' defaults for what its config.json
/// leaves out: a row of the variants table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeDefaults {
    /// Experts per sparse block (`num_local_experts` / `num_experts`).
    pub n_experts: usize,
    /// Experts chosen per token (`num_experts_per_tok`).
    pub top_k: usize,
    /// The chosen weights are renormalised whatever the config says (`Some(true)`:
    /// Mixtral), or as `norm_topk_prob` says (`None`).
    pub renormalise: Option<bool>,
    /// Each expert's width.
    pub expert_width: ExpertWidth,
    /// A shared expert beside the routed ones, this wide by default
    /// (`shared_expert_intermediate_size`: Qwen2-MoE).
    pub shared_width: Option<usize>,
    /// Only every `decoder_sparse_step`-th block is sparse, less `mlp_only_layers`
    /// (Qwen-MoE); otherwise every block is.
    pub sparse_step: bool,
    /// Experts are named as Mixtral's (`block_sparse_moe.experts.E.w1`).
    pub mixtral_names: bool,
}

impl RawMoe {
    /// The routing of a variant with `defaults` (`None` for a dense one).
    /// `intermediate_size` is the config's. An error is (field, value, fix).
    pub(crate) fn params(
        &self,
        defaults: Option<&MoeDefaults>,
        intermediate_size: Option<usize>,
        n_layer: usize,
    ) -> Result<Option<MoeParams>, super::ops::BadField> {
        self.refuse_other_routing()?;
        let Some(d) = defaults else {
            return Ok(None);
        };
        let size = match d.expert_width {
            ExpertWidth::Intermediate => intermediate_size,
            ExpertWidth::Moe(default) => self.moe_intermediate_size.or(Some(default)),
        };
        let positive = |v: Option<usize>, field: &'static str| {
            v.filter(|&n| n > 0)
                .ok_or_else(|| (field, format!("{v:?}"), "a positive integer".to_string()))
        };
        // transformers writes either name, whichever the class maps the other to.
        let n_experts = positive(
            self.num_local_experts
                .or(self.num_experts)
                .or(Some(d.n_experts)),
            "num_experts",
        )?;
        let top_k = positive(
            self.num_experts_per_tok.or(Some(d.top_k)),
            "num_experts_per_tok",
        )?;
        if top_k > n_experts {
            return Err((
                "num_experts_per_tok",
                top_k.to_string(),
                format!("at most the {n_experts} experts"),
            ));
        }
        let step = positive(self.decoder_sparse_step.or(Some(1)), "decoder_sparse_step")?;
        let only = self.mlp_only_layers.clone().unwrap_or_default();
        Ok(Some(MoeParams {
            n_experts,
            top_k,
            norm_topk_prob: d
                .renormalise
                .unwrap_or(self.norm_topk_prob.unwrap_or(false)),
            expert_size: positive(size, "moe_intermediate_size")?,
            shared_size: match d.shared_width {
                Some(default) => Some(positive(
                    self.shared_expert_intermediate_size.or(Some(default)),
                    "shared_expert_intermediate_size",
                )?),
                None => None,
            },
            sparse_layers: (0..n_layer)
                .map(|l| !d.sparse_step || (!only.contains(&l) && (l + 1) % step == 0))
                .collect(),
            mixtral_names: d.mixtral_names,
        }))
    }

    /// DeepSeek-style routing (expert groups, sigmoid scores, scaled weights, shared
    /// experts counted apart, leading dense layers) is not what these models do: a config
    /// that asks for it is refused by its field rather than routed another way.
    fn refuse_other_routing(&self) -> Result<(), super::ops::BadField> {
        let fields = [
            ("n_group", &self.n_group),
            ("topk_group", &self.topk_group),
            ("topk_method", &self.topk_method),
            ("scoring_func", &self.scoring_func),
            ("routed_scaling_factor", &self.routed_scaling_factor),
            ("n_shared_experts", &self.n_shared_experts),
            ("first_k_dense_replace", &self.first_k_dense_replace),
        ];
        let neutral = |field: &str, v: &serde_json::Value| match field {
            "scoring_func" => v == "softmax",
            "topk_method" => v == "greedy",
            "routed_scaling_factor" | "n_group" | "topk_group" => v.as_f64() == Some(1.0),
            _ => v.is_null() || v.as_f64() == Some(0.0),
        };
        for (field, value) in fields {
            if let Some(v) = value
                .as_ref()
                .filter(|v| !v.is_null() && !neutral(field, v))
            {
                return Err((
                    field,
                    v.to_string(),
                    format!("{ROUTING}; group-limited, sigmoid-scored or scaled routing (DeepSeek's) is not implemented"),
                ));
            }
        }
        Ok(())
    }
}
