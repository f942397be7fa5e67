//! What a forward can capture besides the hidden states: the sub-block outputs of every
//! block (the capture sites) and, from inside the attention kernel, per-head attention
//! statistics or the full probabilities. Nothing is captured unless asked for, so a run
//! that asks for none pays nothing. A leaf: the kernels, the stack and the families use it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::simd::multiversion;

/// Where in a block a vector is read. Every site but `hidden` has one vector per block
/// (`L` of them), labelled `SITE.l` for block `l`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    /// The residual stream between blocks: `transformers`' `hidden_states` (`L + 1`).
    #[default]
    Hidden,
    /// What the attention sub-block adds to the residual stream: the output projection
    /// (Gemma: after its post-attention norm; BERT: before the residual add and norm).
    AttnOut,
    /// What the MLP sub-block adds to the residual stream (Gemma: after its
    /// post-feedforward norm; BERT: before the residual add and norm).
    MlpOut,
    /// The MLP's inner activation, `intermediate_size` wide: `act(up)` for a plain MLP,
    /// `act(gate) * up` for a gated one (the input of the down projection).
    MlpAct,
    /// A mixture of experts' router logits, one per expert, before the softmax: what
    /// `transformers` returns with `output_router_logits=True`. Only sparse blocks have it.
    RouterLogits,
    /// The input of the attention output projection: every head's attention-weighted
    /// values, concatenated (`n_heads × head_dim` wide). TransformerLens' `hook_z`, which
    /// attention-output sparse autoencoders read.
    AttnZ,
    /// The MLP's input: the normalised residual stream the MLP (or a mixture of experts'
    /// router and experts) reads (GPT-2's `ln_2` output, Llama's `post_attention_layernorm`,
    /// Gemma's `pre_feedforward_layernorm`; BERT's attention output after its norm).
    /// What transcoders read.
    MlpIn,
}

/// Sub-block sites: every site but `hidden`.
pub const SLOTS: usize = 6;

impl Site {
    /// Every site, in the order results and messages list them.
    pub const ALL: [Site; 7] = [
        Site::Hidden,
        Site::AttnOut,
        Site::MlpOut,
        Site::MlpAct,
        Site::RouterLogits,
        Site::AttnZ,
        Site::MlpIn,
    ];

    /// The name specs and labels use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hidden => "hidden",
            Self::AttnOut => "attn_out",
            Self::MlpOut => "mlp_out",
            Self::MlpAct => "mlp_act",
            Self::RouterLogits => "router_logits",
            Self::AttnZ => "attn_z",
            Self::MlpIn => "mlp_in",
        }
    }

    /// The site a spec names, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether this is the default site.
    pub fn is_hidden(&self) -> bool {
        *self == Self::Hidden
    }

    /// Index among the sub-block sites (`attn_out`, `mlp_out`, `mlp_act`, `router_logits`,
    /// `attn_z`, `mlp_in`).
    pub(crate) fn slot(self) -> Option<usize> {
        match self {
            Self::Hidden => None,
            Self::AttnOut => Some(0),
            Self::MlpOut => Some(1),
            Self::MlpAct => Some(2),
            Self::RouterLogits => Some(3),
            Self::AttnZ => Some(4),
            Self::MlpIn => Some(5),
        }
    }

    /// The blocks a site analysis reads for the hidden-state indices `hidden` of the
    /// spec's `layers`: hidden state `l` is block `l`'s input, so it selects block `l`'s
    /// sub-blocks (`hidden[l + 1] = hidden[l] + attn_out[l] + mlp_out[l]`). The last
    /// hidden state and `pre_final_norm`, which no block reads, select none.
    pub fn blocks(hidden: &[usize], n_layers: usize) -> Vec<usize> {
        hidden.iter().copied().filter(|&l| l < n_layers).collect()
    }

    /// The label of block `l`'s vector at this site (`mlp_out.5`).
    pub fn label(self, l: usize) -> String {
        format!("{}.{l}", self.name())
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one forward captures besides the hidden states.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// Per sub-block site (`attn_out`, `mlp_out`, `mlp_act`, `router_logits`, `attn_z`,
    /// `mlp_in`), which
    /// blocks to keep it of (empty: none).
    pub sites: [Vec<bool>; SLOTS],
    /// Keep what the router of every sparse block did (the `router` analysis).
    pub routing: bool,
    /// Attention statistics (and probabilities), when asked for.
    pub attention: Option<AttentionRequest>,
}

impl Capture {
    /// Only the hidden states.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether block `l`'s `site` is kept.
    pub fn wants(&self, site: Site, l: usize) -> bool {
        site.slot()
            .is_some_and(|i| self.sites[i].get(l).copied().unwrap_or(false))
    }

