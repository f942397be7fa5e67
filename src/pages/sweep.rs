//! The sweep page: each statistic across revisions of a model, a hidden state x revision
//! heatmap of a chosen one, and how each revision moved from the one before.

use charming::component::{Axis, Grid, Legend, LegendType};
use charming::datatype::DataPoint;
use charming::element::{AxisType, ItemStyle, LineStyle, NameLocation, Tooltip, Trigger};
use charming::series::Line;
use charming::Chart;
use serde::Serialize;

use super::shell::{chart_views, Assets, ChartView, RenderError};
use crate::charts::{self, ChartSpec};
use crate::sweep::{Series, Sweep};
use crate::view::{fmt_num, Table};

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
}

/// Renders the sweep page: each statistic across revisions, a hidden state x revision
/// heatmap of a chosen one, and how each revision moved from the one before.
pub fn render(sweep: &Sweep, assets: &Assets) -> Result<String, RenderError> {
    let names = sweep.revision_names();
    let groups = sweep_groups(sweep, &names);
    let choices: Vec<HeatmapChoice> = sweep
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| HeatmapChoice {
            id: format!("heatmap-choice-{i}"),
            name: s.name(),
            option: heatmap(s, &names).option,
        })
        .collect();
    let heatmap = sweep
        .series
        .first()
        .map(|s| chart_views("heatmap", &sweep.name, vec![heatmap(s, &names)]))
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
    };
    super::shell::render("sweep.html.j2", &view, assets)
}

/// The line charts of every statistic, one group per analysis (its statistics' series
/// are consecutive in sweep.json).
fn sweep_groups(sweep: &Sweep, revisions: &[String]) -> Vec<SweepGroup> {
    let mut grouped: Vec<(String, String, Vec<ChartSpec>)> = Vec::new();
    for s in &sweep.series {
        let anchor = format!("{}-{}", s.kind, s.analysis);
        if grouped.last().is_none_or(|g| g.0 != anchor) {
            let heading = format!("{} (analysis #{})", s.kind, s.analysis);
            grouped.push((anchor, heading, Vec::new()));
        }
        if let Some(g) = grouped.last_mut() {
            g.2.push(lines(s, revisions));
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
fn steps_table(sweep: &Sweep) -> Table {
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
fn moved_table(sweep: &Sweep) -> Table {
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

/// The series across revisions, one line per hidden state coloured from the first
/// (dark) to the last (light).
fn lines(s: &Series, revisions: &[String]) -> ChartSpec {
    let n = s.labels.len();
    let mut chart = Chart::new()
        .title(charts::title(
            &s.statistic,
            &format!("{} #{}", s.kind, s.analysis),
        ))
        .tooltip(Tooltip::new().trigger(Trigger::Axis))
        .legend(Legend::new().top(52).type_(LegendType::Scroll))
        .grid(Grid::new().top(88).bottom(50).left(70).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name("Revision")
                .name_location(NameLocation::Middle)
                .name_gap(28)
                .data(revisions.to_vec()),
        )
        .y_axis(Axis::new().type_(AxisType::Value).scale(true));
    for (l, label) in s.labels.iter().enumerate() {
        let color = charts::layer_color(l, n);
        let data: Vec<DataPoint> = s
            .values
            .iter()
            .map(|row| match row[l] {
                Some(x) if x.is_finite() => DataPoint::from(charts::r(x)),
                _ => DataPoint::from("-"),
            })
            .collect();
        chart = chart.series(
            Line::new()
                .name(label.as_str())
                .data(data)
                .item_style(ItemStyle::new().color(color.as_str()))
                .line_style(LineStyle::new().color(color.as_str()).width(1.5)),
        );
    }
    ChartSpec {
        title: format!("{}-{}-{}", s.kind, s.analysis, s.statistic),
        option: charts::option(chart),
        height: 360,
    }
}

/// Hidden state x revision, coloured by the statistic.
fn heatmap(s: &Series, revisions: &[String]) -> ChartSpec {
    let finite = s
        .values
        .iter()
        .flatten()
        .flatten()
        .filter(|x| x.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
        (lo.min(x), hi.max(x))
    });
    let range = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let axes = charts::Grid2 {
        x: revisions,
        x_name: "Revision",
        y: &s.labels,
        y_name: "Hidden state",
    };
    let cell = |l: usize, r: usize| s.values[r][l].filter(|x| x.is_finite());
    let mut spec = charts::grid_heatmap(
        &s.statistic,
        &format!("{} #{}", s.kind, s.analysis),
        &axes,
        &cell,
        range,
        &charts::VIRIDIS,
    );
    spec.title = format!("{}-{}-{}-heatmap", s.kind, s.analysis, s.statistic);
    // The colour scale's end labels get three significant digits of the range (its
    // default, 0 decimals, shows a range within (-1, 1) as "0" to "-0"), and room.
    let magnitude = range.0.abs().max(range.1.abs());
    let decimals = if magnitude > 0.0 {
        (2 - magnitude.log10().floor() as i32).clamp(0, 12)
    } else {
        0
    };
    if let Some(map) = spec.option.pointer_mut("/visualMap/0") {
        map["precision"] = decimals.into();
    }
    if let Some(grid) = spec.option.pointer_mut("/grid/0") {
        grid["right"] = 140.into();
    }
    spec
}
