//! Analyses as streaming accumulators: each sees one text's activations at a time, keeps
//! only bounded state (the `stats` accumulators, a bounded sample, one text's matrix for
//! the scatter), and turns into its [`AnalysisResult`] at the end.

use crate::results::{AnalysisResult, Location, Outlier, SummaryRow};
use crate::spec::SampleMode;
use crate::stats::{CoMoments, Histogram, Moments, Reservoir};

/// Bins of the histograms on a pairplot's diagonal (seaborn's default is similar).
pub const PAIRPLOT_BINS: usize = 20;

/// The histogram of a pairplot sample, over its own range.
fn sample_histogram(values: &[f32]) -> Histogram {
    let finite = values.iter().filter(|v| v.is_finite()).map(|&v| v as f64);
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else if lo.is_finite() {
        (lo - 0.5, lo + 0.5)
    } else {
        (-0.5, 0.5)
    };
    let mut h = Histogram::new(lo, hi, PAIRPLOT_BINS);
    h.add(values);
    h
}

/// One text's activations, as the analyses see them.
pub struct TextActivations<'a> {
    /// Index of the text in the input order.
    pub index: usize,
    /// The text's id.
    pub id: &'a str,
    /// Decoded tokens of the whole text.
    pub tokens: &'a [String],
    /// Token position of the first row (1 when token 0 is excluded).
    pub first_token: usize,
    /// Hidden size.
    pub dim: usize,
    /// Row-major `[rows, dim]` activations, indexed by hidden-state index (`None` for
    /// hidden states no analysis asked for).
    pub states: &'a [Option<Vec<f32>>],
}

impl TextActivations<'_> {
    fn state(&self, layer: usize) -> &[f32] {
        self.states[layer].as_deref().unwrap_or(&[])
    }

    fn rows(&self) -> usize {
        self.states
            .iter()
            .flatten()
            .next()
            .map_or(0, |s| s.len() / self.dim.max(1))
    }
}

/// An analysis being accumulated.
pub enum Accumulator {
    /// Keeps one text's matrix.
    Scatter {
        /// Hidden-state index.
        layer: usize,
        /// Label.
        label: String,
        /// The text to keep (`None`: the first).
        text: Option<String>,
        /// The kept result.
        kept: Option<AnalysisResult>,
    },
    /// Co-moments across hidden states.
    Covariance {
        /// Hidden-state indices.
        layers: Vec<usize>,
        /// Labels.
        labels: Vec<String>,
        /// Running co-moments.
        acc: CoMoments,
    },
    /// A bounded joint sample.
    Pairplot {
        /// Hidden-state indices.
        layers: Vec<usize>,
        /// Labels.
        labels: Vec<String>,
        /// Sampling mode.
        sample: SampleMode,
        /// The sample: values across the layers per point.
        reservoir: Reservoir<Vec<f32>>,
    },
    /// Histograms per hidden state.
    Histogram {
        /// Hidden-state indices.
        layers: Vec<usize>,
        /// Labels.
        labels: Vec<String>,
        /// One histogram per hidden state.
        hists: Vec<Histogram>,
    },
    /// Moments per hidden state.
    Summary {
        /// Hidden-state indices.
        layers: Vec<usize>,
        /// Labels.
        labels: Vec<String>,
        /// One accumulator per hidden state.
        moments: Vec<Moments>,
        /// Text ids and tokens seen so far, only for the texts that hold a current max.
        texts: std::collections::BTreeMap<usize, (String, Vec<String>)>,
    },
    /// The `k` largest magnitudes per hidden state.
    Outliers {
        /// Hidden-state indices.
        layers: Vec<usize>,
        /// Labels.
        labels: Vec<String>,
        /// How many to keep.
        k: usize,
        /// Per hidden state, at most `k`, largest first.
        top: Vec<Vec<Candidate>>,
    },
}

/// An outlier being tracked: ordered by |value| descending, then by position, so ties
/// keep the first occurrence.
#[derive(Debug, Clone)]
pub struct Candidate {
    abs: f32,
    value: f32,
    /// (text index, token index, dim): the position order.
    pos: (usize, usize, usize),
    text: String,
    token: String,
}

