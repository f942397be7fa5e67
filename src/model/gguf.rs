//! GGUF files (llama.cpp's format): a Llama-family decoder and its tokenizer from the one
//! file, as `transformers` loads them with `gguf_file=`.
//!
//! Weights stay in memory as the file stores them, quantized. By default each projection
//! is dequantized to f32 when the forward pass reaches it, into a reused buffer, which
//! gives the f32 weights transformers dequantizes on load, so the hidden states match it,
//! while memory stays near the file's size. With `quantized` the projections run through
//! candle's quantized matmul instead: faster, but the numbers are those of llama.cpp-style
//! int8 dot products, not transformers'.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use rayon::prelude::*;

use super::kernels::Dense;
use super::llama::{LayerWeights, Llama, LlamaParams, LlamaWeights, RopeScaling};
use super::weights::Table;
use super::{HiddenStateModel, ModelError, ModelInfo, TextTokenizer};

/// `general.architecture` values this loader runs.
pub const ARCHITECTURES: &[&str] = &["llama"];
/// Tensor types candle dequantizes (and so this loader reads).
pub const TENSOR_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";

/// Whether `path` is a GGUF file (by its magic bytes).
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

struct Gguf {
    path: PathBuf,
    content: Content,
    file: std::fs::File,
    /// The file mapped read-only, once a tensor is used in place.
    map: Option<Arc<memmap2::Mmap>>,
}

impl Gguf {
    fn open(path: &Path) -> Result<Self, ModelError> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            cause: source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let content = Content::read(&mut file).map_err(|e| ModelError::Gguf {
            path: path.to_path_buf(),
            detail: format!(
                "{e}; the file is not a complete GGUF file, or holds a tensor type candle cannot read (it reads {TENSOR_TYPES})"
            ),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            file,
            map: None,
        })
    }

    fn err(&self, detail: String) -> ModelError {
        ModelError::Gguf {
            path: self.path.clone(),
            detail,
        }
    }

    fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.meta(key)
            .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
            .map(|v| v as usize)
            .ok_or_else(|| self.err(format!("metadata `{key}` is missing or not an integer")))
    }

    fn f64_or(&self, key: &str, default: f64) -> f64 {
        self.meta(key)
            .and_then(|v| v.to_f32().ok().map(f64::from).or_else(|| v.to_f64().ok()))
            .unwrap_or(default)
    }

    fn string(&self, key: &str) -> Option<String> {
        self.meta(key).and_then(|v| v.to_string().ok()).cloned()
    }

    /// Where tensor `name` is described, checked to have `shape` (candle's order:
    /// `[out, in]`).
    fn tensor_info(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<&candle_core::quantized::gguf_file::TensorInfo, ModelError> {
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Err(self.err(format!("tensor `{name}` is missing")));
        };
        if info.shape.dims() != shape {
            return Err(self.err(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?} from the metadata",
                info.shape.dims()
            )));
        }
        Ok(info)
    }

    /// A small tensor (a norm's weight) dequantized to f32.
    fn f32(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let blocks = self.blocks(name, shape)?;
        let mut v = vec![0f32; shape.iter().product()];
        blocks.rows_into(0..v.len() / blocks.width.max(1), &mut v);
        Ok(v)
    }

    /// A tensor read into candle's quantized tensor, for its quantized matmul.
    fn stored(&mut self, name: &str, shape: &[usize]) -> Result<QTensor, ModelError> {
        self.tensor_info(name, shape)?;
        self.content
            .tensor(&mut self.file, name, &Device::Cpu)
            .map_err(|e| self.err(format!("tensor `{name}`: {e}")))
    }

    /// A tensor's quantized blocks in place in the mapped file, checked to have `shape`
    /// (candle's order: `[out, in]`).
    fn blocks(&mut self, name: &str, shape: &[usize]) -> Result<Blocks, ModelError> {
        let info = self.tensor_info(name, shape)?;
        let dtype = info.ggml_dtype;
        let len = info.shape.elem_count() / dtype.block_size() * dtype.type_size();
        let start = (self.content.tensor_data_offset + info.offset) as usize;
        let map = match &self.map {
            Some(map) => map.clone(),
            None => {
                // SAFETY: mapped read-only; as with any map, a file truncated while mapped
                // would fault, and Hub caches never rewrite a blob in place.
                let map =
                    unsafe { memmap2::Mmap::map(&self.file) }.map_err(|cause| ModelError::Io {
                        path: self.path.clone(),
                        cause,
                    })?;
                self.map.insert(Arc::new(map)).clone()
            }
        };
        if start + len > map.len() {
            return Err(self.err(format!(
                "tensor `{name}` runs past the end of the file ({} bytes): the file is truncated; download it again",
                map.len()
            )));
        }
        // Every block type holds f16 or f32 fields: 4-byte alignment suits them all, and
        // GGUF writers align tensor data to 32 bytes.
        if !(map.as_ptr() as usize + start).is_multiple_of(4) {
            return Err(self.err(format!(
                "tensor `{name}` starts at byte {start}, not aligned for its blocks: the file is not a valid GGUF"
            )));
        }
        Ok(Blocks {
            map,
            start,
            len,
            dtype,
            width: shape.last().copied().unwrap_or(0),
        })
    }

    fn dense(
        &mut self,
        name: &str,
        n_in: usize,
        n_out: usize,
        quantized: bool,
    ) -> Result<Dense, ModelError> {
        if !quantized {
            return Ok(Dense::dequantized(
                self.blocks(name, &[n_out, n_in])?,
                n_in,
                n_out,
            ));
        }
        let q = self.stored(name, &[n_out, n_in])?;
        Dense::quantized(q, n_in, n_out).map_err(|e| self.err(format!("tensor `{name}`: {e}")))
    }

    /// A `[rows, width]` table kept quantized in place, read a row at a time.
    fn table(&mut self, name: &str, rows: usize, width: usize) -> Result<Table, ModelError> {
        Ok(Table::quantized(
            self.blocks(name, &[rows, width])?,
            rows,
            width,
        ))
    }

    /// The predominant tensor type of the 2-D weights (`Q4_1`), as a report shows it.
    fn quantization(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for info in self.content.tensor_infos.values() {
            if info.shape.dims().len() == 2 {
                *counts.entry(type_name(info.ggml_dtype)).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(name.clone())))
            .map(|(name, _)| name)
            .unwrap_or_else(|| "F32".into())
    }
}

