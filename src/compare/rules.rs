//! The rules a comparison applies, below the analysis kinds that use them: the
//! tolerances, the allclose metric, what a kind's compare rule adds to ([`Comparer`]),
//! and the comparison it builds.

use serde::{Deserialize, Serialize};

/// Tolerances of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// How a paired metric moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The bootstrap interval of the mean difference holds zero.
    WithinNoise,
    /// The interval leaves out zero, but the mean difference is within the tolerance.
    BeyondNoiseWithinTolerance,
    /// The interval leaves out zero and the mean difference exceeds the tolerance (a
    /// failure).
    BeyondTolerance,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WithinNoise => "within noise",
            Self::BeyondNoiseWithinTolerance => "beyond noise, within tolerance",
            Self::BeyondTolerance => "beyond tolerance",
        })
    }
}

/// A per-text metric of two results, paired by text id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedDiff {
    /// Index of the analysis.
    pub analysis: usize,
    /// Its kind.
    pub kind: String,
    /// The per-text metric.
    pub metric: String,
    /// Mean of the base values over the paired texts.
    pub base_mean: Option<f64>,
    /// The mean of `new - base` per text, its bootstrap interval and the signs.
    pub paired: crate::stats::bootstrap::Paired,
    /// The verdict.
    pub verdict: Verdict,
    /// Text ids with a value in the base only.
    pub only_base: Vec<String>,
    /// Text ids with a value in the new result only.
    pub only_new: Vec<String>,
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
    /// Per-text metrics paired by text id.
    pub paired: Vec<PairedDiff>,
    /// The paired bootstrap's resamples and seed (the base's spec seed).
    pub bootstrap: (usize, u64),
    /// Text ids in one result and not the other.
    pub missing_texts: Vec<String>,
    /// Analyses whose corpus-level rule could not run because the corpora differ, and why.
    pub skipped: Vec<String>,
}

impl Comparison {
    /// True when every number is within tolerance and no token changed.
    pub fn pass(&self) -> bool {
        self.metrics.iter().all(|m| m.violations == 0)
            && self.histograms.iter().all(|h| h.pass)
            && self.token_changes.is_empty()
            && self.missing_texts.is_empty()
            && self
                .paired
                .iter()
                .all(|p| p.verdict != Verdict::BeyondTolerance)
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
            .chain(
                self.paired
                    .iter()
                    .filter(|p| p.verdict == Verdict::BeyondTolerance)
                    .map(|p| format!("#{} {} {}", p.analysis, p.kind, p.metric)),
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

impl<'a> Comparer<'a> {
    /// The rule of analysis `analysis` (a `kind`), adding to `out`.
    pub fn new(
        analysis: usize,
        kind: &'static str,
        tol: Tolerances,
        out: &'a mut Comparison,
    ) -> Self {
        Self {
            analysis,
            kind,
            tol,
            out,
        }
    }
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

    /// Pairs a per-text metric of the two results by text id: the mean of `new - base`
    /// over the texts in both, its paired bootstrap interval, and the verdict; the ids
    /// in one only are named.
    pub fn paired(&mut self, metric: &str, base: &[(String, f64)], new: &[(String, f64)]) {
        use std::collections::BTreeMap;
        let theirs: BTreeMap<&str, f64> = new.iter().map(|(id, v)| (id.as_str(), *v)).collect();
        let ours: BTreeMap<&str, f64> = base.iter().map(|(id, v)| (id.as_str(), *v)).collect();
        let pairs: Vec<(f64, f64)> = base
            .iter()
            .filter_map(|(id, b)| theirs.get(id.as_str()).map(|n| (*b, *n)))
            .collect();
        let only = |a: &[(String, f64)], other: &BTreeMap<&str, f64>| -> Vec<String> {
            a.iter()
                .filter(|(id, _)| !other.contains_key(id.as_str()))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let diffs: Vec<f64> = pairs.iter().map(|(b, n)| n - b).collect();
        let (resamples, seed) = self.out.bootstrap;
        let paired = crate::stats::bootstrap::paired(&diffs, resamples, seed);
        let base_mean = (!pairs.is_empty())
            .then(|| pairs.iter().map(|p| p.0).sum::<f64>() / pairs.len() as f64);
        let limit = self.tol.atol + self.tol.rtol * base_mean.unwrap_or(0.0).abs();
        let verdict = match paired.mean {
            _ if !paired.beyond_noise() => Verdict::WithinNoise,
            Some(m) if m.abs() > limit => Verdict::BeyondTolerance,
            _ => Verdict::BeyondNoiseWithinTolerance,
        };
        self.out.paired.push(PairedDiff {
            analysis: self.analysis,
            kind: self.kind.to_string(),
            metric: metric.to_string(),
            base_mean,
            paired,
            verdict,
            only_base: only(base, &theirs),
            only_new: only(new, &ours),
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
    pub fn same<T: PartialEq + std::fmt::Debug + ?Sized>(
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

/// `Ok` when `a == b`, else a mismatch naming `what` and both values.
pub fn same<T: PartialEq + std::fmt::Debug + ?Sized>(
    what: &str,
    a: &T,
    b: &T,
) -> Result<(), Mismatch> {
    if a == b {
        Ok(())
    } else {
        Err(Mismatch(format!("{what}: {a:?} in BASE, {b:?} in NEW")))
    }
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
