//! `strata sweep`: one spec over several revisions of its Hub model (training checkpoints,
//! or a model's versions over time). Each revision's run is an ordinary report in its own
//! folder; this module reads those results back and builds `sweep.json`: every statistic
//! with one value per hidden state, as a series across revisions, and `strata compare`
//! between consecutive revisions.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::analyses::Scalars;
use crate::compare::rules::Tolerances;
use crate::results::Results;

/// Version of the `sweep.json` schema; bumped on any incompatible change.
pub const SWEEP_SCHEMA_VERSION: u32 = 1;

/// A whole `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// Schema version of this file (currently 1).
    pub schema_version: u32,
    /// The experiment's name.
    pub name: String,
    /// The report title.
    pub title: String,
    /// The Hub model swept.
    pub model: String,
    /// sha256 of the spec file every revision ran.
    pub spec_sha256: String,
    /// The revisions, in the order `--revisions` gave them.
    pub revisions: Vec<SweepRevision>,
    /// Tolerances of the comparisons between consecutive revisions (the spec's
    /// `compare`, else the defaults).
    pub tolerances: Tolerances,
    /// Every statistic with one value per hidden state, across the revisions, in spec
    /// order of the analyses.
    pub series: Vec<Series>,
    /// `strata compare` of each revision against the one before it.
    pub steps: Vec<Step>,
}

/// One revision of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepRevision {
    /// The revision as given (branch, tag or commit).
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
    /// Its folder under the sweep's, holding `results.json` and `index.html`.
    pub folder: String,
    /// sha256 of its `results.json`.
    pub results_sha256: String,
}

/// One statistic of one analysis across revisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    /// Index of the analysis in the spec.
    pub analysis: usize,
    /// Its kind.
    pub kind: String,
    /// The statistic (`mean`, `kurtosis`, `participation_ratio`, ...).
    pub statistic: String,
    /// Hidden-state labels (those of the first revision).
    pub labels: Vec<String>,
    /// `[revision][label]`; `null` where undefined, or where a revision lacks the label.
    pub values: Vec<Vec<Option<f64>>>,
}

/// How a revision moved from the one before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The earlier revision.
    pub from: String,
    /// The later revision.
    pub to: String,
    /// Every number within tolerance and no token changed.
    pub pass: bool,
    /// Analyses with a value outside tolerance, as `#i kind`.
    pub moved: Vec<String>,
    /// The metrics outside tolerance, largest relative change first.
    pub metrics: Vec<StepMetric>,
    /// Texts whose token ids changed (the tokenizer changed between the revisions).
    pub token_changes: usize,
    /// Why the two results could not be compared (their structure differs), if so.
    pub error: Option<String>,
}

/// A metric outside tolerance at one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepMetric {
    /// Index of the analysis.
    pub analysis: usize,
    /// Its kind.
    pub kind: String,
    /// The metric.
    pub metric: String,
    /// Values outside tolerance, of `n`.
    pub violations: usize,
    /// Values compared.
    pub n: usize,
    /// Largest |new - base| / |base|.
    pub worst_rel: f64,
    /// Where the largest |new - base| is.
    pub worst_at: String,
}

/// Splits `--revisions`: comma-separated, none empty, none twice, and folder names that
/// stay distinct.
pub fn parse_revisions(list: &str) -> Result<Vec<String>, SweepError> {
    let revisions: Vec<String> = list.split(',').map(|r| r.trim().to_string()).collect();
    if revisions.iter().any(String::is_empty) {
        return Err(SweepError::EmptyRevision(list.to_string()));
    }
    let mut folders = BTreeSet::new();
    for r in &revisions {
        if !folders.insert(folder(r)) {
            return Err(SweepError::Twice {
                revision: r.clone(),
                folder: folder(r),
            });
        }
    }
    Ok(revisions)
}

/// The folder of a revision: its name, with characters a file name cannot hold (and
/// leading dots) replaced by `_`.
pub fn folder(revision: &str) -> String {
    let name: String = revision
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match name.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None => name,
    }
}

