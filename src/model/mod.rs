//! Models: where their files come from ([`hub`]), how text becomes ids ([`tokenizer`]), and
//! one file per architecture, each returning every hidden state of a batch of texts.

pub mod bert;
pub mod gemma;
pub mod gguf;
pub mod gpt2;
pub mod gpt_neox;
pub mod hashcache;
pub mod hub;
pub mod kernels;
pub mod layers;
pub mod llama;
pub mod synth;
pub mod tokenizer;
pub(crate) mod weights;

use std::path::{Path, PathBuf};

pub use hub::{ModelFiles, ModelProvenance, ModelRef};
pub use tokenizer::TextTokenizer;

/// Label of the extra state: the last block's output before the final norm (`ln_f` in
/// GPT-2). `transformers` does not return it; analyses may ask for it by this label.
pub const PRE_FINAL_NORM: &str = "pre_final_norm";

/// What an architecture tells the rest of strata about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Architecture name as in `config.json`'s `model_type` (`gpt2`, ...).
    pub architecture: String,
    /// Number of transformer blocks `L`; there are `L + 1` hidden states.
    pub n_layers: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Longest text the model accepts, in tokens.
    pub max_positions: usize,
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// For a GGUF file: the predominant tensor type of its weights (`Q4_1`), and whether
    /// the matmuls run quantized. `None` for unquantized checkpoints.
    pub quantization: Option<String>,
    /// `L + 1` labels, as the notebook names them: `emb`, `h.0`, ..., `h.{L-1}`.
    pub labels: Vec<String>,
    /// Whether the model turns hidden states into next-token logits (decoders: a final
    /// norm and an unembedding); encoders such as BERT have no language-model head.
    pub lm_head: bool,
}

impl ModelInfo {
    /// A decoder with the notebook's labels: `emb`, then `h.{i}` for the output of block `i`
    /// (the last one with the final norm applied, as `transformers` returns it).
    pub fn decoder(
        architecture: &str,
        n_layers: usize,
        hidden_size: usize,
        max_positions: usize,
        vocab_size: usize,
    ) -> Self {
        let labels = std::iter::once("emb".to_string())
            .chain((0..n_layers).map(|i| format!("h.{i}")))
            .collect();
        Self {
            architecture: architecture.to_string(),
            n_layers,
            hidden_size,
            max_positions,
            vocab_size,
            quantization: None,
            labels,
            lm_head: true,
        }
    }
}

/// What turns a hidden state into next-token logits, as the model's own head does: the
/// final norm, then the unembedding (GPT-2's tied `wte`; Llama's `lm_head` or tied
/// `embed_tokens`; GGUF's `output.weight` or `token_embd`, dequantized).
pub trait Readout: Sync {
    /// Rows of the unembedding.
    fn vocab(&self) -> usize;
    /// `out = W_U final_norm(rows)^T` for `[n, d]` rows: `[n, vocab]` logits, in f32 as
    /// transformers computes them.
    fn logits(&self, rows: &[f32], out: &mut [f32]);
}

/// Every hidden state of one text, padding removed.
#[derive(Debug, Clone)]
pub struct TextStates {
    /// `L + 1` row-major `[n_tokens, hidden_size]` buffers, exactly `outputs.hidden_states`.
    pub states: Vec<Vec<f32>>,
    /// `[n_tokens, hidden_size]`: the last block's output before the final norm.
    pub pre_final_norm: Vec<f32>,
}

/// A batch right-padded to its longest sequence.
pub(crate) struct Padded {
    /// Real tokens of each sequence.
    pub lengths: Vec<usize>,
    /// The longest length: every sequence is padded to it.
    pub t: usize,
    /// `[b * t]` ids, pads 0. Causal decoders never let real tokens see the pads, the
    /// encoder masks them, and [`cut_batch`] drops their rows.
    pub ids: Vec<usize>,
}