    /// Keeps `site` of every one of `n_layers` blocks too.
    pub fn with(mut self, site: Site, n_layers: usize) -> Self {
        if let Some(i) = site.slot() {
            self.sites[i] = vec![true; n_layers];
        }
        self
    }
}

/// What the attention kernel records per (sequence, head).
#[derive(Debug, Clone, Default)]
pub struct AttentionRequest {
    /// Per sequence of the batch: the first query position counted (a window's context
    /// and an excluded token 0 are not counted as queries; they are still keys).
    pub from: Vec<usize>,
    /// Keep every probability (`strata extract --attention`), not only the statistics.
    pub probabilities: bool,
}

/// One head's attention over the counted queries of one text: sums, so that texts and
/// windows add up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeadStats {
    /// Queries counted.
    pub queries: u64,
    /// `Σ_q A[q, 0]`: mass on the first position.
    pub first: f64,
    /// `Σ_q H(A[q, ·])`, in nats.
    pub entropy: f64,
    /// `Σ_q Σ_k A[q, k] |q − k|`.
    pub distance: f64,
    /// Queries with a previous position (`q ≥ 1`).
    pub prev_queries: u64,
    /// `Σ_{q ≥ 1} A[q, q − 1]`.
    pub prev: f64,
    /// `Σ_q A[q, q]`.
    pub self_mass: f64,
    /// `Σ_q A[q, k]` for every key position `k` of the text: the attention it received.
    pub received: Vec<f64>,
}

impl HeadStats {
    /// Empty sums over a text of `len` positions.
    pub fn new(len: usize) -> Self {
        Self {
            received: vec![0.0; len],
            ..Self::default()
        }
    }

    /// Adds query `q`'s probabilities `p` over key positions `lo..lo + p.len()`, and `z`,
    /// the logits they came from (scaled and capped as the softmax saw them).
    pub fn add_row(&mut self, q: usize, lo: usize, p: &[f32], z: &[f32]) {
        let at = |k: usize| {
            k.checked_sub(lo)
                .and_then(|j| p.get(j))
                .map_or(0.0, |&x| x as f64)
        };
        self.queries += 1;
        self.first += at(0);
        self.self_mass += at(q);
        if q >= 1 {
            self.prev_queries += 1;
            self.prev += at(q - 1);
        }
        // The entropy from the logits: with `m` their max, `ln p_k = z_k − m − ln Z` and
        // `Z = 1 / p_argmax`, so `H = −ln p_max + Σ p_k (m − z_k)`: one logarithm per row
        // instead of one per key, which alone cost more than the rest of the statistics.
        let (mut m, mut p_max) = (f32::NEG_INFINITY, 0f32);
        for (&z, &p) in z.iter().zip(p) {
            if z > m {
                m = z;
                p_max = p;
            }
        }
        let mut sums = [0f32; 2];
        row_sums(
            p,
            z,
            &mut self.received[lo..],
            q as f32,
            lo as f32,
            m,
            &mut sums,
        );
        self.distance += sums[0] as f64;
        if p_max > 0.0 {
            self.entropy += -(p_max as f64).ln() + sums[1] as f64;
        }
    }
}

multiversion! {
/// `received[j] += p[j]`, `out[0] = Σ p_j |q − (lo + j)|`, `out[1] = Σ p_j (m − z_j)`, in
/// 16 f32 lanes (so the loop vectorizes) added in order: the statistics of one row.
fn row_sums(p: &[f32], z: &[f32], received: &mut [f64], q: f32, lo: f32, m: f32, out: &mut [f32; 2]) {
    for (r, &x) in received.iter_mut().zip(p) {
        *r += x as f64;
    }
    let (mut dist, mut spread) = ([0f32; 16], [0f32; 16]);
    let n = p.len() / 16 * 16;
    for c in (0..n).step_by(16) {
        for l in 0..16 {
            let j = c + l;
            dist[l] += p[j] * (q - (lo + j as f32)).abs();
            spread[l] += p[j] * (m - z[j]);
        }
    }
    let (mut d, mut s) = (0f32, 0f32);
    for j in n..p.len() {
        d += p[j] * (q - (lo + j as f32)).abs();
        s += p[j] * (m - z[j]);
    }
    out[0] = dist.iter().sum::<f32>() + d;
    out[1] = spread.iter().sum::<f32>() + s;
}
}

/// What the kernel returns for one (sequence, head).
#[derive(Debug, Clone, Default)]
pub struct HeadCapture {
    /// The statistics over the counted queries.
    pub stats: HeadStats,
    /// `[len, len]` probabilities, row = query, when asked for.
    pub probabilities: Vec<f32>,
}

/// A model's sites and their widths, for messages and checks.
pub fn site_names() -> String {
    Site::ALL.map(Site::name).join(", ")
}
