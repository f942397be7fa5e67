//! `strata compare`: verdicts, tolerances, terminal output and error paths.

mod common;

use strata::analyses::covariance::CovarianceResult;

use std::path::{Path, PathBuf};

use common::*;
use strata::compare::{compare, Tolerances};
use strata::results::{AnalysisResult, Results};

/// The tiny-stats experiment run on `model` (default: the fixture) into `out`.
fn run_report(out: &Path, model: Option<&Path>, spec: &Path) -> PathBuf {
    let mut cmd = strata();
    cmd.args(["report", "--quiet"])
        .arg(spec)
        .arg("--out")
        .arg(out);
    if let Some(m) = model {
        cmd.arg("--model").arg(m);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.join("results.json")
}

fn read(p: &Path) -> Results {
    Results::from_json(&std::fs::read(p).unwrap()).unwrap()
}

fn write(p: &Path, r: &Results) {
    std::fs::write(p, r.to_json()).unwrap();
}

fn compare_cli(base: &Path, new: &Path, extra: &[&str]) -> (i32, String, String) {
    let o = strata()
        .arg("compare")
        .arg(base)
        .arg(new)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn spec() -> PathBuf {
    fixture("specs/tiny-stats.yaml")
}

#[test]
fn a_result_against_itself_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let base = run_report(&tmp.path().join("a"), None, &spec());
    let html = tmp.path().join("diff.html");
    let (code, out, err) = compare_cli(&base, &base, &["--html", html.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("PASS"), "{out}");
    assert!(out.contains("token ids: unchanged") && out.contains("provenance: unchanged"));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("PASS: within tolerance"));
}

/// Covariance entry [0][1] of analysis #1 scaled by `1 + f`.
fn perturbed(base: &Results, f: f64) -> Results {
    let mut r = base.clone();
    if let AnalysisResult::Covariance(CovarianceResult { covariance, .. }) =
        &mut r.analyses[1].result
    {
        covariance[0][1] *= 1.0 + f;
    }
    r
}

#[test]
fn just_inside_and_just_outside_the_tolerance() {
    let tmp = tempfile::tempdir().unwrap();
    let base_path = run_report(&tmp.path().join("a"), None, &spec());
    let base = read(&base_path);
    let tol = Tolerances {
        rtol: 1e-3,
        atol: 0.0,
        hist_tv: 0.01,
    };
    assert!(compare(&base, &perturbed(&base, 0.999e-3), tol)
        .unwrap()
        .pass());
    let c = compare(&base, &perturbed(&base, 1.001e-3), tol).unwrap();
    assert!(!c.pass());
    assert_eq!(c.moved(), ["#1 covariance"]);

    // Through the CLI: exit 0 and 1, with the flags setting the tolerance.
    let inside = tmp.path().join("inside.json");
    let outside = tmp.path().join("outside.json");
    write(&inside, &perturbed(&base, 0.999e-3));
    write(&outside, &perturbed(&base, 1.001e-3));
    let flags = ["--rtol", "1e-3", "--atol", "0"];
    assert_eq!(compare_cli(&base_path, &inside, &flags).0, 0);
    let (code, out, _) = compare_cli(&base_path, &outside, &flags);
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn tolerances_pinned_in_the_spec_apply_and_flags_override_them() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(spec()).unwrap();
    let spec_path = tmp.path().join("pinned.yaml");
    std::fs::write(
        &spec_path,
        text.replace("../tiny-gpt2", fixture("tiny-gpt2").to_str().unwrap())
            + "compare: {rtol: 0.5}\n",
    )
    .unwrap();
    let base_path = run_report(&tmp.path().join("a"), None, &spec_path);
    let base = read(&base_path);
    assert_eq!(base.settings.compare.unwrap().rtol, 0.5);
    let new = tmp.path().join("new.json");
    write(&new, &perturbed(&base, 0.1));
    assert_eq!(
        compare_cli(&base_path, &new, &[]).0,
        0,
        "10% is within the pinned 50%"
    );
    assert_eq!(
        compare_cli(&base_path, &new, &["--rtol", "0.01"]).0,
        1,
        "the flag overrides the pin"
    );
}

/// `spec` run on two tiny models of the same shape, seeded 1 and 2.
fn two_seeds(tmp: &Path, spec: &Path) -> Vec<PathBuf> {
    let shape = common::synth::SynthGpt2 {
        n_layer: 3,
        n_embd: 32,
        n_head: 4,
        n_positions: 128,
        vocab_size: 50257,
    };
    let mut results = Vec::new();
    for seed in [1u64, 2] {
        let dir = tmp.join(format!("model{seed}"));
        shape.write(&dir, seed).unwrap();
        for name in ["vocab.json", "merges.txt"] {
            std::fs::copy(fixture("tiny-gpt2").join(name), dir.join(name)).unwrap();
        }
        results.push(run_report(
            &tmp.join(format!("out{seed}")),
            Some(&dir),
            spec,
        ));
    }
    results
}

/// Compares the two results with `--html`: exit 1, FAIL, every analysis in `moved`
/// named. Returns the terminal output and the diff page.
fn fails_naming(tmp: &Path, results: &[PathBuf], moved: &[&str]) -> (String, String) {
    let html = tmp.join("diff.html");
    let (code, out, err) = compare_cli(
        &results[0],
        &results[1],
        &["--html", html.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("FAIL"), "{out}");
    for m in moved {
        assert!(out.contains(m), "{m} not named in:\n{out}");
    }
    (out, std::fs::read_to_string(&html).unwrap())
}

#[test]
fn geometry_results_compare_and_name_what_moved() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = fixture("specs/tiny-geometry.yaml");
    let results = two_seeds(tmp.path(), &spec);
    let (code, out, err) = compare_cli(&results[0], &results[0], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, page) = fails_naming(
        tmp.path(),
        &results,
        &[
            "#0 norms",
            "#1 anisotropy",
            "#3 dimensionality",
            "#4 cka",
            "#5 logit_lens",
            "#6 agreement",
        ],
    );
    assert!(
        page.contains("Linear CKA difference"),
        "the CKA diff heatmap"
    );
}

#[test]
fn models_with_different_seeds_fail_and_name_what_moved() {
    let tmp = tempfile::tempdir().unwrap();
    let results = two_seeds(tmp.path(), &spec());
    let (out, page) = fails_naming(
        tmp.path(),
        &results,
        &[
            "#0 scatter",
            "#1 covariance",
            "#2 pairplot",
            "#3 histogram",
            "#4 summary",
        ],
    );
    assert!(
        out.contains("model.safetensors sha256"),
        "provenance diff: {out}"
    );
    assert!(page.contains("FAIL: moved") && page.contains("Covariance difference"));
    assert!(page.contains("base (dashed)"));
}

#[test]
fn error_paths_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let base_path = run_report(&tmp.path().join("a"), None, &spec());
    let base = read(&base_path);
    let cases: Vec<(PathBuf, &str)> = {
        let missing = tmp.path().join("missing.json");
        let junk = tmp.path().join("junk.json");
        std::fs::write(&junk, "not json").unwrap();
        let future = tmp.path().join("future.json");
        std::fs::write(&future, "{\"schema_version\": 99}").unwrap();
        let renamed = tmp.path().join("renamed.json");
        let mut r = base.clone();
        r.name = "other".into();
        write(&renamed, &r);
        let fewer = tmp.path().join("fewer.json");
        let mut r = base.clone();
        r.analyses.pop();
        write(&fewer, &r);
        vec![
            (missing, "missing.json"),
            (junk, "not JSON"),
            (future, "schema_version 99 is not supported"),
            (renamed, "results of different specs: name"),
            (fewer, "results of different specs: analyses"),
        ]
    };
    for (path, expect) in cases {
        let (code, out, err) = compare_cli(&base_path, &path, &[]);
        assert_eq!(code, 2, "{path:?}: {out}{err}");
        assert!(err.contains(expect), "{path:?}: {err}");
        assert!(!err.contains("panicked"));
    }
    let (code, _, err) = compare_cli(&base_path, &base_path, &["--rtol=-1"]);
    assert_eq!(code, 2);
    assert!(err.contains("--rtol -1"), "{err}");
}

