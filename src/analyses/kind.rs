//! The interface every analysis kind implements, and what the run, the pages and compare
//! hand a kind: one text's activations, where its parameters are checked and its state
//! set up, the narrowed results it is shown against, and the section it returns. Below
//! the kinds; the registry (`mod.rs`) sits above them.
//!
//! The shard rule every state keeps: the state of a run over texts `[a, c)` equals, to the
//! bit, the merge of the states over `[a, b)` and `[b, c)`, for every `b`. So one process,
//! any batch size, and any number of shards merged give the same bytes.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::columns;
pub use super::columns::{Column, Scalars};
pub use super::error::{check_edges, expect_known_labels, expect_len, expect_per_label, KindError};
use crate::assets::{AssetRef, Assets};
use crate::charts::ChartSpec;
use crate::compare::rules::{Comparer, Mismatch};
pub use crate::memory::MemoryLimit;
use crate::model::{ModelInfo, ModelRef, Site};
use crate::spec::error::SpecError;
use crate::spec::layers::{resolve_layer, resolve_layers, LayerRef, LayersSpec};
use crate::spec::model::ModelSpec;
use crate::spec::texts::TextSource;
use crate::stats::cka::{self, CkaState};
use crate::view::Table;

/// One text's activations, as the analyses see them.
pub struct TextActivations<'a> {
    /// Index of the text in the global input order (the same in every shard).
    pub index: usize,
    /// The text's id.
    pub id: &'a str,
    /// The text's class (`label` in the corpus or the spec); every text has one when a
    /// kind that reads labels ([`Analysis::reads_labels`]) runs.
    pub label: Option<&'a str>,
    /// The id of the text this unit is a window of (`None`: the unit is a whole text).
    pub window_of: Option<&'a str>,
    /// Decoded tokens of the whole text.
    pub tokens: &'a [String],
    /// Token position of the first row (1 when token 0 is excluded).
    pub first_token: usize,
    /// Hidden size.
    pub dim: usize,
    /// Row-major `[rows, dim]` activations, indexed by hidden-state index (`None` for
    /// hidden states no analysis asked for).
    pub states: &'a [Option<Vec<f32>>],
    /// Token ids of the whole text.
    pub token_ids: &'a [u32],
    /// The model's final norm, unembedding and vocabulary (decoders).
    pub lens: Option<Lens<'a>>,
    /// The last block's output before the final norm (`pre_final_norm`) at the position
    /// just before the first analysed row, when the text skips rows (token 0, a window's
    /// context) and an analysis reads that state: what predicts the first analysed token.
    pub previous: Option<&'a [f32]>,
    /// The same rows from each second model of the spec (see [`Setup::companions`]),
    /// indexed as `states`.
    pub companions: &'a [Vec<Option<Vec<f32>>>],
    /// Each second model's final norm and unembedding (`None` for one without a head),
    /// in the order of `companions`.
    pub companion_readouts: &'a [Option<&'a dyn crate::model::Readout>],
    /// Per block, per head: the attention statistics over the text's counted queries
    /// (empty unless an analysis reads them).
    pub attention: &'a [Vec<crate::model::capture::HeadCapture>],
    /// Per block, what its router did for every row of the text (`None` for a dense block;
    /// empty unless an analysis reads it).
    pub routing: &'a [Option<crate::model::moe::Routing>],
    /// The rest of the forward from the analysis' site, for a kind that splices vectors
    /// back into the model ([`Analysis::splices_from`]).
    pub splice: Option<&'a dyn Splice>,
    /// Every site some analysis reads, with its vectors as in `states`: where a kind
    /// finds a second site it reads ([`Analysis::also_reads`]).
    pub sites: &'a [(Site, &'a [Option<Vec<f32>>])],
}

