//! The project kind's setup (the vectors file grouped into vectors and checked against
//! the model), its finish, its checks, sweep statistics, compare rule and report section.

use std::collections::BTreeMap;

use super::types::{
    ClassSums, Project, ProjectResult, ProjectState, Projection, VectorResult, VectorState,
};
use crate::analyses::columns::Scalars;
use crate::analyses::kind::{expect_known_labels, expect_len, KindError, Section, Setup};
use crate::charts::{histogram_frame, option, per_layer_lines, r, title, ChartSpec};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::view::{fmt_num, fmt_opt, slug, Table};

/// The file's tensors grouped by vector name: per name, its one vector for every state
/// (`NAME`) and its vectors by state label (`NAME.{state}`).
type Grouped<'a> = BTreeMap<String, (Option<&'a [f32]>, BTreeMap<String, &'a [f32]>)>;

fn group<'a>(tensors: &'a BTreeMap<String, Vec<f32>>, labels: &[String]) -> Grouped<'a> {
    let mut out = Grouped::new();
    for (name, v) in tensors {
        let state = labels
            .iter()
            .filter(|l| name.len() > l.len() + 1 && name.ends_with(&format!(".{l}")))
            .max_by_key(|l| l.len());
        match state {
            Some(l) => {
                let base = name[..name.len() - l.len() - 1].to_string();
                out.entry(base)
                    .or_default()
                    .1
                    .insert(l.clone(), v.as_slice());
            }
            None => out.entry(name.clone()).or_default().0 = Some(v.as_slice()),
        }
    }
    out
}

/// The empty state: the file's vectors at the selected states, each checked.
pub(super) fn start(p: &Project, at: &Setup) -> Result<ProjectState, SpecError> {
    let shown = p.vectors.display().to_string();
    let vectors = match at.assets.vectors(&p.vectors) {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(at.invalid("vectors", &shown, e.to_string())),
        None => {
            return Err(at.invalid(
                "vectors",
                &shown,
                "the run's setup did not read this file: read it before the analyses start",
            ))
        }
    };
    let companion = match &p.model {
        None => None,
        Some(model) => Some(companion(at, model)?),
    };
    let grouped = group(&vectors.tensors, at.labels);
    let names: Vec<String> = match &p.names {
        Some(names) => names.clone(),
        None => grouped.keys().cloned().collect(),
    };
    let mut states = Vec::new();
    for name in names {
        let Some(entry) = grouped.get(&name) else {
            let have: Vec<&str> = grouped.keys().map(String::as_str).collect();
            return Err(at.invalid(
                "names",
                &name,
                format!(
                    "{shown} has no vector {name:?}; it has: {}",
                    have.join(", ")
                ),
            ));
        };
        states.push(vector_state(at, &shown, &name, entry)?);
    }
    Ok(ProjectState {
        file: shown,
        sha256: vectors.sha256.clone(),
        layers: at.selected.to_vec(),
        labels: at.names(at.selected),
        k: p.k,
        bins: p.bins,
        companion,
        vectors: states,
    })
}

/// The second model, checked to have the model's shape.
fn companion(
    at: &Setup,
    model: &crate::spec::model::ModelSpec,
) -> Result<(usize, String), SpecError> {
    let (c, id, other) = at.companion(model);
    if let Some(b) = other {
        let a = at.info;
        if (a.hidden_size, a.n_layers) != (b.hidden_size, b.n_layers) {
            return Err(at.invalid(
                "model",
                format!("{id} ({} layers, {} dims)", b.n_layers, b.hidden_size),
                format!(
                    "project compares a model with a version of it of the same shape: {} layers of {} dims",
                    a.n_layers, a.hidden_size
                ),
            ));
        }
    }
    Ok((c, id))
}

