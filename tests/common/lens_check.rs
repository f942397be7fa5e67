//! The check of a logit lens's (or tuned lens's) result against a reference that
//! tests/fixtures/make_lens_fixtures.py's `reference()` wrote.

#![allow(dead_code)]

use serde_json::Value;
use strata::analyses::logit_lens::LogitLensResult;
use strata::results::{AnalysisResult, Results};

use super::common::fixture;

/// Entry `name` of the reference file `file` (under tests/fixtures/reference).
pub fn torch(file: &str, name: &str) -> Value {
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("reference/{file}"))).unwrap(),
    )
    .unwrap();
    all[name].clone()
}

/// The lens texts of `group` (`gpt2`, `family`).
pub fn texts(group: &str) -> Vec<String> {
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("reference/lens-texts.json")).unwrap(),
    )
    .unwrap();
    serde_json::from_value(all[group].clone()).unwrap()
}

/// Every metric within `rtol * (1e-3 + |ref|)`; top-1 agreement off by at most the
/// positions where torch's two leading logits tie within rounding; the grid's top-1 ids
/// equal.
pub fn check(r: &Results, want: &Value, rtol: f64) {
    let ids: Vec<Vec<u32>> = serde_json::from_value(want["token_ids"].clone()).unwrap();
    for (t, w) in r.texts.iter().zip(&ids) {
        assert_eq!(&t.token_ids, w, "token ids of {}", t.id);
    }
    let AnalysisResult::LogitLens(o) = &r.analyses[0].result else {
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
