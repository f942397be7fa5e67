//! `agreement`: how far a second model's hidden states drift from the first's on the same
//! token ids: a quantized file against its float original, a fine-tune against its base,
//! a new release against the old. Per hidden state: the mean cosine of the two token
//! vectors, the relative error `|A - B|_F / |A|_F`, the largest absolute difference and
//! where it is, and linear CKA between `A` and `B` (Kornblith et al. 2019), plus the
//! tokens that drift most.
//!
//! Both models stay in memory for the whole run. The run loads the second model once and
//! refuses it when its tokenizer splits a text differently. Sums per text merge in the
//! text tree; CKA's `d x d` sums are exact fixed-point integers ([`crate::stats::gram`]);
//! the kept tokens and the maximum break ties by position, so every split gives the same
//! bits.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::columns::{self, Column, Values};
use super::kind::{
    Analysis, Check, Context, KindError, Medium, MemoryLimit, Section, Setup, TextActivations,
};
use crate::charts::{option, per_layer_lines, ChartSpec};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::spec::layers::LayerRef;
use crate::spec::model::ModelSpec;
use crate::stats::cca::{
    decomposition_bytes, default_ridge, default_variance, pair_values, Metric, PairValues, Side,
};
use crate::stats::gram::{
    bytes_of, centred_frobenius2, centred_matrix, column_sums, cross_products, finite_rows,
    FiniteRows, Fixed,
};
use crate::stats::{Merge, Tree};
use crate::view::{fmt_num, Table};
use nalgebra::DMatrix;

/// `{kind: agreement, model: {id: ..., quantized: true}, layers: [...], k: 10}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    /// The second model, as the spec's `model` (`id`, `revision`, `file`, `quantized`).
    pub model: ModelSpec,
    /// The hidden states to compare. Default: the spec's `layers`.
    #[serde(default)]
    pub layers: Option<Vec<LayerRef>>,
    /// How many of the most drifting tokens to list per hidden state (1 to 100).
    /// Default 10.
    #[serde(default = "default_k")]
    #[schemars(range(min = 1, max = 100))]
    pub k: usize,
    /// The most memory CKA's sums may take: `d^2` sums of 16 bytes per hidden state
    /// (twice a triangle and one square), and with `metrics` the decompositions. Default
    /// `"2 GiB"`. The two models' weights come on top: `strata validate` states them.
    #[serde(default)]
    pub max_memory: MemoryLimit,
    /// Similarity indices between the two models' vectors beside CKA (always computed),
    /// as `kind: similarity` computes them: any of `cca`, `svcca`, `pwcca` (weighted by
    /// the first model's side), `procrustes`. Default none.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// SVCCA's share of each side's variance, in (0, 1]. Default 0.99.
    #[serde(default = "default_variance")]
    pub variance: f64,
    /// CCA's ridge, a fraction of each side's mean variance. Default 1e-6.
    #[serde(default = "default_ridge")]
    pub ridge: f64,
}

fn default_k() -> usize {
    10
}

/// Sums over tokens of one text (or block of texts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreeSums {
    /// Tokens compared.
    pub tokens: u64,
    /// Sum of `cos(a_t, b_t)`.
    pub cosine: f64,
    /// Sum of `|a_t - b_t|^2`.
    pub diff2: f64,
    /// Sum of `|a_t|^2`.
    pub norm2: f64,
}

impl Merge for AgreeSums {
    fn merge(&mut self, r: &Self) {
        self.tokens += r.tokens;
        self.cosine += r.cosine;
        self.diff2 += r.diff2;
        self.norm2 += r.norm2;
    }
}

/// A token whose two vectors differ, and by how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Drift {
    /// Text id.
    pub text: String,
    /// Index of the text in the input order.
    pub text_index: u64,
    /// Token position.
    pub token_index: usize,
    /// The token.
    pub token: String,
    /// `cos(a_t, b_t)`.
    pub cosine: f64,
    /// `|a_t - b_t| / |a_t|`.
    pub relative_error: f64,
}

