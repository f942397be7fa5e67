//! The experiment spec: YAML as the user writes it ([`SpecFile`], every field documented
//! here and in the README), checked once into a [`Spec`] the rest of strata trusts.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

pub use crate::analyses::AnalysisSpec;
use crate::extract::TextInput;
use crate::model::{ModelInfo, ModelRef, PRE_FINAL_NORM};

/// An experiment spec file (`experiments/NAME.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// Output name; output goes to `reports/NAME/`. Default: the file stem. Letters, digits,
    /// `-`, `_` and `.` only.
    #[serde(default)]
    pub name: Option<String>,
    /// Title shown on the report. Default: the name.
    #[serde(default)]
    pub title: Option<String>,
    /// The model: `{id: gpt2, revision: main}`.
    pub model: ModelSpec,
    /// Seed of every random choice (pairplot `sample: random`). Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Drop token 0 of every text from every analysis, as the notebook does. Default false.
    #[serde(default)]
    pub exclude_first_token: bool,
    /// Inline texts: `[{id: NAME, text: "..."}]`. Exactly one of `texts` and `corpus`.
    #[serde(default)]
    pub texts: Option<Vec<TextSpec>>,
    /// A corpus: a file relative to the spec file (`.txt`: one text a line; `.jsonl`:
    /// objects with `"text"` and optionally `"id"`; `.parquet`; each optionally `.gz` or
    /// `.zst`), or a map `{path | dataset, ...}` (see [`crate::corpus::CorpusSpec`]).
    /// Read as a stream.
    #[serde(default)]
    pub corpus: Option<crate::corpus::CorpusSpec>,
    /// Cut each text into windows of the model's context instead of refusing a text longer
    /// than it: `{tokens: T, stride: S}` (S defaults to T). The windows are named
    /// `ID#0`, `ID#1`, ...; the first analyses all its tokens, each later one only the
    /// tokens no earlier window analysed, the rest being its context.
    #[serde(default)]
    pub window: Option<WindowSpec>,
    /// Hidden states for `covariance`, `histogram`, `summary` and `outliers`: `all` (default: every
    /// hidden state) or a list of indices and labels, e.g. `[0, 3, "h.11"]`; the label
    /// `pre_final_norm` names the last block's output before the final norm.
    #[serde(default)]
    pub layers: LayersSpec,
    /// Most texts per forward pass (1 to 1024). Default 1024: `batch_tokens` decides.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Most tokens per forward pass, counted padded (texts x the longest): consecutive
    /// texts share a forward until the next would pass it. Default 2048. A text longer
    /// than this runs alone.
    #[serde(default = "default_batch_tokens")]
    pub batch_tokens: usize,
    /// The analyses, in report order.
    pub analyses: Vec<AnalysisSpec>,
    /// How many texts results.json lists with their token ids and tokens (the first, in
    /// order); every text is still counted and digested in its `corpus`. Default 100.
    #[serde(default = "default_keep_texts")]
    pub keep_texts: usize,
    /// Tolerances `strata compare` applies to results of this spec (flags override):
    /// `{rtol: 1e-4, atol: 1e-6, hist_tv: 0.01}`, each optional.
    #[serde(default)]
    pub compare: Option<crate::compare::Tolerances>,
}

fn check_window(
    w: WindowSpec,
    invalid: &dyn Fn(&str, String, &str) -> SpecError,
) -> Result<Window, SpecError> {
    if w.tokens == 0 {
        return Err(invalid(
            "window.tokens",
            "0".into(),
            "give the most tokens a window holds, e.g. the model's context (1024 for GPT-2)",
        ));
    }
    let stride = w.stride.unwrap_or(w.tokens);
    if stride == 0 || stride > w.tokens {
        return Err(invalid(
            "window.stride",
            stride.to_string(),
            &format!(
                "use 1 to {} (window.tokens): a larger stride would skip tokens",
                w.tokens
            ),
        ));
    }
    Ok(Window {
        tokens: w.tokens,
        stride,
    })
}

fn default_keep_texts() -> usize {
    100
}

fn default_batch_size() -> usize {
    1024
}

/// Measured on a 124M-shaped GPT-2 (whole report, covariance + histogram): 1,100 texts
/// of 11 tokens ran at 0.79x the tokens/s of 24 texts of 470 with 8 texts per forward.
/// Under a token budget the two run at the same speed, within this VM's 5% noise, for
/// budgets of 1,024 to 4,096; 8,192 was 7% slower and took 19% more memory.
fn default_batch_tokens() -> usize {
    2048
}

