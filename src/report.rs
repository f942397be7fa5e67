//! results.json -> one self-contained HTML page: a view model with every number already
//! formatted, rendered by minijinja templates (strict undefined, HTML auto-escaping), with
//! ECharts inlined from the npm package at build time. Renders to a String; the caller
//! writes it (atomically).

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::analyses::Section;
use crate::charts::{self, ChartSpec};
use crate::results::{AnalysisResult, Results};

/// ECharts, inlined into every report: the release shipped in `templates/vendor/echarts/`
/// (its sha256 is checked by build.rs).
pub const ECHARTS_JS: &str = include_str!("../templates/vendor/echarts/echarts.min.js");
/// ECharts' licence and notice, shown in every report.
pub const ECHARTS_LICENSE: &str = concat!(
    include_str!("../templates/vendor/echarts/LICENSE"),
    "\n\n",
    include_str!("../templates/vendor/echarts/NOTICE")
);
/// The ECharts version inlined.
pub const ECHARTS_VERSION: &str = env!("STRATA_ECHARTS_VERSION");

/// The page's own templates; each analysis kind brings its section partial
/// (`sections/KIND.html.j2`, see [`crate::analyses::TEMPLATES`]).
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html.j2", include_str!("../templates/base.html.j2")),
    (
        "compare.html.j2",
        include_str!("../templates/compare.html.j2"),
    ),
    (
        "page_style.html.j2",
        include_str!("../templates/page_style.html.j2"),
    ),
    (
        "page_script.html.j2",
        include_str!("../templates/page_script.html.j2"),
    ),
    (
        "macros.html.j2",
        include_str!("../templates/macros.html.j2"),
    ),
    ("sweep.html.j2", include_str!("../templates/sweep.html.j2")),
];

/// Why a report could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template failed (a bug: templates are tested).
    #[error("rendering the report: {0:#}")]
    Template(minijinja::Error),
}

// By hand rather than `#[from]`: the message quotes minijinja's error, so it is not also
// the `source()` (an error chain prints each cause once).
impl From<minijinja::Error> for RenderError {
    fn from(e: minijinja::Error) -> Self {
        Self::Template(e)
    }
}

/// The script assets a page inlines; tests substitute a stub for ECharts.
pub struct Assets<'a> {
    /// ECharts' source.
    pub echarts_js: &'a str,
    /// Its licence text.
    pub echarts_license: &'a str,
    /// Its version.
    pub echarts_version: &'a str,
}

impl Default for Assets<'static> {
    fn default() -> Self {
        Self {
            echarts_js: ECHARTS_JS,
            echarts_license: ECHARTS_LICENSE,
            echarts_version: ECHARTS_VERSION,
        }
    }
}

/// A chart on the page.
#[derive(Serialize)]
struct ChartView {
    /// DOM id.
    id: String,
    /// File name for saved images.
    file: String,
    /// Height in px.
    height: u32,
    /// The ECharts option (embedded with `tojson`).
    option: serde_json::Value,
}

/// A table with pre-formatted cells.
#[derive(Serialize, Default)]
pub struct Table {
    /// Caption above the table.
    pub caption: String,
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows of formatted cells.
    pub rows: Vec<Vec<String>>,
    /// Columns of text (left-aligned); the rest are numbers (right-aligned).
    pub text_columns: Vec<usize>,
}

/// One analysis on the page.
#[derive(Serialize)]
struct SectionView {
    kind: &'static str,
    anchor: String,
    heading: String,
    intro: String,
    notes: Vec<String>,
    charts: Vec<ChartView>,
    tables: Vec<Table>,
}

/// Everything the templates see.
#[derive(Serialize)]
struct ReportView<'a> {
    title: &'a str,
    name: &'a str,
    subtitle: String,
    sections: Vec<SectionView>,
    texts: Table,
    /// The texts' token counts as a bar chart (more than one text).
    text_lengths: Vec<ChartView>,
    provenance: Vec<(String, String)>,
    echarts_js: &'a str,
    echarts_license: &'a str,
    echarts_version: &'a str,
    strata_version: &'a str,
}