#[test]
fn total_variation_is_half_the_l1_distance_of_normalized_counts() {
    use strata::compare::total_variation;
    assert_eq!(total_variation(&[1, 1], &[2, 2]), 0.0);
    assert_eq!(total_variation(&[1, 0], &[0, 1]), 1.0);
    assert!((total_variation(&[3, 1], &[1, 1]) - 0.25).abs() < 1e-15);
}

/// `surprisal`, `similarity` and `agreement`'s indices compare like every kind: a result
/// against itself passes, and another model's moves each, named.
#[test]
fn surprisal_and_similarity_compare_and_name_what_moved() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("lit.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: lit\nmodel: {{id: unused}}\ntexts:\n  - {{id: t0, text: \"The goal of a correlation analysis is to compute a correlation coefficient.\"}}\n  - {{id: t1, text: \"Hidden states drift as a model trains, step by step, layer by layer.\"}}\nanalyses:\n  - {{kind: surprisal, icl: [2, 8]}}\n  - {{kind: similarity}}\n  - {{kind: agreement, model: {{id: {}}}, metrics: [cca, procrustes]}}\n",
            fixture("tiny-llama-lens").display()
        ),
    )
    .unwrap();
    let results = two_seeds(tmp.path(), &spec);
    let (code, out, err) = compare_cli(&results[0], &results[0], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (out, _) = fails_naming(
        tmp.path(),
        &results,
        &["#0 surprisal", "#1 similarity", "#2 agreement"],
    );
    for metric in [
        "nll",
        "perplexity",
        "by_position",
        "cca",
        "svcca",
        "pwcca",
        "procrustes",
    ] {
        assert!(out.contains(metric), "{metric} in:\n{out}");
    }
}

