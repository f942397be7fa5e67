//! Pretrained tuned lenses (`logit_lens` with `lens: {tuned: ...}`) against the
//! `tuned-lens` package's own readings (tests/fixtures/reference/tuned-lens.json, written
//! by tests/fixtures/make_tuned_lens_fixtures.py from lenses it fitted to the fixture
//! models and saved in the published layout); the final norm recomputed on every
//! translated row; the plain lens beside the tuned one; the Hub's tuned-lens Space; and
//! the refusals.

mod common;

#[path = "common/lens_check.rs"]
mod lens_check;
#[path = "common/mock_hub.rs"]
mod mock_hub;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use lens_check::{check, texts, torch};
use mock_hub::{online, MockHub, MockRepo, COMMIT};
use strata::analyses::logit_lens::LogitLensResult;
use strata::results::{AnalysisResult, Results};

fn lens_dir(name: &str) -> std::path::PathBuf {
    fixture(&format!("tuned-lens/{name}"))
}

fn tuned(model: &str, lens: &str, texts: &[String], exclude_first: bool) -> Results {
    report_inline(
        &fixture(model),
        texts,
        exclude_first,
        &format!(
            "  - {{kind: logit_lens, lens: {{tuned: {}}}}}\n",
            lens_dir(lens).display()
        ),
    )
}

fn lens_result(r: &Results, i: usize) -> &LogitLensResult {
    match &r.analyses[i].result {
        AnalysisResult::LogitLens(o) => o,
        _ => panic!("analyses[{i}] is not a logit lens"),
    }
}

#[test]
fn tiny_gpt2_tuned_lens_matches_the_package() {
    let t = texts("gpt2");
    let r = tuned("tiny-gpt2", "tiny-gpt2", &t, false);
    check(&r, &torch("tuned-lens.json", "tiny-gpt2"), 1e-4);
    check(
        &tuned("tiny-gpt2", "tiny-gpt2", &t, true),
        &torch("tuned-lens.json", "tiny-gpt2 without token 0"),
        1e-4,
    );
    let source = lens_result(&r, 0)
        .tuned
        .as_ref()
        .expect("the lens is recorded");
    assert_eq!(source.base_model, "tiny-gpt2");
    assert_eq!(
        (source.repo.as_deref(), source.commit.as_deref()),
        (None, None)
    );
    let sha = strata::digest::sha256_file(&lens_dir("tiny-gpt2").join("params.pt")).unwrap();
    assert_eq!(source.params_sha256, sha);
}

#[test]
fn tiny_llama_tuned_lens_matches_the_package() {
    let t = texts("family");
    let r = tuned("tiny-llama-lens", "tiny-llama-lens", &t, false);
    check(&r, &torch("tuned-lens.json", "tiny-llama-lens"), 1e-4);
    // The fitted lens reads the model's prediction better than the identity does.
    let plain = torch("lens.json", "tiny-llama-lens");
    let o = lens_result(&r, 0);
    for l in 0..o.labels.len() - 1 {
        let identity = plain["states"][l]["kl_to_final"].as_f64().unwrap();
        assert!(o.kl_to_final[l].unwrap() < identity, "{}", o.labels[l]);
    }
}

