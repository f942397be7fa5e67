//! `strata compare`: two results.json of the same spec, number by number, under an
//! allclose rule (|new - base| <= atol + rtol * |base|); histograms by total variation
//! distance of their normalized counts; token ids per text; and what changed in provenance.

use serde::{Deserialize, Serialize};

use crate::results::Results;

/// Tolerances of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerances {
    /// Relative tolerance of the allclose rule. Default 1e-4.
    #[serde(default = "default_rtol")]
    pub rtol: f64,
    /// Absolute tolerance of the allclose rule. Default 1e-6.
    #[serde(default = "default_atol")]
    pub atol: f64,
    /// Largest total variation distance between a hidden state's normalized histograms
    /// (0 = identical, 1 = disjoint). Default 0.01.
    #[serde(default = "default_hist_tv")]
    pub hist_tv: f64,
}

fn default_rtol() -> f64 {
    1e-4
}
fn default_atol() -> f64 {
    1e-6
}
fn default_hist_tv() -> f64 {
    0.01
}

impl Default for Tolerances {
    fn default() -> Self {
        Self {
            rtol: default_rtol(),
            atol: default_atol(),
            hist_tv: default_hist_tv(),
        }
    }
}

impl Tolerances {
    /// Checks the values are usable; otherwise names the field, its value and a fix.
    pub fn check(&self) -> Result<(), (&'static str, f64, &'static str)> {
        for (name, v) in [
            ("rtol", self.rtol),
            ("atol", self.atol),
            ("hist_tv", self.hist_tv),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err((name, v, "must be a finite number >= 0"));
            }
        }
        if self.hist_tv > 1.0 {
            return Err((
                "hist_tv",
                self.hist_tv,
                "a total variation distance is at most 1",
            ));
        }
        Ok(())
    }
}

/// The worst deviation of one metric of one analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricDiff {
    /// Index of the analysis in the spec.
    pub analysis: usize,
    /// Its kind.
    pub kind: String,
    /// The metric (`covariance`, `r2`, `mean`, `values`, ...).
    pub metric: String,
    /// Values compared.
    pub n: usize,
    /// Values outside the allclose rule.
    pub violations: usize,
    /// Largest |new - base|.
    pub worst_abs: f64,
    /// Largest |new - base| / |base| (over nonzero base values).
    pub worst_rel: f64,
    /// Where the largest |new - base| is (labels or indices).
    pub worst_at: String,
}

/// One hidden state's histogram distance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistDiff {
    /// Index of the analysis.
    pub analysis: usize,
    /// Hidden-state label.
    pub label: String,
    /// Total variation distance of normalized counts (out-of-range counts included).
    pub tv: f64,
    /// Within `hist_tv`.
    pub pass: bool,
}

/// Charts of how one analysis moved, for the diff report (each kind's compare rule
/// chooses them: difference heatmaps, overlaid histograms, ...).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffView {
    /// Index of the analysis.
    pub analysis: usize,
    /// Its kind.
    pub kind: String,
    /// Section heading.
    pub heading: String,
    /// One sentence under it.
    pub intro: String,
    /// The charts.
    pub charts: Vec<crate::charts::ChartSpec>,
}

/// A text whose token ids changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenChange {
    /// Text id.
    pub text: String,
    /// Token count in base and new.
    pub n_tokens: (usize, usize),
    /// First position where the ids differ.
    pub first_difference: usize,
}

/// A provenance field that changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProvenanceChange {
    /// The field.
    pub field: String,
    /// Base value.
    pub base: String,
    /// New value.
    pub new: String,
}

/// The outcome of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Tolerances applied.
    pub tolerances: Tolerances,
    /// Every metric compared, in spec order.
    pub metrics: Vec<MetricDiff>,
    /// Every histogram compared.
    pub histograms: Vec<HistDiff>,
    /// Texts whose token ids changed (a failure: the inputs moved).
    pub token_changes: Vec<TokenChange>,
    /// Charts of what moved, per analysis that draws them.
    pub views: Vec<DiffView>,
    /// Provenance that changed (information, not a failure).
    pub provenance: Vec<ProvenanceChange>,
}

