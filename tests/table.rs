//! `strata table`: every kind of a results.json as a tidy table (CSV, JSON lines,
//! Parquet), one row per number, the same bytes every time, floats exact; Parquet read
//! back with pyarrow; bad input refused with nothing written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn table(args: &[&str]) -> Output {
    strata().arg("table").args(args).output().unwrap()
}

/// The shard spec's report: every kind, on the tiny GPT-2.
fn results(dir: &Path) -> PathBuf {
    let out = dir.join("out");
    report_html(&shard_spec(dir, ""), &out);
    out.join("results.json")
}

/// Splits one CSV line (RFC 4180 quoting).
fn fields(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut chars) =
        (vec![], String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[test]
fn every_kind_becomes_exact_rows_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let res = results(tmp.path());
    let r = strata::results::Results::from_json(&std::fs::read(&res).unwrap()).unwrap();

    let csv = table(&[s(&res)]);
    assert!(
        csv.status.success(),
        "{}",
        String::from_utf8_lossy(&csv.stderr)
    );
    let text = String::from_utf8(csv.stdout.clone()).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "experiment,model,revision,commit,spec_sha256,analysis,kind,site,metric,hidden_state,index,value,head,block,expert,feature,neuron,bin,class"
    );
    let rows: Vec<Vec<String>> = lines.map(fields).collect();
    assert!(rows.iter().all(|r| r.len() == 19));
    // Every analysis of the spec has rows, under its kind and site.
    for (i, a) in r.analyses.iter().enumerate() {
        let mine: Vec<&Vec<String>> = rows.iter().filter(|x| x[5] == i.to_string()).collect();
        assert!(!mine.is_empty(), "analysis {i} ({}) has no rows", a.kind());
        assert!(mine
            .iter()
            .all(|x| x[6] == a.kind() && x[7] == a.site.to_string()));
        assert!(mine
            .iter()
            .all(|x| x[0] == "shards" && x[4] == r.provenance.spec_sha256));
        // Each per-hidden-state statistic, exactly.
        for sc in a.scalars() {
            for (label, v) in sc.labels.iter().zip(&sc.values) {
                let row = mine
                    .iter()
                    .find(|x| x[8] == sc.statistic && x[9] == *label)
                    .unwrap_or_else(|| panic!("{} {} {label}", a.kind(), sc.statistic));
                match v {
                    Some(v) => assert_eq!(row[11].parse::<f64>().unwrap().to_bits(), v.to_bits()),
                    None => assert_eq!(row[11], ""),
                }
            }
        }
    }
    // Numbers beyond the per-hidden-state ones: a histogram's counts, a grid's cells.
    let hist = rows
        .iter()
        .find(|x| {
            x[6] == "histogram"
                && x[8] == "counts"
                && x[9] == r.analyses[5].scalars()[0].labels[0]
                && x[10] == "3"
        })
        .expect("histogram counts by hidden state and bin");
    let want = serde_json::to_value(&r.analyses[5].result).unwrap()["counts"][0][3].clone();
    assert_eq!(hist[11], want.to_string());
    assert!(rows
        .iter()
        .any(|x| x[6] == "logit_lens" && x[8] == "grid.top1.prob"));
    named_columns_follow_the_positions(&rows);

    // JSON lines: the same rows.
    let out = tmp.path().join("t.jsonl");
    assert!(table(&[s(&res), "--format", "jsonl", "--out", s(&out)])
        .status
        .success());
    let jsonl = std::fs::read_to_string(&out).unwrap();
    assert_eq!(jsonl.lines().count(), rows.len());
    for (line, row) in jsonl.lines().zip(&rows) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["metric"], row[8].as_str());
        assert_eq!(v["analysis"].as_u64().unwrap().to_string(), row[5]);
        match v["value"].as_f64() {
            Some(x) => assert_eq!(x.to_bits(), row[11].parse::<f64>().unwrap().to_bits()),
            None => assert_eq!(row[11], ""),
        }
    }

    // The same bytes every time, in every format.
    for format in ["csv", "jsonl", "parquet"] {
        let a = tmp.path().join(format!("a.{format}"));
        let b = tmp.path().join(format!("b.{format}"));
        for p in [&a, &b] {
            let o = table(&[s(&res), "--format", format, "--out", s(p)]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{format}"
        );
    }
    assert_eq!(std::fs::read(tmp.path().join("a.csv")).unwrap(), csv.stdout);
    parquet_reads_back(&tmp.path().join("a.parquet"), &rows);
}

