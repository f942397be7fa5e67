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
    /// Not a schema: the spec's fields and the kinds' parameters as the book's Markdown
    /// reference chapter, from the same doc comments.
    Reference,
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
    let bytes = match args.of {
        SchemaOf::Spec => crate::schema::to_bytes(&crate::schema::spec()),
        SchemaOf::Results => crate::schema::to_bytes(&crate::schema::results()),
        SchemaOf::Reference => crate::schema::reference_markdown().into_bytes(),
    };
    std::io::stdout()
        .write_all(&bytes)
        .context("writing the schema to standard output")?;
    Ok(ExitCode::SUCCESS)
}
