//! `window:` against transformers: a document of 306 tokens on the tiny GPT-2 (128
//! positions), cut as transformers' strided perplexity guide cuts it, with the kept rows'
//! statistics and one window's rows from torch (`fixtures/make_window_fixtures.py`); the
//! same bytes whatever the batching and sharding; and the errors.

mod common;

use std::path::{Path, PathBuf};

use common::{fixture, report_fails, strata};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(fixture("reference/windows.json")).unwrap()).unwrap()
}

/// A spec over the reference document with `window` and the analyses given.
fn spec(dir: &Path, window: &str, exclude: bool, extra: &str, analyses: &str) -> PathBuf {
    let doc = reference()["document"].clone();
    let path = dir.join("windows.yaml");
    std::fs::write(
        &path,
        format!(
            "name: windows\nmodel: {{id: {}}}\nexclude_first_token: {exclude}\n{window}\n{extra}texts:\n  - {{id: doc, text: {doc}}}\n  - {{id: short, text: \"A short text.\"}}\nanalyses:\n{analyses}",
            fixture("tiny-gpt2").display()
        ),
    )
    .unwrap();
    path
}

fn report(spec: &Path, out: &Path, args: &[&str]) -> Value {
    let o = strata()
        .args(["report", "--quiet"])
        .arg(spec)
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap()
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-4 + 1e-4 * want.abs(),
        "{what}: {got} against transformers' {want}"
    );
}