/// Pads `batch` (`None` when it holds no token), refusing an id the embedding has no row
/// for: a tokenizer that does not belong to the model.
pub(crate) fn pad_batch(batch: &[&[u32]], vocab: usize) -> Result<Option<Padded>, ModelError> {
    let lengths: Vec<usize> = batch.iter().map(|ids| ids.len()).collect();
    let t = lengths.iter().copied().max().unwrap_or(0);
    if t == 0 {
        return Ok(None);
    }
    let mut ids = vec![0usize; batch.len() * t];
    for (bi, seq) in batch.iter().enumerate() {
        for (j, &id) in seq.iter().enumerate() {
            if id as usize >= vocab {
                return Err(ModelError::TokenOutOfVocab { id, vocab });
            }
            ids[bi * t + j] = id as usize;
        }
    }
    Ok(Some(Padded { lengths, t, ids }))
}

/// Splits padded `[b*t, c]` states back into one [`TextStates`] per sequence, `lengths[i]`
/// rows each. A single unpadded sequence (one text per forward, the common case) keeps its
/// buffers instead of copying them.
pub(crate) fn cut_batch(
    states: Vec<Vec<f32>>,
    pre_final: Vec<f32>,
    lengths: &[usize],
    t: usize,
    c: usize,
) -> Vec<TextStates> {
    if let [len] = lengths {
        if *len == t {
            return vec![TextStates {
                states,
                pre_final_norm: pre_final,
            }];
        }
    }
    lengths
        .iter()
        .enumerate()
        .map(|(bi, &len)| {
            let cut = |s: &[f32]| s[bi * t * c..(bi * t + len) * c].to_vec();
            TextStates {
                states: states.iter().map(|s| cut(s)).collect(),
                pre_final_norm: cut(&pre_final),
            }
        })
        .collect()
}

/// A padded batch, as every block sees it.
pub(crate) struct Batch<'a> {
    /// Sequences.
    pub b: usize,
    /// The padded length of each.
    pub t: usize,
    /// Real tokens of each sequence.
    pub lengths: &'a [usize],
}

/// A stack of blocks: what a family defines. [`Stack::forward`] does the rest, the same for
/// every family: padding, one hidden state per block input, the final norm, and cutting
/// the padding off again.
pub(crate) trait Stack {
    /// What every block of one forward shares (rotary tables).
    type Shared;
    /// Shape and labels: the vocabulary, the width and the number of blocks.
    fn info(&self) -> &ModelInfo;
    /// Hidden state 0 (`[b*t, width]`) of the padded `ids`, and what the blocks share.
    fn embed(&self, ids: &[usize], batch: &Batch) -> (Vec<f32>, Self::Shared);
    /// Block `i`'s output, in a new buffer (`x` is kept as a hidden state).
    fn block(
        &self,
        i: usize,
        x: &[f32],
        batch: &Batch,
        shared: &Self::Shared,
    ) -> Result<Vec<f32>, ModelError>;
    /// The last hidden state from the last block's output (the final norm).
    fn last(&self, x: &[f32]) -> Vec<f32>;
    /// The final norm and unembedding, when the model has them.
    fn readout(&self) -> Option<&dyn Readout> {
        None
    }

    /// Runs one padded forward: one [`TextStates`] per sequence of `batch`.
    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<TextStates>, ModelError> {
        let info = self.info();
        let Some(Padded { lengths, t, ids }) = pad_batch(batch, info.vocab_size)? else {
            return Ok(Vec::new());
        };
        let shape = Batch {
            b: batch.len(),
            t,
            lengths: &lengths,
        };
        let (mut x, shared) = self.embed(&ids, &shape);
        let mut states = Vec::with_capacity(info.n_layers + 1);
        for i in 0..info.n_layers {
            let next = self.block(i, &x, &shape, &shared)?;
            states.push(std::mem::replace(&mut x, next));
        }
        states.push(self.last(&x));
        Ok(cut_batch(states, x, &lengths, t, info.hidden_size))
    }
}

/// Every family is a [`Stack`]; the rest of strata sees it as a [`HiddenStateModel`].
impl<S: Stack> HiddenStateModel for S {
    fn info(&self) -> &ModelInfo {
        Stack::info(self)
    }

    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<TextStates>, ModelError> {
        Stack::forward(self, batch)
    }

