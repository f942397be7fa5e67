//! `project`: how far the corpus moves along given directions. A vectors file (safetensors,
//! such as `directions` saves) names vectors `NAME` (one `[d]` vector for every state) or
//! `NAME.{state}` (one per state); every token's hidden state is projected onto each
//! vector's unit direction, `x . v / |v|`, and per vector, state and class (every label,
//! and all tokens) the kind reports the mean, the standard deviation, a histogram, and the
//! `k` tokens that project highest. With a second model (`model:`, as `agreement` takes
//! it) the same tokens of that model are projected too, and the shift of the mean
//! projection between the two is reported: a persona vector's shift between a base model
//! and its fine-tune, in one spec.
//!
//! Sums are fixed-point and counts integers, so merges are exact; the histogram is
//! re-binned at the end from a log-bucket sketch ([`crate::stats::sketch`], within 0.5%),
//! so it needs no range in advance.

mod section;
mod types;

pub use types::{
    ClassSums, Project, ProjectResult, ProjectState, Projection, TopToken, VectorResult,
    VectorState,
};

use super::kind::{Analysis, Check, Context, KindError, Medium, Section, Setup, TextActivations};
use crate::analyses::axes::{Axes, Axis};
use crate::assets::AssetRef;
use crate::spec::error::SpecError;
use crate::spec::model::ModelSpec;
use crate::stats::gram::Fixed;

impl Analysis for Project {
    const KIND: &'static str = "project";
    const AXES: Axes = Axes {
        label_is_block: false,
        paths: &[
            (
                "vectors.by_label.{class}.counts",
                &[Axis::Other, Axis::Other, Axis::Bin],
            ),
            ("vectors.by_label.{class}", &[]),
            ("vectors.all.counts", &[Axis::Other, Axis::Other, Axis::Bin]),
            ("vectors.edges", &[Axis::Other, Axis::Other, Axis::Bin]),
            ("vectors.top", &[Axis::Other, Axis::Other, Axis::Class]),
        ],
    };
    type State = ProjectState;
    type Output = ProjectResult;

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        if self.bins == 0 {
            return Err(at.invalid("bins", 0, "give at least 1 bin, e.g. 30"));
        }
        Ok(())
    }

    fn companion(&self) -> Option<&ModelSpec> {
        self.model.as_ref()
    }

    fn needs(&self) -> Vec<AssetRef> {
        vec![AssetRef::Vectors(self.vectors.clone())]
    }

    fn start(&self, at: &Setup) -> Result<ProjectState, SpecError> {
        section::start(self, at)
    }

    fn layers(s: &ProjectState) -> Vec<usize> {
        s.layers.clone()
    }

    fn companion_layers(s: &ProjectState) -> Option<(usize, Vec<usize>)> {
        // The second model has the same shape: the same indices.
        s.companion.as_ref().map(|(c, _)| (*c, s.layers.clone()))
    }

    fn observe(s: &mut ProjectState, t: &TextActivations) {
        observe(s, t);
    }

    fn merge(s: &mut ProjectState, right: ProjectState) -> Result<(), KindError> {
        merge(s, right)
    }

    fn finish(s: ProjectState) -> Result<ProjectResult, KindError> {
        Ok(section::finish(s))
    }

    fn validate(o: &ProjectResult, cx: &Context) -> Result<(), KindError> {
        section::validate(o, cx)
    }

    fn compare(
        base: &ProjectResult,
        new: &ProjectResult,
        c: &mut crate::compare::rules::Comparer,
    ) -> Result<(), crate::compare::rules::Mismatch> {
        section::compare(base, new, c)
    }

    fn scalars(o: &ProjectResult) -> Vec<super::kind::Scalars> {
        section::scalars(o)
    }

    fn section(o: &ProjectResult, _: &Context, _: Medium) -> Section {
        section::section(o)
    }
}

/// The projections of `rows` (`[rows, d]`) onto `unit`, in f64; NaN for a non-finite row.
fn project_rows(rows: &[f32], unit: &[f64]) -> Vec<f64> {
    let d = unit.len().max(1);
    rows.chunks_exact(d)
        .map(|r| r.iter().zip(unit).map(|(&x, &u)| x as f64 * u).sum())
        .collect()
}

/// Adds one text's projections `p` to a class's sums.
fn add(sums: &mut ClassSums, p: &[f64]) {
    let finite: Vec<f64> = p.iter().copied().filter(|x| x.is_finite()).collect();
    for &x in p {
        sums.sketch.add(x);
    }
    if sums.sums.raw.is_empty() {
        sums.sums = Fixed::zeros(2);
    }
    let s: f64 = finite.iter().sum();
    let q: f64 = finite.iter().map(|x| x * x).sum();
    sums.sums.add(&[s, q]);
    sums.n += finite.len() as u64;
}

