//! The command line: raw arguments are checked here once and turned into library calls.

mod compare;
mod extract;
mod figures;
mod lens;
mod merge;
mod new;
mod output;
mod render;
mod report;
mod schema;
mod shell;
mod sweep;
mod table;
mod validate;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

pub use compare::CompareArgs;
pub use extract::{ExtractArgs, ModelArgs};
pub use figures::FiguresArgs;
pub use lens::LensArgs;
pub use merge::MergeArgs;
pub use new::NewArgs;
pub use render::RenderArgs;
pub use report::ReportArgs;
pub use schema::SchemaArgs;
pub use shell::{CompletionsArgs, ManArgs};
pub use sweep::SweepArgs;
pub use table::TableArgs;
pub use validate::ValidateArgs;

/// Reproducible reports on language-model hidden-state activations.
#[derive(Debug, Parser)]
#[command(name = "strata", version = env!("STRATA_LONG_VERSION"), about)]
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
    /// Fit a linear lens in closed form over a spec's corpus (`strata lens fit`).
    Lens(LensArgs),
    /// A results.json or sweep.json as a tidy table, one row per number (CSV, Parquet or
    /// JSON lines), for pandas, polars or R.
    Table(TableArgs),
    /// Print the JSON Schema of the experiment spec (or of results.json), for editors and
    /// for tools in other languages.
    Schema(SchemaArgs),
    /// Write a commented starter spec, experiments/NAME.yaml.
    New(NewArgs),
    /// Print a shell completion script (`source <(strata completions bash)`).
    Completions(CompletionsArgs),
    /// Print the manual page, or write one per command into a folder.
    Man(ManArgs),
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
        Command::Report(args) => report::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Render(args) => render::run(args),
        Command::Figures(args) => figures::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Extract(args) => extract::run(args),
        Command::Lens(args) => lens::run(args),
        Command::Table(args) => table::run(args),
        Command::Schema(args) => schema::run(args),
        Command::New(args) => new::run(args),
        Command::Completions(args) => shell::completions(args, Cli::command()),
        Command::Man(args) => shell::man(args, Cli::command()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

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
