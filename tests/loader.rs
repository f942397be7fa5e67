//! Model sources: folder layouts, the Hub cache offline, and every bad-input path.

mod common;

use std::path::Path;

use common::*;
use strata::corpus::TextInput;
use strata::extract::extract;
use strata::hub::HfEnv;
use strata::model::{LoadedModel, ModelError, ModelRef};

fn hidden(model: &LoadedModel) -> Vec<Vec<f32>> {
    extract(
        model,
        &[TextInput {
            id: "t".into(),
            text: "The goal of a correlation".into(),
            label: None,
        }],
        1,
        &Default::default(),
    )
    .unwrap()
    .remove(0)
    .states
}

fn load_dir(dir: &Path) -> Result<LoadedModel, ModelError> {
    LoadedModel::load(&ModelRef::new(dir.to_str().unwrap()))
}

/// Rewrites the fixture's weights with `rename` applied to every tensor name, dropping
/// tensors it maps to None, and adding `extra` tensors.
fn rewrite_weights(
    dst: &Path,
    rename: impl Fn(&str) -> Option<String>,
    extra: Vec<(String, candle_core::Tensor)>,
) -> std::collections::HashMap<String, candle_core::Tensor> {
    let src = load_tensors(&fixture("tiny-gpt2/model.safetensors"));
    let mut out: std::collections::HashMap<String, candle_core::Tensor> = src
        .into_iter()
        .filter_map(|(k, v)| rename(&k).map(|k| (k, v)))
        .collect();
    out.extend(extra);
    candle_core::safetensors::save(&out, dst.join("model.safetensors")).unwrap();
    out
}

#[test]
fn prefixed_layout_with_lm_head_loads_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-gpt2"), tmp.path());
    let wte = load_tensors(&fixture("tiny-gpt2/model.safetensors"))["wte.weight"].clone();
    // The layout `save_pretrained` writes: `transformer.` prefix, and lm_head. No buffers.
    rewrite_weights(
        tmp.path(),
        |k| (!k.ends_with(".attn.bias")).then(|| format!("transformer.{k}")),
        vec![("lm_head.weight".into(), wte)],
    );
    let a = hidden(&load_dir(&fixture("tiny-gpt2")).unwrap());
    let b = hidden(&load_dir(tmp.path()).unwrap());
    assert_eq!(a, b);
}

#[test]
fn sharded_index_loads_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-gpt2"), tmp.path());
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let all = load_tensors(&fixture("tiny-gpt2/model.safetensors"));
    let mut shards: [std::collections::HashMap<String, candle_core::Tensor>; 2] =
        Default::default();
    let mut weight_map = serde_json::Map::new();
    for (k, v) in all {
        let s = if k.starts_with("h.0.") || k.starts_with("wte") {
            0
        } else {
            1
        };
        let file = format!("model-0000{}-of-00002.safetensors", s + 1);
        weight_map.insert(k.clone(), file.into());
        shards[s].insert(k, v);
    }
    for (s, shard) in shards.iter().enumerate() {
        candle_core::safetensors::save(
            shard,
            tmp.path()
                .join(format!("model-0000{}-of-00002.safetensors", s + 1)),
        )
        .unwrap();
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let model = load_dir(tmp.path()).unwrap();
    assert_eq!(model.provenance.weights_sha256.len(), 2);
    assert_eq!(
        hidden(&load_dir(&fixture("tiny-gpt2")).unwrap()),
        hidden(&model)
    );

    // A shard named by the index but absent is an error naming it.
    std::fs::remove_file(tmp.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = load_dir(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
}

const COMMIT: &str = "607a30d783dfa663caf39e06633721c8d4cfcd7e";

/// A cache laid out as huggingface_hub leaves it: blobs named by hash, snapshot links.
fn make_cache(root: &Path, repo_folder: &str) {
    let repo = root.join(repo_folder);
    let snap = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        let src = fixture("tiny-gpt2").join(name);
        let blob = strata::digest::sha256_file(&src).unwrap();
        std::fs::copy(&src, repo.join("blobs").join(&blob)).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(name)).unwrap();
    }
}