/// The largest `|a - b|` of a hidden state, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaxDiff {
    /// `|a - b|`.
    pub value: f64,
    /// The first model's value.
    pub a: f32,
    /// The second model's value.
    pub b: f32,
    /// Text id.
    pub text: String,
    /// Index of the text in the input order.
    pub text_index: u64,
    /// Token position.
    pub token_index: usize,
    /// The token.
    pub token: String,
    /// The dimension.
    pub dim: usize,
}

impl MaxDiff {
    /// Larger value first; ties: the earlier place.
    fn beats(&self, o: &MaxDiff) -> bool {
        self.value
            .total_cmp(&o.value)
            .then((o.text_index, o.token_index, o.dim).cmp(&(
                self.text_index,
                self.token_index,
                self.dim,
            )))
            .is_gt()
    }
}

/// Exact sums behind CKA between the two models' vectors of one hidden state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairSums {
    /// Tokens summed.
    pub n: u64,
    /// `sum of a`, `sum of b` (empty until the first token).
    pub sum_a: Fixed,
    /// `sum of b`.
    pub sum_b: Fixed,
    /// `sum of a a^T`, upper triangle.
    pub aa: Fixed,
    /// `sum of b b^T`, upper triangle.
    pub bb: Fixed,
    /// `sum of a b^T`, all `d x d`.
    pub ab: Fixed,
}

impl PairSums {
    fn add(&mut self, a: &[f64], b: &[f64], n: usize, d: usize, buf: &mut Vec<f64>) {
        if self.sum_a.raw.is_empty() {
            let tri = d * (d + 1) / 2;
            (self.sum_a, self.sum_b) = (Fixed::zeros(d), Fixed::zeros(d));
            (self.aa, self.bb, self.ab) =
                (Fixed::zeros(tri), Fixed::zeros(tri), Fixed::zeros(d * d));
        }
        buf.resize(d * d, 0.0);
        cross_products(a, a, n, d, buf);
        self.aa.add_upper(buf, d);
        cross_products(b, b, n, d, buf);
        self.bb.add_upper(buf, d);
        cross_products(a, b, n, d, buf);
        self.ab.add(buf);
        self.sum_a.add(&column_sums(a, d));
        self.sum_b.add(&column_sums(b, d));
        self.n += n as u64;
    }

    fn merge(&mut self, r: &PairSums) -> Result<(), KindError> {
        if r.sum_a.raw.is_empty() {
            return Ok(());
        }
        if !self.sum_a.raw.is_empty() && self.ab.raw.len() != r.ab.raw.len() {
            return Err(KindError::Mismatch(
                "agreement sums of different hidden sizes".into(),
            ));
        }
        for (x, y) in [
            (&mut self.sum_a, &r.sum_a),
            (&mut self.sum_b, &r.sum_b),
            (&mut self.aa, &r.aa),
            (&mut self.bb, &r.bb),
            (&mut self.ab, &r.ab),
        ] {
            x.merge(y);
        }
        self.n += r.n;
        Ok(())
    }

    /// The centred second moments `C_aa`, `C_bb`, `C_ab` (`None` with fewer than two
    /// tokens).
    fn moments(&self) -> Option<[DMatrix<f64>; 3]> {
        if self.n < 2 || self.sum_a.raw.is_empty() {
            return None;
        }
        let n = self.n as f64;
        let d = self.sum_a.raw.len();
        let mean = |f: &Fixed| -> Vec<f64> { f.values().iter().map(|v| v / n).collect() };
        let (ma, mb) = (mean(&self.sum_a), mean(&self.sum_b));
        let m = |p: &Fixed, x: &[f64], y: &[f64], sym: bool| {
            DMatrix::from_row_slice(d, d, &centred_matrix(p, x, y, n, sym))
        };
        Some([
            m(&self.aa, &ma, &ma, true),
            m(&self.bb, &mb, &mb, true),
            m(&self.ab, &ma, &mb, false),
        ])
    }

