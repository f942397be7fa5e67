//! The `sae` kind's state and result types, below the kind and its view.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::analyses::firing::{BlockNeurons, Example};
use crate::analyses::kind::KindError;
use crate::analyses::sae::splice::{SpliceResult, SpliceState};
use crate::assets::sae::{Normalize, Sae, SaeSource};
use crate::model::Site;
use crate::stats::gram::Fixed;

/// Reconstruction sums kept per token, in this order on the fixed-point grid.
pub const SUMS: [&str; 6] = ["err2", "x2", "xhat2", "dot", "cosine", "l2_ratio"];

/// What an `sae` analysis has counted so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaeState {
    /// What the SAE is and where it reads (fixed at the start).
    pub about: SaeAbout,
    /// The index it reads at its site.
    pub layer: usize,
    /// Examples kept per feature.
    pub examples: usize,
    /// The dense fraction.
    pub dense: f64,
    /// Per feature: fires, sums and examples.
    pub features: BlockNeurons,
    /// Tokens per L0 (active features), written as `[l0, tokens]` pairs.
    #[serde(with = "crate::stats::sketch::pairs")]
    pub l0: BTreeMap<i32, u64>,
    /// The reconstruction sums ([`SUMS`]).
    pub sums: Fixed,
    /// Per input dimension: the sum of the inputs (their corpus mean, for the FVU).
    pub x_sum: Fixed,
    /// Pre-activations within the tolerance of a cut.
    pub boundary: u64,
    /// A transcoder's output site and index, which its reconstruction is compared with.
    pub target: Option<(Site, usize)>,
    /// Per feature: whether it fired in training (`sparsity.safetensors`).
    pub trained_alive: Option<Vec<bool>>,
    /// The splice metrics so far (`splice: true`).
    pub splice: Option<SpliceState>,
    /// The SAE itself, in the process that applies it (a state read from a partial only
    /// merges and finishes).
    #[serde(skip)]
    pub sae: Option<Arc<Sae>>,
}

/// What an SAE is and where it reads, as results.json records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaeAbout {
    /// Where it came from.
    pub source: SaeSource,
    /// The hook it reads (its files', or the spec's `hook`).
    pub hook: String,
    /// The site label it maps to (`h.8`, `pre_final_norm`, `attn_z.3`).
    pub label: String,
    /// SAELens' name of its architecture.
    pub architecture: String,
    /// Width of its input.
    pub d_in: usize,
    /// Features.
    pub d_sae: usize,
    /// A transcoder's output hook, which its reconstruction is compared with (absent for
    /// an SAE, which reconstructs its input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_out: Option<String>,
    /// The site label of that output (`mlp_out.3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_out: Option<String>,
    /// Width of that output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_out: Option<usize>,
    /// Features kept per token (`topk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// Whether each input token was centred (`x − mean_d(x)`) before encoding.
    pub center: bool,
    /// Why `center` has its value: the spec, the SAE's files, or the family's norm.
    pub center_from: String,
    /// Its run-time input normalisation.
    pub normalize: Normalize,
    /// Whether `b_dec` is subtracted from the input before encoding.
    pub apply_b_dec_to_input: bool,
}

/// One feature with its figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopFeature {
    /// Its index.
    pub feature: usize,
    /// The fraction of tokens where it fired.
    pub frequency: f64,
    /// Its mean activation over every token.
    pub mean: f64,
    /// Its largest activation.
    pub max: f32,
}

/// Features alive in training and dead here, and the reverse, from `sparsity.safetensors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingVsCorpus {
    /// Features that fired in training (log10 frequency above −10) and never here.
    pub alive_in_training_dead_here: u64,
    /// Features that never fired in training and fired here.
    pub dead_in_training_alive_here: u64,
    /// The first of the former, by index (up to 20).
    pub alive_in_training_dead_here_first: Vec<usize>,
}

