//! Corpus files: text and JSONL read line by line, Parquet by row group, each optionally
//! gzip- or zstd-compressed (decompressed as a stream; a compressed Parquet file, which
//! needs random access, into a temporary file first).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::error::{invalid, CorpusError, FieldError};
use super::map::CorpusMap;
use super::source::{numbered, Compression, Corpus, Format, Source};
use super::text::TextInput;

type Texts = Box<dyn Iterator<Item = Result<TextInput, CorpusError>>>;

/// Checks a corpus file: its extensions name a format (and a compression), it exists, and
/// the column fields fit the format.
pub(super) fn check(base: &Path, path: &Path, m: &CorpusMap) -> Result<Source, FieldError> {
    let field =
        if m.column.is_some() || m.id_column.is_some() || m.label.is_some() || m.limit.is_some() {
            "corpus.path"
        } else {
            "corpus"
        };
    let full = base.join(path);
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, compression) = split_compression(&name);
    let format = match stem.rsplit_once('.').map(|(_, e)| e) {
        Some("txt") => Format::Txt,
        Some("jsonl") => Format::Jsonl,
        Some("parquet") => Format::Parquet,
        _ => {
            return Err(invalid(
                field,
                path.display().to_string(),
                "use a .txt file (one text a line), a .jsonl file (objects with \"text\") or a .parquet file, each optionally .gz or .zst",
            ))
        }
    };
    if format == Format::Txt {
        for (f, set) in [
            ("column", &m.column),
            ("id_column", &m.id_column),
            ("label", &m.label),
        ] {
            if set.is_some() {
                return Err(invalid(
                    &format!("corpus.{f}"),
                    format!("{set:?}"),
                    "a .txt corpus has no columns (each line is a text, its id lineN); remove it",
                ));
            }
        }
    }
    if !full.is_file() {
        return Err(invalid(
            field,
            path.display().to_string(),
            &format!(
                "no such file: {} (paths are relative to the spec file)",
                full.display()
            ),
        ));
    }
    Ok(Source::File {
        path: full,
        format,
        compression,
    })
}

/// The texts of a corpus file, as a stream.
pub(super) fn read(
    corpus: &Corpus,
    path: &Path,
    format: Format,
    compression: Compression,
) -> Result<Texts, CorpusError> {
    let err = |detail: String| CorpusError::File {
        path: path.to_path_buf(),
        detail,
    };
    if (format, compression) == (Format::Parquet, Compression::None) {
        let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        return super::parquet::read_files(corpus, vec![(path.to_path_buf(), file)]);
    }
    let plain = open_plain(path, compression)?;
    if format == Format::Parquet {
        let file = unpack(plain, path)?;
        return super::parquet::read_files(corpus, vec![(path.to_path_buf(), file)]);
    }
    let jsonl = format == Format::Jsonl;
    let path = path.to_path_buf();
    let columns = JsonlColumns {
        text: corpus.column().to_string(),
        id: corpus.id_column.clone(),
        label: corpus.label_column().to_string(),
    };
    let lines = BufReader::new(plain).lines().enumerate();
    Ok(Box::new(lines.filter_map(move |(i, line)| {
        let at = Line {
            path: &path,
            number: i + 1,
        };
        let text = match jsonl {
            true => at.jsonl(line, &columns),
            false => at.txt(line),
        };
        text.transpose()
    })))
}

/// A file name's compression, from its last extension, and the name without it.
fn split_compression(name: &str) -> (&str, Compression) {
    if let Some(s) = name.strip_suffix(".gz") {
        (s, Compression::Gzip)
    } else if let Some(s) = name.strip_suffix(".zst") {
        (s, Compression::Zstd)
    } else {
        (name, Compression::None)
    }
}

/// A file as a stream of its decompressed bytes.
fn open_plain(path: &Path, compression: Compression) -> Result<Box<dyn Read>, CorpusError> {
    let err = |detail: String| CorpusError::File {
        path: path.to_path_buf(),
        detail,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    Ok(match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(file)
                .map_err(|e| err(format!("not a zstd stream ({e})")))?,
        ),
    })
}