/// A lens of `A = 9 I` reads `10 h`, and the final norm is scale-invariant (but for its
/// `eps`, worth 4e-5 of the embeddings' mean square here): it must read what the logit
/// lens reads. Reusing the norm's statistics of the untranslated row (a
/// known bug elsewhere) reads logits ten times too large, which changes every metric.
#[test]
fn the_final_norm_is_recomputed_on_each_translated_row() {
    let t = texts("family");
    let r = report_inline(
        &fixture("tiny-llama-lens"),
        &t,
        false,
        &format!(
            "  - {{kind: logit_lens}}\n  - {{kind: logit_lens, lens: {{tuned: {}, side_by_side: true}}}}\n",
            lens_dir("tiny-llama-lens-scaled").display()
        ),
    );
    let (plain, scaled) = (lens_result(&r, 0), lens_result(&r, 1));
    let close = |a: &[Option<f64>], b: &[Option<f64>], what: &str| {
        for (l, (x, y)) in a.iter().zip(b).enumerate() {
            let (x, y) = (x.unwrap(), y.unwrap());
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{what} of {}: {x} vs {y}",
                plain.labels[l]
            );
        }
    };
    close(&scaled.cross_entropy, &plain.cross_entropy, "cross-entropy");
    close(&scaled.kl_to_final, &plain.kl_to_final, "KL");
    close(&scaled.entropy, &plain.entropy, "entropy");
    close(&scaled.top1_agreement, &plain.top1_agreement, "top-1");
    // The entropies are far from what logits ten times larger would give.
    assert!(plain.entropy[0].unwrap() > 1.0, "{:?}", plain.entropy);
    // Read beside it, the plain lens is exactly the plain analysis.
    let beside = scaled.logit_lens.as_ref().expect("side by side");
    assert_eq!(beside.cross_entropy, plain.cross_entropy);
    assert_eq!(beside.kl_to_final, plain.kl_to_final);
    assert_eq!(beside.entropy, plain.entropy);
    assert_eq!(beside.top1_agreement, plain.top1_agreement);
    assert_eq!(beside.grid, plain.grid);
}

#[test]
fn side_by_side_shows_both_lenses() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("lens.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: tuned\nmodel: {{id: {}}}\ntexts:\n  - {{id: a, text: \"The goal of a correlation analysis is to compute a coefficient.\"}}\nanalyses:\n  - {{kind: logit_lens, lens: {{tuned: {}, side_by_side: true}}}}\n",
            fixture("tiny-gpt2").display(),
            lens_dir("tiny-gpt2").display()
        ),
    )
    .unwrap();
    let html = report_html(&spec, &tmp.path().join("out"));
    for want in [
        "Tuned lens",
        "The logit lens beside it",
        "tuned-lens-grid",
        "logit-lens-grid",
        "cross-entropy, logit lens",
    ] {
        assert!(html.contains(want), "{want} missing from the report");
    }
    let o = tmp.path().join("figs");
    let f = strata()
        .arg("figures")
        .arg(tmp.path().join("out/results.json"))
        .arg("--out")
        .arg(&o)
        .output()
        .unwrap();
    assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stderr));
    let names: Vec<String> = std::fs::read_dir(&o)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for want in ["tuned-lens-grid", "logit-lens-grid", "tuned-lens-nats"] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "{want} in {names:?}"
        );
    }
}

/// The lens files as the tuned-lens Space lays them out, under `lens/ID/`.
fn space(id: &str) -> MockRepo {
    let mut files = BTreeMap::new();
    for f in ["config.json", "params.pt"] {
        files.insert(
            format!("lens/{id}/{f}"),
            std::fs::read(lens_dir("tiny-gpt2").join(f)).unwrap(),
        );
    }
    MockRepo {
        space: true,
        ..MockRepo::model("AlignmentResearch/tuned-lens", files)
    }
}

fn hub_spec(dir: &Path, lens: &str) -> std::path::PathBuf {
    let spec = dir.join("hub.yaml");
    std::fs::write(
        &spec,
        format!(
            "model: {{id: {}}}\ntexts:\n  - {{id: a, text: \"The goal of a correlation analysis\"}}\nanalyses:\n  - {{kind: logit_lens, lens: {{tuned: {lens}}}}}\n",
            fixture("tiny-gpt2").display()
        ),
    )
    .unwrap();
    spec
}

