//! Running an experiment: texts are read as a stream, tokenized, run through the model a
//! batch at a time, and handed to the analyses' accumulators; activations are dropped as
//! soon as every analysis has seen them, so memory does not grow with the corpus.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::analysis::{Accumulator, TextActivations};
use crate::extract::TextInput;
use crate::model::{LoadedModel, ModelError, PRE_FINAL_NORM};
use crate::results::{ModelSummary, Provenance, Results, Settings, TextRecord, SCHEMA_VERSION};
use crate::spec::{AnalysisSpec, LayersSpec, Spec, SpecError, TextSource};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec does not fit the model (a layer out of range, ...).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Loading or running the model failed, or a text does not fit it.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A corpus line is unusable.
    #[error("corpus {path}, line {line}: {detail}")]
    Corpus {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The run saw too little data for an analysis.
    #[error("{0}")]
    Data(String),
}

/// A stream of texts from the spec or a corpus file.
pub fn text_stream(
    source: &TextSource,
) -> Result<Box<dyn Iterator<Item = Result<TextInput, RunError>>>, RunError> {
    match source {
        TextSource::Inline(texts) => Ok(Box::new(texts.clone().into_iter().map(Ok))),
        TextSource::Corpus(path) => {
            let file = std::fs::File::open(path).map_err(|e| RunError::Corpus {
                path: path.clone(),
                line: 0,
                detail: e.to_string(),
            })?;
            let jsonl = path.extension().is_some_and(|e| e == "jsonl");
            let path = path.clone();
            let lines = std::io::BufReader::new(file).lines().enumerate();
            Ok(Box::new(lines.filter_map(move |(i, line)| {
                corpus_line(&path, i + 1, line, jsonl).transpose()
            })))
        }
    }
}

fn corpus_line(
    path: &Path,
    line_no: usize,
    line: std::io::Result<String>,
    jsonl: bool,
) -> Result<Option<TextInput>, RunError> {
    let err = |detail: String| RunError::Corpus {
        path: path.to_path_buf(),
        line: line_no,
        detail,
    };
    let line = line.map_err(|e| err(format!("{e} (the corpus must be UTF-8)")))?;
    if !jsonl {
        if line.trim().is_empty() {
            return Err(err(
                "empty line: each line is one text, so remove blank lines".into(),
            ));
        }
        return Ok(Some(TextInput {
            id: format!("line{line_no}"),
            text: line,
        }));
    }
    if line.trim().is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| err(format!("not a JSON object ({e})")))?;
    let text = v
        .get("text")
        .and_then(|t| t.as_str())
        .ok_or_else(|| err("no string field \"text\"".into()))?;
    let id = match v.get("id") {
        None | Some(serde_json::Value::Null) => format!("line{line_no}"),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if text.is_empty() {
        return Err(err(format!("text `{id}` is empty")));
    }
    Ok(Some(TextInput {
        id,
        text: text.to_string(),
    }))
}

/// Counts the texts of a source without keeping them (for the progress bar).
pub fn count_texts(source: &TextSource) -> Option<u64> {
    match source {
        TextSource::Inline(t) => Some(t.len() as u64),
        TextSource::Corpus(path) => {
            let f = std::fs::File::open(path).ok()?;
            Some(
                std::io::BufReader::new(f)
                    .lines()
                    .map_while(Result::ok)
                    .filter(|l| !l.trim().is_empty())
                    .count() as u64,
            )
        }
    }
}

/// Builds one accumulator per analysis, resolving layer names against the model.
fn accumulators(
    spec: &Spec,
    labels: &[String],
    info: &crate::model::ModelInfo,
) -> Result<(Vec<usize>, Vec<Accumulator>), SpecError> {
    let selected = spec.resolve_layers("layers", &spec.layers, info)?;
    let names = |ls: &[usize]| ls.iter().map(|&l| labels[l].clone()).collect::<Vec<_>>();
    let mut out = Vec::new();
    for (i, a) in spec.analyses.iter().enumerate() {
        out.push(match a {
            AnalysisSpec::Scatter { layer, text } => {
                let l = spec.resolve_layer(&format!("analyses[{i}].layer"), layer, info)?;
                Accumulator::scatter(l, labels[l].clone(), text.clone())
            }
            AnalysisSpec::Covariance {} => {
                Accumulator::covariance(selected.clone(), names(&selected))
            }
            AnalysisSpec::Pairplot {
                layers,
                points,
                sample,
            } => {
                let ls = spec.resolve_layers(
                    &format!("analyses[{i}].layers"),
                    &LayersSpec::List(layers.clone()),
                    info,
                )?;
                let ls_labels = names(&ls);
                Accumulator::pairplot(ls, ls_labels, *sample, *points, spec.seed)
            }
            AnalysisSpec::Histogram { range, bins } => Accumulator::histogram(
                selected.clone(),
                names(&selected),
                range[0],
                range[1],
                *bins,
            ),
            AnalysisSpec::Summary {} => Accumulator::summary(selected.clone(), names(&selected)),
            AnalysisSpec::Outliers { k } => {
                Accumulator::outliers(selected.clone(), names(&selected), *k)
            }
        });
    }
    Ok((selected, out))
}

