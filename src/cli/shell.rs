//! `strata completions` and `strata man`: shell completions and manual pages, generated
//! from the command line's own definition so they cannot drift from it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

/// `strata completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `strata man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write strata.1 and a page per command (strata-report.1, ...) into this folder;
    /// without it, strata.1 goes to standard output.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

/// Prints the completion script (`source <(strata completions bash)`) for the command
/// line `cmd`.
pub(super) fn completions(args: CompletionsArgs, mut cmd: clap::Command) -> Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "strata", &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("writing the completions to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the manual pages of the command line `cmd`.
pub(super) fn man(args: ManArgs, cmd: clap::Command) -> Result<ExitCode> {
    let page = |c: clap::Command, title: &str| -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c)
            .title(title.to_uppercase())
            .render(&mut buf)
            .context("rendering the manual page")?;
        Ok(buf)
    };
    let Some(dir) = args.out else {
        std::io::stdout()
            .write_all(&page(cmd, "strata")?)
            .context("writing the manual page to standard output")?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut pages = vec![("strata.1".to_string(), page(cmd.clone(), "strata")?)];
    for sub in cmd.get_subcommands() {
        let name = format!("strata-{}", sub.get_name());
        let sub = sub.clone().bin_name(name.clone());
        pages.push((format!("{name}.1"), page(sub, &name)?));
    }
    for (file, bytes) in &pages {
        let path = dir.join(file);
        crate::io::write_atomic(&path, bytes)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("wrote {} manual pages to {}", pages.len(), dir.display());
    Ok(ExitCode::SUCCESS)
}
