//! `strata sweep` against the mock Hub: three revisions of a tiny GPT-NeoX (two distinct
//! checkpoints, the third a copy of the second under another commit), each report
//! byte-identical to `strata report --model --revision`, the series read back from them,
//! consecutive compares, resuming, and a missing revision refused before anything is
//! written.

mod common;

#[path = "common/mock_hub.rs"]
mod mock_hub;

use std::collections::BTreeMap;
use std::path::Path;

use common::{fixture, strata};
use mock_hub::{commit_of, online, MockHub, MockRepo, MockRevision};

const REPO: &str = "mock/tiny-neox";

/// The fixture's weights, every tensor times `scale`, laid out as Pythia's
/// `GPTNeoXForCausalLM` checkpoints are: under `gpt_neox.`, with an untied `embed_out`
/// (half the input embedding) for the logit lens.
fn checkpoint(scale: f32) -> Vec<u8> {
    let bytes = std::fs::read(fixture("tiny-neox-parallel/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<Stored> = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let data: Vec<u8> = view
            .data()
            .chunks_exact(4)
            .flat_map(|b| (f32::from_le_bytes(b.try_into().unwrap()) * scale).to_le_bytes())
            .collect();
        if name == "embed_in.weight" {
            let half = data
                .chunks_exact(4)
                .flat_map(|b| (f32::from_le_bytes(b.try_into().unwrap()) * 0.5).to_le_bytes())
                .collect();
            let f32 = safetensors::Dtype::F32;
            tensors.push(("embed_out.weight".into(), f32, view.shape().to_vec(), half));
        }
        let name = format!("gpt_neox.{name}");
        tensors.push((name, view.dtype(), view.shape().to_vec(), data));
    }
    serialize(&tensors)
}

/// A tensor to write: name, dtype, shape, bytes.
type Stored = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// `tensors` as a safetensors file's bytes.
fn serialize(tensors: &[Stored]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, dtype, shape, data)| {
            let v = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// The repo: `step0`, `step100` and `step200` (= `main`), the last two the same weights.
fn repo(tmp: &Path) -> MockRepo {
    let tok = tmp.join("tokenizer");
    std::fs::create_dir_all(&tok).unwrap();
    common::synth::write_gpt2_tokenizer_cut(&fixture("tiny-gpt2"), 512, &tok).unwrap();
    let revision = |names: &[&str], scale: f32| {
        let mut files = BTreeMap::new();
        files.insert(
            "config.json".to_string(),
            std::fs::read(fixture("tiny-neox-parallel/config.json")).unwrap(),
        );
        files.insert("model.safetensors".to_string(), checkpoint(scale));
        for f in ["vocab.json", "merges.txt"] {
            files.insert(f.to_string(), std::fs::read(tok.join(f)).unwrap());
        }
        MockRevision {
            names: names.iter().map(|n| n.to_string()).collect(),
            commit: commit_of(names[0]),
            files,
        }
    };
    MockRepo {
        id: REPO.into(),
        dataset: false,
        space: false,
        gated: false,
        revisions: vec![
            revision(&["step0"], 1.0),
            revision(&["step100"], 1.5),
            revision(&["step200", "main"], 1.5),
        ],
    }
}

fn spec(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("neox-sweep.yaml");
    std::fs::write(
        &path,
        format!(
            r#"name: neox-sweep
title: "A <tiny> NeoX across checkpoints"
model: {{id: {REPO}}}
texts:
  - {{id: a, text: "The quick brown fox jumps over the lazy dog."}}
  - {{id: b, text: "Hidden states drift as a model trains, step by step."}}
  - {{id: c, text: "Numbers are the product."}}
analyses:
  - kind: summary
  - kind: norms
  - kind: covariance
  - kind: anisotropy
  - kind: logit_lens
"#
        ),
    )
    .unwrap();
    path
}

fn run(cmd: &mut std::process::Command) -> std::process::Output {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn sweep_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("sweep.json")).unwrap()).unwrap()
}

