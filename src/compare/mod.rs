//! `strata compare`: two results.json of the same spec, number by number, under an
//! allclose rule (|new - base| <= atol + rtol * |base|); histograms by total variation
//! distance of their normalized counts; token ids per text; and what changed in provenance.

pub mod rules;

use crate::results::Results;
use rules::same;
pub use rules::{
    total_variation, Comparer, Comparison, HistDiff, MetricDiff, Mismatch, PairedDiff,
    ProvenanceChange, TokenChange, Tolerances, Verdict,
};

/// Compares `new` against `base`, pairing per-text values with the default resamples.
pub fn compare(base: &Results, new: &Results, tol: Tolerances) -> Result<Comparison, Mismatch> {
    compare_with(base, new, tol, crate::stats::bootstrap::DEFAULT_RESAMPLES)
}

/// Compares `new` against `base`; per-text values are paired by text id with a bootstrap
/// of `resamples` resamples, seeded by the base's spec seed. Results over different texts
/// still compare their per-text values over the texts in both, and name the others.
pub fn compare_with(
    base: &Results,
    new: &Results,
    tol: Tolerances,
    resamples: usize,
) -> Result<Comparison, Mismatch> {
    same("name", &base.name, &new.name)?;
    same(
        "analyses",
        &base.analyses.iter().map(|a| a.kind()).collect::<Vec<_>>(),
        &new.analyses.iter().map(|a| a.kind()).collect::<Vec<_>>(),
    )?;
    same(
        "exclude_first_token",
        &base.settings.exclude_first_token,
        &new.settings.exclude_first_token,
    )?;
    let missing_texts = missing_texts(base, new);
    let mut out = Comparison {
        tolerances: tol,
        metrics: Vec::new(),
        histograms: Vec::new(),
        token_changes: if missing_texts.is_empty() {
            token_changes(base, new)
        } else {
            Vec::new()
        },
        views: Vec::new(),
        provenance: provenance_changes(base, new),
        paired: Vec::new(),
        bootstrap: (resamples, base.settings.seed),
        missing_texts,
        skipped: Vec::new(),
    };
    for (i, (a, b)) in base.analyses.iter().zip(&new.analyses).enumerate() {
        let mut c = Comparer::new(i, a.kind(), tol, &mut out);
        match a.compare(b, &mut c) {
            Err(m) if !out.missing_texts.is_empty() => out.skipped.push(m.0),
            r => r?,
        }
    }
    Ok(out)
}

/// The listed text ids in one result and not the other (`base only: ID`, `new only: ID`),
/// or the count when only the unlisted texts can differ.
fn missing_texts(base: &Results, new: &Results) -> Vec<String> {
    let ids = |r: &Results| -> std::collections::BTreeSet<String> {
        r.texts.iter().map(|t| t.id.clone()).collect()
    };
    let (a, b) = (ids(base), ids(new));
    let mut out: Vec<String> = base
        .texts
        .iter()
        .filter(|t| !b.contains(&t.id))
        .map(|t| format!("{} (base only)", t.id))
        .collect();
    out.extend(
        new.texts
            .iter()
            .filter(|t| !a.contains(&t.id))
            .map(|t| format!("{} (new only)", t.id)),
    );
    if out.is_empty() && base.corpus.texts != new.corpus.texts {
        out.push(format!(
            "{} texts in the base, {} in the new result (beyond the ones results.json lists)",
            base.corpus.texts, new.corpus.texts
        ));
    }
    out
}