/// One text's forward resumed with other vectors at a site: what splicing a sparse
/// autoencoder's reconstruction back into the model needs.
pub trait Splice: Sync {
    /// The last block's output before the final norm at the analysed rows, `[rows,
    /// hidden_size]`, as the forward gave it.
    fn clean(&self) -> &[f32];
    /// The same, once per entry of `with`, with the analysed rows of `site` at `layer` (a
    /// hidden state's index, or a block's) replaced by its vectors (`[rows, width]`), or by
    /// zeros for `None`; the copies run as one batch. The earlier rows of the text (token
    /// 0, a window's context) keep their own vectors.
    fn run(
        &self,
        site: Site,
        layer: usize,
        with: &[Option<&[f32]>],
    ) -> Result<Vec<Vec<f32>>, String>;
}

/// What the logit lens reads logits and tokens with.
#[derive(Clone, Copy)]
pub struct Lens<'a> {
    /// The final norm and unembedding.
    pub readout: &'a dyn crate::model::Readout,
    /// Decodes predicted token ids.
    pub tokenizer: &'a crate::model::tokenizer::TextTokenizer,
}

impl TextActivations<'_> {
    /// The id of the whole text: the unit's own, or for a window (`ID#k`) its text's.
    pub fn text_id(&self) -> &str {
        self.window_of.unwrap_or(self.id)
    }

    /// Hidden state `layer` as `[rows, dim]` (empty if no analysis asked for it).
    pub fn state(&self, layer: usize) -> &[f32] {
        self.states
            .get(layer)
            .and_then(|s| s.as_deref())
            .unwrap_or(&[])
    }

    /// Vectors `index` at `site` as `[rows, width]` (empty if no analysis asked for them).
    pub fn at(&self, site: Site, index: usize) -> &[f32] {
        self.sites
            .iter()
            .find(|(s, _)| *s == site)
            .and_then(|(_, v)| v.get(index))
            .and_then(|v| v.as_deref())
            .unwrap_or(&[])
    }

    /// The token each analysed row predicts: `token_ids[first_token + r + 1]` for row `r`,
    /// `None` for the text's last token.
    pub fn next_token_ids(&self) -> Vec<Option<u32>> {
        (self.first_token..self.token_ids.len())
            .map(|p| self.token_ids.get(p + 1).copied())
            .collect()
    }

    /// Analysed rows (tokens) of this text.
    pub fn rows(&self) -> usize {
        self.states
            .iter()
            .flatten()
            .next()
            .map_or(0, |s| s.len() / self.dim.max(1))
    }
}

/// Where a kind checks its parameters before any model is loaded.
pub struct Check<'a> {
    /// The spec file.
    pub path: &'a Path,
    /// Position of the analysis in the spec's `analyses`.
    pub index: usize,
    /// The spec's texts (inline ids can be checked here).
    pub texts: &'a TextSource,
    /// The texts are cut into windows, named `ID#k`.
    pub windows: bool,
}

