//! A kind's per-hidden-state columns, declared once: the list gives the checks of a result
//! read from a file, the report's table, the statistics `strata sweep` follows and the
//! metrics `strata compare` applies, so a new column is one line.

use super::kind::{expect_per_label, Scalars};
use crate::compare::rules::Comparer;
use crate::view::{fmt_opt, Table};

/// A column's values, one per hidden state.
pub enum Values {
    /// A count (tokens measured): shown whole, compared exactly, not followed by a sweep.
    Count(Vec<u64>),
    /// A statistic (`null` where undefined): shown in the report's number format, compared
    /// under the tolerances, followed by a sweep.
    Stat(Vec<Option<f64>>),
    /// Words (where a value sits): shown only, left-aligned.
    Text(Vec<String>),
    /// Numbers formatted their own way (a share in percent of something else): shown only.
    Shown(Vec<String>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Self::Count(v) => v.len(),
            Self::Stat(v) => v.len(),
            Self::Text(v) | Self::Shown(v) => v.len(),
        }
    }
}

/// One column of a kind's result `O`.
pub struct Column<O> {
    /// Its name in results.json, in `strata sweep` and in `strata compare`.
    pub name: &'static str,
    /// Its header in the report's table.
    pub header: &'static str,
    /// Its values.
    pub get: fn(&O) -> Values,
    /// Shown multiplied by this (100 for a share shown in percent).
    pub scale: f64,
}

impl<O> Column<O> {
    /// A column named `name` in files, headed `header` in the table.
    pub const fn new(name: &'static str, header: &'static str, get: fn(&O) -> Values) -> Self {
        Self {
            name,
            header,
            get,
            scale: 1.0,
        }
    }

    /// The same column shown in percent.
    pub const fn percent(self) -> Self {
        Self {
            scale: 100.0,
            ..self
        }
    }
}

/// Checks every column has one value per label.
pub fn validate<O>(columns: &[Column<O>], out: &O, labels: &[String]) -> Result<(), String> {
    for c in columns {
        let n = (c.get)(out).len();
        expect_per_label(c.name, &vec![(); n], labels)?;
    }
    Ok(())
}

/// The statistics, for `strata sweep`.
pub fn scalars<O>(columns: &[Column<O>], out: &O, labels: &[String]) -> Vec<Scalars> {
    columns
        .iter()
        .filter_map(|c| match (c.get)(out) {
            Values::Stat(v) => Some(Scalars::new(c.name, labels, v)),
            _ => None,
        })
        .collect()
}

/// The statistics under the tolerances, then the counts exactly.
pub fn compare<O>(columns: &[Column<O>], a: &O, b: &O, labels: &[String], c: &mut Comparer) {
    for col in columns {
        if let (Values::Stat(x), Values::Stat(y)) = ((col.get)(a), (col.get)(b)) {
            c.per_label(col.name, labels, &x, &y);
        }
    }
    let whole =
        |v: Vec<u64>| -> Vec<Option<f64>> { v.into_iter().map(|n| Some(n as f64)).collect() };
    for col in columns {
        if let (Values::Count(x), Values::Count(y)) = ((col.get)(a), (col.get)(b)) {
            c.per_label(col.name, labels, &whole(x), &whole(y));
        }
    }
}

/// The table: a row per hidden state, a column per declared column, words left-aligned.
pub fn table<O>(caption: &str, columns: &[Column<O>], out: &O, labels: &[String]) -> Table {
    let cells: Vec<Vec<String>> = columns
        .iter()
        .map(|c| match (c.get)(out) {
            Values::Count(v) => v.iter().map(u64::to_string).collect(),
            Values::Stat(v) => v.iter().map(|x| fmt_opt(x.map(|x| c.scale * x))).collect(),
            Values::Text(v) | Values::Shown(v) => v,
        })
        .collect();
    let text = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!((c.get)(out), Values::Text(_)))
        .map(|(i, _)| i + 1);
    Table {
        caption: caption.into(),
        headers: std::iter::once("hidden state".to_string())
            .chain(columns.iter().map(|c| c.header.to_string()))
            .collect(),
        rows: (0..labels.len())
            .map(|i| {
                std::iter::once(labels[i].clone())
                    .chain(cells.iter().map(|col| col[i].clone()))
                    .collect()
            })
            .collect(),
        text_columns: std::iter::once(0).chain(text).collect(),
    }
}
