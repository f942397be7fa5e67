//! `router`: where a mixture of experts sends its tokens, per sparse block, over every
//! analysed token of the corpus:
//! - per expert, the tokens whose top-k includes it (`selected`), the sum of the weights
//!   it was given as applied (`weight_mass`) and of its router probability (`prob_mass`);
//! - the load-balancing loss exactly as `transformers`' `load_balancing_loss_func`
//!   computes it on the router logits of every measured block at once (Switch
//!   Transformer's auxiliary loss; 1 when the load is uniform);
//! - the balance of the load per block: the coefficient of variation of `selected`, its
//!   entropy over `ln(n_experts)`, max over mean, and the experts never chosen;
//! - the mean entropy of a token's router distribution;
//! - how often two experts are chosen for the same token (co-selection);
//! - each expert's most frequent tokens.
//!
//! Counts are integers and sums sit on a fixed-point grid, so any split of the texts
//! merges to the same bits.

use crate::analyses::axes::{Axes, Axis};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::kind::{
    expect_len, Analysis, Check, Context, KindError, Medium, Scalars, Section, Setup,
    TextActivations,
};
use crate::charts::{grid_heatmap, option, per_layer_lines, ChartSpec, Grid2};
use crate::compare::rules::{Comparer, Mismatch};
use crate::model::moe::probabilities;
use crate::model::Site;
use crate::spec::error::SpecError;
use crate::stats::gram::Fixed;
use crate::view::{fmt_num, Table};

/// `{kind: router, k: 10, co_selection: [..]}` over the sparse blocks the spec's `layers`
/// select (hidden state `l` selects block `l`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Router {
    /// Most frequent tokens kept per expert (default 10).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Blocks whose expert × expert co-selection the report draws (block indices; default:
    /// the first, middle and last measured). Every measured block's counts are in
    /// results.json whatever this says.
    #[serde(default)]
    pub co_selection: Option<Vec<usize>>,
}

fn default_k() -> usize {
    10
}

/// Per (block, expert) sums on the fixed-point grid, in this order.
const SUMS: usize = 2;
const WEIGHT: usize = 0;
const PROB: usize = 1;

/// Routing counts and sums so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterState {
    /// Tokens kept per expert.
    pub k: usize,
    /// Blocks the report draws co-selection of.
    pub drawn: Vec<usize>,
    /// The sparse blocks measured.
    pub layers: Vec<usize>,
    /// Experts per block.
    pub n_experts: usize,
    /// Experts chosen per token.
    pub top_k: usize,
    /// Tokens counted (per block: every block sees every token).
    pub tokens: u64,
    /// Per (block, expert x expert): tokens that chose both (the diagonal: that chose it).
    pub co: Vec<u64>,
    /// Per (block, expert): [`SUMS`] sums; then per block the summed token entropy.
    pub sums: Fixed,
    /// Per (block, expert): how often each token id was routed to it.
    #[serde(with = "id_pairs")]
    pub token_counts: Vec<BTreeMap<u32, u64>>,
    /// The decoded string of every token id counted.
    #[serde(with = "id_pairs")]
    pub names: BTreeMap<u32, String>,
}

/// Maps keyed by token id as lists of `[id, value]` pairs in a partial: JSON object keys
/// are strings, which do not read back as ids.
mod id_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    /// A value whose id-keyed maps travel as pairs.
    pub trait Pairs: Sized {
        /// As pairs.
        type Repr: Serialize + for<'de> Deserialize<'de>;
        /// To pairs.
        fn to(&self) -> Self::Repr;
        /// From pairs.
        fn from(r: Self::Repr) -> Self;
    }

    impl<V: Clone + Serialize + for<'de> Deserialize<'de>> Pairs for BTreeMap<u32, V> {
        type Repr = Vec<(u32, V)>;
        fn to(&self) -> Self::Repr {
            self.iter().map(|(k, v)| (*k, v.clone())).collect()
        }
        fn from(r: Self::Repr) -> Self {
            r.into_iter().collect()
        }
    }

    impl<V: Clone + Serialize + for<'de> Deserialize<'de>> Pairs for Vec<BTreeMap<u32, V>> {
        type Repr = Vec<Vec<(u32, V)>>;
        fn to(&self) -> Self::Repr {
            self.iter().map(Pairs::to).collect()
        }
        fn from(r: Self::Repr) -> Self {
            r.into_iter().map(Pairs::from).collect()
        }
    }

    pub fn serialize<T: Pairs, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        v.to().serialize(s)
    }

    pub fn deserialize<'de, T: Pairs, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::Repr::deserialize(d).map(T::from)
    }
}

