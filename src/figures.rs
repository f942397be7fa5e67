//! `strata figures`: what a paper takes from a results.json. Every table the report shows
//! becomes a LaTeX `booktabs` table that `\input{}`s directly; every chart becomes an SVG
//! drawn by ECharts' own server-side renderer (the report's charts exactly, every point
//! drawn) and a vector PDF of that SVG with its font embedded. Text is set in the shipped
//! Liberation Sans (metrically Arial/Helvetica), whose advance widths ECharts and the
//! layout measure with (`templates/fit.js`, which the report page runs too, wraps, thins
//! and places every text for the figure's width), so the layout fits the text the PDF
//! embeds. Renders to bytes; the caller writes them.

use crate::analyses::{Medium, Section};
use crate::results::Results;
use crate::view::Table;

/// Why figures could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    /// The JavaScript engine failed to start or to run ECharts.
    #[error("chart {chart}: {detail}")]
    Render {
        /// The chart's file name.
        chart: String,
        /// The engine's message.
        detail: String,
    },
}

/// The width of a figure on the page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Width {
    /// Inches.
    pub inches: f64,
}

impl Width {
    /// A paper's column (3.5 in).
    pub const COLUMN: Width = Width { inches: 3.5 };
    /// A paper's full text width (7 in).
    pub const TEXT: Width = Width { inches: 7.0 };
}

impl std::str::FromStr for Width {
    type Err = String;

    /// `column`, `text`, or a length: `3.5in`, `89mm`, `8.9cm`, `252pt`.
    // clap's value parser for `--width` prints this message as it is.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "column" => return Ok(Self::COLUMN),
            "text" => return Ok(Self::TEXT),
            _ => {}
        }
        let bad = || {
            format!("width {s:?}: use `column` (3.5in), `text` (7in) or a length such as 3.5in, 89mm, 8.9cm or 252pt, from 1in to 20in")
        };
        let split = s.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?;
        let (num, unit) = s.split_at(split);
        let v: f64 = num.trim().parse().map_err(|_| bad())?;
        let per_inch = match unit {
            "in" => 1.0,
            "mm" => 25.4,
            "cm" => 2.54,
            "pt" => 72.27,
            _ => return Err(bad()),
        };
        let inches = v / per_inch;
        if !(1.0..=20.0).contains(&inches) {
            return Err(bad());
        }
        Ok(Self { inches })
    }
}

/// Chart pixels per inch of figure: ECharts' 12 px text then prints at about 8 pt, a
/// paper's figure text size, at any width.
const PX_PER_INCH: f64 = 108.0;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    /// A vector image per chart.
    Svg,
    /// A PDF per chart, its font embedded.
    Pdf,
    /// A LaTeX table per table.
    Tex,
}

impl Format {
    /// Every format, in the order `--format` lists them.
    pub const ALL: [Format; 3] = [Format::Svg, Format::Pdf, Format::Tex];

    /// The file extension, also the name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Svg => "svg",
            Format::Pdf => "pdf",
            Format::Tex => "tex",
        }
    }

    /// Parses `svg,tex`; an unknown name is an error that lists the known ones.
    // clap's value parser for `--format` prints this message as it is.
    pub fn parse_list(s: &str) -> Result<Vec<Format>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let f = Self::ALL
                .into_iter()
                .find(|f| f.name() == part)
                .ok_or_else(|| {
                    format!(
                        "unknown format {part:?}: use one or more of {}, separated by commas",
                        Self::ALL.map(Format::name).join(", ")
                    )
                })?;
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if out.is_empty() {
            return Err(format!(
                "no format given: use one or more of {}",
                Self::ALL.map(Format::name).join(", ")
            ));
        }
        out.sort();
        Ok(out)
    }
}

