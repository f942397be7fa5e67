//! `neurons`: per block and MLP neuron (the `mlp_act` site by default), how often it
//! fires, how strongly, and on which tokens: dead neurons (never above the threshold),
//! dense ones (above it on most tokens), and the neurons with the largest activations,
//! each with the tokens of its largest activations, for a first look at what they
//! respond to.
//!
//! Counts are integers and sums are kept on a fixed-point grid, so any split of the
//! texts merges to the same bits. A neuron's examples are its largest activation in each
//! of the `examples` texts where that is largest (distinct contexts, rather than one text
//! repeated); ties break by global position (text, then token).

use crate::analyses::axes::{Axes, Axis};
use serde::{Deserialize, Serialize};

use super::firing::{log_frequency_counts, log_frequency_edges, BINS};
pub use super::firing::{BlockNeurons, Example};
use super::kind::{
    expect_len, expect_per_label, Analysis, Check, Context, KindError, Medium, Scalars, Section,
    Setup, TextActivations,
};
use crate::charts::{grid_heatmap, option, per_layer_lines, ChartSpec, Grid2};
use crate::compare::rules::{Comparer, Mismatch};
use crate::model::Site;
use crate::spec::error::SpecError;
use crate::view::{fmt_num, Table};

/// `{kind: neurons, threshold: 0, dense: 0.5, k: 10, examples: 3}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Neurons {
    /// A neuron fires on a token when its activation exceeds this. Default 0.
    #[serde(default)]
    pub threshold: f64,
    /// A neuron is dense when it fires on more than this fraction of tokens (in (0, 1);
    /// default 0.5).
    #[serde(default = "default_dense")]
    pub dense: f64,
    /// Neurons listed per block, by largest activation (default 10).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Examples kept per neuron (default 3).
    #[serde(default = "default_examples")]
    pub examples: usize,
}

fn default_dense() -> f64 {
    0.5
}

fn default_k() -> usize {
    10
}

fn default_examples() -> usize {
    3
}

/// Neuron counts so far, per selected block.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeuronsState {
    /// The parameters.
    pub threshold: f64,
    /// Dense fraction.
    pub dense: f64,
    /// Neurons listed per block.
    pub k: usize,
    /// Examples per neuron.
    pub examples: usize,
    /// Indices of the blocks at the site.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// One per block.
    pub blocks: Vec<BlockNeurons>,
}

/// A neuron with a large activation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopNeuron {
    /// Its index in the block.
    pub neuron: usize,
    /// Its largest activation.
    pub max: f32,
    /// The fraction of tokens where it fired.
    pub frequency: f64,
    /// Its mean activation.
    pub mean: f64,
    /// Its largest activations, one per text.
    pub examples: Vec<Example>,
}

/// Neurons per block. Per-neuron lists have one entry per neuron of the block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NeuronsResult {
    /// Block labels at the site (`mlp_act.0`, ...).
    pub labels: Vec<String>,
    /// The firing threshold.
    pub threshold: f64,
    /// The dense fraction.
    pub dense_above: f64,
    /// Tokens seen per block.
    pub tokens: Vec<u64>,
    /// Per block, per neuron: the fraction of tokens with activation above `threshold`.
    pub frequency: Vec<Vec<f64>>,
    /// Per block, per neuron: the mean activation.
    pub mean: Vec<Vec<f64>>,
    /// Per block, per neuron: the largest activation.
    pub max: Vec<Vec<f32>>,
    /// Per block: neurons that never fired.
    pub dead: Vec<u64>,
    /// Per block: neurons that fired on more than `dense_above` of the tokens.
    pub dense: Vec<u64>,
    /// Edges of the frequency histogram, in log10 of the frequency.
    pub log_frequency_edges: Vec<f64>,
    /// Per block: neurons per log-frequency bin (dead neurons are not in it).
    pub frequency_counts: Vec<Vec<u64>>,
    /// Per block: the `k` neurons with the largest activations.
    pub top: Vec<Vec<TopNeuron>>,
}

impl Analysis for Neurons {
    const KIND: &'static str = "neurons";
    const AXES: Axes = Axes {
        label_is_block: false,
        paths: &[
            ("frequency_counts", &[Axis::Bin]),
            ("frequency", &[Axis::Neuron]),
            ("max", &[Axis::Neuron]),
            ("mean", &[Axis::Neuron]),
            ("log_frequency_edges", &[Axis::Bin]),
        ],
    };
    const SITE: Option<Site> = Some(Site::MlpAct);
    type State = NeuronsState;
    type Output = NeuronsResult;

