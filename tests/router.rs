//! The `router` analysis and the `router_logits` site on a small OLMoE
//! (tests/fixtures/tiny-moe-report, experiments/moe-routing.yaml): its numbers against
//! transformers' `load_balancing_loss_func` and numpy (reference/tiny-moe-report.json, by
//! tests/fixtures/make_moe_fixtures.py), the same bytes from any batch size, thread count
//! and shard split, `strata extract --site router_logits`, and the errors.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(o: std::process::Output) -> std::process::Output {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// The worked example, with `extra` added at the spec's top level, written into `dir`.
fn spec(dir: &Path, extra: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("experiments/moe-routing.yaml"))
        .unwrap()
        .replace(
            "../tests/fixtures/tiny-moe-report",
            s(&root.join("tests/fixtures/tiny-moe-report")),
        );
    let path = dir.join("moe.yaml");
    std::fs::write(&path, format!("{text}{extra}")).unwrap();
    path
}

fn router(results: &Path) -> serde_json::Value {
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("results.json")).unwrap()).unwrap();
    r["analyses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "router")
        .unwrap()
        .clone()
}

fn close(what: &str, got: f64, want: f64, rtol: f64) {
    assert!(
        (got - want).abs() <= 1e-9 + rtol * want.abs(),
        "{what}: {got} against {want}"
    );
}

#[test]
fn routing_statistics_match_transformers_and_numpy() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    ok(strata()
        .args([
            "report",
            "--quiet",
            s(&spec(tmp.path(), "")),
            "--out",
            s(&out),
        ])
        .output()
        .unwrap());
    let got = router(&out);
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("reference/tiny-moe-report.json")).unwrap())
            .unwrap();
    assert_eq!(got["tokens"], want["tokens"]);
    assert_eq!(
        got["selected"], want["selected"],
        "experts chosen per block"
    );
    close(
        "load_balancing_loss",
        got["load_balancing_loss"].as_f64().unwrap(),
        want["load_balancing_loss"].as_f64().unwrap(),
        1e-6,
    );
    for (name, rtol) in [("prob_mass", 1e-6), ("weight_mass", 1e-5)] {
        for (l, (g, w)) in got[name]
            .as_array()
            .unwrap()
            .iter()
            .zip(want[name].as_array().unwrap())
            .enumerate()
        {
            for (e, (g, w)) in g
                .as_array()
                .unwrap()
                .iter()
                .zip(w.as_array().unwrap())
                .enumerate()
            {
                close(
                    &format!("{name}[{l}][{e}]"),
                    g.as_f64().unwrap(),
                    w.as_f64().unwrap(),
                    rtol,
                );
            }
        }
    }
    for (l, (g, w)) in got["routing_entropy"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["routing_entropy"].as_array().unwrap())
        .enumerate()
    {
        close(
            &format!("routing_entropy[{l}]"),
            g.as_f64().unwrap(),
            w.as_f64().unwrap(),
            1e-6,
        );
    }
    // Co-selection: the diagonal is `selected`, each row sums to selected * top_k.
    let k = got["top_k"].as_u64().unwrap();
    for (l, block) in got["co_selection"].as_array().unwrap().iter().enumerate() {
        for (e, row) in block.as_array().unwrap().iter().enumerate() {
            let row: Vec<u64> = row
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let sel = got["selected"][l][e].as_u64().unwrap();
            assert_eq!(row[e], sel);
            assert_eq!(row.iter().sum::<u64>(), sel * k, "block {l} expert {e}");
        }
    }
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("Router: where tokens go") && html.contains("Co-selection, router.0"));
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["model"]["n_experts"], 16);
    assert_eq!(
        results["model"]["sparse_blocks"],
        serde_json::json!([0, 1, 2, 3])
    );
    // compare reads it like every kind: a run against itself passes, and a changed load
    // is named.
    let r = out.join("results.json");
    ok(strata().args(["compare", s(&r), s(&r)]).output().unwrap());
    let mut changed = results.clone();
    let router = changed["analyses"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|a| a["kind"] == "router")
        .unwrap();
    router["selected"][2][5] = 40.into();
    let new = tmp.path().join("changed.json");
    std::fs::write(&new, changed.to_string()).unwrap();
    let o = strata().args(["compare", s(&r), s(&new)]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("load_share") && text.contains("router.2 expert 5"),
        "{text}"
    );
    // `strata table` names each count's block and expert in columns of their own.
    let o = ok(strata()
        .args(["table", s(&r), "--format", "jsonl"])
        .output()
        .unwrap());
    let rows: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "router" && v["metric"] == "selected")
        .collect();
    let mine = results["analyses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "router")
        .unwrap();
    let labels = mine["labels"].as_array().unwrap();
    let cells: usize = labels.len() * mine["n_experts"].as_u64().unwrap() as usize;
    assert_eq!(rows.len(), cells);
    for v in &rows {
        let (block, expert) = (v["block"].as_u64().unwrap(), v["expert"].as_u64().unwrap());
        assert_eq!(v["hidden_state"], format!("router.{block}"));
        assert_eq!(v["index"], expert.to_string());
        let at = labels.iter().position(|l| *l == v["hidden_state"]).unwrap();
        assert_eq!(
            v["value"].as_f64(),
            mine["selected"][at][expert as usize].as_f64()
        );
    }
}