impl Check<'_> {
    /// Refuses `text: ID` in `analyses[i]` when no text of the run can have that id.
    pub fn text_id(&self, id: Option<&String>) -> Result<(), SpecError> {
        match id {
            Some(id) if !self.knows_text(id) => Err(self.invalid(
                "text",
                format!("{id:?}"),
                if self.windows {
                    "name a window of one of `texts`: `ID#0`, `ID#1`, ..."
                } else {
                    "name the id of one of `texts`"
                },
            )),
            _ => Ok(()),
        }
    }

    /// Whether `id` can name a text of the run: any id when the texts come from a
    /// corpus (read later), else an inline id, or with windows an inline id's `ID#k`.
    pub fn knows_text(&self, id: &str) -> bool {
        let TextSource::Inline(texts) = self.texts else {
            return true;
        };
        let window_of = |t: &str| {
            id.strip_prefix(t)
                .and_then(|rest| rest.strip_prefix('#'))
                .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
        };
        texts.iter().any(|t| {
            if self.windows {
                window_of(&t.id)
            } else {
                t.id == id
            }
        })
    }

    /// Refuses `v` in `analyses[i].FIELD` unless strictly between 0 and 1; `what` names
    /// the quantity in the fix, `example` is a value to suggest.
    pub fn fraction(&self, field: &str, v: f64, what: &str, example: f64) -> Result<(), SpecError> {
        if v > 0.0 && v < 1.0 {
            return Ok(());
        }
        Err(self.invalid(
            field,
            v,
            format!("give {what} strictly between 0 and 1, e.g. {example}"),
        ))
    }

    /// Checks SVCCA's `variance` and the `ridge` of the CCA family (`similarity`,
    /// `agreement`).
    pub fn cca_parameters(&self, variance: f64, ridge: f64) -> Result<(), SpecError> {
        if !(variance > 0.0 && variance <= 1.0) {
            return Err(self.invalid(
                "variance",
                variance,
                "give the share of variance SVCCA keeps in (0, 1], e.g. 0.99",
            ));
        }
        self.ridge(ridge)
    }

    /// Refuses a `ridge` (a fraction of the mean variance) below 0 or not finite.
    pub fn ridge(&self, ridge: f64) -> Result<(), SpecError> {
        if !(ridge >= 0.0 && ridge.is_finite()) {
            return Err(self.invalid(
                "ridge",
                ridge,
                "give a fraction of the mean variance, at least 0, e.g. 1e-6",
            ));
        }
        Ok(())
    }

    /// An error naming `analyses[i].FIELD`, its value and a fix.
    pub fn invalid(
        &self,
        field: &str,
        value: impl fmt::Display,
        fix: impl Into<String>,
    ) -> SpecError {
        analysis_error(self.path, self.index, field, value, fix)
    }
}

/// An error naming `analyses[index].FIELD` of the spec at `path`, its value and a fix: what
/// a kind's checks and its setup both refuse with.
fn analysis_error(
    path: &Path,
    index: usize,
    field: &str,
    value: impl fmt::Display,
    fix: impl Into<String>,
) -> SpecError {
    SpecError::invalid(path, format!("analyses[{index}].{field}"), value, fix)
}

/// Where a kind sets up its state: what it needs of the spec, and the model it runs on.
pub struct Setup<'a> {
    /// The spec file.
    pub path: &'a Path,
    /// The spec's seed.
    pub seed: u64,
    /// The analysis' kind.
    pub kind: &'static str,
    /// The spec's second models (`Spec::companions`), resolved, in order.
    pub companion_models: &'a [ModelRef],
    /// The spec's model, as it names it (what a fitted lens says it was fitted on).
    pub model: &'a ModelRef,
    /// The model's shape, as seen at the analysis' site: the site's labels, and its width
    /// as `hidden_size`.
    pub info: &'a ModelInfo,
    /// Where the analysis reads its vectors.
    pub site: Site,
    /// Labels of every hidden state, then `pre_final_norm`.
    pub labels: &'a [String],
    /// The spec's `layers`, resolved to indices into `labels`.
    pub selected: &'a [usize],
    /// Position of the analysis in the spec's `analyses`.
    pub index: usize,
    /// The shapes of the spec's second models (`Spec::companions`), in order, at the
    /// analysis' site; empty when they are not loaded (`strata validate` without them at
    /// hand).
    pub companions: &'a [ModelInfo],
    /// Every asset the spec's analyses need ([`Analysis::needs`]), read.
    pub assets: &'a Assets,
}

