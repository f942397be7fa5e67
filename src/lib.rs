//! strata: turns a YAML experiment spec into a reproducible report on a language model's
//! hidden-state activations.
//!
//! The pipeline is one module per stage: [`spec`] (YAML, checked; texts from a
//! [`corpus`]) -> [`model`] (files, tokenizer, architectures) -> [`run`] (texts streamed
//! through the model into the [`analyses`], one module per kind, built on the pure
//! [`stats`]) -> [`results`] (results.json, written by [`json`], atomically by [`io`]) ->
//! [`pages`] (self-contained HTML, charts from [`charts`], numbers by [`view`]) and
//! [`figures`] -> [`compare`]. A run can be split into shards ([`run::shard`]), each
//! writing a partial file ([`run::partial`]) that `strata merge` joins into the same
//! results. A [`sweep`] runs one spec over several revisions of a model. [`extract`]
//! dumps raw hidden states instead. Below them: [`digest`] (file hashes), [`memory`]
//! (memory sizes), [`simd`] (the instruction-set choice).

pub mod analyses;
pub mod assets;
pub mod charts;
pub mod cli;
pub mod compare;
pub mod corpus;
pub mod digest;
pub mod extract;
pub mod figures;
pub mod hub;
pub mod io;
pub mod json;
pub mod memory;
pub mod model;
pub mod pages;
pub mod results;
pub mod run;
pub mod schema;
pub mod simd;
pub mod spec;
pub mod stats;
pub mod sweep;
pub mod table;
pub mod timings;
pub mod view;

/// strata's version, recorded in every output.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit strata was built from (`unknown` outside a repository, unless the build
/// was given `STRATA_COMMIT`): what results.json records and `--version` prints.
pub const VERSION_COMMIT: &str = env!("STRATA_GIT_COMMIT");