    fn labels(o: &NeuronsResult) -> &[String] {
        &o.labels
    }

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        at.fraction("dense", self.dense, "a fraction", 0.5)?;
        if !self.threshold.is_finite() {
            return Err(at.invalid(
                "threshold",
                self.threshold,
                "give a finite activation, e.g. 0",
            ));
        }
        if self.k == 0 {
            return Err(at.invalid("k", 0, "list at least 1 neuron per block"));
        }
        if self.examples == 0 {
            return Err(at.invalid("examples", 0, "keep at least 1 example per neuron"));
        }
        Ok(())
    }

    fn start(&self, at: &Setup) -> Result<NeuronsState, SpecError> {
        let width = at.info.hidden_size;
        Ok(NeuronsState {
            threshold: self.threshold,
            dense: self.dense,
            k: self.k,
            examples: self.examples,
            layers: at.selected.to_vec(),
            labels: at.names(at.selected),
            blocks: at
                .selected
                .iter()
                .map(|_| BlockNeurons::new(width))
                .collect(),
        })
    }

    fn layers(s: &NeuronsState) -> Vec<usize> {
        s.layers.clone()
    }

    fn observe(s: &mut NeuronsState, t: &TextActivations) {
        for (b, &l) in s.blocks.iter_mut().zip(&s.layers) {
            b.add(t, t.state(l), s.threshold as f32, s.examples);
        }
    }

    fn merge(s: &mut NeuronsState, r: NeuronsState) -> Result<(), KindError> {
        if s.layers != r.layers || s.examples != r.examples {
            return Err(KindError::Mismatch(
                "the states measure other blocks".into(),
            ));
        }
        for (a, b) in s.blocks.iter_mut().zip(r.blocks) {
            a.merge(b, s.examples)?;
        }
        Ok(())
    }

    fn finish(s: NeuronsState) -> Result<NeuronsResult, KindError> {
        if s.blocks.iter().any(|b| b.sums.overflow) {
            return Err(KindError::NoResult(
                "a neuron's sum left the fixed-point range".into(),
            ));
        }
        if s.blocks.iter().any(|b| b.tokens == 0) {
            return Err(KindError::NoResult("no token reached the neurons".into()));
        }
        let edges = log_frequency_edges();
        let mut out = NeuronsResult {
            labels: s.labels.clone(),
            threshold: s.threshold,
            dense_above: s.dense,
            tokens: s.blocks.iter().map(|b| b.tokens).collect(),
            frequency: Vec::new(),
            mean: Vec::new(),
            max: Vec::new(),
            dead: Vec::new(),
            dense: Vec::new(),
            frequency_counts: Vec::new(),
            log_frequency_edges: edges,
            top: Vec::new(),
        };
        for b in &s.blocks {
            out.add_block(b, s.dense, s.k);
        }
        Ok(out)
    }

    fn validate(o: &NeuronsResult, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(o, cx)?;
        expect_per_label("tokens", &o.tokens, &o.labels)?;
        expect_per_label("dead", &o.dead, &o.labels)?;
        expect_per_label("dense", &o.dense, &o.labels)?;
        expect_per_label("top", &o.top, &o.labels)?;
        expect_per_label("frequency_counts", &o.frequency_counts, &o.labels)?;
        for (name, rows) in [("frequency", &o.frequency), ("mean", &o.mean)] {
            expect_per_label(name, rows, &o.labels)?;
            for (l, row) in rows.iter().enumerate() {
                expect_len(
                    &format!("{name}[{l}] (one per neuron)"),
                    row.len(),
                    cx.hidden_size,
                )?;
            }
        }
        expect_per_label("max", &o.max, &o.labels)?;
        for (l, row) in o.max.iter().enumerate() {
            expect_len(
                &format!("max[{l}] (one per neuron)"),
                row.len(),
                cx.hidden_size,
            )?;
        }
        for (l, c) in o.frequency_counts.iter().enumerate() {
            super::kind::check_edges(&format!("frequency_counts[{l}]"), &o.log_frequency_edges, c)?;
        }
        for (l, top) in o.top.iter().enumerate() {
            if let Some(t) = top.iter().find(|t| t.neuron >= cx.hidden_size) {
                return Err(KindError::Invalid(format!(
                    "top[{l}]: neuron {} of {}",
                    t.neuron, cx.hidden_size
                )));
            }
        }
        Ok(())
    }

    fn section(o: &NeuronsResult, cx: &Context, _: Medium) -> Section {
        Section {
            heading: "MLP neurons: frequency, dead and dense".into(),
            intro: format!(
                "Per block, each of the {} neurons: how often its activation exceeds {}, its mean and its largest value. Dead neurons never exceed it; dense ones do on more than {} of the tokens.",
                cx.hidden_size,
                fmt_num(o.threshold),
                fmt_num(o.dense_above)
            ),
            notes: vec![],
            charts: vec![o.fractions_chart(cx.hidden_size), o.histogram_chart()],
            tables: vec![o.top_table()],
            wide: false,
            collapsed: None,
        }
    }

    fn compare(a: &NeuronsResult, b: &NeuronsResult, c: &mut Comparer) -> Result<(), Mismatch> {
        c.same("blocks", &a.labels, &b.labels)?;
        for (name, xa, xb) in [
            ("frequency", &a.frequency, &b.frequency),
            ("mean", &a.mean, &b.mean),
        ] {
            let mut m = c.metric(name);
            for (l, (ra, rb)) in xa.iter().zip(xb).enumerate() {
                for (j, (va, vb)) in ra.iter().zip(rb).enumerate() {
                    m.add(*va, *vb, || format!("{} neuron {j}", a.labels[l]));
                }
            }
            c.push(m);
        }
        let mut m = c.metric("dead");
        for (l, (va, vb)) in a.dead.iter().zip(&b.dead).enumerate() {
            m.add(*va as f64, *vb as f64, || a.labels[l].clone());
        }
        c.push(m);
        Ok(())
    }

    fn scalars(o: &NeuronsResult) -> Vec<Scalars> {
        let share = |v: &[u64]| -> Vec<Option<f64>> {
            v.iter()
                .zip(&o.frequency)
                .map(|(&n, f)| Some(n as f64 / f.len().max(1) as f64))
                .collect()
        };
        vec![
            Scalars::new("dead_fraction", &o.labels, share(&o.dead)),
            Scalars::new("dense_fraction", &o.labels, share(&o.dense)),
        ]
    }
}

