//! The results page: results.json -> one self-contained HTML page, a section per analysis
//! (each kind's charts and tables), the texts and the provenance.

use charming::component::{Axis, Grid};
use charming::element::{AxisType, NameLocation, Tooltip, Trigger};
use serde::Serialize;

use super::shell::{chart_views, Assets, ChartView, RenderError, SectionView};
use crate::analyses::{Analysed, Context, Medium, Section};
use crate::charts::{self, ChartSpec};
use crate::results::{CorpusSummary, Results, TextRecord};
use crate::view::provenance::{gguf_note, provenance_rows};
use crate::view::Table;

/// Texts listed in the page's table; the rest are counted, and charted by length.
const TEXTS_LISTED: usize = 40;

/// What the results page shows.
#[derive(Serialize)]
struct ResultsView<'a> {
    title: &'a str,
    name: &'a str,
    subtitle: String,
    sections: Vec<SectionView>,
    texts: Table,
    /// The labels and their counts, when the texts have labels.
    classes: Option<Table>,
    /// The texts' token counts as a bar chart (more than one text).
    text_lengths: Vec<ChartView>,
    provenance: Vec<(String, String)>,
}

/// Renders the results page from results alone.
pub fn render(results: &Results, assets: &Assets) -> Result<String, RenderError> {
    let cx = results.context();
    let view = ResultsView {
        title: &results.title,
        name: &results.name,
        subtitle: subtitle(results),
        sections: results
            .analyses
            .iter()
            .enumerate()
            .map(|(i, a)| section(i, a, &cx, &results.name))
            .collect(),
        texts: texts_table(results),
        classes: classes_table(&results.corpus),
        text_lengths: text_length_chart(&results.corpus),
        provenance: provenance_rows(results),
    };
    super::shell::render("results.html.j2", &view, assets)
}

/// The model, the texts and the hidden states, in one line under the title.
fn subtitle(results: &Results) -> String {
    format!(
        "{} ({}{}) · {} text(s), {} tokens · {} hidden states",
        results.provenance.model.id,
        results.model.architecture,
        gguf_note(&results.model.quantization),
        results.corpus.texts,
        results.corpus.tokens,
        results.model.labels.len()
    )
}

/// Analysis `i`'s section, its charts saved as `NAME-TITLE`.
fn section(i: usize, a: &Analysed, cx: &Context, name: &str) -> SectionView {
    let Section {
        heading,
        intro,
        notes,
        charts,
        tables,
        wide,
        collapsed,
    } = a.section(cx, Medium::Page);
    SectionView {
        kind: a.kind(),
        anchor: format!("{}-{i}", a.kind()),
        heading,
        intro,
        notes,
        charts: chart_views(&format!("chart-{i}"), name, charts),
        wide,
        tables,
        collapsed,
    }
}

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
    let row = |t: &TextRecord| {
        let start: String = t.tokens.iter().take(12).map(String::as_str).collect();
        let start = if t.tokens.len() > 12 {
            format!("{start}…")
        } else {
            start
        };
        let mut row = vec![t.id.clone(), t.n_tokens.to_string(), start];
        if !corpus.labels.is_empty() {
            row.insert(1, t.label.clone().unwrap_or_default());
        }
        row
    };
    let (text_columns, headers) = match corpus.labels.is_empty() {
        true => (vec![0, 2], vec!["id", "tokens", "start"]),
        false => (vec![0, 1, 3], vec!["id", "label", "tokens", "start"]),
    };
    Table {
        text_columns,
        caption,
        headers: headers.into_iter().map(String::from).collect(),
        rows: texts.iter().take(TEXTS_LISTED).map(row).collect(),
    }
}

/// The texts' labels in sorted order, with their texts and tokens; none without labels.
fn classes_table(corpus: &CorpusSummary) -> Option<Table> {
    if corpus.labels.is_empty() {
        return None;
    }
    let labelled: u64 = corpus.labels.iter().map(|c| c.texts).sum();
    let unlabelled = corpus.texts as u64 - labelled.min(corpus.texts as u64);
    let n = corpus.labels.len();
    let labels = format!("{n} label{}", if n == 1 { "" } else { "s" });
    let caption = match unlabelled {
        0 => labels,
        k => format!("{labels}; {k} text(s) without one"),
    };
    Some(Table {
        text_columns: vec![0],
        caption,
        headers: ["label", "texts", "tokens"].map(String::from).to_vec(),
        rows: corpus
            .labels
            .iter()
            .map(|c| vec![c.label.clone(), c.texts.to_string(), c.tokens.to_string()])
            .collect(),
    })
}

/// How many texts have how many tokens, in at most 30 equal bins (none for one text).
fn text_length_chart(corpus: &CorpusSummary) -> Vec<ChartView> {
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
