//! `strata merge`: the partials of every shard into one results.json and index.html.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::output::write_report;

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
    /// Also write timings.json beside the output (reading the partials, merging, each
    /// analysis' finish, render) and print them.
    #[arg(long)]
    pub timings: bool,
}

/// Runs `strata merge`.
pub(super) fn run(args: MergeArgs) -> Result<ExitCode> {
    if args.timings {
        crate::timings::enable();
    }
    let files = crate::run::partial::collect(&args.partials)?;
    let mut parts = Vec::with_capacity(files.len());
    let read = crate::timings::span(|| "read partials".into());
    for f in files {
        let p = crate::run::partial::Partial::read(&f)?;
        parts.push((f, p));
    }
    drop(read);
    let n = parts.len();
    let merging = crate::timings::span(|| "merge".into());
    let acc = crate::run::partial::merge(parts)?;
    drop(merging);
    let name = acc.info.name.clone();
    let results = acc
        .finish()
        .with_context(|| format!("merging {n} partial(s) of {name}"))?;
    results
        .validate()
        .map_err(|e| anyhow::anyhow!("merging {n} partial(s) of {name}: {e}"))?;
    let out_dir = args.out.unwrap_or_else(|| Path::new("reports").join(&name));
    let render = crate::timings::span(|| "render".into());
    write_report(&results, &out_dir, args.quiet)?;
    drop(render);
    super::output::write_timings("merge", &out_dir.join("timings.json"))?;
    Ok(ExitCode::SUCCESS)
}
