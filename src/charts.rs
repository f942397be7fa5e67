//! What the analyses' charts share, built with charming: titles, display rounding,
//! heatmaps, histogram frames, colour ramps. Mapping only: every statistic was computed
//! before results.json was written; here values are only placed, coloured and rounded for
//! display. Each kind's own charts live in its module under `src/analyses/`.

use charming::component::{Axis, Grid, Legend, Title, VisualMap};
use charming::element::{AxisType, ItemStyle, NameLocation, Orient, Tooltip, Trigger};
use charming::series::{Heatmap, Line};
use charming::Chart;

/// Most points a scatter chart draws; above it, every k-th dimension is kept.
pub const MAX_SCATTER_POINTS: usize = 60_000;

/// A chart and what the page should say about it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChartSpec {
    /// Title shown above the chart (also its file name when saved).
    pub title: String,
    /// The ECharts option.
    pub option: serde_json::Value,
    /// Height in pixels.
    pub height: u32,
}

/// Display rounding: 5 significant digits is far below what a plot can show, and halves
/// the size of the embedded data.
pub fn r(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let mag = 10f64.powi(4 - x.abs().log10().floor() as i32);
    (x * mag).round() / mag
}

/// The ECharts option of a chart, as JSON.
pub fn option(chart: Chart) -> serde_json::Value {
    serde_json::to_value(&chart).unwrap_or_default()
}

/// A centred title with a subtitle.
pub fn title(text: &str, sub: &str) -> Title {
    Title::new().text(text).subtext(sub).left("center")
}

/// A heatmap of a square matrix with labelled rows and columns, row 0 at the bottom as
/// in the notebook's `imshow(origin='lower')`; `cell(i, j)` is `None` where undefined.
pub fn heatmap(
    name: &str,
    sub: &str,
    labels: &[String],
    cell: &dyn Fn(usize, usize) -> Option<f64>,
    range: (f64, f64),
    colors: &[&str],
) -> ChartSpec {
    let axis = Grid2 {
        x: labels,
        x_name: "Layer",
        y: labels,
        y_name: "Layer",
    };
    grid_heatmap(name, sub, &axis, cell, range, colors)
}

/// The labelled axes of a heatmap: `x` columns left to right, `y` rows bottom to top.
pub struct Grid2<'a> {
    /// Column labels.
    pub x: &'a [String],
    /// The x axis' name.
    pub x_name: &'a str,
    /// Row labels.
    pub y: &'a [String],
    /// The y axis' name.
    pub y_name: &'a str,
}

/// A heatmap of `axes.y.len()` rows by `axes.x.len()` columns; `cell(row, column)` is
/// `None` where undefined.
pub fn grid_heatmap(
    name: &str,
    sub: &str,
    axes: &Grid2,
    cell: &dyn Fn(usize, usize) -> Option<f64>,
    range: (f64, f64),
    colors: &[&str],
) -> ChartSpec {
    let cells = grid_cells(axes.y.len(), axes.x.len(), cell);
    let chart = Chart::new()
        .title(title(name, sub))
        .tooltip(Tooltip::new().trigger(Trigger::Item).formatter("{c}"))
        .grid(Grid::new().top(70).bottom(60).left(70).right(90))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name(axes.x_name)
                .name_location(NameLocation::Middle)
                .name_gap(30)
                .data(axes.x.to_vec()),
        )
        .y_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name(axes.y_name)
                .data(axes.y.to_vec()),
        )
        .visual_map(
            VisualMap::new()
                .min(r(range.0))
                .max(r(range.1))
                .calculable(true)
                .orient(Orient::Vertical)
                .right(10)
                .top("middle")
                .in_range(
                    charming::component::VisualMapChannel::new().color(
                        colors
                            .iter()
                            .map(|c| c.to_string().into())
                            .collect::<Vec<charming::element::Color>>(),
                    ),
                ),
        )
        .series(
            Heatmap::new().name(name).data(
                cells
                    .into_iter()
                    .map(|c| {
                        c.into_iter()
                            .map(charming::datatype::DataPoint::from)
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>(),
            ),
        );
    ChartSpec {
        title: name.to_lowercase().replace(' ', "-"),
        option: option(chart),
        height: 440,
    }
}

/// viridis, the notebook's default colour map.
pub const VIRIDIS: [&str; 5] = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];

