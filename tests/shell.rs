//! `strata completions` and `strata man`: made from the command line's definition, so
//! every command is in them; bash reads the completion script; an unknown shell is
//! refused. `--version` names the commit.

mod common;

use common::strata;

const COMMANDS: [&str; 14] = [
    "report",
    "merge",
    "sweep",
    "compare",
    "render",
    "figures",
    "validate",
    "extract",
    "table",
    "schema",
    "new",
    "completions",
    "man",
    "help",
];

#[test]
fn completions_know_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let o = strata().args(["completions", shell]).output().unwrap();
        assert!(o.status.success(), "{shell}");
        let script = String::from_utf8(o.stdout).unwrap();
        for c in &COMMANDS[..13] {
            assert!(script.contains(c), "{shell} completions lack `{c}`");
        }
    }
    // bash parses the script and defines the completion function.
    let o = strata().args(["completions", "bash"]).output().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("strata.bash");
    std::fs::write(&path, o.stdout).unwrap();
    if let Ok(b) = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p strata", path.display()))
        .output()
    {
        assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
        assert!(String::from_utf8_lossy(&b.stdout).contains("_strata"));
    }
    let o = strata().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("possible values"));
}

#[test]
fn manual_pages_cover_every_command() {
    let o = strata().arg("man").output().unwrap();
    assert!(o.status.success());
    let page = String::from_utf8(o.stdout).unwrap();
    assert!(
        page.starts_with(".ie ") || page.contains(".TH STRATA"),
        "{}",
        &page[..200]
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man");
    let o = strata().args(["man", "--out"]).arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for c in &COMMANDS[..13] {
        let p = dir.join(format!("strata-{c}.1"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|_| panic!("{}", p.display()));
        assert!(text.contains(".TH"), "{}", p.display());
    }
    let report = std::fs::read_to_string(dir.join("strata-report.1")).unwrap();
    assert!(
        report.contains("shard"),
        "the report page documents its flags"
    );
}

/// `--version` gives the version from Cargo.toml and the commit strata was built from, the
/// one results.json records.
#[test]
fn version_names_the_commit() {
    let o = strata().arg("--version").output().unwrap();
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    let want = format!(
        "strata {} (commit {})\n",
        env!("CARGO_PKG_VERSION"),
        strata::VERSION_COMMIT
    );
    assert_eq!(out, want);
}
