//! The `divergence` section: the KL distribution on a log axis with its quantiles, the
//! `lens_kl` curve, the per-text loss differences in order, and tables of the figures, the
//! quantiles, the most divergent tokens and the texts.

use charming::component::{Axis, Grid, Legend};
use charming::element::{AxisType, NameLocation, Symbol, Tooltip, Trigger};
use charming::series::{Bar, Line, Scatter};
use charming::Chart;

use super::result::{DivergenceResult, Extreme, QUANTILES};
use crate::analyses::kind::{Context, Medium, Section};
use crate::charts::{option, per_layer_lines, r, title, ChartSpec};
use crate::view::{fmt_num, Table};

/// Texts the per-text table lists (the chart shows them all).
const TEXT_ROWS: usize = 100;

fn show(v: Option<f64>) -> String {
    v.map_or("-".into(), fmt_num)
}

/// The section.
pub fn section(o: &DivergenceResult, _: &Context, _: Medium) -> Section {
    let mut charts = vec![kl_chart(o)];
    if !o.lens_labels.is_empty() {
        charts.push(lens_chart(o));
    }
    if !o.per_text.is_empty() {
        charts.push(per_text_chart(o));
    }
    Section {
        heading: format!("Divergence from {}", short_name(&o.model)),
        intro: intro(o),
        notes: notes(o),
        charts,
        tables: vec![
            figures_table(o),
            quantile_table(o),
            top_table(o),
            text_table(o),
        ],
        wide: false,
        collapsed: None,
    }
}

/// A local file's or folder's name (the intro keeps its whole path), or a Hub id as is.
fn short_name(id: &str) -> &str {
    let local = id.starts_with('/') || id.starts_with("./") || id.starts_with("../");
    match std::path::Path::new(id)
        .file_name()
        .and_then(|n| n.to_str())
    {
        Some(name) if local => name,
        _ => id,
    }
}

fn intro(o: &DivergenceResult) -> String {
    let p = &o.paired;
    format!(
        "How the new version ({}) predicts against this model, over {} positions ({} with a next token): mean KL(p ‖ q) {} nats (± {}), p99 {} nats; the two top-1 tokens agree at {} of positions; perplexity {} against {}. Per text, the new version's loss differs by {} nats on average, 95% interval [{}, {}] over {} texts ({} better, {} worse).",
        o.model,
        o.positions,
        o.predicted,
        show(o.kl.mean),
        show(o.kl.se),
        show(o.kl.quantiles.get("0.99").copied().flatten()),
        o.same_top1.rate.map_or("-".into(), |r| format!("{:.2}%", 100.0 * r)),
        show(o.ppl_new),
        show(o.ppl_base),
        show(p.mean),
        show(p.low),
        show(p.high),
        p.texts,
        p.below,
        p.above
    )
}

fn notes(o: &DivergenceResult) -> Vec<String> {
    let mut notes: Vec<String> = o.lens_note.iter().cloned().collect();
    if o.kl.zero > 0 {
        notes.push(format!(
            "{} positions have a KL of zero (below 1e-30): the log axis leaves them out.",
            o.kl.zero
        ));
    }
    if o.same_top1.ties > 0 {
        notes.push(format!(
            "At {} positions the base model's two largest logits are exactly equal; its top-1 is then the first of them.",
            o.same_top1.ties
        ));
    }
    if o.paired.beyond_noise() {
        notes.push("The per-text interval leaves out zero: the change in loss is beyond the noise of this corpus.".into());
    }
    notes
}

/// The KL histogram on a log axis, with the bins holding each quantile marked.
fn kl_chart(o: &DivergenceResult) -> ChartSpec {
    let (lo, hi) = match (o.kl.log_bins.first(), o.kl.log_bins.last()) {
        (Some(a), Some(b)) => (a.0, b.0),
        _ => (0, 0),
    };
    let edge = |k: i32| 10f64.powf(k as f64 / 10.0);
    let labels: Vec<String> = (lo..=hi).map(|k| format!("{:.2e}", edge(k))).collect();
    let mut counts = vec![0f64; labels.len()];
    for &(k, c) in &o.kl.log_bins {
        counts[(k - lo) as usize] = c as f64;
    }
    let marks: Vec<Vec<f64>> = QUANTILES
        .iter()
        .filter_map(|q| o.kl.quantiles.get(*q).copied().flatten())
        .filter(|&v| v > 0.0 && !counts.is_empty())
        .map(|v| {
            let at = ((v.log10() * 10.0).floor() as i32).clamp(lo, hi) - lo;
            vec![at as f64, counts[at as usize]]
        })
        .collect();
    let chart = Chart::new()
        .title(title(
            "KL(p ‖ q) per position",
            "positions per tenth of a decade; diamonds: the 1%, 5%, 10%, 50%, 90%, 99% and 99.9% quantiles",
        ))
        .tooltip(Tooltip::new().trigger(Trigger::Axis))
        .legend(Legend::new().top(45))
        .grid(Grid::new().top(80).bottom(50).left(70).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name("KL, nats (bin start, log scale)")
                .name_location(NameLocation::Middle)
                .name_gap(28)
                .data(labels),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name("positions").min(0))
        .series(Bar::new().name("positions").data(counts))
        .series(
            Scatter::new()
                .name("quantiles")
                .symbol(Symbol::Diamond)
                .symbol_size(10)
                .data(marks),
        );
    ChartSpec {
        title: "divergence-kl".into(),
        option: option(chart),
        height: 360,
    }
}