#[test]
fn windows_match_transformers_strided_cut() {
    let r = reference();
    let ids: Vec<u64> = r["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    for case in r["cases"].as_array().unwrap() {
        let tmp = tempfile::tempdir().unwrap();
        let sc = &case["scatter"];
        let window = format!(
            "window: {{tokens: {}, stride: {}}}",
            case["tokens"], case["stride"]
        );
        let analyses = format!(
            "  - {{kind: summary}}\n  - {{kind: scatter, layer: {}, text: \"doc#{}\"}}\n",
            sc["layer"], sc["window"]
        );
        let exclude = case["exclude_first_token"].as_bool().unwrap();
        let path = spec(tmp.path(), &window, exclude, "", &analyses);
        let got = report(&path, &tmp.path().join("out"), &[]);

        // The windows: named doc#k, each holding transformers' slice of the ids.
        let windows = case["windows"].as_array().unwrap();
        let texts = got["texts"].as_array().unwrap();
        assert_eq!(texts.len(), windows.len() + 1, "{case}");
        for (k, (t, w)) in texts.iter().zip(windows).enumerate() {
            assert_eq!(t["id"], format!("doc#{k}"));
            let (a, b) = (w["start"].as_u64().unwrap(), w["end"].as_u64().unwrap());
            let want: Vec<u64> = ids[a as usize..b as usize].to_vec();
            let have: Vec<u64> = t["token_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(have, want, "doc#{k}");
        }
        assert_eq!(texts.last().unwrap()["id"], "short#0");
        assert_eq!(got["settings"]["window"]["stride"], case["stride"]);

        // Statistics over the kept rows of the document (the short text adds its own).
        let doc_only = {
            let path = spec(tmp.path(), &window, exclude, "", "  - {kind: summary}\n");
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("  - {id: short, text: \"A short text.\"}\n", "");
            std::fs::write(&path, text).unwrap();
            report(&path, &tmp.path().join("doc"), &[])
        };
        let rows = doc_only["analyses"][0]["rows"].as_array().unwrap();
        for (l, row) in rows.iter().enumerate() {
            assert_eq!(row["count"], case["count"][l], "count of hidden state {l}");
            for stat in ["mean", "std", "min", "max"] {
                close(
                    row[stat].as_f64().unwrap(),
                    case[stat][l].as_f64().unwrap(),
                    &format!("{stat} of hidden state {l}"),
                );
            }
        }

        // One later window's rows: only the tokens no earlier window analysed.
        let scatter = &got["analyses"][1];
        assert_eq!(scatter["token_index"], sc["token_index"]);
        let want = sc["values"].as_array().unwrap();
        let have = scatter["values"].as_array().unwrap();
        assert_eq!(have.len(), want.len());
        for (i, (h, w)) in have.iter().zip(want).enumerate() {
            for (d, (x, y)) in h
                .as_array()
                .unwrap()
                .iter()
                .zip(w.as_array().unwrap())
                .enumerate()
            {
                close(
                    x.as_f64().unwrap(),
                    y.as_f64().unwrap(),
                    &format!("row {i} dim {d}"),
                );
            }
        }
    }
}

#[test]
fn windows_give_the_same_bytes_whatever_the_batching_and_sharding() {
    let tmp = tempfile::tempdir().unwrap();
    let analyses = "  - {kind: summary}\n  - {kind: covariance}\n  - {kind: norms}\n  - {kind: logit_lens, text: \"doc#1\", positions: 8}\n";
    let window = "window: {tokens: 64, stride: 40}";
    let spec = spec(tmp.path(), window, true, "", analyses);
    let one = tmp.path().join("one");
    report(&spec, &one, &[]);
    let bytes = |dir: &Path| {
        (
            std::fs::read(dir.join("results.json")).unwrap(),
            std::fs::read(dir.join("index.html")).unwrap(),
        )
    };
    // One window per forward, and a budget that groups a few: the same numbers (the
    // settings record the batching, so the files differ there only).
    let numbers = |v: Value| (v["texts"].clone(), v["analyses"].clone());
    let whole = numbers(serde_json::from_slice(&bytes(&one).0).unwrap());
    for (i, batching) in ["batch_size: 1\n", "batch_tokens: 150\n"]
        .iter()
        .enumerate()
    {
        let other = report(
            &spec_with(&spec, batching),
            &tmp.path().join(format!("b{i}")),
            &[],
        );
        assert!(numbers(other) == whole, "{batching} changed a number");
    }
    // Three shards: a document's windows split between them.
    let parts = tmp.path().join("parts");
    for i in 0..3 {
        let o = strata()
            .args(["report", "--quiet"])
            .arg(&spec)
            .args(["--shard", &format!("{i}/3"), "--out"])
            .arg(&parts)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let merged = tmp.path().join("merged");
    let o = strata()
        .args(["merge", "--quiet"])
        .arg(&parts)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(bytes(&one) == bytes(&merged), "sharded windows differ");
}

/// `spec` with `extra` lines added before its texts, written beside it.
fn spec_with(spec: &Path, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(spec).unwrap();
    let path = spec.with_file_name("with.yaml");
    std::fs::write(
        &path,
        text.replacen("texts:\n", &format!("{extra}texts:\n"), 1),
    )
    .unwrap();
    path
}

#[test]
fn window_errors_name_the_field_and_a_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let summary = "  - {kind: summary}\n";
    // Without a window, a text over the context is refused, pointing at `window`.
    let err = report_fails(&spec(tmp.path(), "", false, "", summary));
    assert!(
        err.contains("`doc`")
            && err.contains("306 tokens")
            && err.contains("window: {tokens: 128}"),
        "{err}"
    );
    for (window, field, says) in [
        ("window: {tokens: 0}", "window.tokens", "most tokens"),
        (
            "window: {tokens: 64, stride: 65}",
            "window.stride",
            "1 to 64",
        ),
        (
            "window: {tokens: 64, stride: 0}",
            "window.stride",
            "1 to 64",
        ),
        ("window: {tokens: 200}", "window.tokens", "at most 128"),
        ("window: {tokens: 64, overlap: 3}", "overlap", "stride"),
    ] {
        let err = report_fails(&spec(tmp.path(), window, false, "", summary));
        assert!(err.contains(field) && err.contains(says), "{window}: {err}");
    }
    // A scatter must name a window of an inline text.
    let err = report_fails(&spec(
        tmp.path(),
        "window: {tokens: 64}",
        false,
        "",
        "  - {kind: scatter, layer: 1, text: doc}\n",
    ));
    assert!(
        err.contains("analyses[0].text") && err.contains("ID#0"),
        "{err}"
    );
    // `validate` checks the window against the model's context.
    let spec = spec(tmp.path(), "window: {tokens: 200}", false, "", summary);
    let o = strata().arg("validate").arg(&spec).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("window.tokens") && err.contains("128"),
        "{err}"
    );
}