/// The listed texts whose token ids changed, or the corpus digest's change when only the
/// unlisted ones can have.
fn token_changes(base: &Results, new: &Results) -> Vec<TokenChange> {
    let mut token_changes: Vec<TokenChange> = base
        .texts
        .iter()
        .zip(&new.texts)
        .filter(|(b, n)| b.token_ids != n.token_ids)
        .map(|(b, n)| TokenChange {
            text: b.id.clone(),
            n_tokens: (b.n_tokens, n.n_tokens),
            first_difference: b
                .token_ids
                .iter()
                .zip(&n.token_ids)
                .take_while(|(x, y)| x == y)
                .count(),
        })
        .collect();
    if token_changes.is_empty() && base.corpus.sha256 != new.corpus.sha256 {
        // Only the texts results.json does not list can differ: their digest says so.
        token_changes.push(TokenChange {
            text: format!(
                "(a text after the first {} listed: the corpus digests differ)",
                base.texts.len()
            ),
            n_tokens: (base.corpus.tokens as usize, new.corpus.tokens as usize),
            first_difference: 0,
        });
    }
    token_changes
}

/// Every provenance row (as the report shows them) whose value differs, in the report's
/// order; a row only one side has shows `—` on the other.
fn provenance_changes(base: &Results, new: &Results) -> Vec<ProvenanceChange> {
    let (a, b) = (
        crate::view::provenance::provenance_rows(base),
        crate::view::provenance::provenance_rows(new),
    );
    let find = |rows: &[(String, String)], field: &str| {
        rows.iter()
            .find(|(f, _)| f == field)
            .map_or_else(|| "—".to_string(), |(_, v)| v.clone())
    };
    let mut fields: Vec<&String> = a.iter().map(|(f, _)| f).collect();
    for (f, _) in &b {
        if !fields.contains(&f) {
            fields.push(f);
        }
    }
    fields
        .into_iter()
        .map(|f| ProvenanceChange {
            field: f.clone(),
            base: find(&a, f),
            new: find(&b, f),
        })
        .filter(|c| c.base != c.new)
        .collect()
}

/// The terminal summary: verdict first, then the worst deviations.
pub fn summary_text(c: &Comparison) -> String {
    let mut s = verdict_line(c);
    s.push_str(&metrics_text(c));
    s.push_str(&paired_text(c));
    s.push_str(&histograms_text(c));
    s.push_str(&tokens_text(c));
    s.push_str(&provenance_text(c));
    s
}

/// `PASS: ...` or `FAIL: ...`, with the counts, the tolerances and what moved.
fn verdict_line(c: &Comparison) -> String {
    let t = c.tolerances;
    if c.pass() {
        return format!("PASS: {} metrics and {} histograms within tolerance (rtol {:e}, atol {:e}, hist_tv {})\n", c.metrics.len(), c.histograms.len(), t.rtol, t.atol, t.hist_tv);
    }
    let bad_metrics = c.metrics.iter().filter(|m| m.violations > 0).count();
    let bad_hists = c.histograms.iter().filter(|h| !h.pass).count();
    format!(
        "FAIL: {bad_metrics} of {} metrics, {bad_hists} of {} histograms outside tolerance, {} text(s) with changed tokens (rtol {:e}, atol {:e}, hist_tv {}); moved: {}\n",
        c.metrics.len(),
        c.histograms.len(),
        c.token_changes.len(),
        t.rtol,
        t.atol,
        t.hist_tv,
        c.moved().join(", ")
    )
}

/// The metric column's width: 13, or the longest metric name (`explained_variance`).
fn metric_width(c: &Comparison) -> usize {
    c.metrics
        .iter()
        .map(|m| m.metric.chars().count())
        .chain(c.paired.iter().map(|p| p.metric.chars().count()))
        .fold(13, usize::max)
}

/// One line per metric, the most violations (then the largest deviation) first.
fn metrics_text(c: &Comparison) -> String {
    let w = metric_width(c);
    let mut s = format!(
        "\n{:<16} {:<w$} {:>7} {:>11} {:>11}  {:<24} verdict\n",
        "analysis", "metric", "values", "max |diff|", "max rel", "worst at"
    );
    let mut rows: Vec<&MetricDiff> = c.metrics.iter().collect();
    rows.sort_by(|a, b| {
        b.violations
            .cmp(&a.violations)
            .then(b.worst_abs.total_cmp(&a.worst_abs))
            .then(a.analysis.cmp(&b.analysis))
    });
    for m in rows {
        let verdict = if m.violations == 0 {
            "ok".to_string()
        } else {
            format!("FAIL ({} outside)", m.violations)
        };
        s.push_str(&format!(
            "{:<16} {:<w$} {:>7} {:>11.3e} {:>11.3e}  {:<24} {verdict}\n",
            format!("#{} {}", m.analysis, m.kind),
            m.metric,
            m.n,
            m.worst_abs,
            m.worst_rel,
            m.worst_at,
        ));
    }
    s
}