impl Candidate {
    fn before(&self, o: &Self) -> std::cmp::Ordering {
        o.abs.total_cmp(&self.abs).then(self.pos.cmp(&o.pos))
    }
}

impl Accumulator {
    /// Keeps hidden state `layer` of the text `text` (`None`: the first text).
    pub fn scatter(layer: usize, label: String, text: Option<String>) -> Self {
        Self::Scatter {
            layer,
            label,
            text,
            kept: None,
        }
    }

    /// Covariance across `layers`.
    pub fn covariance(layers: Vec<usize>, labels: Vec<String>) -> Self {
        Self::Covariance {
            acc: CoMoments::new(layers.len()),
            layers,
            labels,
        }
    }

    /// A pairplot sample of `points` points across `layers` (`seed` for `random`).
    pub fn pairplot(
        layers: Vec<usize>,
        labels: Vec<String>,
        sample: SampleMode,
        points: usize,
        seed: u64,
    ) -> Self {
        let reservoir = match sample {
            SampleMode::First => Reservoir::first(points),
            SampleMode::Random => Reservoir::random(points, seed),
        };
        Self::Pairplot {
            layers,
            labels,
            sample,
            reservoir,
        }
    }

    /// One histogram on `bins` equal bins over `[lo, hi]` per hidden state of `layers`.
    pub fn histogram(
        layers: Vec<usize>,
        labels: Vec<String>,
        lo: f64,
        hi: f64,
        bins: usize,
    ) -> Self {
        Self::Histogram {
            hists: vec![Histogram::new(lo, hi, bins); layers.len()],
            layers,
            labels,
        }
    }

    /// Summary moments per hidden state of `layers`.
    pub fn summary(layers: Vec<usize>, labels: Vec<String>) -> Self {
        Self::Summary {
            moments: vec![Moments::default(); layers.len()],
            layers,
            labels,
            texts: Default::default(),
        }
    }

    /// The `k` values of largest magnitude per hidden state of `layers`.
    pub fn outliers(layers: Vec<usize>, labels: Vec<String>, k: usize) -> Self {
        Self::Outliers {
            top: vec![Vec::new(); layers.len()],
            layers,
            labels,
            k,
        }
    }

    /// Hidden-state indices this analysis reads.
    pub fn layers(&self) -> Vec<usize> {
        match self {
            Self::Scatter { layer, .. } => vec![*layer],
            Self::Covariance { layers, .. }
            | Self::Pairplot { layers, .. }
            | Self::Histogram { layers, .. }
            | Self::Summary { layers, .. }
            | Self::Outliers { layers, .. } => layers.clone(),
        }
    }