impl Comparison {
    /// True when every number is within tolerance and no token changed.
    pub fn pass(&self) -> bool {
        self.metrics.iter().all(|m| m.violations == 0)
            && self.histograms.iter().all(|h| h.pass)
            && self.token_changes.is_empty()
    }

    /// Analyses with a value outside tolerance, as `#i kind`.
    pub fn moved(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .metrics
            .iter()
            .filter(|m| m.violations > 0)
            .map(|m| format!("#{} {}", m.analysis, m.kind))
            .chain(
                self.histograms
                    .iter()
                    .filter(|h| !h.pass)
                    .map(|h| format!("#{} histogram", h.analysis)),
            )
            .collect();
        out.dedup();
        out
    }
}

/// Accumulates one metric of one analysis under the allclose rule.
pub struct Metric {
    m: MetricDiff,
    tol: Tolerances,
}

impl Metric {
    fn new(analysis: usize, kind: &str, metric: &str, tol: Tolerances) -> Self {
        Self {
            m: MetricDiff {
                analysis,
                kind: kind.into(),
                metric: metric.into(),
                n: 0,
                violations: 0,
                worst_abs: 0.0,
                worst_rel: 0.0,
                worst_at: String::new(),
            },
            tol,
        }
    }

    /// Compares one value; `at` names where it is (called only when needed).
    pub fn add(&mut self, base: f64, new: f64, at: impl FnOnce() -> String) {
        self.m.n += 1;
        // NaN in both is "the same number"; NaN in one is a violation.
        let d = if base.is_nan() && new.is_nan() {
            0.0
        } else {
            (new - base).abs()
        };
        let d = if d.is_nan() { f64::INFINITY } else { d };
        if d > self.tol.atol + self.tol.rtol * base.abs() {
            self.m.violations += 1;
        }
        if base != 0.0 && base.is_finite() {
            self.m.worst_rel = self.m.worst_rel.max(d / base.abs());
        }
        if d > self.m.worst_abs || self.m.worst_at.is_empty() {
            if d > self.m.worst_abs {
                self.m.worst_abs = d;
            }
            self.m.worst_at = at();
        }
    }

    /// Compares values that may be undefined: both undefined is equal, one is a violation.
    pub fn opt(&mut self, base: Option<f64>, new: Option<f64>, at: impl FnOnce() -> String) {
        match (base, new) {
            (Some(b), Some(n)) => self.add(b, n, at),
            (None, None) => self.m.n += 1,
            (b, n) => self.add(b.unwrap_or(f64::NAN), n.unwrap_or(f64::NAN), at),
        }
    }
}

/// What a kind's compare rule reports to: one analysis's metrics, histogram distances
/// and diff views.
pub struct Comparer<'a> {
    /// Index of the analysis in the spec.
    pub analysis: usize,
    /// Its kind.
    pub kind: &'static str,
    /// Tolerances applied.
    pub tol: Tolerances,
    out: &'a mut Comparison,
}

