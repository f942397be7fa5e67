//! `linear_lens`: a linear lens fitted in closed form (Din et al., "Jump to Conclusions",
//! LREC-COLING 2024): for every hidden state `l` below the last, the affine map onto the
//! last block's output before the final norm that least squares gives over the corpus,
//! `A_l = C_Ll (C_ll + λI)^-1`, `b_l = μ_L - A_l μ_l` ([`crate::stats::lens_fit`]). Exact
//! and mergeable: shards merge to the same sums, hence the same lens.
//!
//! `save: DIR` writes it as the tuned-lens package saves a lens (`config.json` and
//! `params.pt`, translators `A_l - I` and `b_l`, as the package applies `h + W h + b`),
//! so `logit_lens` with `lens: {tuned: DIR}`, and the package itself, read it.
//! `strata lens fit SPEC --out DIR` runs a spec's corpus with this kind alone.

use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::columns::{self, Values};
use super::kind::{
    Analysis, Check, Column, Context, Files, KindError, Medium, MemoryLimit, Section, Setup,
    TextActivations,
};
use crate::assets::torch_save::{self, Saved};
use crate::charts::{option, per_layer_lines, ChartSpec};
use crate::spec::error::SpecError;
use crate::stats::lens_fit::{self, LensSums};
use crate::view::fmt_num;

/// `{kind: linear_lens, ridge: 1e-6, save: lens/}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinearLens {
    /// The ridge, as a fraction of each state's mean variance, added before its
    /// covariance is inverted (at least 0). Default 1e-6.
    #[serde(default = "crate::stats::cca::default_ridge")]
    pub ridge: f64,
    /// A folder (relative to the spec file) to write the lens to, as the tuned-lens
    /// package saves one: `config.json` and `params.pt`.
    #[serde(default)]
    pub save: Option<PathBuf>,
    /// The most memory the sums may take: about `1.5 L d^2` sums of 16 bytes for `L`
    /// blocks of width `d`. Default `"2 GiB"`.
    #[serde(default)]
    pub max_memory: MemoryLimit,
}

/// The sums so far, and what the lens is written with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearLensState {
    /// The exact sums.
    pub sums: LensSums,
    /// Labels of the mapped states.
    pub labels: Vec<String>,
    /// The ridge fraction.
    pub ridge: f64,
    /// The model the lens is fitted on, as the spec names it.
    pub model: String,
    /// Where the lens is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save: Option<PathBuf>,
}

/// The fitted lens, per hidden state below the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinearLensResult {
    /// Hidden-state labels (every state below the last).
    pub labels: Vec<String>,
    /// Tokens fitted on.
    pub tokens: u64,
    /// Tokens left out for a NaN or infinite value.
    pub nonfinite_tokens: u64,
    /// The ridge fraction.
    pub ridge: f64,
    /// The states whose covariance had an eigenvalue below the ridge.
    pub ridge_needed: Vec<String>,
    /// Share of the variance of the last block's output (before the final norm) the map
    /// from each state explains, on the corpus it was fitted on.
    pub r2: Vec<Option<f64>>,
    /// `|A_l - I|_F / sqrt(d)`: how far each translator is from the identity (the logit
    /// lens).
    pub translator_norm: Vec<Option<f64>>,
    /// The lens's files (`save:`), not part of results.json.
    #[serde(skip)]
    #[schemars(skip)]
    pub files: Files,
}

impl Analysis for LinearLens {
    const KIND: &'static str = "linear_lens";
    type State = LinearLensState;
    type Output = LinearLensResult;

    const COLUMNS: &'static [Column<LinearLensResult>] = &[
        Column::new("r2", "R² of h_L", |o| Values::Stat(o.r2.clone())),
        Column::new("translator_norm", "|A − I| / √d", |o| {
            Values::Stat(o.translator_norm.clone())
        }),
    ];

    fn labels(o: &LinearLensResult) -> &[String] {
        &o.labels
    }

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        at.ridge(self.ridge)
    }

    fn start(&self, at: &Setup) -> Result<LinearLensState, SpecError> {
        if !at.site.is_hidden() {
            return Err(at.invalid(
                "site",
                at.site,
                "a lens maps hidden states onto the last one: remove `site`",
            ));
        }
        let (l, d) = (at.info.n_layers, at.info.hidden_size);
        at.fits(
            lens_fit::state_bytes(l, d),
            self.max_memory,
            &format!("{l} hidden states' d x d sums and cross sums of 16 bytes, d = {d}"),
        )?;
        let layers: Vec<usize> = (0..l).collect();
        let base = at.path.parent().unwrap_or(std::path::Path::new("."));
        Ok(LinearLensState {
            labels: at.names(&layers),
            // pre_final_norm: the last block's output, as a tuned lens's target.
            sums: LensSums::new(layers, l + 1),
            ridge: self.ridge,
            model: at.model.id.clone(),
            save: self.save.as_ref().map(|dir| base.join(dir)),
        })
    }

    fn layers(s: &LinearLensState) -> Vec<usize> {
        let mut all = s.sums.layers.clone();
        all.push(s.sums.target);
        all
    }

    fn observe(s: &mut LinearLensState, t: &TextActivations) {
        let states: Vec<&[f32]> = Self::layers(s).iter().map(|&l| t.state(l)).collect();
        s.sums.observe(&states, t.dim);
    }

    fn merge(s: &mut LinearLensState, right: LinearLensState) -> Result<(), KindError> {
        Ok(s.sums.merge(right.sums)?)
    }

    fn finish(s: LinearLensState) -> Result<LinearLensResult, KindError> {
        finish(s)
    }

    fn files(o: &LinearLensResult) -> &[(PathBuf, Vec<u8>)] {
        &o.files.0
    }

    fn section(o: &LinearLensResult, _: &Context, _: Medium) -> Section {
        section(o)
    }
}