impl NeuronsResult {
    /// Appends one block's per-neuron values, counts, histogram and top neurons.
    fn add_block(&mut self, b: &BlockNeurons, dense: f64, k: usize) {
        let (frequency, mean, max) = b.profile();
        let counts = log_frequency_counts(&frequency);
        let mut order: Vec<usize> = (0..max.len()).filter(|&j| max[j].is_finite()).collect();
        order.sort_by(|&x, &y| max[y].total_cmp(&max[x]).then(x.cmp(&y)));
        self.top.push(
            order
                .into_iter()
                .take(k)
                .map(|j| TopNeuron {
                    neuron: j,
                    max: max[j],
                    frequency: frequency[j],
                    mean: mean[j],
                    examples: b.examples[j].clone(),
                })
                .collect(),
        );
        self.dead
            .push(b.fired.iter().filter(|&&f| f == 0).count() as u64);
        self.dense
            .push(frequency.iter().filter(|&&f| f > dense).count() as u64);
        self.frequency_counts.push(counts);
        self.frequency.push(frequency);
        self.mean.push(mean);
        self.max.push(max);
    }

    fn fractions_chart(&self, width: usize) -> ChartSpec {
        let share = |v: &[u64]| -> Vec<Option<f64>> {
            v.iter()
                .map(|&n| Some(n as f64 / width.max(1) as f64))
                .collect()
        };
        let (dead, dense) = (share(&self.dead), share(&self.dense));
        ChartSpec {
            title: "Dead and dense neurons".into(),
            option: option(per_layer_lines(
                "Dead and dense neurons",
                "fraction of the block's neurons",
                &self.labels,
                &[("dead", &dead), ("dense", &dense)],
                "fraction",
                false,
            )),
            height: 320,
        }
    }

    fn histogram_chart(&self) -> ChartSpec {
        let bins: Vec<String> = self.log_frequency_edges[..BINS]
            .iter()
            .map(|e| format!("1e{}", fmt_num(*e)))
            .collect();
        let axes = Grid2 {
            x: &bins,
            x_name: "Firing frequency (log10 bins, from)",
            y: &self.labels,
            y_name: "Block",
        };
        let hi = self
            .frequency_counts
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(1) as f64;
        let counts = &self.frequency_counts;
        let cell = |l: usize, i: usize| {
            let c = counts[l][i];
            (c > 0).then_some(c as f64)
        };
        let mut chart = grid_heatmap(
            "Firing frequency per block",
            "neurons per log-frequency bin; dead neurons left out",
            &axes,
            &cell,
            (0.0, hi.max(1.0)),
            &["#f0f921", "#cc4778", "#0d0887"],
        );
        chart.height = chart.height.max(140 + 18 * self.labels.len() as u32);
        chart
    }

    fn top_table(&self) -> Table {
        let mut rows = Vec::new();
        for (l, top) in self.top.iter().enumerate() {
            for t in top {
                let examples: Vec<String> = t
                    .examples
                    .iter()
                    .map(|e| {
                        format!(
                            "{:?} ({} #{}, {})",
                            e.token,
                            e.text,
                            e.position,
                            fmt_num(e.value as f64)
                        )
                    })
                    .collect();
                rows.push(vec![
                    self.labels[l].clone(),
                    t.neuron.to_string(),
                    fmt_num(t.max as f64),
                    fmt_num(t.frequency),
                    fmt_num(t.mean),
                    examples.join("; "),
                ]);
            }
        }
        Table {
            caption: "Neurons with the largest activations, per block".into(),
            headers: ["block", "neuron", "max", "frequency", "mean", "largest on"]
                .map(String::from)
                .to_vec(),
            rows,
            text_columns: vec![0, 5],
        }
    }
}
