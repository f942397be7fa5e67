//! `strata schema`: the JSON Schema of the spec (or of results.json).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

/// Which file's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaOf {
    /// An experiment spec (`experiments/NAME.yaml`).
    Spec,
    /// A results.json.
    Results,
}

/// `strata schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The file whose schema to print.
    #[arg(value_enum, default_value_t = SchemaOf::Spec)]
    pub of: SchemaOf,
}

/// Prints the schema to standard output.
pub(super) fn run(args: SchemaArgs) -> Result<ExitCode> {
    let schema = match args.of {
        SchemaOf::Spec => crate::schema::spec(),
        SchemaOf::Results => crate::schema::results(),
    };
    std::io::stdout()
        .write_all(&crate::schema::to_bytes(&schema))
        .context("writing the schema to standard output")?;
    Ok(ExitCode::SUCCESS)
}
