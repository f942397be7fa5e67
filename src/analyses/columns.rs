//! A kind's per-hidden-state columns, declared once: the list gives the checks of a result
//! read from a file, the report's table, the statistics `strata sweep` follows and the
//! metrics `strata compare` applies, so a new column is one line.

use serde::{Deserialize, Serialize};

use super::error::{expect_len, KindError};
use crate::compare::rules::Comparer;
use crate::view::{fmt_opt, Table};

/// A statistic with one value per hidden state: what `strata sweep` follows across
/// revisions of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scalars {
    /// The statistic's name within its analysis (`mean`, `kurtosis`, `variance`).
    pub statistic: String,
    /// Hidden-state labels.
    pub labels: Vec<String>,
    /// One value per label; `null` where the statistic is undefined.
    pub values: Vec<Option<f64>>,
}

impl Scalars {
    /// A statistic of `values` over `labels`.
    pub fn new(statistic: &str, labels: &[String], values: Vec<Option<f64>>) -> Self {
        Self {
            statistic: statistic.to_string(),
            labels: labels.to_vec(),
            values,
        }
    }
}

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
pub fn validate<O>(columns: &[Column<O>], out: &O, labels: &[String]) -> Result<(), KindError> {
    for c in columns {
        expect_len(
            &format!("{} (one entry per hidden state)", c.name),
            (c.get)(out).len(),
            labels.len(),
        )?;
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
    let mut text_columns = vec![0];
    let mut cells: Vec<Vec<String>> = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        cells.push(match (c.get)(out) {
            Values::Count(v) => v.iter().map(u64::to_string).collect(),
            Values::Stat(v) => v.iter().map(|x| fmt_opt(x.map(|x| c.scale * x))).collect(),
            Values::Shown(v) => v,
            Values::Text(v) => {
                text_columns.push(i + 1);
                v
            }
        });
    }
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
        text_columns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::rules::{Comparison, Tolerances};

    struct Toy {
        n: Vec<u64>,
        mean: Vec<Option<f64>>,
        share: Vec<Option<f64>>,
        at: Vec<String>,
    }

    const COLUMNS: &[Column<Toy>] = &[
        Column::new("n", "tokens", |t| Values::Count(t.n.clone())),
        Column::new("mean", "mean", |t| Values::Stat(t.mean.clone())),
        Column::new("share", "share (%)", |t: &Toy| {
            Values::Stat(t.share.clone())
        })
        .percent(),
        Column::new("at", "where", |t| Values::Text(t.at.clone())),
    ];

    fn toy(mean0: f64) -> Toy {
        Toy {
            n: vec![3, 4],
            mean: vec![Some(mean0), None],
            share: vec![Some(0.25), Some(0.5)],
            at: vec!["a <b>".into(), "c".into()],
        }
    }

    #[test]
    fn one_list_gives_the_table_the_checks_the_statistics_and_the_metrics() {
        let labels = ["emb".to_string(), "h.0".to_string()];
        let t = table("Caption", COLUMNS, &toy(1.5), &labels);
        assert_eq!(
            t.headers,
            ["hidden state", "tokens", "mean", "share (%)", "where"]
        );
        assert_eq!(t.rows[0], ["emb", "3", "1.5", "25", "a <b>"]);
        assert_eq!(t.rows[1], ["h.0", "4", "—", "50", "c"]);
        assert_eq!(t.text_columns, [0, 4]);

        assert!(validate(COLUMNS, &toy(1.0), &labels).is_ok());
        let e = validate(COLUMNS, &toy(1.0), &labels[..1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "n (one entry per hidden state) has 2 entries, expected 1"
        );

        let s = scalars(COLUMNS, &toy(1.0), &labels);
        let names: Vec<&str> = s.iter().map(|s| s.statistic.as_str()).collect();
        assert_eq!(
            names,
            ["mean", "share"],
            "counts and words are not followed"
        );
        assert_eq!(
            s[1].values,
            [Some(0.25), Some(0.5)],
            "shown in percent, kept as is"
        );

        let mut out = Comparison {
            tolerances: Tolerances::default(),
            metrics: Vec::new(),
            histograms: Vec::new(),
            token_changes: Vec::new(),
            views: Vec::new(),
            provenance: Vec::new(),
            paired: Vec::new(),
            bootstrap: (100, 0),
            missing_texts: Vec::new(),
            skipped: Vec::new(),
        };
        let mut c = Comparer::new(0, "toy", Tolerances::default(), &mut out);
        compare(COLUMNS, &toy(1.0), &toy(2.0), &labels, &mut c);
        let got: Vec<(&str, usize)> = out
            .metrics
            .iter()
            .map(|m| (m.metric.as_str(), m.violations))
            .collect();
        assert_eq!(
            got,
            [("mean", 1), ("share", 0), ("n", 0)],
            "statistics, then counts"
        );
    }
}
