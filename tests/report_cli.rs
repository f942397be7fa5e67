//! `strata report` and `strata validate` from the command line.

mod common;

use strata::analyses::{covariance::CovarianceResult, histogram::HistogramResult};

use std::path::Path;

use common::*;
use strata::results::{AnalysisResult, Results};

fn write_spec(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("exp.yaml");
    let model = fixture("tiny-gpt2");
    std::fs::write(&p, format!("model: {{id: {}}}\n{body}", model.display())).unwrap();
    p
}

const TEXTS: [&str; 3] = [
    "The goal of a correlation analysis",
    "is to compute a coefficient.",
    "Hello world again",
];

fn report(spec: &Path, out: &Path) -> Results {
    report_with(&mut strata(), spec, out)
}

#[test]
fn corpus_files_stream_the_same_numbers_as_inline_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let analyses = "analyses:\n  - {kind: covariance}\n  - {kind: summary}\n  - {kind: histogram, range: [-3, 3], bins: 12}\n";
    std::fs::write(tmp.path().join("c.txt"), TEXTS.join("\n") + "\n").unwrap();
    let jsonl: String = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "{}\n\n",
                serde_json::json!({"id": format!("doc{i}"), "text": t})
            )
        })
        .collect();
    std::fs::write(tmp.path().join("c.jsonl"), jsonl).unwrap();
    let inline: String = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("  - {{id: line{}, text: \"{t}\"}}\n", i + 1))
        .collect();

    let a = report(
        &write_spec(
            tmp.path(),
            &format!("texts:\n{inline}batch_size: 2\n{analyses}"),
        ),
        &tmp.path().join("a"),
    );
    let b = report(
        &write_spec(tmp.path(), &format!("corpus: c.txt\n{analyses}")),
        &tmp.path().join("b"),
    );
    let c = report(
        &write_spec(
            tmp.path(),
            &format!("corpus: c.jsonl\nbatch_size: 1\n{analyses}"),
        ),
        &tmp.path().join("c"),
    );
    assert_eq!(a.texts, b.texts, "same ids (line numbers) and tokens");
    assert_eq!(
        c.texts.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["doc0", "doc1", "doc2"]
    );
    assert!(b.provenance.corpus_sha256.is_some() && a.provenance.corpus_sha256.is_none());
    for other in [&b, &c] {
        for (x, y) in a.analyses.iter().zip(&other.analyses) {
            match (&x.result, &y.result) {
                (
                    AnalysisResult::Covariance(CovarianceResult { covariance: p, .. }),
                    AnalysisResult::Covariance(CovarianceResult { covariance: q, .. }),
                ) => {
                    for (r, s) in p.iter().flatten().zip(q.iter().flatten()) {
                        assert!((r - s).abs() <= 1e-9 * r.abs().max(1e-6), "{r} vs {s}");
                    }
                }
                (
                    AnalysisResult::Histogram(HistogramResult { counts: p, .. }),
                    AnalysisResult::Histogram(HistogramResult { counts: q, .. }),
                ) => assert_eq!(p, q),
                _ => {}
            }
        }
    }
}

#[test]
fn default_output_is_reports_name_and_model_can_be_overridden() {
    let tmp = tempfile::tempdir().unwrap();
    // The spec names gpt2 (not cached here); --model points at the fixture instead.
    std::fs::write(tmp.path().join("exp.yaml"), "name: demo\nmodel: {id: gpt2}\ntexts:\n  - {id: a, text: \"Hello there\"}\nanalyses:\n  - {kind: summary}\n").unwrap();
    let o = strata()
        .current_dir(tmp.path())
        .args(["report", "exp.yaml", "--quiet", "--model"])
        .arg(fixture("tiny-gpt2"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r =
        Results::from_json(&std::fs::read(tmp.path().join("reports/demo/results.json")).unwrap())
            .unwrap();
    assert_eq!(r.provenance.model.source, "local");
    assert_eq!(r.name, "demo");
}

#[test]
fn errors_exit_2_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let e = report_fails(
        &write_spec(tmp.path(), "texts:\n  - {id: big, text: \"").with_extension("yaml"),
    );
    assert!(e.contains("exp.yaml"), "{e}");
    let long = "word ".repeat(140);
    let e = report_fails(&write_spec(tmp.path(), &format!("texts:\n  - {{id: ok, text: \"fine\"}}\n  - {{id: big, text: \"{long}\"}}\nanalyses:\n  - {{kind: summary}}\n")));
    assert!(
        e.contains("running") && e.contains("`big`") && e.contains("141 tokens"),
        "{e}"
    );
    let e = report_fails(&write_spec(
        tmp.path(),
        "corpus: missing.jsonl\nanalyses:\n  - {kind: summary}\n",
    ));
    assert!(e.contains("corpus") && e.contains("missing.jsonl"), "{e}");
    // A spec file that is not there: the OS error is printed once, not once per level.
    let e = report_fails(&tmp.path().join("absent.yaml"));
    assert!(e.contains("absent.yaml"), "{e}");
    assert_eq!(e.matches("os error 2").count(), 1, "each cause once: {e}");
    std::fs::write(
        tmp.path().join("bad.jsonl"),
        "{\"text\": \"fine\"}\n{\"txt\": \"oops\"}\n",
    )
    .unwrap();
    let e = report_fails(&write_spec(
        tmp.path(),
        "corpus: bad.jsonl\nanalyses:\n  - {kind: summary}\n",
    ));
    assert!(e.contains("line 2") && e.contains("\"text\""), "{e}");
    let bomb = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/specs/err_alias_bomb.yaml"),
    )
    .unwrap();
    let p = tmp.path().join("bomb.yaml");
    std::fs::write(
        &p,
        bomb.replace(
            "../fixtures/tiny-gpt2",
            fixture("tiny-gpt2").to_str().unwrap(),
        ),
    )
    .unwrap();
    report_fails(&p);
    let e = report_fails(&write_spec(
        tmp.path(),
        "layers: [9]\ntexts:\n  - {id: a, text: \"hi there\"}\nanalyses:\n  - {kind: covariance}\n",
    ));
    assert!(e.contains("layers[0]") && e.contains("0..=3"), "{e}");
}