/// Numbers as a report shows them: 6 significant digits, scientific when far from 1.
pub fn fmt_num(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if (1e-3..1e6).contains(&a) {
        let decimals = (5 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{x:.5e}")
    }
}

/// An optional number as [`fmt_num`] writes it, `—` when undefined.
pub fn fmt_opt(x: Option<f64>) -> String {
    x.map(fmt_num).unwrap_or_else(|| "—".into())
}

/// A square matrix as a table with labelled rows and columns.
pub fn matrix_table(
    caption: &str,
    labels: &[String],
    cell: &dyn Fn(usize, usize) -> String,
) -> Table {
    Table {
        text_columns: vec![0],
        caption: caption.into(),
        headers: std::iter::once(String::new())
            .chain(labels.iter().cloned())
            .collect(),
        rows: (0..labels.len())
            .map(|i| {
                std::iter::once(labels[i].clone())
                    .chain((0..labels.len()).map(|j| cell(i, j)))
                    .collect()
            })
            .collect(),
    }
}

/// Each distinct item with its count, most frequent first, ties in item order.
pub fn by_frequency<K: Ord>(items: impl Iterator<Item = K>) -> Vec<(K, usize)> {
    let mut counts: std::collections::BTreeMap<K, usize> = Default::default();
    for k in items {
        *counts.entry(k).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    // Stable: equal counts keep the map's item order.
    v.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    v
}

fn section(i: usize, a: &AnalysisResult, results: &Results) -> SectionView {
    let Section {
        heading,
        intro,
        notes,
        charts,
        tables,
    } = a.section(results, crate::analyses::Medium::Page);
    SectionView {
        kind: a.kind(),
        anchor: format!("{}-{i}", a.kind()),
        heading,
        intro,
        notes,
        charts: chart_views(&format!("chart-{i}"), &results.name, charts),
        tables,
    }
}

fn environment() -> Result<Environment<'static>, RenderError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    for (name, src) in TEMPLATES {
        env.add_template(name, src)?;
    }
    for (kind, src) in crate::analyses::TEMPLATES {
        env.add_template_owned(format!("sections/{kind}.html.j2"), *src)?;
    }
    Ok(env)
}

fn chart_views(prefix: &str, file_prefix: &str, specs: Vec<ChartSpec>) -> Vec<ChartView> {
    specs
        .into_iter()
        .enumerate()
        .map(
            |(
                c,
                ChartSpec {
                    title,
                    option,
                    height,
                },
            )| ChartView {
                id: format!("{prefix}-{c}"),
                file: format!("{file_prefix}-{title}"),
                height,
                option,
            },
        )
        .collect()
}

/// Texts listed in the report's table; the rest are counted, and charted by length.
const TEXTS_LISTED: usize = 40;

/// The first [`TEXTS_LISTED`] texts (id, token count, the start of the text), under a
/// caption that counts them all: a corpus of thousands does not make a page of thousands
/// of rows.
fn texts_table(results: &Results) -> Table {
    let (corpus, texts) = (&results.corpus, &results.texts);
    let listed = texts.len().min(TEXTS_LISTED);
    let caption = if corpus.texts > listed {
        format!(
            "{} texts, {} tokens: the first {listed} listed, {} more not",
            corpus.texts,
            corpus.tokens,
            corpus.texts - listed
        )
    } else {
        format!("{} text(s), {} tokens", corpus.texts, corpus.tokens)
    };
    let row = |t: &crate::results::TextRecord| {
        let start: String = t.tokens.iter().take(12).map(String::as_str).collect();
        let start = if t.tokens.len() > 12 {
            format!("{start}…")
        } else {
            start
        };
        vec![t.id.clone(), t.n_tokens.to_string(), start]
    };
    Table {
        text_columns: vec![0, 2],
        caption,
        headers: ["id", "tokens", "start"].map(String::from).to_vec(),
        rows: texts.iter().take(TEXTS_LISTED).map(row).collect(),
    }
}

