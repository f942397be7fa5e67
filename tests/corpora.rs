//! Corpora: Parquet (written by pyarrow, `fixtures/make_corpus_fixtures.py`) against the
//! same texts as JSONL, gzip and zstd files, columns and limits, a Hub dataset's split
//! through the mock Hub (online, then from the cache), and every bad input.

mod common;

#[path = "common/mock_hub.rs"]
mod mock_hub;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{fixture, report_fails, report_fails_with, report_with, strata};
use mock_hub::{commit_of, online, MockHub, MockRepo, MockRevision};
use strata::results::Results;

fn corpora() -> PathBuf {
    fixture("corpora")
}

/// A spec in `dir` over `corpus` (YAML for the `corpus:` field) with two analyses.
fn spec(dir: &Path, corpus: &str) -> PathBuf {
    let path = dir.join("spec.yaml");
    std::fs::write(
        &path,
        format!(
            "name: c\nmodel: {{id: {}}}\ncorpus: {corpus}\nanalyses:\n  - {{kind: summary}}\n  - {{kind: covariance}}\n",
            fixture("tiny-gpt2").display()
        ),
    )
    .unwrap();
    path
}

fn report(dir: &Path, corpus: &str) -> Results {
    report_with(&mut strata(), &spec(dir, corpus), &dir.join("out"))
}

fn compress(src: &Path, dst: &Path) {
    let data = std::fs::read(src).unwrap();
    let bytes = if dst.extension().is_some_and(|e| e == "gz") {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    } else {
        zstd::stream::encode_all(&data[..], 3).unwrap()
    };
    std::fs::write(dst, bytes).unwrap();
}

#[test]
fn parquet_and_compressed_files_give_the_jsonl_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["texts.jsonl", "texts.parquet", "texts-zstd.parquet"] {
        std::fs::copy(corpora().join(f), tmp.path().join(f)).unwrap();
    }
    for f in ["texts.jsonl", "texts.parquet"] {
        for ext in ["gz", "zst"] {
            compress(&tmp.path().join(f), &tmp.path().join(format!("{f}.{ext}")));
        }
    }
    let case = |name: &str, corpus: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        report(
            &dir,
            &corpus.replace("DIR", &tmp.path().display().to_string()),
        )
    };
    let jsonl = case("jsonl", "DIR/texts.jsonl");
    assert_eq!(jsonl.corpus.texts, 12);
    assert_eq!(jsonl.texts[3].id, "doc-03");
    for (name, corpus) in [
        ("parquet", "DIR/texts.parquet"),
        ("jsonl-gz", "DIR/texts.jsonl.gz"),
        ("jsonl-zst", "DIR/texts.jsonl.zst"),
        ("parquet-gz", "DIR/texts.parquet.gz"),
        ("parquet-zst", "DIR/texts.parquet.zst"),
    ] {
        let r = case(name, corpus);
        assert_eq!(r.texts, jsonl.texts, "{name}: ids and token ids");
        assert_eq!(r.analyses, jsonl.analyses, "{name}: numbers");
        assert_eq!(r.corpus, jsonl.corpus, "{name}");
        // Provenance hashes the file as stored.
        let stored = tmp.path().join(corpus.trim_start_matches("DIR/"));
        let sha = strata::digest::sha256_file(&stored).unwrap();
        assert_eq!(
            r.provenance.corpus_sha256.as_deref(),
            Some(sha.as_str()),
            "{name}"
        );
    }
    // Other columns: the texts under `body`, integer ids under `idx`.
    let r = case(
        "columns",
        "{path: DIR/texts-zstd.parquet, column: body, id_column: idx}",
    );
    // The same numbers (the summary's locations name the texts by their new ids).
    assert_eq!(r.analyses[1], jsonl.analyses[1]);
    assert_eq!(r.texts[0].token_ids, jsonl.texts[0].token_ids);
    assert_eq!(r.texts[0].id, "100");
    assert_eq!(r.texts[11].id, "111");
    // A JSONL field by another name, and the first N texts only.
    let renamed = tmp.path().join("renamed.jsonl");
    let body = std::fs::read_to_string(tmp.path().join("texts.jsonl"))
        .unwrap()
        .replace("\"text\":", "\"body\":");
    std::fs::write(&renamed, body).unwrap();
    let r = case("renamed", "{path: DIR/renamed.jsonl, column: body}");
    assert_eq!(r.analyses, jsonl.analyses);
    let r = case("limit", "{path: DIR/texts.parquet, limit: 7}");
    assert_eq!(r.corpus.texts, 7);
    assert_eq!(r.texts, jsonl.texts[..7]);
}

