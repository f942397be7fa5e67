//! `strata lens fit`: a linear lens fitted in closed form over a spec's corpus, written as
//! the tuned-lens package saves a lens.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use super::report::{run_spec, ReportArgs};
use crate::analyses::linear_lens::LinearLens;
use crate::analyses::{AnalysisSpec, KindSpec};
use crate::spec::Spec;

/// `strata lens`.
#[derive(Debug, Args)]
pub struct LensArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: LensCommand,
}

/// The lens subcommands.
#[derive(Debug, Subcommand)]
pub enum LensCommand {
    /// Fit a linear lens over a spec's corpus and model (its analyses are not run) and
    /// write it as the tuned-lens package saves one (DIR/config.json, DIR/params.pt),
    /// with a report of the fit in reports/NAME-lens/.
    Fit(LensFitArgs),
}

/// `strata lens fit`.
#[derive(Debug, Args)]
pub struct LensFitArgs {
    /// The spec whose model, corpus, windows and batching the fit uses.
    pub spec: PathBuf,
    /// The folder to write the lens to.
    #[arg(long)]
    pub out: PathBuf,
    /// The ridge, as a fraction of each hidden state's mean variance (at least 0).
    #[arg(long, default_value_t = 1e-6, allow_negative_numbers = true)]
    pub ridge: f64,
    /// Where the report of the fit goes. Default: `reports/NAME-lens/`.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar and no summary line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Run only shard I of N and write its partial (default
    /// `reports/NAME-lens/partials/`); `strata merge` of every shard writes the lens.
    #[arg(long, value_name = "I/N|auto")]
    pub shard: Option<crate::run::shard::ShardArg>,
}

/// Runs `strata lens`.
pub(super) fn run(args: LensArgs) -> Result<ExitCode> {
    let LensCommand::Fit(args) = args.command;
    if !(args.ridge >= 0.0 && args.ridge.is_finite()) {
        bail!(
            "--ridge {}: give a fraction of the mean variance, at least 0, e.g. 1e-6",
            args.ridge
        );
    }
    let mut spec = Spec::load(&args.spec)?;
    // The lens is written where --out says, from wherever strata runs.
    let out = std::path::absolute(&args.out)?;
    spec.analyses = vec![AnalysisSpec {
        params: KindSpec::LinearLens(LinearLens {
            ridge: args.ridge,
            save: Some(out),
            max_memory: Default::default(),
        }),
        site: None,
    }];
    spec.companions = Vec::new();
    spec.name = format!("{}-lens", spec.name);
    spec.title = format!("{}: a fitted linear lens", spec.title);
    let report = ReportArgs {
        spec: args.spec,
        out: args.report,
        model: None,
        revision: "main".into(),
        gguf_file: None,
        quantized: false,
        quiet: args.quiet,
        shard: args.shard,
        timings: false,
    };
    run_spec(report, spec)
}
