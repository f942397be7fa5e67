//! The `sae` kind against sae-lens: seeded SAEs in each published format
//! (tests/fixtures/sae/, written with tests/fixtures/make_sae_fixtures.py), applied by
//! strata and by sae-lens' own loaders, `encode` and `decode` to the tiny GPT-2's
//! activations. Counts match exactly but for the boundary cases both sides count; sums
//! within 1e-5 relative.

mod common;

use common::*;
use serde_json::Value;
use strata::analyses::sae::result::SaeResult;
use strata::analyses::AnalysisResult;

/// (reference name, SAE folder, extra YAML).
const CASES: &[(&str, &str, &str)] = &[
    ("standard", "standard", ""),
    ("standard-uncentred", "standard", ", center: false"),
    ("jumprelu", "jumprelu", ""),
    ("topk-layernorm", "topk-layernorm", ""),
    ("gated", "gated", ""),
    ("pre6-topk", "pre6-topk", ""),
    ("expected-average", "expected-average", ""),
    (
        "gemma-scope",
        "gemma-scope-tiny-res/layer_2/width_96/average_l0_10",
        "",
    ),
    ("llama-scope", "llama-scope", ""),
];

fn close(what: &str, got: f64, want: f64, rtol: f64) {
    assert!(
        (got - want).abs() <= 1e-7 + rtol * want.abs(),
        "{what}: {got} against sae-lens' {want}"
    );
}

fn run() -> Vec<SaeResult> {
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("reference/lens-texts.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<String> = serde_json::from_value(all["gpt2"].clone()).unwrap();
    let analyses: String = CASES
        .iter()
        .map(|(_, dir, extra)| {
            format!(
                "  - {{kind: sae, sae: {}{extra}}}\n",
                fixture(&format!("sae/{dir}")).display()
            )
        })
        .collect();
    let results = report_inline(&fixture("tiny-gpt2"), &texts, true, &analyses);
    results
        .analyses
        .into_iter()
        .map(|a| match a.result {
            AnalysisResult::Sae(r) => *r,
            other => panic!("not an sae result: {}", other.kind()),
        })
        .collect()
}

fn check(name: &str, got: &SaeResult, r: &Value) {
    let n = r["tokens"].as_u64().unwrap();
    assert_eq!(got.tokens, n, "{name}: tokens");
    let nf = n as f64;
    let boundary = r["boundary"].as_u64().unwrap();
    assert_eq!(got.boundary, boundary, "{name}: boundary cases");
    let fired: Vec<u64> = got
        .frequency
        .iter()
        .map(|f| (f * nf).round() as u64)
        .collect();
    let want: Vec<u64> = serde_json::from_value(r["fired"].clone()).unwrap();
    let flips: u64 = fired.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).sum();
    assert!(
        flips <= boundary,
        "{name}: {flips} firing counts differ, {boundary} boundary cases"
    );
    let sums: Vec<f64> = serde_json::from_value(r["sum"].clone()).unwrap();
    let maxes: Vec<f64> = serde_json::from_value(r["max"].clone()).unwrap();
    for j in 0..want.len() {
        close(
            &format!("{name} mean[{j}]"),
            got.mean[j],
            sums[j] / nf,
            1e-5,
        );
        close(
            &format!("{name} max[{j}]"),
            got.max[j] as f64,
            maxes[j],
            1e-5,
        );
    }
    assert_eq!(
        got.dead,
        want.iter().filter(|&&f| f == 0).count() as u64,
        "{name}: dead"
    );
    if boundary == 0 {
        let l0: Vec<(u32, u64)> = r["l0"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.as_u64().unwrap()))
            .collect();
        let mut l0 = l0;
        l0.sort();
        assert_eq!(got.l0_counts, l0, "{name}: L0 counts");
    }
    let f = |k: &str| r[k].as_f64().unwrap();
    let x_sum: Vec<f64> = serde_json::from_value(r["x_sum"].clone()).unwrap();
    let var = f("x2") - x_sum.iter().map(|s| s * s / nf).sum::<f64>();
    let d = got.sae.d_in as f64;
    close(&format!("{name} mse"), got.mse, f("err2") / (nf * d), 1e-5);
    close(&format!("{name} fvu"), got.fvu, f("err2") / var, 1e-5);
    close(
        &format!("{name} cosine"),
        got.cosine,
        f("cosine") / nf,
        1e-5,
    );
    close(
        &format!("{name} rel_bias"),
        got.rel_bias,
        f("xhat2") / f("dot"),
        1e-5,
    );
    close(
        &format!("{name} l2_ratio"),
        got.l2_ratio,
        f("l2_ratio") / nf,
        1e-5,
    );
}

#[test]
fn every_format_matches_sae_lens() {
    let reference: Value =
        serde_json::from_slice(&std::fs::read(fixture("reference/sae.json")).unwrap()).unwrap();
    let got = run();
    for ((name, _, _), r) in CASES.iter().zip(&got) {
        check(name, r, &reference[*name]);
    }
    // Where each read, and whether it centred.
    let at: Vec<(&str, bool)> = got
        .iter()
        .map(|r| (r.sae.label.as_str(), r.sae.center))
        .collect();
    assert_eq!(
        at,
        [
            ("h.0", true),
            ("h.0", false),
            ("mlp_out.2", true),
            ("pre_final_norm", true),
            ("attn_z.0", false),
            ("h.1", true),
            ("h.0", true),
            ("pre_final_norm", true),
            ("emb", true),
        ]
    );
    // The training sparsity against this corpus.
    let alive: Vec<bool> =
        serde_json::from_value(reference["standard"]["trained_alive"].clone()).unwrap();
    let t = got[0].training.as_ref().unwrap();
    let lost = (0..alive.len())
        .filter(|&j| alive[j] && got[0].frequency[j] == 0.0)
        .count();
    assert_eq!(t.alive_in_training_dead_here, lost as u64);
}