/// One vector at the selected states it has, each of the model's width and not zero.
fn vector_state(
    at: &Setup,
    file: &str,
    name: &str,
    (global, by_state): &(Option<&[f32]>, BTreeMap<String, &[f32]>),
) -> Result<VectorState, SpecError> {
    let d = at.info.hidden_size;
    let mut v = VectorState {
        name: name.to_string(),
        states: Vec::new(),
        norms: Vec::new(),
        units: Vec::new(),
        all: Vec::new(),
        by_label: BTreeMap::new(),
        top: Vec::new(),
        zero: Vec::new(),
    };
    for (li, &layer) in at.selected.iter().enumerate() {
        let label = &at.labels[layer];
        let Some(x) = by_state.get(label).copied().or(*global) else {
            continue;
        };
        let tensor = match by_state.contains_key(label) {
            true => format!("{name}.{label}"),
            false => name.to_string(),
        };
        if x.len() != d {
            return Err(at.invalid(
                "vectors",
                file,
                format!(
                    "vector {tensor:?} has {} values but the model's vectors at {} have {d}: project vectors of this model's width",
                    x.len(),
                    at.site
                ),
            ));
        }
        let norm = x.iter().map(|&a| a as f64 * a as f64).sum::<f64>().sqrt();
        if norm == 0.0 && by_state.contains_key(label) {
            // A state where the direction vanished (a difference of means of identical
            // rows): nothing to project onto there, noted in the result.
            v.zero.push(li);
            continue;
        }
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(at.invalid(
                "vectors",
                file,
                format!("vector {tensor:?} has norm {norm}: it has no direction to project onto"),
            ));
        }
        v.states.push(li);
        v.norms.push(norm);
        v.units.push(x.iter().map(|&a| a as f64 / norm).collect());
        v.all.push(ClassSums::default());
        v.top.push(Vec::new());
    }
    if v.states.is_empty() {
        let have: Vec<&str> = by_state.keys().map(String::as_str).collect();
        return Err(at.invalid(
            "vectors",
            file,
            format!(
                "vector {name:?} has states {} but the analysis reads {}: select them in `layers`",
                have.join(", "),
                at.names(at.selected).join(", ")
            ),
        ));
    }
    Ok(v)
}

/// The result of the sums.
pub(super) fn finish(s: ProjectState) -> ProjectResult {
    let vectors = s
        .vectors
        .iter()
        .map(|v| {
            let edges: Vec<Vec<f64>> = v.all.iter().map(|c| edges(c, s.bins)).collect();
            VectorResult {
                name: v.name.clone(),
                states: v.states.iter().map(|&i| s.labels[i].clone()).collect(),
                zero: v.zero.iter().map(|&i| s.labels[i].clone()).collect(),
                norm: v.norms.clone(),
                all: projection(&v.all, &edges),
                by_label: v
                    .by_label
                    .iter()
                    .map(|(l, c)| (l.clone(), projection(c, &edges)))
                    .collect(),
                top: v
                    .top
                    .iter()
                    .map(|t| t.iter().map(|(_, x)| x.clone()).collect())
                    .collect(),
                edges,
            }
        })
        .collect();
    ProjectResult {
        file: s.file,
        sha256: s.sha256,
        companion: s.companion.map(|(_, id)| id),
        vectors,
    }
}

/// `bins + 1` equal-width edges from the lowest to the highest projection.
fn edges(c: &ClassSums, bins: usize) -> Vec<f64> {
    let (Some(lo), Some(hi)) = (c.sketch.quantile(0.0), c.sketch.quantile(1.0)) else {
        return Vec::new();
    };
    let hi = if hi > lo { hi } else { lo + 1.0 };
    (0..=bins)
        .map(|b| lo + (hi - lo) * b as f64 / bins as f64)
        .collect()
}

/// One class's figures at every state.
fn projection(per_state: &[ClassSums], edges: &[Vec<f64>]) -> Projection {
    let stat = |c: &ClassSums| -> (Option<f64>, Option<f64>) {
        if c.n == 0 {
            return (None, None);
        }
        let n = c.n as f64;
        let mean = c.sums.get(0) / n;
        let var = (c.sums.get(1) / n - mean * mean).max(0.0);
        (Some(mean), Some(var.sqrt()))
    };
    let companion = per_state.iter().any(|c| c.companion.is_some());
    let theirs: Vec<Option<f64>> = per_state
        .iter()
        .map(|c| {
            c.companion
                .as_ref()
                .filter(|(n, _)| *n > 0)
                .map(|(n, s)| s.get(0) / *n as f64)
        })
        .collect();
    let mean: Vec<Option<f64>> = per_state.iter().map(|c| stat(c).0).collect();
    let shift = mean
        .iter()
        .zip(&theirs)
        .map(|(a, b)| Some(b.as_ref()? - a.as_ref()?))
        .collect();
    Projection {
        tokens: per_state.iter().map(|c| c.n).collect(),
        std: per_state.iter().map(|c| stat(c).1).collect(),
        counts: per_state
            .iter()
            .zip(edges)
            .map(|(c, e)| rebin(c, e))
            .collect(),
        mean,
        companion_mean: companion.then_some(theirs),
        shift: companion.then_some(shift),
    }
}

/// The sketch's buckets counted into the bins of `edges` (the last bin closed).
fn rebin(c: &ClassSums, edges: &[f64]) -> Vec<u64> {
    let bins = edges.len().saturating_sub(1);
    let mut counts = vec![0u64; bins];
    if bins == 0 {
        return counts;
    }
    let (lo, hi) = (edges[0], edges[bins]);
    for (x, n) in c.sketch.buckets() {
        let b = (((x - lo) / (hi - lo)) * bins as f64).floor();
        counts[(b.max(0.0) as usize).min(bins - 1)] += n;
    }
    counts
}