    fn readout(&self) -> Option<&dyn Readout> {
        Stack::readout(self)
    }
}

/// Rows `0..t` of a position table, added to every sequence of `x` (`[b*t, width]`).
pub(crate) fn add_positions(x: &mut [f32], positions: &weights::Table, t: usize, width: usize) {
    let pos = positions.gather(&(0..t).collect::<Vec<_>>());
    for seq in x.chunks_exact_mut(t * width) {
        for (row, p) in seq.chunks_exact_mut(width).zip(pos.chunks_exact(width)) {
            row.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
    }
}

/// A model that returns all hidden states for a batch of token-id sequences.
pub trait HiddenStateModel {
    /// Shape and labels.
    fn info(&self) -> &ModelInfo;
    /// Runs one padded forward over `batch`; one [`TextStates`] per input, in order.
    /// Batched results equal one-at-a-time results.
    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<TextStates>, ModelError>;
    /// The final norm and unembedding, when the model has them.
    fn readout(&self) -> Option<&dyn Readout> {
        None
    }
}

/// Errors of loading and running a model. Each names what was wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `HF_HUB_OFFLINE` is set and the cache does not hold the model.
    #[error("model `{repo}` (revision `{revision}`) is not in the Hugging Face cache at {cache}, and HF_HUB_OFFLINE is set so nothing can be downloaded: {detail}; unset HF_HUB_OFFLINE to download it, or point HF_HUB_CACHE / HF_HOME at a cache that holds it")]
    NotCached {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// The cache folder searched.
        cache: PathBuf,
        /// What exactly is missing.
        detail: String,
    },
    /// The Hub answered that the repo or revision does not exist (or is private).
    #[error("model `{repo}` (revision `{revision}`) was not found on {endpoint} (HTTP {status}): check the repo id and revision; for a private or gated repo set HF_TOKEN; for a local folder pass a path that exists")]
    RepoNotFound {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// Hub endpoint asked.
        endpoint: String,
        /// HTTP status.
        status: u16,
    },
    /// Talking to the Hub failed for another reason (network, server).
    #[error("could not fetch `{file}` of model `{repo}` from {endpoint}: {detail}; check the network, or set HF_HUB_OFFLINE=1 to use the cache only")]
    Hub {
        /// Repo id.
        repo: String,
        /// File asked for (`(repo info)` for the revision lookup).
        file: String,
        /// Hub endpoint asked.
        endpoint: String,
        /// The underlying error.
        detail: String,
    },
    /// A local folder or snapshot lacks a file the model needs.
    #[error("{dir}: no {what}; a model folder needs config.json, model.safetensors (or model.safetensors.index.json and its shards), and tokenizer.json (or vocab.json + merges.txt)")]
    MissingFile {
        /// The folder looked in.
        dir: PathBuf,
        /// What is missing.
        what: String,
    },
    /// `--model` looks like a path but there is nothing there.
    #[error("model folder `{0}` does not exist: pass an existing folder, or a Hub repo id such as `gpt2` or `openai-community/gpt2`")]
    NoSuchFolder(String),
    /// `config.json` is not valid JSON or lacks a field.
    #[error("{path}: {cause}; {expect}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The parse error (names the field, line and column).
        cause: serde_json::Error,
        /// What a config of this family holds, as a fix.
        expect: &'static str,
    },
    /// `config.json` holds a value this loader does not support.
    #[error("{path}: field `{field}` = {value} is not supported: {fix}")]
    UnsupportedConfig {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: String,
        /// Its value.
        value: String,
        /// What would work.
        fix: String,
    },
    /// A safetensors file lacks a tensor, or holds one of the wrong shape or dtype.
    #[error("weights {path}: {detail}")]
    Weights {
        /// The weight file (the first shard when the tensor is missing).
        path: PathBuf,
        /// What is wrong, and what would work.
        detail: String,
    },
    /// A safetensors file fails the structural check.
    #[error("weights {path}: {detail}; the file is corrupt or incomplete: delete it and download it again")]
    CorruptWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The tokenizer files cannot be loaded.
    #[error("tokenizer {path}: {detail}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A text has more tokens than the model has positions.
    #[error("text `{text}` has {n_tokens} tokens but the model accepts at most {max} (n_positions): split the text (in a spec, `window: {{tokens: {max}}}` cuts every text into windows); strata never truncates silently")]
    TextTooLong {
        /// Text id.
        text: String,
        /// Its token count.
        n_tokens: usize,
        /// The model's limit.
        max: usize,
    },
    /// A token id has no row in the model's embedding.
    #[error("token id {id} is outside the model's vocabulary of {vocab}: the tokenizer does not belong to this model; use the tokenizer files that came with it")]
    TokenOutOfVocab {
        /// The id.
        id: u32,
        /// The embedding's rows.
        vocab: usize,
    },
    /// A text has no tokens.
    #[error("text `{0}` is empty: give it some content or remove it")]
    EmptyText(String),
    /// `config.json` names an architecture strata does not run.
    #[error("{path}: model_type `{model_type}` is not supported; supported: {supported}")]
    UnsupportedArchitecture {
        /// The config (or GGUF) file.
        path: PathBuf,
        /// Its `model_type` / `general.architecture`.
        model_type: String,
        /// What is supported.
        supported: String,
    },
    /// `--quantized` was asked of a model that is not a GGUF file.
    #[error("model `{0}`: quantized mode needs a GGUF file (its weights are what gets kept quantized); drop --quantized / `quantized: true`, or load a .gguf")]
    QuantizedNeedsGguf(String),
    /// A GGUF file is unreadable or lacks what a model needs.
    #[error("GGUF {path}: {detail}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what would work.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// A tensor operation failed during the forward pass.
    #[error("forward pass failed: {0}")]
    Forward(candle_core::Error),
}

