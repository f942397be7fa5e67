//! Sharded runs: `strata report --shard I/N` then `strata merge` gives the one-process
//! results.json and index.html byte for byte, for every N from 1 to the number of texts
//! (and beyond), in any order, on any thread count; every bad shard flag, bad partial and
//! damaged results.json is refused with exit 2 and nothing written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

fn run(args: &[&str]) -> Output {
    strata().args(args).output().unwrap()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// results.json and index.html of a folder.
fn outputs(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(dir.join("results.json")).unwrap(),
        std::fs::read(dir.join("index.html")).unwrap(),
    )
}

fn shard(spec: &Path, i: usize, n: usize, dir: &Path) {
    ok(run(&[
        "report",
        s(spec),
        "--quiet",
        "--shard",
        &format!("{i}/{n}"),
        "--out",
        s(dir),
    ]));
}

#[test]
fn merged_shards_equal_one_process_for_every_split() {
    let tmp = tempfile::tempdir().unwrap();
    // Only 3 of the 7 texts are listed: the listed ones and the digests of the rest
    // cross shard boundaries.
    let spec = shard_spec(tmp.path(), "batch_size: 3\nkeep_texts: 3\n");
    let whole = tmp.path().join("whole");
    ok(run(&["report", s(&spec), "--quiet", "--out", s(&whole)]));
    let want = outputs(&whole);

    for n in 1..=9 {
        let parts = tmp.path().join(format!("parts{n}"));
        for i in 0..n {
            shard(&spec, i, n, &parts);
        }
        let files: Vec<PathBuf> = {
            let mut f: Vec<PathBuf> = std::fs::read_dir(&parts)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            f.sort();
            f
        };
        assert_eq!(files.len(), n, "one partial per shard");
        let merged = tmp.path().join(format!("merged{n}"));
        // A folder for some splits, files in reverse order for the others.
        let mut args: Vec<String> = vec![
            "merge".into(),
            "--quiet".into(),
            "--out".into(),
            s(&merged).into(),
        ];
        if n % 2 == 0 {
            args.push(s(&parts).into());
        } else {
            args.extend(files.iter().rev().map(|f| s(f).to_string()));
        }
        ok(strata().args(&args).output().unwrap());
        let got = outputs(&merged);
        if n == 2 {
            // Every kind's compare rule holds the merged result equal to one process's.
            ok(run(&[
                "compare",
                s(&whole.join("results.json")),
                s(&merged.join("results.json")),
            ]));
        }
        assert!(
            got.0 == want.0,
            "results.json of {n} shards differs from one process"
        );
        assert!(
            got.1 == want.1,
            "index.html of {n} shards differs from one process"
        );
    }
}

#[test]
fn a_shard_rerun_writes_the_same_bytes_whatever_the_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = shard_spec(tmp.path(), "");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(strata()
        .env("RAYON_NUM_THREADS", "1")
        .args([
            "report",
            s(&spec),
            "--quiet",
            "--shard",
            "1/3",
            "--out",
            s(&a),
        ])
        .output()
        .unwrap());
    ok(strata()
        .env("RAYON_NUM_THREADS", "2")
        .args([
            "report",
            s(&spec),
            "--quiet",
            "--shard",
            "1/3",
            "--out",
            s(&b),
        ])
        .output()
        .unwrap());
    let name = "shards-shard-1-of-3.partial";
    let pa = std::fs::read(a.join(name)).unwrap();
    assert_eq!(pa, std::fs::read(b.join(name)).unwrap());
    // No results.json or index.html from a shard; the partial names its format first.
    assert_eq!(std::fs::read_dir(&a).unwrap().count(), 1);
    assert!(pa.starts_with(b"{\"format\":\"strata-partial\",\"version\":2,"));
}

#[test]
fn batching_changes_no_statistic() {
    let tmp = tempfile::tempdir().unwrap();
    let results = |name: &str, batching: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = shard_spec(&dir, batching);
        ok(run(&[
            "report",
            s(&spec),
            "--quiet",
            "--out",
            s(&dir.join("out")),
        ]));
        let r = strata::results::Results::from_json(
            &std::fs::read(dir.join("out/results.json")).unwrap(),
        )
        .unwrap();
        (r.analyses, r.texts)
    };
    let one = results("one", "batch_size: 1\n");
    assert_eq!(one, results("four", "batch_size: 4\n"));
    assert_eq!(one, results("default", ""));
    // A token budget smaller than most texts (each runs alone), and one that groups them.
    assert_eq!(one, results("budget-5", "batch_tokens: 5\n"));
    assert_eq!(one, results("budget-40", "batch_tokens: 40\n"));
}

