//! Bad input for the non-GPT-2 families: unsupported architectures, GGUF tensor types and
//! tokenizers, and options that do not apply. Each is a clear error (exit 2) that names what
//! is supported, and nothing is written.

mod common;

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::{copy_dir, fixture, strata};

fn extract_err(model: &Path, extra: &[&str]) -> String {
    let out = model.parent().unwrap().join("out.safetensors");
    let o = strata()
        .args(["extract", "--text", "hello there", "--model"])
        .arg(model)
        .args(extra)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "nothing is written");
    err
}

/// A one-block Llama GGUF with F32 weights; `meta` entries are added to (or override) the
/// architecture's metadata.
fn write_gguf(path: &Path, arch: &str, extra: Vec<(&str, Value)>) {
    let mut meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String(arch.into())),
        ("llama.block_count", Value::U32(1)),
        ("llama.embedding_length", Value::U32(8)),
        ("llama.feed_forward_length", Value::U32(16)),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.attention.head_count_kv", Value::U32(1)),
        ("llama.context_length", Value::U32(16)),
        ("llama.vocab_size", Value::U32(4)),
    ];
    meta.extend(extra);
    // candle's (out, in) shapes; the file stores them reversed, as llama.cpp does.
    let shapes: Vec<(&str, Vec<usize>)> = vec![
        ("token_embd.weight", vec![4, 8]),
        ("blk.0.attn_norm.weight", vec![8]),
        ("blk.0.attn_q.weight", vec![8, 8]),
        ("blk.0.attn_k.weight", vec![4, 8]),
        ("blk.0.attn_v.weight", vec![4, 8]),
        ("blk.0.attn_output.weight", vec![8, 8]),
        ("blk.0.ffn_norm.weight", vec![8]),
        ("blk.0.ffn_gate.weight", vec![16, 8]),
        ("blk.0.ffn_up.weight", vec![16, 8]),
        ("blk.0.ffn_down.weight", vec![8, 16]),
        ("output_norm.weight", vec![8]),
    ];
    let tensors: Vec<(&str, QTensor)> = shapes
        .into_iter()
        .map(|(n, s)| {
            let t = Tensor::ones(s, candle_core::DType::F32, &Device::Cpu).unwrap();
            (n, QTensor::quantize(&t, GgmlDType::F32).unwrap())
        })
        .collect();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
}

#[test]
fn unsupported_config_architecture_names_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(&fixture("tiny-gpt2"), &dir);
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "t5", "d_model": 8}"#,
    )
    .unwrap();
    let err = extract_err(&dir, &[]);
    assert!(err.contains("`t5`"), "{err}");
    for t in ["gpt2", "llama", "mistral", "qwen2", "bert"] {
        assert!(err.contains(t), "names {t}: {err}");
    }
}

#[test]
fn a_config_missing_a_field_names_the_field_and_its_own_family() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(&fixture("tiny-gpt2"), &dir);
    // A BERT config without hidden_size.
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "bert", "vocab_size": 50257, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}"#,
    )
    .unwrap();
    let err = extract_err(&dir, &[]);
    assert!(err.contains("hidden_size") && err.contains("BERT"), "{err}");
    assert!(
        !err.contains("GPT-2"),
        "a BERT config is not told about GPT-2: {err}"
    );

    // A Llama config with a size given as a string.
    let llama = llama_with_gpt2_tokenizer(&tmp.path().join("l"));
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(llama.join("config.json")).unwrap()).unwrap();
    cfg["hidden_size"] = serde_json::json!("48");
    std::fs::write(llama.join("config.json"), cfg.to_string()).unwrap();
    let err = extract_err(&llama, &[]);
    assert!(
        err.contains("Llama-family") && err.contains("integers"),
        "{err}"
    );
    assert!(!err.contains("GPT-2"), "{err}");
}