    /// The similarity indices `asked` between the two models' vectors.
    fn indices(&self, asked: &Indices) -> PairValues {
        match self.moments() {
            None => PairValues::default(),
            Some([aa, bb, ab]) => {
                let a = Side::of(aa, asked.ridge, asked.variance);
                let b = Side::of(bb, asked.ridge, asked.variance);
                pair_values(&a, &b, &ab, &asked.metrics, 0)
            }
        }
    }

    /// Linear CKA between the two models' vectors; `None` without variance.
    fn cka(&self) -> Result<Option<f64>, KindError> {
        let all = [&self.sum_a, &self.sum_b, &self.aa, &self.bb, &self.ab];
        if all.iter().any(|f| f.overflow) {
            return Err(KindError::NoResult(
                "the exact sums overflowed (activations beyond 1e11)".into(),
            ));
        }
        if self.n < 2 || self.sum_a.raw.is_empty() {
            return Ok(None);
        }
        let n = self.n as f64;
        let mean = |f: &Fixed| -> Vec<f64> { f.values().iter().map(|v| v / n).collect() };
        let (ma, mb) = (mean(&self.sum_a), mean(&self.sum_b));
        let xx = centred_frobenius2(&self.aa, &ma, &ma, n, true);
        let yy = centred_frobenius2(&self.bb, &mb, &mb, n, true);
        let xy = centred_frobenius2(&self.ab, &ma, &mb, n, false);
        let den = (xx * yy).sqrt();
        Ok((den > 0.0).then(|| xy / den))
    }
}

/// One hidden state's part of the state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelAgreement {
    /// Per-text sums merged by text index.
    pub tree: Tree<AgreeSums>,
    /// CKA's exact sums.
    pub pair: PairSums,
    /// Tokens left out for a NaN or infinite value in either model.
    pub nonfinite: u64,
    /// The `k` tokens of lowest cosine so far (ties: the earlier token).
    pub drift: Vec<Drift>,
    /// The largest difference so far.
    pub max: Option<MaxDiff>,
}

/// Agreement so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementState {
    /// Which of the spec's second models (`Spec::companions`).
    pub companion: usize,
    /// The second model's id.
    pub model: String,
    /// Hidden-state indices.
    pub layers: Vec<usize>,
    /// Their labels.
    pub labels: Vec<String>,
    /// Drifting tokens kept per hidden state.
    pub k: usize,
    /// Per hidden state.
    pub per_label: Vec<LabelAgreement>,
    /// The similarity indices asked for beside CKA, and their parameters.
    #[serde(default)]
    pub indices: Indices,
}

/// The similarity indices an agreement computes beside CKA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Indices {
    /// The indices (none by default).
    pub metrics: Vec<Metric>,
    /// SVCCA's variance share.
    pub variance: f64,
    /// CCA's ridge fraction.
    pub ridge: f64,
}

impl Default for Indices {
    fn default() -> Self {
        Self {
            metrics: Vec::new(),
            variance: default_variance(),
            ridge: default_ridge(),
        }
    }
}

impl Indices {
    /// Whether any index beside CKA is asked for.
    fn any(&self) -> bool {
        self.metrics.iter().any(|&m| m != Metric::Cka)
    }
}