/// Two texts' worth of a corpus: `n` texts of the logit lens's, ids `t0`, `t1`, ...
fn paired_spec(dir: &Path, n: usize) -> PathBuf {
    let all: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("reference/lens-texts.json")).unwrap(),
    )
    .unwrap();
    let mut texts: Vec<String> = serde_json::from_value(all["gpt2"].clone()).unwrap();
    texts.extend(
        [
            "The quick brown fox jumps over the lazy dog.",
            "A second short text, with a comma.",
        ]
        .map(String::from),
    );
    let body = text_list(&texts[..n]);
    let spec = dir.join(format!("paired{n}.yaml"));
    std::fs::write(
        &spec,
        format!(
            "name: paired\nmodel: {{id: {}}}\ntexts:\n{body}analyses:\n  - {{kind: surprisal}}\n  - {{kind: divergence, model: {{id: {}}}, resamples: 1000}}\n",
            fixture("tiny-gpt2").display(),
            fixture("tiny-llama-lens").display()
        ),
    )
    .unwrap();
    spec
}

#[test]
fn paired_mode_says_within_noise_beyond_noise_and_names_missing_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = paired_spec(tmp.path(), 6);
    let base = run_report(&tmp.path().join("a"), None, &spec);
    // A result against itself: every paired metric within noise.
    let (code, out, err) = compare_cli(&base, &base, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("text nll") && l.contains(" texts "))
        .unwrap();
    assert!(
        line.starts_with("#0 surprisal") && line.ends_with("within noise"),
        "{out}"
    );
    let texts = |line: &str| -> usize {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "texts").unwrap();
        words[at - 1].parse().unwrap()
    };
    let paired = texts(line);
    assert!(!out.contains("beyond"), "{out}");
    let c = compare(&read(&base), &read(&base), Tolerances::default()).unwrap();
    assert_eq!(c.paired.len(), 2);
    assert!(c
        .paired
        .iter()
        .all(|p| p.verdict == strata::compare::Verdict::WithinNoise));
    // Two seeded models: the text losses move beyond noise and beyond tolerance; the
    // metric is named, in the text and on the page.
    let llama = run_report(
        &tmp.path().join("b"),
        Some(&fixture("tiny-llama-lens")),
        &spec,
    );
    let html = tmp.path().join("diff.html");
    let (code, out, _) = compare_cli(
        &base,
        &llama,
        &["--html", html.to_str().unwrap(), "--resamples", "500"],
    );
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("text nll") && l.contains(" texts "))
        .unwrap();
    assert!(line.ends_with("beyond tolerance"), "{line}");
    assert!(
        out.contains("moved:") && out.contains("#0 surprisal text nll"),
        "{out}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Changes beyond noise") && page.contains("beyond tolerance"));
    // Loose tolerances: beyond noise, within tolerance, and a pass.
    let (code, out, _) = compare_cli(&base, &llama, &["--rtol", "1", "--atol", "10"]);
    let line = out
        .lines()
        .find(|l| l.contains("text nll") && l.contains(" texts "))
        .unwrap();
    assert!(line.ends_with("beyond noise, within tolerance"), "{line}");
    assert_eq!(code, 1, "other metrics still move: {out}");
    // One text fewer: the missing id is named, the common texts still pair.
    let fewer = run_report(&tmp.path().join("c"), None, &paired_spec(tmp.path(), 5));
    let (code, out, _) = compare_cli(&base, &fewer, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("t5 (base only)"), "{out}");
    assert!(
        out.contains("text `t5` has a value in the base result only"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains("text nll") && l.contains(" texts "))
        .unwrap();
    assert!(
        texts(line) == paired - 1 && line.ends_with("within noise"),
        "{line}"
    );
    // A bad resample count is refused.
    let (code, _, err) = compare_cli(&base, &base, &["--resamples", "10"]);
    assert_eq!(code, 2);
    assert!(err.contains("--resamples 10"), "{err}");
}