/// Checks a result read from a file: known states, and one value per state everywhere.
pub(super) fn validate(
    o: &ProjectResult,
    cx: &crate::analyses::kind::Context,
) -> Result<(), KindError> {
    for v in &o.vectors {
        expect_known_labels(&v.states, cx.labels)?;
        let n = v.states.len();
        let at = |what: &str| format!("vector {}: {what}", v.name);
        expect_len(&at("norm"), v.norm.len(), n)?;
        expect_len(&at("edges"), v.edges.len(), n)?;
        expect_len(&at("top"), v.top.len(), n)?;
        for (label, p) in
            std::iter::once(("all", &v.all)).chain(v.by_label.iter().map(|(l, p)| (l.as_str(), p)))
        {
            let at = |what: &str| format!("vector {} {label}: {what}", v.name);
            expect_len(&at("tokens"), p.tokens.len(), n)?;
            expect_len(&at("mean"), p.mean.len(), n)?;
            expect_len(&at("std"), p.std.len(), n)?;
            expect_len(&at("counts"), p.counts.len(), n)?;
            for (i, c) in p.counts.iter().enumerate() {
                expect_len(&at("counts per bin"), c.len() + 1, v.edges[i].len().max(1))?;
            }
        }
    }
    Ok(())
}

/// A statistic's name, the states it has a value for, and its values.
type Statistic<'a> = (String, &'a [String], Vec<Option<f64>>);

/// Every vector's and class's mean projections (and shifts), named `NAME.mean`,
/// `NAME.LABEL.mean`, `NAME.LABEL.shift`.
fn statistics(o: &ProjectResult) -> Vec<Statistic<'_>> {
    let mut out = Vec::new();
    for v in &o.vectors {
        let classes = std::iter::once((String::new(), &v.all))
            .chain(v.by_label.iter().map(|(l, p)| (format!("{l}."), p)));
        for (prefix, p) in classes {
            out.push((
                format!("{}.{prefix}mean", v.name),
                &v.states[..],
                p.mean.clone(),
            ));
            out.push((
                format!("{}.{prefix}std", v.name),
                &v.states[..],
                p.std.clone(),
            ));
            if let Some(shift) = &p.shift {
                out.push((
                    format!("{}.{prefix}shift", v.name),
                    &v.states[..],
                    shift.clone(),
                ));
            }
        }
    }
    out
}

pub(super) fn scalars(o: &ProjectResult) -> Vec<Scalars> {
    statistics(o)
        .into_iter()
        .map(|(name, labels, values)| Scalars::new(&name, labels, values))
        .collect()
}