/// The results already in `dir`, with the file's bytes, when they are what this run would
/// write again: the same spec bytes, model, revision, commit and strata build. An
/// interrupted sweep keeps them.
pub fn finished(dir: &Path, expect: &Expected) -> Option<(Results, Vec<u8>)> {
    let bytes = std::fs::read(dir.join("results.json")).ok()?;
    let results = Results::from_json(&bytes).ok()?;
    let p = &results.provenance;
    let same = p.spec_sha256 == expect.spec_sha256
        && p.model.id == expect.model
        && p.model.revision.as_deref() == Some(expect.revision)
        && p.model.commit.as_deref() == Some(expect.commit)
        && p.strata_version == crate::VERSION
        && p.strata_commit == crate::VERSION_COMMIT;
    same.then_some((results, bytes))
}

/// What a finished revision's results must record to be kept.
pub struct Expected<'a> {
    /// sha256 of the spec.
    pub spec_sha256: &'a str,
    /// The model id.
    pub model: &'a str,
    /// The revision as given.
    pub revision: &'a str,
    /// The commit it resolves to now.
    pub commit: &'a str,
}

/// Builds the sweep from each revision's results, in order; `tol` applies to the steps.
pub fn build(runs: &[(SweepRevision, Results)], tol: Tolerances) -> Result<Sweep, SweepError> {
    let (_, first) = runs.first().ok_or(SweepError::NoRevision)?;
    Ok(Sweep {
        schema_version: SWEEP_SCHEMA_VERSION,
        name: first.name.clone(),
        title: first.title.clone(),
        model: first.provenance.model.id.clone(),
        spec_sha256: first.provenance.spec_sha256.clone(),
        revisions: runs.iter().map(|(r, _)| r.clone()).collect(),
        tolerances: tol,
        series: series(runs),
        steps: runs.windows(2).map(|w| step(&w[0], &w[1], tol)).collect(),
    })
}

/// Every statistic of the first revision's analyses, followed through the others by
/// analysis, statistic and label.
fn series(runs: &[(SweepRevision, Results)]) -> Vec<Series> {
    // Each revision's statistics, computed once: `[revision][analysis]`.
    let scalars: Vec<Vec<(&str, Vec<Scalars>)>> = runs
        .iter()
        .map(|(_, r)| r.analyses.iter().map(|a| (a.kind(), a.scalars())).collect())
        .collect();
    let Some(first) = scalars.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, (kind, list)) in first.iter().enumerate() {
        for s in list {
            out.push(Series {
                analysis: i,
                kind: kind.to_string(),
                statistic: s.statistic.clone(),
                labels: s.labels.clone(),
                values: scalars.iter().map(|r| follow(s, r.get(i), kind)).collect(),
            });
        }
    }
    out
}

/// The values of statistic `s` in one revision's analysis (`None` where that revision
/// lacks the analysis, the statistic or a label).
fn follow(s: &Scalars, analysis: Option<&(&str, Vec<Scalars>)>, kind: &str) -> Vec<Option<f64>> {
    let theirs = analysis
        .filter(|(k, _)| *k == kind)
        .and_then(|(_, list)| list.iter().find(|t| t.statistic == s.statistic));
    s.labels
        .iter()
        .map(|l| {
            let t = theirs?;
            let j = t.labels.iter().position(|x| x == l)?;
            t.values[j]
        })
        .collect()
}