impl Comparer<'_> {
    /// A metric to fill, then [`Comparer::push`].
    pub fn metric(&self, name: &str) -> Metric {
        Metric::new(self.analysis, self.kind, name, self.tol)
    }

    /// Records a filled metric.
    pub fn push(&mut self, m: Metric) {
        self.out.metrics.push(m.m);
    }

    /// Records a hidden state's histogram distance (total variation).
    pub fn histogram(&mut self, label: &str, tv: f64) {
        self.out.histograms.push(HistDiff {
            analysis: self.analysis,
            label: label.to_string(),
            tv,
            pass: tv <= self.tol.hist_tv,
        });
    }

    /// Adds charts of what moved to the diff report.
    pub fn view(&mut self, heading: String, intro: String, charts: Vec<crate::charts::ChartSpec>) {
        self.out.views.push(DiffView {
            analysis: self.analysis,
            kind: self.kind.to_string(),
            heading,
            intro,
            charts,
        });
    }

    /// Compares one optional value per label as metric `name`.
    pub fn per_label(
        &mut self,
        name: &str,
        labels: &[String],
        base: &[Option<f64>],
        new: &[Option<f64>],
    ) {
        let mut m = self.metric(name);
        for (i, (x, y)) in base.iter().zip(new).enumerate() {
            m.opt(*x, *y, || labels[i].clone());
        }
        self.push(m);
    }

    /// Compares per-label ranked lists value by value, rank by rank, as metric `name`. What
    /// sits at a rank is not compared: two near-equal entries may swap places under a
    /// numerically harmless change. A rank present on one side only is a violation.
    pub fn ranked<T>(
        &mut self,
        name: &str,
        labels: &[String],
        base: &[Vec<T>],
        new: &[Vec<T>],
        value: impl Fn(&T) -> f64,
    ) {
        let mut m = self.metric(name);
        for (l, (xa, xb)) in base.iter().zip(new).enumerate() {
            for r in 0..xa.len().max(xb.len()) {
                m.opt(xa.get(r).map(&value), xb.get(r).map(&value), || {
                    format!("{}, rank {}", labels[l], r + 1)
                });
            }
        }
        self.push(m);
    }

    /// Fails when a setting of the analysis differs: results of different specs.
    pub fn same<T: PartialEq + std::fmt::Debug>(
        &self,
        what: &str,
        a: &T,
        b: &T,
    ) -> Result<(), Mismatch> {
        same(
            &format!("analysis #{} ({}) {what}", self.analysis, self.kind),
            a,
            b,
        )
    }
}

/// Why two results cannot be compared.
#[derive(Debug, thiserror::Error)]
#[error("results of different specs: {0}")]
pub struct Mismatch(pub String);

fn same<T: PartialEq + std::fmt::Debug>(what: &str, a: &T, b: &T) -> Result<(), Mismatch> {
    if a == b {
        Ok(())
    } else {
        Err(Mismatch(format!("{what}: {a:?} in BASE, {b:?} in NEW")))
    }
}

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
        let mut c = Comparer {
            analysis: i,
            kind: a.kind(),
            tol,
            out: &mut out,
        };
        a.compare(b, &mut c)?;
    }
    Ok(out)
}

/// Total variation distance between two count vectors, each normalized to sum 1.
pub fn total_variation(a: &[u64], b: &[u64]) -> f64 {
    let (sa, sb) = (a.iter().sum::<u64>() as f64, b.iter().sum::<u64>() as f64);
    if sa == 0.0 && sb == 0.0 {
        return 0.0;
    }
    if sa == 0.0 || sb == 0.0 {
        return 1.0;
    }
    0.5 * a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 / sa - y as f64 / sb).abs())
        .sum::<f64>()
}

fn provenance_changes(base: &Results, new: &Results) -> Vec<ProvenanceChange> {
    let (pa, pb) = (&base.provenance, &new.provenance);
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "—".into());
    let mut fields = vec![
        ("model id", pa.model.id.clone(), pb.model.id.clone()),
        (
            "model revision",
            opt(&pa.model.revision),
            opt(&pb.model.revision),
        ),
        ("model commit", opt(&pa.model.commit), opt(&pb.model.commit)),
        (
            "config sha256",
            pa.model.config_sha256.clone(),
            pb.model.config_sha256.clone(),
        ),
        (
            "spec sha256",
            pa.spec_sha256.clone(),
            pb.spec_sha256.clone(),
        ),
        (
            "corpus sha256",
            opt(&pa.corpus_sha256),
            opt(&pb.corpus_sha256),
        ),
        (
            "dataset commit",
            opt(&pa.dataset.as_ref().map(|d| d.commit.clone())),
            opt(&pb.dataset.as_ref().map(|d| d.commit.clone())),
        ),
        (
            "strata version",
            pa.strata_version.clone(),
            pb.strata_version.clone(),
        ),
        (
            "strata commit",
            pa.strata_commit.clone(),
            pb.strata_commit.clone(),
        ),
        (
            "candle version",
            pa.candle_version.clone(),
            pb.candle_version.clone(),
        ),
    ];
    let files = |m: &std::collections::BTreeMap<String, String>,
                 n: &std::collections::BTreeMap<String, String>,
                 what: &str| {
        let names: std::collections::BTreeSet<&String> = m.keys().chain(n.keys()).collect();
        names
            .into_iter()
            .map(|f| {
                (
                    format!("{what} sha256 {f}"),
                    m.get(f).cloned().unwrap_or_else(|| "—".into()),
                    n.get(f).cloned().unwrap_or_else(|| "—".into()),
                )
            })
            .collect::<Vec<_>>()
    };
    let owned: Vec<(String, String, String)> = files(
        &pa.model.weights_sha256,
        &pb.model.weights_sha256,
        "weights",
    )
    .into_iter()
    .chain(files(
        &pa.model.tokenizer_sha256,
        &pb.model.tokenizer_sha256,
        "tokenizer",
    ))
    .collect();
    let mut out: Vec<ProvenanceChange> = fields
        .drain(..)
        .map(|(f, a, b)| (f.to_string(), a, b))
        .chain(owned)
        .filter(|(_, a, b)| a != b)
        .map(|(field, base, new)| ProvenanceChange { field, base, new })
        .collect();
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

