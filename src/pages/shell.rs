//! What every page shares: the templates (strict undefined, HTML auto-escaping), ECharts
//! inlined from the release shipped in `templates/vendor/` (no network request), the
//! chart and section view models, and the one function that renders a page.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::charts::ChartSpec;
use crate::view::Table;

/// ECharts, inlined into every page: the release shipped in `templates/vendor/echarts/`
/// (its sha256 is checked by build.rs).
pub const ECHARTS_JS: &str = include_str!("../../templates/vendor/echarts/echarts.min.js");
/// The layout every chart goes through before ECharts draws it, on the report page and in
/// `strata figures`: text measured and placed where it fits.
pub const FIT_JS: &str = include_str!("../../templates/fit.js");
/// ECharts' licence and notice, shown in every page.
pub const ECHARTS_LICENSE: &str = concat!(
    include_str!("../../templates/vendor/echarts/LICENSE"),
    "\n\n",
    include_str!("../../templates/vendor/echarts/NOTICE")
);
/// The ECharts version inlined.
pub const ECHARTS_VERSION: &str = env!("STRATA_ECHARTS_VERSION");

/// The templates: the shell every page extends, its parts, one template per page, and
/// the section template every analysis kind is shown with.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "shell.html.j2",
        include_str!("../../templates/shell.html.j2"),
    ),
    (
        "results.html.j2",
        include_str!("../../templates/results.html.j2"),
    ),
    (
        "comparison.html.j2",
        include_str!("../../templates/comparison.html.j2"),
    ),
    (
        "sweep.html.j2",
        include_str!("../../templates/sweep.html.j2"),
    ),
    (
        "section.html.j2",
        include_str!("../../templates/section.html.j2"),
    ),
    (
        "page_style.html.j2",
        include_str!("../../templates/page_style.html.j2"),
    ),
    (
        "page_script.html.j2",
        include_str!("../../templates/page_script.html.j2"),
    ),
    (
        "macros.html.j2",
        include_str!("../../templates/macros.html.j2"),
    ),
];

/// Why a page could not be rendered.
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

/// The script assets a page inlines; tests substitute stubs for them.
pub struct Assets<'a> {
    /// ECharts' source.
    pub echarts_js: &'a str,
    /// Its licence text.
    pub echarts_license: &'a str,
    /// Its version.
    pub echarts_version: &'a str,
    /// The charts' layout, run before ECharts draws each chart.
    pub fit_js: &'a str,
}

impl Default for Assets<'static> {
    fn default() -> Self {
        Self {
            echarts_js: ECHARTS_JS,
            echarts_license: ECHARTS_LICENSE,
            echarts_version: ECHARTS_VERSION,
            fit_js: FIT_JS,
        }
    }
}

/// What the shell of every page shows besides the page's own view.
#[derive(Serialize)]
struct Shell<'a, V: Serialize> {
    /// The page's own view; its fields sit beside the shell's in the templates.
    #[serde(flatten)]
    page: &'a V,
    echarts_js: &'a str,
    echarts_license: &'a str,
    echarts_version: &'a str,
    fit_js: &'a str,
    strata_version: &'a str,
}

/// A chart on a page.
#[derive(Serialize)]
pub struct ChartView {
    /// DOM id.
    pub id: String,
    /// File name for saved images.
    pub file: String,
    /// Height in px.
    pub height: u32,
    /// The ECharts option (embedded with `tojson`).
    pub option: serde_json::Value,
}

/// A section of a page: an analysis on the results page, an analysis' differences on the
/// comparison page.
#[derive(Serialize)]
pub struct SectionView {
    /// The analysis kind (a CSS class of the section).
    pub kind: &'static str,
    /// Its id, linked from the page's navigation.
    pub anchor: String,
    /// Its heading.
    pub heading: String,
    /// One sentence under it.
    pub intro: String,
    /// Notes under the intro.
    pub notes: Vec<String>,
    /// Its charts.
    pub charts: Vec<ChartView>,
    /// Charts drawn across the whole page width.
    pub wide: bool,
    /// Its tables.
    pub tables: Vec<Table>,
    /// The tables are folded under this summary, when set.
    pub collapsed: Option<String>,
}

/// Chart views of `specs`, ids `PREFIX-i`, saved images named `FILE_PREFIX-TITLE`.
pub fn chart_views(prefix: &str, file_prefix: &str, specs: Vec<ChartSpec>) -> Vec<ChartView> {
    specs
        .into_iter()
        .enumerate()
        .map(|(c, spec)| ChartView {
            id: format!("{prefix}-{c}"),
            file: format!("{file_prefix}-{}", spec.title),
            height: spec.height,
            option: spec.option,
        })
        .collect()
}

pub(crate) fn environment() -> Result<Environment<'static>, RenderError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    for (name, src) in TEMPLATES {
        env.add_template(name, src)?;
    }
    Ok(env)
}

/// Renders `template` with the page's view and the shell's assets.
pub fn render<V: Serialize>(
    template: &str,
    page: &V,
    assets: &Assets,
) -> Result<String, RenderError> {
    let env = environment()?;
    let view = Shell {
        page,
        echarts_js: assets.echarts_js,
        echarts_license: assets.echarts_license,
        echarts_version: assets.echarts_version,
        fit_js: assets.fit_js,
        strata_version: crate::VERSION,
    };
    Ok(env
        .get_template(template)?
        .render(minijinja::value::Serde(&view))?)
}

#[cfg(test)]
mod tests {
    use super::environment;
    use crate::view::Table;

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
}
