//! Results -> ECharts options, built with charming. Mapping only: every statistic was
//! computed before results.json was written; here values are only placed, coloured,
//! rounded for display and (for dense scatters) thinned deterministically.

use charming::component::{Axis, Grid, Legend, Title, VisualMap};
use charming::element::{AxisType, ItemStyle, NameLocation, Orient, Tooltip, Trigger};
use charming::series::{Heatmap, Line, Scatter};
use charming::Chart;

use crate::results::AnalysisResult;

/// Most points a scatter chart draws; above it, every k-th dimension is kept.
pub const MAX_SCATTER_POINTS: usize = 60_000;

/// A chart and what the page should say about it.
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
fn r(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let mag = 10f64.powi(4 - x.abs().log10().floor() as i32);
    (x * mag).round() / mag
}

fn option(chart: Chart) -> serde_json::Value {
    serde_json::to_value(&chart).unwrap_or_default()
}

fn title(text: &str, sub: &str) -> Title {
    Title::new().text(text).subtext(sub).left("center")
}

/// The dimension stride that keeps a `[tokens, dims]` scatter under the point budget.
pub fn scatter_stride(tokens: usize, dims: usize) -> usize {
    let total = tokens * dims;
    total.div_ceil(MAX_SCATTER_POINTS).max(1)
}

/// The notebook's two scatters: by embedding dimension (each token a colour) and by token
/// (each dimension a colour).
pub fn scatter(
    label: &str,
    tokens: &[String],
    token_index: &[usize],
    values: &[Vec<f32>],
) -> Vec<ChartSpec> {
    let dims = values.first().map_or(0, Vec::len);
    let stride = scatter_stride(values.len(), dims);
    let kept: Vec<usize> = (0..dims).step_by(stride).collect();
    let shown = |i: usize| format!("{}: {}", token_index[i], tokens[i].escape_debug());

    let mut by_dim = Chart::new()
        .title(title(
            &format!("Hidden state {label}, by embedding dimension"),
            "Each color is a token",
        ))
        .tooltip(
            Tooltip::new()
                .trigger(Trigger::Item)
                .formatter("token {a}<br/>dim, activation: {c}"),
        )
        .grid(Grid::new().top(70).bottom(50).left(60).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Value)
                .name("Embedding dimension")
                .name_location(NameLocation::Middle)
                .name_gap(28)
                .min(0)
                .max(dims as f64),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name("Activation"));
    for (i, row) in values.iter().enumerate() {
        let data: Vec<Vec<f64>> = kept
            .iter()
            .map(|&d| vec![d as f64, r(row[d] as f64)])
            .collect();
        by_dim = by_dim.series(
            Scatter::new()
                .name(shown(i))
                .symbol_size(3)
                .data(data)
                .item_style(ItemStyle::new().opacity(0.4)),
        );
    }

    let categories: Vec<String> = (0..values.len()).map(shown).collect();
    let mut by_token = Chart::new()
        .title(title(
            &format!("Hidden state {label}, by token"),
            "Each color is an embedding dimension",
        ))
        .tooltip(
            Tooltip::new()
                .trigger(Trigger::Item)
                .formatter("dim {a}<br/>token {b}: {c}"),
        )
        .grid(Grid::new().top(70).bottom(70).left(60).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name("Token index")
                .name_location(NameLocation::Middle)
                .name_gap(45)
                .data(categories),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name("Activation"));
    for &d in &kept {
        let data: Vec<Vec<f64>> = values
            .iter()
            .enumerate()
            .map(|(i, row)| vec![i as f64, r(row[d] as f64)])
            .collect();
        by_token = by_token.series(
            Scatter::new()
                .name(d.to_string())
                .symbol_size(3)
                .data(data)
                .item_style(ItemStyle::new().opacity(0.4)),
        );
    }
    vec![
        ChartSpec {
            title: format!("scatter-{label}-by-dimension"),
            option: option(by_dim),
            height: 420,
        },
        ChartSpec {
            title: format!("scatter-{label}-by-token"),
            option: option(by_token),
            height: 420,
        },
    ]
}

