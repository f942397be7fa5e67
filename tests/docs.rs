//! The book under docs/ and the README: every chapter is in SUMMARY.md and every file it
//! names exists; every link inside the book (and from the README into it) reaches a file
//! that exists and, with `#anchor`, one of its headings; the generated reference chapter
//! is what `strata schema reference` prints; the README stays a five-minute read.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::strata;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The id mdBook (and GitHub) gives a heading: lower case, spaces as `-`, other
/// punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The headings' ids of a Markdown file (outside fenced code).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The link targets of a Markdown file (outside fenced code): `](target)`.
fn links(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = vec![];
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

/// Every link of `file` (in folder `dir`) that is not a web address resolves.
fn check_links(file: &Path, dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut broken = vec![];
    for link in links(&text) {
        if link.starts_with("http://")
            || link.starts_with("https://")
            || link.starts_with("mailto:")
        {
            continue;
        }
        let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
        let target = if path.is_empty() {
            file.to_path_buf()
        } else {
            dir.join(path)
        };
        if !target.exists() {
            broken.push(format!("{}: {link} (no such file)", file.display()));
            continue;
        }
        if !anchor.is_empty() && target.extension().is_some_and(|e| e == "md") {
            let heads = anchors(&std::fs::read_to_string(&target).unwrap());
            if !heads.contains(anchor) {
                broken.push(format!("{}: {link} (no such heading)", file.display()));
            }
        }
    }
    broken
}

#[test]
fn every_chapter_is_listed_and_every_link_resolves() {
    let src = repo("docs/src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    let mut broken = vec![];
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "SUMMARY.md" || !name.ends_with(".md") {
            continue;
        }
        assert!(listed.contains(&name), "{name} is not in SUMMARY.md");
        broken.extend(check_links(&path, &src));
    }
    for l in &listed {
        assert!(
            src.join(l).exists(),
            "SUMMARY.md names {l}, which does not exist"
        );
    }
    broken.extend(check_links(&repo("README.md"), &repo("")));
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_reference_chapter_is_current() {
    let o = strata().args(["schema", "reference"]).output().unwrap();
    assert!(o.status.success());
    let committed = std::fs::read(repo("docs/src/reference.md")).unwrap_or_default();
    assert!(
        o.stdout == committed,
        "docs/src/reference.md is stale: run `make docs` (strata schema reference > docs/src/reference.md)"
    );
}

#[test]
fn the_readme_is_a_five_minute_read() {
    let text = std::fs::read_to_string(repo("README.md")).unwrap();
    let n = text.lines().count();
    assert!(
        n <= 400,
        "README.md has {n} lines; move detail into the book (docs/)"
    );
    for part in [
        "pip install strata-lens",
        "make report EXP=correlation",
        "docs/",
    ] {
        assert!(text.contains(part), "the README lacks {part:?}");
    }
}