impl Setup<'_> {
    /// Resolves the layer reference in `analyses[i].FIELD`.
    pub fn layer(&self, field: &str, r: &LayerRef) -> Result<usize, SpecError> {
        resolve_layer(
            self.path,
            &format!("analyses[{}].{field}", self.index),
            r,
            self.info,
        )
    }

    /// Resolves `all` or a list of layer references in `analyses[i].FIELD`.
    pub fn layers_spec(&self, field: &str, spec: &LayersSpec) -> Result<Vec<usize>, SpecError> {
        resolve_layers(
            self.path,
            &format!("analyses[{}].{field}", self.index),
            spec,
            self.info,
        )
    }

    /// Resolves the list of layer references in `analyses[i].FIELD`.
    pub fn layers(&self, field: &str, refs: &[LayerRef]) -> Result<Vec<usize>, SpecError> {
        self.layers_spec(field, &LayersSpec::List(refs.to_vec()))
    }

    /// An error naming `analyses[i].FIELD`, its value and a fix.
    pub fn invalid(
        &self,
        field: &str,
        value: impl fmt::Display,
        fix: impl Into<String>,
    ) -> SpecError {
        analysis_error(self.path, self.index, field, value, fix)
    }

    /// The error of a kind that measures blocks when the spec's `layers` select none of
    /// the `which` it measures; `hint` says which would do.
    pub fn no_blocks(&self, which: &str, hint: &str) -> SpecError {
        SpecError::invalid(self.path, "layers", format!("{} hidden states", self.selected.len()), format!(
                "the {} analysis measures the {which} the spec's `layers` select (hidden state l selects block l); {hint}",
                self.kind
            ))
    }

    /// The second model `spec` names (as an analysis' `model:`): its index among
    /// [`Setup::companion_models`], its resolved id, and its shape when loaded.
    pub fn companion(&self, spec: &ModelSpec) -> (usize, String, Option<&ModelInfo>) {
        let base = self.path.parent().unwrap_or(Path::new("."));
        let wanted = spec.resolve(base);
        let index = self
            .companion_models
            .iter()
            .position(|m| *m == wanted)
            .unwrap_or(0);
        (index, wanted.id, self.companions.get(index))
    }

    /// Hidden states `selected` as a lens reads them through the model's head: their
    /// labels, and their indices with the last hidden state's replaced by
    /// `pre_final_norm`'s (transformers' last hidden state already has the final norm
    /// applied). `pre_final_norm` itself is refused; `who` names the reader in the fix.
    pub fn through_head(
        &self,
        selected: Vec<usize>,
        who: &str,
    ) -> Result<(Vec<String>, Vec<usize>), SpecError> {
        let last = self.info.n_layers; // hidden_states[L]
        let final_layer = last + 1; // pre_final_norm
        if selected.contains(&final_layer) {
            return Err(self.invalid(
                "layers",
                crate::model::PRE_FINAL_NORM,
                format!(
                    "{who} reads the last hidden state ({}) from pre_final_norm already: select {} instead",
                    self.labels[last], self.labels[last]
                ),
            ));
        }
        let labels = self.names(&selected);
        let layers = selected
            .into_iter()
            .map(|l| if l == last { final_layer } else { l })
            .collect();
        Ok((labels, layers))
    }

    /// The labels of hidden-state indices.
    pub fn names(&self, layers: &[usize]) -> Vec<String> {
        layers.iter().map(|&l| self.labels[l].clone()).collect()
    }
}

impl Setup<'_> {
    /// The empty exact sums of linear CKA over the states `layers` names (default: the
    /// spec's `layers`), for `cka` and for the kinds built on its sums (`similarity`),
    /// refused above `max_memory` with `extra(l, d)` bytes added to the sums' (what the
    /// kind holds besides them).
    pub fn cka_sums(
        &self,
        layers: Option<&[LayerRef]>,
        max_memory: MemoryLimit,
        extra: fn(usize, usize) -> u64,
    ) -> Result<CkaState, SpecError> {
        let (field, selected) = match layers {
            Some(refs) => (
                format!("analyses[{}].layers", self.index),
                self.layers("layers", refs)?,
            ),
            None => ("layers".to_string(), self.selected.to_vec()),
        };
        let (l, d) = (selected.len(), self.info.hidden_size);
        if l < 2 {
            return Err(SpecError::invalid(
                self.path,
                field,
                format!("{l} hidden state"),
                format!(
                    "{} compares hidden states with each other: select at least two",
                    self.kind
                ),
            ));
        }
        self.fits(
            cka::state_bytes(l, d) + extra(l, d),
            max_memory,
            &format!(
                "{l} hidden states: {} pairs of d x d exact sums of 16 bytes, d = {d}",
                l * (l + 1) / 2
            ),
        )?;
        let names = self.names(&selected);
        Ok(CkaState::new(selected, names))
    }

    /// Refuses accumulators of `need` bytes (`what` says what they hold) above `limit`,
    /// stating the estimate and the fixes.
    pub fn fits(&self, need: u64, limit: MemoryLimit, what: &str) -> Result<(), SpecError> {
        use crate::memory::show_bytes;
        if need <= limit.0 {
            return Ok(());
        }
        Err(SpecError::invalid(self.path, format!("analyses[{}].max_memory", self.index), show_bytes(limit.0), format!(
                "the {} analysis needs about {} here ({what}); select fewer hidden states with `layers`, or raise `max_memory` to at least \"{} MiB\"",
                self.kind,
                show_bytes(need),
                need.div_ceil(1 << 20)
            )))
    }
}

