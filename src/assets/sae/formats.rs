//! The published SAE formats, each read as SAELens' loader for it reads it: which file
//! holds which tensor, in which layout, and what each config's fields mean. Every reader
//! gives the same [`Read`]: the config as strata applies it, and the tensors in SAELens'
//! layout (`W_enc [d_in, d_sae]`, `W_dec [d_sae, d_out]`, `d_out = d_in` but for a
//! transcoder), in f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::types::{Activation, Normalize, Sae, SaeError, SaeFormat, SaeSource};
use crate::model::kernels::Dense;
use crate::model::storage::Floats;

/// A tensor: its shape, its values widened to f32, and the dtype its file stores.
type Tensor = (Vec<usize>, Vec<f32>, candle_core::DType);

/// The normalisation a config asks for, before a dataset-wide scale is folded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Norm {
    /// `none`.
    None,
    /// `expected_average_only_in`, with its factor when the files give it.
    ExpectedAverage(Option<f64>),
    /// `constant_norm_rescale`.
    Constant,
    /// `layer_norm`.
    Layer,
}

/// A config as strata applies it.
#[derive(Debug, Clone)]
struct Config {
    architecture: String,
    k: Option<usize>,
    rescale_by_decoder_norm: bool,
    apply_b_dec_to_input: bool,
    norm: Norm,
    hook: Option<String>,
    /// A transcoder's output hook.
    hook_out: Option<String>,
    center: Option<bool>,
    /// One threshold for every feature (Llama Scope, dictionary_learning's BatchTopK).
    scalar_threshold: Option<f64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            architecture: "standard".into(),
            k: None,
            rescale_by_decoder_norm: false,
            apply_b_dec_to_input: true,
            norm: Norm::None,
            hook: None,
            hook_out: None,
            center: None,
            scalar_threshold: None,
        }
    }
}

/// One SAE's files, read: its config and its tensors by SAELens' names.
pub struct Read {
    /// The format, as the files say (SAELens 6 or earlier).
    pub format: SaeFormat,
    /// The file its weights came from.
    pub weights_path: PathBuf,
    /// The model it was trained on.
    pub model_name: Option<String>,
    config: Config,
    config_path: PathBuf,
    tensors: HashMap<String, Tensor>,
    log_sparsity: Option<Vec<f32>>,
}

/// Reads the files `paths` of format `format` (in the order its layout lists them) in
/// `folder`.
pub fn read(format: SaeFormat, folder: &Path, paths: &[PathBuf]) -> Result<Read, SaeError> {
    match format {
        SaeFormat::SaeLens | SaeFormat::SaeLensPre6 => sae_lens(paths),
        SaeFormat::Sparsify => sparsify(folder, paths),
        SaeFormat::GemmaScope => gemma_scope(folder, paths),
        SaeFormat::GemmaScope2 => gemma_scope_2(folder, paths),
        SaeFormat::DictionaryLearning => dictionary_learning(paths),
        SaeFormat::LlamaScope => llama_scope(paths),
    }
}