/// Runs `spec` on a loaded model. `on_text` is called after each text (progress).
pub fn run(
    spec: &Spec,
    model: &LoadedModel,
    on_text: &mut dyn FnMut(&str),
) -> Result<Results, RunError> {
    let info = model.model.info().clone();
    let mut labels = info.labels.clone();
    labels.push(PRE_FINAL_NORM.to_string());
    let (selected, mut accs) = accumulators(spec, &labels, &info)?;
    let mut needed = vec![false; labels.len()];
    for a in &accs {
        for l in a.layers() {
            needed[l] = true;
        }
    }

    let mut records: Vec<TextRecord> = Vec::new();
    let mut stream = text_stream(&spec.texts)?;
    let mut ids = std::collections::BTreeSet::new();
    loop {
        // One batch of texts, tokenized (a bad text fails before its batch runs).
        let mut batch: Vec<(TextInput, Vec<u32>)> = Vec::with_capacity(spec.batch_size);
        for item in stream.by_ref().take(spec.batch_size) {
            let t = item?;
            if !ids.insert(t.id.clone()) {
                return Err(RunError::Data(format!(
                    "text id `{}` appears twice: give every text a unique id",
                    t.id
                )));
            }
            let tokens = model.encode(&t.id, &t.text)?;
            batch.push((t, tokens));
        }
        if batch.is_empty() {
            break;
        }
        let refs: Vec<&[u32]> = batch.iter().map(|(_, ids)| ids.as_slice()).collect();
        let outputs = model.model.forward(&refs)?;
        for ((input, token_ids), out) in batch.iter().zip(outputs) {
            let index = records.len();
            let tokens = model.tokenizer.token_strings(token_ids);
            let skip = usize::from(spec.exclude_first_token);
            let mut states: Vec<Option<Vec<f32>>> = vec![None; labels.len()];
            for (l, want) in needed.iter().enumerate() {
                if !want {
                    continue;
                }
                let t = if l < out.states.len() {
                    &out.states[l]
                } else {
                    &out.pre_final_norm
                };
                // [n_tokens, dim] -> [n_tokens - skip, dim]
                let n = t.dim(0).map_err(ModelError::from)?;
                let kept = t
                    .narrow(0, skip.min(n), n - skip.min(n))
                    .map_err(ModelError::from)?;
                states[l] = Some(
                    kept.flatten_all()
                        .and_then(|x| x.to_vec1())
                        .map_err(ModelError::from)?,
                );
            }
            let acts = TextActivations {
                index,
                id: &input.id,
                tokens: &tokens,
                first_token: skip,
                dim: info.hidden_size,
                states: &states,
            };
            for a in accs.iter_mut() {
                a.observe(&acts);
            }
            records.push(TextRecord {
                id: input.id.clone(),
                n_tokens: token_ids.len(),
                token_ids: token_ids.clone(),
                tokens,
            });
            on_text(&input.id);
        }
    }
    if records.is_empty() {
        return Err(RunError::Data("the corpus holds no text".into()));
    }

    let mut analyses = Vec::with_capacity(accs.len());
    for (i, acc) in accs.into_iter().enumerate() {
        if let Accumulator::Scatter {
            text: Some(id),
            kept: None,
            ..
        } = &acc
        {
            return Err(SpecError::Invalid {
                path: spec.path.clone(),
                field: format!("analyses[{i}].text"),
                value: format!("{id:?}"),
                fix: "no text has this id; name one of the texts".into(),
            }
            .into());
        }
        if let Accumulator::Covariance { acc: c, .. } = &acc {
            if c.count() < 2 {
                return Err(RunError::Data(format!(
                    "analyses[{i}] (covariance): only {} point(s) to analyse; with exclude_first_token a one-token text contributes none",
                    c.count()
                )));
            }
        }
        analyses.push(acc.finish());
    }

    let corpus_sha256 = match &spec.texts {
        TextSource::Corpus(p) => Some(crate::model::hub::sha256_file(p)?),
        TextSource::Inline(_) => None,
    };
    Ok(Results {
        schema_version: SCHEMA_VERSION,
        name: spec.name.clone(),
        title: spec.title.clone(),
        provenance: Provenance {
            model: model.provenance.clone(),
            spec_sha256: spec.sha256.clone(),
            corpus_sha256,
            strata_version: crate::VERSION.to_string(),
            strata_commit: env!("STRATA_GIT_COMMIT").to_string(),
            candle_version: env!("STRATA_CANDLE_VERSION").to_string(),
            dtype: "f32".into(),
            device: "cpu".into(),
        },
        settings: Settings {
            seed: spec.seed,
            exclude_first_token: spec.exclude_first_token,
            layers: selected.iter().map(|&l| labels[l].clone()).collect(),
            batch_size: spec.batch_size,
            compare: spec.compare,
        },
        model: ModelSummary {
            architecture: info.architecture.clone(),
            quantization: info.quantization.clone(),
            n_layers: info.n_layers,
            hidden_size: info.hidden_size,
            labels: info.labels.clone(),
        },
        texts: records,
        analyses,
    })
}