/// A diverging blue-white-red scale for differences.
pub const DIVERGING: [&str; 3] = ["#2166ac", "#f7f7f7", "#b2182b"];

/// Heatmaps of new - base covariance and R^2 (percentage points).
pub fn difference_heatmaps(
    labels: &[String],
    cov: &[Vec<f64>],
    r2: &[Vec<Option<f64>>],
) -> Vec<ChartSpec> {
    let bound = |it: &mut dyn Iterator<Item = f64>| {
        it.fold(0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE)
    };
    let bc = bound(&mut cov.iter().flatten().copied());
    let br = bound(&mut r2.iter().flatten().flatten().map(|v| 100.0 * v));
    vec![
        heatmap(
            "Covariance difference (new − base)",
            &format!("colour scale ±{}", r(bc)),
            labels,
            &|i, j| Some(cov[i][j]),
            (-bc, bc),
            &DIVERGING,
        ),
        heatmap(
            "R² difference (new − base, % points)",
            &format!("colour scale ±{}", r(br)),
            labels,
            &|i, j| r2[i][j].map(|v| 100.0 * v),
            (-br, br),
            &DIVERGING,
        ),
    ]
}

/// Base (dashed) and new (solid) histograms of every hidden state, overlaid.
pub fn histogram_overlay(
    labels: &[String],
    edges: &[f64],
    base: &[Vec<u64>],
    new: &[Vec<u64>],
) -> ChartSpec {
    let n = labels.len();
    let mut chart = histogram_frame(
        title("Histograms, base (dashed) and new (solid)", ""),
        30,
        edges,
    );
    for l in 0..n {
        let color = layer_color(l, n);
        for (which, counts, dash) in [("base", &base[l], true), ("new", &new[l], false)] {
            let data: Vec<Vec<f64>> = counts
                .iter()
                .enumerate()
                .map(|(b, &c)| vec![r(edges[b]), c as f64])
                .collect();
            let mut style = charming::element::LineStyle::new()
                .color(color.as_str())
                .width(1.5);
            if dash {
                style = style.type_(charming::element::LineStyleType::Dashed);
            }
            chart = chart.series(
                Line::new()
                    .name(format!("{} {which}", labels[l]))
                    .show_symbol(false)
                    .data(data)
                    .item_style(ItemStyle::new().color(color.as_str()))
                    .line_style(style),
            );
        }
    }
    ChartSpec {
        title: "histogram-overlay".into(),
        option: option(chart),
        height: 460,
    }
}

/// Axes, legend and tooltip of a chart of histogram lines over `edges`.
pub fn histogram_frame(heading: Title, legend_top: i32, edges: &[f64]) -> Chart {
    Chart::new()
        .title(heading)
        .tooltip(Tooltip::new().trigger(Trigger::Axis))
        .legend(
            Legend::new()
                .top(legend_top)
                .type_(charming::component::LegendType::Scroll),
        )
        .grid(
            Grid::new()
                .top(legend_top + 45)
                .bottom(50)
                .left(70)
                .right(20),
        )
        .x_axis(
            Axis::new()
                .type_(AxisType::Value)
                .name("Activation value")
                .name_location(NameLocation::Middle)
                .name_gap(28)
                .min(r(edges[0]))
                .max(r(edges[edges.len() - 1])),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name("Count").min(0))
}

/// What a per-layer chart's x axis holds: hidden states, or blocks for the vectors of a
/// site (`mlp_out.3`) and the attention layers (`attn.3`).
fn x_name(labels: &[String]) -> &'static str {
    let block = |l: &String| {
        ["attn_out.", "mlp_out.", "mlp_act.", "attn."]
            .iter()
            .any(|p| l.starts_with(p))
    };
    if labels.first().is_some_and(block) {
        "Block"
    } else {
        "Hidden state"
    }
}

/// Title, legend and axes of a chart with the hidden states along x, in model order.
pub fn per_layer_frame(
    heading: &str,
    sub: &str,
    labels: &[String],
    y_name: &str,
    log: bool,
) -> Chart {
    Chart::new()
        .title(title(heading, sub))
        .legend(Legend::new().top(45))
        .grid(Grid::new().top(80).bottom(50).left(70).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name(x_name(labels))
                .name_location(NameLocation::Middle)
                .name_gap(28)
                .data(labels.to_vec()),
        )
        .y_axis(
            Axis::new()
                .type_(if log { AxisType::Log } else { AxisType::Value })
                .name(y_name)
                .scale(true),
        )
}

