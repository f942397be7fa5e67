//! `strata sweep`: every revision is resolved to its commit before anything is written,
//! then run one model at a time into its own report folder (kept when an earlier run
//! already wrote the same), and last `sweep.json` and the sweep page are written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use clap::Args;

use super::output::{progress, write_report};
use crate::hub::HfEnv;
use crate::model::{LoadedModel, ModelRef};
use crate::results::Results;
use crate::spec::Spec;
use crate::sweep::{self, Expected, SweepRevision};

/// `strata sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The spec (`experiments/NAME.yaml`); its model must be a Hub repo, or give --model.
    pub spec: PathBuf,
    /// Revisions of the model, comma-separated, in the order to chart them
    /// (`step1000,step2000,main`): branches, tags or commits.
    #[arg(long, required = true)]
    pub revisions: String,
    /// Sweep this Hub model instead of the spec's.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Output folder. Default: `reports/NAME/sweep/`.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// No progress bar and no summary line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// A revision to run: its name, its commit, its folder.
struct Planned {
    model: ModelRef,
    commit: String,
    dir: PathBuf,
    folder: String,
}

/// Runs `strata sweep`.
pub(super) fn run(args: SweepArgs) -> Result<ExitCode> {
    let mut spec = Spec::load(&args.spec)?;
    if let Some(model) = &args.model {
        spec.model.id = model.clone();
    }
    let revisions =
        sweep::parse_revisions(&args.revisions).map_err(|e| anyhow::anyhow!("--revisions: {e}"))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("reports").join(&spec.name).join("sweep"));
    let plan = plan(&spec, &revisions, &out)?;
    let show = !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = progress(show, plan.len(), "revisions");
    let mut runs = Vec::with_capacity(plan.len());
    let mut kept = 0;
    for p in &plan {
        bar.set_message(p.model.revision.clone());
        let expected = Expected {
            spec_sha256: &spec.sha256,
            model: &spec.model.id,
            revision: &p.model.revision,
            commit: &p.commit,
        };
        let (results, json) = match sweep::finished(&p.dir, &expected) {
            Some((results, json)) => {
                kept += 1;
                if !p.dir.join("index.html").is_file() {
                    write_report(&results, &p.dir, true)?;
                }
                (results, json)
            }
            None => run_revision(&spec, p, &bar)?,
        };
        let sha = crate::digest::sha256_hex(&json);
        let revision = SweepRevision {
            revision: p.model.revision.clone(),
            commit: p.commit.clone(),
            folder: p.folder.clone(),
            results_sha256: sha,
        };
        runs.push((revision, results));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let tol = spec.compare.unwrap_or_default();
    let built = sweep::build(&runs, tol)?;
    write_sweep(&built, &out)?;
    if !args.quiet {
        let moved = built.steps.iter().filter(|s| !s.pass).count();
        eprintln!(
            "{}: {} revision(s) ({kept} kept from an earlier run), {moved} of {} step(s) moved beyond tolerance -> {}",
            spec.name,
            runs.len(),
            built.steps.len(),
            out.join("index.html").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves every revision to its commit: a revision the Hub (or, offline, the cache)
/// lacks fails here, before anything is written.
fn plan(spec: &Spec, revisions: &[String], out: &Path) -> Result<Vec<Planned>> {
    let env = HfEnv::from_env();
    revisions
        .iter()
        .map(|r| {
            let model = ModelRef {
                revision: r.clone(),
                ..spec.model.clone()
            };
            let Some(commit) = model
                .commit_with(&env)
                .with_context(|| format!("revision `{r}` of `{}`", model.id))?
            else {
                bail!(
                    "model `{}` is a local folder or file, not a Hub repo: a sweep runs over the revisions of a Hub model, so give the spec a Hub repo id or pass --model ID",
                    model.id
                );
            };
            let folder = sweep::folder(r);
            Ok(Planned {
                model,
                commit,
                dir: out.join(&folder),
                folder,
            })
        })
        .collect()
}

/// Runs the spec on one revision and writes its report, as `strata report --model ID
/// --revision REV` would; returns the results and the bytes of results.json.
fn run_revision(spec: &Spec, p: &Planned, bar: &ProgressBar) -> Result<(Results, Vec<u8>)> {
    let model = LoadedModel::load(&p.model).with_context(|| {
        format!(
            "loading `{}` at revision `{}`",
            p.model.id, p.model.revision
        )
    })?;
    let loaded = model.provenance.commit.as_deref().unwrap_or_default();
    if loaded != p.commit {
        bail!(
            "revision `{}` of `{}` moved from commit {} to {loaded} during the sweep: run the sweep again (finished revisions are kept)",
            p.model.revision,
            p.model.id,
            p.commit
        );
    }
    let spec = Spec {
        model: p.model.clone(),
        ..spec.clone()
    };
    let mut seen = 0;
    let results = crate::run::run(&spec, &model, &mut |_| {
        seen += 1;
        bar.set_message(format!("{}: text {seen}", p.model.revision));
    })
    .with_context(|| {
        format!(
            "running {} at revision `{}`",
            spec.path.display(),
            p.model.revision
        )
    })?;
    let json = write_report(&results, &p.dir, true)?;
    Ok((results, json))
}

/// Renders the page, then writes sweep.json and index.html.
fn write_sweep(built: &sweep::Sweep, out: &Path) -> Result<()> {
    let html = crate::pages::sweep::render(built, &Default::default())?;
    for (name, bytes) in [
        ("sweep.json", built.to_json()),
        ("index.html", html.into_bytes()),
    ] {
        let path = out.join(name);
        crate::io::write_atomic(&path, &bytes)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