/// How far the second model drifts from the first, per hidden state. Every per-label list
/// has one entry per label; `null` where there was no token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgreementResult {
    /// The second model's id (its provenance is in `provenance.companions`).
    pub model: String,
    /// Hidden-state labels.
    pub labels: Vec<String>,
    /// Tokens compared, per hidden state.
    pub tokens: Vec<u64>,
    /// Tokens left out for a NaN or infinite value in either model.
    pub nonfinite_tokens: Vec<u64>,
    /// Mean over tokens of `cos(a_t, b_t)` (1 where both vectors are 0).
    pub cosine_mean: Vec<Option<f64>>,
    /// `|A - B|_F / |A|_F` over all tokens.
    pub relative_error: Vec<Option<f64>>,
    /// The largest `|a - b|` and where it occurs.
    pub max_abs_diff: Vec<Option<MaxDiff>>,
    /// Linear CKA between `A` and `B`.
    pub cka: Vec<Option<f64>>,
    /// `[label][rank]`: the `k` tokens of lowest cosine, lowest first.
    pub drift: Vec<Vec<Drift>>,
    /// Mean canonical correlation per hidden state (with `metrics: [cca]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cca: Option<Vec<Option<f64>>>,
    /// SVCCA per hidden state (with `svcca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svcca: Option<Vec<Option<f64>>>,
    /// PWCCA weighted by the first model's side, per hidden state (with `pwcca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwcca: Option<Vec<Option<f64>>>,
    /// Orthogonal Procrustes distance per hidden state (with `procrustes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procrustes: Option<Vec<Option<f64>>>,
}

/// Cosine of two vectors: 1 where both are zero, 0 where one is.
fn cosine(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let (mut ab, mut aa, mut bb, mut dd) = (0.0, 0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
        dd += (x - y) * (x - y);
    }
    let cos = match (aa > 0.0, bb > 0.0) {
        (true, true) => ab / (aa.sqrt() * bb.sqrt()),
        (false, false) => 1.0,
        _ => 0.0,
    };
    (cos, dd, aa)
}

/// Keeps the `k` lowest-cosine tokens, ties by place.
fn keep_lowest(drift: &mut Vec<Drift>, k: usize) {
    drift.sort_by(|x, y| {
        x.cosine
            .total_cmp(&y.cosine)
            .then((x.text_index, x.token_index).cmp(&(y.text_index, y.token_index)))
    });
    drift.truncate(k);
}

impl LabelAgreement {
    /// Adds one text's rows of both models.
    fn observe(&mut self, t: &TextActivations, a: &[f32], b: &[f32], k: usize) {
        let d = t.dim.max(1);
        if a.len() != b.len() {
            return;
        }
        let FiniteRows { x, kept, left_out } = finite_rows(&[a, b], d);
        self.nonfinite += left_out;
        let (xa, xb) = (&x[0], &x[1]);
        let n = kept.len();
        let mut sums = AgreeSums::default();
        for (row, (ra, rb)) in kept.iter().zip(xa.chunks(d).zip(xb.chunks(d))) {
            let (cos, dd, aa) = cosine(ra, rb);
            sums.tokens += 1;
            sums.cosine += cos;
            sums.diff2 += dd;
            sums.norm2 += aa;
            let pos = t.first_token + row;
            let token = || t.tokens.get(pos).cloned().unwrap_or_default();
            self.drift.push(Drift {
                text: t.id.to_string(),
                text_index: t.index as u64,
                token_index: pos,
                token: token(),
                cosine: cos,
                relative_error: if aa > 0.0 {
                    (dd / aa).sqrt()
                } else {
                    dd.sqrt()
                },
            });
            for (dim, (&p, &q)) in ra.iter().zip(rb).enumerate() {
                let m = MaxDiff {
                    value: (p - q).abs(),
                    a: p as f32,
                    b: q as f32,
                    text: String::new(),
                    text_index: t.index as u64,
                    token_index: pos,
                    token: String::new(),
                    dim,
                };
                if self.max.as_ref().is_none_or(|cur| m.beats(cur)) {
                    self.max = Some(MaxDiff {
                        text: t.id.to_string(),
                        token: token(),
                        ..m
                    });
                }
            }
        }
        keep_lowest(&mut self.drift, k);
        self.tree.push(t.index as u64, sums);
        if n > 0 {
            self.pair.add(xa, xb, n, d, &mut Vec::new());
        }
    }

