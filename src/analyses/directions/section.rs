//! The directions result's columns, checks, sweep statistics, compare rule and report
//! section. A result holds one contrast (two classes) or one per class: each is checked,
//! followed and compared the same way, its statistics named `{label}.{column}` when
//! there are several.

use super::result::{Contrast, DirectionsResult};
use crate::analyses::columns::{self, Column, Values};
use crate::analyses::kind::{
    expect_known_labels, expect_len, Context, KindError, Scalars, Section,
};
use crate::charts::{option, per_layer_lines, ChartSpec};
use crate::compare::rules::{Comparer, Mismatch};
use crate::view::{fmt_num, fmt_opt, slug, Table};

fn stat(v: &[Option<f64>]) -> Values {
    Values::Stat(v.to_vec())
}

/// A contrast's statistics with one value per hidden state.
pub(super) const CONTRAST_COLUMNS: &[Column<Contrast>] = &[
    Column::new("r2", "held-out R²", |c| stat(&c.r2)),
    Column::new("heldout_cohen_d", "held-out d", |c| {
        stat(&c.heldout_cohen_d)
    }),
    Column::new("cohen_d", "Cohen's d", |c| stat(&c.cohen_d)),
    Column::new("diff_norm", "|Δμ|", |c| {
        Values::Stat(c.diff_norm.iter().map(|&x| Some(x)).collect())
    }),
    Column::new("fisher", "Fisher (LDA)", |c| stat(&c.fisher)),
    Column::new("lda_cos", "cos(LDA, Δμ)", |c| stat(&c.lda_cos)),
    Column::new("heldout_sse", "held-out SSE", |c| stat(&c.heldout_sse)),
    Column::new("consecutive_cos", "cos to previous", |c| {
        stat(&c.consecutive_cos)
    }),
];

/// The result's columns go through its contrasts (see [`contrasts`]).
pub(super) const COLUMNS: &[Column<DirectionsResult>] = &[];

/// The contrasts of a result, each with the prefix its statistics are named with.
pub(super) fn contrasts(o: &DirectionsResult) -> Vec<(String, &Contrast)> {
    match o.by_class.is_empty() {
        true => vec![(String::new(), &o.contrast)],
        false => o
            .by_class
            .iter()
            .map(|(label, c)| (format!("{label}."), c))
            .collect(),
    }
}

/// Checks a result read from a file: known states, one value per state in every column,
/// and one contrast for two classes or one per class for more.
pub(super) fn validate(o: &DirectionsResult, cx: &Context) -> Result<(), KindError> {
    expect_known_labels(&o.layers, cx.labels)?;
    let k = o.classes.len();
    let shape_ok = match k {
        2 => o.by_class.is_empty(),
        _ => k > 2 && o.by_class.keys().eq(o.classes.iter().map(|c| &c.label)),
    };
    if !shape_ok {
        return Err(KindError::Invalid(format!(
            "{k} classes with {} contrasts under by_class: two classes give one contrast at the top level, more give one per class under by_class",
            o.by_class.len()
        )));
    }
    for (prefix, c) in contrasts(o) {
        columns::validate(CONTRAST_COLUMNS, c, &o.layers)
            .map_err(|e| KindError::Invalid(format!("{prefix}{e}")))?;
        for (label, v) in &c.projection {
            expect_len(
                &format!("{prefix}projection.{label}"),
                v.len(),
                o.layers.len(),
            )?;
        }
        for (i, folds) in c.fold_sse.iter().enumerate() {
            expect_len(
                &format!("{prefix}fold_sse[{i}]"),
                folds.len(),
                o.folds.len(),
            )?;
        }
        expect_len(
            &format!("{prefix}fold_sse"),
            c.fold_sse.len(),
            o.layers.len(),
        )?;
    }
    Ok(())
}

/// Every contrast's statistics, for `strata sweep`.
pub(super) fn scalars(o: &DirectionsResult) -> Vec<Scalars> {
    contrasts(o)
        .into_iter()
        .flat_map(|(prefix, c)| {
            columns::scalars(CONTRAST_COLUMNS, c, &o.layers)
                .into_iter()
                .map(move |mut s| {
                    s.statistic = format!("{prefix}{}", s.statistic);
                    s
                })
        })
        .collect()
}

/// The same states, classes and folds, then every statistic under the tolerances.
pub(super) fn compare(
    base: &DirectionsResult,
    new: &DirectionsResult,
    c: &mut Comparer,
) -> Result<(), Mismatch> {
    c.same("hidden states", &base.layers, &new.layers)?;
    let labels = |o: &DirectionsResult| {
        o.classes
            .iter()
            .map(|c| c.label.clone())
            .collect::<Vec<_>>()
    };
    c.same("classes", &labels(base), &labels(new))?;
    c.same("folds", &base.folds.len(), &new.folds.len())?;
    for ((prefix, a), (_, b)) in contrasts(base).into_iter().zip(contrasts(new)) {
        for col in CONTRAST_COLUMNS {
            if let (Values::Stat(x), Values::Stat(y)) = ((col.get)(a), (col.get)(b)) {
                c.per_label(&format!("{prefix}{}", col.name), &base.layers, &x, &y);
            }
        }
    }
    Ok(())
}

/// The state where the held-out R² is highest, with it.
fn best(c: &Contrast) -> Option<(usize, f64)> {
    c.r2.iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i, v)))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
}