fn json(path: &Path) -> Result<Value, SaeError> {
    let text = std::fs::read_to_string(path).map_err(|cause| SaeError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    serde_json::from_str(&text).map_err(|e| SaeError::Config {
        path: path.to_path_buf(),
        detail: format!("not JSON ({e})"),
    })
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(String::from)
}

fn usize_of(v: &Value, key: &str) -> Option<usize> {
    v.get(key).and_then(Value::as_u64).map(|x| x as usize)
}

fn weights_error(path: &Path, detail: impl Into<String>) -> SaeError {
    SaeError::Weights {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn config_error(path: &Path, detail: impl Into<String>) -> SaeError {
    SaeError::Config {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Every tensor of a candle tensor list, widened to f32.
fn widen(
    path: &Path,
    named: impl IntoIterator<Item = (String, candle_core::Tensor)>,
) -> Result<HashMap<String, Tensor>, SaeError> {
    named
        .into_iter()
        .map(|(name, t)| {
            let shape = t.dims().to_vec();
            let dtype = t.dtype();
            let values = t
                .to_dtype(candle_core::DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| weights_error(path, format!("`{name}`: {e}")))?;
            Ok((name, (shape, values, dtype)))
        })
        .collect()
}

/// The tensors of a safetensors file (checked first, so a truncated file says so).
fn safetensors(path: &Path) -> Result<HashMap<String, Tensor>, SaeError> {
    crate::model::check_safetensors(path).map_err(|e| weights_error(path, e.to_string()))?;
    let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .map_err(|e| weights_error(path, format!("not a readable safetensors file ({e})")))?;
    widen(path, map)
}

/// The arrays of a numpy `.npz` file.
fn npz(path: &Path) -> Result<HashMap<String, Tensor>, SaeError> {
    let arrays = candle_core::Tensor::read_npz(path)
        .map_err(|e| weights_error(path, format!("not a readable numpy .npz file ({e})")))?;
    widen(path, arrays)
}

/// The tensors of a torch zip-pickle state dict.
fn pickle(path: &Path) -> Result<HashMap<String, Tensor>, SaeError> {
    let pth = candle_core::pickle::PthTensors::new(path, None)
        .map_err(|e| weights_error(path, format!("not a torch zip-pickle ({e})")))?;
    let mut named = Vec::new();
    for name in pth.tensor_infos().keys() {
        let t = pth
            .get(name)
            .map_err(|e| weights_error(path, format!("`{name}`: {e}")))?
            .ok_or_else(|| weights_error(path, format!("no tensor `{name}`")))?;
        named.push((name.clone(), t));
    }
    if named.is_empty() {
        return Err(weights_error(path, "it holds no named tensors"));
    }
    widen(path, named)
}

/// The normalisation a SAELens config names.
fn sae_lens_norm(v: &Value, path: &Path) -> Result<Norm, SaeError> {
    let factor = v
        .get("norm_scaling_factor")
        .or_else(|| v.get("metadata").and_then(|m| m.get("norm_scaling_factor")))
        .and_then(Value::as_f64);
    match v.get("normalize_activations") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(Norm::None),
        Some(Value::Bool(true)) => Ok(Norm::ExpectedAverage(factor)),
        Some(Value::String(s)) => match s.as_str() {
            "none" => Ok(Norm::None),
            "expected_average_only_in" => Ok(Norm::ExpectedAverage(factor)),
            "constant_norm_rescale" => Ok(Norm::Constant),
            "layer_norm" => Ok(Norm::Layer),
            other => Err(config_error(path, format!(
                "normalize_activations {other:?} is not one strata applies: none, expected_average_only_in, constant_norm_rescale or layer_norm"
            ))),
        },
        Some(other) => Err(config_error(
            path,
            format!("normalize_activations {other} is neither a name nor a bool"),
        )),
    }
}

/// String `key` of a SAELens config, at its top level or in its `metadata`.
fn hf_hook(v: &Value, key: &str) -> Option<String> {
    str_of(v, key).or_else(|| v.get("metadata").and_then(|m| str_of(m, key)))
}

/// Whether a SAELens config was written by SAELens 6 or later.
fn is_sae_lens_6(v: &Value) -> bool {
    let version = str_of(v, "sae_lens_version").or_else(|| {
        v.get("metadata")
            .and_then(|m| str_of(m, "sae_lens_version"))
    });
    version
        .and_then(|s| s.split('.').next().and_then(|m| m.parse::<u32>().ok()))
        .is_some_and(|major| major >= 6)
}

/// A config before SAELens 6 names a TopK SAE by its activation function.
fn pre6_architecture(v: &Value, config: &mut Config) {
    let f = str_of(v, "activation_fn_str").or_else(|| str_of(v, "activation_fn"));
    if f.as_deref() == Some("topk") {
        config.architecture = "topk".into();
        config.k = v
            .get("activation_fn_kwargs")
            .and_then(|k| usize_of(k, "k"))
            .or(config.k);
    }
}

/// SAELens: `cfg.json`, `sae_weights.safetensors`, optional `sparsity.safetensors`.
fn sae_lens(paths: &[PathBuf]) -> Result<Read, SaeError> {
    let (cfg_path, weights_path) = (&paths[0], &paths[1]);
    let v = json(cfg_path)?;
    let six = is_sae_lens_6(&v);
    let meta = if six { v.get("metadata") } else { Some(&v) };
    let field = |key: &str| meta.and_then(|m| m.get(key));
    let mut config = Config {
        apply_b_dec_to_input: v
            .get("apply_b_dec_to_input")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        norm: sae_lens_norm(&v, cfg_path)?,
        // A Hugging Face module name, where the config gives one, says exactly where the
        // SAE reads in a transformers model.
        hook: hf_hook(&v, "hf_hook_name").or_else(|| {
            field(if six { "hook_name" } else { "hook_point" })
                .or_else(|| field("hook_name"))
                .and_then(Value::as_str)
                .map(String::from)
        }),
        hook_out: hf_hook(&v, "hf_hook_name_out").or_else(|| hf_hook(&v, "hook_name_out")),
        center: field("model_from_pretrained_kwargs")
            .and_then(|k| k.get("center_writing_weights"))
            .and_then(Value::as_bool),
        k: usize_of(&v, "k"),
        rescale_by_decoder_norm: v
            .get("rescale_acts_by_decoder_norm")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..Config::default()
    };
    config.architecture = match str_of(&v, "architecture") {
        Some(a) => a,
        None if !six => "standard".into(),
        None => return Err(config_error(cfg_path, "no `architecture`")),
    };
    if !six {
        pre6_architecture(&v, &mut config);
    }
    if str_of(&v, "reshape_activations")
        .as_deref()
        .is_some_and(|r| r != "none" && r != "hook_z")
    {
        return Err(config_error(
            cfg_path,
            "reshape_activations must be none or hook_z",
        ));
    }
    let tensors = safetensors(weights_path)?;
    let log_sparsity = match paths.get(2) {
        Some(p) => {
            let s = safetensors(p)?;
            let (_, values, _) = s
                .get("sparsity")
                .ok_or_else(|| weights_error(p, "no tensor `sparsity`"))?;
            Some(values.clone())
        }
        None => None,
    };
    Ok(Read {
        format: if six {
            SaeFormat::SaeLens
        } else {
            SaeFormat::SaeLensPre6
        },
        weights_path: weights_path.clone(),
        model_name: field("model_name")
            .and_then(Value::as_str)
            .map(String::from),
        config,
        config_path: cfg_path.clone(),
        tensors,
        log_sparsity,
    })
}

/// Renames tensors and transposes those stored `[out, in]`: `(from, to, transpose)`,
/// the first present source of each target winning.
fn rename(
    mut tensors: HashMap<String, Tensor>,
    map: &[(&str, &str, bool)],
) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for &(from, to, transpose) in map {
        if out.contains_key(to) {
            continue;
        }
        if let Some((shape, values, dtype)) = tensors.remove(from) {
            let t = if transpose && shape.len() == 2 {
                (
                    vec![shape[1], shape[0]],
                    transposed(&values, shape[0], shape[1]),
                    dtype,
                )
            } else {
                (shape, values, dtype)
            };
            out.insert(to.to_string(), t);
        }
    }
    out
}

/// The `[cols, rows]` transpose of row-major `[rows, cols]` values.
fn transposed(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// `blocks.N.hook_resid_post` for a folder or path part naming `layers.N` or `layer_N`.
fn layer_in(text: &str, marks: &[&str]) -> Option<usize> {
    marks.iter().find_map(|m| {
        let at = text.rfind(m)? + m.len();
        let digits: String = text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

/// EleutherAI sparsify: `cfg.json` (`d_in`, `k`, `num_latents` or `expansion_factor`,
/// `normalize_decoder`), `sae.safetensors`; the hook from the folder's name (`layers.N`).
fn sparsify(folder: &Path, paths: &[PathBuf]) -> Result<Read, SaeError> {
    let (cfg_path, weights_path) = (&paths[0], &paths[1]);
    let v = json(cfg_path)?;
    if v.get("signed").and_then(Value::as_bool) == Some(true) {
        return Err(config_error(cfg_path, "a signed sparsify coder keeps negative activations, which no SAELens architecture does; strata does not apply it"));
    }
    let name = folder.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let hook =
        layer_in(name, &["layers.", "layers_"]).map(|l| format!("blocks.{l}.hook_resid_post"));
    let model_name = folder
        .parent()
        .map(|p| p.join("config.json"))
        .filter(|p| p.is_file())
        .and_then(|p| json(&p).ok())
        .and_then(|c| str_of(&c, "model"));
    let config = Config {
        architecture: "topk".into(),
        k: usize_of(&v, "k"),
        apply_b_dec_to_input: !v
            .get("normalize_decoder")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        hook,
        ..Config::default()
    };
    let tensors = rename(
        safetensors(weights_path)?,
        &[
            ("W_enc", "W_enc", false),
            ("encoder.weight", "W_enc", true),
            ("b_enc", "b_enc", false),
            ("encoder.bias", "b_enc", false),
            ("W_dec", "W_dec", false),
            ("decoder.weight", "W_dec", true),
            ("b_dec", "b_dec", false),
            ("decoder.bias", "b_dec", false),
        ],
    );
    Ok(Read {
        format: SaeFormat::Sparsify,
        weights_path: weights_path.clone(),
        model_name,
        config,
        config_path: cfg_path.clone(),
        tensors,
        log_sparsity: None,
    })
}

/// The hook a Gemma Scope folder names: `layer_L` in its path, and the release's kind in
/// a folder above it (`...-res`, `...-mlp`, `...-att`, as the Hub repos are named).
fn gemma_scope_hook(folder: &Path) -> Option<String> {
    let text = folder.to_string_lossy().replace('\\', "/");
    let layer = layer_in(&text, &["layer_"])?;
    let parts: Vec<&str> = text.split('/').collect();
    let kind = parts.iter().rev().find_map(|p| {
        let p = p.split("--").last().unwrap_or(p);
        [
            ("-res", "hook_resid_post"),
            ("-mlp", "hook_mlp_out"),
            ("-att", "attn.hook_z"),
        ]
        .iter()
        .find(|(suffix, _)| p.ends_with(suffix) || p.contains(&format!("{suffix}-")))
        .map(|(_, hook)| *hook)
    })?;
    Some(format!("blocks.{layer}.{kind}"))
}

/// Gemma Scope: `params.npz` (`W_enc W_dec b_enc b_dec threshold`), JumpReLU, no `b_dec`
/// subtracted from the input; the hook from the folder.
fn gemma_scope(folder: &Path, paths: &[PathBuf]) -> Result<Read, SaeError> {
    let weights_path = &paths[0];
    let tensors = rename(
        npz(weights_path)?,
        &[
            ("W_enc", "W_enc", false),
            ("w_enc", "W_enc", false),
            ("W_dec", "W_dec", false),
            ("w_dec", "W_dec", false),
            ("b_enc", "b_enc", false),
            ("b_dec", "b_dec", false),
            ("threshold", "threshold", false),
        ],
    );
    if folder.to_string_lossy().contains("embedding") {
        return Err(config_error(
            weights_path,
            "an embedding SAE reads TransformerLens' hook_embed, which strata does not capture",
        ));
    }
    Ok(Read {
        format: SaeFormat::GemmaScope,
        weights_path: weights_path.clone(),
        model_name: None,
        config: Config {
            architecture: "jumprelu".into(),
            apply_b_dec_to_input: false,
            hook: gemma_scope_hook(folder),
            ..Config::default()
        },
        config_path: weights_path.clone(),
        tensors,
        log_sparsity: None,
    })
}

/// Gemma Scope 2: `params.safetensors` (`w_enc w_dec b_enc b_dec threshold`), and a
/// `config.json` whose `hf_hook_point_in` names the hook (else the folder's name does).
fn gemma_scope_2(folder: &Path, paths: &[PathBuf]) -> Result<Read, SaeError> {
    let weights_path = &paths[0];
    let (config_path, v) = match paths.get(1) {
        Some(p) => (p.clone(), Some(json(p)?)),
        None => (weights_path.clone(), None),
    };
    if let Some(a) = v.as_ref().and_then(|v| str_of(v, "architecture")) {
        if a != "jump_relu" {
            return Err(config_error(
                &config_path,
                format!("architecture {a:?}: Gemma Scope 2 SAEs are jump_relu"),
            ));
        }
    }
    let name = folder.to_string_lossy();
    if name.contains("clt") {
        return Err(config_error(&config_path, "a cross-layer transcoder writes to every later layer; strata applies SAEs and single-layer transcoders"));
    }
    let hf = |key: &str| v.as_ref().and_then(|v| str_of(v, key));
    let transcoder = hf("hf_hook_point_out").is_some() || name.contains("transcoder");
    let layer = layer_in(&name, &["layer_"]);
    let hook = hf("hf_hook_point_in").or_else(|| {
        let kind = [
            ("transcoder", "pre_feedforward_layernorm.output"),
            ("resid_post", "output"),
            ("attn_out", "self_attn.o_proj.input"),
            ("mlp_out", "post_feedforward_layernorm.output"),
        ]
        .iter()
        .find(|(k, _)| name.contains(k))?
        .1;
        Some(format!("model.layers.{}.{kind}", layer?))
    });
    let hook_out = match transcoder {
        true => hf("hf_hook_point_out").or_else(|| {
            Some(format!(
                "model.layers.{}.post_feedforward_layernorm.output",
                layer?
            ))
        }),
        false => None,
    };
    let tensors = rename(
        safetensors(weights_path)?,
        &[
            ("w_enc", "W_enc", false),
            ("w_dec", "W_dec", false),
            ("b_enc", "b_enc", false),
            ("b_dec", "b_dec", false),
            ("threshold", "threshold", false),
            // Stored [d_in, d_out], as strata multiplies it.
            ("affine_skip_connection", "W_skip_in", false),
        ],
    );
    let architecture = match (transcoder, tensors.contains_key("W_skip_in")) {
        (false, _) => "jumprelu",
        (true, false) => "jumprelu_transcoder",
        (true, true) => "jumprelu_skip_transcoder",
    };
    Ok(Read {
        format: SaeFormat::GemmaScope2,
        weights_path: weights_path.clone(),
        model_name: v.as_ref().and_then(|v| str_of(v, "model_name")),
        config: Config {
            architecture: architecture.into(),
            apply_b_dec_to_input: false,
            hook,
            hook_out,
            ..Config::default()
        },
        config_path,
        tensors,
        log_sparsity: None,
    })
}

/// dictionary_learning: `ae.pt` (a torch state dict, encoder and decoder stored as
/// `nn.Linear`s) and `config.json` (`trainer.dict_class`, `activation_dim`, `dict_size`,
/// `k`, `layer`, `lm_name`).
fn dictionary_learning(paths: &[PathBuf]) -> Result<Read, SaeError> {
    let (weights_path, cfg_path) = (&paths[0], &paths[1]);
    let v = json(cfg_path)?;
    let trainer = v.get("trainer").ok_or_else(|| {
        config_error(
            cfg_path,
            "no `trainer`: a dictionary_learning config.json names its trainer",
        )
    })?;
    let class = str_of(trainer, "dict_class").unwrap_or_default();
    let (architecture, apply_b_dec_to_input) = match class.as_str() {
        "AutoEncoderTopK" => ("topk", true),
        "GatedAutoEncoder" => ("gated", true),
        "MatryoshkaBatchTopKSAE" | "BatchTopKSAE" => ("jumprelu", true),
        "JumpReluAutoEncoder" => ("jumprelu", false),
        _ => ("standard", true),
    };
    let tensors = pickle(weights_path)?;
    let scalar_threshold = tensors
        .get("threshold")
        .filter(|(shape, _, _)| shape.is_empty())
        .map(|(_, v, _)| v[0] as f64);
    let tensors = rename(
        tensors,
        &[
            ("W_enc", "W_enc", false),
            ("encoder.weight", "W_enc", true),
            ("W_dec", "W_dec", false),
            ("decoder.weight", "W_dec", true),
            ("b_dec", "b_dec", false),
            ("bias", "b_dec", false),
            ("decoder_bias", "b_dec", false),
            ("b_enc", "b_enc", false),
            ("encoder.bias", "b_enc", false),
            ("mag_bias", "b_mag", false),
            ("gate_bias", "b_gate", false),
            ("r_mag", "r_mag", false),
            ("threshold", "threshold", false),
        ],
    );
    Ok(Read {
        format: SaeFormat::DictionaryLearning,
        weights_path: weights_path.clone(),
        model_name: str_of(trainer, "lm_name"),
        config: Config {
            architecture: architecture.into(),
            k: usize_of(trainer, "k"),
            apply_b_dec_to_input,
            hook: usize_of(trainer, "layer").map(|l| format!("blocks.{l}.hook_resid_post")),
            scalar_threshold: scalar_threshold.filter(|_| architecture == "jumprelu"),
            ..Config::default()
        },
        config_path: cfg_path.clone(),
        tensors,
        log_sparsity: None,
    })
}

/// Llama Scope: `hyperparams.json` (`d_model`, `d_sae`, `hook_point_in`,
/// `jump_relu_threshold`, `dataset_average_activation_norm.in`) and
/// `checkpoints/final.safetensors` (`nn.Linear` encoder and decoder).
fn llama_scope(paths: &[PathBuf]) -> Result<Read, SaeError> {
    let (cfg_path, weights_path) = (&paths[0], &paths[1]);
    let v = json(cfg_path)?;
    let d_in = usize_of(&v, "d_model").ok_or_else(|| config_error(cfg_path, "no `d_model`"))?;
    let norm_in = v
        .get("dataset_average_activation_norm")
        .and_then(|n| n.get("in"))
        .and_then(Value::as_f64)
        .ok_or_else(|| {
            config_error(
                cfg_path,
                "no `dataset_average_activation_norm.in`: Llama Scope scales its input by it",
            )
        })?;
    let theta = v
        .get("jump_relu_threshold")
        .and_then(Value::as_f64)
        .ok_or_else(|| config_error(cfg_path, "no `jump_relu_threshold`"))?;
    // SAELens scales the threshold by the factor it folds into the encoder.
    let factor = (d_in as f64).sqrt() / norm_in;
    let tensors = rename(
        safetensors(weights_path)?,
        &[
            ("encoder.weight", "W_enc", true),
            ("decoder.weight", "W_dec", true),
            ("encoder.bias", "b_enc", false),
            ("decoder.bias", "b_dec", false),
        ],
    );
    Ok(Read {
        format: SaeFormat::LlamaScope,
        weights_path: weights_path.clone(),
        model_name: None,
        config: Config {
            architecture: "jumprelu".into(),
            apply_b_dec_to_input: false,
            norm: Norm::ExpectedAverage(Some(factor)),
            hook: str_of(&v, "hook_point_in"),
            scalar_threshold: Some(theta * factor),
            ..Config::default()
        },
        config_path: cfg_path.clone(),
        tensors,
        log_sparsity: None,
    })
}

impl Read {
    /// Takes tensor `name`, refusing one that is missing or of another shape.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, SaeError> {
        self.take_stored(name, shape).map(|(v, _)| v)
    }

    /// [`Read::take`], with the dtype the file stores it in.
    fn take_stored(
        &mut self,
        name: &str,
        shape: &[usize],
    ) -> Result<(Vec<f32>, candle_core::DType), SaeError> {
        let (got, values, dtype) = self.tensors.remove(name).ok_or_else(|| {
            weights_error(
                &self.weights_path,
                format!(
                    "no tensor `{name}`, which a {} SAE needs",
                    self.config.architecture
                ),
            )
        })?;
        if got != shape {
            return Err(weights_error(
                &self.weights_path,
                format!("`{name}` has shape {got:?}, not {shape:?}"),
            ));
        }
        Ok((values, dtype))
    }

    /// The SAE, checked: every tensor its architecture needs, of the right shape, and the
    /// dataset-wide input scale folded into the weights as SAELens folds it.
    pub fn into_sae(mut self, source: SaeSource, scale: Option<f64>) -> Result<Sae, SaeError> {
        let (d_in, d_sae) = match self.tensors.get("W_enc") {
            Some((s, _, _)) if s.len() == 2 => (s[0], s[1]),
            Some((s, _, _)) => {
                return Err(weights_error(
                    &self.weights_path,
                    format!("`W_enc` has shape {s:?}, not [d_in, d_sae]"),
                ))
            }
            None => {
                return Err(weights_error(
                    &self.weights_path,
                    "no tensor `W_enc` (or `encoder.weight`)",
                ))
            }
        };
        let transcoder = self.transcoder()?;
        let d_out = match (transcoder, self.tensors.get("W_dec")) {
            (Some(_), Some((s, _, _))) if s.len() == 2 => s[1],
            _ => d_in,
        };
        let (mut w_enc, enc_dtype) = self.take_stored("W_enc", &[d_in, d_sae])?;
        let (mut w_dec, dec_dtype) = self.take_stored("W_dec", &[d_sae, d_out])?;
        let mut b_dec = self.take("b_dec", &[d_out])?;
        let skip = match transcoder {
            Some(true) => Some(self.skip(d_in, d_out)?),
            _ => None,
        };
        let b_enc = match self.config.architecture.as_str() {
            "gated" => self.take("b_gate", &[d_sae])?,
            _ if !self.tensors.contains_key("b_enc") && self.format == SaeFormat::Sparsify => {
                vec![0.0; d_sae]
            }
            _ => self.take("b_enc", &[d_sae])?,
        };
        if transcoder.is_some() && self.config.norm != Norm::None {
            return Err(config_error(&self.config_path, "strata applies transcoders without run-time input normalisation: give one with normalize_activations none"));
        }
        let normalize = self.fold_norm(scale, &mut w_enc, &mut w_dec, &mut b_dec)?;
        // The gated magnitude path shares the folded encoder, as SAELens folds it.
        let activation = match self.activation(d_in, d_sae, &w_enc)? {
            Activation::TopK { k, .. } if self.config.rescale_by_decoder_norm => Activation::TopK {
                k,
                decoder_norms: Some(row_norms(&w_dec, d_out)),
            },
            a => a,
        };
        let decoder_scale = self
            .tensors
            .remove("scaling_factor")
            .map(|(_, v, _)| v)
            .filter(|v| v.iter().any(|&x| x != 1.0));
        Ok(Sae {
            d_in,
            d_sae,
            d_out,
            // Kept in the file's dtype where folding left them exact in it.
            encoder: Dense::in_major(Floats::exact(w_enc, enc_dtype), d_in, d_sae, Some(b_enc)),
            w_dec: Floats::exact(w_dec, dec_dtype),
            b_dec,
            skip,
            activation,
            // A transcoder's b_dec is of its output's width (SAELens refuses the flag).
            apply_b_dec_to_input: self.config.apply_b_dec_to_input && transcoder.is_none(),
            normalize,
            decoder_scale,
            hook: self.config.hook.clone(),
            transcoder: transcoder.is_some(),
            hook_out: self.config.hook_out.clone(),
            center_writing_weights: self.config.center,
            log_sparsity: self.log_sparsity.clone(),
            source,
        })
    }

    /// The run-time normalisation, with a dataset-wide scale folded into the weights as
    /// SAELens folds it.
    fn fold_norm(
        &self,
        scale: Option<f64>,
        w_enc: &mut [f32],
        w_dec: &mut [f32],
        b_dec: &mut [f32],
    ) -> Result<Normalize, SaeError> {
        Ok(match self.config.norm {
            Norm::None => Normalize::None,
            Norm::Constant => Normalize::ConstantNormRescale,
            Norm::Layer => Normalize::LayerNorm,
            Norm::ExpectedAverage(factor) => {
                let s = factor.or(scale).ok_or_else(|| config_error(&self.config_path, "normalize_activations is expected_average_only_in, but the files give no norm_scaling_factor (SAELens finds it in its directory of releases): give it as the analysis' `norm_scaling_factor`"))? as f32;
                w_enc.iter_mut().for_each(|w| *w *= s);
                w_dec.iter_mut().for_each(|w| *w /= s);
                b_dec.iter_mut().for_each(|b| *b /= s);
                Normalize::None
            }
        })
    }

    /// For a transcoder architecture (`transcoder`, `skip_transcoder`, `jumprelu_transcoder`,
    /// `jumprelu_skip_transcoder`), whether it has a skip connection, the architecture
    /// narrowed to its activation; `None` for an SAE.
    fn transcoder(&mut self) -> Result<Option<bool>, SaeError> {
        let arch = self.config.architecture.clone();
        let Some(base) = arch.strip_suffix("transcoder") else {
            return Ok(None);
        };
        let (base, skip) = match base.strip_suffix("skip_") {
            Some(b) => (b, true),
            None => (base, false),
        };
        self.config.architecture = match base {
            "" => "standard".into(),
            "jumprelu_" => "jumprelu".into(),
            _ => {
                return Err(config_error(&self.config_path, format!(
                    "architecture {arch:?} is not one strata applies: transcoder, skip_transcoder, jumprelu_transcoder or jumprelu_skip_transcoder"
                )))
            }
        };
        Ok(Some(skip))
    }

    /// A skip transcoder's `x W_skip`, from SAELens' `W_skip [d_out, d_in]` or Gemma
    /// Scope 2's `affine_skip_connection [d_in, d_out]`.
    fn skip(&mut self, d_in: usize, d_out: usize) -> Result<Dense, SaeError> {
        let w = match self.tensors.contains_key("W_skip_in") {
            true => self.take("W_skip_in", &[d_in, d_out])?,
            false => transposed(&self.take("W_skip", &[d_out, d_in])?, d_out, d_in),
        };
        Ok(Dense::from_f32(w, d_in, d_out, None))
    }

    /// The activation the config names, with its tensors.
    fn activation(
        &mut self,
        d_in: usize,
        d_sae: usize,
        w_enc: &[f32],
    ) -> Result<Activation, SaeError> {
        match self.config.architecture.as_str() {
            "standard" | "relu" => Ok(Activation::Standard),
            "jumprelu" | "jump_relu" => {
                let threshold = match self.config.scalar_threshold {
                    Some(t) => vec![t as f32; d_sae],
                    None => self.take("threshold", &[d_sae])?,
                };
                Ok(Activation::JumpRelu { threshold })
            }
            "topk" => {
                let k = self.config.k.filter(|&k| k >= 1 && k <= d_sae).ok_or_else(|| {
                    config_error(&self.config_path, format!("a topk SAE needs `k` between 1 and d_sae = {d_sae}; it gives {:?}", self.config.k))
                })?;
                Ok(Activation::TopK {
                    k,
                    decoder_norms: None,
                })
            }
            "gated" => {
                let b_mag = self.take("b_mag", &[d_sae])?;
                let r_mag = self.take("r_mag", &[d_sae])?;
                let scale: Vec<f32> = r_mag.iter().map(|r| r.exp()).collect();
                let w_mag = w_enc
                    .chunks_exact(d_sae)
                    .flat_map(|row| row.iter().zip(&scale).map(|(w, s)| w * s))
                    .collect();
                Ok(Activation::Gated {
                    magnitude: Dense::from_f32(w_mag, d_in, d_sae, Some(b_mag)),
                })
            }
            other => Err(config_error(&self.config_path, format!(
                "architecture {other:?} is not one strata applies: standard, jumprelu, topk or gated"
            ))),
        }
    }
}

/// The Euclidean norm of each `width`-wide row (torch's `norm(dim=-1)`), summed in f64 and
/// rounded once to f32.
fn row_norms(m: &[f32], width: usize) -> Vec<f32> {
    m.chunks_exact(width)
        .map(|r| {
            r.iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>()
                .sqrt() as f32
        })
        .collect()
}
