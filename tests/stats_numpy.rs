//! The analyses against numpy (tests/fixtures/reference/tiny-gpt2-stats.json, made by
//! tests/fixtures/make_stats_fixtures.py from transformers' hidden states).

mod common;

use strata::analyses::{
    covariance::CovarianceResult, histogram::HistogramResult, outliers::OutliersResult,
    pairplot::PairplotResult, scatter::ScatterResult, summary::SummaryResult,
};

use common::*;
use serde_json::Value;
use strata::analyses::pairplot::SampleMode;
use strata::analyses::{
    covariance::CovarianceState, histogram::HistogramState, outliers::OutliersState,
    pairplot::PairplotState, summary::SummaryState, State, TextActivations,
};
use strata::results::{AnalysisResult, Results};

fn numpy() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture("reference/tiny-gpt2-stats.json")).unwrap(),
    )
    .unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn close(got: f64, want: f64, rtol: f64, what: &str) {
    // Absolute floor: 1e-12 for numpy's own inputs; for the model's activations (which
    // differ from transformers' by up to ~1e-6) an rtol-sized floor.
    let atol = if rtol > 1e-9 { rtol * 0.1 } else { 1e-12 };
    assert!(
        (got - want).abs() <= atol + rtol * want.abs(),
        "{what}: {got} vs numpy {want}"
    );
}

/// Checks results against numpy: `rtol` for real-valued statistics, `count_slack` for the
/// total |difference| of histogram counts (0 when fed numpy's own inputs).
fn check(analyses: &[AnalysisResult], rtol: f64, count_slack: u64) {
    let np = numpy();
    for a in analyses {
        match a {
            AnalysisResult::Covariance(CovarianceResult {
                n_points,
                covariance,
                r2,
                ..
            }) => {
                assert_eq!(*n_points, np["n_points"].as_u64().unwrap());
                for i in 0..4 {
                    for j in 0..4 {
                        close(
                            covariance[i][j],
                            f(&np["covariance"][i][j]),
                            rtol,
                            &format!("cov[{i}][{j}]"),
                        );
                        close(
                            r2[i][j].unwrap(),
                            f(&np["r2"][i][j]),
                            rtol,
                            &format!("r2[{i}][{j}]"),
                        );
                    }
                }
            }
            AnalysisResult::Histogram(HistogramResult {
                edges,
                counts,
                underflow,
                overflow,
                ..
            }) => {
                let h = &np["histogram"];
                for (e, ne) in edges.iter().zip(h["edges"].as_array().unwrap()) {
                    assert_eq!(*e, f(ne), "edges equal np.linspace bit for bit");
                }
                for l in 0..4 {
                    let want: Vec<u64> = serde_json::from_value(h["counts"][l].clone()).unwrap();
                    let diff: u64 = counts[l]
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| a.abs_diff(*b))
                        .sum();
                    assert!(
                        diff <= count_slack,
                        "histogram {l}: {:?} vs numpy {want:?}",
                        counts[l]
                    );
                    assert!(
                        underflow[l].abs_diff(h["underflow"][l].as_u64().unwrap()) <= count_slack
                    );
                    assert!(
                        overflow[l].abs_diff(h["overflow"][l].as_u64().unwrap()) <= count_slack
                    );
                }
            }
            AnalysisResult::Summary(SummaryResult { rows }) => {
                for (l, row) in rows.iter().enumerate() {
                    let s = &np["summary"][l];
                    assert_eq!(row.count, s["count"].as_u64().unwrap());
                    for (name, got) in [
                        ("mean", row.mean),
                        ("std", row.std),
                        ("min", row.min),
                        ("max", row.max),
                        ("skewness", row.skewness),
                        ("kurtosis", row.kurtosis),
                    ] {
                        // The mean of near-zero data is compared on the data's scale.
                        let want = f(&s[name]);
                        let scale = if name == "mean" || name == "skewness" {
                            f(&s["std"]).max(1.0)
                        } else {
                            want.abs()
                        };
                        assert!(
                            (got.unwrap() - want).abs() <= 1e-12 + rtol * scale,
                            "summary[{l}].{name}: {got:?} vs {want}"
                        );
                    }
                    let at = row.max_abs_at.as_ref().unwrap();
                    assert_eq!(
                        at.text,
                        format!("t{}", s["max_abs"]["text"]),
                        "summary[{l}] max text"
                    );
                    assert_eq!(
                        at.token_index as u64,
                        s["max_abs"]["token_index"].as_u64().unwrap()
                    );
                    assert_eq!(at.dim as u64, s["max_abs"]["dim"].as_u64().unwrap());
                    close(
                        row.max_abs.unwrap(),
                        f(&s["max_abs"]["value"]),
                        rtol,
                        "max_abs",
                    );
                }
            }
            AnalysisResult::Pairplot(PairplotResult {
                columns,
                point_index,
                ..
            }) => {
                assert_eq!(point_index, &(0..1000).collect::<Vec<u64>>());
                for (c, col) in columns.iter().enumerate() {
                    for (k, &v) in col.iter().enumerate() {
                        close(
                            v as f64,
                            f(&np["pairplot_first_1000"][c][k]),
                            rtol.max(1e-7),
                            &format!("pairplot[{c}][{k}]"),
                        );
                    }
                }
            }
            AnalysisResult::Outliers(OutliersResult { top, .. }) => {
                for (l, list) in top.iter().enumerate() {
                    let want = np["outliers_top10"][l].as_array().unwrap();
                    assert_eq!(list.len(), want.len());
                    for (o, w) in list.iter().zip(want) {
                        let v = f(&w["value"]);
                        assert!(
                            (o.value - v).abs() <= rtol * v.abs().max(1.0),
                            "{o:?} vs {w}"
                        );
                        if count_slack == 0 {
                            let text = format!("t{}", w["text"].as_u64().unwrap());
                            assert_eq!(o.text, text);
                            assert_eq!(o.token_index as u64, w["token_index"].as_u64().unwrap());
                            assert_eq!(o.dim as u64, w["dim"].as_u64().unwrap());
                        }
                    }
                }
            }
            // Checked against numpy in tests/geometry_numpy.rs, or not a statistic.
            _ => {}
        }
    }
}