    /// Takes one text's activations.
    pub fn observe(&mut self, t: &TextActivations) {
        match self {
            Self::Scatter {
                layer,
                label,
                text,
                kept,
            } => {
                let wanted = match text {
                    Some(id) => id == t.id,
                    // The first text with a row to show: a one-token text has none once
                    // token 0 is excluded.
                    None => kept.is_none() && t.rows() > 0,
                };
                if wanted && kept.is_none() {
                    let rows = t.rows();
                    *kept = Some(AnalysisResult::Scatter {
                        label: label.clone(),
                        text: t.id.to_string(),
                        token_index: (t.first_token..t.first_token + rows).collect(),
                        tokens: t.tokens[t.first_token..t.first_token + rows].to_vec(),
                        values: t
                            .state(*layer)
                            .chunks(t.dim.max(1))
                            .map(<[f32]>::to_vec)
                            .collect(),
                    });
                }
            }
            Self::Covariance { layers, acc, .. } => {
                let vars: Vec<&[f32]> = layers.iter().map(|&l| t.state(l)).collect();
                acc.add_batch(&vars);
            }
            Self::Pairplot {
                layers, reservoir, ..
            } => {
                let cols: Vec<&[f32]> = layers.iter().map(|&l| t.state(l)).collect();
                let n = cols.first().map_or(0, |c| c.len());
                for k in 0..n {
                    if reservoir.is_done() {
                        break;
                    }
                    reservoir.offer(|| cols.iter().map(|c| c[k]).collect());
                }
            }
            Self::Histogram { layers, hists, .. } => {
                for (h, &l) in hists.iter_mut().zip(layers.iter()) {
                    h.add(t.state(l));
                }
            }
            Self::Summary {
                layers,
                moments,
                texts,
                ..
            } => {
                for (m, &l) in moments.iter_mut().zip(layers.iter()) {
                    m.add_batch(t.state(l), t.dim, t.index, t.first_token);
                }
                // Keep the tokens of texts that hold a current maximum, and only those,
                // so memory stays bounded by the number of hidden states.
                let holders: std::collections::BTreeSet<usize> = moments
                    .iter()
                    .filter_map(|m| m.max_abs().map(|l| l.batch))
                    .collect();
                texts.retain(|k, _| holders.contains(k));
                if holders.contains(&t.index) {
                    texts.insert(t.index, (t.id.to_string(), t.tokens.to_vec()));
                }
            }
            Self::Outliers { layers, k, top, .. } => {
                let dim = t.dim.max(1);
                for (kept, &l) in top.iter_mut().zip(layers.iter()) {
                    // Only values beating the current k-th can enter: one compare each.
                    let floor = if kept.len() == *k {
                        kept.last().map_or(f32::NEG_INFINITY, |c| c.abs)
                    } else {
                        f32::NEG_INFINITY
                    };
                    let mut fresh: Vec<Candidate> = t
                        .state(l)
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite() && v.abs() > floor)
                        .map(|(i, &v)| {
                            let row = t.first_token + i / dim;
                            Candidate {
                                abs: v.abs(),
                                value: v,
                                pos: (t.index, row, i % dim),
                                text: String::new(),
                                token: String::new(),
                            }
                        })
                        .collect();
                    fresh.sort_by(Candidate::before);
                    fresh.truncate(*k);
                    for c in &mut fresh {
                        c.text = t.id.to_string();
                        c.token = t.tokens.get(c.pos.1).cloned().unwrap_or_default();
                    }
                    kept.extend(fresh);
                    kept.sort_by(Candidate::before);
                    kept.truncate(*k);
                }
            }
        }
    }

    /// The final result.
    pub fn finish(self) -> AnalysisResult {
        match self {
            Self::Scatter { kept, label, .. } => kept.unwrap_or(AnalysisResult::Scatter {
                label,
                text: String::new(),
                token_index: vec![],
                tokens: vec![],
                values: vec![],
            }),
            Self::Covariance { labels, acc, .. } => {
                let k = labels.len();
                let covariance = acc.covariance().unwrap_or_else(|| vec![vec![0.0; k]; k]);
                let r2 = acc
                    .correlation()
                    .unwrap_or_else(|| vec![vec![None; k]; k])
                    .into_iter()
                    .map(|row| row.into_iter().map(|r| r.map(|r| r * r)).collect())
                    .collect();
                AnalysisResult::Covariance {
                    labels,
                    n_points: acc.count(),
                    means: acc.means().to_vec(),
                    covariance,
                    r2,
                }
            }
            Self::Pairplot {
                labels,
                sample,
                reservoir,
                ..
            } => {
                let n_seen = reservoir.seen();
                let points = reservoir.into_sorted();
                let columns: Vec<Vec<f32>> = (0..labels.len())
                    .map(|c| points.iter().map(|(_, v)| v[c]).collect())
                    .collect();
                let diagonal: Vec<Histogram> =
                    columns.iter().map(|c| sample_histogram(c)).collect();
                AnalysisResult::Pairplot {
                    labels,
                    sample,
                    n_seen,
                    point_index: points.iter().map(|(t, _)| *t).collect(),
                    diagonal_edges: diagonal.iter().map(|h| h.edges().to_vec()).collect(),
                    diagonal_counts: diagonal.iter().map(|h| h.counts().to_vec()).collect(),
                    columns,
                }
            }
            Self::Histogram { labels, hists, .. } => AnalysisResult::Histogram {
                labels,
                edges: hists
                    .first()
                    .map(|h| h.edges().to_vec())
                    .unwrap_or_default(),
                counts: hists.iter().map(|h| h.counts().to_vec()).collect(),
                underflow: hists.iter().map(Histogram::underflow).collect(),
                overflow: hists.iter().map(Histogram::overflow).collect(),
                nan: hists.iter().map(Histogram::non_finite).collect(),
            },
            Self::Summary {
                labels,
                moments,
                texts,
                ..
            } => AnalysisResult::Summary {
                rows: labels
                    .into_iter()
                    .zip(moments)
                    .map(|(label, m)| {
                        let at = m.max_abs().and_then(|l| {
                            texts.get(&l.batch).map(|(id, tokens)| Location {
                                text: id.clone(),
                                token_index: l.row,
                                token: tokens.get(l.row).cloned().unwrap_or_default(),
                                dim: l.col,
                            })
                        });
                        SummaryRow {
                            label,
                            count: m.count(),
                            non_finite: m.non_finite(),
                            mean: m.mean(),
                            std: m.std(),
                            min: m.min(),
                            max: m.max(),
                            skewness: m.skewness(),
                            kurtosis: m.kurtosis(),
                            max_abs: m.max_abs().map(|l| l.value),
                            max_abs_at: at,
                        }
                    })
                    .collect(),
            },
            Self::Outliers { labels, k, top, .. } => AnalysisResult::Outliers {
                k,
                labels,
                top: top
                    .into_iter()
                    .map(|kept| {
                        kept.into_iter()
                            .map(|c| Outlier {
                                value: c.value as f64,
                                text: c.text,
                                token_index: c.pos.1,
                                token: c.token,
                                dim: c.pos.2,
                            })
                            .collect()
                    })
                    .collect(),
            },
        }
    }
}

