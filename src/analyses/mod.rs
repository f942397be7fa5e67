//! The analyses: one module per kind, each owning its spec parameters and their checks, its
//! streaming state (observe one text, merge, serialize, finish), its result type, its
//! columns, its report section and its `compare` rule, all through the interface in
//! [`kind`]. This file is the registry and nothing else: adding a kind is one module and
//! one line below.
//!
//! The registry is the one place where the analyses meet the spec (which holds an
//! [`AnalysisSpec`] per analysis) and results.json (an [`AnalysisResult`] each): those two
//! import this file, and no kind imports them back.

pub mod columns;
pub mod kind;
pub mod top;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use self::kind::{
    expect_known_labels, expect_len, expect_per_label, Analysis, Check, Context, Lens, Medium,
    MemoryLimit, Scalars, Section, Setup, TextActivations,
};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::spec::model::ModelSpec;

/// Declares the kinds: the spec, state and result enums and their dispatch.
macro_rules! registry {
    ($($variant:ident => $module:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// One analysis of a spec, selected by `kind` (see each kind's module).
        #[derive(Clone, Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum AnalysisSpec {
            $(
                #[doc = concat!("`kind: ", stringify!($module), "`: its parameters (see [`", stringify!($module), "`]).")]
                $variant($module::$variant),
            )*
        }

        impl fmt::Debug for AnalysisSpec {
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
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum AnalysisResult {
            $(
                #[doc = concat!("The result of a `", stringify!($module), "` analysis.")]
                $variant(<$module::$variant as Analysis>::Output),
            )*
        }

        /// Every kind, in registry order.
        pub const KINDS: &[&str] = &[$(<$module::$variant as Analysis>::KIND),*];

        impl AnalysisSpec {
            /// The `kind` as written in YAML.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => <$module::$variant as Analysis>::KIND,)*
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

            /// Takes one text.
            pub fn observe(&mut self, text: &TextActivations) {
                match self {
                    $(Self::$variant(s) => <$module::$variant as Analysis>::observe(s, text),)*
                }
            }

            /// Folds in the state of the texts that follow.
            pub fn merge(&mut self, right: State) -> Result<(), String> {
                match (self, right) {
                    $((Self::$variant(a), State::$variant(b)) => {
                        <$module::$variant as Analysis>::merge(a, b)
                    })*
                    (a, b) => Err(format!(
                        "a {} state cannot absorb a {} state",
                        a.kind(),
                        b.kind()
                    )),
                }
            }

            /// The result.
            pub fn finish(self) -> Result<AnalysisResult, String> {
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
            pub fn validate(&self, cx: &Context) -> Result<(), String> {
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
}
