//! `strata extract`: every hidden state of some texts, as a safetensors file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::corpus::TextInput;
use crate::extract;
use crate::model::{LoadedModel, ModelRef, Site};

/// Which model to load.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Hub repo id (`gpt2`, `openai-community/gpt2`, `distilgpt2`, ...) or a local folder.
    #[arg(long, short = 'm')]
    pub model: String,
    /// Hub branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// A GGUF file in the Hub repo `--model` names, to load instead of its safetensors.
    #[arg(long)]
    pub gguf_file: Option<String>,
    /// GGUF only: keep the weights quantized and run quantized matmuls (faster; the
    /// numbers then differ from transformers, which dequantizes).
    #[arg(long)]
    pub quantized: bool,
}

impl ModelArgs {
    fn to_ref(&self) -> ModelRef {
        ModelRef {
            id: self.model.clone(),
            revision: self.revision.clone(),
            file: self.gguf_file.clone(),
            quantized: self.quantized,
        }
    }
}

/// `strata extract`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// One text.
    #[arg(long, conflicts_with = "texts", required_unless_present = "texts")]
    pub text: Option<String>,
    /// A UTF-8 file with one text per line (`.gz` and `.zst` are decompressed, as a `.txt`
    /// corpus is); tensors are then prefixed `text{j}.`.
    #[arg(long)]
    pub texts: Option<PathBuf>,
    /// Output file (`.safetensors`), written atomically.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Texts per forward pass (right-padded; results equal one-at-a-time).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch_size: u16,
    /// Also write this site of every block (`attn_out`, `mlp_out`, `mlp_act`, and a
    /// mixture of experts' `router_logits`, of its sparse blocks), as `SITE.{l}`; repeat
    /// for several.
    #[arg(long = "site", value_parser = parse_site)]
    pub sites: Vec<Site>,
    /// Also write every attention probability, `attentions.{l}` `[heads, tokens, tokens]`.
    #[arg(long)]
    pub attention: bool,
    /// With --attention: the most memory the probabilities of one text may take.
    #[arg(long, default_value = "2 GiB", value_parser = parse_memory)]
    pub max_memory: u64,
}

/// A `--site` value, naming the sites on error.
// A clap value parser: clap prints its message as it is, so it stays a String.
fn parse_site(s: &str) -> Result<Site, String> {
    Site::parse(s).ok_or_else(|| {
        format!(
            "`{s}` is not a site; use one of {}",
            crate::model::capture::site_names()
        )
    })
}

/// A `--max-memory` value such as `2 GiB` or `512 MiB`.
// A clap value parser: clap prints its message as it is, so it stays a String.
fn parse_memory(s: &str) -> Result<u64, String> {
    crate::memory::parse_bytes(s)
        .ok_or_else(|| format!("`{s}` is not a size; write e.g. \"2 GiB\" or \"512 MiB\""))
}

/// Refuses a site the model lacks, and attention probabilities too large for the limit,
/// before any forward runs.
fn check_extras(
    args: &ExtractArgs,
    model: &LoadedModel,
    inputs: &[TextInput],
    ids: &[Vec<u32>],
) -> Result<()> {
    let info = model.model.info();
    for &s in &args.sites {
        // A mixture of experts' dense blocks have no router: the sparse ones are written.
        let sparse_only = s == Site::RouterLogits && info.moe.is_some();
        if let Some(why) = info.lacks(s).filter(|_| !sparse_only) {
            bail!("--site {s}: {why}");
        }
        if s.is_hidden() {
            bail!("--site hidden: the hidden states are always written; name a sub-block site (attn_out, mlp_out, mlp_act, attn_z, mlp_in)");
        }
    }
    if !args.attention {
        return Ok(());
    }
    for (t, ids) in inputs.iter().zip(ids) {
        let n = ids.len();
        let need = extract::attention_bytes(info.n_layers, info.n_heads, n);
        if need > args.max_memory {
            bail!(
                "--attention: text `{}` has {n} tokens, whose probabilities ({} layers x {} heads x {n} x {n}) take {}, above --max-memory {}; extract a shorter text, or raise --max-memory to at least \"{} MiB\"",
                t.id,
                info.n_layers,
                info.n_heads,
                crate::memory::show_bytes(need),
                crate::memory::show_bytes(args.max_memory),
                need.div_ceil(1 << 20)
            );
        }
    }
    Ok(())
}

/// Runs `strata extract`.
pub(super) fn run(args: ExtractArgs) -> Result<ExitCode> {
    let (inputs, prefixed) = match (&args.text, &args.texts) {
        (Some(t), None) => (
            vec![TextInput {
                id: "text".into(),
                text: t.clone(),
                label: None,
            }],
            false,
        ),
        (None, Some(file)) => (read_text_lines(file)?, true),
        _ => bail!("give exactly one of --text or --texts"),
    };
    let model_ref = args.model.to_ref();
    let model = LoadedModel::load(&model_ref)
        .with_context(|| format!("loading model `{}`", model_ref.id))?;
    let ids = extract::tokenize(&model, &inputs)?;
    check_extras(&args, &model, &inputs, &ids)?;
    let extras = extract::Extras {
        sites: args.sites.clone(),
        attention: args.attention,
    };
    let texts = extract::extract_ids(&model, &inputs, &ids, args.batch_size as usize, &extras)?;
    let info = model.model.info();
    let bytes = extract::to_safetensors(
        &texts,
        &inputs,
        &info.labels,
        info.hidden_size,
        &model.provenance,
        prefixed,
    )
    .context("serializing hidden states")?;
    crate::io::write_atomic(&args.out, &bytes)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} hidden states of {} text(s) to {}",
        info.labels.len(),
        texts.len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// One text per line (read as a `.txt` corpus is, `.gz` and `.zst` too); a blank line is an
/// error (it would be an empty text).
fn read_text_lines(path: &Path) -> Result<Vec<TextInput>> {
    let reading = || format!("reading --texts file {}", path.display());
    let mut out = Vec::new();
    for line in crate::corpus::text_lines(path).with_context(reading)? {
        let (n, line) = line.with_context(reading)?;
        if line.trim().is_empty() {
            bail!(
                "--texts {}: line {n} is empty; remove blank lines (each line is one text)",
                path.display()
            );
        }
        out.push(TextInput {
            id: format!("text{} (line {n})", n - 1),
            text: line,
            label: None,
        });
    }
    if out.is_empty() {
        bail!("--texts {}: the file holds no text", path.display());
    }
    Ok(out)
}