/// Where a section is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// The HTML report: dense scatters are thinned to keep the page responsive.
    Page,
    /// A figure for a paper (`strata figures`): every point is drawn.
    Figure,
}

/// What a kind's result is checked and shown against: the rest of its results.json,
/// narrowed to what kinds read.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Labels of every hidden state of the model (`emb`, `h.0`, ...).
    pub labels: &'a [String],
    /// Hidden size (at a site: that site's width).
    pub hidden_size: usize,
    /// Width of the MLP's inner activation, when results.json records it.
    pub intermediate_size: Option<usize>,
    /// Width of the `attn_z` site, when results.json records it.
    pub attention_width: Option<usize>,
    /// Labels of the hidden states the spec's `layers` selected.
    pub layers: &'a [String],
    /// The spec's seed.
    pub seed: u64,
    /// Whether token 0 of each text was left out of every analysis.
    pub exclude_first_token: bool,
}

/// The labels of one site, and those of them the spec's `layers` select: what a
/// [`Context`] at that site borrows.
pub struct SiteView {
    labels: Vec<String>,
    layers: Vec<String>,
}

impl<'a> Context<'a> {
    /// The labels a context at `site` shows: one per block, and the blocks the spec's
    /// `layers` select ([`Site::blocks`]).
    pub fn site_view(&self, site: Site) -> SiteView {
        let n = self.labels.len().saturating_sub(1);
        let hidden: Vec<usize> = self
            .layers
            .iter()
            .filter_map(|l| self.labels.iter().position(|x| x == l))
            .collect();
        SiteView {
            labels: (0..n).map(|l| site.label(l)).collect(),
            layers: Site::blocks(&hidden, n)
                .into_iter()
                .map(|l| site.label(l))
                .collect(),
        }
    }

    /// This context at `site`: its labels, selection and width. `None` when the file
    /// lacks the width (`mlp_act` without `model.intermediate_size`, `attn_z` without
    /// `model.attention_width`).
    pub fn at<'b>(&self, site: Site, view: &'b SiteView) -> Option<Context<'b>>
    where
        'a: 'b,
    {
        if site.is_hidden() {
            return Some(*self);
        }
        let width = match site {
            Site::MlpAct => self.intermediate_size?,
            Site::AttnZ => self.attention_width?,
            _ => self.hidden_size,
        };
        Some(Context {
            labels: &view.labels,
            layers: &view.layers,
            hidden_size: width,
            ..*self
        })
    }
}

/// What a kind shows in the report: the page adds anchors and ids, and shows it with the
/// one section template (charts, then tables).
#[derive(Default)]
pub struct Section {
    /// The section's heading.
    pub heading: String,
    /// One sentence under it.
    pub intro: String,
    /// Notes (thinning, values outside a range, recurring outliers).
    pub notes: Vec<String>,
    /// Its charts.
    pub charts: Vec<ChartSpec>,
    /// Its tables, cells already formatted.
    pub tables: Vec<Table>,
    /// Its charts span the page's width (a grid of small charts).
    pub wide: bool,
    /// Its tables are folded under this summary (large matrices the charts already show).
    pub collapsed: Option<String>,
}

