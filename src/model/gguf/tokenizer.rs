//! The tokenizer of a GGUF file, built from its metadata (`tokenizer.ggml.*`) as
//! transformers builds it: a `tokenizer.json` for the `tokenizers` crate.

use std::collections::HashSet;
use std::path::Path;

use serde_json::{json, Value};

use super::file::Gguf;
use crate::model::error::ModelError;

/// Llama 3's pre-tokenizer split.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 3.5's: marks join letters.
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Mistral's Tekken.
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-4o's (and Llama 4's).
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split transformers puts before GPT-2's byte-level step for a
/// `tokenizer.ggml.pre` value (`GGUF_PRE_TOKENIZER_SPLITS`); any other value keeps
/// GPT-2's own.
fn split_for(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

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

/// Builds the tokenizer transformers builds from the file's metadata
/// (`tokenizer.ggml.model`): byte-level BPE (`gpt2`) or SentencePiece BPE (`llama`).
pub fn tokenizer(path: &Path) -> Result<tokenizers::Tokenizer, ModelError> {
    let mut g = Gguf::open(path)?;
    let model = g.string("tokenizer.ggml.model").ok_or_else(|| {
        tok_err(&g, "the GGUF file has no tokenizer metadata (`tokenizer.ggml.model`); strata builds the tokenizer from it, as transformers does: use a GGUF that carries its tokenizer".into())
    })?;
    match model.as_str() {
        "gpt2" => byte_level(&mut g),
        "llama" => sentencepiece(&mut g),
        other => Err(tok_err(&g, format!(
            "tokenizer.ggml.model = `{other}` is not supported; supported: gpt2 (byte-level BPE), llama (SentencePiece BPE)"
        ))),
    }
}

/// A GGUF tokenizer's parts before assembly: tokenizer.json's small fields as JSON,
/// and the BPE model's options, vocabulary and merges as plain data.
struct Parts {
    /// `added_tokens`, `normalizer`, `pre_tokenizer`, `post_processor`, `decoder`.
    rest: Value,
    /// `unk_token`, if any.
    unk: Option<&'static str>,
    /// SentencePiece's `fuse_unk` and `byte_fallback` (both off for byte-level BPE).
    sentencepiece: bool,
    /// Tokens in id order, as the model spells them (moved into the model, not copied).
    vocab: Vec<String>,
    merges: Vec<(String, String)>,
}

impl Parts {
    /// The tokenizer, assembled as `tokenizers` assembles a tokenizer.json (the model,
    /// the pipeline, then the added tokens through `add_tokens`), but with the BPE model
    /// built from the data. Parsed from tokenizer.json, the model went through serde's
    /// buffering of tagged enums: 130 MB resident for a 262,144-piece vocabulary (Gemma
    /// 3's), against about 20 MB built here.
    fn assemble(self) -> Result<tokenizers::Tokenizer, String> {
        use tokenizers::models::bpe::{Vocab, BPE};
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let vocab: Vocab = (0u32..).zip(self.vocab).map(|(i, t)| (t, i)).collect();
        let mut bpe = BPE::builder()
            .vocab_and_merges(vocab, self.merges)
            .fuse_unk(self.sentencepiece)
            .byte_fallback(self.sentencepiece)
            .ignore_merges(false);
        if let Some(unk) = self.unk {
            bpe = bpe.unk_token(unk.to_string());
        }
        let mut tok = tokenizers::Tokenizer::new(bpe.build().map_err(|x| e(&x))?);
        let mut rest = self.rest;
        tok.with_normalizer(part::<tokenizers::NormalizerWrapper>(
            &mut rest,
            "normalizer",
        )?)
        .map_err(|x| e(&x))?;
        tok.with_pre_tokenizer(part::<tokenizers::PreTokenizerWrapper>(
            &mut rest,
            "pre_tokenizer",
        )?);
        tok.with_post_processor(part::<tokenizers::PostProcessorWrapper>(
            &mut rest,
            "post_processor",
        )?);
        tok.with_decoder(part::<tokenizers::DecoderWrapper>(&mut rest, "decoder")?);
        let added: Vec<tokenizers::AddedToken> =
            part(&mut rest, "added_tokens")?.unwrap_or_default();
        tok.add_tokens(added).map_err(|x| e(&x))?;
        Ok(tok)
    }
}

/// Field `key` of tokenizer.json's `rest`, taken out and read as `T` (`None` when null).
fn part<T: serde::de::DeserializeOwned>(rest: &mut Value, key: &str) -> Result<Option<T>, String> {
    serde_json::from_value(rest[key].take()).map_err(|e| format!("`{key}`: {e}"))
}

fn tok_err(g: &Gguf, detail: String) -> ModelError {
    ModelError::Tokenizer {
        path: g.path.clone(),
        detail,
    }
}

/// A metadata array of strings, taken out of the file's metadata (moved, not copied: a
/// vocabulary's strings are most of a tokenizer's memory).
fn strings(g: &mut Gguf, key: &str) -> Result<Vec<String>, ModelError> {
    use candle_core::quantized::gguf_file::Value as Meta;
    let bad = |g: &Gguf, what: &str| tok_err(g, format!("metadata `{key}` {what}"));
    match g.content.metadata.remove(key) {
        Some(Meta::Array(values)) => values
            .into_iter()
            .map(|v| match v {
                Meta::String(s) => Ok(s),
                _ => Err(()),
            })
            .collect::<Result<_, _>>()
            .map_err(|()| bad(g, "holds a value that is not a string")),
        Some(_) => Err(bad(g, "is not an array of strings")),
        None => Err(bad(g, "is missing")),
    }
}

/// Byte-level BPE: the vocabulary, the merges, control tokens as special tokens,
/// user-defined ones as added tokens, the split `tokenizer.ggml.pre` selects, and BOS
/// when `tokenizer.ggml.add_bos_token` says so.
fn byte_level(g: &mut Gguf) -> Result<tokenizers::Tokenizer, ModelError> {
    let tokens = strings(g, "tokenizer.ggml.tokens")?;
    let merges = strings(g, "tokenizer.ggml.merges")?;
    let pre = g.string("tokenizer.ggml.pre").unwrap_or_default();
    let added = added_tokens(&tokens, &token_types(g), Some(&byte_chars()));
    let rest = json!({
        "added_tokens": added, "normalizer": null,
        "pre_tokenizer": pre_tokenizer(&pre), "post_processor": byte_level_post(g, &tokens),
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
    });
    Parts {
        rest,
        unk: None,
        sentencepiece: false,
        vocab: respelled(tokens),
        merges: merge_pairs(&merges),
    }
    .assemble()
    .map_err(|e| tok_err(g, e))
}

/// SentencePiece BPE with byte fallback, as transformers builds it per architecture:
/// Llama's Metaspace, Phi-3's prefix from a normalizer, Gemma's spaces as `▁` with no
/// prefix (and its multi-space tokens respelled, its merges ordered by position in the
/// file). Merges come from the file, or are recovered from the vocabulary and scores
/// (transformers' `generate_merges`).
fn sentencepiece(g: &mut Gguf) -> Result<tokenizers::Tokenizer, ModelError> {
    let arch = g.string("general.architecture").unwrap_or_default();
    let gemma = matches!(arch.as_str(), "gemma" | "gemma2" | "gemma3");
    let mut tokens = strings(g, "tokenizer.ggml.tokens")?;
    let scores: Vec<f64> = if gemma {
        for t in tokens.iter_mut() {
            if t.contains(' ') && t.trim().is_empty() {
                *t = "\u{2581}".repeat(t.chars().count());
            }
        }
        (0..tokens.len()).map(|i| -(i as f64)).collect()
    } else {
        numbers(g, "tokenizer.ggml.scores", tokens.len())?
    };
    let merges = match g.meta("tokenizer.ggml.merges") {
        Some(_) => merge_pairs(&strings(g, "tokenizer.ggml.merges")?),
        None => generate_merges(&tokens, &scores),
    };
    let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let (normalizer, pre) = match arch.as_str() {
        _ if gemma => (
            replace,
            json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}),
        ),
        "phi3" => (
            json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, replace]}),
            Value::Null,
        ),
        _ => (
            Value::Null,
            json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false}),
        ),
    };
    let rest = json!({
        "added_tokens": added_tokens(&tokens, &token_types(g), None),
        "normalizer": normalizer, "pre_tokenizer": pre,
        "post_processor": template(g, &tokens, true),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
    });
    Parts {
        rest,
        unk: gemma.then_some("<unk>"),
        sentencepiece: true,
        vocab: tokens,
        merges,
    }
    .assemble()
    .map_err(|e| tok_err(g, e))
}