/// How many texts have how many tokens, in at most 30 equal bins (none for one text).
fn text_length_chart(corpus: &crate::results::CorpusSummary) -> Vec<ChartView> {
    use charming::component::{Axis, Grid};
    use charming::element::{AxisType, NameLocation, Tooltip, Trigger};
    let (Some(first), Some(last)) = (corpus.lengths.first(), corpus.lengths.last()) else {
        return Vec::new();
    };
    if corpus.texts < 2 {
        return Vec::new();
    }
    let (lo, hi) = (first[0] as usize, last[0] as usize);
    let width = (hi - lo + 1).div_ceil(30).max(1);
    let mut counts = vec![0u64; (hi - lo) / width + 1];
    for &[len, n] in &corpus.lengths {
        counts[(len as usize - lo) / width] += n;
    }
    let bins: Vec<String> = (0..counts.len())
        .map(|b| match width {
            1 => (lo + b).to_string(),
            _ => format!("{}-{}", lo + b * width, lo + (b + 1) * width - 1),
        })
        .collect();
    let chart = charming::Chart::new()
        .title(charts::title("Token counts of the texts", ""))
        .tooltip(Tooltip::new().trigger(Trigger::Axis))
        .grid(Grid::new().top(50).bottom(50).left(60).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name("Tokens")
                .name_location(NameLocation::Middle)
                .name_gap(28)
                .data(bins),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name("Texts").min(0))
        .series(
            charming::series::Bar::new()
                .name("texts")
                .data(counts.iter().map(|&c| c as f64).collect::<Vec<_>>()),
        );
    chart_views(
        "texts",
        "texts",
        vec![ChartSpec {
            title: "token-counts".into(),
            option: charts::option(chart),
            height: 300,
        }],
    )
}

/// Renders a report page from results alone.
pub fn render(results: &Results, assets: &Assets) -> Result<String, RenderError> {
    let env = environment()?;
    let p = &results.provenance;
    let m = &p.model;
    let mut provenance = vec![
        ("model".to_string(), m.id.clone()),
        ("source".to_string(), m.source.clone()),
        (
            "revision".to_string(),
            m.revision.clone().unwrap_or_else(|| "—".into()),
        ),
        (
            "commit".to_string(),
            m.commit.clone().unwrap_or_else(|| "—".into()),
        ),
        (
            "architecture".to_string(),
            format!(
                "{} ({} layers, {} dims){}",
                results.model.architecture,
                results.model.n_layers,
                results.model.hidden_size,
                results
                    .model
                    .quantization
                    .as_deref()
                    .map(|q| format!(", GGUF {q}"))
                    .unwrap_or_default()
            ),
        ),
        ("config.json sha256".to_string(), m.config_sha256.clone()),
    ];
    for (f, h) in &m.weights_sha256 {
        provenance.push((format!("{f} sha256"), h.clone()));
    }
    for (f, h) in &m.tokenizer_sha256 {
        provenance.push((format!("{f} sha256"), h.clone()));
    }
    for (i, c) in p.companions.iter().enumerate() {
        let name = format!("second model {}", i + 1);
        provenance.push((
            name.clone(),
            format!(
                "{} ({}{})",
                c.model.id,
                c.architecture,
                c.quantization
                    .as_deref()
                    .map(|q| format!(", GGUF {q}"))
                    .unwrap_or_default()
            ),
        ));
        if let Some(commit) = &c.model.commit {
            provenance.push((format!("{name} commit"), commit.clone()));
        }
        for (f, h) in &c.model.weights_sha256 {
            provenance.push((format!("{name}: {f} sha256"), h.clone()));
        }
    }
    provenance.push(("spec sha256".into(), p.spec_sha256.clone()));
    if let Some(c) = &p.corpus_sha256 {
        provenance.push(("corpus sha256".into(), c.clone()));
    }
    if let Some(d) = &p.dataset {
        provenance.push((
            "dataset".into(),
            format!("{} (config {}, split {})", d.id, d.config, d.split),
        ));
        provenance.push((
            "dataset commit".into(),
            format!("{} ({})", d.commit, d.revision),
        ));
        for (f, h) in &d.files_sha256 {
            provenance.push((format!("dataset {f} sha256"), h.clone()));
        }
    }
    provenance.extend([
        (
            "strata".to_string(),
            format!("{} ({})", p.strata_version, p.strata_commit),
        ),
        ("candle".to_string(), p.candle_version.clone()),
        (
            "numerics".to_string(),
            format!("{} on {}", p.dtype, p.device),
        ),
        ("seed".to_string(), results.settings.seed.to_string()),
        (
            "first token".to_string(),
            if results.settings.exclude_first_token {
                "excluded from analyses".into()
            } else {
                "included".into()
            },
        ),
    ]);
    let texts = texts_table(results);
    let text_lengths = text_length_chart(&results.corpus);
    let view = ReportView {
        title: &results.title,
        name: &results.name,
        subtitle: format!(
            "{} ({}{}) · {} text(s), {} tokens · {} hidden states",
            results.provenance.model.id,
            results.model.architecture,
            results
                .model
                .quantization
                .as_deref()
                .map(|q| format!(", GGUF {q}"))
                .unwrap_or_default(),
            results.corpus.texts,
            results.corpus.tokens,
            results.model.labels.len()
        ),
        sections: results
            .analyses
            .iter()
            .enumerate()
            .map(|(i, a)| section(i, a, results))
            .collect(),
        texts,
        text_lengths,
        provenance,
        echarts_js: assets.echarts_js,
        echarts_license: assets.echarts_license,
        echarts_version: assets.echarts_version,
        strata_version: crate::VERSION,
    };
    Ok(env
        .get_template("base.html.j2")?
        .render(minijinja::value::Serde(&view))?)
}