/// One analysis kind. The type is the kind's spec parameters; the associated types are
/// its streaming state and its entry in results.json.
pub trait Analysis: Clone + fmt::Debug + DeserializeOwned {
    /// The `kind` as written in specs and results.json.
    const KIND: &'static str;
    /// The state a run accumulates; written to shard partials.
    type State: fmt::Debug + Clone + Serialize + DeserializeOwned;
    /// The result in results.json.
    type Output: fmt::Debug + Clone + PartialEq + Serialize + DeserializeOwned + 'static;

    /// The site the kind reads when the spec names none; `None` for a kind that reads no
    /// vectors (it refuses `site`).
    const SITE: Option<Site> = Some(Site::Hidden);

    /// Checks the parameters that need no model.
    fn check(&self, _at: &Check) -> Result<(), SpecError> {
        Ok(())
    }
    /// A second model the analysis runs on the same token ids (`agreement`).
    fn companion(&self) -> Option<&ModelSpec> {
        None
    }
    /// The files besides the model the analysis reads (a tuned lens), which the run's
    /// setup reads before [`Analysis::start`] and hands over in [`Setup::assets`].
    fn needs(&self) -> Vec<AssetRef> {
        Vec::new()
    }
    /// Whether the kind's site comes from its assets (an SAE's hook) rather than the
    /// spec: it refuses `site:`, and [`Analysis::asset_site`] names the site.
    const SITE_FROM_ASSETS: bool = false;
    /// The site the kind's assets name for a model of shape `info`; `None` (the default,
    /// or an asset that failed, which `start` then reports) reads the kind's default.
    fn asset_site(&self, _assets: &Assets, _info: &ModelInfo) -> Option<Site> {
        None
    }
    /// Resolves the parameters against the model: the empty state.
    fn start(&self, at: &Setup) -> Result<Self::State, SpecError>;
    /// Indices of the vectors (at the analysis' site) the state reads.
    fn layers(state: &Self::State) -> Vec<usize>;
    /// Whether the state reads the attention statistics: `Some(q)` counts a text's
    /// queries from position `q` on (beyond the rows the run skips anyway).
    fn attention_from(_state: &Self::State) -> Option<usize> {
        None
    }
    /// The vectors of a second model the state reads, at its site: which model
    /// ([`Setup::companion_models`]) and the indices of its own vectors (its labels, then
    /// `pre_final_norm`); they arrive in [`TextActivations::companions`].
    fn companion_layers(_state: &Self::State) -> Option<(usize, Vec<usize>)> {
        None
    }
    /// Whether the state reads what the routers of a mixture of experts did.
    fn reads_routing(_state: &Self::State) -> bool {
        false
    }
    /// Whether the state reads logits of the final hidden state through [`Lens`]: when two
    /// states do, each row's logits are computed once per text and shared.
    fn reads_head(_state: &Self::State) -> bool {
        false
    }
    /// The hidden state from which the state resumes the forward with vectors of its own
    /// ([`TextActivations::splice`]): the one it reads, or the input of its site's block.
    fn splices_from(_state: &Self::State) -> Option<usize> {
        None
    }
    /// Whether the state needs every text's label: the run refuses an unlabelled text,
    /// naming it, before its forward.
    fn reads_labels(_state: &Self::State) -> bool {
        false
    }
    /// A second site the state reads, and the index there (they arrive through
    /// [`TextActivations::at`]): what a transcoder's output is compared with.
    fn also_reads(_state: &Self::State) -> Option<(Site, usize)> {
        None
    }
    /// Takes one text's activations (texts arrive in global order).
    fn observe(state: &mut Self::State, text: &TextActivations);
    /// Folds in `right`, the state of the texts right after `state`'s. The result must not
    /// depend on where the texts were split. Fails on states that do not fit together.
    fn merge(state: &mut Self::State, right: Self::State) -> Result<(), KindError>;
    /// The result, once every text was seen; fails when the data cannot give one.
    fn finish(state: Self::State) -> Result<Self::Output, KindError>;
    /// Its section of the report, or its charts and tables as figures.
    fn section(out: &Self::Output, cx: &Context, medium: Medium) -> Section;