// By hand rather than `#[from]`, which would also make candle's error the `source()`: the
// message already quotes it, and an error chain prints each cause once.
impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        Self::Forward(e)
    }
}

/// A model ready to run: weights, tokenizer, and where they came from.
pub struct LoadedModel {
    /// The network.
    pub model: Box<dyn HiddenStateModel>,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// Model id, revision, commit and file hashes.
    pub provenance: ModelProvenance,
}

/// Tells glibc's malloc to keep freed memory for reuse instead of handing it back to the
/// kernel. A forward allocates and frees buffers of megabytes at every layer (ours, and the
/// packing buffers inside `gemm`). By default glibc serves those from fresh `mmap`s or
/// trims them off the heap as soon as they are freed, so every layer paid page faults and
/// zeroing again: 10-13% of a 124M GPT-2 forward on 512 tokens (0.67 -> 0.59 s, measured
/// with both settings; either alone gained nothing). The cost is that the process's
/// resident memory stays at its peak instead of shrinking between forwards. Process-wide
/// and idempotent; a no-op off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            unsafe extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            // <malloc.h>: M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3. 32 MiB is glibc's
            // largest mmap threshold (HEAP_MAX / 2); bigger blocks (embedding tables) are
            // still mapped, and freed, on their own.
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            // SAFETY: mallopt only changes malloc's tuning; both values are in range, and a
            // refused setting (return 0) leaves the default, which is still correct.
            unsafe {
                mallopt(M_TRIM_THRESHOLD, 1 << 30);
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
            }
        });
    }
}

impl LoadedModel {
    /// Resolves `model` (Hub id or folder) at `revision`, then loads it.
    pub fn load(model: &ModelRef) -> Result<Self, ModelError> {
        let files = model.resolve()?;
        Self::from_files_with(&files, model.quantized)
    }

    /// Loads resolved files (GGUF weights dequantized).
    pub fn from_files(files: &ModelFiles) -> Result<Self, ModelError> {
        Self::from_files_with(files, false)
    }

    /// Loads resolved files; `quantized` keeps GGUF weights quantized.
    pub fn from_files_with(files: &ModelFiles, quantized: bool) -> Result<Self, ModelError> {
        keep_freed_memory();
        let model = match Format::of(&files.config) {
            Format::Gguf => gguf::load(&files.config, quantized)?,
            Format::Safetensors if quantized => {
                return Err(ModelError::QuantizedNeedsGguf(files.id.clone()))
            }
            Format::Safetensors => {
                Family::of(&files.config)?.load(&files.config, &files.weights)?
            }
        };
        let tokenizer = TextTokenizer::load(&files.tokenizer)?;
        let provenance = files.provenance()?;
        Ok(Self {
            model,
            tokenizer,
            provenance,
        })
    }