/// What the comparison page sees.
#[derive(Serialize)]
struct CompareView<'a> {
    title: &'a str,
    base_label: String,
    new_label: String,
    tolerances: String,
    pass: bool,
    verdict: String,
    metrics: Table,
    histograms: Table,
    sections: Vec<SectionView>,
    tokens: Table,
    provenance: Table,
    echarts_js: &'a str,
    echarts_license: &'a str,
    echarts_version: &'a str,
    strata_version: &'a str,
}

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

/// Renders the self-contained diff report of a comparison, with the same templates,
/// styles and chart code as the main report.
pub fn render_comparison(
    base: &Results,
    new: &Results,
    c: &crate::compare::Comparison,
    assets: &Assets,
) -> Result<String, RenderError> {
    let env = environment()?;
    let t = c.tolerances;
    let sections: Vec<SectionView> = c
        .views
        .iter()
        .enumerate()
        .map(|(j, v)| SectionView {
            kind: "diff",
            anchor: format!("{}-{}", v.kind, v.analysis),
            heading: v.heading.clone(),
            intro: v.intro.clone(),
            notes: vec![],
            charts: chart_views(
                &format!("diff-{j}"),
                &format!("{}-diff", base.name),
                v.charts.clone(),
            ),
            tables: vec![],
        })
        .collect();
    let metrics = Table {
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
    };
    let histograms = Table {
        text_columns: vec![0, 1, 3],
        caption: format!("Histograms (total variation, limit {})", t.hist_tv),
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
    };
    let tokens = Table {
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
    };
    let provenance = Table {
        text_columns: vec![0, 1, 2],
        caption: "Changed".into(),
        headers: ["field", "base", "new"].map(String::from).to_vec(),
        rows: c
            .provenance
            .iter()
            .map(|p| vec![p.field.clone(), p.base.clone(), p.new.clone()])
            .collect(),
    };
    let pass = c.pass();
    let view = CompareView {
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
        metrics,
        histograms,
        sections,
        tokens,
        provenance,
        echarts_js: assets.echarts_js,
        echarts_license: assets.echarts_license,
        echarts_version: assets.echarts_version,
        strata_version: crate::VERSION,
    };
    Ok(env
        .get_template("compare.html.j2")?
        .render(minijinja::value::Serde(&view))?)
}