/// A metadata array of `n` numbers (token scores).
fn numbers(g: &Gguf, key: &str, n: usize) -> Result<Vec<f64>, ModelError> {
    let v = g.meta(key).and_then(|v| v.to_vec().ok()).ok_or_else(|| {
        tok_err(
            g,
            format!(
                "metadata `{key}` is missing; a SentencePiece vocabulary carries a score per token"
            ),
        )
    })?;
    let out: Vec<f64> = v
        .iter()
        .map(|x| x.to_f32().map(f64::from).unwrap_or(0.0))
        .collect();
    if out.len() != n {
        return Err(tok_err(
            g,
            format!(
                "metadata `{key}` has {} scores for {n} tokens: the file is damaged",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// transformers' `generate_merges`: every split of every token into two tokens of the
/// vocabulary, a token's splits by the ids of their parts, then all by the token's score
/// (best first), the longer left part first, then the longer right part; equal keys keep
/// their order.
fn generate_merges(tokens: &[String], scores: &[f64]) -> Vec<(String, String)> {
    let mut ids: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        ids.insert(t, i);
    }
    // Python's dict keeps a repeated token at its first place with its last score.
    let mut order: Vec<(&str, f64)> = Vec::new();
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (t, &s) in tokens.iter().zip(scores) {
        match seen.get(t.as_str()) {
            Some(&k) => order[k].1 = s,
            None => {
                seen.insert(t, order.len());
                order.push((t, s));
            }
        }
    }
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for (token, score) in order {
        let mut local: Vec<(&str, &str, f64)> = token
            .char_indices()
            .skip(1)
            .map(|(at, _)| token.split_at(at))
            .filter(|(l, r)| ids.contains_key(l) && ids.contains_key(r))
            .map(|(l, r)| (l, r, score))
            .collect();
        local.sort_by_key(|(l, r, _)| (ids[l], ids[r]));
        merges.extend(local);
    }
    let key = |m: &(&str, &str, f64)| (m.2, m.0.chars().count(), m.1.chars().count());
    merges.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0)
            .then(kb.1.cmp(&ka.1))
            .then(kb.2.cmp(&ka.2))
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
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

/// Every token spelled in GPT-2's byte alphabet: llama.cpp stores some tokens as raw text,
/// which is respelled byte by byte.
fn respelled(tokens: Vec<String>) -> Vec<String> {
    let table = byte_chars();
    let alphabet: HashSet<char> = table.iter().copied().collect();
    tokens
        .into_iter()
        .map(|t| match t.chars().all(|c| alphabet.contains(&c)) {
            true => t,
            false => t.bytes().map(|b| table[b as usize]).collect(),
        })
        .collect()
}

/// `"a b"` merges as `("a", "b")` pairs.
fn merge_pairs(merges: &[String]) -> Vec<(String, String)> {
    merges
        .iter()
        .filter_map(|m| m.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Control tokens as special tokens, user-defined ones as added (not special) tokens.
/// In a byte-level vocabulary (`alphabet` given) a control token outside the byte
/// alphabet is a llama.cpp mislabel transformers skips too.
fn added_tokens(tokens: &[String], types: &[i64], alphabet: Option<&[char]>) -> Vec<Value> {
    let alphabet: Option<HashSet<char>> = alphabet.map(|a| a.iter().copied().collect());
    let spelled = |t: &str| {
        alphabet
            .as_ref()
            .is_none_or(|a| t.chars().all(|c| a.contains(&c)))
    };
    let mut added = Vec::new();
    for (i, (t, &ty)) in tokens.iter().zip(types).enumerate() {
        // 3 = control (special), 4 = user-defined (added, not special).
        let special = match ty {
            3 if spelled(t) => true,
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

/// GPT-2's byte-level split, or the split `pre` names before a byte-level step.
fn pre_tokenizer(pre: &str) -> Value {
    let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    match split_for(pre) {
        Some(split) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated", "invert": false},
            byte_level(false)
        ]}),
        None => byte_level(true),
    }
}

/// A flag of the file's tokenizer (`tokenizer.ggml.add_bos_token`), or `default`.
fn flag(g: &Gguf, key: &str, default: bool) -> bool {
    g.meta(key)
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(default)
}

/// BOS before every text when `tokenizer.ggml.add_bos_token` says so, else GPT-2's
/// byte-level post-processing (nothing added).
fn byte_level_post(g: &Gguf, tokens: &[String]) -> Value {
    if flag(g, "tokenizer.ggml.add_bos_token", false)
        && g.usize("tokenizer.ggml.bos_token_id").is_ok()
    {
        return template(g, tokens, false);
    }
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true})
}

/// BOS before and EOS after the text as `tokenizer.ggml.add_bos_token` and
/// `add_eos_token` say (BOS by default for a SentencePiece vocabulary, as llama.cpp and
/// transformers both assume when the flag is absent).
fn template(g: &Gguf, tokens: &[String], bos_default: bool) -> Value {
    let special = |flag_key: &str, id_key: &str, default: bool| {
        let id = g.usize(id_key).ok().filter(|&i| i < tokens.len())?;
        flag(g, flag_key, default).then(|| (tokens[id].clone(), id))
    };
    let bos = special(
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.bos_token_id",
        bos_default,
    );
    let eos = special(
        "tokenizer.ggml.add_eos_token",
        "tokenizer.ggml.eos_token_id",
        false,
    );
    let token = |t: &(String, usize), type_id: u32| json!({"SpecialToken": {"id": t.0, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (id, type_id, out) in [("A", 0, &mut single), ("B", 1, &mut pair)] {
        out.extend(bos.iter().map(|t| token(t, type_id)));
        out.push(seq(id, type_id));
        out.extend(eos.iter().map(|t| token(t, type_id)));
    }
    let pair: Vec<Value> = single.iter().cloned().chain(pair).collect();
    let specials: serde_json::Map<String, Value> = bos
        .iter()
        .chain(eos.iter())
        .map(|(t, id)| (t.clone(), json!({"id": t, "ids": [id], "tokens": [t]})))
        .collect();
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}
