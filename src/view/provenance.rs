//! A results.json's provenance as the `(label, value)` rows the report shows and
//! `strata compare` diffs: display, kept out of the file's schema.

use crate::results::{Companion, Results};

/// `, GGUF Q4_1` after an architecture, for a quantized model.
pub fn gguf_note(quantization: &Option<String>) -> String {
    quantization
        .as_deref()
        .map(|q| format!(", GGUF {q}"))
        .unwrap_or_default()
}

/// Second model `i` (from 0): id and architecture, commit, weight hashes.
fn companion_rows(i: usize, c: &Companion) -> Vec<(String, String)> {
    let name = format!("second model {}", i + 1);
    let mut rows = vec![(
        name.clone(),
        format!(
            "{} ({}{})",
            c.model.id,
            c.architecture,
            gguf_note(&c.quantization)
        ),
    )];
    if let Some(commit) = &c.model.commit {
        rows.push((format!("{name} commit"), commit.clone()));
    }
    for (f, h) in &c.model.weights_sha256 {
        rows.push((format!("{name}: {f} sha256"), h.clone()));
    }
    rows
}

/// A Hub dataset: id, config and split, commit, every file's sha256.
fn dataset_rows(d: &crate::corpus::hub::DatasetProvenance) -> Vec<(String, String)> {
    let mut rows = vec![
        (
            "dataset".to_string(),
            format!("{} (config {}, split {})", d.id, d.config, d.split),
        ),
        (
            "dataset commit".to_string(),
            format!("{} ({})", d.commit, d.revision),
        ),
    ];
    for (f, h) in &d.files_sha256 {
        rows.push((format!("dataset {f} sha256"), h.clone()));
    }
    rows
}

/// The provenance as `(label, value)` rows: what the report shows, and exactly what
/// `strata compare` diffs.
pub fn provenance_rows(r: &Results) -> Vec<(String, String)> {
    let p = &r.provenance;
    let mut rows = model_rows(r);
    for (i, c) in p.companions.iter().enumerate() {
        rows.extend(companion_rows(i, c));
    }
    rows.push(("spec sha256".into(), p.spec_sha256.clone()));
    if let Some(c) = &p.corpus_sha256 {
        rows.push(("corpus sha256".into(), c.clone()));
    }
    if let Some(d) = &p.dataset {
        rows.extend(dataset_rows(d));
    }
    rows.extend(run_rows(r));
    rows
}

/// The model: id, source, revision, commit, shape and every file's sha256.
fn model_rows(r: &Results) -> Vec<(String, String)> {
    let m = &r.provenance.model;
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "—".into());
    let mut rows = vec![
        ("model".to_string(), m.id.clone()),
        ("source".to_string(), m.source.clone()),
        ("revision".to_string(), dash(&m.revision)),
        ("commit".to_string(), dash(&m.commit)),
        (
            "architecture".to_string(),
            format!(
                "{} ({} layers, {} dims){}",
                r.model.architecture,
                r.model.n_layers,
                r.model.hidden_size,
                gguf_note(&r.model.quantization)
            ),
        ),
        ("config.json sha256".to_string(), m.config_sha256.clone()),
    ];
    for (f, h) in m.weights_sha256.iter().chain(&m.tokenizer_sha256) {
        rows.push((format!("{f} sha256"), h.clone()));
    }
    rows
}

/// How strata ran: its build, candle, the numerics, the seed and token 0.
fn run_rows(r: &Results) -> Vec<(String, String)> {
    let p = &r.provenance;
    let first = if r.settings.exclude_first_token {
        "excluded from analyses"
    } else {
        "included"
    };
    vec![
        (
            "strata".to_string(),
            format!("{} ({})", p.strata_version, p.strata_commit),
        ),
        ("candle".to_string(), p.candle_version.clone()),
        (
            "numerics".to_string(),
            format!("{} on {}", p.dtype, p.device),
        ),
        ("seed".to_string(), r.settings.seed.to_string()),
        ("first token".to_string(), first.to_string()),
    ]
}
