//! The analyses: one module per kind, each owning its spec parameters and their checks, its
//! streaming state (observe one text, merge, serialize, finish), its result type, its
//! columns, its report section and its `compare` rule, all through the interface in
//! [`kind`]. This file is the registry and nothing else: adding a kind is one module and
//! one line below.
//!
//! The registry is the one place where the analyses meet the spec (which holds an
//! [`AnalysisSpec`] per analysis) and results.json (an [`AnalysisResult`] each): those two
//! import this file, and no kind imports them back.

pub mod agreement;
pub mod anisotropy;
pub mod attention;
pub mod axes;
pub mod cka;
pub mod columns;
pub mod covariance;
pub mod dimensionality;
pub mod directions;
pub mod divergence;
pub mod error;
pub mod firing;
pub mod histogram;
pub mod kind;
pub mod linear_lens;
pub mod logit_lens;
pub mod neurons;
pub mod next_token;
pub mod norms;
pub mod outlier_dims;
pub mod outliers;
pub mod pairplot;
pub mod project;
pub mod router;
pub mod sae;
pub mod scatter;
pub mod scratch;
pub mod similarity;
pub mod summary;
pub mod surprisal;
pub mod top;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use self::kind::{
    expect_known_labels, expect_len, expect_per_label, Analysis, Check, Context, Files, KindError,
    Lens, Medium, MemoryLimit, Scalars, Section, Setup, Splice, TextActivations,
};
use crate::assets::{AssetRef, Assets};
use crate::compare::rules::{Comparer, Mismatch};
use crate::model::{ModelInfo, Site};
use crate::spec::error::SpecError;
use crate::spec::model::ModelSpec;

/// One analysis of a spec: its kind's parameters, and where it reads its vectors.
#[derive(Clone, Deserialize, schemars::JsonSchema)]
pub struct AnalysisSpec {
    /// `kind` and its parameters.
    #[serde(flatten)]
    pub params: KindSpec,
    /// Where in each block the analysis reads its vectors: `hidden` (the default: the
    /// residual stream, `transformers`' `hidden_states`), `attn_out`, `mlp_out`,
    /// `mlp_act`, `attn_z`, `mlp_in`, or a mixture of experts' `router_logits` (see
    /// [`Site`]). Kinds that read
    /// no vectors (`attention`, `router`) take none.
    #[serde(default)]
    pub site: Option<Site>,
}

impl fmt::Debug for AnalysisSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.params, f)?;
        match self.site {
            Some(s) => write!(f, " at {s}"),
            None => Ok(()),
        }
    }
}

impl AnalysisSpec {
    /// The `kind` as written in YAML.
    pub fn kind(&self) -> &'static str {
        self.params.kind()
    }

    /// The site the analysis reads (`hidden` for a kind that reads none).
    pub fn site(&self) -> Site {
        self.site.or(self.params.default_site()).unwrap_or_default()
    }

    /// Checks the parameters that need no model.
    pub fn check(&self, at: &Check) -> Result<(), SpecError> {
        if let (Some(site), true) = (self.site, self.params.site_from_assets()) {
            return Err(at.invalid(
                "site",
                site,
                format!(
                    "the {} analysis reads where its files say it was trained (or where `hook:` says); remove `site`",
                    self.kind()
                ),
            ));
        }
        if let (Some(site), None) = (self.site, self.params.default_site()) {
            return Err(at.invalid(
                "site",
                site,
                format!(
                    "the {} analysis reads no vectors; remove `site`",
                    self.kind()
                ),
            ));
        }
        self.params.check(at)
    }

    /// The second model the analysis runs, if any.
    pub fn companion(&self) -> Option<&ModelSpec> {
        self.params.companion()
    }

    /// The files besides the model the analysis reads, which the run's setup reads first.
    pub fn needs(&self) -> Vec<AssetRef> {
        self.params.needs()
    }

    /// The empty state, resolved against the model (`at` is already at the site).
    pub fn start(&self, at: &Setup) -> Result<State, SpecError> {
        self.params.start(at)
    }
}

