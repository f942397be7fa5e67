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

mod sweep;

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
    /// Run an experiment spec and write reports/NAME/results.json (or, with --shard, one
    /// shard's partial file).
    Report(ReportArgs),
    /// Merge the partial files of every shard of a run into results.json and index.html.
    Merge(MergeArgs),
    /// Run a spec over several revisions of its Hub model (training checkpoints): a
    /// report per revision, then sweep.json and a page of every statistic across them.
    Sweep(SweepArgs),
    /// Compare two results.json of one spec: exit 0 within tolerance, 1 outside, 2 on error.
    Compare(CompareArgs),
    /// Re-render index.html from a results.json (no model needed).
    Render(RenderArgs),
    /// Write a results.json's charts as SVG and PDF and its tables as LaTeX, for a paper.
    Figures(FiguresArgs),
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
    /// With --model: a GGUF file in that Hub repo.
    #[arg(long, requires = "model")]
    pub gguf_file: Option<String>,
    /// GGUF only: quantized matmuls instead of dequantized weights (overrides the spec).
    #[arg(long)]
    pub quantized: bool,
    /// No progress bar and no summary line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Run only shard I of N (`I/N`, 0 <= I < N; `auto`: from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX) and write its partial file to DIR (default
    /// `reports/NAME/partials/`) instead of results.json; `strata merge` joins them.
    #[arg(long, value_name = "I/N|auto")]
    pub shard: Option<crate::shard::ShardArg>,
}

/// `strata sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The spec (`experiments/NAME.yaml`); its model must be a Hub repo, or give --model.
    pub spec: PathBuf,
    /// Revisions of the model, comma-separated, in the order to chart them
    /// (`step1000,step2000,main`): branches, tags or commits.
    #[arg(long, required = true)]
    pub revisions: String,
    /// Sweep this Hub model instead of the spec's.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Output folder. Default: `reports/NAME/sweep/`.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// No progress bar and no summary line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `strata merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Partial files, or folders of them (`*.partial`).
    #[arg(required = true)]
    pub partials: Vec<PathBuf>,
    /// Output folder. Default: `reports/NAME/`.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// No summary line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `strata compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline results.json.
    pub base: PathBuf,
    /// The new results.json.
    pub new: PathBuf,
    /// Relative tolerance (overrides the spec's `compare.rtol`; default 1e-4).
    #[arg(long)]
    pub rtol: Option<f64>,
    /// Absolute tolerance (overrides `compare.atol`; default 1e-6).
    #[arg(long)]
    pub atol: Option<f64>,
    /// Largest histogram total variation distance (overrides `compare.hist_tv`; default 0.01).
    #[arg(long)]
    pub hist_tv: Option<f64>,
    /// Also write a self-contained HTML diff report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// `strata render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// A results.json written by `strata report`.
    pub results: PathBuf,
    /// Output HTML file. Default: index.html next to the results.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

