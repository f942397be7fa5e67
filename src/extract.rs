//! `strata extract`: texts -> every hidden state, written as one safetensors file.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;

use crate::corpus::TextInput;
use crate::model::capture::AttentionRequest;
use crate::model::{Capture, LoadedModel, ModelError, ModelProvenance, Site, PRE_FINAL_NORM};

/// One text's hidden states, as plain f32 rows.
#[derive(Debug, Clone)]
pub struct ExtractedText {
    /// The text's id.
    pub id: String,
    /// Token ids.
    pub token_ids: Vec<u32>,
    /// Each token decoded on its own.
    pub tokens: Vec<String>,
    /// `L + 1` row-major `[n_tokens, hidden_size]` buffers, as `outputs.hidden_states`.
    pub states: Vec<Vec<f32>>,
    /// The last block's output before the final norm, `[n_tokens, hidden_size]`.
    pub pre_final_norm: Vec<f32>,
    /// Per asked-for site, one `[n_tokens, width]` buffer per block.
    pub sites: Vec<(Site, Vec<Vec<f32>>)>,
    /// With attention: per block, `[n_heads, n_tokens, n_tokens]` probabilities.
    pub attentions: Vec<Vec<f32>>,
}

/// What `extract` writes besides the hidden states.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Sub-block sites, each for every block.
    pub sites: Vec<Site>,
    /// Every attention probability.
    pub attention: bool,
}

impl Extras {
    /// The forward's capture for a batch of `b` texts.
    fn capture(&self, n_layers: usize, b: usize) -> Capture {
        let mut c = Capture::none();
        for &s in &self.sites {
            c = c.with(s, n_layers);
        }
        c.attention = self.attention.then(|| AttentionRequest {
            from: vec![0; b],
            probabilities: true,
        });
        c
    }
}

/// Bytes the attention probabilities of a text of `n` tokens take: `L x heads x n x n`
/// f32 values, kept until the file is written.
pub fn attention_bytes(n_layers: usize, n_heads: usize, n: usize) -> u64 {
    (n_layers * n_heads) as u64 * (n as u64) * (n as u64) * 4
}

/// Tokenizes every text first (so a bad text fails before any compute), then runs them
/// through the model `batch_size` at a time.
pub fn extract(
    model: &LoadedModel,
    texts: &[TextInput],
    batch_size: usize,
    extras: &Extras,
) -> Result<Vec<ExtractedText>, ModelError> {
    let ids = tokenize(model, texts)?;
    extract_ids(model, texts, &ids, batch_size, extras)
}

/// Every text's token ids, checked against the model's context.
pub fn tokenize(model: &LoadedModel, texts: &[TextInput]) -> Result<Vec<Vec<u32>>, ModelError> {
    texts.iter().map(|t| model.encode(&t.id, &t.text)).collect()
}

/// [`extract`] on texts already tokenized ([`tokenize`]).
pub fn extract_ids(
    model: &LoadedModel,
    texts: &[TextInput],
    ids: &[Vec<u32>],
    batch_size: usize,
    extras: &Extras,
) -> Result<Vec<ExtractedText>, ModelError> {
    let n_layers = model.model.info().n_layers;
    let mut out = Vec::with_capacity(texts.len());
    for (chunk_texts, chunk_ids) in texts
        .chunks(batch_size.max(1))
        .zip(ids.chunks(batch_size.max(1)))
    {
        let batch: Vec<&[u32]> = chunk_ids.iter().map(|v| v.as_slice()).collect();
        let capture = extras.capture(n_layers, batch.len());
        let states = model.model.forward_with(&batch, &capture)?;
        for ((text, ids), mut st) in chunk_texts.iter().zip(chunk_ids).zip(states) {
            let sites = extras
                .sites
                .iter()
                .filter_map(|&s| s.slot().map(|i| (s, std::mem::take(&mut st.sites[i]))))
                .collect();
            let attentions = st
                .attention
                .iter()
                .map(|heads| {
                    heads
                        .iter()
                        .flat_map(|h| h.probabilities.iter().copied())
                        .collect()
                })
                .collect();
            out.push(ExtractedText {
                id: text.id.clone(),
                tokens: model.tokenizer.token_strings(ids),
                token_ids: ids.clone(),
                states: st.states,
                pre_final_norm: st.pre_final_norm,
                sites,
                attentions,
            });
        }
    }
    Ok(out)
}