/// The streaming state of one analysis, and the site it reads (recorded in a shard
/// partial only when not `hidden`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnalysisState {
    /// `kind` and its state.
    #[serde(flatten)]
    pub state: State,
    /// Where its vectors are read.
    #[serde(default, skip_serializing_if = "Site::is_hidden")]
    pub site: Site,
}

impl AnalysisState {
    /// The kind of the analysis.
    pub fn kind(&self) -> &'static str {
        self.state.kind()
    }

    /// Folds in the state of the texts that follow.
    pub fn merge(&mut self, right: AnalysisState) -> Result<(), KindError> {
        if self.site != right.site {
            return Err(KindError::Mismatch(format!(
                "a state read at {} cannot absorb one read at {}",
                self.site, right.site
            )));
        }
        self.state.merge(right.state)
    }

    /// The result.
    pub fn finish(self) -> Result<Analysed, KindError> {
        Ok(Analysed::new(self.state.finish()?, self.site))
    }
}

/// One analysis of results.json: its result, and the site it read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Analysed {
    /// `kind` and its result.
    #[serde(flatten)]
    pub result: AnalysisResult,
    /// Where its vectors were read; absent for `hidden` (and for kinds that read none).
    #[serde(default, skip_serializing_if = "Site::is_hidden")]
    pub site: Site,
}

impl std::ops::Deref for Analysed {
    type Target = AnalysisResult;
    fn deref(&self) -> &AnalysisResult {
        &self.result
    }
}

impl Analysed {
    /// `result`, read at `site`.
    pub fn new(result: AnalysisResult, site: Site) -> Self {
        Self { result, site }
    }

    /// Runs `f` on the result with the context at its site.
    fn at<T>(
        &self,
        cx: &Context,
        f: impl FnOnce(&AnalysisResult, &Context) -> T,
    ) -> Result<T, KindError> {
        let view = cx.site_view(self.site);
        let cx = cx.at(self.site, &view).ok_or_else(|| {
            KindError::Invalid(format!(
                "site {} needs model.{}, which the file lacks",
                self.site,
                if self.site == Site::AttnZ {
                    "attention_width"
                } else {
                    "intermediate_size"
                }
            ))
        })?;
        Ok(f(&self.result, &cx))
    }

    /// Checks the result against the rest of the file.
    pub fn validate(&self, cx: &Context) -> Result<(), KindError> {
        self.at(cx, |r, cx| r.validate(cx))?
    }

    /// Its report section, or its figures (a file that validated has every site's width),
    /// its heading naming the site when it is not `hidden`.
    pub fn section(&self, cx: &Context, medium: Medium) -> Section {
        let mut section = self
            .at(cx, |r, cx| r.section(cx, medium))
            .unwrap_or_default();
        if !self.site.is_hidden() {
            section.heading = format!("{} at {}", section.heading, self.site);
        }
        section
    }

    /// Applies the kind's compare rule; results read at two sites do not compare.
    pub fn compare(&self, new: &Analysed, c: &mut Comparer) -> Result<(), Mismatch> {
        if self.site != new.site {
            return Err(Mismatch(format!(
                "analysis #{}: read at {} in BASE, at {} in NEW",
                c.analysis, self.site, new.site
            )));
        }
        self.result.compare(&new.result, c)
    }
}

