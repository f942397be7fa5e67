//! `sae`: a published sparse autoencoder applied to the corpus, with the statistics
//! researchers report. The SAE is read by the run's setup ([`crate::assets::sae`]); its
//! hook names the site and index it reads ([`hooks`]); each text's rows are encoded and
//! decoded as SAELens does ([`encode`]); per feature, how often and how strongly it
//! fires and on which tokens; per token, the L0 and how well the input is
//! reconstructed. Counts are integers and sums fixed-point, so any split of the texts
//! merges to the same bits.
//!
//! Centring: TransformerLens loads LayerNorm models (GPT-2, Pythia) with
//! `center_writing_weights`, so the residual stream their SAEs were trained on is
//! centred per token. `center` defaults to the SAE's own record of it, else to true for
//! LayerNorm families at residual sites.

pub mod encode;
pub mod hooks;
pub mod result;
pub mod splice;
pub mod view;

use crate::analyses::axes::{Axes, Axis};
use std::collections::BTreeMap;

use serde::Deserialize;

use self::result::{SaeAbout, SaeResult, SaeState, TopFeature, TrainingVsCorpus, SUMS};
use self::splice::SpliceState;
use super::firing::{log_frequency_counts, log_frequency_edges, BlockNeurons};
use super::kind::{
    Analysis, Check, Context, KindError, Medium, Scalars, Section, Setup, TextActivations,
};
use crate::assets::sae::{Sae as LoadedSae, SaeLocation};
use crate::assets::{AssetRef, Assets};
use crate::compare::rules::{Comparer, Mismatch};
use crate::model::{ModelInfo, Site};
use crate::spec::error::SpecError;
use crate::stats::gram::Fixed;

/// `{kind: sae, sae: FOLDER or {repo, path, revision}, hook, center, examples: 10, dense: 0.1}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sae {
    /// The SAE: a local folder (relative to the spec file, or absolute), or `{repo:
    /// ORG/NAME, path: FOLDER, revision: main}` on the Hub (read through strata's Hub
    /// client and cache).
    pub sae: SaeLocation,
    /// The hook it reads (`blocks.8.hook_resid_pre`), only where its files do not say;
    /// the site and layer follow from it.
    #[serde(default)]
    pub hook: Option<String>,
    /// Centre each input token (`x − mean_d(x)`) before encoding. Default: the SAE's
    /// `center_writing_weights` when its files record it, else true for LayerNorm
    /// families at residual sites and false otherwise.
    #[serde(default)]
    pub center: Option<bool>,
    /// The largest activations kept per feature, one per text (default 10).
    #[serde(default = "default_examples")]
    pub examples: usize,
    /// A feature is dense when it fires on more than this fraction of tokens (in (0, 1);
    /// default 0.1).
    #[serde(default = "default_dense")]
    pub dense: f64,
    /// The dataset-wide input scale of an `expected_average_only_in` SAE whose files do
    /// not give it (SAELens keeps it in its directory of releases).
    #[serde(default)]
    pub norm_scaling_factor: Option<f64>,
    /// Also run the rest of the network with the reconstruction in place of the SAE's
    /// input, and again with zeros there: the next-token loss recovered and the KL to the
    /// clean output (SAEBench's splice metrics). Costs two partial forwards and three
    /// unembeddings per text; decoders only.
    #[serde(default)]
    pub splice: bool,
}

fn default_examples() -> usize {
    10
}

fn default_dense() -> f64 {
    0.1
}

/// The most examples a feature keeps.
const MAX_EXAMPLES: usize = 1000;
/// Features listed by frequency and by largest activation.
const TOP: usize = 10;

impl Sae {
    /// The SAE read for this analysis, or its error as the spec's `sae` field names it.
    fn loaded<'a>(&self, assets: &'a Assets) -> Option<&'a crate::assets::ReadSae> {
        assets.sae(&self.sae, self.norm_scaling_factor)
    }

    /// The hook the SAE reads: the spec's where its files name none.
    fn hook(&self, sae: &LoadedSae) -> Option<String> {
        sae.hook.clone().or_else(|| self.hook.clone())
    }

    /// Whether to centre, and why.
    fn center(&self, sae: &LoadedSae, site: Site, info: &ModelInfo) -> (bool, String) {
        if let Some(c) = self.center {
            return (c, "the spec's `center`".into());
        }
        if let Some(c) = sae.center_writing_weights {
            return (
                c,
                "the SAE's model_from_pretrained_kwargs.center_writing_weights".into(),
            );
        }
        let c = info.layer_norm && hooks::in_residual_basis(site);
        let why = match (info.layer_norm, c) {
            (true, true) => "a LayerNorm family at a residual site (TransformerLens centres its writing weights)",
            (true, false) => "a site outside the residual stream's basis",
            (false, _) => "an RMSNorm family (TransformerLens does not centre it)",
        };
        (c, why.into())
    }
}

