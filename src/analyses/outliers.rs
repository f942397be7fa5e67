//! `outliers`: the `k` values of largest magnitude per hidden state, each with its text,
//! token and dimension. Candidates are totally ordered (|value| descending, then global
//! position), so the top k of a merge is the top k of one pass.

use serde::{Deserialize, Serialize};

use super::kind::{Analysis, Check, Context, KindError, Section, Setup, TextActivations};
use super::top::{keep_top, top_candidates, Candidate, Outlier};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::view::{by_frequency, Table};

/// `{kind: outliers, k: 10}` over the spec's `layers`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outliers {
    /// How many per hidden state (1 to 1000).
    #[schemars(range(min = 1, max = 1000))]
    pub k: usize,
}

/// The top k so far, per hidden state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutliersState {
    /// Hidden-state indices.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// How many to keep.
    pub k: usize,
    /// Per hidden state, at most `k`, largest first.
    pub top: Vec<Vec<Candidate>>,
}

/// The values of largest magnitude per hidden state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutliersResult {
    /// How many were kept per hidden state.
    pub k: usize,
    /// Hidden-state labels, one list each.
    pub labels: Vec<String>,
    /// `[label][rank]`: largest |value| first; ties keep the first occurrence (texts in
    /// order, then token, then dimension). Fewer than `k` when there are fewer values.
    pub top: Vec<Vec<Outlier>>,
}

impl OutliersState {
    /// An empty state keeping `k` per hidden state of `layers`.
    pub fn new(layers: Vec<usize>, labels: Vec<String>, k: usize) -> Self {
        Self {
            top: vec![Vec::new(); layers.len()],
            layers,
            labels,
            k,
        }
    }
}

impl Analysis for Outliers {
    const KIND: &'static str = "outliers";
    type State = OutliersState;
    type Output = OutliersResult;