fn step(a: &(SweepRevision, Results), b: &(SweepRevision, Results), tol: Tolerances) -> Step {
    let mut out = Step {
        from: a.0.revision.clone(),
        to: b.0.revision.clone(),
        pass: false,
        moved: Vec::new(),
        metrics: Vec::new(),
        token_changes: 0,
        error: None,
    };
    match crate::compare::compare(&a.1, &b.1, tol) {
        Err(e) => out.error = Some(e.0),
        Ok(c) => {
            out.pass = c.pass();
            out.moved = c.moved();
            out.token_changes = c.token_changes.len();
            let mut metrics: Vec<StepMetric> = c
                .metrics
                .into_iter()
                .filter(|m| m.violations > 0)
                .map(|m| StepMetric {
                    analysis: m.analysis,
                    kind: m.kind,
                    metric: m.metric,
                    violations: m.violations,
                    n: m.n,
                    worst_rel: m.worst_rel,
                    worst_at: m.worst_at,
                })
                .collect();
            metrics.sort_by(|x, y| y.worst_rel.total_cmp(&x.worst_rel));
            out.metrics = metrics;
        }
    }
    out
}

impl Sweep {
    /// JSON with a final newline, written as results.json is.
    pub fn to_json(&self) -> Vec<u8> {
        crate::json::pretty_json(self)
    }

    /// The revisions' names, in order.
    pub fn revision_names(&self) -> Vec<String> {
        self.revisions.iter().map(|r| r.revision.clone()).collect()
    }

    /// Reads a `sweep.json`: its schema version, its fields, and every series with a row
    /// per revision and a value per label.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SweepError> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(SweepError::NotJson)?;
        Self::from_value(v)
    }

    /// [`Sweep::from_json`] of a file already parsed as JSON.
    pub fn from_value(v: serde_json::Value) -> Result<Self, SweepError> {
        crate::json::check_schema_version(
            &v,
            SWEEP_SCHEMA_VERSION,
            "sweep version",
            "sweep.json",
            "run the sweep again with this strata",
        )?;
        let sweep: Sweep = serde_json::from_value(v).map_err(SweepError::Fields)?;
        let damaged = SweepError::Damaged;
        for s in &sweep.series {
            if s.values.len() != sweep.revisions.len() {
                return Err(damaged(format!(
                    "series `{}` has {} rows for {} revisions",
                    s.name(),
                    s.values.len(),
                    sweep.revisions.len()
                )));
            }
            if let Some(row) = s.values.iter().find(|r| r.len() != s.labels.len()) {
                return Err(damaged(format!(
                    "series `{}` has a row of {} values for {} labels",
                    s.name(),
                    row.len(),
                    s.labels.len()
                )));
            }
        }
        Ok(sweep)
    }
}

impl Series {
    /// `kind #i · statistic`, as the page names it.
    pub fn name(&self) -> String {
        format!("{} #{} · {}", self.kind, self.analysis, self.statistic)
    }
}

/// Why a sweep cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// `--revisions` with an empty entry.
    #[error("`{0}` has an empty revision: write them comma-separated, e.g. `step1000,step2000`")]
    EmptyRevision(String),
    /// A revision listed twice, or two that share a folder.
    #[error("revision `{revision}` is given twice (or two revisions share the folder `{folder}`): list each once")]
    Twice {
        /// The revision.
        revision: String,
        /// Its folder.
        folder: String,
    },
    /// No revision ran.
    #[error("a sweep needs at least one revision")]
    NoRevision,
    /// Not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    /// Another schema version, or none.
    #[error(transparent)]
    Version(#[from] crate::json::VersionError),
    /// JSON whose fields are not sweep.json's.
    #[error("not a valid sweep.json: {0}")]
    Fields(serde_json::Error),
    /// Series that do not fit the revisions.
    #[error(
        "{0}: the file is damaged or was edited by hand; run `strata sweep` again to rewrite it"
    )]
    Damaged(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_listed_once_each_and_named_safely() {
        assert_eq!(
            parse_revisions("step0, step1000,main").unwrap(),
            ["step0", "step1000", "main"]
        );
        assert!(parse_revisions("step0,,step1")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(parse_revisions("a,a")
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(parse_revisions("a/b,a_b")
            .unwrap_err()
            .to_string()
            .contains("a_b"));
        assert_eq!(folder("refs/pr/1"), "refs_pr_1");
        assert_eq!(folder("..x"), "_.x");
    }
}