impl Analysis for Sae {
    const KIND: &'static str = "sae";
    const AXES: Axes = Axes {
        label_is_block: false,
        paths: &[
            ("frequency_counts", &[Axis::Bin]),
            ("frequency", &[Axis::Feature]),
            ("max", &[Axis::Feature]),
            ("mean", &[Axis::Feature]),
            ("examples", &[Axis::Feature]),
            ("log_frequency_edges", &[Axis::Bin]),
        ],
    };
    const SITE_FROM_ASSETS: bool = true;
    type State = Box<SaeState>;
    type Output = Box<SaeResult>;

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        at.fraction("dense", self.dense, "a fraction", 0.1)?;
        if self.examples == 0 || self.examples > MAX_EXAMPLES {
            return Err(at.invalid(
                "examples",
                self.examples,
                format!("keep between 1 and {MAX_EXAMPLES} examples per feature, e.g. 10"),
            ));
        }
        if let Some(s) = self
            .norm_scaling_factor
            .filter(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(at.invalid("norm_scaling_factor", s, "give a positive scale, e.g. 1.7"));
        }
        Ok(())
    }

    fn needs(&self) -> Vec<AssetRef> {
        vec![AssetRef::Sae(
            self.sae.clone(),
            self.norm_scaling_factor.map(f64::to_bits),
        )]
    }

    fn asset_site(&self, assets: &Assets, info: &ModelInfo) -> Option<Site> {
        let sae = self.loaded(assets)?.as_ref().ok()?;
        hooks::site_of(&self.hook(sae)?, info).ok().map(|(s, _)| s)
    }

    fn start(&self, at: &Setup) -> Result<Box<SaeState>, SpecError> {
        let sae = match self.loaded(at.assets) {
            Some(Ok(sae)) => sae.clone(),
            Some(Err(e)) => return Err(at.invalid("sae", &self.sae, e.to_string())),
            None => return Err(at.invalid("sae", &self.sae, "the run's setup did not read it")),
        };
        let hook = self.hook_checked(at, &sae)?;
        // The run's setup resolved the site from the same hook.
        let (_, layer) =
            hooks::site_of(&hook, at.info).map_err(|why| at.invalid("hook", &hook, why))?;
        let target = self.target(at, &sae, layer)?;
        let splice = self.splice_state(at, target.unwrap_or((at.site, layer)))?;
        if sae.d_in != at.info.hidden_size {
            return Err(at.invalid("sae", &self.sae, format!(
                "the SAE reads vectors of width {} but {} of this model is {} wide: use the SAE trained on this model",
                sae.d_in, at.labels[layer], at.info.hidden_size
            )));
        }
        let (center, center_from) = self.center(&sae, at.site, at.info);
        let about = SaeAbout {
            source: sae.source.clone(),
            hook,
            label: at.labels[layer].clone(),
            architecture: architecture(&sae),
            d_in: sae.d_in,
            d_sae: sae.d_sae,
            hook_out: target.map(|_| self.hook_out(&sae, layer)),
            label_out: target.map(|(site, i)| match site {
                Site::Hidden => at.labels[i].clone(),
                s => s.label(i),
            }),
            d_out: target.map(|_| sae.d_out),
            k: match &sae.activation {
                crate::assets::sae::Activation::TopK { k, .. } => Some(*k),
                _ => None,
            },
            center,
            center_from,
            normalize: sae.normalize,
            apply_b_dec_to_input: sae.apply_b_dec_to_input,
        };
        Ok(Box::new(SaeState {
            about,
            layer,
            examples: self.examples,
            dense: self.dense,
            features: BlockNeurons::new(sae.d_sae),
            l0: BTreeMap::new(),
            sums: Fixed::zeros(SUMS.len()),
            x_sum: Fixed::zeros(sae.d_out),
            boundary: 0,
            target,
            trained_alive: sae
                .log_sparsity
                .as_ref()
                .filter(|v| v.len() == sae.d_sae)
                .map(|v| v.iter().map(|&x| x > TRAINING_FLOOR).collect()),
            splice,
            sae: Some(sae),
        }))
    }

    fn splices_from(s: &Box<SaeState>) -> Option<usize> {
        s.splice
            .as_ref()
            .map(|_| s.target.map_or(s.layer, |(_, i)| i))
    }

    fn also_reads(s: &Box<SaeState>) -> Option<(Site, usize)> {
        s.target
    }

    fn reads_head(s: &Box<SaeState>) -> bool {
        s.splice.is_some()
    }
    fn layers(s: &Box<SaeState>) -> Vec<usize> {
        vec![s.layer]
    }

    fn observe(s: &mut Box<SaeState>, t: &TextActivations) {
        let Some(sae) = s.sae.clone() else { return };
        let d = sae.d_in;
        let rows = t.state(s.layer).len() / d.max(1);
        // What x̂ stands for, as captured: a transcoder's output site (which arrives with
        // its input, the run reads both), else the SAE's own input.
        let captured = target_or(t, s);
        if rows == 0 || (s.target.is_some() && captured.len() != rows * sae.d_out) {
            return;
        }
        // The encoder copies its input anyway: only a centred input needs its own buffer.
        let x: std::borrow::Cow<[f32]> = if s.about.center {
            let mut x = t.state(s.layer).to_vec();
            for row in x.chunks_exact_mut(d) {
                let mu = encode::row_mean(row);
                row.iter_mut().for_each(|v| *v -= mu);
            }
            x.into()
        } else {
            t.state(s.layer).into()
        };
        let out = encode::encode(&sae, &x);
        s.boundary += out.boundary;
        s.features.add_active(t, &out.active, s.examples);
        for row in &out.active {
            *s.l0.entry(row.len() as i32).or_default() += 1;
        }
        // A transcoder's output is compared with its output site's vectors, as captured.
        let (target, width, at) = match s.target {
            Some((_, i)) => (captured, sae.d_out, i),
            None => (&x[..], d, s.layer),
        };
        let (sums, x_sum) = reconstruction_sums(target, &out.recon, width);
        s.sums.add(&sums);
        s.x_sum.add(&x_sum);
        let centred = s.about.center && s.target.is_none();
        if let (Some(sp), Some(splice), Some(lens)) = (&mut s.splice, t.splice, t.lens) {
            let xhat = splice::in_site_basis(&out.recon, captured, centred, width);
            sp.observe((splice, lens), at, &xhat, &t.next_token_ids());
        }
    }

    fn merge(s: &mut Box<SaeState>, r: Box<SaeState>) -> Result<(), KindError> {
        if s.about != r.about || s.layer != r.layer || s.examples != r.examples {
            return Err(KindError::Mismatch("the states apply other SAEs".into()));
        }
        s.features.merge(r.features, s.examples)?;
        for (k, v) in r.l0 {
            *s.l0.entry(k).or_default() += v;
        }
        s.sums.merge(&r.sums);
        s.x_sum.merge(&r.x_sum);
        s.boundary += r.boundary;
        match (&mut s.splice, r.splice) {
            (Some(a), Some(b)) => a.merge(b),
            (None, None) => {}
            _ => {
                return Err(KindError::Mismatch(
                    "one state splices, the other not".into(),
                ))
            }
        }
        Ok(())
    }

    fn finish(s: Box<SaeState>) -> Result<Box<SaeResult>, KindError> {
        finish(*s).map(Box::new)
    }

    fn section(o: &Box<SaeResult>, cx: &Context, medium: Medium) -> Section {
        view::section(o, cx, medium)
    }

    fn validate(o: &Box<SaeResult>, _cx: &Context) -> Result<(), KindError> {
        o.validate()
    }

    fn scalars(o: &Box<SaeResult>) -> Vec<Scalars> {
        let label = std::slice::from_ref(&o.sae.label);
        o.headline()
            .into_iter()
            .map(|(name, v)| Scalars::new(name, label, vec![Some(v)]))
            .collect()
    }

    fn compare(a: &Box<SaeResult>, b: &Box<SaeResult>, c: &mut Comparer) -> Result<(), Mismatch> {
        c.same("SAE hook", &a.sae.hook, &b.sae.hook)?;
        c.same("SAE features", &a.sae.d_sae, &b.sae.d_sae)?;
        let theirs = b.headline();
        for (name, x) in a.headline() {
            let Some(&(_, y)) = theirs.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            let mut m = c.metric(name);
            m.add(x, y, || a.sae.label.clone());
            c.push(m);
        }
        let mut m = c.metric("frequency");
        for (j, (x, y)) in a.frequency.iter().zip(&b.frequency).enumerate() {
            m.add(*x, *y, || format!("feature {j}"));
        }
        c.push(m);
        Ok(())
    }
}