#[test]
fn hub_cache_resolves_offline_by_branch_and_by_commit() {
    let tmp = tempfile::tempdir().unwrap();
    make_cache(tmp.path(), "models--openai-community--gpt2");
    let env = HfEnv::offline_cache(tmp.path());
    for revision in ["main", COMMIT] {
        let r = ModelRef {
            revision: revision.into(),
            ..ModelRef::new("openai-community/gpt2")
        };
        let files = r.resolve_with(&env).unwrap();
        let model = LoadedModel::from_files(&files).unwrap();
        let p = &model.provenance;
        assert_eq!(p.source, "hub");
        assert_eq!(p.commit.as_deref(), Some(COMMIT));
        assert_eq!(p.revision.as_deref(), Some(revision));
        assert_eq!(p.id, "openai-community/gpt2");
        assert_eq!(
            p.weights_sha256["model.safetensors"],
            strata::digest::sha256_file(&fixture("tiny-gpt2/model.safetensors")).unwrap()
        );
        assert_eq!(
            hidden(&model),
            hidden(&load_dir(&fixture("tiny-gpt2")).unwrap())
        );
    }
    // A revision the cache has never seen.
    let r = ModelRef {
        revision: "v2".into(),
        ..ModelRef::new("openai-community/gpt2")
    };
    let err = r.resolve_with(&env).err().unwrap().to_string();
    assert!(
        err.contains("refs/v2") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
}

#[test]
fn cli_reads_hf_home_offline() {
    let tmp = tempfile::tempdir().unwrap();
    make_cache(&tmp.path().join("hub"), "models--gpt2");
    let out = tmp.path().join("acts.safetensors");
    let st = strata()
        .env("HF_HOME", tmp.path())
        .args([
            "extract",
            "--model",
            "gpt2",
            "--text",
            "Hello world",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let t = load_tensors(&out);
    assert_eq!(t["token_ids"].to_vec1::<i64>().unwrap(), vec![15496, 995]);
    assert_eq!(t["hidden_states.3"].dims(), &[2, 32]);
    // HF_HUB_CACHE wins over HF_HOME, as in huggingface_hub.
    let st = strata()
        .env("HF_HOME", tmp.path())
        .env("HF_HUB_CACHE", tmp.path().join("elsewhere"))
        .args(["extract", "--model", "gpt2", "--text", "Hello", "--out"])
        .arg(tmp.path().join("b.safetensors"))
        .output()
        .unwrap();
    assert!(!st.status.success());
    assert!(String::from_utf8_lossy(&st.stderr).contains("elsewhere"));
}

/// Runs `strata extract` expecting failure; returns stderr and checks nothing was written.
fn extract_fails(args: &[&str], env: &[(&str, &Path)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out/acts.safetensors");
    let mut cmd = strata();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd
        .arg("extract")
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "output written despite the error");
    assert!(
        !out.parent().unwrap().exists()
            || std::fs::read_dir(out.parent().unwrap())
                .unwrap()
                .next()
                .is_none()
    );
    stderr
}

#[test]
fn model_absent_offline_names_repo_cache_and_variable() {
    let tmp = tempfile::tempdir().unwrap();
    let e = extract_fails(
        &["--model", "gpt2", "--text", "hi"],
        &[("HF_HOME", tmp.path())],
    );
    assert!(e.contains("`gpt2`") && e.contains("HF_HUB_OFFLINE"), "{e}");
    assert!(
        e.contains(&tmp.path().join("hub").display().to_string()),
        "{e}"
    );
}

#[test]
fn missing_folder_and_unknown_layouts() {
    let e = extract_fails(&["--model", "./no/such/model", "--text", "hi"], &[]);
    assert!(e.contains("does not exist"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let e = extract_fails(
        &["--model", tmp.path().to_str().unwrap(), "--text", "hi"],
        &[],
    );
    assert!(e.contains("no config.json"), "{e}");
}

#[test]
fn corrupt_and_truncated_weights() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-gpt2"), tmp.path());
    let w = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() - 1000]).unwrap();
    let e = extract_fails(
        &["--model", tmp.path().to_str().unwrap(), "--text", "hi"],
        &[],
    );
    assert!(
        e.contains("truncated") && e.contains("model.safetensors"),
        "{e}"
    );
    std::fs::write(&w, b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!").unwrap();
    let e = extract_fails(
        &["--model", tmp.path().to_str().unwrap(), "--text", "hi"],
        &[],
    );
    assert!(e.contains("not valid JSON"), "{e}");
    std::fs::write(&w, b"").unwrap();
    let e = extract_fails(
        &["--model", tmp.path().to_str().unwrap(), "--text", "hi"],
        &[],
    );
    assert!(e.contains("too short"), "{e}");
}

#[test]
fn wrong_shapes_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-gpt2"), tmp.path());
    let cfg = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        cfg.replace("\"n_embd\": 32", "\"n_embd\": 64"),
    )
    .unwrap();
    let e = extract_fails(
        &["--model", tmp.path().to_str().unwrap(), "--text", "hi"],
        &[],
    );
    assert!(e.contains("wte.weight") && e.contains("shape"), "{e}");
}

/// A weight in a dtype strata does not read (here f64) is named with its dtype and a fix,
/// not converted silently or reported as a shape error.
#[test]
fn weights_in_an_unread_dtype_are_named() {
    use safetensors::tensor::{Dtype, TensorView};
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-gpt2"), tmp.path());
    let file = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let (dtype, raw) = if name.ends_with("wte.weight") {
            let wide: Vec<u8> = view
                .data()
                .chunks_exact(4)
                .flat_map(|b| (f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).to_le_bytes())
                .collect();
            (Dtype::F64, wide)
        } else {
            (view.dtype(), view.data().to_vec())
        };
        data.push((name, dtype, view.shape().to_vec(), raw));
    }
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    drop(st);
    safetensors::serialize_to_file(views, None, &file).unwrap();
    let e = extract_fails(
        &["--model", tmp.path().to_str().unwrap(), "--text", "hi"],
        &[],
    );
    assert!(
        e.contains("wte.weight") && e.contains("F64") && e.contains("F32, BF16 and F16"),
        "{e}"
    );
}

