//! `similarity` against numpy (tests/fixtures/reference/similarity.json, written by
//! tests/fixtures/make_similarity_fixtures.py from the papers' formulas on transformers'
//! hidden states of the tiny GPT-2): CKA, CCA (and, for full-rank pairs, CCA by QR with no
//! ridge), SVCCA, PWCCA and the Procrustes distance, with enough tokens and with fewer
//! tokens than dimensions (where the ridge decides); `kind: cka`'s numbers unchanged; and
//! the refusals.

mod common;

use common::*;
use serde_json::Value;
use strata::analyses::similarity::SimilarityResult;
use strata::results::AnalysisResult;

fn reference(case: &str) -> Value {
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("reference/similarity.json")).unwrap(),
    )
    .unwrap();
    all[case].clone()
}

/// Every cell of `got` within `atol` of numpy's `want` (`null` on the diagonal there),
/// but for pairs with a state in `loose` (its variance below the ridge), where CCA-family
/// indices lean on the ridge: within `loose_atol` (`None`: not checked; PWCCA's weights
/// move by 1e-3 there under 1e-6 noise in the rows).
fn matrix_where(
    name: &str,
    got: &[Vec<Option<f64>>],
    want: &Value,
    atol: f64,
    (loose, loose_atol): (&[usize], Option<f64>),
) {
    for (a, row) in got.iter().enumerate() {
        for (b, g) in row.iter().enumerate() {
            let Some(w) = want[a][b].as_f64() else {
                continue;
            };
            let atol = match loose.contains(&a) || loose.contains(&b) {
                true => match loose_atol {
                    Some(t) => t,
                    None => continue,
                },
                false => atol,
            };
            let g = g.unwrap_or_else(|| panic!("{name}[{a}][{b}] is null"));
            assert!(
                (g - w).abs() <= atol,
                "{name}[{a}][{b}]: {g} against numpy's {w}"
            );
        }
    }
}

/// Every cell within `atol`.
fn matrix(name: &str, got: &[Vec<Option<f64>>], want: &Value, atol: f64) {
    matrix_where(name, got, want, atol, (&[], None));
}

#[test]
fn similarity_matches_numpy_from_the_papers_formulas() {
    for case in ["two_texts", "short"] {
        let want = reference(case);
        let texts: Vec<String> = serde_json::from_value(want["texts"].clone()).unwrap();
        let r = report_inline(
            &fixture("tiny-gpt2"),
            &texts,
            false,
            "  - {kind: similarity}\n  - {kind: cka}\n",
        );
        let AnalysisResult::Similarity(o) = &r.analyses[0].result else {
            panic!("kind")
        };
        let o: &SimilarityResult = o;
        assert_eq!(o.tokens, want["tokens"].as_u64().unwrap());
        // The states themselves agree with transformers' to about 1e-6: so do the indices.
        matrix("cka", o.cka.as_ref().unwrap(), &want["cka"], 1e-6);
        let singular: Vec<usize> = serde_json::from_value(want["ridge_needed"].clone()).unwrap();
        // With every state singular (the short text), the ridge decides them all alike.
        let loose: &[usize] = if case == "short" { &[] } else { &singular };
        matrix_where(
            "cca",
            o.cca.as_ref().unwrap(),
            &want["cca"],
            1e-6,
            (loose, Some(1e-4)),
        );
        matrix("svcca", o.svcca.as_ref().unwrap(), &want["svcca"], 1e-6);
        matrix_where(
            "pwcca",
            o.pwcca.as_ref().unwrap(),
            &want["pwcca"],
            1e-6,
            (loose, None),
        );
        matrix(
            "procrustes",
            o.procrustes.as_ref().unwrap(),
            &want["procrustes"],
            1e-6,
        );
        // Full-rank pairs: CCA by QR of the rows, without the ridge.
        matrix("cca by QR", o.cca.as_ref().unwrap(), &want["cca_qr"], 1e-5);
        let leading = o.cca_leading.as_ref().unwrap();
        for (a, row) in leading.iter().enumerate() {
            for (b, got) in row.iter().enumerate() {
                let w: Vec<f64> = serde_json::from_value(want["leading"][a][b].clone()).unwrap();
                assert_eq!(got.len(), w.len(), "leading[{a}][{b}]");
                for (g, w) in got.iter().zip(&w) {
                    assert!((g - w).abs() <= 1e-6, "leading[{a}][{b}]: {g} against {w}");
                }
            }
        }
        let dirs: Vec<usize> = serde_json::from_value(want["svcca_directions"].clone()).unwrap();
        assert_eq!(o.svcca_directions.as_ref().unwrap(), &dirs);
        let needed: Vec<usize> = serde_json::from_value(want["ridge_needed"].clone()).unwrap();
        let labels: Vec<String> = needed.iter().map(|&i| o.labels[i].clone()).collect();
        assert_eq!(o.ridge_needed, labels, "{case}");
        // `kind: cka` in the same run: the same numbers.
        let AnalysisResult::Cka(c) = &r.analyses[1].result else {
            panic!("kind")
        };
        assert_eq!(o.cka.as_ref().unwrap(), &c.matrix);
    }
}