/// llama.cpp's spelling of a tensor type.
fn type_name(t: GgmlDType) -> String {
    match t {
        GgmlDType::Q2K => "Q2_K".into(),
        GgmlDType::Q3K => "Q3_K".into(),
        GgmlDType::Q4K => "Q4_K".into(),
        GgmlDType::Q5K => "Q5_K".into(),
        GgmlDType::Q6K => "Q6_K".into(),
        GgmlDType::Q8K => "Q8_K".into(),
        other => format!("{other:?}"),
    }
}

/// Reads the hyper-parameters (no tensors).
fn params(g: &Gguf) -> Result<LlamaParams, ModelError> {
    let arch = g
        .string("general.architecture")
        .ok_or_else(|| g.err("metadata `general.architecture` is missing".into()))?;
    if !ARCHITECTURES.contains(&arch.as_str()) {
        return Err(ModelError::UnsupportedArchitecture {
            path: g.path.clone(),
            model_type: arch,
            supported: format!("GGUF: {}", ARCHITECTURES.join(", ")),
        });
    }
    let k = |s: &str| format!("{arch}.{s}");
    let hidden_size = g.usize(&k("embedding_length"))?;
    let n_head = g.usize(&k("attention.head_count"))?;
    let n_kv_head = g.usize(&k("attention.head_count_kv")).unwrap_or(n_head);
    let head_dim = g
        .usize(&k("attention.key_length"))
        .or_else(|_| g.usize(&k("rope.dimension_count")))
        .unwrap_or(hidden_size / n_head);
    let vocab_size = match g.usize(&k("vocab_size")) {
        Ok(v) => v,
        Err(_) => g
            .meta("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.len())
            .ok_or_else(|| g.err("neither `{arch}.vocab_size` nor tokenizer tokens".into()))?,
    };
    if n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) {
        return Err(g.err(format!(
            "head_count_kv = {n_kv_head} does not divide head_count = {n_head}"
        )));
    }
    Ok(LlamaParams {
        architecture: arch.clone(),
        vocab_size,
        hidden_size,
        intermediate_size: g.usize(&k("feed_forward_length"))?,
        n_layer: g.usize(&k("block_count"))?,
        n_head,
        n_kv_head,
        head_dim,
        rms_norm_eps: g.f64_or(&k("attention.layer_norm_rms_epsilon"), 1e-5),
        rope_theta: g.f64_or(&k("rope.freq_base"), 10_000.0),
        rope_scaling: RopeScaling::Default,
        max_positions: g.usize(&k("context_length"))?,
        sliding_window: None,
        sliding_layers: Vec::new(),
        qk_norm: false,
        rotary_dim: head_dim,
        fused_projections: false,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        rope_interleaved: true,
        tie_word_embeddings: !g.content.tensor_infos.contains_key("output.weight"),
    })
}