#[test]
fn bad_corpora_are_named_with_a_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let c = corpora().display().to_string();
    for (corpus, says) in [
        (
            format!("{c}/nulls.parquet"),
            vec!["nulls.parquet, row 3", "null"],
        ),
        (
            format!("{c}/empty.parquet"),
            vec!["empty.parquet", "no rows"],
        ),
        (
            format!("{{path: {c}/texts.parquet, column: n}}"),
            vec!["texts.parquet", "\"n\" is INT64, not a string column"],
        ),
        (
            format!("{{path: {c}/texts.parquet, column: body}}"),
            vec!["no column \"body\"", "it has: id, text, n"],
        ),
        (
            format!("{{path: {c}/texts.parquet, id_column: key}}"),
            vec!["no id column \"key\""],
        ),
        (
            format!("{{path: {c}/texts.jsonl, column: body}}"),
            vec!["texts.jsonl, line 1", "no string field \"body\""],
        ),
        (
            format!("{c}/texts.jsonl.gz"),
            vec!["texts.jsonl.gz", "no such file"],
        ),
        (format!("{c}/make.py"), vec!["corpus", ".parquet"]),
        (
            format!("{{path: {c}/texts.parquet, limit: 0}}"),
            vec!["corpus.limit", "at least 1"],
        ),
        (
            format!("{{path: {c}/texts.parquet, split: test}}"),
            vec!["corpus.split", "Hub dataset"],
        ),
        (
            format!("{{path: {c}/texts.parquet, dataset: x}}"),
            vec!["exactly one of"],
        ),
        (
            "{dataset: a/b/c}".to_string(),
            vec!["corpus.dataset", "owner/name"],
        ),
        (
            format!("{{path: {c}/texts.parquet, colum: text}}"),
            vec!["unknown field `colum`"],
        ),
    ] {
        let err = report_fails(&spec(tmp.path(), &corpus));
        for s in &says {
            assert!(err.contains(s), "{corpus}: {err}");
        }
    }
    // A .txt corpus has no columns.
    std::fs::write(tmp.path().join("t.txt"), "one\ntwo\n").unwrap();
    let err = report_fails(&spec(tmp.path(), "{path: t.txt, column: x}"));
    assert!(
        err.contains("corpus.column") && err.contains("no columns"),
        "{err}"
    );
    // A truncated and a corrupted Parquet file.
    let bytes = std::fs::read(corpora().join("texts.parquet")).unwrap();
    std::fs::write(tmp.path().join("cut.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let err = report_fails(&spec(tmp.path(), "cut.parquet"));
    assert!(
        err.contains("cut.parquet") && err.contains("not a Parquet file"),
        "{err}"
    );
    let mut flipped = bytes.clone();
    flipped[200..900].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(tmp.path().join("flip.parquet"), &flipped).unwrap();
    let err = report_fails(&spec(tmp.path(), "flip.parquet"));
    assert!(err.contains("flip.parquet"), "{err}");
    // A damaged compressed file.
    std::fs::write(tmp.path().join("bad.jsonl.zst"), b"not zstd at all").unwrap();
    let err = report_fails(&spec(tmp.path(), "bad.jsonl.zst"));
    assert!(err.contains("bad.jsonl.zst"), "{err}");
}

/// The dataset `mock/corpus` as the Hub's Parquet conversion holds it.
fn dataset_hub() -> MockHub {
    dataset_hub_of(&[
        "default/train/0000.parquet",
        "default/train/0001.parquet",
        "default/test/0000.parquet",
    ])
}

/// The dataset `mock/corpus` with `files` of the fixture's Parquet conversion.
fn dataset_hub_of(names: &[&str]) -> MockHub {
    let dir = corpora().join("hub");
    let mut files = BTreeMap::new();
    for f in names {
        files.insert(f.to_string(), std::fs::read(dir.join(f)).unwrap());
    }
    MockHub::start(vec![MockRepo {
        id: "mock/corpus".into(),
        dataset: true,
        space: false,
        gated: false,
        revisions: vec![MockRevision {
            names: vec!["refs/convert/parquet".into()],
            commit: commit_of("parquet"),
            files,
        }],
    }])
}

#[test]
fn a_hub_dataset_split_is_read_from_its_parquet_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = dataset_hub();
    let home = tmp.path().join("hf");
    let jsonl = report(
        &tmp.path().join("."),
        &format!("{}/texts.jsonl", corpora().display()),
    );
    let spec = spec(tmp.path(), "{dataset: mock/corpus, split: train}");
    let r = report_with(&mut online(&hub, &home), &spec, &tmp.path().join("online"));
    assert_eq!(r.texts, jsonl.texts, "two files, read in order");
    assert_eq!(r.analyses, jsonl.analyses);
    let d = r.provenance.dataset.as_ref().expect("dataset provenance");
    assert_eq!(
        (
            d.id.as_str(),
            d.config.as_str(),
            d.split.as_str(),
            d.revision.as_str()
        ),
        ("mock/corpus", "default", "train", "refs/convert/parquet")
    );
    assert_eq!(d.commit, commit_of("parquet"));
    assert_eq!(
        d.files_sha256.keys().collect::<Vec<_>>(),
        ["default/train/0000.parquet", "default/train/0001.parquet"]
    );
    assert_eq!(r.provenance.corpus_sha256, None);
    // The cache is laid out as huggingface_hub lays it out, and only the split was fetched.
    let repo = home.join("hub/datasets--mock--corpus");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/refs/convert/parquet")).unwrap(),
        commit_of("parquet")
    );
    assert!(!hub.seen().iter().any(|s| s.path.contains("default/test/")));
    assert!(hub
        .seen()
        .iter()
        .all(|s| s.path.contains("datasets/mock/corpus")));

    // Offline, from the cache alone: the same bytes.
    let mut c = strata();
    c.env("HF_HOME", &home);
    let before = hub.seen().len();
    report_with(&mut c, &spec, &tmp.path().join("offline"));
    assert_eq!(hub.seen().len(), before, "no request offline");
    assert_eq!(
        std::fs::read(tmp.path().join("offline/results.json")).unwrap(),
        std::fs::read(tmp.path().join("online/results.json")).unwrap()
    );

    // A limit that ends inside the second file; the other split.
    let limited = report_with(
        &mut online(&hub, &home),
        &self::spec(tmp.path(), "{dataset: mock/corpus, limit: 9}"),
        &tmp.path().join("limited"),
    );
    assert_eq!(limited.texts, jsonl.texts[..9]);
    let test = report_with(
        &mut online(&hub, &home),
        &self::spec(tmp.path(), "{dataset: mock/corpus, split: test}"),
        &tmp.path().join("test"),
    );
    assert_eq!(test.corpus.texts, 3);
}