    fn merge(&mut self, r: LabelAgreement, k: usize) -> Result<(), KindError> {
        self.tree.join(r.tree)?;
        self.pair.merge(&r.pair)?;
        self.nonfinite += r.nonfinite;
        self.drift.extend(r.drift);
        keep_lowest(&mut self.drift, k);
        if let Some(m) = r.max {
            if self.max.as_ref().is_none_or(|cur| m.beats(cur)) {
                self.max = Some(m);
            }
        }
        Ok(())
    }
}

/// Bytes of CKA's sums for `l` hidden states of size `d`.
pub fn state_bytes(l: usize, d: usize) -> u64 {
    bytes_of(l * (d * (d + 1) + d * d + 2 * d))
}

/// Where the largest |a − b| of a hidden state sits.
fn max_diff_at(m: &Option<MaxDiff>) -> String {
    m.as_ref().map_or("—".into(), |m| {
        format!("{} #{} {:?}, dim {}", m.text, m.token_index, m.token, m.dim)
    })
}

/// The per-hidden-state columns of an agreement result.
const COLUMNS: &[Column<AgreementResult>] = &[
    Column::new("tokens", "tokens", |r| Values::Count(r.tokens.clone())),
    Column::new("cosine_mean", "mean cosine", |r| {
        Values::Stat(r.cosine_mean.clone())
    }),
    Column::new("relative_error", "relative error", |r| {
        Values::Stat(r.relative_error.clone())
    }),
    Column::new("cka", "CKA", |r| Values::Stat(r.cka.clone())),
    Column::new("max_abs_diff", "max |a−b|", |r| {
        Values::Stat(
            r.max_abs_diff
                .iter()
                .map(|m| m.as_ref().map(|m| m.value))
                .collect(),
        )
    }),
    Column::new("max_abs_diff_at", "where (text, token, dim)", |r| {
        Values::Text(r.max_abs_diff.iter().map(max_diff_at).collect())
    }),
];

impl Analysis for Agreement {
    const KIND: &'static str = "agreement";
    type State = AgreementState;
    type Output = AgreementResult;
    const COLUMNS: &'static [Column<AgreementResult>] = COLUMNS;