/// The named columns repeat what `index` and `hidden_state` say, per kind: a head and a
/// block for attention, a neuron, a feature, a bin, a class; empty elsewhere.
fn named_columns_follow_the_positions(rows: &[Vec<String>]) {
    let col = |name: &str| {
        12 + [
            "head", "block", "expert", "feature", "neuron", "bin", "class",
        ]
        .iter()
        .position(|c| *c == name)
        .unwrap()
    };
    let find = |kind: &str, metric: &str| -> Vec<&Vec<String>> {
        rows.iter()
            .filter(|x| x[6] == kind && x[8] == metric)
            .collect()
    };
    let first = |x: &Vec<String>| x[10].split(',').next().unwrap().to_string();
    let entropy = find("attention", "entropy");
    assert!(!entropy.is_empty());
    for x in &entropy {
        assert_eq!(x[col("head")], first(x), "{x:?}");
        assert_eq!(x[col("block")], x[9].trim_start_matches("attn."), "{x:?}");
    }
    let heads: std::collections::BTreeSet<&str> =
        entropy.iter().map(|x| x[col("head")].as_str()).collect();
    assert_eq!(heads.len(), 4, "every head of the tiny GPT-2");
    for x in find("neurons", "frequency") {
        assert_eq!(x[col("neuron")], first(x));
    }
    // A neuron's top examples carry the neuron they are examples of.
    let top = find("neurons", "top.neuron");
    for x in find("neurons", "top.examples.value") {
        let owner = top
            .iter()
            .find(|t| t[9] == x[9] && t[10] == first(x))
            .unwrap();
        assert_eq!(x[col("neuron")], owner[11], "{x:?}");
    }
    for x in find("histogram", "counts")
        .iter()
        .chain(&find("histogram", "edges"))
    {
        assert_eq!(x[col("bin")], first(x));
    }
    for x in find("sae", "max") {
        assert_eq!(x[col("feature")], first(x));
    }
    for x in find("sae", "top_by_max.max") {
        assert!(!x[col("feature")].is_empty());
    }
    let classes: Vec<&str> = find("directions", "classes.texts")
        .iter()
        .map(|x| x[col("class")].as_str())
        .collect();
    assert_eq!(classes, ["even", "odd"]);
    for x in find("directions", "projection.odd") {
        assert_eq!(x[col("class")], "odd");
    }
    // Numbers without such positions leave every named column empty.
    for x in find("summary", "kurtosis")
        .iter()
        .chain(&find("cka", "matrix"))
    {
        assert!(x[12..].iter().all(String::is_empty), "{x:?}");
    }
}

