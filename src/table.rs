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
//! - Named columns say what the array positions are, where a kind declares it
//!   ([`crate::analyses::axes`]): `head` and `block` (attention), `expert` (router),
//!   `feature` (SAE), `neuron`, `bin` (histograms), `class` (labelled corpora). Empty
//!   where a number has none; `index` keeps every position regardless.
//!
//! Floats keep every bit: the shortest representation that reads back to the same f64
//! in CSV and JSON lines, f64 in Parquet.

use std::sync::Arc;

use serde_json::Value;

use crate::analyses::axes::{block_of, Axes, Axis, ID_FIELDS};

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
    /// What its positions are: head, block, expert, feature, neuron, bin, class.
    pub named: Named,
}

/// The named columns of one number: what its array positions (or its path, or the list
/// item it sits in) are. `None` where the number has no such position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named {
    /// The attention head.
    pub head: Option<u64>,
    /// The block (from a hidden-state label such as `attn.3`).
    pub block: Option<u64>,
    /// The expert of a mixture of experts.
    pub expert: Option<u64>,
    /// The SAE or transcoder feature.
    pub feature: Option<u64>,
    /// The MLP neuron.
    pub neuron: Option<u64>,
    /// The histogram bin (for an edge, the bin it opens).
    pub bin: Option<u64>,
    /// The class label of a labelled corpus.
    pub class: Option<String>,
}

impl Named {
    fn set(&mut self, axis: Axis, at: u64) {
        match axis {
            Axis::Head => self.head = Some(at),
            Axis::Expert => self.expert = Some(at),
            Axis::Feature => self.feature = Some(at),
            Axis::Neuron => self.neuron = Some(at),
            Axis::Bin => self.bin = Some(at),
            Axis::Class | Axis::Other => {}
        }
    }

    /// The integer columns, in [`COLUMNS`] order.
    fn ints(&self) -> [Option<u64>; 6] {
        [
            self.head,
            self.block,
            self.expert,
            self.feature,
            self.neuron,
            self.bin,
        ]
    }
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
    "head",
    "block",
    "expert",
    "feature",
    "neuron",
    "bin",
    "class",
];

/// The named columns that hold integers.
const INT_COLUMNS: &[&str] = &["head", "block", "expert", "feature", "neuron", "bin"];

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
            named: Named::default(),
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
        analysis_rows(&run, i, a, &mut rows);
    }
    rows
}

/// One analysis' rows: its per-hidden-state statistics, then every other number.
fn analysis_rows(run: &Run, i: usize, a: &crate::analyses::Analysed, rows: &mut Vec<Row>) {
    let base = run.row(i, a.kind(), &a.site.to_string());
    let axes = a.axes();
    let at_label = |label: Option<&String>| Named {
        block: label
            .filter(|_| axes.label_is_block)
            .and_then(|l| block_of(l)),
        ..Named::default()
    };
    let scalars = a.scalars();
    for s in &scalars {
        for (label, v) in s.labels.iter().zip(&s.values) {
            rows.push(Row {
                metric: s.statistic.clone(),
                hidden_state: Some(label.clone()),
                value: *v,
                named: at_label(Some(label)),
                ..base.clone()
            });
        }
    }
    let named: Vec<&str> = scalars.iter().map(|s| s.statistic.as_str()).collect();
    let json = serde_json::to_value(&a.result).unwrap_or(Value::Null);
    let Value::Object(fields) = json else {
        return;
    };
    let labels: Vec<String> = fields
        .get("labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    let walker = Walker {
        axes,
        named: &named,
    };
    for (key, v) in &fields {
        if key == "kind" || key == "labels" {
            continue;
        }
        for (hidden_state, v) in split_per_label(v, &labels) {
            let mut emit = |metric: &str, index: &[usize], named: Named, value| {
                rows.push(Row {
                    metric: metric.to_string(),
                    hidden_state: hidden_state.cloned(),
                    index: (!index.is_empty()).then(|| join(index)),
                    value,
                    named,
                    ..base.clone()
                })
            };
            walker.walk(v, key, &mut Vec::new(), &at_label(hidden_state), &mut emit);
        }
    }
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

/// Receives a number's path, array positions, named columns and value.
type Emit<'a> = dyn FnMut(&str, &[usize], Named, Option<f64>) + 'a;

/// Walks one analysis' JSON for its numbers.
struct Walker<'a> {
    /// What the kind's array positions are.
    axes: Axes,
    /// The paths already given as per-hidden-state statistics (`logit_lens.entropy` is
    /// the statistic `logit_lens_entropy`), which are skipped.
    named: &'a [&'a str],
}