/// The accumulators fed exactly the activations numpy saw: equal to rounding.
#[test]
fn accumulators_equal_numpy_on_the_same_activations() {
    let tensors = load_tensors(&fixture("reference/tiny-gpt2.safetensors"));
    let layers = vec![0, 1, 2, 3];
    let labels: Vec<String> = ["emb", "h.0", "h.1", "h.2"].map(String::from).to_vec();
    let mut accs = vec![
        State::Covariance(CovarianceState::new(layers.clone(), labels.clone())),
        State::Histogram(HistogramState::new(
            layers.clone(),
            labels.clone(),
            -2.5,
            2.5,
            50,
        )),
        State::Summary(SummaryState::new(layers.clone(), labels.clone())),
        State::Outliers(OutliersState::new(layers.clone(), labels.clone(), 10)),
        State::Pairplot(PairplotState::new(
            layers,
            labels,
            SampleMode::First,
            1000,
            0,
        )),
    ];
    for j in 0..4 {
        let ids = tensors[&format!("text{j}.token_ids")].dims1().unwrap();
        let tokens: Vec<String> = (0..ids).map(|k| format!("tok{k}")).collect();
        let states: Vec<Option<Vec<f32>>> = (0..4)
            .map(|l| Some(vec_f32(&tensors[&format!("text{j}.hidden_states.{l}")])[32..].to_vec()))
            .collect();
        let acts = TextActivations {
            index: j,
            id: &format!("t{j}"),
            label: None,
            window_of: None,
            tokens: &tokens,
            first_token: 1,
            dim: 32,
            states: &states,
            token_ids: &[],
            lens: None,
            previous: None,
            companions: &[],
            companion_readouts: &[],
            attention: &[],
            routing: &[],
            splice: None,
            sites: &[],
        };
        for a in accs.iter_mut() {
            a.observe(&acts);
        }
    }
    let results: Vec<AnalysisResult> = accs.into_iter().map(|a| a.finish().unwrap()).collect();
    check(&results, 1e-10, 0);
}

/// `strata report` end to end on the tiny model: the model's own activations differ from
/// transformers' by ~1e-6, so statistics agree to ~1e-5 and a count may move a bin.
#[test]
fn report_on_tiny_model_matches_numpy_and_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &std::path::Path| {
        let o = strata()
            .args([
                "report",
                fixture("specs/tiny-stats.yaml").to_str().unwrap(),
                "--quiet",
                "--out",
            ])
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(out.join("results.json")).unwrap()
    };
    let a = run(&tmp.path().join("a"));
    let b = run(&tmp.path().join("b"));
    assert!(a == b, "two runs of the same spec differ");
    let results = Results::from_json(&a).unwrap();
    assert_eq!(results.texts.len(), 4);
    assert_eq!(results.texts[1].n_tokens, 1);
    assert_eq!(
        results
            .analyses
            .iter()
            .map(|a| a.kind())
            .collect::<Vec<_>>(),
        ["scatter", "covariance", "pairplot", "histogram", "summary"]
    );
    let plain: Vec<AnalysisResult> = results.analyses.iter().map(|a| a.result.clone()).collect();
    check(&plain, 1e-5, 2);
    // The scatter is the first text's hidden state 3 without token 0: [61, 32].
    let AnalysisResult::Scatter(ScatterResult {
        values,
        token_index,
        tokens,
        ..
    }) = &results.analyses[0].result
    else {
        panic!()
    };
    assert_eq!((values.len(), values[0].len()), (61, 32));
    assert_eq!(token_index[0], 1);
    assert_eq!(tokens[0], " goal");
    let reference = load_tensors(&fixture("reference/tiny-gpt2.safetensors"));
    let want = vec_f32(&reference["text0.hidden_states.3"]);
    let (d, ratio) = allclose(&values.concat(), &want[32..], 1e-4, 1e-4);
    assert!(ratio <= 1.0, "{d}");
    // Provenance names the spec and the files.
    assert_eq!(
        results.provenance.spec_sha256,
        strata::digest::sha256_file(&fixture("specs/tiny-stats.yaml")).unwrap()
    );
    assert_eq!(results.provenance.dtype, "f32");
}

#[test]
fn notebook_histogram_edges_are_np_linspace() {
    let np = numpy();
    let ours = strata::stats::histogram::linspace_edges(-15.0, 15.0, 300);
    let theirs: Vec<f64> = serde_json::from_value(np["notebook_edges_-15_15_300"].clone()).unwrap();
    assert_eq!(ours, theirs);
}