#[test]
fn a_missing_dataset_config_or_split_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = dataset_hub();
    let home = tmp.path().join("hf");
    let fails = |cmd: &mut std::process::Command, corpus: &str| {
        report_fails_with(cmd, &spec(tmp.path(), corpus))
    };
    let err = fails(
        &mut online(&hub, &home),
        "{dataset: mock/corpus, split: validation}",
    );
    assert!(
        err.contains("split `validation`")
            && err.contains("it has: test, train")
            && err.contains("corpus.split"),
        "{err}"
    );
    let err = fails(
        &mut online(&hub, &home),
        "{dataset: mock/corpus, config: wikitext-2}",
    );
    assert!(
        err.contains("configuration `wikitext-2`") && err.contains("it has: default"),
        "{err}"
    );
    let err = fails(&mut online(&hub, &home), "{dataset: mock/nothing}");
    assert!(
        err.contains("dataset `mock/nothing`") && err.contains("404") && err.contains("HF_TOKEN"),
        "{err}"
    );
    let err = fails(
        &mut online(&hub, &home),
        "{dataset: mock/corpus, revision: main}",
    );
    assert!(
        err.contains("revision `main`") && err.contains("404"),
        "{err}"
    );
    // Offline with nothing cached.
    let mut c = strata();
    c.env("HF_HOME", &home);
    let err = fails(&mut c, "{dataset: mock/corpus}");
    assert!(
        err.contains("HF_HUB_OFFLINE") && err.contains("mock/corpus"),
        "{err}"
    );
}

