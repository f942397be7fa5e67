//! `strata report`: a spec run into results.json and index.html, or one shard's partial.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::output::{progress, write_report, write_timings};
use crate::model::{LoadedModel, ModelRef};
use crate::spec::Spec;

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
    pub shard: Option<crate::run::shard::ShardArg>,
    /// Also write timings.json beside the output (wall and CPU seconds per stage: load,
    /// tokenize, forward, capture, each analysis' update and finish, render) and print
    /// them, most costly first. Timings are not part of results.json.
    #[arg(long)]
    pub timings: bool,
}

/// Runs `strata report`.
pub(super) fn run(args: ReportArgs) -> Result<ExitCode> {
    if args.timings {
        crate::timings::enable();
    }
    let spec = Spec::load(&args.spec)?;
    run_spec(args, spec)
}

/// Runs `spec` (read from `args.spec`, perhaps changed since) as `strata report` does.
pub(super) fn run_spec(args: ReportArgs, mut spec: Spec) -> Result<ExitCode> {
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
        Some(crate::run::shard::ShardArg::Fixed(s)) => Some(s),
        Some(crate::run::shard::ShardArg::Auto) => Some(
            crate::run::shard::Shard::from_env(&|k| std::env::var(k).ok())
                .map_err(|e| anyhow::anyhow!("--shard auto: {e}"))?,
        ),
    };
    let load = crate::timings::span(|| "load".into());
    let model = LoadedModel::load(&spec.model)
        .with_context(|| format!("loading model `{}`", spec.model.id))?;
    drop(load);
    let running = || format!("running {}", args.spec.display());
    // A shard needs the corpus size to find its range, and a progress bar its length;
    // otherwise the corpus is read once, as the run streams it.
    let show = !args.quiet && std::io::stderr().is_terminal();
    let total = match (shard, show) {
        (None, false) => None,
        _ => {
            let _t = crate::timings::span(|| "tokenize (count)".into());
            Some(crate::run::count_units(&spec, &model).with_context(running)?)
        }
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
            let render = crate::timings::span(|| "render".into());
            write_report(&results, &out_dir, args.quiet)?;
            drop(render);
            write_timings("report", &out_dir.join("timings.json"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_partial(
    args: &ReportArgs,
    spec: &Spec,
    shard: crate::run::shard::Shard,
    total: usize,
    acc: crate::run::Accumulated,
) -> Result<ExitCode> {
    let partial = crate::run::partial::Partial::new(shard, total, acc);
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("reports").join(&spec.name).join("partials"));
    let path = dir.join(partial.file_name());
    crate::io::write_atomic(&path, &partial.to_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    write_timings("report", &path.with_extension("timings.json"))?;
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
