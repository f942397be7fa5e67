//! `strata compare`: two results.json of the same spec, number by number, under an
//! allclose rule (|new - base| <= atol + rtol * |base|); histograms by total variation
//! distance of their normalized counts; token ids per text; and what changed in provenance.

use serde::{Deserialize, Serialize};

use crate::results::{AnalysisResult, Results};

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

/// new - base of a covariance analysis, for the diff report's heatmaps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatrixDiff {
    /// Index of the analysis.
    pub analysis: usize,
    /// Hidden-state labels.
    pub labels: Vec<String>,
    /// new - base covariance.
    pub covariance: Vec<Vec<f64>>,
    /// new - base R^2 (`null` where either is undefined).
    pub r2: Vec<Vec<Option<f64>>>,
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
    /// Covariance and R^2 differences, per covariance analysis.
    pub matrices: Vec<MatrixDiff>,
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

/// Accumulates one metric.
struct Acc {
    m: MetricDiff,
    tol: Tolerances,
}

impl Acc {
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

    fn add(&mut self, base: f64, new: f64, at: impl FnOnce() -> String) {
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

    fn opt(&mut self, base: Option<f64>, new: Option<f64>, at: impl FnOnce() -> String) {
        match (base, new) {
            (Some(b), Some(n)) => self.add(b, n, at),
            (None, None) => self.m.n += 1,
            (b, n) => self.add(b.unwrap_or(f64::NAN), n.unwrap_or(f64::NAN), at),
        }
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

    let mut metrics = Vec::new();
    let mut histograms = Vec::new();
    let mut matrices = Vec::new();
    for (i, (a, b)) in base.analyses.iter().zip(&new.analyses).enumerate() {
        let kind = a.kind();
        match (a, b) {
            (
                AnalysisResult::Scatter {
                    label: la,
                    text: ta,
                    values: va,
                    ..
                },
                AnalysisResult::Scatter {
                    label: lb,
                    text: tb,
                    values: vb,
                    ..
                },
            ) => {
                same(&format!("analysis #{i} (scatter) hidden state"), la, lb)?;
                same(&format!("analysis #{i} (scatter) text"), ta, tb)?;
                if va.len() == vb.len() {
                    let mut acc = Acc::new(i, kind, "values", tol);
                    for (t, (ra, rb)) in va.iter().zip(vb).enumerate() {
                        for (d, (x, y)) in ra.iter().zip(rb).enumerate() {
                            acc.add(*x as f64, *y as f64, || format!("row {t}, dim {d}"));
                        }
                    }
                    metrics.push(acc.m);
                }
                // Different lengths: the token ids changed, reported there.
            }
            (
                AnalysisResult::Covariance {
                    labels: la,
                    covariance: ca,
                    r2: ra,
                    means: ma,
                    ..
                },
                AnalysisResult::Covariance {
                    labels: lb,
                    covariance: cb,
                    r2: rb,
                    means: mb,
                    ..
                },
            ) => {
                same(&format!("analysis #{i} (covariance) hidden states"), la, lb)?;
                let mut cov = Acc::new(i, kind, "covariance", tol);
                let mut r2 = Acc::new(i, kind, "r2", tol);
                let mut mean = Acc::new(i, kind, "means", tol);
                for p in 0..la.len() {
                    mean.add(ma[p], mb[p], || la[p].clone());
                    for q in 0..la.len() {
                        cov.add(ca[p][q], cb[p][q], || format!("{} x {}", la[p], la[q]));
                        r2.opt(ra[p][q], rb[p][q], || format!("{} x {}", la[p], la[q]));
                    }
                }
                metrics.extend([cov.m, r2.m, mean.m]);
                matrices.push(MatrixDiff {
                    analysis: i,
                    labels: la.clone(),
                    covariance: ca
                        .iter()
                        .zip(cb)
                        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| q - p).collect())
                        .collect(),
                    r2: ra
                        .iter()
                        .zip(rb)
                        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| Some((*q)? - (*p)?)).collect())
                        .collect(),
                });
            }
            (
                AnalysisResult::Pairplot {
                    labels: la,
                    columns: ca,
                    point_index: pa,
                    ..
                },
                AnalysisResult::Pairplot {
                    labels: lb,
                    columns: cb,
                    point_index: pb,
                    ..
                },
            ) => {
                same(&format!("analysis #{i} (pairplot) hidden states"), la, lb)?;
                if pa == pb {
                    let mut acc = Acc::new(i, kind, "points", tol);
                    for (l, (x, y)) in ca.iter().zip(cb).enumerate() {
                        for (k, (p, q)) in x.iter().zip(y).enumerate() {
                            acc.add(*p as f64, *q as f64, || format!("{}, point {k}", la[l]));
                        }
                    }
                    metrics.push(acc.m);
                }
            }
            (
                AnalysisResult::Histogram {
                    labels: la,
                    edges: ea,
                    counts: ca,
                    underflow: ua,
                    overflow: oa,
                    ..
                },
                AnalysisResult::Histogram {
                    labels: lb,
                    edges: eb,
                    counts: cb,
                    underflow: ub,
                    overflow: ob,
                    ..
                },
            ) => {
                same(&format!("analysis #{i} (histogram) hidden states"), la, lb)?;
                same(&format!("analysis #{i} (histogram) edges"), ea, eb)?;
                for l in 0..la.len() {
                    // Out-of-range counts are part of the distribution too.
                    let full = |c: &[u64], u: u64, o: u64| -> Vec<u64> {
                        std::iter::once(u)
                            .chain(c.iter().copied())
                            .chain(std::iter::once(o))
                            .collect()
                    };
                    let tv =
                        total_variation(&full(&ca[l], ua[l], oa[l]), &full(&cb[l], ub[l], ob[l]));
                    histograms.push(HistDiff {
                        analysis: i,
                        label: la[l].clone(),
                        tv,
                        pass: tv <= tol.hist_tv,
                    });
                }
            }
            (AnalysisResult::Summary { rows: ra }, AnalysisResult::Summary { rows: rb }) => {
                same(
                    &format!("analysis #{i} (summary) hidden states"),
                    &ra.iter().map(|r| &r.label).collect::<Vec<_>>(),
                    &rb.iter().map(|r| &r.label).collect::<Vec<_>>(),
                )?;
                type Get = fn(&crate::results::SummaryRow) -> Option<f64>;
                let fields: [(&str, Get); 8] = [
                    ("mean", |r| r.mean),
                    ("std", |r| r.std),
                    ("min", |r| r.min),
                    ("max", |r| r.max),
                    ("skewness", |r| r.skewness),
                    ("kurtosis", |r| r.kurtosis),
                    ("max_abs", |r| r.max_abs),
                    ("count", |r| Some(r.count as f64)),
                ];
                for (name, get) in fields {
                    let mut acc = Acc::new(i, kind, name, tol);
                    for (x, y) in ra.iter().zip(rb) {
                        acc.opt(get(x), get(y), || x.label.clone());
                    }
                    metrics.push(acc.m);
                }
            }
            (
                AnalysisResult::Outliers {
                    labels: la,
                    top: ta,
                    ..
                },
                AnalysisResult::Outliers {
                    labels: lb,
                    top: tb,
                    ..
                },
            ) => {
                same(&format!("analysis #{i} (outliers) hidden states"), la, lb)?;
                // Values rank by rank. Positions are not compared: two near-equal values may
                // swap ranks under a numerically harmless change.
                let mut values = Acc::new(i, kind, "values", tol);
                for (l, (xa, xb)) in ta.iter().zip(tb).enumerate() {
                    for r in 0..xa.len().max(xb.len()) {
                        let (a, b) = (xa.get(r), xb.get(r));
                        values.opt(a.map(|o| o.value), b.map(|o| o.value), || {
                            format!("{}, rank {}", la[l], r + 1)
                        });
                    }
                }
                metrics.push(values.m);
            }
            _ => unreachable!("kinds checked equal above"),
        }
    }

    Ok(Comparison {
        tolerances: tol,
        metrics,
        histograms,
        token_changes,
        matrices,
        provenance: provenance_changes(base, new),
    })
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
