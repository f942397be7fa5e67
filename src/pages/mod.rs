//! The HTML pages, one file each over one shell: the results page ([`results`]), the
//! comparison page ([`comparison`]) and the sweep page ([`sweep`]). Every page is a view
//! model with every number already formatted, rendered by the templates to a String (the
//! caller writes it, atomically), self-contained: ECharts is inlined, and nothing is
//! fetched.

pub mod comparison;
pub mod results;
pub mod shell;
pub mod sweep;

pub use shell::{Assets, RenderError};
