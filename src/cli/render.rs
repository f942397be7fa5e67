//! `strata render`: index.html again from a results.json, no model needed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::output::read_results;

/// `strata render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// A results.json written by `strata report`.
    pub results: PathBuf,
    /// Output HTML file. Default: index.html next to the results.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

/// Runs `strata render`.
pub(super) fn run(args: RenderArgs) -> Result<ExitCode> {
    let results = read_results(&args.results)?;
    let html = crate::pages::results::render(&results, &Default::default())?;
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