/// One value per hidden state, as lines over the hidden states (left to right in model
/// order), one line per series; `None` values are gaps. `log` draws a log-scale y axis
/// (only positive values are drawn on it).
pub fn per_layer_lines(
    heading: &str,
    sub: &str,
    labels: &[String],
    series: &[(&str, &[Option<f64>])],
    y_name: &str,
    log: bool,
) -> Chart {
    const COLORS: [&str; 4] = ["#3b528b", "#e35932", "#21918c", "#fde725"];
    let mut chart = per_layer_frame(heading, sub, labels, y_name, log)
        .tooltip(Tooltip::new().trigger(Trigger::Axis));
    for (i, (name, values)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let data: Vec<charming::datatype::DataPoint> = values
            .iter()
            .map(|v| match v {
                Some(x) if !log || *x > 0.0 => charming::datatype::DataPoint::from(r(*x)),
                _ => charming::datatype::DataPoint::from("-"),
            })
            .collect();
        chart = chart.series(
            Line::new()
                .name(*name)
                .data(data)
                .item_style(ItemStyle::new().color(color))
                .line_style(charming::element::LineStyle::new().color(color).width(1.5)),
        );
    }
    chart
}

/// Colour of hidden state `l` of `n` on the plasma_r ramp.
pub fn layer_color(l: usize, n: usize) -> String {
    plasma_r(if n > 1 {
        l as f64 / (n - 1) as f64
    } else {
        0.0
    })
}

/// Heatmap cells `[column, row, value]` of a `rows x columns` grid, skipping undefined
/// entries.
fn grid_cells(
    rows: usize,
    columns: usize,
    f: &dyn Fn(usize, usize) -> Option<f64>,
) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    for i in 0..rows {
        for j in 0..columns {
            if let Some(v) = f(i, j) {
                out.push(vec![j as f64, i as f64, r(v)]);
            }
        }
    }
    out
}

/// plasma, reversed (`plasma_r`), as the notebook colours its per-layer histogram lines.
fn plasma_r(t: f64) -> String {
    const PLASMA: [(f64, f64, f64); 6] = [
        (13.0, 8.0, 135.0),
        (106.0, 0.0, 168.0),
        (177.0, 42.0, 144.0),
        (225.0, 100.0, 98.0),
        (252.0, 166.0, 54.0),
        (240.0, 249.0, 33.0),
    ];
    let x = (1.0 - t.clamp(0.0, 1.0)) * (PLASMA.len() - 1) as f64;
    let i = (x.floor() as usize).min(PLASMA.len() - 2);
    let f = x - i as f64;
    let (a, b) = (PLASMA[i], PLASMA[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

/// The words of a chart of counts per category.
pub struct Bars<'a> {
    /// The file name when saved.
    pub name: &'a str,
    /// Heading and subheading.
    pub heading: (&'a str, &'a str),
    /// The axes' names.
    pub axes: (&'a str, &'a str),
}

/// Counts per category as bars (a histogram whose bins are named).
pub fn bars(words: Bars, labels: Vec<String>, counts: Vec<f64>) -> ChartSpec {
    let chart = Chart::new()
        .title(title(words.heading.0, words.heading.1))
        .tooltip(Tooltip::new().trigger(Trigger::Axis))
        .grid(Grid::new().top(70).bottom(50).left(70).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name(words.axes.0)
                .name_location(NameLocation::Middle)
                .name_gap(28)
                .data(labels),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name(words.axes.1).min(0))
        .series(charming::series::Bar::new().name(words.axes.1).data(counts));
    ChartSpec {
        title: words.name.into(),
        option: option(chart),
        height: 320,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_rounding_keeps_five_significant_digits() {
        assert_eq!(r(0.123456789), 0.12346);
        assert_eq!(r(-12345.678), -12346.0);
        assert_eq!(r(0.0), 0.0);
    }

    #[test]
    fn plasma_r_runs_yellow_to_purple() {
        assert_eq!(plasma_r(0.0), "#f0f921");
        assert_eq!(plasma_r(1.0), "#0d0887");
    }
}
