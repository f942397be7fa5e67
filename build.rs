//! Records build provenance for results.json (the git commit strata was built from and
//! candle-core's version, from Cargo.lock), and checks the shipped ECharts build the HTML
//! report inlines against its recorded sha256.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    echarts();
    // A build without the repository (an image's) is told its commit instead.
    println!("cargo:rerun-if-env-changed=STRATA_COMMIT");
    let commit = std::env::var("STRATA_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STRATA_GIT_COMMIT={commit}");
    // What `strata --version` prints: the version, from Cargo.toml alone, and the commit.
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=STRATA_LONG_VERSION={version} (commit {commit})");

    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let candle = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"candle-core\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STRATA_CANDLE_VERSION={candle}");

    println!("cargo:rerun-if-changed=Cargo.lock");
    // The branch's own ref file changes at every commit; watching only the `refs/heads`
    // folder missed commits (git rewrites the file in place), so an incremental build kept
    // recording the commit it was first built at.
    let branch = std::fs::read_to_string(".git/HEAD").ok().and_then(|h| {
        h.strip_prefix("ref: ")
            .map(|r| format!(".git/{}", r.trim()))
    });
    for p in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"]
        .into_iter()
        .map(String::from)
        .chain(branch)
    {
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}

/// Checks the ECharts build shipped in `templates/vendor/echarts/` (inlined into every
/// HTML report) against the sha256 recorded beside it, and passes its version on. Nothing
/// is fetched: the build needs cargo alone (`make update-echarts` refreshes the files).
fn echarts() {
    let dir = Path::new("templates/vendor/echarts");
    let js = dir.join("echarts.min.js");
    let sum_file = dir.join("echarts.min.js.sha256");
    for f in [&js, &sum_file, &dir.join("VERSION")] {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let bytes = std::fs::read(&js).unwrap_or_else(|e| {
        panic!("{}: {e}; the repository ships this file (restore it with git, or run `make update-echarts`)", js.display())
    });
    let recorded = std::fs::read_to_string(&sum_file)
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    let actual: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != recorded {
        panic!(
            "{} has sha256 {actual}, but {} records {recorded:?}: the file was changed; restore it with git, or run `make update-echarts` to fetch a pinned release and record its hash",
            js.display(),
            sum_file.display()
        );
    }
    let version = std::fs::read_to_string(dir.join("VERSION")).unwrap_or_default();
    println!("cargo:rustc-env=STRATA_ECHARTS_VERSION={}", version.trim());
}
