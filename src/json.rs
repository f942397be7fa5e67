//! How strata writes JSON files (results.json, sweep.json): indented objects, arrays of
//! plain values on one line, f32 values in their shortest decimals.

use serde::Serialize;

/// JSON with a final newline: objects indented, arrays of plain values on one line
/// (readable and diffable without a number per line). Same value, same bytes.
pub fn pretty_json<T: Serialize>(value: &T) -> Vec<u8> {
    let value = serde_json::to_value(value).unwrap_or_default();
    let mut out = String::new();
    write_json(&value, 0, &mut out);
    out.push('\n');
    out.into_bytes()
}

/// Checks a file's `schema_version` before its fields are read, so an old or future file
/// gets a clear message rather than a field error: `reads` names what this strata reads
/// (`version 1`), `file` the kind of file, `fix` what to do.
pub fn check_schema_version(
    v: &serde_json::Value,
    expected: u32,
    reads: &'static str,
    file: &'static str,
    fix: &'static str,
) -> Result<(), VersionError> {
    match v.get("schema_version").and_then(|s| s.as_u64()) {
        Some(n) if n == expected as u64 => Ok(()),
        Some(found) => Err(VersionError::Unsupported {
            found,
            reads,
            expected,
            fix,
        }),
        None => Err(VersionError::Missing(file)),
    }
}

/// A strata JSON file of another schema version, or none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Written by an older or newer strata.
    #[error(
        "schema_version {found} is not supported (this strata reads {reads} {expected}): {fix}"
    )]
    Unsupported {
        /// The file's version.
        found: u64,
        /// What this strata reads (`version`).
        reads: &'static str,
        /// The version it reads.
        expected: u32,
        /// What to do.
        fix: &'static str,
    },
    /// No `schema_version`: the file is something else.
    #[error("no schema_version: not a strata {0}")]
    Missing(&'static str),
}

/// f32 values written with the shortest decimals that read back as the same f32
/// (`0.54871857`, not the f64 widening `0.5487185716629028`).
pub fn short_f32_rows<S: serde::Serializer>(rows: &[Vec<f32>], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(rows.len()))?;
    for row in rows {
        let short: Vec<f64> = row
            .iter()
            .map(|x| x.to_string().parse::<f64>().unwrap_or(*x as f64))
            .collect();
        seq.serialize_element(&short)?;
    }
    seq.end()
}

/// Writes `v` indented by `depth` levels; arrays of scalars stay on one line.
fn write_json(v: &serde_json::Value, depth: usize, out: &mut String) {
    use serde_json::Value;
    let pad = |d: usize| "  ".repeat(d);
    match v {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (k, val)) in map.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_json(val, depth + 1, out);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
        Value::Array(items) if items.iter().any(|x| x.is_object() || x.is_array()) => {
            out.push_str("[\n");
            for (i, val) in items.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                write_json(val, depth + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push(']');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, val) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&val.to_string());
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