/// `(label, texts)` of a run's corpus summary.
fn label_counts(r: &Results) -> Vec<(String, u64)> {
    r.corpus
        .labels
        .iter()
        .map(|c| (c.label.clone(), c.texts))
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(l, n)| (l.to_string(), *n)).collect()
}

#[test]
fn labels_are_read_from_jsonl_parquet_and_the_hub() {
    let tmp = tempfile::tempdir().unwrap();
    let c = corpora().display().to_string();
    let jsonl = report(tmp.path(), &format!("{c}/labels.jsonl"));
    // An integer label reads as its digits; a missing one leaves the text unlabelled.
    assert_eq!(
        label_counts(&jsonl),
        counts(&[("7", 1), ("neg", 5), ("pos", 5)])
    );
    assert_eq!(jsonl.texts[1].label.as_deref(), Some("7"));
    assert_eq!(jsonl.texts[4].label, None);
    let tokens: u64 = jsonl.corpus.labels.iter().map(|l| l.tokens).sum();
    assert_eq!(tokens, jsonl.corpus.tokens - jsonl.texts[4].n_tokens as u64);
    let html = std::fs::read_to_string(tmp.path().join("out/index.html")).unwrap();
    assert!(
        html.contains("3 labels; 1 text(s) without one"),
        "the page counts the labels"
    );

    let case = |name: &str, corpus: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        report(&dir, corpus)
    };
    let parquet = case(
        "sentiment",
        &format!("{{path: {c}/labels.parquet, label: sentiment}}"),
    );
    assert_eq!(label_counts(&parquet), counts(&[("neg", 5), ("pos", 6)]));
    let stars = case(
        "stars",
        &format!("{{path: {c}/labels.parquet, label: stars}}"),
    );
    assert_eq!(
        label_counts(&stars),
        counts(&[("0", 4), ("1", 4), ("2", 4)])
    );
    let flag = case(
        "flag",
        &format!("{{path: {c}/labels.parquet, label: flag}}"),
    );
    assert_eq!(label_counts(&flag), counts(&[("false", 9), ("true", 3)]));
    // Without labels, results.json says nothing of them.
    let plain = case("plain", &format!("{c}/texts.jsonl"));
    assert!(plain.corpus.labels.is_empty());
    let bytes = std::fs::read(tmp.path().join("plain/out/results.json")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(json["corpus"].get("labels").is_none());
    assert!(json["texts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t.get("label").is_none()));

    // A Hub dataset's integer label column, read by default.
    let hub = dataset_hub_of(&["default/train/0000.parquet", "labelled/train/0000.parquet"]);
    let home = tmp.path().join("hf");
    let spec = spec(tmp.path(), "{dataset: mock/corpus, config: labelled}");
    let r = report_with(&mut online(&hub, &home), &spec, &tmp.path().join("hub"));
    assert_eq!(label_counts(&r), counts(&[("0", 6), ("1", 6)]));
}

#[test]
fn bad_labels_are_named_with_a_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let c = corpora().display().to_string();
    for (corpus, words) in [
        (
            format!("{{path: {c}/labels.parquet, label: score}}"),
            vec![
                "labels.parquet",
                "label column \"score\" is DOUBLE",
                "corpus.label",
            ],
        ),
        (
            format!("{{path: {c}/labels.parquet, label: mood}}"),
            vec!["no label column \"mood\"", "sentiment"],
        ),
        (format!("{{path: {c}/texts.jsonl, label: mood}}"), vec![]),
    ] {
        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        if words.is_empty() {
            // A named JSONL field that no line has leaves every text unlabelled.
            let r = report(dir.path(), &corpus);
            assert!(r.corpus.labels.is_empty());
            continue;
        }
        let err = report_fails(&spec(dir.path(), &corpus));
        for w in words {
            assert!(err.contains(w), "{corpus}: {err}");
        }
    }
    let dir = tempfile::tempdir_in(tmp.path()).unwrap();
    std::fs::write(dir.path().join("t.txt"), "one\ntwo\n").unwrap();
    let err = report_fails(&spec(dir.path(), "{path: t.txt, label: x}"));
    assert!(
        err.contains("corpus.label") && err.contains(".txt corpus has no columns"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("l.jsonl"),
        "{\"text\": \"a\", \"label\": [1]}\n",
    )
    .unwrap();
    let err = report_fails(&spec(dir.path(), "l.jsonl"));
    assert!(
        err.contains("line 1") && err.contains("is an array"),
        "{err}"
    );
}
