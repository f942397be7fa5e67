//! The JSON Schemas: the committed files are what `strata schema` prints; every
//! experiment names the spec's schema for editors and validates against it, with a JSON
//! Schema validator (Python's `jsonschema`, Draft 2020-12); the bad-spec fixtures that
//! are errors of shape (a type, a name, a range) fail it.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const EDITOR_LINE: &str = "# yaml-language-server: $schema=../schema/spec.schema.json";

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn printed(of: &str) -> Vec<u8> {
    let o = strata().args(["schema", of]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

#[test]
fn the_committed_schemas_are_current() {
    for (of, file) in [
        ("spec", "schema/spec.schema.json"),
        ("results", "schema/results.schema.json"),
    ] {
        let committed = std::fs::read(repo(file)).unwrap_or_default();
        assert!(
            printed(of) == committed,
            "{file} is stale: run `strata schema {of} > {file}` (make schema)"
        );
    }
}

fn experiments() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo("experiments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_experiment_names_the_schema_for_editors() {
    for p in experiments() {
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().next(), Some(EDITOR_LINE), "{}", p.display());
    }
}

/// `{file: error or null}` from Python's jsonschema, for the YAML files given (read as
/// JSON's data model), against the schema file.
fn validate(schema: &Path, files: &[PathBuf]) -> Option<serde_json::Value> {
    let python = python_with(&["jsonschema"])?;
    let tmp = tempfile::tempdir().unwrap();
    let mut docs = serde_json::Map::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        let v: serde_json::Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        docs.insert(f.display().to_string(), v);
    }
    let input = tmp.path().join("docs.json");
    std::fs::write(&input, serde_json::to_vec(&docs).unwrap()).unwrap();
    let script = r#"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema)
docs = json.load(open(sys.argv[2]))
out = {}
for name, doc in docs.items():
    errors = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
    out[name] = errors[0].message if errors else None
print(json.dumps(out))
"#;
    let o = std::process::Command::new(python)
        .args(["-c", script])
        .arg(schema)
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Some(serde_json::from_slice(&o.stdout).unwrap())
}

#[test]
fn experiments_validate_and_shape_errors_do_not() {
    let schema = repo("schema/spec.schema.json");
    let tmp = tempfile::tempdir().unwrap();
    let mut good = experiments();
    good.push(shard_spec(
        tmp.path(),
        "batch_size: 3\nwindow: {tokens: 16, stride: 8}\n",
    ));
    let Some(got) = validate(&schema, &good) else {
        return;
    };
    for f in &good {
        let err = &got[f.display().to_string()];
        assert!(err.is_null(), "{} fails the schema: {err}", f.display());
    }
    let bad: Vec<PathBuf> = [
        "err_unknown_field",
        "err_unknown_kind",
        "err_unknown_top_field",
        "err_norms_unknown_field",
        "err_site_unknown",
        "err_bins_not_a_number",
        "err_bins_zero",
        "err_points_zero",
        "err_no_analyses",
        "err_empty_texts",
        "err_negative_layer",
        "err_layers_word",
        "err_dimensionality_max_memory_word",
        "err_pairplot_one_layer",
        "err_logit_lens_positions_zero",
    ]
    .iter()
    .map(|n| repo(&format!("tests/specs/{n}.yaml")))
    .collect();
    let got = validate(&schema, &bad).unwrap();
    for f in &bad {
        let err = &got[f.display().to_string()];
        assert!(err.is_string(), "{} passes the schema", f.display());
    }
}

#[test]
fn results_of_every_kind_validate() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = shard_spec(tmp.path(), "");
    let out = tmp.path().join("out");
    report_html(&spec, &out);
    let good = out.join("results.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&good).unwrap()).unwrap();
    // A number where `norms` has its list of labels; a field `summary` does not have.
    let mut bad = vec![];
    for (i, field, value) in [
        (8, "labels", serde_json::json!(3)),
        (6, "labels", serde_json::json!([])),
    ] {
        let mut v = v.clone();
        v["analyses"][i][field] = value;
        let path = tmp.path().join(format!("bad{i}.json"));
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        bad.push(path);
    }
    let files = [vec![good.clone()], bad.clone()].concat();
    let Some(got) = validate(&repo("schema/results.schema.json"), &files) else {
        return;
    };
    let err = &got[good.display().to_string()];
    assert!(err.is_null(), "results.json fails its schema: {err}");
    for b in &bad {
        assert!(
            got[b.display().to_string()].is_string(),
            "{} passes",
            b.display()
        );
    }
}

#[test]
fn a_new_spec_validates_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let new = |args: &[&str]| {
        strata()
            .arg("new")
            .args(args)
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    let model = fixture("tiny-gpt2");
    let o = new(&["demo", "--model", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let spec = tmp.path().join("experiments/demo.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    assert_eq!(text.lines().next(), Some(EDITOR_LINE));
    assert!(text.contains("name: demo") && text.contains("# "), "{text}");
    // The schema its first line points at is there, and is strata's.
    assert_eq!(
        std::fs::read(tmp.path().join("schema/spec.schema.json")).unwrap(),
        printed("spec")
    );
    // It validates, runs, and passes the schema.
    let o = strata().arg("validate").arg(&spec).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = strata()
        .args(["report", "--quiet"])
        .arg(&spec)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(tmp.path().join("reports/demo/index.html").exists());
    if let Some(got) = validate(
        &repo("schema/spec.schema.json"),
        std::slice::from_ref(&spec),
    ) {
        let err = &got[spec.display().to_string()];
        assert!(err.is_null(), "the starter fails the schema: {err}");
    }
    // Never over an existing spec; a name that is not a file name is refused.
    let o = new(&["demo"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists"));
    assert_eq!(std::fs::read_to_string(&spec).unwrap(), text);
    for bad in ["../escape", ".hidden", "a b"] {
        let o = new(&[bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("letters, digits"));
    }
    // The default model is GPT-2, quoted as YAML.
    let o = new(&["other"]);
    assert!(o.status.success());
    let text = std::fs::read_to_string(tmp.path().join("experiments/other.yaml")).unwrap();
    assert!(
        text.contains("model: {id: \"gpt2\", revision: main}"),
        "{text}"
    );
}