/// One line per paired metric, with its interval and verdict; then the texts in one
/// result only, and the rules the differing corpora left out.
fn paired_text(c: &Comparison) -> String {
    let w = metric_width(c);
    let mut s = String::new();
    if !c.paired.is_empty() {
        s.push_str(&format!(
            "\npaired by text id (mean of new - base, 95% bootstrap interval over texts, {} resamples):\n",
            c.bootstrap.0
        ));
    }
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:+.4e}"));
    for p in &c.paired {
        s.push_str(&format!(
            "{:<16} {:<w$} {:>5} texts  {} [{}, {}]  {} better, {} worse  {}\n",
            format!("#{} {}", p.analysis, p.kind),
            p.metric,
            p.paired.texts,
            show(p.paired.mean),
            show(p.paired.low),
            show(p.paired.high),
            p.paired.below,
            p.paired.above,
            p.verdict
        ));
        for id in p
            .only_base
            .iter()
            .map(|i| (i, "base"))
            .chain(p.only_new.iter().map(|i| (i, "new")))
        {
            s.push_str(&format!(
                "  text `{}` has a value in the {} result only\n",
                id.0, id.1
            ));
        }
    }
    if !c.missing_texts.is_empty() {
        s.push_str(&format!(
            "\ntexts in one result only: {}\n",
            c.missing_texts.join(", ")
        ));
    }
    for m in &c.skipped {
        s.push_str(&format!("not compared (the corpora differ): {m}\n"));
    }
    s
}

/// The worst histogram distance, and every histogram outside tolerance.
fn histograms_text(c: &Comparison) -> String {
    let mut hs: Vec<&HistDiff> = c.histograms.iter().collect();
    hs.sort_by(|a, b| b.tv.total_cmp(&a.tv).then(a.analysis.cmp(&b.analysis)));
    let Some(worst) = hs.first() else {
        return String::new();
    };
    let bad = hs.iter().filter(|h| !h.pass).count();
    let mut s = format!(
        "\nhistograms: worst total variation {:.3e} (#{} {}), {} of {} within {}\n",
        worst.tv,
        worst.analysis,
        worst.label,
        hs.len() - bad,
        hs.len(),
        c.tolerances.hist_tv
    );
    for h in hs.iter().filter(|h| !h.pass) {
        s.push_str(&format!(
            "  #{} {:<14} tv {:.3e} FAIL\n",
            h.analysis, h.label, h.tv
        ));
    }
    s
}

/// The texts whose token ids changed, and where.
fn tokens_text(c: &Comparison) -> String {
    if c.token_changes.is_empty() {
        return "\ntoken ids: unchanged\n".into();
    }
    let mut s = format!(
        "\ntoken ids changed in {} text(s):\n",
        c.token_changes.len()
    );
    for t in &c.token_changes {
        s.push_str(&format!(
            "  {}: {} -> {} tokens, first difference at {}\n",
            t.text, t.n_tokens.0, t.n_tokens.1, t.first_difference
        ));
    }
    s
}

/// The provenance rows that changed.
fn provenance_text(c: &Comparison) -> String {
    if c.provenance.is_empty() {
        return "provenance: unchanged\n".into();
    }
    let mut s = String::from("provenance changed:\n");
    for p in &c.provenance {
        s.push_str(&format!("  {}: {} -> {}\n", p.field, p.base, p.new));
    }
    s
}