/// The report's section.
pub(super) fn section(o: &DirectionsResult, _: &Context) -> Section {
    let list = contrasts(o);
    let mut charts = Vec::new();
    let mut tables = vec![classes_table(o)];
    let mut notes = Vec::new();
    for (prefix, c) in &list {
        let name = contrast_name(o, prefix);
        charts.push(separation_chart(o, c, &name));
        tables.push(best_table(o, c, &name));
        if let Some((i, r2)) = best(c) {
            notes.push(format!(
                "{name}: linearly readable best at {} (held-out R² {}, held-out d {}).",
                o.layers[i],
                fmt_num(r2),
                fmt_opt(c.heldout_cohen_d[i])
            ));
        }
    }
    charts.push(consecutive_chart(o, &list));
    for (prefix, c) in &list {
        let caption = format!("{}, every selected hidden state", contrast_name(o, prefix));
        tables.push(columns::table(&caption, CONTRAST_COLUMNS, c, &o.layers));
    }
    if !o.ridge_needed.is_empty() {
        notes.push(format!(
            "The within-class covariance was singular at {}: LDA there leans on its ridge ({} of the mean variance).",
            o.ridge_needed.join(", "),
            fmt_num(o.ridge)
        ));
    }
    if o.nonfinite_tokens > 0 {
        notes.push(format!(
            "{} tokens had NaN or infinite values and were left out.",
            o.nonfinite_tokens
        ));
    }
    Section {
        heading: "Concept directions".into(),
        intro: format!(
            "Where the labelled classes are linearly separable, and along which direction: the difference of the class means, LDA, and a ridge probe (alpha {}) scored on {} held-out folds of the texts.",
            fmt_num(o.alpha),
            o.folds.len()
        ),
        notes,
        charts,
        tables,
        wide: false,
        collapsed: None,
    }
}

/// How a contrast is named: `b vs a` for two classes, `c vs rest` for more.
fn contrast_name(o: &DirectionsResult, prefix: &str) -> String {
    match prefix.strip_suffix('.') {
        Some(label) => format!("{label} vs rest"),
        None => format!(
            "{} vs {}",
            o.classes.get(1).map_or("", |c| c.label.as_str()),
            o.classes.first().map_or("", |c| c.label.as_str())
        ),
    }
}

/// Held-out R² and Cohen's d per state, the best state marked.
fn separation_chart(o: &DirectionsResult, c: &Contrast, name: &str) -> ChartSpec {
    let mut marked = vec![None; o.layers.len()];
    let sub = match best(c) {
        Some((i, r2)) => {
            marked[i] = Some(r2);
            format!("{name}; best: {} (R² {})", o.layers[i], fmt_num(r2))
        }
        None => name.to_string(),
    };
    let chart = per_layer_lines(
        "Linear readability per hidden state",
        &sub,
        &o.layers,
        &[
            ("held-out R²", &c.r2),
            ("held-out Cohen's d", &c.heldout_cohen_d),
            ("Cohen's d of Δμ", &c.cohen_d),
            ("best", &marked),
        ],
        "",
        false,
    );
    ChartSpec {
        title: format!("separation-{}", slug(name)),
        option: option(chart),
        height: 360,
    }
}

/// The cosine between consecutive states' differences of means, one line per contrast.
fn consecutive_chart(o: &DirectionsResult, list: &[(String, &Contrast)]) -> ChartSpec {
    let names: Vec<String> = list.iter().map(|(p, _)| contrast_name(o, p)).collect();
    let series: Vec<(&str, &[Option<f64>])> = names
        .iter()
        .zip(list)
        .map(|(n, (_, c))| (n.as_str(), c.consecutive_cos.as_slice()))
        .collect();
    let chart = per_layer_lines(
        "How the direction turns",
        "cosine between the difference of means here and at the previous selected state",
        &o.layers,
        &series,
        "cosine",
        false,
    );
    ChartSpec {
        title: "direction-turns".into(),
        option: option(chart),
        height: 320,
    }
}

/// The five states of highest held-out R².
fn best_table(o: &DirectionsResult, c: &Contrast, name: &str) -> Table {
    let mut order: Vec<usize> = (0..o.layers.len()).collect();
    let key = |i: usize| c.r2[i].unwrap_or(f64::NEG_INFINITY);
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    let rows = order
        .into_iter()
        .take(5)
        .map(|i| {
            vec![
                o.layers[i].clone(),
                fmt_opt(c.r2[i]),
                fmt_opt(c.heldout_cohen_d[i]),
                fmt_opt(c.cohen_d[i]),
                fmt_num(c.diff_norm[i]),
                fmt_opt(c.fisher[i]),
            ]
        })
        .collect();
    Table {
        caption: format!("{name}: the best hidden states by held-out R²"),
        headers: [
            "hidden state",
            "held-out R²",
            "held-out d",
            "Cohen's d",
            "|Δμ|",
            "Fisher (LDA)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        text_columns: vec![0],
    }
}

/// The classes and the folds.
fn classes_table(o: &DirectionsResult) -> Table {
    Table {
        caption: format!(
            "{} classes; folds of {} texts",
            o.classes.len(),
            o.folds
                .iter()
                .map(|f| f.texts.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        headers: ["label", "texts", "tokens"].map(String::from).to_vec(),
        rows: o
            .classes
            .iter()
            .map(|c| vec![c.label.clone(), c.texts.to_string(), c.tokens.to_string()])
            .collect(),
        text_columns: vec![0],
    }
}