/// `lens_kl` over the hidden states.
fn lens_chart(o: &DivergenceResult) -> ChartSpec {
    let chart = per_layer_lines(
        "Where the two models part",
        "mean KL between the two models' logit-lens distributions at each hidden state",
        &o.lens_labels,
        &[("lens KL", &o.lens_kl)],
        "nats",
        false,
    );
    ChartSpec {
        title: "divergence-lens-kl".into(),
        option: option(chart),
        height: 340,
    }
}

/// Each text's loss difference, texts in increasing order of it.
fn per_text_chart(o: &DivergenceResult) -> ChartSpec {
    let mut diffs: Vec<f64> = o.per_text.iter().filter_map(|t| t.nll_diff).collect();
    diffs.sort_by(f64::total_cmp);
    let data: Vec<Vec<f64>> = diffs
        .iter()
        .enumerate()
        .map(|(i, &d)| vec![i as f64, r(d)])
        .collect();
    let chart = Chart::new()
        .title(title(
            "Per-text loss difference (new − base)",
            "texts in increasing order; below zero the new version predicts the text better",
        ))
        .tooltip(Tooltip::new().trigger(Trigger::Axis))
        .grid(Grid::new().top(70).bottom(50).left(70).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Value)
                .name("Texts, in order of the difference")
                .name_location(NameLocation::Middle)
                .name_gap(28)
                .min(0),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name("nats").scale(true))
        .series(
            Line::new()
                .name("nll difference")
                .show_symbol(diffs.len() <= 200)
                .data(data),
        );
    ChartSpec {
        title: "divergence-per-text".into(),
        option: option(chart),
        height: 340,
    }
}

fn figures_table(o: &DivergenceResult) -> Table {
    let row =
        |name: &str, v: Option<f64>, se: Option<f64>| vec![name.to_string(), show(v), show(se)];
    let place = |e: &Option<Extreme>| {
        e.as_ref().map_or("-".into(), |e| {
            format!(
                "{} at {} token {} {:?}",
                fmt_num(e.value),
                e.text,
                e.token_index,
                e.token
            )
        })
    };
    let p = &o.paired;
    Table {
        caption: "The figures (se: standard error)".into(),
        headers: ["figure", "value", "se"].map(String::from).to_vec(),
        rows: vec![
            row("KL mean (nats)", o.kl.mean, o.kl.se),
            vec!["KL min".into(), place(&o.kl.min), String::new()],
            vec!["KL max".into(), place(&o.kl.max), String::new()],
            row("same top-1", o.same_top1.rate, o.same_top1.se),
            row("Δp mean", o.delta_p.mean, o.delta_p.se),
            row("Δp rms", o.delta_p.rms, None),
            row("nll base (nats)", o.nll_base, None),
            row("nll new (nats)", o.nll_new, None),
            row("ppl base", o.ppl_base, None),
            row("ppl new", o.ppl_new, None),
            row(
                "ln(ppl new / ppl base)",
                o.ln_ppl_ratio.mean,
                o.ln_ppl_ratio.se,
            ),
            vec![
                "per-text difference, 95% interval".into(),
                format!("{} [{}, {}]", show(p.mean), show(p.low), show(p.high)),
                format!("{} resamples", p.resamples),
            ],
        ],
        text_columns: vec![0],
    }
}

fn quantile_table(o: &DivergenceResult) -> Table {
    Table {
        caption: "Quantiles (within 0.5%)".into(),
        headers: ["quantile", "KL (nats)", "Δp"].map(String::from).to_vec(),
        rows: QUANTILES
            .iter()
            .map(|q| {
                vec![
                    q.to_string(),
                    show(o.kl.quantiles.get(*q).copied().flatten()),
                    show(o.delta_p.quantiles.get(*q).copied().flatten()),
                ]
            })
            .collect(),
        text_columns: vec![],
    }
}

fn top_table(o: &DivergenceResult) -> Table {
    Table {
        caption: "The most divergent positions".into(),
        headers: [
            "text",
            "position",
            "context",
            "token",
            "next",
            "KL (nats)",
            "base top-1",
            "new top-1",
        ]
        .map(String::from)
        .to_vec(),
        rows: o
            .top
            .iter()
            .map(|d| {
                vec![
                    d.text.clone(),
                    d.token_index.to_string(),
                    format!("{:?}", d.context),
                    format!("{:?}", d.token),
                    d.next.as_ref().map_or("-".into(), |n| format!("{n:?}")),
                    fmt_num(d.kl),
                    format!("{:?}", d.base_top1),
                    format!("{:?}", d.new_top1),
                ]
            })
            .collect(),
        text_columns: vec![0, 2, 3, 4, 6, 7],
    }
}

fn text_table(o: &DivergenceResult) -> Table {
    Table {
        caption: format!(
            "Per text (the first {} of {})",
            o.per_text.len().min(TEXT_ROWS),
            o.per_text.len()
        ),
        headers: ["text", "tokens predicted", "nll new − base (nats)"]
            .map(String::from)
            .to_vec(),
        rows: o
            .per_text
            .iter()
            .take(TEXT_ROWS)
            .map(|t| vec![t.id.clone(), t.tokens.to_string(), show(t.nll_diff)])
            .collect(),
        text_columns: vec![0],
    }
}