    /// A text's token ids, of any length (to be cut into windows); an empty one fails.
    pub fn tokenize(&self, text_id: &str, text: &str) -> Result<Vec<u32>, ModelError> {
        let ids = self.tokenizer.encode(text)?;
        if ids.is_empty() {
            return Err(ModelError::EmptyText(text_id.to_string()));
        }
        Ok(ids)
    }

    /// Tokenizes `text` (id `text_id` for messages), checking it fits the model.
    pub fn encode(&self, text_id: &str, text: &str) -> Result<Vec<u32>, ModelError> {
        let ids = self.tokenize(text_id, text)?;
        let max = self.model.info().max_positions;
        if ids.len() > max {
            return Err(ModelError::TextTooLong {
                text: text_id.to_string(),
                n_tokens: ids.len(),
                max,
            });
        }
        Ok(ids)
    }
}

/// The shape and labels a model will have, from its `config.json` alone (no weights).
pub fn read_info(config: &Path) -> Result<ModelInfo, ModelError> {
    match Format::of(config) {
        Format::Gguf => gguf::read_info(config),
        Format::Safetensors => Family::of(config)?.info(config),
    }
}

/// Makes [`ModelError::UnsupportedConfig`]s for the config at `path`, from (field, value,
/// what would work).
pub(crate) fn unsupported(path: &Path) -> impl Fn(&str, String, String) -> ModelError + '_ {
    move |field, value, fix| ModelError::UnsupportedConfig {
        path: path.to_path_buf(),
        field: field.to_string(),
        value,
        fix,
    }
}

/// Reads and parses a `config.json`; a parse error (bad JSON, a missing or mistyped field)
/// names the file and `expect`, what a config of this family holds.
pub(crate) fn read_config<T: serde::de::DeserializeOwned>(
    path: &Path,
    expect: &'static str,
) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        cause: source,
    })?;
    serde_json::from_str(&text).map_err(|source| ModelError::Config {
        path: path.to_path_buf(),
        cause: source,
        expect,
    })
}

/// How a checkpoint's files store it, apart from what architecture it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A Hugging Face folder: `config.json` and safetensors weights.
    Safetensors,
    /// One GGUF file: hyper-parameters, tokenizer and weights (llama.cpp's format); its
    /// `general.architecture` names the family.
    Gguf,
}

impl Format {
    /// A GGUF file by its magic bytes; anything else is a `config.json`.
    pub fn of(config: &Path) -> Self {
        if gguf::is_gguf(config) {
            Self::Gguf
        } else {
            Self::Safetensors
        }
    }
}

/// The architectures strata runs from a Hugging Face folder, by `config.json`'s
/// `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `gpt2`.
    Gpt2,
    /// `llama`, `mistral`, `qwen2`, `qwen3`.
    Llama,
    /// `gpt_neox` (Pythia).
    GptNeox,
    /// `gemma2`, `gemma3_text`.
    Gemma,
    /// `bert`.
    Bert,
}

impl Family {
    /// Loads the network from a checked config and its safetensors files.
    pub fn load(
        self,
        config: &Path,
        weights: &[PathBuf],
    ) -> Result<Box<dyn HiddenStateModel>, ModelError> {
        Ok(match self {
            Self::Gpt2 => Box::new(gpt2::load(&gpt2::Gpt2Config::from_file(config)?, weights)?),
            Self::Llama => Box::new(llama::load(
                &llama::LlamaParams::from_config(config)?,
                weights,
            )?),
            Self::GptNeox => Box::new(gpt_neox::load(
                &gpt_neox::GptNeoxConfig::from_file(config)?,
                weights,
            )?),
            Self::Gemma => Box::new(gemma::load(
                &gemma::GemmaParams::from_config(config)?,
                weights,
            )?),
            Self::Bert => Box::new(bert::load(&bert::BertConfig::from_file(config)?, weights)?),
        })
    }

