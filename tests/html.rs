//! The HTML report rendered from a hand-built results fixture: snapshotted (ECharts
//! redacted), and checked that hostile strings from a spec, a corpus or the tokenizer stay
//! text and cannot leave their element or a `<script>` block.

mod common;

use strata::analyses::{
    covariance::CovarianceResult, histogram::HistogramResult, pairplot::PairplotResult,
    scatter::ScatterResult, summary::SummaryResult,
};

use std::collections::BTreeMap;

use common::*;
use strata::analyses::pairplot::SampleMode;
use strata::model::ModelProvenance;
use strata::pages::results::render;
use strata::pages::Assets;
use strata::results::*;

const HOSTILE: &str = "</script><script>alert('x')</script><!-- \"quoted\" & <b>bold</b>";

fn hand_built(title: &str, text_id: &str, token: &str) -> Results {
    let labels: Vec<String> = ["emb", "h.0", "h.1"].map(String::from).to_vec();
    Results {
        schema_version: SCHEMA_VERSION,
        name: "hand-built".into(),
        title: title.into(),
        provenance: Provenance {
            model: ModelProvenance {
                id: "fixtures/model".into(),
                source: "hub".into(),
                revision: Some("main".into()),
                commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
                config_sha256: "c".repeat(64),
                weights_sha256: BTreeMap::from([("model.safetensors".into(), "a".repeat(64))]),
                tokenizer_sha256: BTreeMap::from([("tokenizer.json".into(), "b".repeat(64))]),
            },
            spec_sha256: "d".repeat(64),
            corpus_sha256: None,
            dataset: None,
            strata_version: "0.1.0".into(),
            strata_commit: "fixture".into(),
            candle_version: "0.11.1".into(),
            dtype: "f32".into(),
            device: "cpu".into(),
            companions: vec![],
        },
        settings: Settings {
            seed: 0,
            exclude_first_token: true,
            layers: labels.clone(),
            batch_size: 8,
            batch_tokens: 4096,
            window: None,
            keep_texts: 100,
            compare: None,
        },
        model: ModelSummary {
            quantization: None,
            tensor_types: None,
            architecture: "gpt2".into(),
            n_layers: 2,
            hidden_size: 4,
            intermediate_size: None,
            attention_width: None,
            labels: labels.clone(),
            n_experts: None,
            top_k: None,
            sparse_blocks: None,
        },
        corpus: CorpusSummary {
            texts: 1,
            tokens: 3,
            sha256: "e".repeat(64),
            lengths: vec![[3, 1]],
            labels: vec![strata::results::ClassCount {
                label: text_id.into(),
                texts: 1,
                tokens: 3,
            }],
        },
        texts: vec![TextRecord {
            id: text_id.into(),
            n_tokens: 3,
            token_ids: vec![464, 3061, 286],
            tokens: vec!["The".into(), token.into(), " of".into()],
            label: Some(text_id.into()),
        }],
        analyses: [
            AnalysisResult::Scatter(ScatterResult {
                label: "h.0".into(),
                text: text_id.into(),
                token_index: vec![1, 2],
                tokens: vec![token.into(), " of".into()],
                values: vec![vec![0.5, -1.25, 2.0, 0.0], vec![1.0, 0.25, -0.5, 3.5]],
            }),
            AnalysisResult::Covariance(CovarianceResult {
                labels: labels.clone(),
                n_points: 8,
                means: vec![0.1, 0.2, 0.3],
                covariance: vec![
                    vec![1.0, 0.5, -0.25],
                    vec![0.5, 2.0, 0.125],
                    vec![-0.25, 0.125, 4.0],
                ],
                r2: vec![
                    vec![Some(1.0), Some(0.125), Some(0.0078125)],
                    vec![Some(0.125), Some(1.0), None],
                    vec![Some(0.0078125), None, Some(1.0)],
                ],
            }),
            AnalysisResult::Pairplot(PairplotResult {
                labels: labels[..2].to_vec(),
                sample: SampleMode::First,
                n_seen: 8,
                point_index: vec![0, 1, 2, 3],
                columns: vec![vec![0.5, -1.25, 2.0, 0.0], vec![1.0, 0.25, -0.5, 3.5]],
                diagonal_edges: vec![vec![-1.25, 0.375, 2.0], vec![-0.5, 1.5, 3.5]],
                diagonal_counts: vec![vec![2, 2], vec![3, 1]],
            }),
            AnalysisResult::Histogram(HistogramResult {
                labels: labels.clone(),
                edges: vec![-2.0, -1.0, 0.0, 1.0, 2.0],
                counts: vec![vec![0, 1, 5, 2], vec![1, 2, 3, 1], vec![0, 0, 4, 4]],
                underflow: vec![0, 1, 0],
                overflow: vec![0, 0, 2],
                nan: vec![0, 0, 0],
            }),
            AnalysisResult::Summary(SummaryResult {
                rows: vec![strata::analyses::summary::SummaryRow {
                    label: "emb".into(),
                    count: 8,
                    non_finite: 0,
                    mean: Some(0.1),
                    std: Some(1.0),
                    min: Some(-1.25),
                    max: Some(3.5),
                    skewness: Some(0.5),
                    kurtosis: None,
                    max_abs: Some(3.5),
                    max_abs_at: Some(Location {
                        text: text_id.into(),
                        token_index: 2,
                        token: token.into(),
                        dim: 3,
                    }),
                }],
            }),
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
    }
}

fn stub_assets() -> Assets<'static> {
    Assets {
        echarts_js: "/* ECharts redacted for snapshots */",
        echarts_license: "Apache License 2.0 (redacted)",
        echarts_version: "0.0.0",
        fit_js: "/* the layout redacted for snapshots */",
    }
}

