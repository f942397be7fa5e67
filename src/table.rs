//! Tidy tables of a results.json or a sweep.json: one row per number, for pandas,
//! polars, R or a spreadsheet (`strata table`).
//!
//! Every row names its run (experiment, model id, revision, commit, spec sha256), its
//! analysis (index in the spec, kind, site) and the number itself: `metric`, the
//! `hidden_state` it belongs to, and `index`, its position in the result's arrays.
//!
//! - The statistics with one value per hidden state (each kind's `scalars`, what
//!   `strata sweep` follows) come first, `hidden_state` filled.
//! - Every other number of the analysis follows, found by walking its JSON: `metric` is
//!   the path of field names (`counts`, `grid.top1.prob`), `index` the array positions
//!   along it (`5`, `2,5`). A field holding one array or object per label (`counts[label]
//!   [bin]`) gives its first index as `hidden_state`. A field that is a per-hidden-state
//!   statistic is not repeated.
//! - Strings (tokens, text ids) are not numbers and stay in results.json; a `null`
//!   (a statistic undefined at a hidden state) is a row with no value.
//!
//! Floats keep every bit: the shortest representation that reads back to the same f64
//! in CSV and JSON lines, f64 in Parquet.

use std::sync::Arc;

use serde_json::Value;

/// One number of a results.json or sweep.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The experiment's name.
    pub experiment: String,
    /// The model's id (Hub repo or folder).
    pub model: String,
    /// The model's revision (`None`: a local folder).
    pub revision: Option<String>,
    /// The commit it resolved to.
    pub commit: Option<String>,
    /// sha256 of the spec file.
    pub spec_sha256: String,
    /// Index of the analysis in the spec.
    pub analysis: u64,
    /// The analysis' kind.
    pub kind: String,
    /// Where its vectors were read (`hidden`, `attn_out`, ...).
    pub site: String,
    /// The statistic, or the path of field names to the number.
    pub metric: String,
    /// The hidden state (or block) the number belongs to, when it has one.
    pub hidden_state: Option<String>,
    /// Positions in the arrays along `metric`'s path, comma-separated.
    pub index: Option<String>,
    /// The number (`None`: undefined).
    pub value: Option<f64>,
}

/// The columns, in order.
pub const COLUMNS: &[&str] = &[
    "experiment",
    "model",
    "revision",
    "commit",
    "spec_sha256",
    "analysis",
    "kind",
    "site",
    "metric",
    "hidden_state",
    "index",
    "value",
];

/// What a table is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet (a column per field; `value` a nullable f64).
    Parquet,
    /// One JSON object per line.
    Jsonl,
}

/// The identifying columns shared by every row of one run.
struct Run {
    experiment: String,
    model: String,
    revision: Option<String>,
    commit: Option<String>,
    spec_sha256: String,
}

impl Run {
    fn row(&self, analysis: usize, kind: &str, site: &str) -> Row {
        Row {
            experiment: self.experiment.clone(),
            model: self.model.clone(),
            revision: self.revision.clone(),
            commit: self.commit.clone(),
            spec_sha256: self.spec_sha256.clone(),
            analysis: analysis as u64,
            kind: kind.to_string(),
            site: site.to_string(),
            metric: String::new(),
            hidden_state: None,
            index: None,
            value: None,
        }
    }
}

/// Every number of a results.json, as rows.
pub fn results_rows(r: &crate::results::Results) -> Vec<Row> {
    let m = &r.provenance.model;
    let run = Run {
        experiment: r.name.clone(),
        model: m.id.clone(),
        revision: m.revision.clone(),
        commit: m.commit.clone(),
        spec_sha256: r.provenance.spec_sha256.clone(),
    };
    let mut rows = Vec::new();
    for (i, a) in r.analyses.iter().enumerate() {
        let site = a.site.to_string();
        let base = run.row(i, a.kind(), &site);
        let scalars = a.scalars();
        for s in &scalars {
            for (label, v) in s.labels.iter().zip(&s.values) {
                rows.push(Row {
                    metric: s.statistic.clone(),
                    hidden_state: Some(label.clone()),
                    value: *v,
                    ..base.clone()
                });
            }
        }
        let named: Vec<&str> = scalars.iter().map(|s| s.statistic.as_str()).collect();
        let json = serde_json::to_value(&a.result).unwrap_or(Value::Null);
        let Value::Object(fields) = json else {
            continue;
        };
        let labels: Vec<String> = fields
            .get("labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        for (key, v) in &fields {
            if key == "kind" || key == "labels" {
                continue;
            }
            for (hidden_state, v) in split_per_label(v, &labels) {
                walk(
                    v,
                    key,
                    &mut Vec::new(),
                    &named,
                    &mut |metric, index, value| {
                        rows.push(Row {
                            metric: metric.to_string(),
                            hidden_state: hidden_state.cloned(),
                            index: (!index.is_empty()).then(|| join(index)),
                            value,
                            ..base.clone()
                        })
                    },
                );
            }
        }
    }
    rows
}