/// Shape, labels and quantization type, from the header alone.
pub fn read_info(path: &Path) -> Result<ModelInfo, ModelError> {
    let g = Gguf::open(path)?;
    let mut info = params(&g)?.info();
    info.quantization = Some(g.quantization());
    Ok(info)
}

/// Loads the model; `quantized` multiplies by the quantized projections directly.
pub fn load(path: &Path, quantized: bool) -> Result<Box<dyn HiddenStateModel>, ModelError> {
    let mut g = Gguf::open(path)?;
    let p = params(&g)?;
    let mut info = p.info();
    info.quantization = Some(g.quantization());
    let (c, d, ff) = (p.hidden_size, p.head_dim, p.intermediate_size);
    let embed = g.table("token_embd.weight", p.vocab_size, c)?;
    let mut layers = Vec::with_capacity(p.n_layer);
    for i in 0..p.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        layers.push(LayerWeights {
            attn_norm: g.f32(&n("attn_norm"), &[c])?,
            q: g.dense(&n("attn_q"), c, p.n_head * d, quantized)?,
            k: g.dense(&n("attn_k"), c, p.n_kv_head * d, quantized)?,
            v: g.dense(&n("attn_v"), c, p.n_kv_head * d, quantized)?,
            qk_norm: None,
            window: None,
            o: g.dense(&n("attn_output"), p.n_head * d, c, quantized)?,
            mlp_norm: g.f32(&n("ffn_norm"), &[c])?,
            gate: g.dense(&n("ffn_gate"), c, ff, quantized)?,
            up: g.dense(&n("ffn_up"), c, ff, quantized)?,
            down: g.dense(&n("ffn_down"), ff, c, quantized)?,
        });
    }
    let norm = g.f32("output_norm.weight", &[c])?;
    // The head is used only by the logit lens, dequantized (f32 logits) in either mode.
    let lm_head = if p.tie_word_embeddings {
        None
    } else {
        Some(g.table("output.weight", p.vocab_size, c)?)
    };
    if quantized {
        info.quantization = info.quantization.map(|q| format!("{q} (quantized matmul)"));
    }
    Ok(Box::new(Llama::new(
        p,
        LlamaWeights {
            embed,
            layers,
            norm,
            lm_head,
        },
        info,
    )))
}

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

/// Builds the tokenizer transformers builds from the file's metadata (byte-level BPE,
/// `tokenizer.ggml.model = gpt2`): the vocabulary, the merges, control tokens as special
/// tokens, user-defined ones as added tokens, the pre-tokenizer `tokenizer.ggml.pre`
/// selects, and BOS when `tokenizer.ggml.add_bos_token` says so.
pub fn tokenizer(path: &Path) -> Result<TextTokenizer, ModelError> {
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
    let types: Vec<i64> = g
        .meta("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|v| {
            v.iter()
                .map(|x| x.to_i32().map(i64::from).unwrap_or(1))
                .collect()
        })
        .unwrap_or_default();
    let pre = g.string("tokenizer.ggml.pre").unwrap_or_default();
    if OTHER_SPLIT_PRES.contains(&pre.as_str()) {
        return Err(tok_err(format!(
            "tokenizer.ggml.pre = `{pre}` selects a pre-tokenizer strata does not implement; supported: GPT-2's default and {}",
            LLAMA3_PRES.join(", ")
        )));
    }
    let table = byte_chars();
    let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
    let respell = |t: &str| -> String {
        if t.chars().all(|c| alphabet.contains(&c)) {
            t.to_string()
        } else {
            t.bytes().map(|b| table[b as usize]).collect()
        }
    };
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (respell(t), serde_json::json!(i)))
        .collect();
    let merges: Vec<serde_json::Value> = merges
        .iter()
        .filter_map(|m| m.split_once(' '))
        .map(|(a, b)| serde_json::json!([a, b]))
        .collect();
    let mut added = Vec::new();
    for (i, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
        // 3 = control (special), 4 = user-defined (added, not special). A control token
        // outside the byte alphabet is a llama.cpp mislabel transformers skips too.
        let special = match ty {
            3 if t.chars().all(|c| alphabet.contains(&c)) => true,
            4 => false,
            _ => continue,
        };
        added.push(serde_json::json!({
            "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": special
        }));
    }
    let byte_level = |regex: bool| serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let pre_tokenizer = if LLAMA3_PRES.contains(&pre.as_str()) {
        serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
            byte_level(false)
        ]})
    } else {
        byte_level(true)
    };
    let add_bos = g
        .meta("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    let post_processor = match (add_bos, g.usize("tokenizer.ggml.bos_token_id").ok()) {
        (true, Some(bos)) => {
            let bos_tok = tokens.get(bos).cloned().unwrap_or_default();
            serde_json::json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos_tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos_tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos_tok.clone(): {"id": bos_tok, "ids": [bos], "tokens": [bos_tok]}}})
        }
        _ => {
            serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true})
        }
    };
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added, "normalizer": null,
        "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}
    });
    TextTokenizer::from_json(&json.to_string()).map_err(|e| tok_err(e.to_string()))
}

