//! The command line: raw arguments are checked here once and turned into library calls.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::extract::{self, TextInput};
use crate::model::{LoadedModel, ModelRef};
use crate::spec::Spec;

/// Reproducible reports on language-model hidden-state activations.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment spec and write reports/NAME/results.json.
    Report(ReportArgs),
    /// Check a spec without running it (and its layers, if the model is at hand offline).
    Validate(ValidateArgs),
    /// Write every hidden state of one or more texts to a safetensors file.
    Extract(ExtractArgs),
}

/// `strata report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The spec (`experiments/NAME.yaml`).
    pub spec: PathBuf,
    /// Output folder. Default: `reports/NAME/`.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Run on this model instead of the spec's (Hub id or folder); provenance records it.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// With --model: its Hub revision.
    #[arg(long, requires = "model", default_value = "main")]
    pub revision: String,
    /// No progress bar and no summary line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `strata validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The spec files.
    #[arg(required = true)]
    pub specs: Vec<PathBuf>,
}

/// Which model to load.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Hub repo id (`gpt2`, `openai-community/gpt2`, `distilgpt2`, ...) or a local folder.
    #[arg(long, short = 'm')]
    pub model: String,
    /// Hub branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
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
    /// A UTF-8 file with one text per line; tensors are then prefixed `text{j}.`.
    #[arg(long)]
    pub texts: Option<PathBuf>,
    /// Output file (`.safetensors`), written atomically.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Texts per forward pass (right-padded; results equal one-at-a-time).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch_size: u16,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Report(args) => run_report(args),
        Command::Validate(args) => run_validate(args),
        Command::Extract(args) => run_extract(args),
    }
}

fn run_report(args: ReportArgs) -> Result<ExitCode> {
    let mut spec = Spec::load(&args.spec)?;
    if let Some(model) = &args.model {
        spec.model = ModelRef {
            id: model.clone(),
            revision: args.revision.clone(),
        };
    }
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("reports").join(&spec.name));
    let model = LoadedModel::load(&spec.model)
        .with_context(|| format!("loading model `{}`", spec.model.id))?;
    let show = !args.quiet && std::io::stderr().is_terminal();
    let bar = match (show, crate::run::count_texts(&spec.texts)) {
        (true, Some(n)) => ProgressBar::new(n),
        (true, None) => ProgressBar::new_spinner(),
        (false, _) => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} texts {pos}/{len} [{bar:30}] {elapsed} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let results = crate::run::run(&spec, &model, &mut |id| {
        bar.set_message(id.chars().take(40).collect::<String>());
        bar.inc(1);
    })
    .with_context(|| format!("running {}", args.spec.display()))?;
    bar.finish_and_clear();
    // Everything is computed before anything is written: a failed run leaves no file.
    let path = out_dir.join("results.json");
    crate::io::write_atomic(&path, &results.to_json())
        .with_context(|| format!("writing {}", path.display()))?;
    if !args.quiet {
        eprintln!(
            "{}: {} text(s), {} analyses -> {}",
            spec.name,
            results.texts.len(),
            results.analyses.len(),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_validate(args: ValidateArgs) -> Result<ExitCode> {
    for path in &args.specs {
        let spec = Spec::load(path)?;
        // Layers can be checked against the model without a download when its config
        // is in a local folder or the cache.
        let offline = crate::model::hub::HfEnv {
            offline: true,
            ..crate::model::hub::HfEnv::from_env()
        };
        let note = match spec.model.resolve_with(&offline) {
            Ok(files) => {
                let info = crate::model::read_info(&files.config)?;
                spec.check_layers(&info)?;
                format!(
                    "layers checked against {} ({} hidden states)",
                    spec.model.id,
                    info.labels.len()
                )
            }
            Err(_) => format!(
                "model `{}` not available offline: layers not checked",
                spec.model.id
            ),
        };
        println!(
            "{}: ok ({} analyses; {note})",
            path.display(),
            spec.analyses.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_extract(args: ExtractArgs) -> Result<ExitCode> {
    let (inputs, prefixed) = match (&args.text, &args.texts) {
        (Some(t), None) => (
            vec![TextInput {
                id: "text".into(),
                text: t.clone(),
            }],
            false,
        ),
        (None, Some(file)) => (read_text_lines(file)?, true),
        _ => bail!("give exactly one of --text or --texts"),
    };
    let model_ref = ModelRef {
        id: args.model.model.clone(),
        revision: args.model.revision.clone(),
    };
    let model = LoadedModel::load(&model_ref)
        .with_context(|| format!("loading model `{}`", model_ref.id))?;
    let texts = extract::extract(&model, &inputs, args.batch_size as usize)?;
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

/// One text per line; a blank line is an error (it would be an empty text).
fn read_text_lines(path: &Path) -> Result<Vec<TextInput>> {
    let content = std::fs::read_to_string(path)
        .with_context(|| format!("reading --texts file {}", path.display()))?;
    let mut out = Vec::new();
    for (j, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            bail!(
                "--texts {}: line {} is empty; remove blank lines (each line is one text)",
                path.display(),
                j + 1
            );
        }
        out.push(TextInput {
            id: format!("text{j} (line {})", j + 1),
            text: line.to_string(),
        });
    }
    if out.is_empty() {
        bail!("--texts {}: the file holds no text", path.display());
    }
    Ok(out)
}