/// `window:` as written in a spec.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Most tokens in a window: at most the model's context.
    pub tokens: usize,
    /// Tokens from one window's start to the next (1 to `tokens`). Default `tokens`: the
    /// windows do not overlap. A smaller stride gives every analysed token at least
    /// `tokens - stride` tokens of context, as transformers' strided perplexity does.
    #[serde(default)]
    pub stride: Option<usize>,
}

/// Windows over long texts, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Most tokens in a window.
    pub tokens: usize,
    /// Tokens between window starts (`1..=tokens`).
    pub stride: usize,
}

impl Window {
    /// The windows over `n` tokens, as `(start, end, context)`: window `k` holds tokens
    /// `start..end`, and its first `context` tokens were analysed by an earlier window.
    /// The last window is the first to reach the end, as in transformers' strided
    /// perplexity loop.
    pub fn cut(&self, n: usize) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        let mut analysed = 0usize;
        let mut start = 0;
        loop {
            let end = (start + self.tokens).min(n);
            out.push((start, end, analysed.saturating_sub(start)));
            analysed = end;
            if end >= n {
                return out;
            }
            start += self.stride;
        }
    }

    /// The id of window `k` of text `id`.
    pub fn id(text: &str, k: usize) -> String {
        format!("{text}#{k}")
    }
}

/// Which model, at which revision.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A Hub repo id (`gpt2`) or a local folder, relative to the spec file or absolute.
    pub id: String,
    /// Hub branch, tag or commit. Default `main`.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// A GGUF file inside the Hub repo `id` names (for a local GGUF, give its path as `id`).
    #[serde(default)]
    pub file: Option<String>,
    /// GGUF only: keep the weights quantized and run quantized matmuls. Default false:
    /// weights are dequantized to f32, as transformers does, so the numbers match it.
    #[serde(default)]
    pub quantized: bool,
}

fn default_revision() -> String {
    "main".into()
}

impl ModelSpec {
    /// The model, with a folder or file named relative to `base` (the spec's folder)
    /// found from anywhere.
    pub fn resolve(&self, base: &Path) -> ModelRef {
        let path = base.join(&self.id);
        let id = if !Path::new(&self.id).is_absolute() && path.exists() {
            path.to_string_lossy().into_owned()
        } else {
            self.id.clone()
        };
        ModelRef {
            id,
            revision: self.revision.clone(),
            file: self.file.clone(),
            quantized: self.quantized,
        }
    }
}

/// One inline text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// Unique name of the text.
    pub id: String,
    /// The text.
    pub text: String,
}

/// A hidden state named by index (`3`) or label (`"h.2"`, `"emb"`, `"pre_final_norm"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum LayerRef {
    /// Index into `outputs.hidden_states`.
    Index(usize),
    /// A label.
    Label(String),
}

impl fmt::Display for LayerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Index(i) => write!(f, "{i}"),
            Self::Label(l) => write!(f, "\"{l}\""),
        }
    }
}

