//! The experiment spec: YAML as the user writes it ([`SpecFile`], every field documented
//! here and in the README), checked once into a [`Spec`] the rest of strata trusts.

pub mod error;
pub mod layers;
pub mod model;
pub mod texts;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use self::error::SpecError;
pub use self::layers::{LayerRef, LayersSpec};
pub use self::model::ModelSpec;
use self::texts::check_window;
pub use self::texts::{TextSource, TextSpec, Window, WindowSpec};
pub use crate::analyses::AnalysisSpec;
use crate::corpus::TextInput;
use crate::model::{ModelInfo, ModelRef};

/// An experiment spec file (`experiments/NAME.yaml`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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
    #[schemars(length(min = 1))]
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
    /// Hidden states every kind without a `layers` of its own reads (all but `scatter`,
    /// `pairplot`, `cka`'s own list, `logit_lens` and `agreement` when they set one): `all` (default: every
    /// hidden state) or a list of indices and labels, e.g. `[0, 3, "h.11"]`; the label
    /// `pre_final_norm` names the last block's output before the final norm.
    #[serde(default)]
    pub layers: LayersSpec,
    /// Most texts per forward pass (1 to 1024). Default 1024: `batch_tokens` decides.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub batch_size: usize,
    /// Most tokens per forward pass (a forward packs its texts with no padding):
    /// consecutive texts share a forward until the next would pass it. Default 2048. A
    /// text longer than this runs alone.
    #[serde(default = "default_batch_tokens")]
    pub batch_tokens: usize,
    /// The analyses, in report order.
    #[schemars(length(min = 1))]
    pub analyses: Vec<AnalysisSpec>,
    /// How many texts results.json lists with their token ids and tokens (the first, in
    /// order); every text is still counted and digested in its `corpus`. Default 100.
    #[serde(default = "default_keep_texts")]
    pub keep_texts: usize,
    /// Tolerances `strata compare` applies to results of this spec (flags override):
    /// `{rtol: 1e-4, atol: 1e-6, hist_tv: 0.01}`, each optional.
    #[serde(default)]
    pub compare: Option<crate::compare::rules::Tolerances>,
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
    /// Hidden states the analyses read unless they name their own.
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
    pub compare: Option<crate::compare::rules::Tolerances>,
    /// sha256 of the spec file's bytes.
    pub sha256: String,
    /// The spec file.
    pub path: PathBuf,
}

impl Spec {
    /// Reads, parses and checks a spec file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let bytes = std::fs::read(path).map_err(|source| SpecError::Io {
            path: path.to_path_buf(),
            cause: source,
        })?;
        let sha256 = crate::digest::sha256_hex(&bytes);
        let text = String::from_utf8(bytes).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            message: format!("not UTF-8 ({e})"),
        })?;
        let file = parse_yaml(&text).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::check(file, path, sha256)
    }

    fn check(f: SpecFile, path: &Path, sha256: String) -> Result<Self, SpecError> {
        let invalid = |field: &str, value: String, fix: &str| {
            SpecError::invalid(path, field.to_string(), value, fix.to_string())
        };
        let name = check_name(f.name.clone(), path, &invalid)?;
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
            (Some(texts), None) => TextSource::Inline(check_inline(texts, &invalid)?),
            (None, Some(corpus)) => TextSource::Corpus(
                corpus
                    .check(base)
                    .map_err(|e| invalid(&e.field, e.value, &e.fix))?,
            ),
        };
        check_batching(&f.layers, f.batch_size, f.batch_tokens, &invalid)?;
        let window = f.window.map(|w| check_window(w, &invalid)).transpose()?;
        check_analyses(&f.analyses, path, &texts, window.is_some(), &invalid)?;
        if let Some(t) = &f.compare {
            t.check().map_err(|(field, value, fix)| {
                invalid(&format!("compare.{field}"), value.to_string(), fix)
            })?;
        }
        Ok(Spec {
            title: f.title.unwrap_or_else(|| name.clone()),
            name,
            model: f.model.resolve(base),
            companions: companions(&f.analyses, base),
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

    /// Resolves `layers` against a model: indices into `labels` + `[pre_final_norm]`.
    pub fn resolve_layers(
        &self,
        field: &str,
        refs: &LayersSpec,
        info: &ModelInfo,
    ) -> Result<Vec<usize>, SpecError> {
        layers::resolve_layers(&self.path, field, refs, info)
    }
}

/// Makes the error for a field of the spec, its value and a fix.
type Invalid<'a> = dyn Fn(&str, String, &str) -> SpecError + 'a;

/// Whether `name` can name an experiment (its spec file and its report folder): letters,
/// digits, `-`, `_` and `.`, not starting with `.`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The output name: `name`, else the file stem; it names a folder, so only letters,
/// digits, `-`, `_` and `.` (not first).
fn check_name(name: Option<String>, path: &Path, invalid: &Invalid) -> Result<String, SpecError> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.unwrap_or(stem);
    if !is_valid_name(&name) {
        return Err(invalid(
            "name",
            format!("{name:?}"),
            "use letters, digits, '-', '_' and '.' (it names the output folder)",
        ));
    }
    Ok(name)
}