/// Characters LaTeX treats specially, as text.
pub fn escape_latex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '<' => out.push_str("\\textless{}"),
            '>' => out.push_str("\\textgreater{}"),
            '|' => out.push_str("\\textbar{}"),
            '"' => out.push_str("\\textquotedbl{}"),
            // Control characters (a token can be one) are shown by their code.
            c if c.is_control() => out.push_str(&format!("\\textbackslash{{}}x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

pub use crate::view::slug;

/// More columns than this are scaled to the text width (they would overflow it).
const WIDE_COLUMNS: usize = 8;

/// A table as a LaTeX `table` float with `booktabs` rules: text columns left, numbers right.
/// Needs `\usepackage{booktabs}` (and `graphicx` for tables wider than eight columns,
/// which are scaled to the text width).
pub fn latex_table(t: &Table, label: &str, source: &str) -> String {
    let cols = t.headers.len();
    let spec: String = (0..cols)
        .map(|c| {
            if t.text_columns.contains(&c) {
                'l'
            } else {
                'r'
            }
        })
        .collect();
    let row = |cells: &[String]| {
        cells
            .iter()
            .map(|c| escape_latex(c))
            .collect::<Vec<_>>()
            .join(" & ")
            + " \\\\\n"
    };
    let wide = cols > WIDE_COLUMNS;
    let mut s = format!("% {source}\n% Needs \\usepackage{{booktabs}}");
    if wide {
        s.push_str(" and \\usepackage{graphicx}");
    }
    s.push_str(".\n\\begin{table}[htbp]\n\\centering\n");
    if !t.caption.is_empty() {
        s.push_str(&format!("\\caption{{{}}}\n", escape_latex(&t.caption)));
    }
    s.push_str(&format!("\\label{{{label}}}\n"));
    if wide {
        s.push_str("\\resizebox{\\textwidth}{!}{%\n");
    }
    s.push_str(&format!("\\begin{{tabular}}{{{spec}}}\n\\toprule\n"));
    s.push_str(&row(&t.headers));
    s.push_str("\\midrule\n");
    for r in &t.rows {
        s.push_str(&row(r));
    }
    s.push_str("\\bottomrule\n\\end{tabular}");
    if wide {
        s.push('}');
    }
    s.push_str("\n\\end{table}\n");
    s
}

/// One output file: its name in the figures folder and its bytes.
pub struct Figure {
    /// File name, e.g. `01-covariance-covariance-matrix.svg`.
    pub name: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// The font figures are set in, shipped with its licence in `templates/vendor/fonts/`.
const FONT_REGULAR: &[u8] = include_bytes!("../templates/vendor/fonts/LiberationSans-Regular.ttf");
/// Its bold face (chart titles).
const FONT_BOLD: &[u8] = include_bytes!("../templates/vendor/fonts/LiberationSans-Bold.ttf");
/// The family name both faces carry.
const FONT_FAMILY: &str = "Liberation Sans";

/// A face's advance widths, in ems.
struct Advances<'a> {
    face: ttf_parser::Face<'a>,
}

impl<'a> Advances<'a> {
    // Private: a shipped font that does not parse is a build defect; its text goes into
    // the caller's FiguresError.
    fn new(font: &'a [u8]) -> Result<Self, String> {
        let face =
            ttf_parser::Face::parse(font, 0).map_err(|e| format!("the shipped font: {e}"))?;
        Ok(Self { face })
    }

    /// The advance of `c`; a character the face lacks is drawn as its missing-glyph box.
    fn of(&self, c: char) -> f64 {
        let g = self.face.glyph_index(c).unwrap_or(ttf_parser::GlyphId(0));
        self.face.glyph_hor_advance(g).unwrap_or(0) as f64 / self.face.units_per_em() as f64
    }
}

/// The shipped faces' advance widths, as the JavaScript that makes ECharts (and the layout
/// in `fit.js`) measure text with them (without it, zrender guesses, and legends and
/// labels drift from the text the PDF embeds). Built once per call of [`render`]: the
/// tables of characters 0-255 are the same for every chart.
struct Measure {
    regular: Advances<'static>,
    bold: Advances<'static>,
    /// `var regular = [...], bold = [...]`: characters 0-255 of each face.
    tables: String,
}

impl Measure {
    // Private, as above: the shipped fonts' measurer.
    fn new() -> Result<Self, String> {
        let (regular, bold) = (Advances::new(FONT_REGULAR)?, Advances::new(FONT_BOLD)?);
        let table = |a: &Advances| {
            (0u32..256)
                .map(|c| format!("{:.5}", char::from_u32(c).map_or(0.0, |c| a.of(c))))
                .collect::<Vec<_>>()
                .join(",")
        };
        let tables = format!(
            "var regular = [{}], bold = [{}];",
            table(&regular),
            table(&bold)
        );
        Ok(Self {
            regular,
            bold,
            tables,
        })
    }

    /// The measurer for one chart: the tables, and the rest of the characters of `option`
    /// from a map made for it.
    fn js(&self, option: &str) -> String {
        let mut wide: Vec<char> = option.chars().filter(|&c| c as u32 >= 256).collect();
        wide.sort_unstable();
        wide.dedup();
        let map = |a: &Advances| {
            wide.iter()
                .map(|&c| format!("{}:{:.5}", c as u32, a.of(c)))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "(function () {{\n\
             {}\n\
             var wideRegular = {{{}}}, wideBold = {{{}}};\n\
             globalThis.strataMeasure = function (text, font) {{\n\
               var m = /([0-9.]+)px/.exec(font || ''); var size = m ? parseFloat(m[1]) : 12;\n\
               var isBold = /bold|[6-9]00/.test(font || ''); var t = isBold ? bold : regular;\n\
               var wide = isBold ? wideBold : wideRegular; var w = 0;\n\
               for (var ch of String(text)) {{ var c = ch.codePointAt(0); w += c < 256 ? t[c] : (wide[c] || t[110]); }}\n\
               return w * size;\n\
             }};\n\
             echarts.setPlatformAPI({{ measureText: function (text, font) {{ return {{ width: strataMeasure(text, font) }}; }} }});\n\
             }})();",
            self.tables,
            map(&self.regular),
            map(&self.bold)
        )
    }
}

/// Runs ECharts' server-side SVG renderer on one chart option laid out by `fit.js` for
/// `width` pixels (the report's chart, `height` pixels high on a page 640 px wide, keeps
/// its shape), in a fresh QuickJS context (zrender numbers its CSS classes with a counter
/// that lives as long as the context, so a fresh one keeps every chart's bytes
/// independent of the others). Returns the SVG and the height the layout took.
// Private: the message is QuickJS's exception text, which the caller places under the
// chart's name.
fn echarts_svg(
    option: &serde_json::Value,
    width: u32,
    height: u32,
    measure: &Measure,
) -> Result<(String, u32), String> {
    use rquickjs::{CatchResultExt, Context, Runtime};
    let rt = Runtime::new().map_err(|e| e.to_string())?;
    let ctx = Context::full(&rt).map_err(|e| e.to_string())?;
    let option = option.to_string();
    let measure = measure.js(&option);
    let script = format!(
        "(function () {{\n\
         var o = {option};\n\
         o.animation = false;\n\
         o.textStyle = Object.assign({{fontFamily: '{FONT_FAMILY}, Arial, Helvetica, sans-serif'}}, o.textStyle || {{}});\n\
         // Every point is drawn; large mode draws a dense scatter as one path per series.\n\
         var scatters = (o.series || []).filter(function (s) {{ return s.type === 'scatter'; }});\n\
         var points = scatters.reduce(function (n, s) {{ return n + (s.data ? s.data.length : 0); }}, 0);\n\
         if (points > 5000) scatters.forEach(function (s) {{ s.large = true; s.largeThreshold = 0; }});\n\
         var h = strataFit(o, {width}, {height}, strataMeasure, {width} / 640);\n\
         var c = echarts.init(null, null, {{renderer: 'svg', ssr: true, width: {width}, height: h, useUTC: true}});\n\
         c.setOption(o);\n\
         var svg = c.renderToSVGString();\n\
         c.dispose();\n\
         return h + '\\n' + svg;\n\
         }})()"
    );
    let out = ctx.with(|ctx| {
        // zrender's animation loop asks for a timer once per chart; nothing animates here.
        ctx.eval::<(), _>("globalThis.setTimeout = function () { return 0; }; globalThis.clearTimeout = function () {};")
            .catch(&ctx)
            .map_err(|e| e.to_string())?;
        ctx.eval::<(), _>(crate::pages::shell::ECHARTS_JS)
            .catch(&ctx)
            .map_err(|e| format!("loading ECharts: {e}"))?;
        ctx.eval::<(), _>(measure.as_str())
            .catch(&ctx)
            .map_err(|e| e.to_string())?;
        ctx.eval::<(), _>(crate::pages::shell::FIT_JS)
            .catch(&ctx)
            .map_err(|e| format!("loading the layout: {e}"))?;
        ctx.eval::<String, _>(script).catch(&ctx).map_err(|e| e.to_string())
    })?;
    let (h, svg) = out
        .split_once('\n')
        .ok_or("the renderer returned no height")?;
    let h = h
        .parse()
        .map_err(|_| format!("the layout returned height {h:?}"))?;
    Ok((svg.to_string(), h))
}

/// Sets the root element's size in inches, keeping its pixel `viewBox`, so LaTeX and
/// other tools place the figure at the width asked for.
fn in_inches(svg: &str, width: u32, height: u32, w_in: f64) -> String {
    let h_in = w_in * height as f64 / width as f64;
    svg.replacen(
        &format!("<svg width=\"{width}\" height=\"{height}\""),
        &format!("<svg width=\"{w_in:.3}in\" height=\"{h_in:.3}in\""),
        1,
    )
}

/// usvg's options with the shipped font as the only one, built once per call of
/// [`render`] (loading the font faces is the costly part of reading an SVG).
fn svg_options() -> usvg::Options<'static> {
    let mut opt = usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_font_data(FONT_REGULAR.to_vec());
    db.load_font_data(FONT_BOLD.to_vec());
    // usvg drops text whose family does not resolve, silently: every generic family is
    // the shipped font.
    db.set_sans_serif_family(FONT_FAMILY);
    db.set_serif_family(FONT_FAMILY);
    db.set_monospace_family(FONT_FAMILY);
    opt.font_family = FONT_FAMILY.into();
    opt
}

/// A chart's SVG as a one-page vector PDF of `w_in` x `h_in` inches, its text in the
/// shipped font, embedded (subset).
// Private: usvg's and krilla's messages, which the caller places under the chart's name.
fn svg_to_pdf(svg: &str, opt: &usvg::Options, w_in: f64, h_in: f64) -> Result<Vec<u8>, String> {
    use krilla_svg::{SurfaceExt, SvgSettings};
    let tree = usvg::Tree::from_str(svg, opt).map_err(|e| format!("reading the SVG: {e}"))?;
    // PDF units are points.
    let (w, h) = ((w_in * 72.0) as f32, (h_in * 72.0) as f32);
    let size = krilla::geom::Size::from_wh(w, h).ok_or("an empty page")?;
    let mut doc = krilla::Document::new();
    let mut page = doc.start_page_with(krilla::page::PageSettings::new(size));
    let mut surface = page.surface();
    surface
        .draw_svg(&tree, size, SvgSettings::default())
        .ok_or("drawing the SVG")?;
    surface.finish();
    page.finish();
    doc.finish().map_err(|e| format!("writing the PDF: {e:?}"))
}

/// Every chart of every analysis, as SVG and or PDF.
fn charts(
    sections: &[(usize, &'static str, Section)],
    formats: &[Format],
    width: Width,
) -> Result<Vec<Figure>, FigureError> {
    let w = (width.inches * PX_PER_INCH).round() as u32;
    let measure = Measure::new().map_err(|detail| FigureError::Render {
        chart: "(all)".into(),
        detail,
    })?;
    let pdf_options = formats.contains(&Format::Pdf).then(svg_options);
    let mut out = Vec::new();
    for (i, kind, sec) in sections {
        for c in &sec.charts {
            let base = format!("{i:02}-{kind}-{}", slug(&c.title));
            let err = |detail| FigureError::Render {
                chart: base.clone(),
                detail,
            };
            let (svg, h) = echarts_svg(&c.option, w, c.height, &measure).map_err(err)?;
            let svg = in_inches(&svg, w, h, width.inches);
            if let Some(opt) = &pdf_options {
                let h_in = width.inches * h as f64 / w as f64;
                out.push(Figure {
                    name: format!("{base}.pdf"),
                    bytes: svg_to_pdf(&svg, opt, width.inches, h_in).map_err(err)?,
                });
            }
            if formats.contains(&Format::Svg) {
                out.push(Figure {
                    name: format!("{base}.svg"),
                    bytes: svg.into_bytes(),
                });
            }
        }
    }
    Ok(out)
}

/// Every table of every analysis, as LaTeX.
fn tables(results: &Results, sections: &[(usize, &'static str, Section)]) -> Vec<Figure> {
    let source = format!(
        "strata {} table from results.json of `{}`",
        crate::VERSION,
        results.name
    );
    let mut out = Vec::new();
    for (i, kind, sec) in sections {
        for (j, t) in sec.tables.iter().enumerate() {
            let base = format!(
                "{i:02}-{kind}-{}",
                slug(if t.caption.is_empty() {
                    "table"
                } else {
                    &t.caption
                })
            );
            let base =
                if sec.tables.len() > 1 && out.iter().any(|f: &Figure| f.name.starts_with(&base)) {
                    format!("{base}-{j}")
                } else {
                    base
                };
            let label = format!("tab:{}-{base}", slug(&results.name));
            out.push(Figure {
                name: format!("{base}.tex"),
                bytes: latex_table(t, &label, &source).into_bytes(),
            });
        }
    }
    out
}

/// The figures of a results file in the formats asked for, named and rendered, nothing
/// written yet.
pub fn render(
    results: &Results,
    formats: &[Format],
    width: Width,
) -> Result<Vec<Figure>, FigureError> {
    let cx = results.context();
    let sections: Vec<(usize, &'static str, Section)> = results
        .analyses
        .iter()
        .enumerate()
        .map(|(i, a)| (i, a.kind(), a.section(&cx, Medium::Figure)))
        .collect();
    let mut out = Vec::new();
    if formats.contains(&Format::Svg) || formats.contains(&Format::Pdf) {
        out.extend(charts(&sections, formats, width)?);
    }
    if formats.contains(&Format::Tex) {
        out.extend(tables(results, &sections));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latex_specials_stay_text() {
        assert_eq!(
            escape_latex(r"50% of $x_1$ & {y} #2 ~ ^ \ <b>"),
            r"50\% of \$x\_1\$ \& \{y\} \#2 \textasciitilde{} \textasciicircum{} \textbackslash{} \textless{}b\textgreater{}"
        );
        assert_eq!(escape_latex("a\nb"), r"a\textbackslash{}x0ab");
    }

    #[test]
    fn formats_parse_and_unknown_ones_are_named() {
        assert_eq!(
            Format::parse_list("tex,svg,tex"),
            Ok(vec![Format::Svg, Format::Tex])
        );
        assert!(Format::parse_list("png").unwrap_err().contains("\"png\""));
        assert!(Format::parse_list("").is_err());
    }

    #[test]
    fn a_table_in_booktabs() {
        let t = Table {
            caption: "Top 3 |value|".into(),
            headers: vec!["hidden state".into(), "value".into()],
            rows: vec![vec!["h_0".into(), "1.5".into()]],
            text_columns: vec![0],
        };
        let tex = latex_table(&t, "tab:x", "source");
        assert!(tex.contains("\\begin{tabular}{lr}\n\\toprule\nhidden state & value \\\\\n\\midrule\nh\\_0 & 1.5 \\\\\n\\bottomrule\n\\end{tabular}"), "{tex}");
        assert!(tex.contains("\\caption{Top 3 \\textbar{}value\\textbar{}}"));
        assert_eq!(slug("R² (np.corrcoef²)"), "r-np-corrcoef");
    }
}