/// Declares the kinds: the spec, state and result enums and their dispatch.
macro_rules! registry {
    ($($variant:ident => $module:ident),* $(,)?) => {
        /// The parameters of one analysis of a spec, selected by `kind` (see each kind's
        /// module).
        #[derive(Clone, Deserialize, schemars::JsonSchema)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum KindSpec {
            $(
                #[doc = concat!("`kind: ", stringify!($module), "`: its parameters (see [`", stringify!($module), "`]).")]
                $variant($module::$variant),
            )*
        }

        impl fmt::Debug for KindSpec {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$variant(p) => fmt::Debug::fmt(p, f),)*
                }
            }
        }

        /// The streaming state of one analysis, tagged by `kind` in a shard partial.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum State {
            $(
                #[doc = concat!("The state of a `", stringify!($module), "` analysis.")]
                $variant(<$module::$variant as Analysis>::State),
            )*
        }

        /// The result of one analysis in results.json, tagged by `kind` as in the spec.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum AnalysisResult {
            $(
                #[doc = concat!("The result of a `", stringify!($module), "` analysis.")]
                $variant(<$module::$variant as Analysis>::Output),
            )*
        }

        /// Every kind, in registry order.
        pub const KINDS: &[&str] = &[$(<$module::$variant as Analysis>::KIND),*];

        /// What the positions of a kind's arrays mean, by its `kind` (none for a kind
        /// this build does not know).
        pub fn kind_axes(kind: &str) -> axes::Axes {
            $(
                if kind == <$module::$variant as Analysis>::KIND {
                    return <$module::$variant as Analysis>::AXES;
                }
            )*
            axes::Axes::NONE
        }

        impl KindSpec {
            /// The `kind` as written in YAML.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => <$module::$variant as Analysis>::KIND,)*
                }
            }

            /// The site the kind reads by default; `None` when it reads no vectors.
            pub fn default_site(&self) -> Option<Site> {
                match self {
                    $(Self::$variant(_) => <$module::$variant as Analysis>::SITE,)*
                }
            }

            /// Checks the parameters that need no model.
            pub fn check(&self, at: &Check) -> Result<(), SpecError> {
                match self {
                    $(Self::$variant(p) => p.check(at),)*
                }
            }

            /// The second model the analysis runs, if any.
            pub fn companion(&self) -> Option<&ModelSpec> {
                match self {
                    $(Self::$variant(p) => p.companion(),)*
                }
            }

            /// The files besides the model the analysis reads.
            pub fn needs(&self) -> Vec<AssetRef> {
                match self {
                    $(Self::$variant(p) => p.needs(),)*
                }
            }

            /// Whether the kind's site comes from its assets.
            pub fn site_from_assets(&self) -> bool {
                match self {
                    $(Self::$variant(_) => <$module::$variant as Analysis>::SITE_FROM_ASSETS,)*
                }
            }

            /// The site the kind's assets name, if any.
            pub fn asset_site(&self, assets: &Assets, info: &ModelInfo) -> Option<Site> {
                match self {
                    $(Self::$variant(p) => p.asset_site(assets, info),)*
                }
            }

            /// The empty state, resolved against the model.
            pub fn start(&self, at: &Setup) -> Result<State, SpecError> {
                match self {
                    $(Self::$variant(p) => p.start(at).map(State::$variant),)*
                }
            }
        }

        impl State {
            /// The kind of the analysis.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => <$module::$variant as Analysis>::KIND,)*
                }
            }

            /// Hidden-state indices the analysis reads.
            pub fn layers(&self) -> Vec<usize> {
                match self {
                    $(Self::$variant(s) => <$module::$variant as Analysis>::layers(s),)*
                }
            }

            /// Whether it reads the attention statistics, counting queries from `q` on.
            pub fn attention_from(&self) -> Option<usize> {
                match self {
                    $(Self::$variant(s) => <$module::$variant as Analysis>::attention_from(s),)*
                }
            }

            /// The vectors of a second model it reads: which model, and their indices.
            pub fn companion_layers(&self) -> Option<(usize, Vec<usize>)> {
                match self {
                    $(Self::$variant(s) => <$module::$variant as Analysis>::companion_layers(s),)*
                }
            }

            /// Whether it reads the routers' choices.
            pub fn reads_routing(&self) -> bool {
                match self {
                    $(Self::$variant(s) => <$module::$variant as Analysis>::reads_routing(s),)*
                }
            }

            /// Whether it reads the final hidden state's logits.
            pub fn reads_head(&self) -> bool {
                match self {
                    $(Self::$variant(s) => <$module::$variant as Analysis>::reads_head(s),)*
                }
            }

            /// Whether it needs every text's label.
            pub fn reads_labels(&self) -> bool {
                match self {
                    $(Self::$variant(s) => <$module::$variant as Analysis>::reads_labels(s),)*
                }
            }

            /// A second site it reads, and the index there.
            pub fn also_reads(&self) -> Option<(Site, usize)> {
                match self {
                    $(Self::$variant(s) => <$module::$variant as Analysis>::also_reads(s),)*
                }
            }

            /// The hidden state it resumes the forward from, when it splices.
            pub fn splices_from(&self) -> Option<usize> {
                match self {
                    $(Self::$variant(s) => <$module::$variant as Analysis>::splices_from(s),)*
                }
            }

            /// Takes one text.
            pub fn observe(&mut self, text: &TextActivations) {
                match self {
                    $(Self::$variant(s) => <$module::$variant as Analysis>::observe(s, text),)*
                }
            }

            /// Folds in the state of the texts that follow.
            pub fn merge(&mut self, right: State) -> Result<(), KindError> {
                match (self, right) {
                    $((Self::$variant(a), State::$variant(b)) => {
                        <$module::$variant as Analysis>::merge(a, b)
                    })*
                    (a, b) => Err(KindError::Mismatch(format!(
                        "a {} state cannot absorb a {} state",
                        a.kind(),
                        b.kind()
                    ))),
                }
            }

            /// The result.
            pub fn finish(self) -> Result<AnalysisResult, KindError> {
                match self {
                    $(Self::$variant(s) => {
                        <$module::$variant as Analysis>::finish(s).map(AnalysisResult::$variant)
                    })*
                }
            }
        }

        impl AnalysisResult {
            /// The `kind` as in the spec.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => <$module::$variant as Analysis>::KIND,)*
                }
            }

            /// Checks the result against the rest of the file.
            pub fn validate(&self, cx: &Context) -> Result<(), KindError> {
                match self {
                    $(Self::$variant(o) => <$module::$variant as Analysis>::validate(o, cx),)*
                }
            }

            /// Its report section, or its figures.
            pub fn section(&self, cx: &Context, medium: Medium) -> Section {
                match self {
                    $(Self::$variant(o) => <$module::$variant as Analysis>::section(o, cx, medium),)*
                }
            }

            /// The files it asks to be written beside results.json.
            pub fn files(&self) -> &[(std::path::PathBuf, Vec<u8>)] {
                match self {
                    $(Self::$variant(o) => <$module::$variant as Analysis>::files(o),)*
                }
            }

            /// What the positions of its arrays mean, for `strata table`.
            pub fn axes(&self) -> axes::Axes {
                match self {
                    $(Self::$variant(_) => <$module::$variant as Analysis>::AXES,)*
                }
            }

            /// Its statistics with one value per hidden state.
            pub fn scalars(&self) -> Vec<Scalars> {
                match self {
                    $(Self::$variant(o) => <$module::$variant as Analysis>::scalars(o),)*
                }
            }

            /// Applies the kind's compare rule; results of two kinds do not compare.
            pub fn compare(&self, new: &AnalysisResult, c: &mut Comparer) -> Result<(), Mismatch> {
                match (self, new) {
                    $((Self::$variant(a), Self::$variant(b)) => {
                        <$module::$variant as Analysis>::compare(a, b, c)
                    })*
                    (a, b) => Err(Mismatch(format!(
                        "analysis #{}: {} in BASE, {} in NEW",
                        c.analysis,
                        a.kind(),
                        b.kind()
                    ))),
                }
            }
        }
    };
}

registry! {
    Scatter => scatter,
    Covariance => covariance,
    Pairplot => pairplot,
    Histogram => histogram,
    Summary => summary,
    Outliers => outliers,
    Norms => norms,
    Anisotropy => anisotropy,
    OutlierDims => outlier_dims,
    Dimensionality => dimensionality,
    Cka => cka,
    LogitLens => logit_lens,
    Agreement => agreement,
    Attention => attention,
    Neurons => neurons,
    Router => router,
    Surprisal => surprisal,
    Similarity => similarity,
    Divergence => divergence,
    Sae => sae,
    Directions => directions,
    Project => project,
    LinearLens => linear_lens,
}

impl From<AnalysisResult> for Analysed {
    /// A result read at `hidden`.
    fn from(result: AnalysisResult) -> Self {
        Self::new(result, Site::Hidden)
    }
}