#[test]
fn routing_bytes_do_not_depend_on_batch_threads_or_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let one = spec(tmp.path(), "batch_size: 1\n");
    let whole = tmp.path().join("whole");
    ok(strata()
        .args(["report", "--quiet", s(&one), "--out", s(&whole)])
        .output()
        .unwrap());
    let want = std::fs::read(whole.join("results.json")).unwrap();
    let many = tmp.path().join("many");
    std::fs::create_dir(&many).unwrap();
    let batched = spec(&many, "batch_size: 4\n");
    let out = tmp.path().join("batched");
    ok(strata()
        .env("RAYON_NUM_THREADS", "1")
        .args(["report", "--quiet", s(&batched), "--out", s(&out)])
        .output()
        .unwrap());
    let strip = |b: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(b).unwrap();
        v["provenance"]["spec_sha256"] = serde_json::Value::Null;
        v["analyses"].clone()
    };
    assert_eq!(
        strip(&std::fs::read(out.join("results.json")).unwrap()),
        strip(&want),
        "batch size 4 on one thread against one text per forward"
    );
    let parts = tmp.path().join("parts");
    for i in 0..3 {
        ok(strata()
            .args([
                "report",
                "--quiet",
                s(&one),
                "--shard",
                &format!("{i}/3"),
                "--out",
                s(&parts),
            ])
            .output()
            .unwrap());
    }
    let merged = tmp.path().join("merged");
    ok(strata()
        .args(["merge", "--quiet", "--out", s(&merged), s(&parts)])
        .output()
        .unwrap());
    assert!(
        std::fs::read(merged.join("results.json")).unwrap() == want,
        "3 shards merged differ from one process"
    );
}

#[test]
fn extract_writes_router_logits_of_every_sparse_block() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = tmp.path().join("t.txt");
    std::fs::write(&texts, "Experts choose tokens.\n").unwrap();
    let out = tmp.path().join("x.safetensors");
    ok(strata()
        .args([
            "extract",
            "--model",
            s(&fixture("tiny-moe-report")),
            "--texts",
            s(&texts),
        ])
        .args(["--site", "router_logits", "--out", s(&out)])
        .output()
        .unwrap());
    let t = load_tensors(&out);
    let names: Vec<&String> = t.keys().filter(|k| k.contains("router_logits")).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let any = t
        .iter()
        .find(|(k, _)| k.contains("router_logits.2"))
        .unwrap()
        .1;
    assert_eq!(any.dims()[1], 16, "one logit per expert");
}

/// `strata extract` of `model` on `texts` into `out`, which must exit 2 and write
/// nothing: its message.
fn refused_extract(model: &Path, texts: &Path, out: &Path) -> String {
    let o = strata()
        .args([
            "extract",
            "--model",
            s(model),
            "--texts",
            s(texts),
            "--out",
            s(out),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!out.exists(), "nothing is written");
    err
}

#[test]
fn router_errors_name_the_model_and_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    // The router on a dense model: exit 2, naming its family, nothing written.
    let dense = tmp.path().join("dense.yaml");
    std::fs::write(
        &dense,
        format!(
            "name: d\nmodel: {{id: {}}}\ntexts: [{{id: a, text: hi there}}]\nlayers: all\nanalyses:\n  - {{kind: router}}\n",
            s(&fixture("tiny-gpt2"))
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = strata()
        .args(["report", "--quiet", s(&dense), "--out", s(&out)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("gpt2 is a dense model") && err.contains("analyses[0].kind"),
        "{err}"
    );
    assert!(!out.join("results.json").exists());

    // DeepSeek-style group-limited routing in a config: refused by its field.
    let model = tmp.path().join("grouped");
    std::fs::create_dir(&model).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("tiny-moe-report").join(f), model.join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("tiny-moe-report/config.json")).unwrap())
            .unwrap();
    config["topk_group"] = 2.into();
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    let texts = tmp.path().join("t.txt");
    std::fs::write(&texts, "Experts.\n").unwrap();
    let err = refused_extract(&model, &texts, &tmp.path().join("x.safetensors"));
    assert!(
        err.contains("topk_group") && err.contains("group-limited"),
        "{err}"
    );

    // An expert's tensor missing: named.
    config["topk_group"] = serde_json::Value::Null;
    config["num_experts"] = 17.into();
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    let err = refused_extract(&model, &texts, &tmp.path().join("x.safetensors"));
    assert!(
        err.contains("layers.0.mlp.experts.16.gate_proj.weight"),
        "{err}"
    );
}