impl Sae {
    /// A transcoder's output hook: its files', else the MLP output of its input's block.
    fn hook_out(&self, sae: &LoadedSae, block: usize) -> String {
        sae.hook_out
            .clone()
            .unwrap_or_else(|| format!("blocks.{block}.hook_mlp_out"))
    }

    /// A transcoder's output site and index, checked: it reads `mlp_in` (or a hidden
    /// state) uncentred, and writes a site of its output's width.
    fn target(
        &self,
        at: &Setup,
        sae: &LoadedSae,
        layer: usize,
    ) -> Result<Option<(Site, usize)>, SpecError> {
        if !sae.transcoder {
            return Ok(None);
        }
        if !matches!(at.site, Site::MlpIn | Site::Hidden) {
            return Err(at.invalid("sae", &self.sae, format!(
                "a transcoder reading {} is not one strata applies: it applies transcoders that read the MLP's input (mlp_in) or a hidden state",
                at.site.name()
            )));
        }
        if self.center == Some(true) {
            return Err(at.invalid("center", true, "a transcoder's output is compared with its output site as captured, so its input is not centred: remove `center`"));
        }
        let hook = self.hook_out(sae, layer);
        let (site, index) = hooks::site_of(&hook, at.info)
            .map_err(|why| at.invalid("sae", &self.sae, format!("its output hook: {why}")))?;
        let width = at.info.width(site).unwrap_or(0);
        if site == Site::AttnZ || site == Site::MlpAct || width != sae.d_out {
            return Err(at.invalid("sae", &self.sae, format!(
                "the transcoder writes vectors of width {} to `{hook}`, which is {} wide in this model: use the transcoder trained on this model",
                sae.d_out, width
            )));
        }
        Ok(Some((site, index)))
    }