/// A heatmap of a square matrix with labelled rows and columns, row 0 at the bottom as
/// in the notebook's `imshow(origin='lower')`.
fn heatmap(
    name: &str,
    sub: &str,
    labels: &[String],
    cells: Vec<Vec<f64>>,
    range: (f64, f64),
    colors: &[&str],
) -> ChartSpec {
    let chart = Chart::new()
        .title(title(name, sub))
        .tooltip(Tooltip::new().trigger(Trigger::Item).formatter("{c}"))
        .grid(Grid::new().top(70).bottom(60).left(70).right(90))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name("Layer")
                .name_location(NameLocation::Middle)
                .name_gap(30)
                .data(labels.to_vec()),
        )
        .y_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name("Layer")
                .data(labels.to_vec()),
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
const VIRIDIS: [&str; 5] = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];

/// Covariance and R^2 (% shared variance) heatmaps.
pub fn covariance(labels: &[String], cov: &[Vec<f64>], r2: &[Vec<Option<f64>>]) -> Vec<ChartSpec> {
    let bound = cov.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
    let cells = |f: &dyn Fn(usize, usize) -> Option<f64>| matrix_cells(labels.len(), f);
    vec![
        heatmap(
            "Covariance matrix",
            &format!("colour scale ±{}", r(bound)),
            labels,
            cells(&|i, j| Some(cov[i][j])),
            (-bound, bound),
            &VIRIDIS,
        ),
        heatmap(
            "R² matrix (% shared variance)",
            "100 × squared correlation",
            labels,
            cells(&|i, j| r2[i][j].map(|v| 100.0 * v)),
            (0.0, 100.0),
            &VIRIDIS,
        ),
    ]
}

/// A diverging blue-white-red scale for differences.
const DIVERGING: [&str; 3] = ["#2166ac", "#f7f7f7", "#b2182b"];

