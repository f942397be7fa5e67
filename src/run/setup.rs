//! The run's setup, once, before the first text: every asset the spec's analyses name is
//! read ([`read_assets`]), then each analysis is resolved against the model into its
//! empty state ([`start`]): its site's labels and width, its layers, its parameters that
//! need the model. The spec itself keeps only the checks that need no model.

use crate::analyses::{AnalysisState, Setup};
use crate::assets::{AssetEnv, Assets};
use crate::model::{LoadedModel, ModelError};
use crate::model::{ModelInfo, Site, PRE_FINAL_NORM};
use crate::spec::{Spec, SpecError};

/// What the setup hands the run: the second models, loaded, and every analysis's empty
/// state.
pub struct Prepared {
    /// The spec's second models (`Spec::companions`), in order; they stay in memory beside
    /// the first for the whole run.
    pub companions: Vec<LoadedModel>,
    /// The spec's `layers`, as hidden-state indices.
    pub selected: Vec<usize>,
    /// One empty state per analysis, in spec order.
    pub states: Vec<AnalysisState>,
}

/// Why the setup failed: a second model that does not load, or a spec that does not fit.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A second model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The spec against the models.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// The run's setup for a model of shape `info`: the second models loaded, the assets read
/// (tuned lenses, from the environment `AssetEnv::from_env` reads), and every analysis
/// resolved against them; all before the first text.
pub fn prepare(spec: &Spec, info: &ModelInfo) -> Result<Prepared, SetupError> {
    let companions = spec
        .companions
        .iter()
        .map(LoadedModel::load)
        .collect::<Result<Vec<_>, _>>()?;
    let infos: Vec<ModelInfo> = companions.iter().map(|c| c.model.info().clone()).collect();
    let assets = read_assets(spec, info, &AssetEnv::from_env());
    let (selected, states) = start(spec, info, &infos, &assets)?;
    Ok(Prepared {
        companions,
        selected,
        states,
    })
}

/// Reads every asset the spec's analyses need for a model of shape `info`, each once, in
/// spec order. One that cannot be had is kept as its error, which the analysis that
/// needs it reports by the field that names it once its own checks of the model pass.
pub fn read_assets(spec: &Spec, info: &ModelInfo, env: &AssetEnv) -> Assets {
    let mut assets = Assets::default();
    let base = spec.path.parent().unwrap_or(std::path::Path::new("."));
    for analysis in &spec.analyses {
        for need in analysis.needs() {
            assets.resolve(&need, env, base, (info.n_layers, info.hidden_size));
        }
    }
    assets
}

/// Checks the spec's window against the model's context.
fn window_fits_model(spec: &Spec, info: &ModelInfo) -> Result<(), SpecError> {
    match spec.window {
        Some(w) if w.tokens > info.max_positions => Err(SpecError::invalid(
            &spec.path,
            "window.tokens",
            w.tokens.to_string(),
            format!(
                "the model accepts at most {} tokens (n_positions): use at most that",
                info.max_positions
            ),
        )),
        _ => Ok(()),
    }
}

/// Resolves every analysis against a model: the empty states, in spec order, and the
/// spec's `layers` as indices. Fails on a layer the model does not have.
pub fn start(
    spec: &Spec,
    info: &ModelInfo,
    companions: &[ModelInfo],
    assets: &Assets,
) -> Result<(Vec<usize>, Vec<AnalysisState>), SpecError> {
    window_fits_model(spec, info)?;
    let selected = spec.resolve_layers("layers", &spec.layers, info)?;
    let states = spec
        .analyses
        .iter()
        .enumerate()
        .map(|(index, a)| {
            // A kind that reads where its assets say ignores the spec's `layers`.
            let (site, selected) = match a.params.asset_site(assets, info) {
                Some(site) => (site, (0..info.n_layers + 2).collect()),
                None => (a.site(), selected.clone()),
            };
            let at = site_view(spec, index, site, info, &selected)?;
            let companions = companions
                .iter()
                .map(|c| site_view(spec, index, site, c, &selected).map(|v| v.info))
                .collect::<Result<Vec<_>, _>>()?;
            let state = a.start(&Setup {
                path: &spec.path,
                seed: spec.seed,
                kind: a.kind(),
                companion_models: &spec.companions,
                model: &spec.model,
                info: &at.info,
                site,
                labels: &at.labels,
                selected: &at.selected,
                index,
                companions: &companions,
                assets,
            })?;
            Ok(AnalysisState { state, site })
        })
        .collect::<Result<Vec<_>, SpecError>>()?;
    check_attention_queries(spec, &states)?;
    Ok((selected, states))
}

/// One forward computes the attention statistics once: every analysis that reads them
/// must count the same queries.
fn check_attention_queries(spec: &Spec, states: &[AnalysisState]) -> Result<(), SpecError> {
    let from: Vec<(usize, usize)> = states
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.state.attention_from().map(|q| (i, q)))
        .collect();
    match from.iter().find(|(_, q)| *q != from[0].1) {
        Some(&(j, q)) => Err(SpecError::invalid(&spec.path, format!("analyses[{j}].exclude_first_query"), (q == 1).to_string(), format!(
                "analyses[{}] says {}: one forward computes the attention statistics once, so give every attention analysis the same value",
                from[0].0,
                from[0].1 == 1
            ))),
        None => Ok(()),
    }
}

/// The model as analysis `index` sees it at `site`: the site's labels and width, and
/// the spec's `layers` (hidden-state indices `selected`) as the site's blocks.
fn site_view(
    spec: &Spec,
    index: usize,
    site: Site,
    info: &ModelInfo,
    selected: &[usize],
) -> Result<SiteSetup, SpecError> {
    let field = format!("analyses[{index}].site");
    if let Some(fix) = info.lacks(site) {
        return Err(SpecError::invalid(&spec.path, field, site.to_string(), fix));
    }
    let width = info.width(site).unwrap_or(info.hidden_size);
    if site.is_hidden() {
        let mut labels = info.labels.clone();
        labels.push(PRE_FINAL_NORM.to_string());
        return Ok(SiteSetup {
            info: info.clone(),
            labels,
            selected: selected.to_vec(),
        });
    }
    let blocks = Site::blocks(selected, info.n_layers);
    if blocks.is_empty() {
        return Err(SpecError::invalid(&spec.path, field, site.to_string(), format!(
                "`layers` selects no block: hidden state l selects block l's {site}, and the last hidden state and pre_final_norm belong to no block; add an index below {}",
                info.n_layers
            )));
    }
    let labels = info.site_labels(site);
    Ok(SiteSetup {
        info: ModelInfo {
            labels: labels.clone(),
            hidden_size: width,
            ..info.clone()
        },
        labels,
        selected: blocks,
    })
}

/// Checks every layer reference of the spec against a model (and the second models'
/// shapes, when known: `companions` is empty otherwise).
pub fn check_layers(
    spec: &Spec,
    info: &ModelInfo,
    companions: &[ModelInfo],
) -> Result<(), SpecError> {
    let assets = read_assets(spec, info, &AssetEnv::from_env());
    start(spec, info, companions, &assets).map(|_| ())
}

/// What an analysis at a site is set up against.
struct SiteSetup {
    /// The model, its labels and width those of the site.
    info: ModelInfo,
    /// The site's labels (hidden states: then `pre_final_norm`).
    labels: Vec<String>,
    /// The vectors the spec's `layers` select, as indices into `labels`.
    selected: Vec<usize>,
}