/// A field's parts by hidden state: an array with one array or object per label (a
/// histogram's `counts[label][bin]`, `top[label][rank]`) is split, its first index
/// becoming `hidden_state`; any other field is one part with none.
fn split_per_label<'a>(v: &'a Value, labels: &'a [String]) -> Vec<(Option<&'a String>, &'a Value)> {
    match v {
        Value::Array(items)
            if !labels.is_empty()
                && items.len() == labels.len()
                && items.iter().all(|x| x.is_array() || x.is_object()) =>
        {
            labels.iter().map(Some).zip(items).collect()
        }
        _ => vec![(None, v)],
    }
}

fn join(index: &[usize]) -> String {
    index
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Receives a number's path, array positions and value.
type Emit<'a> = dyn FnMut(&str, &[usize], Option<f64>) + 'a;

/// Calls `emit` for every number (and `null`) under `v`, whose path is `path`, with its
/// array positions; skips the paths `named` already gave as per-hidden-state statistics
/// (`logit_lens.entropy` is the statistic `logit_lens_entropy`).
fn walk(v: &Value, path: &str, index: &mut Vec<usize>, named: &[&str], emit: &mut Emit) {
    if index.is_empty() && named.contains(&path.replace('.', "_").as_str()) {
        return;
    }
    match v {
        Value::Number(n) => emit(path, index, n.as_f64()),
        Value::Null => emit(path, index, None),
        Value::Bool(b) => emit(path, index, Some(f64::from(u8::from(*b)))),
        Value::String(_) => {}
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                index.push(i);
                walk(item, path, index, named, emit);
                index.pop();
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                walk(item, &format!("{path}.{key}"), index, named, emit);
            }
        }
    }
}

/// Every series of a sweep.json, one row per revision and hidden state.
pub fn sweep_rows(s: &crate::sweep::Sweep) -> Vec<Row> {
    let mut rows = Vec::new();
    for series in &s.series {
        for (rev, values) in s.revisions.iter().zip(&series.values) {
            let run = Run {
                experiment: s.name.clone(),
                model: s.model.clone(),
                revision: Some(rev.revision.clone()),
                commit: Some(rev.commit.clone()),
                spec_sha256: s.spec_sha256.clone(),
            };
            for (label, v) in series.labels.iter().zip(values) {
                rows.push(Row {
                    metric: series.statistic.clone(),
                    hidden_state: Some(label.clone()),
                    value: *v,
                    ..run.row(series.analysis, &series.kind, "")
                });
            }
        }
    }
    rows
}

/// A float as the shortest text that reads back to the same f64: a whole number (a
/// count) without a fraction, anything else as ryu writes it (via serde_json).
fn float(v: f64) -> String {
    let whole = v.fract() == 0.0 && v.abs() < 9.0e15 && !(v == 0.0 && v.is_sign_negative());
    if whole {
        return format!("{}", v as i64);
    }
    serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string())
}

impl Row {
    /// The row's fields as text, in [`COLUMNS`] order (`None`: empty).
    fn cells(&self) -> [Option<String>; 12] {
        [
            Some(self.experiment.clone()),
            Some(self.model.clone()),
            self.revision.clone(),
            self.commit.clone(),
            Some(self.spec_sha256.clone()),
            Some(self.analysis.to_string()),
            Some(self.kind.clone()),
            Some(self.site.clone()).filter(|s| !s.is_empty()),
            Some(self.metric.clone()),
            self.hidden_state.clone(),
            self.index.clone(),
            self.value.map(float),
        ]
    }
}

