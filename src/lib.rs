//! strata: turns a YAML experiment spec into a reproducible report on a language model's
//! hidden-state activations.
//!
//! The pipeline is one module per stage: [`model`] (files, tokenizer, architectures) ->
//! [`extract`] (texts to hidden states) -> outputs written atomically by [`io`].

pub mod cli;
pub mod extract;
pub mod io;
pub mod model;

/// strata's version, recorded in every output.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