#[test]
fn validate_checks_layers_when_the_model_is_at_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), "layers: [\"h.2\", pre_final_norm]\ntexts:\n  - {id: a, text: \"hi\"}\nanalyses:\n  - {kind: covariance}\n");
    let o = strata().arg("validate").arg(&spec).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("layers checked"));
    let bad = write_spec(
        tmp.path(),
        "layers: [\"h.3\"]\ntexts:\n  - {id: a, text: \"hi\"}\nanalyses:\n  - {kind: covariance}\n",
    );
    let o = strata().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"h.3\""));
}

/// A corpus of thousands does not make a page of thousands of rows: the report counts the
/// texts, charts their token counts, and lists the first 40.
#[test]
fn the_report_summarises_a_large_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let words = [
        "the",
        "goal",
        "of",
        "a",
        "correlation",
        "analysis",
        "is",
        "to",
    ];
    let lines: Vec<String> = (0..100)
        .map(|i| {
            (0..2 + i % 9)
                .map(|k| words[(i + k) % 8])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    std::fs::write(tmp.path().join("c.txt"), lines.join("\n") + "\n").unwrap();
    let spec = write_spec(
        tmp.path(),
        "corpus: c.txt\nanalyses:\n  - {kind: summary}\n",
    );
    let results = report(&spec, &tmp.path().join("out"));
    let n_tokens: usize = results.texts.iter().map(|t| t.n_tokens).sum();
    assert_eq!(results.corpus.tokens, n_tokens as u64, "all 100 are listed");
    let html = std::fs::read_to_string(tmp.path().join("out/index.html")).unwrap();
    let texts = &html[html.find("<section id=\"texts\">").unwrap()..];
    let texts = &texts[..texts.find("</section>").unwrap()];
    assert!(
        texts.contains(&format!(
            "100 texts, {n_tokens} tokens: the first 40 listed, 60 more not"
        )),
        "{texts}"
    );
    assert_eq!(texts.matches("<tr><td").count(), 40);
    // Ids are line numbers, from 1.
    assert!(texts.contains("line40<") && !texts.contains("line41<"));
    assert!(texts.contains("Token counts of the texts"));
}

/// `n` short texts (1 to 12 words) as a .txt corpus in `dir`; `edit` replaces text `i`.
fn short_corpus(dir: &Path, n: usize, edit: Option<usize>) -> std::path::PathBuf {
    let words = [
        "time", "river", "north", "of", "a", "light", "is", "the", "small",
    ];
    let lines: Vec<String> = (0..n)
        .map(|i| {
            if Some(i) == edit {
                return "an edited line".into();
            }
            (0..1 + i % 12)
                .map(|k| words[(i * 7 + k) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let path = dir.join(format!("c{n}-{edit:?}.txt"));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn outputs_do_not_grow_with_the_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let sizes = |n: usize| {
        let dir = tmp.path().join(n.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let corpus = short_corpus(&dir, n, None);
        let spec = write_spec(
            &dir,
            &format!(
                "corpus: {}\nanalyses:\n  - {{kind: covariance}}\n  - {{kind: histogram, range: [-3, 3], bins: 60}}\n  - {{kind: summary}}\n  - {{kind: norms}}\n",
                corpus.display()
            ),
        );
        let r = report(&spec, &dir.join("out"));
        assert_eq!(r.corpus.texts, n);
        assert_eq!(
            r.texts.len(),
            100,
            "the first keep_texts (default 100) are listed"
        );
        assert_eq!(r.texts[99].id, "line100");
        assert_eq!(
            r.corpus.lengths.iter().map(|[_, c]| c).sum::<u64>(),
            n as u64
        );
        let len = |f: &str| std::fs::metadata(dir.join("out").join(f)).unwrap().len() as f64;
        (len("results.json"), len("index.html"))
    };
    let (json_300, html_300) = sizes(300);
    let (json_3000, html_3000) = sizes(3000);
    let (json, html) = (json_3000 / json_300, html_3000 / html_300);
    eprintln!("3000 texts against 300: results.json {json:.3}x, index.html {html:.3}x");
    assert!(json <= 1.5, "results.json grew {json:.2}x");
    assert!(html <= 1.5, "index.html grew {html:.2}x");
}

#[test]
fn keep_texts_bounds_the_listed_texts_and_compare_checks_the_rest_by_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, edit: Option<usize>, keep: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let corpus = short_corpus(&dir, 150, edit);
        let spec = write_spec(
            &dir,
            &format!(
                "corpus: {}\n{keep}analyses:\n  - {{kind: summary}}\n",
                corpus.display()
            ),
        );
        report(&spec, &dir.join("out"));
        dir.join("out/results.json")
    };
    let base = run("base", None, "keep_texts: 20\n");
    let r = Results::from_json(&std::fs::read(&base).unwrap()).unwrap();
    assert_eq!((r.texts.len(), r.corpus.texts), (20, 150));
    assert_eq!(r.settings.keep_texts, 20);
    // A text past the listed ones changed: only the corpus digest tells, and compare fails.
    let edited = run("edited", Some(120), "keep_texts: 20\n");
    let o = strata()
        .arg("compare")
        .arg(&base)
        .arg(&edited)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("corpus digests differ"), "{out}");
    // The same corpus again: identical, digest included.
    let again = run("again", None, "keep_texts: 20\n");
    let o = strata()
        .arg("compare")
        .arg(&base)
        .arg(&again)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // keep_texts: 0 lists none; every text is still counted.
    let none = run("none", None, "keep_texts: 0\n");
    let r = Results::from_json(&std::fs::read(&none).unwrap()).unwrap();
    assert_eq!((r.texts.len(), r.corpus.texts), (0, 150));
    let html = std::fs::read_to_string(none.with_file_name("index.html")).unwrap();
    assert!(html.contains("150 texts"), "the report counts them all");
}

#[test]
fn timings_go_beside_the_results_and_leave_their_bytes_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let texts: String = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("  - {{id: t{i}, text: \"{t}\"}}\n"))
        .collect();
    let spec = write_spec(
        tmp.path(),
        &format!("name: timed\nbatch_size: 2\ntexts:\n{texts}analyses:\n  - {{kind: covariance}}\n  - {{kind: surprisal}}\n"),
    );
    let (plain, timed) = (tmp.path().join("plain"), tmp.path().join("timed"));
    report(&spec, &plain);
    let o = strata()
        .args(["report", "--quiet", "--timings"])
        .arg(&spec)
        .arg("--out")
        .arg(&timed)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in ["results.json", "index.html"] {
        assert_eq!(
            std::fs::read(plain.join(file)).unwrap(),
            std::fs::read(timed.join(file)).unwrap(),
            "{file}"
        );
    }
    assert!(!plain.join("timings.json").exists());
    let t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(timed.join("timings.json")).unwrap()).unwrap();
    assert_eq!(t["command"], "report");
    let stages = t["stages"].as_array().unwrap();
    let stage = |name: &str| {
        stages
            .iter()
            .find(|s| s["stage"] == name)
            .unwrap_or_else(|| panic!("no stage {name} in {t}"))
    };
    // Three texts in batches of two: two forwards, one update per text and analysis.
    assert_eq!(stage("forward")["calls"], 2);
    assert_eq!(stage("tokenize")["calls"], 3);
    assert_eq!(stage("analyses[1] surprisal update")["calls"], 3);
    assert_eq!(stage("analyses[0] covariance finish")["calls"], 1);
    assert_eq!(stage("capture")["calls"], 3);
    assert_eq!(stage("load")["calls"], 1);
    assert_eq!(stage("render")["calls"], 1);
    let sum: f64 = stages.iter().map(|s| s["wall_s"].as_f64().unwrap()).sum();
    assert!(sum <= t["total_wall_s"].as_f64().unwrap() + 1e-3, "{t}");
    // The process's own peak: at least its binary and the model it ran.
    #[cfg(target_os = "linux")]
    assert!(
        t["peak_rss_bytes"].as_u64().is_some_and(|b| b > 1 << 20),
        "{t}"
    );
    // The table, most costly first, ends with the total.
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[0].starts_with("stage"), "{err}");
    let walls: Vec<f64> = lines[1..]
        .iter()
        .take_while(|l| !l.starts_with("total"))
        .map(|l| l.split_whitespace().rev().nth(3).unwrap().parse().unwrap())
        .collect();
    assert_eq!(walls.len(), stages.len(), "{err}");
    assert!(walls.windows(2).all(|w| w[0] >= w[1]), "{err}");
}