/// A GGUF tensor's quantized blocks, used in place in the memory-mapped file: the
/// weights of the dequantized mode, and the embedding and head in either mode.
pub(crate) struct Blocks {
    map: Arc<memmap2::Mmap>,
    /// Byte range of the tensor's data in the file.
    start: usize,
    len: usize,
    dtype: GgmlDType,
    /// Elements per row.
    width: usize,
}

impl Blocks {
    /// Rows `rows`, dequantized into `dst` (`rows.len() * width` long).
    pub(crate) fn rows_into(&self, rows: Range<usize>, dst: &mut [f32]) {
        let bytes = &self.map[self.start..self.start + self.len];
        dequantize_bytes(bytes, self.dtype, self.width, rows, dst);
    }
}

/// Rows `rows` of a `[.., width]` tensor of `dtype` blocks, dequantized into `dst` by
/// candle's own per-type routine, so the values are those `QTensor::dequantize` gives for
/// the whole tensor.
fn dequantize_bytes(
    bytes: &[u8],
    dtype: GgmlDType,
    width: usize,
    rows: Range<usize>,
    dst: &mut [f32],
) {
    use candle_core::quantized::k_quants::*;
    use half::{bf16, f16};
    debug_assert_eq!(dst.len(), rows.len() * width);
    fn go<T: GgmlType>(bytes: &[u8], rows: Range<usize>, width: usize, dst: &mut [f32]) {
        let per_row = width / T::BLCK_SIZE;
        let size = std::mem::size_of::<T>();
        assert!(bytes.len().is_multiple_of(size) && rows.end * per_row * size <= bytes.len());
        assert!((bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()));
        // SAFETY: the bytes hold whole blocks of T and are aligned for it (both asserted;
        // Gguf::blocks checked the range and alignment when it mapped them); blocks are
        // plain numbers, valid for every bit pattern.
        let blocks: &[T] =
            unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) };
        let blocks = &blocks[rows.start * per_row..rows.end * per_row];
        // Blocks of 64 rows per task: each block dequantizes on its own.
        dst.par_chunks_mut(64 * width)
            .zip(blocks.par_chunks(64 * per_row))
            .for_each(|(d, b)| T::to_float(b, d));
    }
    let f = match dtype {
        GgmlDType::F32 => go::<f32>,
        GgmlDType::F16 => go::<f16>,
        GgmlDType::BF16 => go::<bf16>,
        GgmlDType::Q4_0 => go::<BlockQ4_0>,
        GgmlDType::Q4_1 => go::<BlockQ4_1>,
        GgmlDType::Q5_0 => go::<BlockQ5_0>,
        GgmlDType::Q5_1 => go::<BlockQ5_1>,
        GgmlDType::Q8_0 => go::<BlockQ8_0>,
        GgmlDType::Q8_1 => go::<BlockQ8_1>,
        GgmlDType::Q2K => go::<BlockQ2K>,
        GgmlDType::Q3K => go::<BlockQ3K>,
        GgmlDType::Q4K => go::<BlockQ4K>,
        GgmlDType::Q5K => go::<BlockQ5K>,
        GgmlDType::Q6K => go::<BlockQ6K>,
        GgmlDType::Q8K => go::<BlockQ8K>,
    };
    f(bytes, rows, width, dst);
}