/// Heatmaps of new - base covariance and R^2 (percentage points).
pub fn difference_heatmaps(
    labels: &[String],
    cov: &[Vec<f64>],
    r2: &[Vec<Option<f64>>],
) -> Vec<ChartSpec> {
    let cells = |f: &dyn Fn(usize, usize) -> Option<f64>| matrix_cells(labels.len(), f);
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
            cells(&|i, j| Some(cov[i][j])),
            (-bc, bc),
            &DIVERGING,
        ),
        heatmap(
            "R² difference (new − base, % points)",
            &format!("colour scale ±{}", r(br)),
            labels,
            cells(&|i, j| r2[i][j].map(|v| 100.0 * v)),
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
fn histogram_frame(heading: Title, legend_top: i32, edges: &[f64]) -> Chart {
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

/// Colour of hidden state `l` of `n` on the plasma_r ramp.
fn layer_color(l: usize, n: usize) -> String {
    plasma_r(if n > 1 {
        l as f64 / (n - 1) as f64
    } else {
        0.0
    })
}

/// Heatmap cells `[column, row, value]` of an `n x n` matrix, skipping undefined entries.
fn matrix_cells(n: usize, f: &dyn Fn(usize, usize) -> Option<f64>) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    for i in 0..n {
        for j in 0..n {
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

/// Histograms as lines, one per hidden state on a plasma_r ramp: linear and log counts.
pub fn histogram(labels: &[String], edges: &[f64], counts: &[Vec<u64>]) -> Vec<ChartSpec> {
    let n = labels.len();
    let make = |log: bool| {
        let heading = if log { "Log counts" } else { "Linear counts" };
        let sub = if log {
            "ln(count); empty bins omitted"
        } else {
            ""
        };
        let mut chart = histogram_frame(title(heading, sub), 45, edges);
        for (l, row) in counts.iter().enumerate() {
            let color = layer_color(l, n);
            // The notebook plots each count at its bin's left edge.
            let data: Vec<Vec<f64>> = row
                .iter()
                .enumerate()
                .filter(|(_, &c)| !log || c > 0)
                .map(|(b, &c)| vec![r(edges[b]), if log { r((c as f64).ln()) } else { c as f64 }])
                .collect();
            chart = chart.series(
                Line::new()
                    .name(labels[l].as_str())
                    .show_symbol(false)
                    .data(data)
                    .item_style(ItemStyle::new().color(color.as_str()))
                    .line_style(
                        charming::element::LineStyle::new()
                            .color(color.as_str())
                            .width(1.5),
                    ),
            );
        }
        chart
    };
    vec![
        ChartSpec {
            title: "histogram-linear".into(),
            option: option(make(false)),
            height: 420,
        },
        ChartSpec {
            title: "histogram-log".into(),
            option: option(make(true)),
            height: 420,
        },
    ]
}

/// The pairplot grid: histograms of the sample on the diagonal, scatters off it.
pub fn pairplot(
    labels: &[String],
    columns: &[Vec<f32>],
    diag_edges: &[Vec<f64>],
    diag_counts: &[Vec<u64>],
) -> ChartSpec {
    let k = labels.len();
    let cell = 100.0 / k as f64;
    let mut chart =
        Chart::new().tooltip(Tooltip::new().trigger(Trigger::Item).formatter("{a}: {c}"));
    for i in 0..k {
        for j in 0..k {
            let idx = (i * k + j) as f64;
            chart = chart
                .grid(
                    Grid::new()
                        .left(format!("{:.2}%", j as f64 * cell + 4.0))
                        .top(format!("{:.2}%", i as f64 * cell + 3.0))
                        .width(format!("{:.2}%", cell - 6.0))
                        .height(format!("{:.2}%", cell - 7.0)),
                )
                .x_axis(
                    Axis::new()
                        .type_(AxisType::Value)
                        .grid_index(idx)
                        .scale(true)
                        .name(if i == k - 1 { labels[j].as_str() } else { "" })
                        .name_location(NameLocation::Middle)
                        .name_gap(22),
                )
                .y_axis(
                    Axis::new()
                        .type_(AxisType::Value)
                        .grid_index(idx)
                        .scale(i != j)
                        .name(if j == 0 { labels[i].as_str() } else { "" })
                        .name_location(NameLocation::Middle)
                        .name_gap(40),
                );
            let series_name = format!("{} vs {}", labels[i], labels[j]);
            if i == j {
                let e = &diag_edges[i];
                let data: Vec<Vec<f64>> = diag_counts[i]
                    .iter()
                    .enumerate()
                    .map(|(b, &c)| vec![r((e[b] + e[b + 1]) / 2.0), c as f64])
                    .collect();
                chart = chart.series(
                    charming::series::Bar::new()
                        .name(labels[i].as_str())
                        .x_axis_index(idx)
                        .y_axis_index(idx)
                        .bar_width("90%")
                        .data(data),
                );
            } else {
                let data: Vec<Vec<f64>> = columns[j]
                    .iter()
                    .zip(&columns[i])
                    .map(|(&x, &y)| vec![r(x as f64), r(y as f64)])
                    .collect();
                chart = chart.series(
                    Scatter::new()
                        .name(series_name.as_str())
                        .x_axis_index(idx)
                        .y_axis_index(idx)
                        .symbol_size(2)
                        .item_style(ItemStyle::new().opacity(0.5))
                        .data(data),
                );
            }
        }
    }
    ChartSpec {
        title: "pairplot".into(),
        option: option(chart),
        height: (180 * k as u32).max(360),
    }
}

/// The charts of one analysis.
pub fn for_analysis(a: &AnalysisResult) -> Vec<ChartSpec> {
    match a {
        AnalysisResult::Scatter {
            label,
            tokens,
            token_index,
            values,
            ..
        } => scatter(label, tokens, token_index, values),
        AnalysisResult::Covariance {
            labels,
            covariance: cov,
            r2,
            ..
        } => covariance(labels, cov, r2),
        AnalysisResult::Pairplot {
            labels,
            columns,
            diagonal_edges,
            diagonal_counts,
            ..
        } => vec![pairplot(labels, columns, diagonal_edges, diagonal_counts)],
        AnalysisResult::Histogram {
            labels,
            edges,
            counts,
            ..
        } => histogram(labels, edges, counts),
        AnalysisResult::Summary { .. } | AnalysisResult::Outliers { .. } => vec![],
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

    #[test]
    fn dense_scatters_are_thinned_by_whole_dimensions() {
        assert_eq!(scatter_stride(70, 768), 1);
        assert_eq!(scatter_stride(1024, 1600), 28);
    }
}