/// The same vectors file, vectors and states, then every mean under the tolerances.
pub(super) fn compare(
    base: &ProjectResult,
    new: &ProjectResult,
    c: &mut Comparer,
) -> Result<(), Mismatch> {
    c.same("vectors file", &base.sha256, &new.sha256)?;
    let shape = |o: &ProjectResult| {
        o.vectors
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    v.states.clone(),
                    v.by_label.keys().cloned().collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    c.same("vectors, states and labels", &shape(base), &shape(new))?;
    for ((name, labels, a), (_, _, b)) in statistics(base).into_iter().zip(statistics(new)) {
        c.per_label(&name, labels, &a, &b);
    }
    Ok(())
}

/// The report: per vector, the mean projection per state by class (and the second
/// model's), the histogram at the state where the classes lie furthest apart, and the
/// tokens that project highest there.
pub(super) fn section(o: &ProjectResult) -> Section {
    let mut charts = Vec::new();
    let mut tables = Vec::new();
    let mut notes = Vec::new();
    for v in &o.vectors {
        charts.push(means_chart(v));
        let i = widest(v);
        if !v.edges[i].is_empty() {
            charts.push(histogram_chart(v, i));
        }
        tables.push(means_table(v));
        if !v.zero.is_empty() {
            notes.push(format!(
                "{}: the vector is zero at {}, which have nothing to project onto.",
                v.name,
                v.zero.join(", ")
            ));
        }
        tables.push(top_table(v, i));
        if let Some(shift) = &v.all.shift {
            let (j, s) = shift
                .iter()
                .enumerate()
                .filter_map(|(j, s)| s.map(|s| (j, s)))
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .unwrap_or((0, 0.0));
            notes.push(format!(
                "{}: the second model moves furthest along it at {} (mean projection shifts by {}).",
                v.name,
                v.states.get(j).map_or("", String::as_str),
                fmt_num(s)
            ));
        }
    }
    Section {
        heading: "Projections onto vectors".into(),
        intro: format!(
            "Every token's hidden state projected onto the unit direction of each vector of {} (sha256 {}…){}.",
            o.file,
            &o.sha256[..o.sha256.len().min(12)],
            match &o.companion {
                Some(id) => format!(", for this model and for {id}"),
                None => String::new(),
            }
        ),
        notes,
        charts,
        tables,
        wide: false,
        collapsed: None,
    }
}

/// The state where the labelled classes' means lie furthest apart (the last state
/// without labels).
fn widest(v: &VectorResult) -> usize {
    let spread = |i: usize| {
        let means: Vec<f64> = v.by_label.values().filter_map(|p| p.mean[i]).collect();
        let lo = means.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if means.len() > 1 {
            hi - lo
        } else {
            0.0
        }
    };
    (0..v.states.len())
        .rev()
        .max_by(|&a, &b| spread(a).total_cmp(&spread(b)))
        .unwrap_or(0)
}

fn classes(v: &VectorResult) -> Vec<(String, &Projection)> {
    let mut out: Vec<(String, &Projection)> =
        v.by_label.iter().map(|(l, p)| (l.clone(), p)).collect();
    if out.is_empty() {
        out.push(("all tokens".into(), &v.all));
    }
    out
}

fn means_chart(v: &VectorResult) -> ChartSpec {
    let list = classes(v);
    let theirs: Vec<(String, &Vec<Option<f64>>)> = list
        .iter()
        .filter_map(|(l, p)| {
            p.companion_mean
                .as_ref()
                .map(|m| (format!("{l} (second model)"), m))
        })
        .collect();
    let series: Vec<(&str, &[Option<f64>])> = list
        .iter()
        .map(|(l, p)| (l.as_str(), p.mean.as_slice()))
        .chain(theirs.iter().map(|(l, m)| (l.as_str(), m.as_slice())))
        .collect();
    let chart = per_layer_lines(
        &format!("Mean projection onto {}", v.name),
        "per class, onto the unit vector",
        &v.states,
        &series,
        "projection",
        false,
    );
    ChartSpec {
        title: format!("means-{}", slug(&v.name)),
        option: option(chart),
        height: 340,
    }
}

fn histogram_chart(v: &VectorResult, i: usize) -> ChartSpec {
    let edges = &v.edges[i];
    let mut chart = histogram_frame(
        title(
            &format!("Projections onto {} at {}", v.name, v.states[i]),
            "tokens per bin, by class",
        ),
        30,
        edges,
    );
    for (label, p) in classes(v) {
        let data: Vec<Vec<f64>> = p.counts[i]
            .iter()
            .enumerate()
            .map(|(b, &c)| vec![r(edges[b]), c as f64])
            .collect();
        chart = chart.series(
            charming::series::Line::new()
                .name(label)
                .show_symbol(false)
                .step(charming::element::Step::Start)
                .data(data),
        );
    }
    ChartSpec {
        title: format!("histogram-{}", slug(&v.name)),
        option: option(chart),
        height: 340,
    }
}

fn means_table(v: &VectorResult) -> Table {
    let list = classes(v);
    let mut headers = vec!["hidden state".to_string(), "|v|".to_string()];
    for (l, p) in &list {
        headers.push(format!("{l} mean"));
        headers.push(format!("{l} std"));
        if p.shift.is_some() {
            headers.push(format!("{l} shift"));
        }
    }
    let rows = (0..v.states.len())
        .map(|i| {
            let mut row = vec![v.states[i].clone(), fmt_num(v.norm[i])];
            for (_, p) in &list {
                row.push(fmt_opt(p.mean[i]));
                row.push(fmt_opt(p.std[i]));
                if let Some(s) = &p.shift {
                    row.push(fmt_opt(s[i]));
                }
            }
            row
        })
        .collect();
    Table {
        caption: format!("{}: mean projection per hidden state and class", v.name),
        headers,
        rows,
        text_columns: vec![0],
    }
}

fn top_table(v: &VectorResult, i: usize) -> Table {
    Table {
        caption: format!(
            "{}: the tokens that project highest at {}",
            v.name, v.states[i]
        ),
        headers: ["projection", "text", "label", "position", "token"]
            .map(String::from)
            .to_vec(),
        rows: v.top[i]
            .iter()
            .map(|t| {
                vec![
                    fmt_num(t.value),
                    t.text.clone(),
                    t.label.clone().unwrap_or_default(),
                    t.token_index.to_string(),
                    t.token.clone(),
                ]
            })
            .collect(),
        text_columns: vec![1, 2, 4],
    }
}