    /// The splice state when `splice` is set, refusing a model without a head and a site
    /// the forward cannot resume from.
    fn splice_state(
        &self,
        at: &Setup,
        (site, layer): (Site, usize),
    ) -> Result<Option<SpliceState>, SpecError> {
        if !self.splice {
            return Ok(None);
        }
        if !at.info.lm_head {
            return Err(at.invalid("splice", true, format!(
                "{} has no language-model head, so there is no next-token loss to splice into: remove `splice`",
                at.info.architecture
            )));
        }
        if site == Site::Hidden && layer == at.info.n_layers {
            return Err(at.invalid("splice", true, format!(
                "{} has the final norm applied; an SAE there cannot be spliced back: remove `splice`",
                at.labels[layer]
            )));
        }
        Ok(Some(SpliceState::new(site)))
    }

    /// The hook, refusing a spec `hook` that contradicts the SAE's files, and an SAE with
    /// none.
    fn hook_checked(&self, at: &Setup, sae: &LoadedSae) -> Result<String, SpecError> {
        match (&sae.hook, &self.hook) {
            (Some(files), Some(spec)) if files != spec => Err(at.invalid("hook", spec, format!(
                "the SAE's files say it reads `{files}`: remove `hook`, or give an SAE trained at `{spec}`"
            ))),
            (Some(h), _) | (None, Some(h)) => Ok(h.clone()),
            (None, None) => Err(at.invalid("hook", "(none)", "the SAE's files do not say where it reads: give `hook:`, e.g. blocks.8.hook_resid_pre")),
        }
    }
}

/// SAELens' name of the architecture: the activation's, or a transcoder's
/// (`jumprelu_skip_transcoder`).
fn architecture(sae: &LoadedSae) -> String {
    let a = sae.activation.name();
    match (sae.transcoder, sae.skip.is_some()) {
        (false, _) => a.into(),
        (true, skip) => format!(
            "{}{}transcoder",
            if a == "standard" { "" } else { "jumprelu_" },
            if skip { "skip_" } else { "" }
        ),
    }
}

/// The vectors the reconstruction stands for, as captured: a transcoder's output site's,
/// else the SAE's own input.
fn target_or<'a>(t: &'a TextActivations, s: &SaeState) -> &'a [f32] {
    match s.target {
        Some((site, i)) => t.at(site, i),
        None => t.state(s.layer),
    }
}