/// `strata figures`.
#[derive(Debug, Args)]
pub struct FiguresArgs {
    /// A results.json written by `strata report` or `strata merge`.
    pub results: PathBuf,
    /// Output folder. Default: `figures/` next to the results.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Formats, comma-separated: `svg` and `pdf` (every chart), `tex` (every table).
    /// Default: all three.
    #[arg(long, default_value = "svg,pdf,tex")]
    pub format: String,
    /// Figure width: `column` (3.5in), `text` (7in), or a length (`89mm`, `252pt`).
    #[arg(long, default_value = "column")]
    pub width: String,
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

/// The message `strata` prints for an error: its chain of causes, joined by `: `. Each
/// cause appears once because strata's errors either quote their cause in their message
/// or return it as their `source()`, never both.
pub fn error_message(err: &anyhow::Error) -> String {
    err.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Report(args) => run_report(args),
        Command::Merge(args) => run_merge(args),
        Command::Sweep(args) => sweep::run_sweep(args),
        Command::Compare(args) => run_compare(args),
        Command::Render(args) => run_render(args),
        Command::Figures(args) => run_figures(args),
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
            file: args.gguf_file.clone(),
            quantized: spec.model.quantized,
        };
    }
    spec.model.quantized |= args.quantized;
    let shard = match args.shard {
        None => None,
        Some(crate::shard::ShardArg::Fixed(s)) => Some(s),
        Some(crate::shard::ShardArg::Auto) => Some(
            crate::shard::Shard::from_env(&|k| std::env::var(k).ok())
                .map_err(|e| anyhow::anyhow!("--shard auto: {e}"))?,
        ),
    };
    let model = LoadedModel::load(&spec.model)
        .with_context(|| format!("loading model `{}`", spec.model.id))?;
    let running = || format!("running {}", args.spec.display());
    // A shard needs the corpus size to find its range, and a progress bar its length;
    // otherwise the corpus is read once, as the run streams it.
    let show = !args.quiet && std::io::stderr().is_terminal();
    let total = match (shard, show) {
        (None, false) => None,
        _ => Some(crate::run::count_units(&spec, &model).with_context(running)?),
    };
    let range = shard.zip(total).map(|(s, n)| s.range(n));
    let bar = progress(
        show,
        range.as_ref().map(|r| r.len()).or(total).unwrap_or(0),
        "texts",
    );
    let acc = crate::run::accumulate(&spec, &model, range, &mut |id| {
        bar.set_message(id.chars().take(40).collect::<String>());
        bar.inc(1);
    })
    .with_context(running)?;
    bar.finish_and_clear();
    match shard.zip(total) {
        Some((s, total)) => write_partial(&args, &spec, s, total, acc),
        None => {
            let results = acc.finish().with_context(running)?;
            let out_dir = args
                .out
                .clone()
                .unwrap_or_else(|| Path::new("reports").join(&spec.name));
            write_report(&results, &out_dir, args.quiet)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A progress bar over `n` things (`texts`, `revisions`), hidden unless `show`.
pub(crate) fn progress(show: bool, n: usize, unit: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n as u64);
    let template =
        format!("{{spinner}} {unit} {{pos}}/{{len}} [{{bar:30}}] {{elapsed}} eta {{eta}} {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn write_partial(
    args: &ReportArgs,
    spec: &Spec,
    shard: crate::shard::Shard,
    total: usize,
    acc: crate::run::Accumulated,
) -> Result<ExitCode> {
    let partial = crate::partial::Partial::new(shard, total, acc);
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("reports").join(&spec.name).join("partials"));
    let path = dir.join(partial.file_name());
    crate::io::write_atomic(&path, &partial.to_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    if !args.quiet {
        let [a, b] = partial.shard.texts;
        eprintln!(
            "{}: shard {shard}, texts {a}..{b} of {total} -> {}",
            spec.name,
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Renders the page, then writes results.json and index.html: a failure before the
/// writes leaves no file. Returns the bytes of results.json.
pub(crate) fn write_report(
    results: &crate::results::Results,
    out_dir: &Path,
    quiet: bool,
) -> Result<Vec<u8>> {
    let html = crate::report::render(results, &Default::default())?;
    let path = out_dir.join("results.json");
    let json = results.to_json();
    crate::io::write_atomic(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    let page = out_dir.join("index.html");
    crate::io::write_atomic(&page, html.as_bytes())
        .with_context(|| format!("writing {}", page.display()))?;
    if !quiet {
        eprintln!(
            "{}: {} text(s), {} analyses -> {} and {}",
            results.name,
            results.corpus.texts,
            results.analyses.len(),
            path.display(),
            page.display()
        );
    }
    Ok(json)
}

fn run_merge(args: MergeArgs) -> Result<ExitCode> {
    let files = crate::partial::collect(&args.partials).map_err(anyhow::Error::msg)?;
    let mut parts = Vec::with_capacity(files.len());
    for f in files {
        let p = crate::partial::Partial::read(&f).map_err(anyhow::Error::msg)?;
        parts.push((f, p));
    }
    let n = parts.len();
    let acc = crate::partial::merge(parts).map_err(anyhow::Error::msg)?;
    let name = acc.info.name.clone();
    let results = acc
        .finish()
        .with_context(|| format!("merging {n} partial(s) of {name}"))?;
    results
        .validate()
        .map_err(|e| anyhow::anyhow!("merging {n} partial(s) of {name}: {e}"))?;
    let out_dir = args.out.unwrap_or_else(|| Path::new("reports").join(&name));
    write_report(&results, &out_dir, args.quiet)?;
    Ok(ExitCode::SUCCESS)
}

fn read_results(path: &Path) -> Result<crate::results::Results> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    crate::results::Results::from_json(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn run_compare(args: CompareArgs) -> Result<ExitCode> {
    let base = read_results(&args.base)?;
    let new = read_results(&args.new)?;
    // Flags win over the tolerances the baseline's spec pinned, which win over defaults.
    let pinned = base.settings.compare.unwrap_or_default();
    let tol = crate::compare::Tolerances {
        rtol: args.rtol.unwrap_or(pinned.rtol),
        atol: args.atol.unwrap_or(pinned.atol),
        hist_tv: args.hist_tv.unwrap_or(pinned.hist_tv),
    };
    tol.check().map_err(|(field, value, fix)| {
        anyhow::anyhow!("--{} {value}: {fix}", field.replace('_', "-"))
    })?;
    let comparison = crate::compare::compare(&base, &new, tol)?;
    if let Some(path) = &args.html {
        let html = crate::report::render_comparison(&base, &new, &comparison, &Default::default())?;
        crate::io::write_atomic(path, html.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", crate::compare::summary_text(&comparison));
    Ok(if comparison.pass() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_render(args: RenderArgs) -> Result<ExitCode> {
    let results = read_results(&args.results)?;
    let html = crate::report::render(&results, &Default::default())?;
    let out = args.out.unwrap_or_else(|| {
        args.results
            .parent()
            .unwrap_or(Path::new("."))
            .join("index.html")
    });
    crate::io::write_atomic(&out, html.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn run_figures(args: FiguresArgs) -> Result<ExitCode> {
    let formats = crate::figures::Format::parse_list(&args.format)
        .map_err(|e| anyhow::anyhow!("--format {}: {e}", args.format))?;
    let width: crate::figures::Width = args
        .width
        .parse()
        .map_err(|e| anyhow::anyhow!("--width: {e}"))?;
    let results = read_results(&args.results)?;
    let figures = crate::figures::render(&results, &formats, width)
        .with_context(|| format!("drawing the figures of {}", args.results.display()))?;
    let dir = args.out.unwrap_or_else(|| {
        args.results
            .parent()
            .unwrap_or(Path::new("."))
            .join("figures")
    });
    // Everything is rendered before the first file is written.
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in &figures {
        let path = dir.join(&f.name);
        crate::io::write_atomic(&path, &f.bytes)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "wrote {} figure file(s) to {}",
        figures.len(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What a spec with second models holds in memory at once: every model's weights, at
/// their files' size (as far as their files are at hand offline).
fn memory_note(spec: &Spec, offline: &crate::model::hub::HfEnv) -> String {
    let models: Vec<String> = std::iter::once(&spec.model)
        .chain(&spec.companions)
        .map(|m| {
            let size = m
                .resolve_with(offline)
                .ok()
                .and_then(|f| crate::model::loaded_weight_bytes(&f).ok())
                .map_or(
                    "size unknown offline".into(),
                    crate::stats::gram::show_bytes,
                );
            format!(
                "`{}`{} ({size})",
                m.id,
                if m.quantized { " quantized" } else { "" }
            )
        })
        .collect();
    format!(
        "memory: {} models stay loaded together for the whole run: {}; each takes about its weight files' size, plus the analyses' sums",
        models.len(),
        models.join(" and ")
    )
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
        // Second models' shapes are checked too when all of them are at hand.
        let companions: Option<Vec<_>> = spec
            .companions
            .iter()
            .map(|m| {
                let files = m.resolve_with(&offline).ok()?;
                crate::model::read_info(&files.config).ok()
            })
            .collect();
        let note = match spec.model.resolve_with(&offline) {
            Ok(files) => {
                let info = crate::model::read_info(&files.config)?;
                spec.check_layers(&info, companions.as_deref().unwrap_or_default())?;
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
        if !spec.companions.is_empty() {
            println!("  {}", memory_note(&spec, &offline));
        }
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
    let model_ref = args.model.to_ref();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_prints_each_cause_once() {
        // A spec that cannot be read: the message quotes the I/O error, which is therefore
        // not also its source.
        let missing = std::path::Path::new("/nonexistent/spec.yaml");
        let err = anyhow::Error::new(Spec::load(missing).unwrap_err()).context("reading the spec");
        let msg = error_message(&err);
        assert!(
            msg.starts_with("reading the spec: /nonexistent/spec.yaml: "),
            "{msg}"
        );
        assert_eq!(msg.matches("No such file").count(), 1, "{msg}");
        // A cause that is a source is printed after its context.
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_message(&plain), "outer: inner");
    }
}