    fn labels(o: &OutliersResult) -> &[String] {
        &o.labels
    }

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        if self.k == 0 || self.k > 1000 {
            return Err(at.invalid("k", self.k, "use k from 1 to 1000"));
        }
        Ok(())
    }

    fn start(&self, at: &Setup) -> Result<OutliersState, SpecError> {
        Ok(OutliersState::new(
            at.selected.to_vec(),
            at.names(at.selected),
            self.k,
        ))
    }

    fn layers(s: &OutliersState) -> Vec<usize> {
        s.layers.clone()
    }

    fn observe(s: &mut OutliersState, t: &TextActivations) {
        let k = s.k;
        for (kept, &l) in s.top.iter_mut().zip(&s.layers) {
            // Only values beating the current k-th can enter: one compare each.
            let floor = if kept.len() == k {
                kept.last().map_or(f32::NEG_INFINITY, |c| c.abs)
            } else {
                f32::NEG_INFINITY
            };
            let fresh = top_candidates(t, t.state(l), k, |a| a > floor);
            keep_top(kept, fresh, k);
        }
    }

    fn merge(s: &mut OutliersState, right: OutliersState) -> Result<(), KindError> {
        if (&s.layers, s.k) != (&right.layers, right.k) || right.top.len() != s.top.len() {
            return Err(KindError::Mismatch(
                "outlier lists of different hidden states or k".into(),
            ));
        }
        for (a, b) in s.top.iter_mut().zip(right.top) {
            keep_top(a, b, s.k);
        }
        Ok(())
    }

    fn finish(s: OutliersState) -> Result<OutliersResult, KindError> {
        let top = s
            .top
            .into_iter()
            .map(|kept| kept.iter().map(Candidate::outlier).collect())
            .collect();
        Ok(OutliersResult {
            k: s.k,
            labels: s.labels,
            top,
        })
    }

    fn validate(o: &OutliersResult, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(o, cx)?;
        super::kind::expect_per_label("top", &o.top, &o.labels)?;
        for (l, list) in o.top.iter().enumerate() {
            if list.len() > o.k {
                return Err(KindError::Invalid(format!(
                    "top[{l}] has {} entries, more than k = {}",
                    list.len(),
                    o.k
                )));
            }
        }
        Ok(())
    }

    fn section(o: &OutliersResult, _: &Context, _: super::kind::Medium) -> Section {
        let mut notes = Vec::new();
        // Where the outliers concentrate: dimensions and tokens by how many of the hidden
        // states' top-k lists they appear in.
        let all = || o.top.iter().flatten();
        let dims = by_frequency(all().map(|x| x.dim));
        let toks = by_frequency(all().map(|x| (x.text.clone(), x.token_index, x.token.clone())));
        let total: usize = o.top.iter().map(Vec::len).sum();
        if total > 0 {
            notes.push(format!(
                "Of {total} outliers, the most frequent dimensions: {}. Most frequent tokens: {}.",
                dims.iter()
                    .take(5)
                    .map(|(d, n)| format!("dim {d} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", "),
                toks.iter()
                    .take(5)
                    .map(|((t, i, s), n)| format!("{t} #{i} {s:?} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
        let rows = o
            .labels
            .iter()
            .zip(&o.top)
            .flat_map(|(label, list)| {
                list.iter().enumerate().map(move |(r, x)| {
                    [label.clone(), (r + 1).to_string()]
                        .into_iter()
                        .chain(x.cells())
                        .collect()
                })
            })
            .collect();
        Section {
            wide: false,
            collapsed: None,
            heading: "Outliers".into(),
            intro: format!(
                "The {} values of largest magnitude in each hidden state, and where they sit.",
                o.k
            ),
            notes,
            charts: if total > 0 {
                vec![magnitude_chart(o, &dims)]
            } else {
                vec![]
            },
            tables: vec![Table {
                caption: format!("Top {} |value| per hidden state", o.k),
                headers: [
                    "hidden state",
                    "rank",
                    "value",
                    "text",
                    "token #",
                    "token",
                    "dim",
                ]
                .map(String::from)
                .to_vec(),
                rows,
                text_columns: vec![0, 3, 5],
            }],
        }
    }

    fn scalars(out: &OutliersResult) -> Vec<super::kind::Scalars> {
        use super::kind::Scalars;
        let top = out
            .top
            .iter()
            .map(|t| t.first().map(|o| o.value.abs()))
            .collect();
        vec![Scalars::new("max_abs", &out.labels, top)]
    }

    fn compare(a: &OutliersResult, b: &OutliersResult, c: &mut Comparer) -> Result<(), Mismatch> {
        Self::compare_columns(a, b, c)?;
        c.ranked("values", &a.labels, &a.top, &b.top, |o| o.value);
        Ok(())
    }
}

/// The top-k |values| of every hidden state on a log axis, one colour per dimension
/// among the eight that recur most (the rest in grey): long lists read at a glance.
fn magnitude_chart(o: &OutliersResult, dims: &[(usize, usize)]) -> crate::charts::ChartSpec {
    use charming::element::{ItemStyle, Tooltip, Trigger};
    use charming::series::Scatter;
    const COLORS: [&str; 8] = [
        "#3b528b", "#e35932", "#21918c", "#c8a400", "#7b3294", "#1b9e77", "#d6604d", "#4393c3",
    ];
    let shown: Vec<usize> = dims.iter().take(COLORS.len()).map(|(d, _)| *d).collect();
    let points = |keep: &dyn Fn(usize) -> bool| -> Vec<Vec<f64>> {
        o.top
            .iter()
            .enumerate()
            .flat_map(|(l, list)| {
                list.iter()
                    .filter(|x| keep(x.dim) && x.value != 0.0)
                    .map(move |x| vec![l as f64, crate::charts::r(x.value.abs())])
            })
            .collect()
    };
    let mut chart = crate::charts::per_layer_frame(
        "Largest |value| per hidden state",
        "each point one of the top values; colour: its dimension",
        &o.labels,
        "|value|",
        true,
    )
    .tooltip(Tooltip::new().trigger(Trigger::Item).formatter("{a}: {c}"));
    for (d, color) in shown.iter().zip(COLORS) {
        chart = chart.series(
            Scatter::new()
                .name(format!("dim {d}"))
                .symbol_size(7)
                .item_style(ItemStyle::new().color(color))
                .data(points(&|x| x == *d)),
        );
    }
    let rest = points(&|x| !shown.contains(&x));
    if !rest.is_empty() {
        chart = chart.series(
            Scatter::new()
                .name("other dims")
                .symbol_size(5)
                .item_style(ItemStyle::new().color("#aaaaaa"))
                .data(rest),
        );
    }
    crate::charts::ChartSpec {
        title: "outliers-magnitude".into(),
        option: crate::charts::option(chart),
        height: 380,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_k_by_magnitude_with_first_occurrence_on_ties() {
        // Three texts, 2 hidden states, dim 3; token 0 excluded (first_token 1).
        let dim = 3;
        let texts: Vec<(String, Vec<String>, Vec<f32>)> = vec![
            (
                "a".into(),
                vec!["<0>".into(), "x".into(), "y".into()],
                vec![1.0, -9.0, 2.0, 5.0, 0.5, f32::NAN],
            ),
            (
                "b".into(),
                vec!["<0>".into(), "z".into()],
                vec![9.0, -3.0, 7.0],
            ),
            (
                "c".into(),
                vec!["<0>".into(), "w".into(), "v".into()],
                vec![-9.0, 0.0, 6.0, 4.0, 8.0, -7.0],
            ),
        ];
        let mut s = OutliersState {
            layers: vec![0, 1],
            labels: vec!["emb".into(), "h.0".into()],
            k: 4,
            top: vec![vec![], vec![]],
        };
        for (i, (id, tokens, vals)) in texts.iter().enumerate() {
            let neg: Vec<f32> = vals.iter().map(|v| -v * 2.0).collect();
            let states = vec![Some(vals.clone()), Some(neg)];
            Outliers::observe(
                &mut s,
                &TextActivations {
                    index: i,
                    id,
                    label: None,
                    window_of: None,
                    tokens,
                    first_token: 1,
                    dim,
                    states: &states,
                    token_ids: &[],
                    lens: None,
                    previous: None,
                    companions: &[],
                    companion_readouts: &[],
                    attention: &[],
                    routing: &[],
                    splice: None,
                    sites: &[],
                },
            );
        }
        let out = Outliers::finish(s).unwrap();
        assert_eq!((out.k, out.labels.len()), (4, 2));
        let got: Vec<(f64, &str, usize, &str, usize)> = out.top[0]
            .iter()
            .map(|o| {
                (
                    o.value,
                    o.text.as_str(),
                    o.token_index,
                    o.token.as_str(),
                    o.dim,
                )
            })
            .collect();
        // |9| three times: a (x, dim 1), b (z, dim 0), c (w, dim 0), in that order; then 8.
        assert_eq!(
            got,
            vec![
                (-9.0, "a", 1, "x", 1),
                (9.0, "b", 1, "z", 0),
                (-9.0, "c", 1, "w", 0),
                (8.0, "c", 2, "v", 1),
            ]
        );
        // The second state is -2x the first: same places, doubled and negated values.
        let second: Vec<f64> = out.top[1].iter().map(|o| o.value).collect();
        assert_eq!(second, vec![18.0, -18.0, 18.0, -16.0]);
    }
}
