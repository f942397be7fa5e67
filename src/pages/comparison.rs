//! The comparison page: the verdict of `strata compare`, every metric's worst deviation,
//! each kind's difference charts, the texts whose tokens changed, and what changed in
//! provenance.

use serde::Serialize;

use super::shell::{chart_views, Assets, RenderError, SectionView};
use crate::compare::rules::{Comparison, DiffView};
use crate::results::Results;
use crate::view::{fmt_num, Table};

/// What the comparison page shows.
#[derive(Serialize)]
struct ComparisonView<'a> {
    title: &'a str,
    base_label: String,
    new_label: String,
    tolerances: String,
    pass: bool,
    verdict: String,
    metrics: Table,
    histograms: Table,
    paired: Table,
    missing: Vec<String>,
    sections: Vec<SectionView>,
    tokens: Table,
    provenance: Table,
}

/// Renders the self-contained diff report of a comparison, with the same shell, styles
/// and chart code as the results page.
pub fn render(
    base: &Results,
    new: &Results,
    c: &Comparison,
    assets: &Assets,
) -> Result<String, RenderError> {
    let t = c.tolerances;
    let pass = c.pass();
    let view = ComparisonView {
        title: &base.title,
        base_label: describe(base),
        new_label: describe(new),
        tolerances: format!(
            "rtol {:e}, atol {:e}, hist_tv {}",
            t.rtol, t.atol, t.hist_tv
        ),
        pass,
        verdict: if pass {
            "PASS: within tolerance".into()
        } else {
            format!("FAIL: moved {}", c.moved().join(", "))
        },
        metrics: metrics_table(c),
        histograms: histograms_table(c),
        paired: paired_table(c),
        missing: c
            .missing_texts
            .iter()
            .cloned()
            .chain(c.skipped.iter().map(|m| format!("not compared: {m}")))
            .collect(),
        sections: c
            .views
            .iter()
            .enumerate()
            .map(|(j, v)| diff_section(j, v, &base.name))
            .collect(),
        tokens: tokens_table(c),
        provenance: provenance_table(c),
    };
    super::shell::render("comparison.html.j2", &view, assets)
}

/// `MODEL @ COMMIT, strata VERSION`: which run a side of the comparison is.
fn describe(r: &Results) -> String {
    let m = &r.provenance.model;
    let commit = m
        .commit
        .as_deref()
        .map(|c| &c[..c.len().min(12)])
        .unwrap_or("local");
    format!(
        "{} @ {commit}, strata {}",
        m.id, r.provenance.strata_version
    )
}

/// One kind's difference charts, saved as `NAME-diff-TITLE`.
fn diff_section(j: usize, v: &DiffView, name: &str) -> SectionView {
    SectionView {
        kind: "diff",
        anchor: format!("{}-{}", v.kind, v.analysis),
        heading: v.heading.clone(),
        intro: v.intro.clone(),
        notes: vec![],
        charts: chart_views(
            &format!("diff-{j}"),
            &format!("{name}-diff"),
            v.charts.clone(),
        ),
        wide: false,
        tables: vec![],
        collapsed: None,
    }
}

/// Every metric's worst deviation.
fn metrics_table(c: &Comparison) -> Table {
    Table {
        text_columns: vec![0, 1, 5],
        caption: "Metrics".into(),
        headers: [
            "analysis",
            "metric",
            "values",
            "max |diff|",
            "max rel",
            "worst at",
            "outside",
        ]
        .map(String::from)
        .to_vec(),
        rows: c
            .metrics
            .iter()
            .map(|m| {
                vec![
                    format!("#{} {}", m.analysis, m.kind),
                    m.metric.clone(),
                    m.n.to_string(),
                    fmt_num(m.worst_abs),
                    fmt_num(m.worst_rel),
                    m.worst_at.clone(),
                    m.violations.to_string(),
                ]
            })
            .collect(),
    }
}

/// Every histogram's total variation distance.
fn histograms_table(c: &Comparison) -> Table {
    Table {
        text_columns: vec![0, 1, 3],
        caption: format!(
            "Histograms (total variation, limit {})",
            c.tolerances.hist_tv
        ),
        headers: ["analysis", "hidden state", "total variation", "verdict"]
            .map(String::from)
            .to_vec(),
        rows: c
            .histograms
            .iter()
            .map(|h| {
                vec![
                    format!("#{}", h.analysis),
                    h.label.clone(),
                    fmt_num(h.tv),
                    if h.pass { "ok".into() } else { "FAIL".into() },
                ]
            })
            .collect(),
    }
}

/// The per-text metrics paired by text id, with their intervals and verdicts.
fn paired_table(c: &Comparison) -> Table {
    let show = |v: Option<f64>| v.map_or("-".into(), fmt_num);
    Table {
        text_columns: vec![0, 1, 6, 7],
        caption: format!(
            "Paired by text id: mean of new − base per text, 95% bootstrap interval over texts ({} resamples)",
            c.bootstrap.0
        ),
        headers: ["analysis", "metric", "texts", "mean difference", "interval", "better / worse", "verdict", "in one result only"]
            .map(String::from)
            .to_vec(),
        rows: c
            .paired
            .iter()
            .map(|p| {
                let only: Vec<String> = p
                    .only_base
                    .iter()
                    .map(|id| format!("{id} (base)"))
                    .chain(p.only_new.iter().map(|id| format!("{id} (new)")))
                    .collect();
                vec![
                    format!("#{} {}", p.analysis, p.kind),
                    p.metric.clone(),
                    p.paired.texts.to_string(),
                    show(p.paired.mean),
                    format!("[{}, {}]", show(p.paired.low), show(p.paired.high)),
                    format!("{} / {}", p.paired.below, p.paired.above),
                    p.verdict.to_string(),
                    only.join(", "),
                ]
            })
            .collect(),
    }
}

/// The texts whose token ids changed.
fn tokens_table(c: &Comparison) -> Table {
    Table {
        text_columns: vec![0],
        caption: "Texts whose token ids changed".into(),
        headers: ["text", "tokens (base → new)", "first difference"]
            .map(String::from)
            .to_vec(),
        rows: c
            .token_changes
            .iter()
            .map(|t| {
                vec![
                    t.text.clone(),
                    format!("{} → {}", t.n_tokens.0, t.n_tokens.1),
                    t.first_difference.to_string(),
                ]
            })
            .collect(),
    }
}

/// The provenance rows that differ.
fn provenance_table(c: &Comparison) -> Table {
    Table {
        text_columns: vec![0, 1, 2],
        caption: "Changed".into(),
        headers: ["field", "base", "new"].map(String::from).to_vec(),
        rows: c
            .provenance
            .iter()
            .map(|p| vec![p.field.clone(), p.base.clone(), p.new.clone()])
            .collect(),
    }
}