/// The terminal summary: verdict first, then the worst deviations.
pub fn summary_text(c: &Comparison) -> String {
    use std::fmt::Write;
    let t = c.tolerances;
    let mut s = String::new();
    let bad_metrics = c.metrics.iter().filter(|m| m.violations > 0).count();
    let bad_hists = c.histograms.iter().filter(|h| !h.pass).count();
    if c.pass() {
        let _ = writeln!(s, "PASS: {} metrics and {} histograms within tolerance (rtol {:e}, atol {:e}, hist_tv {})", c.metrics.len(), c.histograms.len(), t.rtol, t.atol, t.hist_tv);
    } else {
        let _ = writeln!(
            s,
            "FAIL: {bad_metrics} of {} metrics, {bad_hists} of {} histograms outside tolerance, {} text(s) with changed tokens (rtol {:e}, atol {:e}, hist_tv {}); moved: {}",
            c.metrics.len(),
            c.histograms.len(),
            c.token_changes.len(),
            t.rtol,
            t.atol,
            t.hist_tv,
            c.moved().join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\n{:<16} {:<11} {:>7} {:>11} {:>11}  {:<24} verdict",
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
        let _ = writeln!(
            s,
            "{:<16} {:<11} {:>7} {:>11.3e} {:>11.3e}  {:<24} {}",
            format!("#{} {}", m.analysis, m.kind),
            m.metric,
            m.n,
            m.worst_abs,
            m.worst_rel,
            m.worst_at,
            if m.violations == 0 {
                "ok".to_string()
            } else {
                format!("FAIL ({} outside)", m.violations)
            }
        );
    }
    if !c.histograms.is_empty() {
        let mut hs: Vec<&HistDiff> = c.histograms.iter().collect();
        hs.sort_by(|a, b| b.tv.total_cmp(&a.tv).then(a.analysis.cmp(&b.analysis)));
        let worst = hs[0];
        let _ = writeln!(
            s,
            "\nhistograms: worst total variation {:.3e} (#{} {}), {} of {} within {}",
            worst.tv,
            worst.analysis,
            worst.label,
            c.histograms.len() - bad_hists,
            c.histograms.len(),
            t.hist_tv
        );
        for h in hs.iter().filter(|h| !h.pass) {
            let _ = writeln!(s, "  #{} {:<14} tv {:.3e} FAIL", h.analysis, h.label, h.tv);
        }
    }
    if c.token_changes.is_empty() {
        let _ = writeln!(s, "\ntoken ids: unchanged");
    } else {
        let _ = writeln!(
            s,
            "\ntoken ids changed in {} text(s):",
            c.token_changes.len()
        );
        for t in &c.token_changes {
            let _ = writeln!(
                s,
                "  {}: {} -> {} tokens, first difference at {}",
                t.text, t.n_tokens.0, t.n_tokens.1, t.first_difference
            );
        }
    }
    if c.provenance.is_empty() {
        let _ = writeln!(s, "provenance: unchanged");
    } else {
        let _ = writeln!(s, "provenance changed:");
        for p in &c.provenance {
            let _ = writeln!(s, "  {}: {} -> {}", p.field, p.base, p.new);
        }
    }
    s
}
