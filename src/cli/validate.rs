//! `strata validate`: specs checked without running them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::spec::Spec;

/// `strata validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The spec files.
    #[arg(required = true)]
    pub specs: Vec<PathBuf>,
}

/// What a spec with second models holds in memory at once: every model's weights, at
/// their files' size (as far as their files are at hand offline).
fn memory_note(spec: &Spec, offline: &crate::hub::HfEnv) -> String {
    let models: Vec<String> = std::iter::once(&spec.model)
        .chain(&spec.companions)
        .map(|m| {
            let size = m
                .resolve_with(offline)
                .ok()
                .and_then(|f| crate::model::loaded_weight_bytes(&f).ok())
                .map_or("size unknown offline".into(), crate::memory::show_bytes);
            format!(
                "`{}`{} ({size})",
                m.id,
                if m.quantized { " quantized" } else { "" }
            )
        })
        .collect();
    format!(
        "memory: {} models stay loaded together for the whole run: {}; each takes about its weight files' size, plus the analyses' sums",
        models.len(),
        models.join(" and ")
    )
}

/// Runs `strata validate`.
pub(super) fn run(args: ValidateArgs) -> Result<ExitCode> {
    for path in &args.specs {
        let spec = Spec::load(path)?;
        // Layers can be checked against the model without a download when its config
        // is in a local folder or the cache.
        let offline = crate::hub::HfEnv {
            offline: true,
            ..crate::hub::HfEnv::from_env()
        };
        // Second models' shapes are checked too when all of them are at hand.
        let companions: Option<Vec<_>> = spec
            .companions
            .iter()
            .map(|m| {
                let files = m.resolve_with(&offline).ok()?;
                crate::model::read_info(&files.config).ok()
            })
            .collect();
        let note = match spec.model.resolve_with(&offline) {
            Ok(files) => {
                let info = crate::model::read_info(&files.config)?;
                crate::run::setup::check_layers(
                    &spec,
                    &info,
                    companions.as_deref().unwrap_or_default(),
                )?;
                format!(
                    "layers checked against {} ({} hidden states)",
                    spec.model.id,
                    info.labels.len()
                )
            }
            Err(_) => format!(
                "model `{}` not available offline: layers not checked",
                spec.model.id
            ),
        };
        println!(
            "{}: ok ({} analyses; {note})",
            path.display(),
            spec.analyses.len()
        );
        if !spec.companions.is_empty() {
            println!("  {}", memory_note(&spec, &offline));
        }
    }
    Ok(ExitCode::SUCCESS)
}