/// What the safetensors metadata says about each text.
#[derive(Serialize)]
struct TextMeta<'a> {
    /// Tensor-name prefix of this text (empty for a single `--text`).
    prefix: String,
    /// The text's id.
    id: &'a str,
    /// The text.
    text: &'a str,
    /// Token count.
    n_tokens: usize,
    /// Each token decoded on its own.
    tokens: &'a [String],
}

/// Serializes extracted texts: tensors `hidden_states.{i}` (f32 `[tokens, dim]`),
/// `pre_final_norm`, any sites' `SITE.{l}` (f32 `[tokens, width]`), any
/// `attentions.{l}` (f32 `[heads, tokens, tokens]`, row = query, as `transformers`'
/// `output_attentions`) and `token_ids` (i64), each prefixed `text{j}.` when `prefixed`;
/// labels, texts and provenance as JSON in the metadata.
pub fn to_safetensors(
    texts: &[ExtractedText],
    inputs: &[TextInput],
    labels: &[String],
    hidden_size: usize,
    provenance: &ModelProvenance,
    prefixed: bool,
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let prefix = |j: usize| {
        if prefixed {
            format!("text{j}.")
        } else {
            String::new()
        }
    };
    let buffers: Vec<Buffer> = texts
        .iter()
        .enumerate()
        .flat_map(|(j, t)| text_buffers(t, &prefix(j), hidden_size))
        .collect();
    let views = buffers
        .iter()
        .map(|(name, shape, dtype, bytes)| {
            Ok((name.clone(), TensorView::new(*dtype, shape.clone(), bytes)?))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let text_meta: Vec<TextMeta> = texts
        .iter()
        .zip(inputs)
        .enumerate()
        .map(|(j, (t, input))| TextMeta {
            prefix: prefix(j),
            id: &t.id,
            text: &input.text,
            n_tokens: t.token_ids.len(),
            tokens: &t.tokens,
        })
        .collect();
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("strata.version".to_string(), crate::VERSION.to_string()),
        ("strata.labels".to_string(), json(labels)),
        ("strata.texts".to_string(), json(&text_meta)),
        ("strata.provenance".to_string(), json(provenance)),
    ]);
    let bytes = safetensors::serialize(views, Some(meta))?;
    Ok(sorted_header(bytes))
}

/// One tensor to write: name, shape, dtype, little-endian bytes.
type Buffer = (String, Vec<usize>, Dtype, Vec<u8>);

/// One text's tensors, named with `prefix`.
fn text_buffers(t: &ExtractedText, prefix: &str, hidden_size: usize) -> Vec<Buffer> {
    let n = t.token_ids.len();
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut buffers: Vec<Buffer> = Vec::new();
    for (i, s) in t.states.iter().enumerate() {
        buffers.push((
            format!("{prefix}hidden_states.{i}"),
            vec![n, hidden_size],
            Dtype::F32,
            f32_bytes(s),
        ));
    }
    buffers.push((
        format!("{prefix}{PRE_FINAL_NORM}"),
        vec![n, hidden_size],
        Dtype::F32,
        f32_bytes(&t.pre_final_norm),
    ));
    for (site, blocks) in &t.sites {
        // A dense block of a mixture of experts has no router logits: nothing to write.
        for (l, s) in blocks
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty() || n == 0)
        {
            let width = s.len() / n.max(1);
            let name = format!("{prefix}{}", site.label(l));
            buffers.push((name, vec![n, width], Dtype::F32, f32_bytes(s)));
        }
    }
    for (l, a) in t.attentions.iter().enumerate() {
        let heads = a.len() / (n * n).max(1);
        let name = format!("{prefix}attentions.{l}");
        buffers.push((name, vec![heads, n, n], Dtype::F32, f32_bytes(a)));
    }
    let ids: Vec<u8> = t
        .token_ids
        .iter()
        .flat_map(|&x| (x as i64).to_le_bytes())
        .collect();
    buffers.push((format!("{prefix}token_ids"), vec![n], Dtype::I64, ids));
    buffers
}

/// safetensors writes its header from a `HashMap`, so key order (and the file's bytes)
/// change from run to run. Re-serializing the header with sorted keys gives the same
/// bytes every time; the length is unchanged (same keys and values, compact JSON), so
/// the data offsets stay valid.
fn sorted_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return bytes;
    };
    // serde_json's default map is a BTreeMap: parsing sorts every object's keys.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    let mut sorted = serde_json::to_vec(&value).unwrap_or_default();
    if sorted.len() > len {
        return bytes;
    }
    sorted.resize(len, b' ');
    bytes[8..8 + len].copy_from_slice(&sorted);
    bytes
}

/// Compact JSON of a value that cannot fail to serialize (plain data, string keys).
fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
