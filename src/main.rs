//! The `strata` command: parse, run, print the error chain (each cause once), exit 2 on
//! error.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = strata::cli::Cli::parse();
    match strata::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", strata::cli::error_message(&err));
            ExitCode::from(2)
        }
    }
}
