//! `strata compare`: two results.json of the same spec, number by number, under an
//! allclose rule (|new - base| <= atol + rtol * |base|); histograms by total variation
//! distance of their normalized counts; token ids per text; and what changed in provenance.

pub mod rules;

use crate::results::Results;
use rules::same;
pub use rules::{
    total_variation, Comparer, Comparison, HistDiff, MetricDiff, Mismatch, ProvenanceChange,
    TokenChange, Tolerances,
};

/// Compares `new` against `base`.
pub fn compare(base: &Results, new: &Results, tol: Tolerances) -> Result<Comparison, Mismatch> {
    same("name", &base.name, &new.name)?;
    same("number of texts", &base.corpus.texts, &new.corpus.texts)?;
    same(
        "text ids",
        &base.texts.iter().map(|t| &t.id).collect::<Vec<_>>(),
        &new.texts.iter().map(|t| &t.id).collect::<Vec<_>>(),
    )?;
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

    let token_changes: Vec<TokenChange> = base
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

    let mut token_changes = token_changes;
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
    let mut out = Comparison {
        tolerances: tol,
        metrics: Vec::new(),
        histograms: Vec::new(),
        token_changes,
        views: Vec::new(),
        provenance: provenance_changes(base, new),
    };
    for (i, (a, b)) in base.analyses.iter().zip(&new.analyses).enumerate() {
        let mut c = Comparer::new(i, a.kind(), tol, &mut out);
        a.compare(b, &mut c)?;
    }
    Ok(out)
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

/// One line per metric, the most violations (then the largest deviation) first.
fn metrics_text(c: &Comparison) -> String {
    let mut s = format!(
        "\n{:<16} {:<11} {:>7} {:>11} {:>11}  {:<24} verdict\n",
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
            "{:<16} {:<11} {:>7} {:>11.3e} {:>11.3e}  {:<24} {verdict}\n",
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