/// A revision on the sweep page, linked to its own report.
#[derive(Serialize)]
struct RevisionView {
    revision: String,
    commit: String,
    href: String,
}

/// An analysis' statistics on the sweep page.
#[derive(Serialize)]
struct SweepGroup {
    anchor: String,
    heading: String,
    charts: Vec<ChartView>,
}

/// A statistic the sweep page's heatmap can show.
#[derive(Serialize)]
struct HeatmapChoice {
    /// The id of the script element holding its option.
    id: String,
    name: String,
    option: serde_json::Value,
}

/// What the sweep page sees.
#[derive(Serialize)]
struct SweepView<'a> {
    title: &'a str,
    subtitle: String,
    revisions: Vec<RevisionView>,
    steps: Table,
    moved: Table,
    heatmap: Vec<ChartView>,
    choices: Vec<HeatmapChoice>,
    groups: Vec<SweepGroup>,
    spec_sha256: &'a str,
    echarts_js: &'a str,
    echarts_license: &'a str,
    echarts_version: &'a str,
    strata_version: &'a str,
}

/// Renders the sweep page: each statistic across revisions, a hidden state x revision
/// heatmap of a chosen one, and how each revision moved from the one before.
pub fn render_sweep(sweep: &crate::sweep::Sweep, assets: &Assets) -> Result<String, RenderError> {
    let env = environment()?;
    let names = sweep.revision_names();
    let groups = sweep_groups(sweep, &names);
    let choices: Vec<HeatmapChoice> = sweep
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| HeatmapChoice {
            id: format!("heatmap-choice-{i}"),
            name: s.name(),
            option: s.heatmap(&names).option,
        })
        .collect();
    let heatmap = sweep
        .series
        .first()
        .map(|s| chart_views("heatmap", &sweep.name, vec![s.heatmap(&names)]))
        .unwrap_or_default();
    let view = SweepView {
        title: &sweep.title,
        subtitle: format!(
            "{} · {} revision(s) · {} statistic(s)",
            sweep.model,
            sweep.revisions.len(),
            sweep.series.len()
        ),
        revisions: sweep
            .revisions
            .iter()
            .map(|r| RevisionView {
                revision: r.revision.clone(),
                commit: r.commit.clone(),
                href: format!("{}/index.html", r.folder),
            })
            .collect(),
        steps: steps_table(sweep),
        moved: moved_table(sweep),
        heatmap,
        choices,
        groups,
        spec_sha256: &sweep.spec_sha256,
        echarts_js: assets.echarts_js,
        echarts_license: assets.echarts_license,
        echarts_version: assets.echarts_version,
        strata_version: crate::VERSION,
    };
    Ok(env
        .get_template("sweep.html.j2")?
        .render(minijinja::value::Serde(&view))?)
}

/// The line charts of every statistic, one group per analysis (its statistics' series
/// are consecutive in sweep.json).
fn sweep_groups(sweep: &crate::sweep::Sweep, revisions: &[String]) -> Vec<SweepGroup> {
    let mut grouped: Vec<(String, String, Vec<ChartSpec>)> = Vec::new();
    for s in &sweep.series {
        let anchor = format!("{}-{}", s.kind, s.analysis);
        if grouped.last().is_none_or(|g| g.0 != anchor) {
            let heading = format!("{} (analysis #{})", s.kind, s.analysis);
            grouped.push((anchor, heading, Vec::new()));
        }
        if let Some(g) = grouped.last_mut() {
            g.2.push(s.lines(revisions));
        }
    }
    grouped
        .into_iter()
        .enumerate()
        .map(|(i, (anchor, heading, specs))| SweepGroup {
            anchor,
            heading,
            charts: chart_views(&format!("sweep-{i}"), &sweep.name, specs),
        })
        .collect()
}