#[test]
fn report_snapshot() {
    let html = render(
        &hand_built("Hand-built report", "text-a", " goal"),
        &stub_assets(),
    )
    .unwrap();
    insta::assert_snapshot!(html);
}

#[test]
fn hostile_strings_stay_text() {
    let html = render(&hand_built(HOSTILE, HOSTILE, HOSTILE), &stub_assets()).unwrap();
    assert!(
        !html.contains("<script>alert"),
        "a spec string became a script"
    );
    assert!(!html.contains("<b>bold</b>"), "a spec string became markup");
    assert!(
        !html.contains("<!--"),
        "a comment opener leaked (it changes how <script> is parsed)"
    );
    // Only the page's own script blocks close: three code blocks (ECharts, the layout, the
    // page's) plus one JSON option per chart.
    let charts = html.matches("class=\"chart\"").count();
    assert_eq!(html.matches("</script>").count(), 3 + charts);
    assert_eq!(html.matches("<script").count(), 3 + charts);
    // Inside the JSON blocks the hostile text is unicode-escaped, and still round-trips.
    let start = html.find("application/json").unwrap();
    let block = &html[html[start..].find('>').unwrap() + start + 1..];
    let block = &block[..block.find("</script>").unwrap()];
    let option: serde_json::Value = serde_json::from_str(block).unwrap();
    assert!(
        option.to_string().contains("alert"),
        "the token is still in the chart data"
    );
}

#[test]
fn real_report_is_self_contained_and_under_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let html = tiny_report(&out);
    assert!(html.len() < 5 * 1024 * 1024, "{} bytes", html.len());
    assert!(
        html.contains(strata::pages::shell::ECHARTS_JS.get(..200).unwrap()),
        "ECharts is inlined"
    );
    assert!(html.contains("Apache License"), "its licence is shown");
    common::assert_self_contained(&html);
    // `strata render` re-renders the same page from results.json alone, byte for byte.
    let again = tmp.path().join("again.html");
    let o = strata()
        .arg("render")
        .arg(out.join("results.json"))
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read_to_string(&again).unwrap() == html,
        "render differs from report"
    );
    // Bad results files are errors, not panics.
    std::fs::write(tmp.path().join("bad.json"), "{\"schema_version\": 99}").unwrap();
    let o = strata()
        .arg("render")
        .arg(tmp.path().join("bad.json"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("schema_version 99"));
}