#[test]
fn the_default_folder_holds_every_shard_and_merge_names_missing_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = shard_spec(tmp.path(), "");
    // Default output: reports/NAME/partials/ under the working directory.
    for i in [0, 2, 4] {
        ok(strata()
            .current_dir(tmp.path())
            .args(["report", s(&spec), "--quiet", "--shard", &format!("{i}/6")])
            .output()
            .unwrap());
    }
    let parts = tmp.path().join("reports/shards/partials");
    let mut names: Vec<String> = std::fs::read_dir(&parts)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "shards-shard-0-of-6.partial",
            "shards-shard-2-of-6.partial",
            "shards-shard-4-of-6.partial"
        ]
    );
    let o = strata()
        .current_dir(tmp.path())
        .args(["merge", "reports/shards/partials"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("3 of 6 shards are missing: 1, 3, 5"), "{err}");
    assert!(err.contains("--array=1,3,5"), "{err}");
    assert!(!tmp.path().join("reports/shards/results.json").exists());
    // Resume: run the missing ones, merge into the default folder.
    for i in [1, 3, 5] {
        ok(strata()
            .current_dir(tmp.path())
            .args(["report", s(&spec), "--quiet", "--shard", &format!("{i}/6")])
            .output()
            .unwrap());
    }
    ok(strata()
        .current_dir(tmp.path())
        .args(["merge", "--quiet", "reports/shards/partials"])
        .output()
        .unwrap());
    assert!(tmp.path().join("reports/shards/results.json").exists());
    assert!(tmp.path().join("reports/shards/index.html").exists());
}

#[test]
fn shard_auto_reads_slurm_and_kubernetes() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = shard_spec(tmp.path(), "");
    let out = tmp.path().join("p");
    ok(strata()
        .env("SLURM_ARRAY_TASK_ID", "12")
        .env("SLURM_ARRAY_TASK_MIN", "10")
        .env("SLURM_ARRAY_TASK_MAX", "13")
        .env("SLURM_ARRAY_TASK_COUNT", "4")
        .args([
            "report",
            s(&spec),
            "--quiet",
            "--shard",
            "auto",
            "--out",
            s(&out),
        ])
        .output()
        .unwrap());
    assert!(out.join("shards-shard-2-of-4.partial").exists());
    ok(strata()
        .env("JOB_COMPLETION_INDEX", "3")
        .env("STRATA_SHARD_COUNT", "4")
        .args([
            "report",
            s(&spec),
            "--quiet",
            "--shard",
            "auto",
            "--out",
            s(&out),
        ])
        .output()
        .unwrap());
    assert!(out.join("shards-shard-3-of-4.partial").exists());
}