#[cfg(test)]
mod accumulator_tests {
    use super::*;

    #[test]
    fn scatter_without_a_text_skips_texts_with_no_rows() {
        let mut acc = Accumulator::scatter(0, "emb".into(), None);
        let one = vec!["<0>".to_string()];
        let two = vec!["<0>".to_string(), "b".to_string()];
        let empty = vec![Some(Vec::new())];
        let row = vec![Some(vec![1.0f32, 2.0])];
        for (i, (id, tokens, states)) in [("a", &one, &empty), ("b", &two, &row)]
            .into_iter()
            .enumerate()
        {
            acc.observe(&TextActivations {
                index: i,
                id,
                tokens,
                first_token: 1,
                dim: 2,
                states,
            });
        }
        let AnalysisResult::Scatter { text, values, .. } = acc.finish() else {
            panic!("kind")
        };
        assert_eq!(text, "b");
        assert_eq!(values, vec![vec![1.0, 2.0]]);
    }

    #[test]
    fn outliers_are_the_top_k_by_magnitude_with_first_occurrence_on_ties() {
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
        let mut acc = Accumulator::outliers(vec![0, 1], vec!["emb".into(), "h.0".into()], 4);
        for (i, (id, tokens, vals)) in texts.iter().enumerate() {
            let neg: Vec<f32> = vals.iter().map(|v| -v * 2.0).collect();
            let states = vec![Some(vals.clone()), Some(neg)];
            acc.observe(&TextActivations {
                index: i,
                id,
                tokens,
                first_token: 1,
                dim,
                states: &states,
            });
        }
        let AnalysisResult::Outliers { k, labels, top } = acc.finish() else {
            panic!("kind")
        };
        assert_eq!((k, labels.len()), (4, 2));
        let got: Vec<(f64, &str, usize, &str, usize)> = top[0]
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
        let second: Vec<f64> = top[1].iter().map(|o| o.value).collect();
        assert_eq!(second, vec![18.0, -18.0, 18.0, -16.0]);
    }
}