#[test]
fn similarity_refusals_name_the_value_and_a_fix() {
    let tmp = tempfile::tempdir().unwrap();
    for (analysis, says) in [
        ("{kind: similarity, metrics: [cka, rsa]}", "rsa"),
        ("{kind: similarity, variance: 0}", "analyses[0].variance"),
        ("{kind: similarity, variance: 1.5}", "(0, 1]"),
        ("{kind: similarity, ridge: -1}", "analyses[0].ridge"),
        ("{kind: similarity, metrics: []}", "analyses[0].metrics"),
        ("{kind: similarity, layers: [1]}", "at least two"),
        ("{kind: similarity, max_memory: \"1 KiB\"}", "max_memory"),
    ] {
        let spec = tmp.path().join("bad.yaml");
        std::fs::write(
            &spec,
            format!(
                "model: {{id: {}}}\ntexts:\n  - {{id: a, text: Hello there}}\nanalyses:\n  - {analysis}\n",
                fixture("tiny-gpt2").display()
            ),
        )
        .unwrap();
        let err = report_fails(&spec);
        assert!(err.contains(says), "{analysis}: {err}");
    }
}

/// `agreement` with `metrics:` gives the same indices between two models' hidden states
/// (the tiny GPT-2 and the tiny Llama on the same token ids); without them its result has
/// none of their fields.
#[test]
fn agreement_reports_the_indices_between_two_models() {
    let want = reference("agreement");
    let texts: Vec<String> = serde_json::from_value(want["texts"].clone()).unwrap();
    let llama = fixture("tiny-llama-lens");
    let analyses = format!(
        "  - {{kind: agreement, model: {{id: {}}}, metrics: [cca, svcca, pwcca, procrustes]}}\n  - {{kind: agreement, model: {{id: {}}}}}\n",
        llama.display(),
        llama.display()
    );
    let r = report_inline(&fixture("tiny-gpt2"), &texts, false, &analyses);
    let AnalysisResult::Agreement(o) = &r.analyses[0].result else {
        panic!("kind")
    };
    // Where a state's variance falls below the ridge, CCA leans on it (1e-5 under 1e-6
    // noise in the rows) and PWCCA's weights are not determined (1e-3): checked loosely,
    // and not at all.
    let singular: Vec<usize> = serde_json::from_value(want["ridge_needed"].clone()).unwrap();
    for (name, got) in [
        ("cka", Some(&o.cka)),
        ("cca", o.cca.as_ref()),
        ("svcca", o.svcca.as_ref()),
        ("pwcca", o.pwcca.as_ref()),
        ("procrustes", o.procrustes.as_ref()),
    ] {
        let got = got.unwrap_or_else(|| panic!("no {name}"));
        let w: Vec<f64> = serde_json::from_value(want[name].clone()).unwrap();
        assert_eq!(got.len(), w.len(), "{name}");
        for (l, (g, w)) in got.iter().zip(&w).enumerate() {
            let g = g.unwrap();
            let atol = match (singular.contains(&l), name) {
                (true, "pwcca") => continue,
                (true, "cca") => 1e-4,
                _ => 1e-6,
            };
            assert!(
                (g - w).abs() <= atol,
                "{name} at {l}: {g} against numpy's {w}"
            );
        }
    }
    let plain = serde_json::to_value(&r.analyses[1]).unwrap();
    for field in ["cca", "svcca", "pwcca", "procrustes"] {
        assert!(plain.get(field).is_none(), "{field} without metrics");
    }
}