/// One row per pair of consecutive revisions: the verdict and what moved.
fn steps_table(sweep: &crate::sweep::Sweep) -> Table {
    let t = sweep.tolerances;
    Table {
        caption: format!(
            "Each revision against the one before (rtol {:e}, atol {:e}, hist_tv {})",
            t.rtol, t.atol, t.hist_tv
        ),
        headers: ["from", "to", "verdict", "moved", "largest relative change"]
            .map(String::from)
            .to_vec(),
        text_columns: vec![0, 1, 2, 3],
        rows: sweep
            .steps
            .iter()
            .map(|s| {
                let verdict = match (&s.error, s.pass) {
                    (Some(e), _) => format!("not comparable: {e}"),
                    (None, true) => "within tolerance".into(),
                    (None, false) if s.token_changes > 0 => {
                        format!("moved; token ids changed in {} text(s)", s.token_changes)
                    }
                    (None, false) => "moved".into(),
                };
                vec![
                    s.from.clone(),
                    s.to.clone(),
                    verdict,
                    s.moved.join(", "),
                    s.metrics
                        .first()
                        .map(|m| format!("{} ({} #{})", fmt_num(m.worst_rel), m.metric, m.analysis))
                        .unwrap_or_else(|| "—".into()),
                ]
            })
            .collect(),
    }
}

/// Every metric outside tolerance at every step.
fn moved_table(sweep: &crate::sweep::Sweep) -> Table {
    Table {
        caption: "Metrics outside tolerance".into(),
        headers: [
            "step",
            "analysis",
            "metric",
            "outside",
            "largest relative change",
            "at",
        ]
        .map(String::from)
        .to_vec(),
        text_columns: vec![0, 1, 2, 5],
        rows: sweep
            .steps
            .iter()
            .flat_map(|s| {
                s.metrics.iter().map(move |m| {
                    vec![
                        format!("{} → {}", s.from, s.to),
                        format!("#{} {}", m.analysis, m.kind),
                        m.metric.clone(),
                        format!("{} of {}", m.violations, m.n),
                        fmt_num(m.worst_rel),
                        m.worst_at.clone(),
                    ]
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::{by_frequency, environment, fmt_num, Table};

    #[test]
    fn tables_over_40_rows_are_collapsed_under_their_caption() {
        let env = environment().unwrap();
        let render = |rows: usize| {
            let t = Table {
                caption: "Top <values>".into(),
                headers: vec!["a".into()],
                rows: (0..rows).map(|i| vec![i.to_string()]).collect(),
                text_columns: vec![],
            };
            // Named like the real templates, so HTML auto-escaping applies.
            env.template_from_named_str(
                "probe.html.j2",
                r#"{% import "macros.html.j2" as m %}{{ m.table(t) }}"#,
            )
            .and_then(|tpl| tpl.render(minijinja::context! { t => minijinja::value::Serde(&t) }))
            .unwrap()
        };
        assert!(!render(40).contains("<details"));
        let long = render(41);
        assert!(
            long.contains("<summary>Top &lt;values&gt; (41 rows)</summary><table>"),
            "{long}"
        );
        assert!(long.trim_end().ends_with("</table></details>"), "{long}");
    }

    #[test]
    fn by_frequency_counts_most_frequent_first_ties_in_item_order() {
        let got = by_frequency([5, 3, 5, 9, 3, 1, 5].into_iter());
        assert_eq!(got, vec![(5, 3), (3, 2), (1, 1), (9, 1)]);
        assert!(by_frequency(std::iter::empty::<u8>()).is_empty());
    }

    #[test]
    fn numbers_are_formatted_in_rust() {
        assert_eq!(fmt_num(0.123456789), "0.123457");
        assert_eq!(fmt_num(1234.5678), "1234.57");
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(-2.5e-7), "-2.50000e-7");
        assert_eq!(fmt_num(0.0), "0");
    }
}
