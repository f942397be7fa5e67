//! The JSON Schemas of the experiment spec and of results.json, derived from the types
//! that read them (their `///` docs become descriptions, their defaults and ranges are
//! stated), for editors (`# yaml-language-server: $schema=...`) and for tools in other
//! languages. `schema/spec.schema.json` and `schema/results.schema.json` are these,
//! committed; a test fails when they are stale.

use serde_json::Value;

/// Where the committed schemas live, relative to the repository.
pub const SPEC_SCHEMA_PATH: &str = "schema/spec.schema.json";

/// The schema of an experiment spec (the YAML, read as JSON's data model).
pub fn spec() -> Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<crate::spec::SpecFile>();
    let mut v = schema.to_value();
    v["title"] = Value::from("strata experiment spec");
    // An analysis is its kind's parameters (one of them, by `kind`) beside `site`: no
    // other key is evaluated, so a misspelt parameter is flagged as serde refuses it.
    v["$defs"]["AnalysisSpec"]["unevaluatedProperties"] = Value::Bool(false);
    tidy(&mut v);
    v
}

/// Rustdoc's links (`` [`Site`] ``) read as code in an editor's tooltip.
fn tidy(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                match x {
                    Value::String(text) if k == "description" => *text = unlink(text),
                    _ => tidy(x),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// `` [`x`] `` becomes `` `x` ``, and a path's last part is kept (`crate::a::B` -> `B`).
fn unlink(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("[`") {
        let Some(len) = rest[start + 2..].find("`]") else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        out.push('`');
        out.push_str(name.rsplit("::").next().unwrap_or(name));
        out.push('`');
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    out
}

/// A schema as its file holds it: pretty JSON with a final newline.
pub fn to_bytes(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The schema of results.json (what `strata report` writes and `render`, `compare`,
/// `figures` and `table` read).
pub fn results() -> Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<crate::results::Results>();
    let mut v = schema.to_value();
    v["title"] = Value::from("strata results.json");
    // A result is its kind's fields beside `site`; nothing else.
    v["$defs"]["Analysed"]["unevaluatedProperties"] = Value::Bool(false);
    tidy(&mut v);
    v
}
