//! `strata figures`: a results.json's charts as SVG and PDF, its tables as LaTeX.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::output::read_results;

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

/// Runs `strata figures`.
pub(super) fn run(args: FiguresArgs) -> Result<ExitCode> {
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