    fn labels(o: &AgreementResult) -> &[String] {
        &o.labels
    }

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        if self.k == 0 || self.k > 100 {
            return Err(at.invalid("k", self.k, "list 1 to 100 drifting tokens"));
        }
        at.cca_parameters(self.variance, self.ridge)
    }

    fn companion(&self) -> Option<&ModelSpec> {
        Some(&self.model)
    }

    fn start(&self, at: &Setup) -> Result<AgreementState, SpecError> {
        let (companion, id, other) = at.companion(&self.model);
        let invalid = |value: String, fix: String| at.invalid("model", value, fix);
        if let Some(other) = other {
            let (a, b) = (at.info, other);
            if (a.hidden_size, a.n_layers) != (b.hidden_size, b.n_layers) {
                return Err(invalid(
                    format!("{} ({} layers, {} dims)", id, b.n_layers, b.hidden_size),
                    format!(
                        "the first model has {} layers of {} dims: agreement compares hidden states of the same shape, so use a model of that shape",
                        a.n_layers, a.hidden_size
                    ),
                ));
            }
        }
        let selected = match &self.layers {
            Some(refs) => at.layers("layers", refs)?,
            None => at.selected.to_vec(),
        };
        let d = at.info.hidden_size;
        // With indices beside CKA, the decompositions of one hidden state at a time.
        let decompositions = match self.metrics.iter().any(|&m| m != Metric::Cka) {
            true => decomposition_bytes(2, d),
            false => 0,
        };
        at.fits(
            state_bytes(selected.len(), d) + decompositions,
            self.max_memory,
            &format!(
                "{} hidden states x 2 d^2 exact sums of 16 bytes for CKA, d = {d}; the two models' weights come on top",
                selected.len()
            ),
        )?;
        Ok(AgreementState {
            companion,
            model: id,
            labels: at.names(&selected),
            per_label: vec![LabelAgreement::default(); selected.len()],
            layers: selected,
            k: self.k,
            indices: Indices {
                metrics: self.metrics.clone(),
                variance: self.variance,
                ridge: self.ridge,
            },
        })
    }

    fn layers(s: &AgreementState) -> Vec<usize> {
        s.layers.clone()
    }

    fn companion_layers(s: &AgreementState) -> Option<(usize, Vec<usize>)> {
        // Both models have the same shape: the same indices.
        Some((s.companion, s.layers.clone()))
    }

    fn observe(s: &mut AgreementState, t: &TextActivations) {
        let Some(other) = t.companions.get(s.companion) else {
            return;
        };
        let k = s.k;
        s.per_label
            .par_iter_mut()
            .zip(&s.layers)
            .for_each(|(label, &l)| {
                let b = other.get(l).and_then(|x| x.as_deref()).unwrap_or(&[]);
                label.observe(t, t.state(l), b, k);
            });
    }

    fn merge(s: &mut AgreementState, right: AgreementState) -> Result<(), KindError> {
        if (&s.layers, s.k, &s.model, &s.indices)
            != (&right.layers, right.k, &right.model, &right.indices)
            || s.per_label.len() != right.per_label.len()
        {
            return Err(KindError::Mismatch(
                "agreement of different models, hidden states or k".into(),
            ));
        }
        for (a, b) in s.per_label.iter_mut().zip(right.per_label) {
            a.merge(b, s.k)?;
        }
        Ok(())
    }

    fn finish(s: AgreementState) -> Result<AgreementResult, KindError> {
        let sums: Vec<AgreeSums> = s
            .per_label
            .iter()
            .map(|l| l.tree.clone().fold().unwrap_or_default())
            .collect();
        let cka = s
            .per_label
            .par_iter()
            .map(|l| l.pair.cka())
            .collect::<Result<Vec<_>, KindError>>()?;
        let beyond: Vec<PairValues> = match s.indices.any() {
            true => s
                .per_label
                .iter()
                .map(|l| l.pair.indices(&s.indices))
                .collect(),
            false => Vec::new(),
        };
        let index = |m: Metric, f: fn(&PairValues) -> Option<f64>| {
            s.indices
                .metrics
                .contains(&m)
                .then(|| beyond.iter().map(f).collect::<Vec<_>>())
        };
        Ok(AgreementResult {
            cca: index(Metric::Cca, |v| v.cca),
            svcca: index(Metric::Svcca, |v| v.svcca),
            pwcca: index(Metric::Pwcca, |v| v.pwcca.0),
            procrustes: index(Metric::Procrustes, |v| v.procrustes),
            model: s.model,
            tokens: sums.iter().map(|x| x.tokens).collect(),
            nonfinite_tokens: s.per_label.iter().map(|l| l.nonfinite).collect(),
            cosine_mean: sums
                .iter()
                .map(|x| (x.tokens > 0).then(|| x.cosine / x.tokens as f64))
                .collect(),
            relative_error: sums
                .iter()
                .map(|x| (x.norm2 > 0.0).then(|| (x.diff2 / x.norm2).sqrt()))
                .collect(),
            max_abs_diff: s.per_label.iter().map(|l| l.max.clone()).collect(),
            cka,
            drift: s.per_label.into_iter().map(|l| l.drift).collect(),
            labels: s.labels,
        })
    }

    fn validate(o: &AgreementResult, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(o, cx)?;
        let l = &o.labels;
        super::kind::expect_per_label("nonfinite_tokens", &o.nonfinite_tokens, l)?;
        super::kind::expect_per_label("drift", &o.drift, l)?;
        for (name, v) in o.indices() {
            super::kind::expect_per_label(name, v, l)?;
        }
        Ok(())
    }

    fn section(o: &AgreementResult, _: &Context, _: Medium) -> Section {
        let max: Vec<Option<f64>> = o
            .max_abs_diff
            .iter()
            .map(|m| m.as_ref().map(|m| m.value))
            .collect();
        let chart =
            |name: &str, heading: &str, series: &[(&str, &[Option<f64>])], y: &str, log: bool| {
                ChartSpec {
                    title: name.into(),
                    option: option(per_layer_lines(
                        heading, &o.model, &o.labels, series, y, log,
                    )),
                    height: 360,
                }
            };
        let indices = o.indices();
        let series: Vec<(&str, &[Option<f64>])> =
            indices.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let mut charts = vec![
            chart(
                "agreement-similarity",
                "Similarity of the second model's hidden states",
                &[("mean cosine", &o.cosine_mean), ("linear CKA", &o.cka)],
                "similarity",
                false,
            ),
            chart(
                "agreement-error",
                "Difference from the first model (log scale)",
                &[
                    ("relative error |A−B|/|A|", &o.relative_error),
                    ("max |a−b|", &max),
                ],
                "difference",
                true,
            ),
        ];
        if !series.is_empty() {
            charts.push(chart(
                "agreement-indices",
                "Similarity indices beside CKA (Procrustes: a distance, 0 = the same)",
                &series,
                "index",
                false,
            ));
        }
        Section {
            wide: false,
            collapsed: None,
            heading: "Agreement with a second model".into(),
            intro: format!(
                "The same token ids through {}: how far each hidden state moved.",
                o.model
            ),
            notes: vec![],
            charts,
            tables: vec![
                columns::table("Agreement per hidden state", COLUMNS, o, &o.labels),
                drift_table(o),
            ],
        }
    }

    fn scalars(out: &AgreementResult) -> Vec<super::kind::Scalars> {
        let mut all = columns::scalars(COLUMNS, out, &out.labels);
        for (name, v) in out.indices() {
            all.push(super::kind::Scalars::new(name, &out.labels, v.clone()));
        }
        all
    }

    fn compare(a: &AgreementResult, b: &AgreementResult, c: &mut Comparer) -> Result<(), Mismatch> {
        Self::compare_columns(a, b, c)?;
        let names = |r: &AgreementResult| r.indices().into_iter().map(|x| x.0).collect::<Vec<_>>();
        c.same("similarity indices", &names(a), &names(b))?;
        for ((name, x), (_, y)) in a.indices().into_iter().zip(b.indices()) {
            let mut m = c.metric(name);
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                m.opt(*p, *q, || a.labels[i].clone());
            }
            c.push(m);
        }
        Ok(())
    }
}

impl AgreementResult {
    /// The similarity indices beside CKA that were asked for, by name.
    fn indices(&self) -> Vec<(&'static str, &Vec<Option<f64>>)> {
        [
            ("cca", &self.cca),
            ("svcca", &self.svcca),
            ("pwcca", &self.pwcca),
            ("procrustes", &self.procrustes),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.as_ref().map(|v| (n, v)))
        .collect()
    }
}

/// The tokens that drift most in the last hidden state compared.
fn drift_table(o: &AgreementResult) -> Table {
    let last = o.labels.len().saturating_sub(1);
    let rows = o
        .drift
        .get(last)
        .map(|d| {
            d.iter()
                .map(|x| {
                    vec![
                        x.text.clone(),
                        x.token_index.to_string(),
                        format!("{:?}", x.token),
                        fmt_num(x.cosine),
                        fmt_num(x.relative_error),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    Table {
        caption: format!(
            "Tokens that drift most at {}",
            o.labels.get(last).map_or("", String::as_str)
        ),
        headers: ["text", "position", "token", "cosine", "relative error"]
            .map(String::from)
            .to_vec(),
        rows,
        text_columns: vec![0, 2],
    }
}