/// pyarrow reads the Parquet file: the row count, the columns' types, and a few values
/// equal to the CSV's to the bit. Skipped without a Python that has pyarrow, unless
/// STRATA_REQUIRE_PYTHON_TOOLS is set.
fn parquet_reads_back(path: &Path, rows: &[Vec<String>]) {
    let Some(python) = python_with(&["pyarrow"]) else {
        return;
    };
    let script = r#"
import json, sys
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
print(json.dumps({
    "rows": t.num_rows,
    "types": {f.name: str(f.type) for f in t.schema},
    "picks": [[t.column("metric")[i].as_py(), t.column("hidden_state")[i].as_py(),
               t.column("analysis")[i].as_py(), repr(t.column("value")[i].as_py())]
              for i in range(0, t.num_rows, max(1, t.num_rows // 50))],
}))
"#;
    let o = std::process::Command::new(python)
        .args(["-c", script, s(path)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rows"].as_u64().unwrap() as usize, rows.len());
    assert_eq!(v["types"]["value"], "double");
    assert_eq!(v["types"]["analysis"], "int64");
    assert_eq!(v["types"]["metric"], "string");
    for name in ["head", "block", "expert", "feature", "neuron", "bin"] {
        assert_eq!(v["types"][name], "int64", "{name}");
    }
    assert_eq!(v["types"]["class"], "string");
    let step = (rows.len() / 50).max(1);
    for (k, pick) in v["picks"].as_array().unwrap().iter().enumerate() {
        let row = &rows[k * step];
        assert_eq!(pick[0], row[8].as_str());
        assert_eq!(pick[1].as_str().unwrap_or(""), row[9]);
        assert_eq!(pick[2].as_u64().unwrap().to_string(), row[5]);
        let value = pick[3].as_str().unwrap();
        if row[11].is_empty() {
            assert_eq!(value, "None");
        } else {
            let py: f64 = value.parse().unwrap();
            assert_eq!(
                py.to_bits(),
                row[11].parse::<f64>().unwrap().to_bits(),
                "{row:?}"
            );
        }
    }
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let res = results(tmp.path());
    let out = tmp.path().join("t.csv");
    // A damaged results.json: the same check as `render`.
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&res).unwrap()).unwrap();
    v["analyses"][6]["labels"] = serde_json::json!(["h.0"]);
    let bad = tmp.path().join("damaged.json");
    std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = table(&[s(&bad), "--out", s(&out)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("damaged.json") && err.contains("damaged"),
        "{err}"
    );
    assert!(!out.exists());
    std::fs::write(
        &bad,
        b"{\"schema_version\": 1, \"series\": [], \"revisions\": 3}",
    )
    .unwrap();
    let o = table(&[s(&bad), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a valid sweep.json"));
    assert!(!out.exists());
    // An unknown format; Parquet to a terminal.
    let o = table(&[s(&res), "--format", "xlsx"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("csv, parquet, jsonl"));
    let o = table(&[s(&res), "--format", "parquet"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--out"));
    // An existing file is replaced whole.
    std::fs::write(&out, "old contents that are longer than nothing").unwrap();
    assert!(table(&[s(&res), "--out", s(&out)]).status.success());
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .starts_with("experiment,"));
}

/// The book's pandas and polars examples run on a table of every kind, and their pivots
/// have the shapes the named columns promise (pandas, polars and pyarrow from `make
/// py-tools`; skipped without them unless STRATA_REQUIRE_PYTHON_TOOLS is set).
#[test]
fn the_books_pandas_and_polars_examples_run() {
    let Some(python) = python_with(&["pandas", "polars", "pyarrow"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let res = results(tmp.path());
    for (format, file) in [("csv", "table.csv"), ("parquet", "table.parquet")] {
        let o = table(&[
            s(&res),
            "--format",
            format,
            "--out",
            s(&tmp.path().join(file)),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let book =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/tables.md"))
            .unwrap();
    let examples: Vec<&str> = book
        .split("```python\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(examples.len(), 2, "a pandas and a polars example");
    let run = |code: &str| {
        let o = std::process::Command::new(&python)
            .args(["-c", code])
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{code}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    for code in &examples {
        assert!(!run(code).trim().is_empty());
    }
    // The pivots the examples print: blocks x heads, hidden states x neurons, a row per
    // class, the values those of results.json.
    let check = r#"
import json
exec(open("with_pandas.py").read()); exec(open("with_polars.py").read())
r = json.load(open("out/results.json"))
att = next(a for a in r["analyses"] if a["kind"] == "attention")
assert grid.shape == (len(att["labels"]), att["n_heads"]), grid.shape
assert grid.loc[1, 2] == att["entropy"][1][2]
neu = next(a for a in r["analyses"] if a["kind"] == "neurons")
assert frequency.shape == (len(neu["labels"]), 1 + len(neu["frequency"][0])), frequency.shape
assert frequency.row(0, named=True)["5"] == neu["frequency"][0][5]
assert classes["class"].to_list() == ["even", "odd"]
print("ok")
"#;
    std::fs::write(tmp.path().join("with_pandas.py"), examples[0]).unwrap();
    std::fs::write(tmp.path().join("with_polars.py"), examples[1]).unwrap();
    assert_eq!(run(check).lines().last(), Some("ok"));
}