/// Runs strata expecting exit 2; returns stderr.
fn fails(cmd: &mut std::process::Command) -> String {
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "expected exit 2: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_shard_flags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = shard_spec(tmp.path(), "");
    let out = tmp.path().join("p");
    for (flag, says) in [
        ("4/4", "out of range for 4 shards"),
        ("1/0", "use 1 to"),
        ("two/4", "not I/N or auto"),
        ("3", "not I/N or auto"),
    ] {
        let err = fails(strata().args(["report", s(&spec), "--shard", flag, "--out", s(&out)]));
        assert!(err.contains(says), "--shard {flag}: {err}");
    }
    let err = fails(
        strata()
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("JOB_COMPLETION_INDEX")
            .args(["report", s(&spec), "--shard", "auto", "--out", s(&out)]),
    );
    assert!(
        err.contains("--shard auto") && err.contains("SLURM_ARRAY_TASK_ID"),
        "{err}"
    );
    let err = fails(
        strata()
            .env("JOB_COMPLETION_INDEX", "1")
            .env_remove("STRATA_SHARD_COUNT")
            .args(["report", s(&spec), "--shard", "auto", "--out", s(&out)]),
    );
    assert!(err.contains("STRATA_SHARD_COUNT"), "{err}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn bad_partials_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = shard_spec(tmp.path(), "");
    let parts = tmp.path().join("parts");
    for i in 0..3 {
        shard(&spec, i, 3, &parts);
    }
    let p = |i: usize| parts.join(format!("shards-shard-{i}-of-3.partial"));
    let out = tmp.path().join("out");
    let merge = |files: &[&Path]| {
        let mut c = strata();
        c.args(["merge", "--out", s(&out)]);
        c.args(files.iter().map(|f| s(f)));
        fails(&mut c)
    };
    // A duplicate.
    let copy = tmp.path().join("copy.partial");
    std::fs::copy(p(1), &copy).unwrap();
    let err = merge(&[&p(0), &p(1), &copy, &p(2)]);
    assert!(err.contains("both shard 1/3"), "{err}");
    // Another N.
    let other = tmp.path().join("other");
    shard(&spec, 1, 2, &other);
    let err = merge(&[&p(0), &other.join("shards-shard-1-of-2.partial")]);
    assert!(err.contains("same N"), "{err}");
    // Another spec (another batch size).
    let dir2 = tmp.path().join("spec2");
    std::fs::create_dir_all(&dir2).unwrap();
    let spec2 = shard_spec(&dir2, "batch_size: 2\n");
    shard(&spec2, 2, 3, &dir2.join("p"));
    let err = merge(&[&p(0), &p(1), &dir2.join("p/shards-shard-2-of-3.partial")]);
    assert!(err.contains("another spec"), "{err}");
    // Another model of the same shape (the same spec run with --model).
    let dir3 = tmp.path().join("p3");
    let model2 = tmp.path().join("model2");
    common::synth::SynthGpt2 {
        n_layer: 3,
        n_embd: 32,
        n_head: 4,
        n_positions: 128,
        vocab_size: 50257,
    }
    .write(&model2, 2)
    .unwrap();
    for name in ["vocab.json", "merges.txt"] {
        std::fs::copy(fixture("tiny-gpt2").join(name), model2.join(name)).unwrap();
    }
    ok(run(&[
        "report",
        s(&spec),
        "--quiet",
        "--shard",
        "2/3",
        "--model",
        s(&model2),
        "--out",
        s(&dir3),
    ]));
    let err = merge(&[&p(0), &p(1), &dir3.join("shards-shard-2-of-3.partial")]);
    assert!(err.contains("another model"), "{err}");
    // Truncated, corrupted, not a partial.
    let bytes = std::fs::read(p(2)).unwrap();
    let cut = tmp.path().join("cut.partial");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = merge(&[&p(0), &p(1), &cut]);
    assert!(
        err.contains("cut.partial") && err.contains("truncated"),
        "{err}"
    );
    let mut flipped = bytes.clone();
    let at = flipped.len() / 3;
    flipped[at] = if flipped[at] == b'1' { b'2' } else { b'1' };
    let bad = tmp.path().join("flipped.partial");
    std::fs::write(&bad, &flipped).unwrap();
    let err = merge(&[&p(0), &p(1), &bad]);
    assert!(
        err.contains("flipped.partial") && err.contains("checksum"),
        "{err}"
    );
    // Checksummed, but its text log does not add up (a digest missing).
    let line = String::from_utf8(bytes[..bytes.iter().position(|&b| b == b'\n').unwrap()].to_vec())
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let digests = v["texts"]["digests"].as_str().unwrap().to_string();
    v["texts"]["digests"] = serde_json::json!(digests[64..]);
    let mut body = serde_json::to_vec(&v).unwrap();
    body.push(b'\n');
    let sum = strata::digest::hex(&<sha2::Sha256 as sha2::Digest>::digest(&body));
    body.extend_from_slice(format!("sha256 {sum}\n").as_bytes());
    let short = tmp.path().join("short.partial");
    std::fs::write(&short, &body).unwrap();
    let err = merge(&[&p(0), &p(1), &short]);
    assert!(
        err.contains("short.partial") && err.contains("texts do not add up"),
        "{err}"
    );
    let whole = tmp.path().join("whole");
    ok(run(&["report", s(&spec), "--quiet", "--out", s(&whole)]));
    let err = merge(&[&whole.join("results.json")]);
    assert!(err.contains("not a strata partial"), "{err}");
    // The reason is said once: an error that names its file does not repeat its cause.
    assert_eq!(err.matches("not a strata partial").count(), 1, "{err}");
    let err = merge(&[&tmp.path().join("absent.partial")]);
    assert!(err.contains("no such file"), "{err}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = merge(&[&empty]);
    assert!(err.contains("no *.partial files"), "{err}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn a_partial_from_another_strata_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = shard_spec(tmp.path(), "");
    let parts = tmp.path().join("parts");
    for i in 0..2 {
        shard(&spec, i, 2, &parts);
    }
    // Rewrite shard 1 as another strata version would, with a valid checksum.
    let path = parts.join("shards-shard-1-of-2.partial");
    let mut p = strata::run::partial::Partial::read(&path).unwrap();
    p.run.provenance.strata_version = "0.0.9".into();
    std::fs::write(&path, p.to_bytes()).unwrap();
    let err = fails(strata().args(["merge", s(&parts), "--out", s(&tmp.path().join("o"))]));
    assert!(err.contains("another strata"), "{err}");
}

/// A results.json edited by hand: every reader refuses it by name, none panics.
#[test]
fn damaged_results_are_refused_by_render_compare_and_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = shard_spec(tmp.path(), "");
    let whole = tmp.path().join("whole");
    ok(run(&["report", s(&spec), "--quiet", "--out", s(&whole)]));
    let good = whole.join("results.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&good).unwrap()).unwrap();
    type Damage = Box<dyn Fn(&mut serde_json::Value)>;
    let damage: Vec<(&str, Damage, &str)> = vec![
        (
            "short covariance row",
            Box::new(|v| {
                v["analyses"][2]["covariance"][1]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
            "analyses[2] (covariance): covariance[1]",
        ),
        (
            "short histogram row",
            Box::new(|v| {
                v["analyses"][5]["counts"][0].as_array_mut().unwrap().pop();
            }),
            "analyses[5] (histogram)",
        ),
        (
            "empty histogram edges",
            Box::new(|v| v["analyses"][5]["edges"] = serde_json::json!([])),
            "analyses[5] (histogram)",
        ),
        (
            "descending edges",
            Box::new(|v| v["analyses"][5]["edges"][3] = serde_json::json!(5.0)),
            "ascending",
        ),
        (
            "ragged scatter",
            Box::new(|v| {
                v["analyses"][0]["values"][2].as_array_mut().unwrap().pop();
            }),
            "analyses[0] (scatter): values[2]",
        ),
        (
            "a summary row missing",
            Box::new(|v| {
                v["analyses"][6]["rows"].as_array_mut().unwrap().pop();
            }),
            "analyses[6] (summary): rows",
        ),
        (
            "a pairplot column short",
            Box::new(|v| {
                v["analyses"][3]["columns"][1].as_array_mut().unwrap().pop();
            }),
            "analyses[3] (pairplot): columns[1]",
        ),
        (
            "outliers per label",
            Box::new(|v| {
                v["analyses"][7]["top"].as_array_mut().unwrap().pop();
            }),
            "analyses[7] (outliers): top",
        ),
        (
            "no texts",
            Box::new(|v| v["texts"] = serde_json::json!([])),
            "texts (the first settings.keep_texts of corpus.texts) has 0 entries, expected 7",
        ),
        (
            "a corpus of none",
            Box::new(|v| v["corpus"]["texts"] = serde_json::json!(0)),
            "corpus.texts is 0",
        ),
        (
            "lengths that do not add up",
            Box::new(|v| v["corpus"]["lengths"][0][1] = serde_json::json!(99)),
            "corpus.lengths counts",
        ),
        (
            "an unknown kind",
            Box::new(|v| v["analyses"][0]["kind"] = serde_json::json!("sparkles")),
            "unknown variant",
        ),
    ];
    for (what, f, says) in damage {
        let mut bad = v.clone();
        f(&mut bad);
        let path = tmp.path().join("bad.json");
        std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
        let page = tmp.path().join("bad.html");
        let err = fails(strata().args(["render", s(&path), "--out", s(&page)]));
        assert!(
            err.contains("bad.json") && err.contains(says),
            "render, {what}: {err}"
        );
        assert!(!page.exists(), "render wrote a page for {what}");
        for (a, b) in [(&path, &good), (&good, &path)] {
            let err = fails(strata().args(["compare", s(a), s(b)]));
            assert!(
                err.contains("bad.json") && err.contains(says),
                "compare, {what}: {err}"
            );
        }
    }
}