/// Inline texts: at least one, each with a unique non-empty id and a non-empty text.
fn check_inline(texts: Vec<TextSpec>, invalid: &Invalid) -> Result<Vec<TextInput>, SpecError> {
    if texts.is_empty() {
        return Err(invalid("texts", "[]".into(), "give at least one text"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in texts.iter().enumerate() {
        let field = format!("texts[{i}].id");
        if t.id.trim().is_empty() {
            return Err(invalid(
                &field,
                format!("{:?}", t.id),
                "give every text a non-empty id",
            ));
        }
        if !seen.insert(t.id.clone()) {
            return Err(invalid(&field, format!("{:?}", t.id), "ids must be unique"));
        }
        if t.text.is_empty() {
            return Err(invalid(
                &format!("texts[{i}].text"),
                "\"\"".into(),
                "a text cannot be empty",
            ));
        }
        if t.label.as_deref().is_some_and(|l| l.trim().is_empty()) {
            return Err(invalid(
                &format!("texts[{i}].label"),
                format!("{:?}", t.label.as_deref().unwrap_or_default()),
                "give a non-empty label, or leave `label` out",
            ));
        }
    }
    Ok(texts
        .into_iter()
        .map(|t| TextInput {
            id: t.id,
            text: t.text,
            label: t.label,
        })
        .collect())
}

/// `layers` lists something; `batch_size` and `batch_tokens` are in range.
fn check_batching(
    layers: &LayersSpec,
    batch_size: usize,
    batch_tokens: usize,
    invalid: &Invalid,
) -> Result<(), SpecError> {
    if let LayersSpec::List(l) = layers {
        if l.is_empty() {
            return Err(invalid(
                "layers",
                "[]".into(),
                "list at least one hidden state, or write `all`",
            ));
        }
    }
    if batch_size == 0 || batch_size > 1024 {
        return Err(invalid(
            "batch_size",
            batch_size.to_string(),
            "use 1 to 1024",
        ));
    }
    if batch_tokens == 0 || batch_tokens > 1 << 20 {
        return Err(invalid(
            "batch_tokens",
            batch_tokens.to_string(),
            "use 1 to 1048576 tokens per forward, e.g. 2048",
        ));
    }
    Ok(())
}

/// At least one analysis, each checked by its kind.
fn check_analyses(
    analyses: &[AnalysisSpec],
    path: &Path,
    texts: &TextSource,
    windows: bool,
    invalid: &Invalid,
) -> Result<(), SpecError> {
    if analyses.is_empty() {
        return Err(invalid(
            "analyses",
            "[]".into(),
            &format!(
                "list at least one analysis ({})",
                crate::analyses::KINDS.join(", ")
            ),
        ));
    }
    for (index, a) in analyses.iter().enumerate() {
        a.check(&crate::analyses::Check {
            path,
            index,
            texts,
            windows,
        })?;
    }
    Ok(())
}

/// The second models the analyses name, resolved against `base`, each once, in order.
fn companions(analyses: &[AnalysisSpec], base: &Path) -> Vec<ModelRef> {
    let mut out: Vec<ModelRef> = Vec::new();
    for m in analyses.iter().filter_map(|a| a.companion()) {
        let m = m.resolve(base);
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// Parses spec YAML with serde-saphyr's default budget, which rejects alias bombs and
/// runaway documents before they expand.
pub fn parse_yaml(text: &str) -> Result<SpecFile, serde_saphyr::Error> {
    serde_saphyr::from_str::<SpecFile>(text)
}
