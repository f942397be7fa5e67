//! `strata new`: a commented starter spec in `experiments/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

/// The starter spec; `{{NAME}}` and `{{MODEL}}` are filled in.
const STARTER: &str = include_str!("../../templates/starter.yaml");

/// `strata new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The experiment's name: the spec is experiments/NAME.yaml and its report goes to
    /// reports/NAME/. Letters, digits, `-`, `_` and `.` (not first).
    pub name: String,
    /// The model: a Hub repo id or a local folder.
    #[arg(long, default_value = "gpt2")]
    pub model: String,
    /// The folder the spec goes in.
    #[arg(long, default_value = "experiments")]
    pub dir: PathBuf,
}

/// Writes DIR/NAME.yaml (never over an existing file) and, when the folder beside DIR
/// lacks it, the spec's schema the spec's first line points editors at.
pub(super) fn run(args: NewArgs) -> Result<ExitCode> {
    let name = &args.name;
    if !crate::spec::is_valid_name(name) {
        bail!("experiment name {name:?}: use letters, digits, '-', '_' and '.' (it names the spec file and the report folder)");
    }
    let path = args.dir.join(format!("{name}.yaml"));
    if path.exists() {
        bail!(
            "{} exists: pick another name, or edit that spec",
            path.display()
        );
    }
    // A YAML double-quoted string is a JSON string.
    let model = serde_json::to_string(&args.model).context("quoting the model id")?;
    let text = STARTER
        .replace("{{NAME}}", name)
        .replace("{{MODEL}}", &model);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    write_new(&path, text.as_bytes())?;
    let schema = schema_beside(&args.dir);
    if !schema.exists() {
        if let Some(parent) = schema.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let bytes = crate::schema::to_bytes(&crate::schema::spec());
        crate::io::write_atomic(&schema, &bytes)
            .with_context(|| format!("writing {}", schema.display()))?;
        eprintln!("wrote {}", schema.display());
    }
    eprintln!(
        "wrote {}: run it with `strata report {}`",
        path.display(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `../schema/spec.schema.json` from the spec's folder, as its first line says.
fn schema_beside(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(parent) if dir.file_name().is_some() => parent.join("schema/spec.schema.json"),
        _ => dir.join("../schema/spec.schema.json"),
    }
}

/// Writes a file that must not exist yet: created exclusively, so a file made meanwhile
/// is never overwritten.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}