/// The synthetic Llama (512 embedding rows) in a folder with GPT-2's tokenizer files.
fn llama_with_gpt2_tokenizer(root: &Path) -> std::path::PathBuf {
    let dir = root.join("m");
    copy_dir(&fixture("tiny-llama-gqa"), &dir);
    for name in ["vocab.json", "merges.txt"] {
        std::fs::copy(fixture("tiny-gpt2").join(name), dir.join(name)).unwrap();
    }
    dir
}

#[test]
fn unsupported_rope_type_and_quantized_without_gguf_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_with_gpt2_tokenizer(tmp.path());
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    cfg["rope_parameters"] =
        serde_json::json!({"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let err = extract_err(&dir, &[]);
    assert!(
        err.contains("yarn") && err.contains("default, linear, llama3"),
        "{err}"
    );

    let err = extract_err(&fixture("tiny-gpt2"), &["--quantized"]);
    assert!(err.contains("GGUF"), "{err}");
}

/// `fixture` in a folder with GPT-2's tokenizer files, its config.json edited by `edit`.
fn edited(
    root: &Path,
    fixture_name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let dir = root.join(fixture_name);
    copy_dir(&fixture(fixture_name), &dir);
    for name in ["vocab.json", "merges.txt"] {
        std::fs::copy(fixture("tiny-gpt2").join(name), dir.join(name)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

#[test]
fn unsupported_options_of_the_newer_families_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let chunked = edited(tmp.path(), "tiny-qwen3", |c| {
        c["layer_types"] =
            serde_json::json!(["full_attention", "chunked_attention", "sliding_attention"]);
    });
    let err = extract_err(&chunked, &[]);
    assert!(
        err.contains("layer_types")
            && err.contains("chunked_attention")
            && err.contains("sliding_attention"),
        "{err}"
    );
    for family in ["tiny-mistral-window", "tiny-gemma2"] {
        let zero = edited(tmp.path(), family, |c| c["sliding_window"] = 0.into());
        let err = extract_err(&zero, &[]);
        assert!(
            err.contains("sliding_window") && err.contains("null"),
            "{family}: {err}"
        );
    }
    let yarn = edited(tmp.path(), "tiny-neox-parallel", |c| {
        c["rope_parameters"]["rope_type"] = "yarn".into();
    });
    let err = extract_err(&yarn, &[]);
    assert!(
        err.contains("yarn") && err.contains("default, linear, llama3"),
        "{err}"
    );
    let pct = edited(tmp.path(), "tiny-neox-sequential", |c| {
        c["rope_parameters"]["partial_rotary_factor"] = 1.5.into();
    });
    let err = extract_err(&pct, &[]);
    assert!(err.contains("rotary") && err.contains("1.5"), "{err}");
    let encoder = edited(tmp.path(), "tiny-gemma3", |c| {
        c["use_bidirectional_attention"] = true.into();
    });
    let err = extract_err(&encoder, &[]);
    assert!(
        err.contains("use_bidirectional_attention") && err.contains("causal"),
        "{err}"
    );
    let longrope = edited(tmp.path(), "tiny-phi3", |c| {
        c["rope_parameters"]["rope_type"] = "longrope".into();
    });
    let err = extract_err(&longrope, &[]);
    assert!(
        err.contains("longrope") && err.contains("default, linear, llama3"),
        "{err}"
    );
    let act = edited(tmp.path(), "tiny-gemma2", |c| {
        c["hidden_activation"] = "mish".into()
    });
    let err = extract_err(&act, &[]);
    assert!(
        err.contains("hidden_activation")
            && err.contains("mish")
            && err.contains("gelu_pytorch_tanh"),
        "{err}"
    );
}

#[test]
fn gguf_errors_name_what_is_supported() {
    let tmp = tempfile::tempdir().unwrap();

    let other = tmp.path().join("falcon.gguf");
    write_gguf(&other, "falcon", vec![]);
    let err = extract_err(&other, &[]);
    assert!(err.contains("falcon") && err.contains("llama"), "{err}");

    // A llama GGUF with no tokenizer metadata: the model loads, the tokenizer cannot.
    let bare = tmp.path().join("bare.gguf");
    write_gguf(&bare, "llama", vec![]);
    let err = extract_err(&bare, &[]);
    assert!(err.contains("no tokenizer metadata"), "{err}");

    // A tokenizer model llama.cpp writes that strata does not build: say which it builds.
    let wpm = tmp.path().join("wpm.gguf");
    write_gguf(
        &wpm,
        "llama",
        vec![("tokenizer.ggml.model", Value::String("bert".into()))],
    );
    let err = extract_err(&wpm, &[]);
    assert!(
        err.contains("`bert`") && err.contains("gpt2") && err.contains("SentencePiece"),
        "{err}"
    );

    // A tensor type strata does not read (IQ2_XXS = 16), written by hand: GGUF v3 header,
    // no metadata, one 256-element tensor.
    let iq = tmp.path().join("iq.gguf");
    let mut b = Vec::new();
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(0u64.to_le_bytes()); // metadata entries
    let name = b"token_embd.weight";
    b.extend((name.len() as u64).to_le_bytes());
    b.extend(name);
    b.extend(1u32.to_le_bytes()); // dims
    b.extend(256u64.to_le_bytes());
    b.extend(16u32.to_le_bytes()); // IQ2_XXS
    b.extend(0u64.to_le_bytes()); // offset
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(vec![0u8; 66]);
    std::fs::write(&iq, b).unwrap();
    let err = extract_err(&iq, &[]);
    assert!(
        err.contains("`token_embd.weight`") && err.contains("IQ2_XXS"),
        "names the tensor and its type: {err}"
    );
    assert!(
        err.contains("Q4_1") && err.contains("Q6_K"),
        "names the readable types: {err}"
    );

    // Metadata that does not fit the tensors: the tensor, both shapes, the architecture.
    let wide = tmp.path().join("wide.gguf");
    write_gguf(
        &wide,
        "llama",
        vec![("llama.embedding_length", Value::U32(16))],
    );
    let err = extract_err(&wide, &[]);
    assert!(
        err.contains("`token_embd.weight`")
            && err.contains("[4, 8]")
            && err.contains("16")
            && err.contains("`llama`"),
        "{err}"
    );
}

/// A copy of fixture GGUF `name` with `edit` applied to its bytes.
fn edited_gguf(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> std::path::PathBuf {
    let mut bytes = std::fs::read(fixture(&format!("gguf/{name}.gguf"))).unwrap();
    edit(&mut bytes);
    let path = dir.join(format!("{name}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Where tensor `name`'s description starts in a GGUF header (its name's bytes).
fn find(bytes: &[u8], name: &str) -> usize {
    bytes
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .unwrap_or_else(|| panic!("{name} in the header"))
}

/// A mixture of experts whose routing strata does not implement is refused by the key
/// that asks for it; a missing or misshapen expert tensor is named with both shapes.
#[test]
fn gguf_mixtures_of_experts_refuse_what_they_cannot_route() {
    let tmp = tempfile::tempdir().unwrap();
    let moe = |extra: (&'static str, Value)| {
        vec![
            ("llama.expert_count", Value::U32(4)),
            ("llama.expert_used_count", Value::U32(2)),
            extra,
        ]
    };
    for (key, value, says) in [
        ("llama.expert_gating_func", Value::U32(2), "1 is softmax"),
        ("llama.expert_group_count", Value::U32(4), "group-limited"),
        ("llama.expert_weights_scale", Value::F32(2.5), "scaled"),
        (
            "llama.expert_used_count",
            Value::U32(5),
            "more than the 4 experts",
        ),
    ] {
        let path = tmp.path().join("moe.gguf");
        write_gguf(&path, "llama", moe((key, value)));
        let err = extract_err(&path, &[]);
        assert!(
            err.contains(&format!("`{key}`")) && err.contains(says),
            "{err}"
        );
    }

    // An expert tensor missing: renamed in the header (same length).
    let path = edited_gguf(tmp.path(), "olmoe-f32", |b| {
        let at = find(b, "blk.1.ffn_down_exps.weight");
        b[at + 6..at + 15].copy_from_slice(b"ffn_XXXXX");
    });
    let err = extract_err(&path, &[]);
    assert!(
        err.contains("`blk.1.ffn_down_exps.weight` is missing") && err.contains("`olmoe`"),
        "{err}"
    );
    // The stacked experts of the wrong count: the leading dimension (stored last) is 7.
    let path = edited_gguf(tmp.path(), "olmoe-f32", |b| {
        let at = find(b, "blk.0.ffn_up_exps.weight") + "blk.0.ffn_up_exps.weight".len();
        let last = at + 4 + 8 * 2;
        b[last..last + 8].copy_from_slice(&7u64.to_le_bytes());
    });
    let err = extract_err(&path, &[]);
    assert!(
        err.contains("`blk.0.ffn_up_exps.weight` has shape [7, 32, 64]")
            && err.contains("[8, 32, 64]")
            && err.contains("`olmoe`"),
        "{err}"
    );
}

#[test]
fn damaged_gguf_files_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    // A tensor missing: renamed in the header (same length).
    let path = edited_gguf(tmp.path(), "gpt2-f32", |b| {
        let at = find(b, "blk.1.ffn_up.weight");
        b[at + 6..at + 12].copy_from_slice(b"ffn_XX");
    });
    let err = extract_err(&path, &[]);
    assert!(
        err.contains("`blk.1.ffn_up.weight` is missing") && err.contains("`gpt2`"),
        "{err}"
    );

    // A metadata key missing: renamed (same length).
    let path = edited_gguf(tmp.path(), "gemma2-f32", |b| {
        let at = find(b, "gemma2.block_count");
        b[at + 7..at + 12].copy_from_slice(b"XXXXX");
    });
    let err = extract_err(&path, &[]);
    assert!(err.contains("`gemma2.block_count`"), "{err}");

    // A tensor of a type strata does not read (TQ1_0 = 34), in a real file's header: its
    // name's length, the name, the number of dims, the dims, then the type.
    let path = edited_gguf(tmp.path(), "llama-Q4_K_M", |b| {
        let at = find(b, "blk.0.attn_q.weight") + "blk.0.attn_q.weight".len();
        let dims = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let ty = at + 4 + 8 * dims;
        b[ty..ty + 4].copy_from_slice(&34u32.to_le_bytes());
    });
    let err = extract_err(&path, &[]);
    assert!(
        err.contains("`blk.0.attn_q.weight`") && err.contains("TQ1_0"),
        "{err}"
    );

    // Truncated: the header is whole, the tensors are not.
    let path = edited_gguf(tmp.path(), "qwen2-bf16", |b| b.truncate(b.len() * 2 / 3));
    let err = extract_err(&path, &[]);
    assert!(err.contains("truncated"), "{err}");
    // Cut inside the header.
    let path = edited_gguf(tmp.path(), "phi3-f32", |b| b.truncate(4096));
    let err = extract_err(&path, &[]);
    assert!(err.contains("not a complete GGUF file"), "{err}");
}

#[test]
fn a_gguf_path_that_does_not_exist_is_a_path_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = extract_err(&tmp.path().join("missing.gguf"), &[]);
    assert!(err.contains("missing.gguf"), "{err}");
}

#[test]
fn a_tokenizer_that_does_not_fit_the_model_is_an_error_not_a_panic() {
    // GPT-2's tokenizer (50257 ids) beside a model with 512 embedding rows.
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_with_gpt2_tokenizer(tmp.path());
    let err = extract_err(&dir, &[]);
    assert!(
        err.contains("outside the model's vocabulary of 512"),
        "{err}"
    );
}