    /// The result's statistics with one value per hidden state, declared once
    /// ([`columns`]): unless a kind says otherwise, the checks of a result read from a
    /// file, the statistics `strata sweep` follows and the metrics `strata compare`
    /// applies all come from them. Empty for a kind whose numbers are matrices, samples
    /// or per-head rows.
    const COLUMNS: &'static [Column<Self::Output>] = &[];
    /// What the positions of the result's arrays mean (a head, a neuron, a bin), which
    /// `strata table` writes as named columns.
    const AXES: super::axes::Axes = super::axes::Axes::NONE;
    /// The hidden-state labels [`Analysis::COLUMNS`] are indexed by.
    fn labels(_out: &Self::Output) -> &[String] {
        &[]
    }

    /// Checks a result read from a file against the rest of it, so nothing downstream
    /// indexes out of bounds: the error says what is inconsistent. By default, the
    /// columns' checks ([`Analysis::check_columns`]).
    fn validate(out: &Self::Output, cx: &Context) -> Result<(), KindError> {
        Self::check_columns(out, cx)
    }
    /// Its `compare` rule: adds metrics, histogram distances and diff views. By default,
    /// the columns' metrics ([`Analysis::compare_columns`]).
    fn compare(base: &Self::Output, new: &Self::Output, c: &mut Comparer) -> Result<(), Mismatch> {
        Self::compare_columns(base, new, c)
    }
    /// The files the result asks to be written beside results.json (see [`Files`]).
    fn files(_out: &Self::Output) -> &[(std::path::PathBuf, Vec<u8>)] {
        &[]
    }
    /// Its statistics with one value per hidden state, for `strata sweep`; empty for a
    /// kind whose result is a sample or one text's values rather than a statistic. By
    /// default, the columns that are statistics.
    fn scalars(out: &Self::Output) -> Vec<Scalars> {
        columns::scalars(Self::COLUMNS, out, Self::labels(out))
    }

    /// The columns' checks, which a kind's own `validate` starts from: the labels name
    /// hidden states of the model, and every column has one value per label.
    fn check_columns(out: &Self::Output, cx: &Context) -> Result<(), KindError> {
        let labels = Self::labels(out);
        expect_known_labels(labels, cx.labels)?;
        columns::validate(Self::COLUMNS, out, labels)
    }
    /// The columns' metrics, which a kind's own `compare` starts from: the same hidden
    /// states, then each statistic under the tolerances and each count exactly.
    fn compare_columns(
        base: &Self::Output,
        new: &Self::Output,
        c: &mut Comparer,
    ) -> Result<(), Mismatch> {
        let labels = Self::labels(base);
        c.same("hidden states", labels, Self::labels(new))?;
        columns::compare(Self::COLUMNS, base, new, labels, c);
        Ok(())
    }
}

/// Reads the parameters of a kind that takes none: any field is an error that says so
/// (serde's own message for an empty struct lists no expected field).
pub fn no_parameters<'de, D: serde::Deserializer<'de>>(
    d: D,
    kind: &'static str,
) -> Result<(), D::Error> {
    struct V(&'static str);
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "`kind: {}` and nothing else", self.0)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            match map.next_key::<String>()? {
                None => Ok(()),
                Some(k) => Err(serde::de::Error::custom(format!(
                    "`{k}`: the {} analysis takes no parameters; remove `{k}`",
                    self.0
                ))),
            }
        }
    }
    d.deserialize_map(V(kind))
}

/// Files a result asks the report to write beside results.json (a kind's `save:`),
/// made without I/O by the kind as it finishes. They are not part of the result's value:
/// absent from results.json, and equal for any two results.
#[derive(Debug, Clone, Default)]
pub struct Files(pub Vec<(std::path::PathBuf, Vec<u8>)>);

impl PartialEq for Files {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Where a value sits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Text id.
    pub text: String,
    /// Token position in the text (0-based, counting token 0).
    pub token_index: usize,
    /// The token, decoded.
    pub token: String,
    /// Embedding dimension.
    pub dim: usize,
}
