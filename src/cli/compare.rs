//! `strata compare`: two results.json, number by number, with a verdict and an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::output::read_results;

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
    /// Resamples of the paired bootstrap over texts, for per-text values (100 to
    /// 1000000; default 10000). Seeded by the base's spec seed.
    #[arg(long, default_value_t = crate::stats::bootstrap::DEFAULT_RESAMPLES)]
    pub resamples: usize,
    /// Also write a self-contained HTML diff report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// Runs `strata compare`.
pub(super) fn run(args: CompareArgs) -> Result<ExitCode> {
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
    if !crate::stats::bootstrap::RESAMPLES.contains(&args.resamples) {
        return Err(anyhow::anyhow!(
            "--resamples {}: draw 100 to 1000000 bootstrap resamples, e.g. 10000",
            args.resamples
        ));
    }
    let comparison = crate::compare::compare_with(&base, &new, tol, args.resamples)?;
    if let Some(path) = &args.html {
        let html = crate::pages::comparison::render(&base, &new, &comparison, &Default::default())?;
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