fn observe(s: &mut ProjectState, t: &TextActivations) {
    let k = s.k;
    for v in &mut s.vectors {
        for (j, &li) in v.states.iter().enumerate() {
            let Some(unit) = v.units.get(j) else { continue };
            let layer = s.layers[li];
            let p = project_rows(t.state(layer), unit);
            let theirs = s
                .companion
                .as_ref()
                .and_then(|(c, _)| t.companions.get(*c))
                .and_then(|o| o.get(layer))
                .and_then(|r| r.as_deref());
            let n = v.states.len();
            let mut classes = vec![&mut v.all[j]];
            if let Some(label) = t.label {
                let per = v
                    .by_label
                    .entry(label.to_string())
                    .or_insert_with(|| vec![ClassSums::default(); n]);
                classes.push(&mut per[j]);
            }
            for class in classes {
                add(class, &p);
                if let Some(rows) = theirs {
                    add_companion(class, rows, unit);
                }
            }
            top(&mut v.top[j], &p, t, k);
        }
    }
}

/// Adds the second model's projections of one text.
fn add_companion(sums: &mut ClassSums, rows: &[f32], unit: &[f64]) {
    let p: Vec<f64> = project_rows(rows, unit)
        .into_iter()
        .filter(|x| x.is_finite())
        .collect();
    let (n, sum) = sums.companion.get_or_insert_with(|| (0, Fixed::zeros(1)));
    *n += p.len() as u64;
    sum.add(&[p.iter().sum()]);
}

/// Offers one text's projections to the `k` highest.
fn top(kept: &mut Vec<(usize, TopToken)>, p: &[f64], t: &TextActivations, k: usize) {
    for (r, &value) in p.iter().enumerate().filter(|(_, v)| v.is_finite()) {
        let lowest = kept.last().map(|x| x.1.value);
        if kept.len() >= k && lowest.is_some_and(|l| value <= l) {
            continue;
        }
        let position = t.first_token + r;
        kept.push((
            t.index,
            TopToken {
                value,
                text: t.id.to_string(),
                label: t.label.map(str::to_string),
                token_index: position,
                token: t.tokens.get(position).cloned().unwrap_or_default(),
            },
        ));
        sort_top(kept, k);
    }
}

/// Highest first; ties by text order, then position; the first `k`.
fn sort_top(kept: &mut Vec<(usize, TopToken)>, k: usize) {
    kept.sort_by(|(ia, a), (ib, b)| {
        b.value
            .total_cmp(&a.value)
            .then(ia.cmp(ib))
            .then(a.token_index.cmp(&b.token_index))
    });
    kept.truncate(k);
}

fn merge_class(a: &mut ClassSums, b: &ClassSums) {
    a.n += b.n;
    if a.sums.raw.is_empty() {
        a.sums = b.sums.clone();
    } else if !b.sums.raw.is_empty() {
        a.sums.merge(&b.sums);
    }
    a.sketch.merge(&b.sketch);
    if let Some((n, s)) = &b.companion {
        let (an, asum) = a.companion.get_or_insert_with(|| (0, Fixed::zeros(1)));
        *an += n;
        asum.merge(s);
    }
}

fn merge(s: &mut ProjectState, right: ProjectState) -> Result<(), KindError> {
    let names = |x: &ProjectState| {
        x.vectors
            .iter()
            .map(|v| (v.name.clone(), v.states.clone()))
            .collect::<Vec<_>>()
    };
    if s.layers != right.layers || s.sha256 != right.sha256 || names(s) != names(&right) {
        return Err(KindError::Mismatch(
            "project states of other vectors or hidden states".into(),
        ));
    }
    for (a, b) in s.vectors.iter_mut().zip(right.vectors) {
        for (x, y) in a.all.iter_mut().zip(&b.all) {
            merge_class(x, y);
        }
        for (label, per) in b.by_label {
            let mine = a
                .by_label
                .entry(label)
                .or_insert_with(|| vec![ClassSums::default(); per.len()]);
            for (x, y) in mine.iter_mut().zip(&per) {
                merge_class(x, y);
            }
        }
        for (x, y) in a.top.iter_mut().zip(b.top) {
            x.extend(y);
            sort_top(x, s.k);
        }
    }
    Ok(())
}
