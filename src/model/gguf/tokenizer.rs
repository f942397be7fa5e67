//! The tokenizer of a GGUF file, built from its metadata (`tokenizer.ggml.*`) as
//! transformers builds it: a `tokenizer.json` for the `tokenizers` crate.

use std::collections::HashSet;
use std::path::Path;

use serde_json::{json, Value};

use super::file::Gguf;
use crate::model::error::ModelError;

/// The pre-tokenizer split transformers uses for a `tokenizer.ggml.pre` value, when it
/// is not GPT-2's own.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// `tokenizer.ggml.pre` values that select [`LLAMA3_SPLIT`] in transformers.
const LLAMA3_PRES: &[&str] = &[
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "dbrx",
    "smaug-bpe",
];
/// Values transformers maps to splits strata does not implement: refused rather than
/// tokenized differently.
const OTHER_SPLIT_PRES: &[&str] = &[
    "tekken",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "megrez",
    "qwen35",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "minimax-m2",
];

/// GPT-2's byte-to-character table (`bytes_to_unicode`).
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in printable.iter().zip(chars) {
        table[*b as usize] = char::from_u32(c).unwrap_or('\0');
    }
    table
}

/// Builds the `tokenizer.json` transformers builds from the file's metadata (byte-level
/// BPE, `tokenizer.ggml.model = gpt2`): the vocabulary, the merges, control tokens as
/// special tokens, user-defined ones as added tokens, the pre-tokenizer
/// `tokenizer.ggml.pre` selects, and BOS when `tokenizer.ggml.add_bos_token` says so.
pub fn tokenizer_json(path: &Path) -> Result<String, ModelError> {
    let g = Gguf::open(path)?;
    let tok_err = |detail: String| ModelError::Tokenizer {
        path: path.to_path_buf(),
        detail,
    };
    let model = g.string("tokenizer.ggml.model").ok_or_else(|| {
        tok_err("the GGUF file has no tokenizer metadata (`tokenizer.ggml.model`); strata builds the tokenizer from it, as transformers does: use a GGUF that carries its tokenizer".into())
    })?;
    if model != "gpt2" {
        return Err(tok_err(format!(
            "tokenizer.ggml.model = `{model}` is not supported; supported: gpt2 (byte-level BPE)"
        )));
    }
    let strings = |key: &str| -> Result<Vec<String>, ModelError> {
        let v = g
            .meta(key)
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| tok_err(format!("metadata `{key}` is missing")))?;
        v.iter()
            .map(|x| x.to_string().cloned())
            .collect::<Result<_, _>>()
            .map_err(|e| tok_err(format!("metadata `{key}`: {e}")))
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let pre = g.string("tokenizer.ggml.pre").unwrap_or_default();
    if OTHER_SPLIT_PRES.contains(&pre.as_str()) {
        return Err(tok_err(format!(
            "tokenizer.ggml.pre = `{pre}` selects a pre-tokenizer strata does not implement; supported: GPT-2's default and {}",
            LLAMA3_PRES.join(", ")
        )));
    }
    let json = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added_tokens(&tokens, &token_types(&g)), "normalizer": null,
        "pre_tokenizer": pre_tokenizer(&pre), "post_processor": post_processor(&g, &tokens),
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false,
            "vocab": vocabulary(&tokens), "merges": merge_pairs(&merges)}
    });
    Ok(json.to_string())
}

/// `tokenizer.ggml.token_type`, one per token (1, normal, where a value is unreadable).
fn token_types(g: &Gguf) -> Vec<i64> {
    g.meta("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|v| {
            v.iter()
                .map(|x| x.to_i32().map(i64::from).unwrap_or(1))
                .collect()
        })
        .unwrap_or_default()
}

/// Every token id by its spelling in GPT-2's byte alphabet: llama.cpp stores some tokens
/// as raw text, which is respelled byte by byte.
fn vocabulary(tokens: &[String]) -> serde_json::Map<String, Value> {
    let table = byte_chars();
    let alphabet: HashSet<char> = table.iter().copied().collect();
    let respell = |t: &str| -> String {
        if t.chars().all(|c| alphabet.contains(&c)) {
            t.to_string()
        } else {
            t.bytes().map(|b| table[b as usize]).collect()
        }
    };
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (respell(t), json!(i)))
        .collect()
}

/// `"a b"` merges as `["a", "b"]` pairs.
fn merge_pairs(merges: &[String]) -> Vec<Value> {
    merges
        .iter()
        .filter_map(|m| m.split_once(' '))
        .map(|(a, b)| json!([a, b]))
        .collect()
}

/// Control tokens as special tokens, user-defined ones as added (not special) tokens.
fn added_tokens(tokens: &[String], types: &[i64]) -> Vec<Value> {
    let alphabet: HashSet<char> = byte_chars().into_iter().collect();
    let mut added = Vec::new();
    for (i, (t, &ty)) in tokens.iter().zip(types).enumerate() {
        // 3 = control (special), 4 = user-defined (added, not special). A control token
        // outside the byte alphabet is a llama.cpp mislabel transformers skips too.
        let special = match ty {
            3 if t.chars().all(|c| alphabet.contains(&c)) => true,
            4 => false,
            _ => continue,
        };
        added.push(json!({
            "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": special
        }));
    }
    added
}

/// GPT-2's byte-level split, or Llama 3's regex before it for the `pre` values that name it.
fn pre_tokenizer(pre: &str) -> Value {
    let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    if LLAMA3_PRES.contains(&pre) {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
            byte_level(false)
        ]})
    } else {
        byte_level(true)
    }
}

/// BOS before every text when `tokenizer.ggml.add_bos_token` says so, else nothing added.
fn post_processor(g: &Gguf, tokens: &[String]) -> Value {
    let add_bos = g
        .meta("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    match (add_bos, g.usize("tokenizer.ggml.bos_token_id").ok()) {
        (true, Some(bos)) => {
            let bos_tok = tokens.get(bos).cloned().unwrap_or_default();
            json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos_tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos_tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos_tok.clone(): {"id": bos_tok, "ids": [bos], "tokens": [bos_tok]}}})
        }
        _ => {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true})
        }
    }
}