/// A token and how often an expert received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCount {
    /// The token, decoded.
    pub token: String,
    /// Its id.
    pub id: u32,
    /// Times the expert was among its choices.
    pub count: u64,
}

/// Routing per sparse block. Every `[block][expert]` list has one row per entry of
/// `labels` and one value per expert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterResult {
    /// Block labels (`router.1`, ...).
    pub labels: Vec<String>,
    /// Experts per block.
    pub n_experts: usize,
    /// Experts chosen per token.
    pub top_k: usize,
    /// Tokens counted in every block.
    pub tokens: u64,
    /// Tokens whose top-k includes the expert.
    pub selected: Vec<Vec<u64>>,
    /// Sum of the weights the expert was given, as applied (after any renormalisation).
    pub weight_mass: Vec<Vec<f64>>,
    /// Sum of the expert's router probability (softmax over every expert).
    pub prob_mass: Vec<Vec<f64>>,
    /// `transformers`' `load_balancing_loss_func` over the router logits of every
    /// measured block and token: `n_experts * Σ_e f_e P_e`, with `f_e` the fraction of
    /// (token, block, choice) slots that picked `e` and `P_e` its mean probability.
    pub load_balancing_loss: f64,
    /// Coefficient of variation (population standard deviation over mean) of `selected`.
    pub load_cv: Vec<f64>,
    /// Entropy of the load `selected / Σ selected` over `ln(n_experts)`: 1 when even.
    pub load_entropy: Vec<f64>,
    /// Largest `selected` over the mean.
    pub max_over_mean: Vec<f64>,
    /// Experts no token chose.
    pub never_selected: Vec<usize>,
    /// Mean entropy of a token's router distribution, in nats.
    pub routing_entropy: Vec<f64>,
    /// `[block][expert][expert]`: tokens that chose both experts (diagonal: `selected`).
    pub co_selection: Vec<Vec<Vec<u64>>>,
    /// Blocks (indices into `labels`) whose co-selection the report draws.
    pub drawn: Vec<usize>,
    /// `[block][expert]`: its most frequent tokens, most frequent first (ties: lower id).
    pub top_tokens: Vec<Vec<Vec<TokenCount>>>,
}

impl RouterState {
    /// Sum `which` of expert `e` of measured block `b`.
    fn sum(&self, b: usize, e: usize, which: usize) -> f64 {
        self.sums.get((b * self.n_experts + e) * SUMS + which)
    }

    /// The summed token entropy of measured block `b`.
    fn entropy(&self, b: usize) -> f64 {
        self.sums.get(self.layers.len() * self.n_experts * SUMS + b)
    }

    /// Adds one block's routing of rows `rows` of a text into `sums` and the counts.
    fn observe_block(
        &mut self,
        b: usize,
        r: &crate::model::moe::Routing,
        t: &TextActivations,
        sums: &mut [f64],
    ) {
        let (n, k) = (self.n_experts, self.top_k);
        for row in t.first_token..t.token_ids.len() {
            let p = probabilities(&r.logits[row * n..(row + 1) * n]);
            let mut h = 0.0;
            for (e, &p) in p.iter().enumerate() {
                sums[(b * n + e) * SUMS + PROB] += p;
                if p > 0.0 {
                    h -= p * p.ln();
                }
            }
            sums[self.layers.len() * n * SUMS + b] += h;
            let chosen = &r.experts[row * k..(row + 1) * k];
            let id = t.token_ids[row];
            for (j, &e) in chosen.iter().enumerate() {
                let e = e as usize;
                sums[(b * n + e) * SUMS + WEIGHT] += r.weights[row * k + j] as f64;
                for &f in chosen {
                    self.co[(b * n + e) * n + f as usize] += 1;
                }
                *self.token_counts[b * n + e].entry(id).or_default() += 1;
            }
            self.names
                .entry(id)
                .or_insert_with(|| t.tokens.get(row).cloned().unwrap_or_default());
        }
    }
}

