//! What several commands share: the progress bar, and reading and writing reports.

use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over `n` things (`texts`, `revisions`), hidden unless `show`.
pub(crate) fn progress(show: bool, n: usize, unit: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n as u64);
    let template =
        format!("{{spinner}} {unit} {{pos}}/{{len}} [{{bar:30}}] {{elapsed}} eta {{eta}} {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Renders the page, then writes results.json and index.html: a failure before the
/// writes leaves no file. Returns the bytes of results.json.
pub(crate) fn write_report(
    results: &crate::results::Results,
    out_dir: &Path,
    quiet: bool,
) -> Result<Vec<u8>> {
    let html = crate::pages::results::render(results, &Default::default())?;
    // What analyses save (`save: DIR`) is written first: a failure there leaves no
    // results.json that claims it.
    for (file, bytes) in results.analyses.iter().flat_map(|a| a.files()) {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::io::write_atomic(file, bytes)
            .with_context(|| format!("writing {}", file.display()))?;
        if !quiet {
            eprintln!("{}: saved {}", results.name, file.display());
        }
    }
    let path = out_dir.join("results.json");
    let json = results.to_json();
    crate::io::write_atomic(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    let page = out_dir.join("index.html");
    crate::io::write_atomic(&page, html.as_bytes())
        .with_context(|| format!("writing {}", page.display()))?;
    if !quiet {
        eprintln!(
            "{}: {} text(s), {} analyses -> {} and {}",
            results.name,
            results.corpus.texts,
            results.analyses.len(),
            path.display(),
            page.display()
        );
    }
    Ok(json)
}

/// Reads and checks a results.json.
pub(crate) fn read_results(path: &Path) -> Result<crate::results::Results> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    crate::results::Results::from_json(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// With `--timings`: writes the record to `path` and prints its table to stderr.
pub(crate) fn write_timings(command: &str, path: &Path) -> Result<()> {
    if !crate::timings::enabled() {
        return Ok(());
    }
    let t = crate::timings::snapshot(command);
    crate::io::write_atomic(path, &t.to_json())
        .with_context(|| format!("writing {}", path.display()))?;
    eprint!("{}", t.table());
    eprintln!("timings -> {}", path.display());
    Ok(())
}