/// Fits every state's map; the lens's files when it is saved.
fn finish(s: LinearLensState) -> Result<LinearLensResult, KindError> {
    if s.sums.overflowed() {
        return Err(crate::stats::StatsError::Overflow.into());
    }
    if s.sums.n < 2 {
        return Err(KindError::NoResult(format!(
            "a lens needs at least 2 tokens to fit, the run had {}",
            s.sums.n
        )));
    }
    let fitted: Vec<_> = (0..s.sums.layers.len())
        .into_par_iter()
        .map(|li| s.sums.fit(li, s.ridge))
        .collect();
    let d = s.sums.sums[0].raw.len();
    let translator_norm = fitted
        .iter()
        .map(|f| {
            f.as_ref().map(|f| {
                let off: f64 = (0..d * d)
                    .map(|k| f.a[k] - if k / d == k % d { 1.0 } else { 0.0 })
                    .map(|v| v * v)
                    .sum();
                (off / d as f64).sqrt()
            })
        })
        .collect();
    let files = match &s.save {
        None => Files::default(),
        Some(dir) => Files(lens_files(&s, &fitted, dir)?),
    };
    Ok(LinearLensResult {
        ridge_needed: fitted
            .iter()
            .zip(&s.labels)
            .filter(|(f, _)| f.as_ref().is_some_and(|f| f.ridge_needed))
            .map(|(_, l)| l.clone())
            .collect(),
        r2: fitted
            .iter()
            .map(|f| f.as_ref().and_then(|f| f.r2))
            .collect(),
        translator_norm,
        labels: s.labels.clone(),
        tokens: s.sums.n,
        nonfinite_tokens: s.sums.nonfinite,
        ridge: s.ridge,
        files,
    })
}

/// `config.json` and `params.pt` as the tuned-lens package saves a lens: translators
/// `W_l = A_l - I` (it applies `h + W h + b`) and `b_l`.
fn lens_files(
    s: &LinearLensState,
    fitted: &[Option<lens_fit::Fitted>],
    dir: &std::path::Path,
) -> Result<Vec<(PathBuf, Vec<u8>)>, KindError> {
    let d = s.sums.sums[0].raw.len();
    let mut weights: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (l, f) in fitted.iter().enumerate() {
        let f = f.as_ref().ok_or_else(|| {
            KindError::NoResult(format!(
                "the covariance of {} does not factor even with the ridge: raise `ridge`",
                s.labels[l]
            ))
        })?;
        let w = (0..d * d)
            .map(|k| (f.a[k] - if k / d == k % d { 1.0 } else { 0.0 }) as f32)
            .collect();
        weights.push((format!("{l}.weight"), vec![d, d], w));
        let b = f.b.iter().map(|&v| v as f32).collect();
        weights.push((format!("{l}.bias"), vec![d], b));
    }
    let saved: Vec<Saved> = weights
        .iter()
        .map(|(name, shape, values)| Saved {
            name,
            shape: shape.clone(),
            values,
        })
        .collect();
    let params = torch_save::state_dict("params", &saved).map_err(KindError::Invalid)?;
    let config = serde_json::json!({
        "base_model_name_or_path": s.model,
        "d_model": d,
        "num_hidden_layers": s.labels.len(),
        "bias": true,
        "base_model_revision": null,
        "unembed_hash": null,
        "lens_type": "linear_tuned_lens",
    });
    Ok(vec![
        (dir.join("config.json"), config.to_string().into_bytes()),
        (dir.join("params.pt"), params),
    ])
}

fn section(o: &LinearLensResult) -> Section {
    let chart = per_layer_lines(
        "How much of the last block's output each state predicts linearly",
        "R² of the fitted affine map, in sample",
        &o.labels,
        &[("R²", &o.r2), ("|A − I| / √d", &o.translator_norm)],
        "",
        false,
    );
    let mut notes = Vec::new();
    if !o.ridge_needed.is_empty() {
        notes.push(format!(
            "The covariance was singular at {}: the map there leans on its ridge ({} of the mean variance).",
            o.ridge_needed.join(", "),
            fmt_num(o.ridge)
        ));
    }
    Section {
        heading: "Fitted linear lens".into(),
        intro: format!(
            "An affine map from each hidden state onto the last block's output, fitted by least squares over {} tokens (Din et al. 2024); read it with logit_lens and `lens: {{tuned: DIR}}`.",
            o.tokens
        ),
        notes,
        charts: vec![ChartSpec {
            title: "linear-lens".into(),
            option: option(chart),
            height: 340,
        }],
        tables: vec![columns::table(
            "The fitted maps",
            <LinearLens as Analysis>::COLUMNS,
            o,
            &o.labels,
        )],
        wide: false,
        collapsed: None,
    }
}
