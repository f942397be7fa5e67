//! What `divergence` writes to results.json, below the kind and its section, which both
//! read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::bootstrap::Paired;

/// The quantiles reported, as results.json keys them.
pub const QUANTILES: [&str; 7] = ["0.01", "0.05", "0.1", "0.5", "0.9", "0.99", "0.999"];

/// A value and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Extreme {
    /// The value.
    pub value: f64,
    /// Text id.
    pub text: String,
    /// Index of the text in the run's order.
    pub index: usize,
    /// Token position in the text (or window), counting token 0.
    pub token_index: usize,
    /// The token at that position, decoded.
    pub token: String,
}

/// One of the most divergent positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Divergent {
    /// Text id.
    pub text: String,
    /// Index of the text in the run's order.
    pub index: usize,
    /// Token position in the text (or window): the distributions predict the token after.
    pub token_index: usize,
    /// The token at that position, decoded.
    pub token: String,
    /// The tokens before it, decoded and joined.
    pub context: String,
    /// The token that follows in the text (`null` at its end).
    pub next: Option<String>,
    /// `KL(p || q)`, nats.
    pub kl: f64,
    /// The base model's most likely next token.
    pub base_top1: String,
    /// The new model's.
    pub new_top1: String,
}

/// One text's loss difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextDivergence {
    /// Text id.
    pub id: String,
    /// Tokens predicted (analysed positions with a next token).
    pub tokens: u64,
    /// Mean over them of `nll_new - nll_base`, nats (`null` with none).
    pub nll_diff: Option<f64>,
}

/// A mean and its standard error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MeanSe {
    /// The mean (`null` with no value).
    pub mean: Option<f64>,
    /// Its standard error, `sqrt(var / n)` with the sample variance (`null` below two
    /// values).
    pub se: Option<f64>,
}

/// The distribution of KL over positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KlSummary {
    /// Mean KL, nats.
    pub mean: Option<f64>,
    /// Its standard error.
    pub se: Option<f64>,
    /// The smallest, and where.
    pub min: Option<Extreme>,
    /// The largest, and where.
    pub max: Option<Extreme>,
    /// Quantiles by key (`"0.01"` ... `"0.999"`): the value of rank `floor(q (n - 1))`,
    /// within 0.5% relative (a sketch).
    pub quantiles: BTreeMap<String, Option<f64>>,
    /// The histogram on a log axis, from the sketch: positions per tenth of a decade
    /// with any, as `[k, positions]` for the bin `[10^(k/10), 10^((k+1)/10))` (to the
    /// sketch's 0.5%).
    pub log_bins: Vec<(i32, u64)>,
    /// Positions whose KL is zero or below 1e-30 (identical distributions), left off the
    /// log axis.
    pub zero: u64,
}

/// The share of positions whose two top-1 tokens agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Share of positions (`null` with none).
    pub rate: Option<f64>,
    /// Its binomial standard error `sqrt(r (1 - r) / n)`.
    pub se: Option<f64>,
    /// Positions where the base model's two largest logits were exactly equal (its
    /// top-1 is then the first of them).
    pub ties: u64,
}

/// `q[next] - p[next]` over positions with a next token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeltaP {
    /// The mean.
    pub mean: Option<f64>,
    /// Its standard error.
    pub se: Option<f64>,
    /// The root mean square.
    pub rms: Option<f64>,
    /// Quantiles by key, as KL's.
    pub quantiles: BTreeMap<String, Option<f64>>,
}

/// The result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DivergenceResult {
    /// The new version's id (its provenance is in `provenance.companions`).
    pub model: String,
    /// The spec's model's last hidden state, whose logits are compared.
    pub label: String,
    /// Analysed positions.
    pub positions: u64,
    /// Of them, those with a next token (the loss, `delta_p`, `per_text`).
    pub predicted: u64,
    /// `KL(p || q)`, nats, over analysed positions.
    pub kl: KlSummary,
    /// How often the two top-1 tokens agree.
    pub same_top1: Rate,
    /// The change in the next token's probability.
    pub delta_p: DeltaP,
    /// The base model's mean loss over predicted tokens, nats.
    pub nll_base: Option<f64>,
    /// The new model's.
    pub nll_new: Option<f64>,
    /// `exp(nll_base)`.
    pub ppl_base: Option<f64>,
    /// `exp(nll_new)`.
    pub ppl_new: Option<f64>,
    /// The per-token mean of `ln p[next] - ln q[next]`, `ln(ppl_new / ppl_base)`, with
    /// its standard error.
    pub ln_ppl_ratio: MeanSe,
    /// Hidden states of `lens_kl`.
    pub lens_labels: Vec<String>,
    /// Mean KL between the two models' logit-lens distributions at each of them; the
    /// last hidden state's is `kl.mean`.
    pub lens_kl: Vec<Option<f64>>,
    /// Why `lens_kl` is left out, when it is.
    pub lens_note: Option<String>,
    /// Every text's loss difference, in order.
    pub per_text: Vec<TextDivergence>,
    /// The mean of the per-text differences with its paired bootstrap interval.
    pub paired: Paired,
    /// The most divergent positions, most first (ties: text, then position).
    pub top: Vec<Divergent>,
}

impl DivergenceResult {
    /// The corpus-level figures a sweep follows and `compare` checks, by name.
    pub fn headline(&self) -> Vec<(&'static str, Option<f64>)> {
        let q = |m: &BTreeMap<String, Option<f64>>, k: &str| m.get(k).copied().flatten();
        vec![
            ("kl_mean", self.kl.mean),
            ("kl_p99", q(&self.kl.quantiles, "0.99")),
            ("kl_max", self.kl.max.as_ref().map(|e| e.value)),
            ("same_top1", self.same_top1.rate),
            ("delta_p_mean", self.delta_p.mean),
            ("delta_p_rms", self.delta_p.rms),
            ("nll_base", self.nll_base),
            ("nll_new", self.nll_new),
            ("ln_ppl_ratio", self.ln_ppl_ratio.mean),
        ]
    }

    /// Every text's loss difference, keyed by text id (texts with a predicted token).
    pub fn paired_values(&self) -> Vec<(String, f64)> {
        self.per_text
            .iter()
            .filter_map(|t| t.nll_diff.map(|d| (t.id.clone(), d)))
            .collect()
    }
}
