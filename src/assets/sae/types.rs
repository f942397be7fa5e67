//! What an SAE is once read, whatever format it came in: below the readers and the
//! loader that use it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::kernels::Dense;

/// Which published format the files are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaeFormat {
    /// SAELens 6: `cfg.json` with `architecture` and `metadata`, `sae_weights.safetensors`.
    SaeLens,
    /// SAELens before 6.0: the same files, `hook_point` and `activation_fn_str`.
    SaeLensPre6,
    /// Gemma Scope: `params.npz`.
    GemmaScope,
    /// Gemma Scope 2: `params.safetensors` with lower-case keys, optional `config.json`.
    GemmaScope2,
    /// EleutherAI sparsify: `cfg.json`, `sae.safetensors`.
    Sparsify,
    /// dictionary_learning: `ae.pt`, `config.json`.
    DictionaryLearning,
    /// Llama Scope: `hyperparams.json`, `checkpoints/final.safetensors`.
    LlamaScope,
}

/// The activation function, with its parameters.
pub enum Activation {
    /// `ReLU(pre)`.
    Standard,
    /// `ReLU(pre) · 1[pre > θ_j]`.
    JumpRelu {
        /// Per-feature thresholds θ.
        threshold: Vec<f32>,
    },
    /// The `k` largest `pre` (ties to the lower feature index), then ReLU.
    TopK {
        /// Features kept per token.
        k: usize,
        /// Scale `pre` by each feature's decoder norm before choosing, and divide by it
        /// again before decoding (`rescale_acts_by_decoder_norm`).
        decoder_norms: Option<Vec<f32>>,
    },
    /// `1[x W_enc + b_gate > 0] · ReLU(x (W_enc ⊙ e^{r_mag}) + b_mag)`: the encoder's
    /// bias is `b_gate`.
    Gated {
        /// `x (W_enc ⊙ e^{r_mag}) + b_mag`, the product formed in f32 as torch forms it.
        magnitude: Dense,
    },
}

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Activation {
    /// The name SAELens gives the architecture.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::JumpRelu { .. } => "jumprelu",
            Self::TopK { .. } => "topk",
            Self::Gated { .. } => "gated",
        }
    }
}

/// What is done to the input at run time before encoding, and undone after decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Nothing (a dataset-wide scale is folded into the weights).
    None,
    /// `x · sqrt(d_in) / ‖x‖` per token.
    ConstantNormRescale,
    /// `(x − mean) / (std + 1e-5)` per token, torch's unbiased std.
    LayerNorm,
}

/// Where an SAE came from and what it is, as results.json records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaeSource {
    /// The SAE as the spec names it.
    pub id: String,
    /// The format its files are in.
    pub format: SaeFormat,
    /// The Hub repo it was read from (`null`: a local folder).
    pub repo: Option<String>,
    /// That repo's commit.
    pub commit: Option<String>,
    /// The model it was trained on, as its files name it.
    pub model_name: Option<String>,
    /// sha256 of its weights file.
    pub weights_sha256: String,
}

/// An SAE, read and ready to apply.
#[derive(Debug)]
pub struct Sae {
    /// Width of its input.
    pub d_in: usize,
    /// Features.
    pub d_sae: usize,
    /// Width of its output: `d_in` for an SAE, which reconstructs its input; a
    /// transcoder's output site's width.
    pub d_out: usize,
    /// `x W_enc + b_enc`: `W_enc [d_in, d_sae]` in the file's dtype, the whole encoder in
    /// one GEMM.
    pub encoder: Dense,
    /// `[d_sae, d_out]`, row-major, in the file's dtype.
    pub(crate) w_dec: crate::model::storage::Floats,
    /// `[d_out]`.
    pub b_dec: Vec<f32>,
    /// A skip transcoder's affine connection `x W_skip` (`[d_in, d_out]`), added to the
    /// decoded output.
    pub skip: Option<Dense>,
    /// The activation.
    pub activation: Activation,
    /// Subtract `b_dec` from the input before encoding.
    pub apply_b_dec_to_input: bool,
    /// Per-token input normalisation.
    pub normalize: Normalize,
    /// A per-feature scale applied to the activations before decoding (SAELens'
    /// `finetuning_scaling_factor`), when not all ones.
    pub decoder_scale: Option<Vec<f32>>,
    /// The hook it was trained at, as its files name it.
    pub hook: Option<String>,
    /// Whether it is a transcoder: it predicts another site's vectors from its input.
    pub transcoder: bool,
    /// A transcoder's output hook, when its files name it (else the MLP output of its
    /// input's block).
    pub hook_out: Option<String>,
    /// `center_writing_weights` of the TransformerLens model it was trained on, when its
    /// files say.
    pub center_writing_weights: Option<bool>,
    /// log10 of each feature's firing frequency in training (`sparsity.safetensors`).
    pub log_sparsity: Option<Vec<f32>>,
    /// Where it came from.
    pub source: SaeSource,
}

impl Sae {
    /// Bytes its encoder and decoder weights take as held: the file's dtype where strata
    /// keeps it.
    pub fn weight_bytes(&self) -> usize {
        self.encoder.stored_bytes().unwrap_or(0) + self.w_dec.bytes()
    }
}

/// Why an SAE cannot be read; each says what would work.
#[derive(Debug, thiserror::Error)]
pub enum SaeError {
    /// A folder that holds none of the formats' file sets.
    #[error("{} holds no SAE strata reads: give a folder with cfg.json and sae_weights.safetensors (SAELens), params.npz (Gemma Scope), params.safetensors (Gemma Scope 2), cfg.json and sae.safetensors (sparsify), ae.pt and config.json (dictionary_learning), or hyperparams.json and checkpoints/final.safetensors (Llama Scope)", .0.display())]
    NoFormat(PathBuf),
    /// A path that is no folder.
    #[error("no SAE folder `{0}`: give a folder holding an SAE's files, or `{{repo: ORG/NAME, path: FOLDER}}` on the Hub")]
    NoFolder(String),
    /// The Hub could not give the files.
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    /// A file cannot be read.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// A config that says something strata cannot apply, or lacks what it must say.
    #[error("{}: {detail}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, and the fix.
        detail: String,
    },
    /// A weights file that is damaged, lacks a tensor or holds one of the wrong shape.
    #[error("{}: {detail}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The weights cannot be hashed.
    #[error(transparent)]
    Digest(#[from] crate::digest::DigestError),
}
