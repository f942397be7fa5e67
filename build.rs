//! Records build provenance for results.json (the git commit strata was built from and
//! candle-core's version, from Cargo.lock), and stages ECharts from the npm package for
//! the HTML report to inline.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    echarts();
    let commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STRATA_GIT_COMMIT={commit}");

    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let candle = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"candle-core\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STRATA_CANDLE_VERSION={candle}");

    println!("cargo:rerun-if-changed=Cargo.lock");
    for p in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}

/// Copies `node_modules/echarts` (installed by `npm ci`, which the Makefile runs) into
/// OUT_DIR: the report inlines the library and shows its licence; nothing is committed
/// and nothing is loaded from a CDN.
fn echarts() {
    let pkg = Path::new("node_modules/echarts");
    let js = pkg.join("dist/echarts.min.js");
    println!("cargo:rerun-if-changed={}", js.display());
    println!("cargo:rerun-if-changed=package-lock.json");
    if !js.is_file() {
        panic!(
            "{} is missing: run `npm ci` in the repository root (every make target does) to \
             install the ECharts package that strata inlines into its HTML reports",
            js.display()
        );
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::copy(&js, out.join("echarts.min.js")).expect("copy echarts.min.js");
    let mut license = std::fs::read_to_string(pkg.join("LICENSE")).unwrap_or_default();
    if let Ok(notice) = std::fs::read_to_string(pkg.join("NOTICE")) {
        license.push_str("\n\n");
        license.push_str(&notice);
    }
    std::fs::write(out.join("echarts-LICENSE.txt"), license).expect("write licence");
    let version = std::fs::read_to_string(pkg.join("package.json"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("\"version\": \"")
                    .map(|v| v.trim_end_matches([',', '"']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STRATA_ECHARTS_VERSION={version}");
}