#[test]
fn config_errors_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-gpt2"), tmp.path());
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap())
            .unwrap();
    let write = |v: &serde_json::Value| {
        std::fs::write(tmp.path().join("config.json"), v.to_string()).unwrap()
    };
    let mut missing = cfg.clone();
    missing.as_object_mut().unwrap().remove("n_head");
    write(&missing);
    let e = extract_fails(
        &["--model", tmp.path().to_str().unwrap(), "--text", "hi"],
        &[],
    );
    assert!(
        e.contains("missing field `n_head`") && e.contains("config.json"),
        "{e}"
    );
    let mut bad = cfg.clone();
    bad["activation_function"] = "mish".into();
    write(&bad);
    let e = extract_fails(
        &["--model", tmp.path().to_str().unwrap(), "--text", "hi"],
        &[],
    );
    assert!(
        e.contains("activation_function") && e.contains("mish") && e.contains("gelu_new"),
        "{e}"
    );
    let mut bad = cfg;
    bad["n_head"] = 5.into();
    write(&bad);
    let e = extract_fails(
        &["--model", tmp.path().to_str().unwrap(), "--text", "hi"],
        &[],
    );
    assert!(e.contains("n_head") && e.contains("n_embd = 32"), "{e}");
}

#[test]
fn long_and_empty_texts_are_rejected_not_truncated() {
    let model = fixture("tiny-gpt2");
    let long = "word ".repeat(200);
    let e = extract_fails(&["--model", model.to_str().unwrap(), "--text", &long], &[]);
    assert!(e.contains("201 tokens") && e.contains("at most 128"), "{e}");
    let e = extract_fails(&["--model", model.to_str().unwrap(), "--text", ""], &[]);
    assert!(e.contains("empty"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("texts.txt");
    std::fs::write(&f, format!("fine\n{long}\n")).unwrap();
    let e = extract_fails(
        &[
            "--model",
            model.to_str().unwrap(),
            "--texts",
            f.to_str().unwrap(),
        ],
        &[],
    );
    assert!(e.contains("line 2") && e.contains("201 tokens"), "{e}");
    std::fs::write(&f, "fine\n\nafter blank\n").unwrap();
    let e = extract_fails(
        &[
            "--model",
            model.to_str().unwrap(),
            "--texts",
            f.to_str().unwrap(),
        ],
        &[],
    );
    assert!(e.contains("line 2 is empty"), "{e}");
}

#[test]
fn extract_texts_file_writes_prefixed_tensors_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("texts.txt");
    std::fs::write(&f, "Hello world\nThe goal of a correlation analysis\n").unwrap();
    let extract_to = |out: &Path| {
        let o = strata()
            .args([
                "extract",
                "--model",
                fixture("tiny-gpt2").to_str().unwrap(),
                "--texts",
                f.to_str().unwrap(),
                "--out",
            ])
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(out).unwrap()
    };
    let bytes = extract_to(&tmp.path().join("acts.safetensors"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert!(
        names.contains(&"text1.hidden_states.3")
            && names.contains(&"text0.token_ids")
            && names.contains(&"text1.pre_final_norm")
    );
    assert_eq!(
        st.tensor("text1.hidden_states.0").unwrap().shape(),
        &[6, 32]
    );
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let labels: Vec<String> = serde_json::from_str(&meta["strata.labels"]).unwrap();
    assert_eq!(labels, ["emb", "h.0", "h.1", "h.2"]);
    let prov: serde_json::Value = serde_json::from_str(&meta["strata.provenance"]).unwrap();
    assert_eq!(prov["source"], "local");
    assert_eq!(
        prov["weights_sha256"]["model.safetensors"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    let texts: serde_json::Value = serde_json::from_str(&meta["strata.texts"]).unwrap();
    assert_eq!(texts[1]["tokens"][1], " goal");
    // Same input, same bytes.
    assert!(
        bytes == extract_to(&tmp.path().join("again.safetensors")),
        "two runs differ"
    );
}

#[test]
fn extract_reads_a_compressed_texts_file_as_the_plain_one() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let text = "Hello world\nThe goal of a correlation analysis\n";
    let plain = tmp.path().join("texts.txt");
    std::fs::write(&plain, text).unwrap();
    let gz = tmp.path().join("texts.txt.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
    let extract = |texts: &Path, out: &Path| {
        let o = strata()
            .args(["extract", "--model"])
            .arg(fixture("tiny-gpt2"))
            .arg("--texts")
            .arg(texts)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(out).unwrap()
    };
    let a = extract(&plain, &tmp.path().join("a.safetensors"));
    let b = extract(&gz, &tmp.path().join("b.safetensors"));
    assert_eq!(a, b);
}

#[test]
fn full_size_124m_shape_loads_and_batches_consistently() {
    // A seeded random checkpoint with gpt2's exact shapes in the Hub layout (no torch
    // needed); parity at this size against transformers is `make parity-124m`.
    let tmp = tempfile::tempdir().unwrap();
    common::synth::SynthGpt2::GPT2_124M
        .write(tmp.path(), 7)
        .unwrap();
    for name in ["vocab.json", "merges.txt"] {
        std::fs::copy(fixture("tiny-gpt2").join(name), tmp.path().join(name)).unwrap();
    }
    let model = load_dir(tmp.path()).unwrap();
    assert_eq!(model.model.info().labels.len(), 13);
    let inputs = [
        TextInput {
            id: "a".into(),
            text: "The goal of a correlation analysis is to compute a coefficient.".into(),
            label: None,
        },
        TextInput {
            id: "b".into(),
            text: "Hello".into(),
            label: None,
        },
    ];
    let single = extract(&model, &inputs, 1, &Default::default()).unwrap();
    let batched = extract(&model, &inputs, 2, &Default::default()).unwrap();
    for (a, b) in single.iter().zip(&batched) {
        assert_eq!(a.states.len(), 13);
        assert_eq!(a.states[12].len(), a.token_ids.len() * 768);
        for (sa, sb) in a.states.iter().zip(&b.states) {
            let (d, ratio) = allclose(sb, sa, 1e-4, 1e-4);
            assert!(ratio <= 1.0, "{d:e}");
        }
    }
}