/// Balance summaries of one block's `selected`: (cv, normalised entropy, max / mean,
/// never selected).
fn balance(selected: &[u64]) -> (f64, f64, f64, usize) {
    let n = selected.len() as f64;
    let total: f64 = selected.iter().map(|&s| s as f64).sum();
    let mean = total / n;
    let var = selected
        .iter()
        .map(|&s| (s as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let entropy: f64 = selected
        .iter()
        .filter(|&&s| s > 0)
        .map(|&s| {
            let q = s as f64 / total;
            -q * q.ln()
        })
        .sum();
    let max = selected.iter().copied().max().unwrap_or(0) as f64;
    let zero = |x: f64| if mean > 0.0 { x } else { 0.0 };
    (
        zero(var.sqrt() / mean),
        if n > 1.0 { zero(entropy / n.ln()) } else { 1.0 },
        zero(max / mean),
        selected.iter().filter(|&&s| s == 0).count(),
    )
}

impl Analysis for Router {
    const KIND: &'static str = "router";
    const AXES: Axes = Axes {
        label_is_block: true,
        paths: &[
            ("selected", &[Axis::Expert]),
            ("weight_mass", &[Axis::Expert]),
            ("prob_mass", &[Axis::Expert]),
            ("top_tokens", &[Axis::Expert]),
        ],
    };
    const SITE: Option<Site> = None;
    type State = RouterState;
    type Output = RouterResult;

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        if self.k == 0 {
            return Err(at.invalid("k", 0, "keep at least 1 token per expert"));
        }
        Ok(())
    }

    fn start(&self, at: &Setup) -> Result<RouterState, SpecError> {
        let Some(moe) = &at.info.moe else {
            return Err(at.invalid(
                "kind",
                "router",
                format!(
                    "{} is a dense model (no experts to route to); the router analysis needs a mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE)",
                    at.info.architecture
                ),
            ));
        };
        let layers: Vec<usize> = Site::blocks(at.selected, at.info.n_layers)
            .into_iter()
            .filter(|&l| moe.sparse_layers[l])
            .collect();
        if layers.is_empty() {
            let hint = format!("the sparse blocks are {:?}", moe.sparse());
            return Err(at.no_blocks("sparse blocks", &hint));
        }
        let drawn = self.drawn(&layers, at)?;
        let (n, b) = (moe.n_experts, layers.len());
        Ok(RouterState {
            k: self.k,
            drawn,
            n_experts: n,
            top_k: moe.top_k,
            tokens: 0,
            co: vec![0; b * n * n],
            sums: Fixed::zeros(b * n * SUMS + b),
            token_counts: vec![BTreeMap::new(); b * n],
            names: BTreeMap::new(),
            layers,
        })
    }

    fn layers(_: &RouterState) -> Vec<usize> {
        Vec::new()
    }

    fn reads_routing(_: &RouterState) -> bool {
        true
    }

    fn observe(s: &mut RouterState, t: &TextActivations) {
        let mut sums = vec![0f64; s.sums.raw.len()];
        for b in 0..s.layers.len() {
            if let Some(Some(r)) = t.routing.get(s.layers[b]) {
                s.observe_block(b, r, t, &mut sums);
            }
        }
        s.tokens += t.token_ids.len().saturating_sub(t.first_token) as u64;
        s.sums.add(&sums);
    }

    fn merge(s: &mut RouterState, r: RouterState) -> Result<(), KindError> {
        if s.layers != r.layers || s.n_experts != r.n_experts || s.top_k != r.top_k {
            return Err(KindError::Mismatch(
                "the states measure other blocks or experts".into(),
            ));
        }
        s.tokens += r.tokens;
        s.co.iter_mut().zip(&r.co).for_each(|(a, b)| *a += b);
        s.sums.merge(&r.sums);
        for (a, b) in s.token_counts.iter_mut().zip(r.token_counts) {
            for (id, c) in b {
                *a.entry(id).or_default() += c;
            }
        }
        s.names.extend(r.names);
        Ok(())
    }

    fn finish(s: RouterState) -> Result<RouterResult, KindError> {
        if s.sums.overflow {
            return Err(KindError::NoResult(
                "a routing sum left the fixed-point range".into(),
            ));
        }
        finish(s)
    }

    fn validate(o: &RouterResult, _: &Context) -> Result<(), KindError> {
        let (b, n) = (o.labels.len(), o.n_experts);
        for (name, rows) in [("weight_mass", &o.weight_mass), ("prob_mass", &o.prob_mass)] {
            expect_len(&format!("{name} (one row per block)"), rows.len(), b)?;
            for (l, row) in rows.iter().enumerate() {
                expect_len(&format!("{name}[{l}] (one per expert)"), row.len(), n)?;
            }
        }
        expect_len("selected (one row per block)", o.selected.len(), b)?;
        expect_len("co_selection (one per block)", o.co_selection.len(), b)?;
        expect_len("top_tokens (one per block)", o.top_tokens.len(), b)?;
        for l in 0..b {
            expect_len(
                &format!("selected[{l}] (one per expert)"),
                o.selected[l].len(),
                n,
            )?;
            expect_len(
                &format!("top_tokens[{l}] (one per expert)"),
                o.top_tokens[l].len(),
                n,
            )?;
            expect_len(
                &format!("co_selection[{l}] (one row per expert)"),
                o.co_selection[l].len(),
                n,
            )?;
            for (e, row) in o.co_selection[l].iter().enumerate() {
                expect_len(&format!("co_selection[{l}][{e}]"), row.len(), n)?;
            }
        }
        for v in [
            &o.load_cv,
            &o.load_entropy,
            &o.max_over_mean,
            &o.routing_entropy,
        ] {
            expect_len("a balance summary (one per block)", v.len(), b)?;
        }
        expect_len("never_selected (one per block)", o.never_selected.len(), b)?;
        if let Some(&d) = o.drawn.iter().find(|&&d| d >= b) {
            return Err(KindError::Invalid(format!("drawn names block {d} of {b}")));
        }
        Ok(())
    }

    fn section(o: &RouterResult, _: &Context, _: Medium) -> Section {
        o.section()
    }

    fn compare(a: &RouterResult, b: &RouterResult, c: &mut Comparer) -> Result<(), Mismatch> {
        c.same("blocks", &a.labels, &b.labels)?;
        c.same("experts", &a.n_experts, &b.n_experts)?;
        let mut m = c.metric("load_balancing_loss");
        m.add(a.load_balancing_loss, b.load_balancing_loss, || {
            "corpus".into()
        });
        c.push(m);
        let share = |o: &RouterResult, l: usize, e: usize| {
            o.selected[l][e] as f64 / (o.tokens.max(1) * o.top_k as u64) as f64
        };
        let mut m = c.metric("load_share");
        for l in 0..a.labels.len() {
            for e in 0..a.n_experts {
                m.add(share(a, l, e), share(b, l, e), || {
                    format!("{} expert {e}", a.labels[l])
                });
            }
        }
        c.push(m);
        for (name, va, vb) in a
            .summaries()
            .into_iter()
            .zip(b.summaries())
            .map(|((n, x), (_, y))| (n, x, y))
        {
            let mut m = c.metric(name);
            for (l, (x, y)) in va.iter().zip(&vb).enumerate() {
                m.add(*x, *y, || a.labels[l].clone());
            }
            c.push(m);
        }
        Ok(())
    }

    fn scalars(o: &RouterResult) -> Vec<Scalars> {
        o.summaries()
            .into_iter()
            .map(|(name, v)| Scalars::new(name, &o.labels, v.into_iter().map(Some).collect()))
            .collect()
    }
}

impl Router {
    /// The measured blocks' positions the report draws co-selection of.
    fn drawn(&self, layers: &[usize], at: &Setup) -> Result<Vec<usize>, SpecError> {
        let Some(asked) = &self.co_selection else {
            let mut d = vec![0, layers.len() / 2, layers.len() - 1];
            d.dedup();
            return Ok(d);
        };
        asked
            .iter()
            .map(|l| {
                layers.iter().position(|x| x == l).ok_or_else(|| {
                    at.invalid(
                        "co_selection",
                        l,
                        format!("name blocks the analysis measures: {layers:?}"),
                    )
                })
            })
            .collect()
    }
}

/// The result from a complete state.
fn finish(s: RouterState) -> Result<RouterResult, KindError> {
    let (b, n, k) = (s.layers.len(), s.n_experts, s.top_k);
    let co = |l: usize, e: usize, f: usize| s.co[(l * n + e) * n + f];
    let selected: Vec<Vec<u64>> = (0..b)
        .map(|l| (0..n).map(|e| co(l, e, e)).collect())
        .collect();
    let per = |which: usize| -> Vec<Vec<f64>> {
        (0..b)
            .map(|l| (0..n).map(|e| s.sum(l, e, which)).collect())
            .collect()
    };
    let prob_mass = per(PROB);
    // transformers concatenates the blocks' logits: N = tokens x blocks rows, and
    // tokens_per_expert[j][e] sums to selected_e / N over the k choice slots j.
    let rows = (s.tokens * b as u64) as f64;
    let loss = if rows > 0.0 {
        (0..n)
            .map(|e| {
                let f: f64 = (0..b).map(|l| selected[l][e] as f64).sum::<f64>() / rows;
                let p: f64 = (0..b).map(|l| prob_mass[l][e]).sum::<f64>() / rows;
                f * p
            })
            .sum::<f64>()
            * n as f64
    } else {
        0.0
    };
    let summaries: Vec<_> = selected.iter().map(|sel| balance(sel)).collect();
    let top_tokens = (0..b)
        .map(|l| {
            (0..n)
                .map(|e| top(&s.token_counts[l * n + e], &s.names, s.k))
                .collect()
        })
        .collect();
    Ok(RouterResult {
        labels: s.layers.iter().map(|l| format!("router.{l}")).collect(),
        n_experts: n,
        top_k: k,
        tokens: s.tokens,
        weight_mass: per(WEIGHT),
        load_balancing_loss: loss,
        load_cv: summaries.iter().map(|x| x.0).collect(),
        load_entropy: summaries.iter().map(|x| x.1).collect(),
        max_over_mean: summaries.iter().map(|x| x.2).collect(),
        never_selected: summaries.iter().map(|x| x.3).collect(),
        routing_entropy: (0..b)
            .map(|l| s.entropy(l) / (s.tokens.max(1)) as f64)
            .collect(),
        co_selection: (0..b)
            .map(|l| {
                (0..n)
                    .map(|e| (0..n).map(|f| co(l, e, f)).collect())
                    .collect()
            })
            .collect(),
        drawn: s.drawn.clone(),
        top_tokens,
        selected,
        prob_mass,
    })
}

/// The `k` most frequent tokens of one expert (ties: the lower id first).
fn top(counts: &BTreeMap<u32, u64>, names: &BTreeMap<u32, String>, k: usize) -> Vec<TokenCount> {
    let mut v: Vec<(&u32, &u64)> = counts.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.into_iter()
        .take(k)
        .map(|(&id, &count)| TokenCount {
            token: names.get(&id).cloned().unwrap_or_default(),
            id,
            count,
        })
        .collect()
}

impl RouterResult {
    /// The per-block balance summaries, by name.
    fn summaries(&self) -> Vec<(&'static str, Vec<f64>)> {
        vec![
            ("load_cv", self.load_cv.clone()),
            ("load_entropy", self.load_entropy.clone()),
            ("max_over_mean", self.max_over_mean.clone()),
            ("routing_entropy", self.routing_entropy.clone()),
        ]
    }

    fn section(&self) -> Section {
        let experts: Vec<String> = (0..self.n_experts).map(|e| e.to_string()).collect();
        let slots = (self.tokens * self.top_k as u64).max(1) as f64;
        let load =
            |l: usize, e: usize| Some(self.selected[l][e] as f64 / slots * self.n_experts as f64);
        let axes = Grid2 {
            x: &experts,
            x_name: "Expert",
            y: &self.labels,
            y_name: "Block",
        };
        let hi = (0..self.labels.len())
            .flat_map(|l| (0..self.n_experts).map(move |e| (l, e)))
            .filter_map(|(l, e)| load(l, e))
            .fold(1.0f64, f64::max);
        let mut heat = grid_heatmap(
            "Expert load",
            "share of the choices over its uniform share (1 = balanced)",
            &axes,
            &load,
            (0.0, hi),
            &["#0d0887", "#cc4778", "#f0f921"],
        );
        heat.height = heat.height.max(120 + 18 * self.labels.len() as u32);
        let mut charts = vec![heat, self.balance_chart()];
        charts.extend(self.drawn.iter().map(|&l| self.co_heatmap(l, &experts)));
        Section {
            heading: "Router: where tokens go".into(),
            intro: format!(
                "Per sparse block, over {} tokens, each choosing {} of {} experts. Load-balancing loss (transformers' auxiliary loss over these blocks; 1 when the load is uniform): {}.",
                self.tokens,
                self.top_k,
                self.n_experts,
                fmt_num(self.load_balancing_loss)
            ),
            notes: self.notes(),
            charts,
            tables: vec![self.balance_table(), self.token_table()],
            wide: true,
            collapsed: None,
        }
    }

    fn balance_chart(&self) -> ChartSpec {
        let some = |v: &[f64]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        let (cv, ent) = (some(&self.load_cv), some(&self.load_entropy));
        ChartSpec {
            title: "Load balance per block".into(),
            option: option(per_layer_lines(
                "Load balance per block",
                "coefficient of variation of the load; its entropy over ln(experts)",
                &self.labels,
                &[("load cv", &cv), ("load entropy", &ent)],
                "balance",
                false,
            )),
            height: 320,
        }
    }

    fn co_heatmap(&self, l: usize, experts: &[String]) -> ChartSpec {
        let axes = Grid2 {
            x: experts,
            x_name: "Expert",
            y: experts,
            y_name: "Expert",
        };
        let co = &self.co_selection[l];
        let cell = |i: usize, j: usize| (i != j).then_some(co[i][j] as f64);
        let hi = (0..self.n_experts)
            .flat_map(|i| {
                (0..self.n_experts)
                    .filter(move |&j| j != i)
                    .map(move |j| co[i][j])
            })
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        grid_heatmap(
            &format!("Co-selection, {}", self.labels[l]),
            "tokens that chose both experts",
            &axes,
            &cell,
            (0.0, hi),
            &["#ffffff", "#3b528b"],
        )
    }

    fn balance_table(&self) -> Table {
        Table {
            caption: "Balance per block".into(),
            headers: [
                "block",
                "load cv",
                "load entropy",
                "max / mean",
                "never chosen",
                "routing entropy (nats)",
            ]
            .map(String::from)
            .to_vec(),
            rows: (0..self.labels.len())
                .map(|l| {
                    vec![
                        self.labels[l].clone(),
                        fmt_num(self.load_cv[l]),
                        fmt_num(self.load_entropy[l]),
                        fmt_num(self.max_over_mean[l]),
                        self.never_selected[l].to_string(),
                        fmt_num(self.routing_entropy[l]),
                    ]
                })
                .collect(),
            text_columns: vec![0],
        }
    }

    fn token_table(&self) -> Table {
        let mut rows = Vec::new();
        for (l, block) in self.top_tokens.iter().enumerate() {
            for (e, tokens) in block.iter().enumerate() {
                let list: Vec<String> = tokens
                    .iter()
                    .map(|t| format!("{:?} ×{}", t.token, t.count))
                    .collect();
                rows.push(vec![
                    self.labels[l].clone(),
                    e.to_string(),
                    self.selected[l][e].to_string(),
                    list.join(", "),
                ]);
            }
        }
        Table {
            caption: "Each expert's most frequent tokens".into(),
            headers: ["block", "expert", "tokens", "most frequent"]
                .map(String::from)
                .to_vec(),
            rows,
            text_columns: vec![0, 3],
        }
    }

    fn notes(&self) -> Vec<String> {
        let idle: usize = self.never_selected.iter().sum();
        let mut notes = Vec::new();
        if idle > 0 {
            notes.push(format!("{idle} (block, expert) pairs received no token."));
        }
        if let Some((l, m)) = self
            .max_over_mean
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
        {
            notes.push(format!(
                "The busiest expert is in {} at {} times the mean load.",
                self.labels[l],
                fmt_num(*m)
            ));
        }
        notes
    }
}