#[test]
fn a_sweep_runs_every_revision_charts_the_series_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = MockHub::start(vec![repo(tmp.path())]);
    let home = tmp.path().join("hf");
    let spec = spec(tmp.path());
    let out = tmp.path().join("sweep");
    let sweep = |out: &Path| {
        let mut c = online(&hub, &home);
        c.arg("sweep")
            .arg(&spec)
            .args(["--revisions", "step0,step100,step200", "--out"])
            .arg(out);
        c
    };
    let o = run(&mut sweep(&out));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("3 revision(s) (0 kept"), "{said}");

    // Each revision's report equals `strata report --model --revision`, byte for byte.
    let single = tmp.path().join("single");
    run(online(&hub, &home)
        .arg("report")
        .arg(&spec)
        .args(["--model", REPO, "--revision", "step100", "--out"])
        .arg(&single));
    for f in ["results.json", "index.html"] {
        assert_eq!(
            std::fs::read(single.join(f)).unwrap(),
            std::fs::read(out.join("step100").join(f)).unwrap(),
            "{f}"
        );
    }

    // sweep.json records each revision's commit and follows every statistic.
    let s = sweep_json(&out);
    let revs = s["revisions"].as_array().unwrap();
    for (r, name) in revs.iter().zip(["step0", "step100", "step200"]) {
        assert_eq!(r["revision"], name);
        assert_eq!(r["commit"], commit_of(name).as_str());
        assert_eq!(r["folder"], name);
    }
    let series = s["series"].as_array().unwrap();
    let find = |kind: &str, stat: &str| {
        series
            .iter()
            .find(|x| x["kind"] == kind && x["statistic"] == stat)
            .unwrap_or_else(|| panic!("no {kind}.{stat}"))
    };
    for (kind, stat) in [
        ("summary", "kurtosis"),
        ("summary", "max_abs"),
        ("norms", "mean"),
        ("covariance", "variance"),
        ("anisotropy", "mean_cosine"),
        ("logit_lens", "kl_to_final"),
    ] {
        let x = find(kind, stat);
        assert_eq!(x["values"].as_array().unwrap().len(), 3, "{kind}.{stat}");
    }
    // As a tidy table: a row per revision, hidden state and statistic.
    let o = strata()
        .arg("table")
        .arg(out.join("sweep.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = String::from_utf8(o.stdout).unwrap();
    let cells = series
        .iter()
        .map(|x| x["labels"].as_array().unwrap().len() * 3)
        .sum::<usize>();
    assert_eq!(csv.lines().count(), 1 + cells);
    let kl = find("logit_lens", "kl_to_final");
    let want = kl["values"][2][1].as_f64().unwrap();
    let label = kl["labels"][1].as_str().unwrap();
    let row = csv
        .lines()
        .find(|l| l.contains(",step200,") && l.contains(&format!(",kl_to_final,{label},")))
        .expect("the step200 row");
    // The value by its column's name: the named index columns follow it.
    let column = csv
        .lines()
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == "value")
        .expect("a value column");
    assert_eq!(
        row.split(',').nth(column).unwrap().parse::<f64>().unwrap(),
        want
    );
    // The series are the revisions' own numbers.
    for (i, name) in ["step0", "step100", "step200"].iter().enumerate() {
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(name).join("results.json")).unwrap())
                .unwrap();
        let norms = r["analyses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "norms")
            .unwrap();
        assert_eq!(find("norms", "mean")["values"][i], norms["mean"], "{name}");
        let rows = r["analyses"][0]["rows"].as_array().unwrap();
        let kurt: Vec<&serde_json::Value> = rows.iter().map(|row| &row["kurtosis"]).collect();
        let got: Vec<&serde_json::Value> = find("summary", "kurtosis")["values"][i]
            .as_array()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(got, kurt, "{name}");
    }
    // Scaled weights move the statistics; the same weights under another commit do not.
    let steps = s["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["pass"], false);
    assert!(steps[0]["moved"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "#1 norms"));
    assert_eq!(steps[1]["pass"], true, "{}", steps[1]);

    // The page: a chart per statistic, the heatmap's choices, the steps; escaped title.
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(page.contains("A &lt;tiny&gt; NeoX across checkpoints"));
    assert!(!page.contains("A <tiny> NeoX"));
    assert!(page.contains("id=\"heatmap-choice\""));
    assert!(
        page.contains("href=\"step0&#x2f;index.html\""),
        "a link to each revision"
    );
    assert_eq!(
        page.matches("class=\"chart\"").count(),
        series.len() + 1,
        "a line chart per series and the heatmap"
    );
    common::assert_self_contained(&page);

    // Resuming: finished revisions are kept, the missing one is run, the same bytes come out.
    let first_sweep = std::fs::read(out.join("sweep.json")).unwrap();
    let first_page = std::fs::read(out.join("index.html")).unwrap();
    std::fs::remove_dir_all(out.join("step200")).unwrap();
    std::fs::remove_file(out.join("sweep.json")).unwrap();
    let o = run(&mut sweep(&out));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("(2 kept"), "{said}");
    assert_eq!(std::fs::read(out.join("sweep.json")).unwrap(), first_sweep);
    assert_eq!(std::fs::read(out.join("index.html")).unwrap(), first_page);

    // A changed spec is not kept: every revision runs again.
    let edited = std::fs::read_to_string(&spec).unwrap() + "seed: 7\n";
    std::fs::write(&spec, edited).unwrap();
    let o = run(&mut sweep(&out));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("(0 kept"), "{said}");

    // Offline, the cache resolves the revisions fetched before (and only those).
    let offline = tmp.path().join("offline");
    let mut c = common::strata();
    c.env("HF_HOME", &home)
        .arg("sweep")
        .arg(&spec)
        .args(["--revisions", "step0,step200", "--out"])
        .arg(&offline);
    run(&mut c);
    assert_eq!(
        std::fs::read(offline.join("step200/results.json")).unwrap(),
        std::fs::read(out.join("step200/results.json")).unwrap()
    );
    let s = sweep_json(&offline);
    assert_eq!(s["revisions"][1]["commit"], commit_of("step200").as_str());
    let mut c = common::strata();
    let o = c
        .env("HF_HOME", &home)
        .arg("sweep")
        .arg(&spec)
        .args(["--revisions", "step0,main", "--out"])
        .arg(tmp.path().join("never"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("revision `main`") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    assert!(!tmp.path().join("never").exists());
}

#[test]
fn a_missing_revision_is_named_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = MockHub::start(vec![repo(tmp.path())]);
    let home = tmp.path().join("hf");
    let spec = spec(tmp.path());
    let out = tmp.path().join("sweep");
    let o = online(&hub, &home)
        .arg("sweep")
        .arg(&spec)
        .args(["--revisions", "step0,step999", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("step999") && err.contains(REPO), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "nothing written");

    // Offline, a revision the cache lacks is refused the same way.
    let mut c = common::strata();
    let o = c
        .env("HF_HOME", &home)
        .arg("sweep")
        .arg(&spec)
        .args(["--revisions", "step0", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("step0") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    assert!(!out.exists());

    // Bad flags: an empty or repeated revision, a local model.
    for (revisions, says) in [("step0,,step100", "empty"), ("step0,step0", "twice")] {
        let o = online(&hub, &home)
            .arg("sweep")
            .arg(&spec)
            .args(["--revisions", revisions])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("--revisions") && err.contains(says), "{err}");
    }
    let o = online(&hub, &home)
        .arg("sweep")
        .arg(&spec)
        .args(["--revisions", "step0", "--model"])
        .arg(fixture("tiny-gpt2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("local folder") && err.contains("--model"),
        "{err}"
    );
}

const MOE_REPO: &str = "mock/tiny-olmoe";

/// The small OLMoE's weights (bf16), with every router's weights negated when `flip`: the
/// same experts, opposite preferences, as a router trained further might drift.
fn moe_checkpoint(flip: bool) -> Vec<u8> {
    let bytes = std::fs::read(fixture("tiny-moe-report/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<Stored> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let mut data = view.data().to_vec();
            if flip && name.ends_with("mlp.gate.weight") {
                assert_eq!(view.dtype(), safetensors::Dtype::BF16, "{name}");
                data.chunks_exact_mut(2).for_each(|b| b[1] ^= 0x80);
            }
            (name, view.dtype(), view.shape().to_vec(), data)
        })
        .collect();
    serialize(&tensors)
}

/// Routing across checkpoints: the router's balance statistics become series, each the
/// revisions' own numbers, and a changed router is a moved step.
#[test]
fn a_sweep_follows_expert_routing_across_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let revision = |name: &str, flip: bool| {
        let mut files = BTreeMap::new();
        for f in ["config.json", "tokenizer.json"] {
            files.insert(
                f.to_string(),
                std::fs::read(fixture(&format!("tiny-moe-report/{f}"))).unwrap(),
            );
        }
        files.insert("model.safetensors".to_string(), moe_checkpoint(flip));
        MockRevision {
            names: vec![name.to_string()],
            commit: commit_of(name),
            files,
        }
    };
    let hub = MockHub::start(vec![MockRepo {
        id: MOE_REPO.into(),
        dataset: false,
        space: false,
        gated: false,
        revisions: vec![revision("step0", false), revision("step1", true)],
    }]);
    let spec = tmp.path().join("moe-sweep.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: moe-sweep\nmodel: {{id: {MOE_REPO}}}\nlayers: all\ntexts:\n  - {{id: a, text: \"The quick brown fox jumps over the lazy dog.\"}}\n  - {{id: b, text: \"Experts choose their tokens, block by block.\"}}\nanalyses:\n  - {{kind: router, k: 3}}\n"
        ),
    )
    .unwrap();
    let out = tmp.path().join("sweep");
    run(online(&hub, &tmp.path().join("hf"))
        .arg("sweep")
        .arg(&spec)
        .args(["--revisions", "step0,step1", "--out"])
        .arg(&out));
    let s = sweep_json(&out);
    let series = s["series"].as_array().unwrap();
    for stat in [
        "load_cv",
        "load_entropy",
        "max_over_mean",
        "routing_entropy",
    ] {
        let x = series
            .iter()
            .find(|x| x["kind"] == "router" && x["statistic"] == stat)
            .unwrap_or_else(|| panic!("no router.{stat}"));
        for (i, name) in ["step0", "step1"].iter().enumerate() {
            let r: serde_json::Value = serde_json::from_slice(
                &std::fs::read(out.join(name).join("results.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(x["values"][i], r["analyses"][0][stat], "{stat} of {name}");
        }
        assert_ne!(x["values"][0], x["values"][1], "{stat} moves");
    }
    let steps = s["steps"].as_array().unwrap();
    assert_eq!(steps[0]["pass"], false);
    assert!(
        steps[0]["moved"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap().contains("router")),
        "{}",
        steps[0]
    );
}