#[test]
fn a_published_lens_comes_from_the_tuned_lens_space_then_the_cache() {
    let hub = MockHub::start(vec![space("openai/tiny-gpt2")]);
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let spec = hub_spec(tmp.path(), "openai/tiny-gpt2");
    let run = |cmd: &mut std::process::Command, out: &str| {
        let o = cmd
            .args(["report", "--quiet"])
            .arg(&spec)
            .arg("--out")
            .arg(tmp.path().join(out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Results::from_json(&std::fs::read(tmp.path().join(out).join("results.json")).unwrap())
            .unwrap()
    };
    let r = run(&mut online(&hub, &home), "online");
    let o = lens_result(&r, 0);
    let source = o.tuned.as_ref().unwrap();
    assert_eq!(source.repo.as_deref(), Some("AlignmentResearch/tuned-lens"));
    assert_eq!(source.commit.as_deref(), Some(COMMIT));
    let cached = home.join("hub/spaces--AlignmentResearch--tuned-lens");
    assert!(cached
        .join(format!(
            "snapshots/{COMMIT}/lens/openai/tiny-gpt2/params.pt"
        ))
        .is_file());
    assert_eq!(
        std::fs::read_to_string(cached.join("refs/main")).unwrap(),
        COMMIT
    );
    // The same lens as from its folder.
    let local = tuned(
        "tiny-gpt2",
        "tiny-gpt2",
        &["The goal of a correlation analysis".to_string()],
        false,
    );
    assert_eq!(o.kl_to_final, lens_result(&local, 0).kl_to_final);
    // Offline, the cache alone.
    let offline = run(online(&hub, &home).env("HF_HUB_OFFLINE", "1"), "offline");
    assert_eq!(lens_result(&offline, 0), o);
    // A lens the Space does not publish.
    let spec = hub_spec(tmp.path(), "no-such-model");
    let err = report_fails_with(&mut online(&hub, &home), &spec);
    assert!(
        err.contains("analyses[0].lens.tuned") && err.contains("no-such-model"),
        "{err}"
    );
}

/// `strata report` on the tiny GPT-2 with `analysis`; exit 2, nothing written; stderr.
fn refused(analysis: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("bad.yaml");
    std::fs::write(
        &spec,
        format!(
            "model: {{id: {}}}\ntexts:\n  - {{id: a, text: Hello world}}\nanalyses:\n  - {analysis}\n",
            fixture("tiny-gpt2").display()
        ),
    )
    .unwrap();
    report_fails(&spec)
}

/// A copy of the tiny GPT-2's lens with `edit` applied to its config.json.
fn edited(tmp: &Path, edit: &dyn Fn(&mut serde_json::Value)) -> std::path::PathBuf {
    let dir = tmp.join(format!("lens{}", std::fs::read_dir(tmp).unwrap().count()));
    copy_dir(&lens_dir("tiny-gpt2"), &dir);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn lenses_that_do_not_fit_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let lens = |p: &Path| format!("{{kind: logit_lens, lens: {{tuned: {}}}}}", p.display());
    let layers = edited(tmp.path(), &|c| c["num_hidden_layers"] = 12.into());
    let err = refused(&lens(&layers));
    assert!(
        err.contains("analyses[0].lens.tuned")
            && err.contains("the lens has 12 layers of width 32")
            && err.contains("the model has 3 blocks of width 32"),
        "{err}"
    );
    let width = edited(tmp.path(), &|c| c["d_model"] = 768.into());
    let err = refused(&lens(&width));
    assert!(
        !err.contains("12 layers") && err.contains("width 768"),
        "{err}"
    );
    // config.json says no biases, params.pt has them.
    let bias = edited(tmp.path(), &|c| c["bias"] = false.into());
    let err = refused(&lens(&bias));
    assert!(err.contains("`0.bias` is not a translator"), "{err}");
    let err = refused(&lens(&lens_dir("not-a-state-dict")));
    assert!(
        err.contains("params.pt: it holds no named tensors") && err.contains("state dict"),
        "{err}"
    );
    let garbage = edited(tmp.path(), &|_| {});
    std::fs::write(garbage.join("params.pt"), b"not a zip").unwrap();
    let err = refused(&lens(&garbage));
    assert!(err.contains("not a torch zip-pickle"), "{err}");
    let err = refused(&lens(&tmp.path().join("missing")));
    assert!(err.contains("no lens folder"), "{err}");
    let err = refused(&format!(
        "{{kind: logit_lens, site: mlp_out, lens: {{tuned: {}}}}}",
        lens_dir("tiny-gpt2").display()
    ));
    assert!(
        err.contains("analyses[0].site") && err.contains("residual stream"),
        "{err}"
    );
    let err = refused("{kind: logit_lens, lens: {tuned: gpt2, sideways: true}}");
    assert!(err.contains("sideways"), "{err}");
}

/// The closed-form linear lens (`kind: linear_lens`) fed the tiny GPT-2's hidden states,
/// against numpy's `lstsq` of the last block's output on `[h_l, 1]` over the same rows
/// (tests/fixtures/make_linear_lens_fixtures.py).
#[test]
fn the_fitted_linear_lens_is_least_squares() {
    use strata::stats::lens_fit::LensSums;
    let r = torch("linear-lens.json", "lstsq");
    let tensors = load_tensors(&fixture("reference/linear-lens-states.safetensors"));
    let layers = r["layers"].as_array().unwrap();
    let mut sums = LensSums::new((0..layers.len()).collect(), layers.len() + 1);
    for j in 0..r["texts"].as_u64().unwrap() {
        let mut rows: Vec<Vec<f32>> = (0..layers.len())
            .map(|l| vec_f32(&tensors[&format!("text{j}.{l}")]))
            .collect();
        rows.push(vec_f32(&tensors[&format!("text{j}.pre")]));
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        sums.observe(&refs, 32);
    }
    for (l, want) in layers.iter().enumerate() {
        let got = sums.fit(l, 0.0).expect("a fit");
        for (what, g, w) in [("A", &got.a, &want["a"]), ("b", &got.b, &want["b"])] {
            let w: Vec<f64> = w
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let scale = w.iter().fold(0f64, |m, v| m.max(v.abs()));
            let worst = g
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f64, f64::max);
            assert!(
                worst <= 1e-5 * scale,
                "h.{l} {what}: {worst} off (largest |value| {scale})"
            );
        }
    }
}

/// `strata lens fit` on the labelled corpus: the package loads what it writes (the
/// fixture script checked), strata's logit lens reads it as the package's forward does on
/// held-out texts, a fit again gives the committed lens, and shards merge to its bytes.
#[test]
fn strata_lens_fit_writes_a_lens_the_package_reads() {
    let t = texts("gpt2");
    let r = tuned("tiny-gpt2", "fitted-tiny-gpt2", &t, false);
    check(&r, &torch("linear-lens.json", "package"), 1e-4);

    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("fit.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: fit\nmodel: {{id: {}}}\ncorpus: {}\nbatch_size: 3\nanalyses:\n  - {{kind: summary}}\n",
            fixture("tiny-gpt2").display(),
            fixture("corpora/labelled.jsonl").display()
        ),
    )
    .unwrap();
    let fit = |args: &[&str]| {
        let o = strata()
            .current_dir(tmp.path())
            .args(["lens", "fit", "-q"])
            .arg(&spec)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    fit(&["--out", "one", "--report", "one-report"]);
    let read = |dir: &Path| -> Vec<(String, Vec<f32>)> {
        let mut all = candle_core::pickle::read_all(dir.join("params.pt")).unwrap();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter()
            .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect()
    };
    let (ours, committed) = (
        read(&tmp.path().join("one")),
        read(&lens_dir("fitted-tiny-gpt2")),
    );
    assert_eq!(ours.len(), committed.len());
    for ((name, a), (_, b)) in ours.iter().zip(&committed) {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{name}: {worst}");
    }
    for shard in ["0/3", "1/3", "2/3"] {
        fit(&["--out", "sharded", "--shard", shard, "--report", "partials"]);
    }
    let o = strata()
        .current_dir(tmp.path())
        .args(["merge", "-q", "partials", "--out", "merged"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(tmp.path().join("sharded/params.pt")).unwrap(),
        std::fs::read(tmp.path().join("one/params.pt")).unwrap(),
        "three shards merged write the lens one process writes"
    );
    let o = strata()
        .args(["lens", "fit"])
        .arg(&spec)
        .args(["--out", "x", "--ridge", "-1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--ridge -1") && err.contains("at least 0"),
        "{err}"
    );
}
