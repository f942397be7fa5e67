//! `strata table`: a results.json or sweep.json as a tidy table, one row per number.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::table::{encode, results_rows, sweep_rows, Format};

/// `strata table`.
#[derive(Debug, Args)]
pub struct TableArgs {
    /// A results.json (from `strata report` or `merge`) or a sweep.json (from `strata
    /// sweep`).
    pub input: PathBuf,
    /// The table's format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// The file to write (replaced atomically). Default: standard output, except for
    /// parquet, which needs a file.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

/// Runs `strata table`: the file is read and checked as `render` and `compare` check it,
/// then the whole table is made before anything is written.
pub(super) fn run(args: TableArgs) -> Result<ExitCode> {
    if args.format == Format::Parquet && args.out.is_none() {
        bail!("--format parquet writes a binary file: give it one with --out FILE.parquet");
    }
    let path = &args.input;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let damaged = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", path.display());
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| damaged(&format!("not JSON: {e}")))?;
    // A sweep.json has `series` and `revisions` at the top; a results.json has neither.
    let rows = if v.get("series").is_some() && v.get("revisions").is_some() {
        sweep_rows(&crate::sweep::Sweep::from_value(v).map_err(|e| damaged(&e))?)
    } else {
        results_rows(&crate::results::Results::from_value(v).map_err(|e| damaged(&e))?)
    };
    let table = encode(&rows, args.format)?;
    match &args.out {
        Some(out) => {
            crate::io::write_atomic(out, &table)
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {} rows to {}", rows.len(), out.display());
        }
        None => std::io::stdout()
            .write_all(&table)
            .context("writing the table to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}