/// Per text: the reconstruction sums ([`SUMS`]) over its rows, and its per-dimension
/// input sums, in f64.
fn reconstruction_sums(x: &[f32], recon: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut sums = vec![0f64; SUMS.len()];
    let mut x_sum = vec![0f64; d];
    for (row, xh) in x.chunks_exact(d).zip(recon.chunks_exact(d)) {
        let (mut err2, mut x2, mut xh2, mut dot) = (0f64, 0f64, 0f64, 0f64);
        for ((&a, &b), s) in row.iter().zip(xh).zip(x_sum.iter_mut()) {
            let a = a as f64;
            err2 += (a - b) * (a - b);
            x2 += a * a;
            xh2 += b * b;
            dot += a * b;
            *s += a;
        }
        let cos = if x2 > 0.0 && xh2 > 0.0 {
            dot / (x2 * xh2).sqrt()
        } else {
            0.0
        };
        let ratio = if x2 > 0.0 { (xh2 / x2).sqrt() } else { 0.0 };
        for (s, v) in sums.iter_mut().zip([err2, x2, xh2, dot, cos, ratio]) {
            *s += v;
        }
    }
    (sums, x_sum)
}

/// The result from the counts.
fn finish(s: SaeState) -> Result<SaeResult, KindError> {
    if s.features.sums.overflow || s.sums.overflow || s.x_sum.overflow {
        return Err(KindError::NoResult(
            "a sum left the fixed-point range".into(),
        ));
    }
    let n = s.features.tokens;
    if n == 0 {
        return Err(KindError::NoResult("no token reached the SAE".into()));
    }
    let (frequency, mean, max) = s.features.profile();
    let max: Vec<f32> = max
        .into_iter()
        .map(|m| if m.is_finite() { m } else { 0.0 })
        .collect();
    let sum = |i: usize| s.sums.get(i);
    let nf = n as f64;
    let x_mean2: f64 = s.x_sum.values().iter().map(|v| (v / nf) * (v / nf)).sum();
    let total_var = sum(1) - nf * x_mean2;
    let fvu = sum(0) / total_var;
    let l0 = s.l0.iter().map(|(&k, &v)| k as f64 * v as f64).sum::<f64>() / nf;
    let top = |key: &dyn Fn(usize) -> f64| -> Vec<TopFeature> {
        let mut order: Vec<usize> = (0..frequency.len())
            .filter(|&j| frequency[j] > 0.0)
            .collect();
        order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
        order
            .into_iter()
            .take(TOP)
            .map(|j| TopFeature {
                feature: j,
                frequency: frequency[j],
                mean: mean[j],
                max: max[j],
            })
            .collect()
    };
    let top_by_frequency = top(&|j| frequency[j]);
    let top_by_max = top(&|j| max[j] as f64);
    let splice = match &s.splice {
        Some(sp) => Some(sp.finish().map_err(KindError::NoResult)?),
        None => None,
    };
    let training = s
        .trained_alive
        .as_deref()
        .map(|alive| training_vs_corpus(alive, &s.features.fired));
    Ok(SaeResult {
        tokens: n,
        dead: s.features.fired.iter().filter(|&&f| f == 0).count() as u64,
        dense: frequency.iter().filter(|&&f| f > s.dense).count() as u64,
        dense_above: s.dense,
        log_frequency_edges: log_frequency_edges(),
        frequency_counts: log_frequency_counts(&frequency),
        l0,
        l0_counts: s.l0.into_iter().collect(),
        mse: sum(0) / (nf * s.about.d_out.unwrap_or(s.about.d_in) as f64),
        fvu,
        explained_variance: 1.0 - fvu,
        cosine: sum(4) / nf,
        rel_bias: sum(2) / sum(3),
        l2_ratio: sum(5) / nf,
        boundary: s.boundary,
        training,
        splice,
        top_by_frequency,
        top_by_max,
        examples: s.features.examples,
        sae: s.about,
        frequency,
        mean,
        max,
    })
}

/// log10 of a training frequency above which a feature was alive: SAELens adds 1e-10
/// before taking the log, so a feature that never fired sits at −10.
const TRAINING_FLOOR: f32 = -9.999;

/// Features alive in training and dead here, and the reverse.
fn training_vs_corpus(alive: &[bool], fired: &[u64]) -> TrainingVsCorpus {
    let lost: Vec<usize> = (0..fired.len())
        .filter(|&j| alive[j] && fired[j] == 0)
        .collect();
    let gained = (0..fired.len())
        .filter(|&j| !alive[j] && fired[j] > 0)
        .count();
    TrainingVsCorpus {
        alive_in_training_dead_here: lost.len() as u64,
        dead_in_training_alive_here: gained as u64,
        alive_in_training_dead_here_first: lost.into_iter().take(20).collect(),
    }
}