impl<'de> Deserialize<'de> for LayerRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LayerRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a hidden-state index (0, 1, ...) or label (\"emb\", \"h.0\", ...)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LayerRef, E> {
                Ok(LayerRef::Index(v as usize))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LayerRef, E> {
                usize::try_from(v)
                    .map(LayerRef::Index)
                    .map_err(|_| E::custom(format!("layer {v} is negative; indices start at 0")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LayerRef, E> {
                Ok(LayerRef::Label(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `all`, or a list of [`LayerRef`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LayersSpec {
    /// Every hidden state (`L + 1` of them).
    #[default]
    All,
    /// These, in this order.
    List(Vec<LayerRef>),
}

impl<'de> Deserialize<'de> for LayersSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LayersSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`all` or a list of hidden-state indices and labels")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LayersSpec, E> {
                if v == "all" {
                    Ok(LayersSpec::All)
                } else {
                    Err(E::custom(format!(
                        "layers: `{v}` is not `all`; write `all` or a list such as [0, 3, \"h.11\"]"
                    )))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LayersSpec, A::Error> {
                let mut out = Vec::new();
                while let Some(l) = seq.next_element::<LayerRef>()? {
                    out.push(l);
                }
                Ok(LayersSpec::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// How the pairplot picks its points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleMode {
    /// The first `points` (token, dimension) points, texts in order, as the notebook does.
    #[default]
    First,
    /// A uniform random sample of `points`, seeded by the spec's `seed` (reservoir sampling).
    Random,
}

/// Where the texts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextSource {
    /// Texts written in the spec.
    Inline(Vec<TextInput>),
    /// A corpus file or a Hub dataset.
    Corpus(crate::corpus::Corpus),
}

/// A checked spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Output name.
    pub name: String,
    /// Report title.
    pub title: String,
    /// The model, with a folder id resolved against the spec's folder.
    pub model: ModelRef,
    /// Second models the analyses compare against (`agreement`), resolved the same way,
    /// each once, in spec order.
    pub companions: Vec<ModelRef>,
    /// Seed.
    pub seed: u64,
    /// Drop token 0 of each text.
    pub exclude_first_token: bool,
    /// The texts.
    pub texts: TextSource,
    /// Hidden states for covariance, histogram, summary and outliers.
    pub layers: LayersSpec,
    /// Windows over long texts, if any.
    pub window: Option<Window>,
    /// How many texts results.json lists whole.
    pub keep_texts: usize,
    /// Most texts per forward.
    pub batch_size: usize,
    /// Most padded tokens per forward.
    pub batch_tokens: usize,
    /// The analyses.
    pub analyses: Vec<AnalysisSpec>,
    /// Pinned comparison tolerances.
    pub compare: Option<crate::compare::Tolerances>,
    /// sha256 of the spec file's bytes.
    pub sha256: String,
    /// The spec file.
    pub path: PathBuf,
}

/// A spec that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file cannot be read.
    #[error("{path}: {cause}")]
    Io {
        /// The spec file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// Not valid YAML for the spec format (unknown field or kind, wrong type, alias bomb).
    #[error("{path}: {message}")]
    Parse {
        /// The spec file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A field holds a value that cannot work.
    #[error("{path}: `{field}` = {value}: {fix}")]
    Invalid {
        /// The spec file.
        path: PathBuf,
        /// The field, e.g. `analyses[2].bins`.
        field: String,
        /// Its value.
        value: String,
        /// What would work.
        fix: String,
    },
}

impl Spec {
    /// Reads, parses and checks a spec file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let bytes = std::fs::read(path).map_err(|source| SpecError::Io {
            path: path.to_path_buf(),
            cause: source,
        })?;
        let sha256 = crate::model::hub::hex(&sha256(&bytes));
        let text = String::from_utf8(bytes).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            message: format!("not UTF-8 ({e})"),
        })?;
        let file = parse_yaml(&text).map_err(|message| SpecError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        Self::check(file, path, sha256)
    }

    fn check(f: SpecFile, path: &Path, sha256: String) -> Result<Self, SpecError> {
        let invalid = |field: &str, value: String, fix: &str| SpecError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            value,
            fix: fix.to_string(),
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = f.name.clone().unwrap_or(stem);
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "name",
                format!("{name:?}"),
                "use letters, digits, '-', '_' and '.' (it names the output folder)",
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let texts = match (f.texts, f.corpus) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "texts",
                    "(and corpus)".into(),
                    "give `texts` or `corpus`, not both",
                ))
            }
            (None, None) => {
                return Err(invalid(
                    "texts",
                    "(missing)".into(),
                    "give inline `texts: [{id, text}]` or a `corpus:` file",
                ))
            }
            (Some(texts), None) => {
                if texts.is_empty() {
                    return Err(invalid("texts", "[]".into(), "give at least one text"));
                }
                let mut seen = std::collections::BTreeSet::new();
                for (i, t) in texts.iter().enumerate() {
                    if t.id.trim().is_empty() {
                        return Err(invalid(
                            &format!("texts[{i}].id"),
                            format!("{:?}", t.id),
                            "give every text a non-empty id",
                        ));
                    }
                    if !seen.insert(t.id.clone()) {
                        return Err(invalid(
                            &format!("texts[{i}].id"),
                            format!("{:?}", t.id),
                            "ids must be unique",
                        ));
                    }
                    if t.text.is_empty() {
                        return Err(invalid(
                            &format!("texts[{i}].text"),
                            "\"\"".into(),
                            "a text cannot be empty",
                        ));
                    }
                }
                TextSource::Inline(
                    texts
                        .into_iter()
                        .map(|t| TextInput {
                            id: t.id,
                            text: t.text,
                        })
                        .collect(),
                )
            }
            (None, Some(corpus)) => TextSource::Corpus(corpus.check(base, &invalid)?),
        };
        if let LayersSpec::List(l) = &f.layers {
            if l.is_empty() {
                return Err(invalid(
                    "layers",
                    "[]".into(),
                    "list at least one hidden state, or write `all`",
                ));
            }
        }
        if f.batch_size == 0 || f.batch_size > 1024 {
            return Err(invalid(
                "batch_size",
                f.batch_size.to_string(),
                "use 1 to 1024",
            ));
        }
        if f.batch_tokens == 0 || f.batch_tokens > 1 << 20 {
            return Err(invalid(
                "batch_tokens",
                f.batch_tokens.to_string(),
                "use 1 to 1048576 tokens per forward, e.g. 2048",
            ));
        }
        let window = f.window.map(|w| check_window(w, &invalid)).transpose()?;
        if f.analyses.is_empty() {
            return Err(invalid(
                "analyses",
                "[]".into(),
                &format!(
                    "list at least one analysis ({})",
                    crate::analyses::KINDS.join(", ")
                ),
            ));
        }
        for (index, a) in f.analyses.iter().enumerate() {
            a.check(&crate::analyses::Check {
                path,
                index,
                texts: &texts,
                windows: window.is_some(),
            })?;
        }
        if let Some(t) = &f.compare {
            t.check().map_err(|(field, value, fix)| {
                invalid(&format!("compare.{field}"), value.to_string(), fix)
            })?;
        }
        let mut companions: Vec<ModelRef> = Vec::new();
        for a in &f.analyses {
            if let Some(m) = a.companion() {
                let m = m.resolve(base);
                if !companions.contains(&m) {
                    companions.push(m);
                }
            }
        }
        Ok(Spec {
            title: f.title.unwrap_or_else(|| name.clone()),
            name,
            model: f.model.resolve(base),
            companions,
            seed: f.seed,
            exclude_first_token: f.exclude_first_token,
            texts,
            layers: f.layers,
            window,
            keep_texts: f.keep_texts,
            batch_size: f.batch_size,
            batch_tokens: f.batch_tokens,
            analyses: f.analyses,
            compare: f.compare,
            sha256,
            path: path.to_path_buf(),
        })
    }

    /// Checks the spec's window against the model's context.
    pub fn check_window(&self, info: &ModelInfo) -> Result<(), SpecError> {
        match self.window {
            Some(w) if w.tokens > info.max_positions => Err(SpecError::Invalid {
                path: self.path.clone(),
                field: "window.tokens".into(),
                value: w.tokens.to_string(),
                fix: format!(
                    "the model accepts at most {} tokens (n_positions): use at most that",
                    info.max_positions
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Resolves every analysis against a model: the empty states, in spec order, and the
    /// spec's `layers` as indices. Fails on a layer the model does not have.
    pub fn start(
        &self,
        info: &ModelInfo,
        companions: &[ModelInfo],
    ) -> Result<(Vec<usize>, Vec<crate::analyses::State>), SpecError> {
        self.check_window(info)?;
        let mut labels = info.labels.clone();
        labels.push(PRE_FINAL_NORM.to_string());
        let selected = self.resolve_layers("layers", &self.layers, info)?;
        let states = self
            .analyses
            .iter()
            .enumerate()
            .map(|(index, a)| {
                a.start(&crate::analyses::Setup {
                    spec: self,
                    info,
                    labels: &labels,
                    selected: &selected,
                    index,
                    companions,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok((selected, states))
    }

    /// Checks every layer reference of the spec against a model (and the second models'
    /// shapes, when known: `companions` is empty otherwise).
    pub fn check_layers(
        &self,
        info: &ModelInfo,
        companions: &[ModelInfo],
    ) -> Result<(), SpecError> {
        self.start(info, companions).map(|_| ())
    }

    /// Resolves `layers` against a model: indices into `labels` + `[pre_final_norm]`.
    pub fn resolve_layers(
        &self,
        field: &str,
        refs: &LayersSpec,
        info: &ModelInfo,
    ) -> Result<Vec<usize>, SpecError> {
        match refs {
            LayersSpec::All => Ok((0..info.labels.len()).collect()),
            LayersSpec::List(list) => list
                .iter()
                .enumerate()
                .map(|(i, r)| self.resolve_layer(&format!("{field}[{i}]"), r, info))
                .collect(),
        }
    }

    /// Resolves one layer reference.
    pub fn resolve_layer(
        &self,
        field: &str,
        r: &LayerRef,
        info: &ModelInfo,
    ) -> Result<usize, SpecError> {
        let n = info.labels.len();
        let found = match r {
            LayerRef::Index(i) => (*i < n).then_some(*i),
            LayerRef::Label(l) if l == PRE_FINAL_NORM => Some(n),
            LayerRef::Label(l) => info.labels.iter().position(|x| x == l),
        };
        found.ok_or_else(|| SpecError::Invalid {
            path: self.path.clone(),
            field: field.to_string(),
            value: r.to_string(),
            fix: format!(
                "{} has {n} hidden states: indices 0..={}, labels {} ... {}, or \"{PRE_FINAL_NORM}\"",
                info.architecture,
                n - 1,
                info.labels.first().map(String::as_str).unwrap_or(""),
                info.labels.last().map(String::as_str).unwrap_or(""),
            ),
        })
    }
}

/// Parses spec YAML with serde-saphyr's default budget, which rejects alias bombs and
/// runaway documents before they expand.
pub fn parse_yaml(text: &str) -> Result<SpecFile, String> {
    serde_saphyr::from_str::<SpecFile>(text).map_err(|e| e.to_string())
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}