    /// Shape and labels, from the config alone.
    fn info(self, config: &Path) -> Result<ModelInfo, ModelError> {
        match self {
            Self::Gpt2 => Ok(gpt2::info(&gpt2::Gpt2Config::from_file(config)?)),
            Self::Llama => Ok(llama::LlamaParams::from_config(config)?.info()),
            Self::GptNeox => Ok(gpt_neox::GptNeoxConfig::from_file(config)?.info()),
            Self::Gemma => Ok(gemma::GemmaParams::from_config(config)?.info()),
            Self::Bert => Ok(bert::BertConfig::from_file(config)?.info()),
        }
    }

    /// Every supported `model_type`, for messages.
    pub fn supported() -> String {
        let mut all = vec!["gpt2", "gpt_neox"];
        all.extend(llama::MODEL_TYPES);
        all.extend(gemma::MODEL_TYPES);
        all.extend(bert::MODEL_TYPES);
        all.join(", ")
    }

    /// Reads `model_type` from a `config.json`.
    pub fn of(config: &Path) -> Result<Self, ModelError> {
        #[derive(serde::Deserialize)]
        struct Head {
            model_type: Option<String>,
        }
        let head: Head = read_config(
            config,
            "a Hugging Face config.json is a JSON object whose `model_type` names the architecture",
        )?;
        // GPT-2 checkpoints predating `model_type` carry GPT-2's own field names.
        let t = head.model_type.unwrap_or_else(|| "gpt2".into());
        match t.as_str() {
            "gpt2" => Ok(Self::Gpt2),
            "gpt_neox" => Ok(Self::GptNeox),
            t if llama::MODEL_TYPES.contains(&t) => Ok(Self::Llama),
            t if gemma::MODEL_TYPES.contains(&t) => Ok(Self::Gemma),
            t if bert::MODEL_TYPES.contains(&t) => Ok(Self::Bert),
            _ => Err(ModelError::UnsupportedArchitecture {
                path: config.to_path_buf(),
                model_type: t,
                supported: Self::supported(),
            }),
        }
    }
}

/// Bytes a model's weights take in memory once loaded: their files' size, since weights
/// stay in the dtype (or GGUF blocks) their files store. What `strata validate` reports
/// when a spec holds two models at once.
pub fn loaded_weight_bytes(files: &ModelFiles) -> Result<u64, ModelError> {
    let mut total = 0;
    for path in &files.weights {
        total += std::fs::metadata(path)
            .map_err(|cause| ModelError::Io {
                path: path.clone(),
                cause,
            })?
            .len();
    }
    Ok(total)
}

/// Checks a safetensors file's header and size before it is memory-mapped, so a truncated
/// download is reported as such rather than as a confusing tensor error.
pub fn check_safetensors(path: &Path) -> Result<(), ModelError> {
    use std::io::Read;
    let corrupt = |detail: String| ModelError::CorruptWeights {
        path: path.to_path_buf(),
        detail,
    };
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        cause: source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let mut len_bytes = [0u8; 8];
    f.read_exact(&mut len_bytes).map_err(|_| {
        corrupt(format!(
            "only {file_len} bytes, too short for a safetensors header"
        ))
    })?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > 100_000_000 || 8 + header_len > file_len {
        return Err(corrupt(format!(
            "header claims {header_len} bytes but the file has {file_len}"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(io)?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| corrupt(format!("header is not valid JSON ({e})")))?;
    let entries = header
        .as_object()
        .ok_or_else(|| corrupt("header is not a JSON object".into()))?;
    let mut data_len = 0u64;
    for (name, entry) in entries {
        if name == "__metadata__" {
            continue;
        }
        let end = entry
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt(format!("tensor `{name}` has no data_offsets")))?;
        data_len = data_len.max(end);
    }
    let have = file_len - 8 - header_len;
    if have != data_len {
        return Err(corrupt(format!(
            "truncated or padded: the header describes {data_len} bytes of tensor data, the file holds {have}"
        )));
    }
    Ok(())
}