impl Walker<'_> {
    /// Calls `emit` for every number (and `null`) under `v`, whose path is `path`, with
    /// its array positions and the named columns `outer` and its path give it.
    fn walk(&self, v: &Value, path: &str, index: &mut Vec<usize>, outer: &Named, emit: &mut Emit) {
        if index.is_empty() && self.named.contains(&path.replace('.', "_").as_str()) {
            return;
        }
        let leaf = |value| (self.leaf(path, index, outer), value);
        let (named, value) = match v {
            Value::Number(n) => leaf(n.as_f64()),
            Value::Null => leaf(None),
            Value::Bool(b) => leaf(Some(f64::from(u8::from(*b)))),
            Value::String(_) => return,
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let inner = self.item(path, index.len(), item, outer);
                    index.push(i);
                    self.walk(item, path, index, &inner, emit);
                    index.pop();
                }
                return;
            }
            Value::Object(fields) => {
                for (key, item) in fields {
                    self.walk(item, &format!("{path}.{key}"), index, outer, emit);
                }
                return;
            }
        };
        emit(path, index, named, value);
    }

    /// The named columns inside list item `item` at position `depth` of `path`: the ids
    /// it carries, and its `label` where the kind says the position is a class.
    fn item(&self, path: &str, depth: usize, item: &Value, outer: &Named) -> Named {
        let mut named = outer.clone();
        let Value::Object(fields) = item else {
            return named;
        };
        for (field, axis) in ID_FIELDS {
            if let Some(id) = fields.get(*field).and_then(Value::as_u64) {
                named.set(*axis, id);
            }
        }
        if self.axes.for_metric(path).0.get(depth) == Some(&Axis::Class) {
            if let Some(label) = fields.get("label").and_then(Value::as_str) {
                named.class = Some(label.to_string());
            }
        }
        named
    }

    /// The named columns of a number at `path` and `index`: `outer`'s, then the kind's
    /// meaning of each position, then the class its path names.
    fn leaf(&self, path: &str, index: &[usize], outer: &Named) -> Named {
        let mut named = outer.clone();
        let (axes, class) = self.axes.for_metric(path);
        for (axis, at) in axes.iter().zip(index) {
            named.set(*axis, *at as u64);
        }
        if let Some(class) = class {
            named.class = Some(class.to_string());
        }
        named
    }
}

/// Every series of a sweep.json, one row per revision and hidden state.
pub fn sweep_rows(s: &crate::sweep::Sweep) -> Vec<Row> {
    let mut rows = Vec::new();
    for series in &s.series {
        let axes = crate::analyses::kind_axes(&series.kind);
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
                    named: Named {
                        block: axes.label_is_block.then(|| block_of(label)).flatten(),
                        ..Named::default()
                    },
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
    fn cells(&self) -> Vec<Option<String>> {
        let mut cells = vec![
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
        ];
        cells.extend(self.named.ints().iter().map(|i| i.map(|i| i.to_string())));
        cells.push(self.named.class.clone());
        cells
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
                (name, Some(s)) if INT_COLUMNS.contains(&name) => {
                    s.parse::<u64>().map_or(Value::Null, Value::from)
                }
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
/// be empty), `analysis` an int64, `value` a nullable double, the named integer columns
/// nullable int64s. No timestamps or writer versions vary between runs, so the bytes are
/// the same every time.
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
        optional int64 head; optional int64 block; optional int64 expert;
        optional int64 feature; optional int64 neuron; optional int64 bin;
        optional binary class (UTF8);
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
    let cells: Vec<Vec<Option<String>>> = rows.iter().map(Row::cells).collect();
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
            name if INT_COLUMNS.contains(&name) => {
                let v: Vec<i64> = cells
                    .iter()
                    .filter_map(|r| r[c].as_deref()?.parse().ok())
                    .collect();
                col.typed::<Int64Type>().write_batch(&v, levels, None)
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