/// The lines of a text file, decompressed as its last extension says (`.gz`, `.zst`), each
/// checked to be UTF-8, numbered from 1: what `strata extract --texts` reads, as a `.txt`
/// corpus is read.
pub fn text_lines(
    path: &Path,
) -> Result<impl Iterator<Item = Result<(usize, String), CorpusError>>, CorpusError> {
    let (_, compression) = split_compression(&path.to_string_lossy());
    let path = path.to_path_buf();
    let lines = BufReader::new(open_plain(&path, compression)?).lines();
    Ok(lines.enumerate().map(move |(i, line)| {
        let at = Line {
            path: &path,
            number: i + 1,
        };
        at.read(line).map(|l| (i + 1, l))
    }))
}

/// A compressed Parquet file, decompressed into an anonymous temporary file.
fn unpack(mut plain: Box<dyn Read>, path: &Path) -> Result<std::fs::File, CorpusError> {
    let mut tmp = tempfile::tempfile().map_err(|e| CorpusError::File {
        path: path.to_path_buf(),
        detail: format!("no temporary file to decompress into ({e})"),
    })?;
    std::io::copy(&mut plain, &mut tmp).map_err(|e| CorpusError::File {
        path: path.to_path_buf(),
        detail: format!("decompressing: {e}"),
    })?;
    Ok(tmp)
}

/// The fields a JSONL corpus reads.
struct JsonlColumns {
    text: String,
    id: Option<String>,
    label: String,
}

/// A JSONL label as text: a string as it is, an integer or a boolean as written; `None`
/// when absent or null. Anything else is refused, named by its JSON type.
fn json_label(v: Option<&serde_json::Value>) -> Result<Option<String>, &'static str> {
    use serde_json::Value;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err("an empty string"),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(Value::Number(_)) => Err("a fractional number"),
        Some(Value::Array(_)) => Err("an array"),
        Some(Value::Object(_)) => Err("an object"),
    }
}

/// One line of a text or JSONL corpus.
struct Line<'a> {
    path: &'a PathBuf,
    number: usize,
}

impl Line<'_> {
    fn err(&self, detail: String) -> CorpusError {
        CorpusError::Line {
            path: self.path.clone(),
            line: self.number,
            detail,
        }
    }

    fn read(&self, line: std::io::Result<String>) -> Result<String, CorpusError> {
        line.map_err(|e| self.err(format!("{e} (the corpus must be UTF-8)")))
    }

    fn txt(&self, line: std::io::Result<String>) -> Result<Option<TextInput>, CorpusError> {
        let line = self.read(line)?;
        if line.trim().is_empty() {
            return Err(self.err("empty line: each line is one text, so remove blank lines".into()));
        }
        Ok(Some(TextInput {
            id: numbered("line", self.number),
            text: line,
            label: None,
        }))
    }

    fn jsonl(
        &self,
        line: std::io::Result<String>,
        columns: &JsonlColumns,
    ) -> Result<Option<TextInput>, CorpusError> {
        let (column, id_column) = (columns.text.as_str(), columns.id.as_deref());
        let line = self.read(line)?;
        if line.trim().is_empty() {
            return Ok(None);
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| self.err(format!("not a JSON object ({e})")))?;
        let text = v.get(column).and_then(|t| t.as_str()).ok_or_else(|| {
            self.err(format!(
                "no string field {column:?}: give each line one, or name the text field with `corpus: {{path: ..., column: FIELD}}`"
            ))
        })?;
        let id = match (v.get(id_column.unwrap_or("id")), id_column) {
            (None | Some(serde_json::Value::Null), None) => numbered("line", self.number),
            (None | Some(serde_json::Value::Null), Some(c)) => {
                return Err(self.err(format!("no id field {c:?} (corpus.id_column)")))
            }
            (Some(serde_json::Value::String(s)), _) => s.clone(),
            (Some(other), _) => other.to_string(),
        };
        if text.is_empty() {
            return Err(self.err(format!("text `{id}` is empty")));
        }
        let label = json_label(v.get(&columns.label))
            .map_err(|what| self.err(format!("label field {:?} of text `{id}` is {what}: labels are strings, integers or booleans (corpus.label)", columns.label)))?;
        Ok(Some(TextInput {
            id,
            text: text.to_string(),
            label,
        }))
    }
}