/// An SAE over the corpus. Per-feature lists have one entry per feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaeResult {
    /// What the SAE is and where it reads.
    pub sae: SaeAbout,
    /// Tokens the SAE read.
    pub tokens: u64,
    /// Per feature: the fraction of tokens where it fired (activation > 0).
    pub frequency: Vec<f64>,
    /// Per feature: its mean activation over every token.
    pub mean: Vec<f64>,
    /// Per feature: its largest activation (0 for a feature that never fired).
    pub max: Vec<f32>,
    /// Features that never fired.
    pub dead: u64,
    /// Features that fired on more than `dense_above` of the tokens.
    pub dense: u64,
    /// The dense fraction.
    pub dense_above: f64,
    /// Edges of the density histogram, in log10 of the frequency.
    pub log_frequency_edges: Vec<f64>,
    /// Features per log-frequency bin (dead features are not in it).
    pub frequency_counts: Vec<u64>,
    /// Mean active features per token.
    pub l0: f64,
    /// `[l0, tokens]` pairs: tokens with each number of active features, by L0.
    pub l0_counts: Vec<(i32, u64)>,
    /// `Σ‖x − x̂‖² / (n · d_in)`.
    pub mse: f64,
    /// `Σ‖x − x̂‖² / Σ‖x − x̄‖²`, x̄ the corpus mean of the inputs.
    pub fvu: f64,
    /// `1 − fvu`.
    pub explained_variance: f64,
    /// The mean of `cos(x, x̂)` over tokens.
    pub cosine: f64,
    /// `Σ‖x̂‖² / Σ⟨x, x̂⟩`: above 1, the SAE overshoots; below, it shrinks.
    pub rel_bias: f64,
    /// The mean of `‖x̂‖ / ‖x‖` over tokens.
    pub l2_ratio: f64,
    /// Pre-activations within 1e-5·(1+|cut|) of their cut (a JumpReLU threshold, ReLU's
    /// 0, a top-k tie): the counts another implementation's rounding might flip.
    pub boundary: u64,
    /// Features alive in training and dead on this corpus, and the reverse (when the SAE
    /// ships `sparsity.safetensors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingVsCorpus>,
    /// The next-token loss and KL with the reconstruction spliced in (`splice: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splice: Option<SpliceResult>,
    /// The features that fire most often (up to 10).
    pub top_by_frequency: Vec<TopFeature>,
    /// The features with the largest activations (up to 10).
    pub top_by_max: Vec<TopFeature>,
    /// Per feature: its largest activations, one per text, with their context.
    pub examples: Vec<Vec<Example>>,
}

impl SaeResult {
    /// The corpus-level figures `compare` and `sweep` follow, by name.
    pub fn headline(&self) -> Vec<(&'static str, f64)> {
        let d = self.sae.d_sae.max(1) as f64;
        let mut figures = vec![
            ("l0", self.l0),
            ("fvu", self.fvu),
            ("explained_variance", self.explained_variance),
            ("mse", self.mse),
            ("cosine", self.cosine),
            ("rel_bias", self.rel_bias),
            ("l2_ratio", self.l2_ratio),
            ("dead_fraction", self.dead as f64 / d),
            ("dense_fraction", self.dense as f64 / d),
        ];
        if let Some(s) = &self.splice {
            figures.extend([
                ("ce_recovered", s.ce_recovered),
                ("ce_sae", s.ce_sae),
                ("kl_sae", s.kl_sae),
                ("kl_recovered", s.kl_recovered),
            ]);
        }
        figures
    }

    /// Checks a result read from a file, so nothing downstream indexes out of bounds.
    pub fn validate(&self) -> Result<(), KindError> {
        let d = self.sae.d_sae;
        for (name, len) in [
            ("frequency", self.frequency.len()),
            ("mean", self.mean.len()),
            ("max", self.max.len()),
            ("examples", self.examples.len()),
        ] {
            crate::analyses::kind::expect_len(&format!("{name} (one per feature)"), len, d)?;
        }
        crate::analyses::kind::check_edges(
            "frequency_counts",
            &self.log_frequency_edges,
            &self.frequency_counts,
        )?;
        let bad = self
            .top_by_frequency
            .iter()
            .chain(&self.top_by_max)
            .find(|t| t.feature >= d);
        if let Some(t) = bad {
            return Err(KindError::Invalid(format!(
                "top features: feature {} of {d}",
                t.feature
            )));
        }
        Ok(())
    }
}