/// A CSV cell: quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The rows as CSV with a header; an empty cell is a missing value.
pub fn to_csv(rows: &[Row]) -> Vec<u8> {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for r in rows {
        let cells: Vec<String> = r
            .cells()
            .iter()
            .map(|c| c.as_deref().map_or(String::new(), csv_cell))
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out.into_bytes()
}

/// The rows as JSON lines: `analysis` a number, `value` a number or `null`.
pub fn to_jsonl(rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rows {
        let mut o = serde_json::Map::new();
        for (name, cell) in COLUMNS.iter().zip(r.cells()) {
            let v = match (*name, cell) {
                ("analysis", _) => Value::from(r.analysis),
                ("value", _) => r
                    .value
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number),
                (_, Some(s)) => Value::String(s),
                (_, None) => Value::Null,
            };
            o.insert(name.to_string(), v);
        }
        out.extend(serde_json::to_vec(&Value::Object(o)).unwrap_or_default());
        out.push(b'\n');
    }
    out
}

/// The rows as one Parquet file: strings as UTF-8 byte arrays (nullable where a cell can
/// be empty), `analysis` an int64, `value` a nullable double. No timestamps or writer
/// versions vary between runs, so the bytes are the same every time.
pub fn to_parquet(rows: &[Row]) -> Result<Vec<u8>, ParquetWriteError> {
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let schema = "message strata_table {
        required binary experiment (UTF8); required binary model (UTF8);
        optional binary revision (UTF8); optional binary commit (UTF8);
        required binary spec_sha256 (UTF8); required int64 analysis;
        required binary kind (UTF8); optional binary site (UTF8);
        required binary metric (UTF8); optional binary hidden_state (UTF8);
        optional binary index (UTF8); optional double value;
    }";
    let e = ParquetWriteError;
    let schema = Arc::new(parse_message_type(schema).map_err(e)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_created_by(format!("strata {}", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let mut buf = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut buf, schema, props).map_err(e)?;
    let mut group = writer.next_row_group().map_err(e)?;
    let cells: Vec<[Option<String>; 12]> = rows.iter().map(Row::cells).collect();
    for c in 0..COLUMNS.len() {
        let Some(mut col) = group.next_column().map_err(e)? else {
            break;
        };
        let present: Vec<i16> = cells.iter().map(|r| i16::from(r[c].is_some())).collect();
        let optional = ![0, 1, 4, 5, 6, 8].contains(&c);
        let levels = optional.then_some(present.as_slice());
        match COLUMNS[c] {
            "analysis" => {
                let v: Vec<i64> = rows.iter().map(|r| r.analysis as i64).collect();
                col.typed::<Int64Type>().write_batch(&v, None, None)
            }
            "value" => {
                let v: Vec<f64> = rows.iter().filter_map(|r| r.value).collect();
                col.typed::<DoubleType>().write_batch(&v, levels, None)
            }
            _ => {
                let v: Vec<ByteArray> = cells
                    .iter()
                    .filter_map(|r| r[c].as_deref())
                    .map(|s| ByteArray::from(s.as_bytes().to_vec()))
                    .collect();
                col.typed::<ByteArrayType>().write_batch(&v, levels, None)
            }
        }
        .map_err(e)?;
        col.close().map_err(e)?;
    }
    group.close().map_err(e)?;
    writer.close().map_err(e)?;
    Ok(buf)
}

/// The Parquet writer's refusal (it has none for these rows; a damaged build would).
#[derive(Debug, thiserror::Error)]
#[error("writing Parquet: {0}")]
pub struct ParquetWriteError(parquet::errors::ParquetError);

/// The rows in `format`.
pub fn encode(rows: &[Row], format: Format) -> Result<Vec<u8>, ParquetWriteError> {
    match format {
        Format::Csv => Ok(to_csv(rows)),
        Format::Jsonl => Ok(to_jsonl(rows)),
        Format::Parquet => to_parquet(rows),
    }
}
