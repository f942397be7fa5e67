//! Parquet corpora, read with the `parquet` crate's row reader (no Arrow): only the text
//! and id columns are decoded, one row group at a time, so memory stays flat whatever the
//! file's size. Every file's columns are checked before the first text is read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{ConvertedType, LogicalType, Type as Physical};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::Field;
use parquet::schema::types::Type;

use super::error::CorpusError;
use super::source::{numbered, Corpus};
use super::text::TextInput;

type Texts = Box<dyn Iterator<Item = Result<TextInput, CorpusError>>>;

/// The texts of Parquet files on disk, one file after another.
pub(super) fn read(corpus: &Corpus, files: Vec<PathBuf>) -> Result<Texts, CorpusError> {
    let opened = files
        .into_iter()
        .map(|p| {
            let f = std::fs::File::open(&p).map_err(|e| CorpusError::File {
                path: p.clone(),
                detail: e.to_string(),
            })?;
            Ok((p, f))
        })
        .collect::<Result<Vec<_>, CorpusError>>()?;
    read_files(corpus, opened)
}

/// The texts of opened Parquet files (`path` names each in messages).
pub(super) fn read_files(
    corpus: &Corpus,
    files: Vec<(PathBuf, std::fs::File)>,
) -> Result<Texts, CorpusError> {
    // Rows are numbered across the files, for ids of rows without one.
    let mut parts: Vec<(PathBuf, Columns, RowIter<'static>, usize)> = Vec::new();
    let mut first = 0;
    for (path, file) in files {
        let err = |detail: String| CorpusError::File {
            path: path.clone(),
            detail,
        };
        let reader = SerializedFileReader::new(file)
            .map_err(|e| err(format!("not a Parquet file ({e})")))?;
        let n_rows = reader.metadata().file_metadata().num_rows().max(0) as usize;
        if n_rows == 0 {
            return Err(err("holds no rows: a corpus needs at least one text".into()));
        }
        let columns =
            Columns::find(corpus, reader.metadata().file_metadata().schema()).map_err(err)?;
        let rows = RowIter::from_file_into(Box::new(reader))
            .project(Some(columns.projection.clone()))
            .map_err(|e| err(e.to_string()))?;
        parts.push((path, columns, rows, first));
        first += n_rows;
    }
    Ok(Box::new(parts.into_iter().flat_map(
        |(path, columns, rows, first)| {
            rows.enumerate()
                .map(move |(i, row)| columns.text(&path, first, i, row))
        },
    )))
}

/// The columns a corpus reads from one file.
struct Columns {
    /// The text column's name.
    text: String,
    /// The id column's name, when the file has one (required when named in the spec).
    id: Option<String>,
    /// The label column's name, when the file has one (required when named in the spec).
    label: Option<String>,
    /// The projection of the two.
    projection: Type,
}

impl Columns {
    // Private: its message is the `detail` of the caller's CorpusError::File.
    fn find(corpus: &Corpus, schema: &Type) -> Result<Self, String> {
        let fields = schema.get_fields();
        let names = || {
            fields
                .iter()
                .map(|f| f.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let lookup = |name: &str| fields.iter().find(|f| f.name() == name).cloned();
        let text_name = corpus.column();
        let text = lookup(text_name).ok_or_else(|| {
            format!(
                "no column {text_name:?} (it has: {}): name the text column with `corpus: {{..., column: NAME}}`",
                names()
            )
        })?;
        if !is_string(&text) {
            return Err(format!(
                "column {text_name:?} is {}, not a string column: name the text column with `corpus: {{..., column: NAME}}`",
                describe(&text)
            ));
        }
        let id = match &corpus.id_column {
            Some(name) => Some(lookup(name).ok_or_else(|| {
                format!(
                    "no id column {name:?} (it has: {}) (corpus.id_column)",
                    names()
                )
            })?),
            None => lookup("id"),
        };
        if let Some(id) = &id {
            if !(is_string(id) || is_integer(id)) {
                return Err(format!(
                    "id column {:?} is {}: ids must be strings or integers (corpus.id_column)",
                    id.name(),
                    describe(id)
                ));
            }
        }
        let label = match &corpus.label {
            Some(name) => Some(lookup(name).ok_or_else(|| {
                format!(
                    "no label column {name:?} (it has: {}) (corpus.label)",
                    names()
                )
            })?),
            None => lookup("label"),
        };
        if let Some(label) = &label {
            if !(is_string(label) || is_integer(label) || is_boolean(label)) {
                return Err(format!(
                    "label column {:?} is {}: labels must be strings, integers or booleans (corpus.label)",
                    label.name(),
                    describe(label)
                ));
            }
        }
        let mut kept: Vec<Arc<Type>> = vec![text.clone()];
        for extra in id.iter().chain(&label) {
            if kept.iter().all(|k| k.name() != extra.name()) {
                kept.push(extra.clone());
            }
        }
        let projection = Type::group_type_builder(schema.name())
            .with_fields(kept)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            text: text.name().to_string(),
            id: id.map(|i| i.name().to_string()),
            label: label.map(|l| l.name().to_string()),
            projection,
        })
    }

    /// The text of row `i` of a file whose first row is the corpus' row `first`.
    fn text(
        &self,
        path: &Path,
        first: usize,
        i: usize,
        row: parquet::errors::Result<parquet::record::Row>,
    ) -> Result<TextInput, CorpusError> {
        let err = |detail: String| CorpusError::Row {
            path: path.to_path_buf(),
            row: i + 1,
            detail,
        };
        let row = row.map_err(|e| err(e.to_string()))?;
        let (mut text, mut id, mut label) = (None, None, None);
        for (name, field) in row.get_column_iter() {
            if *name == self.text {
                text = Some(field.clone());
            }
            if Some(name) == self.id.as_ref() {
                id = Some(field.clone());
            }
            if Some(name) == self.label.as_ref() {
                label = Some(field.clone());
            }
        }
        let id = match id {
            None | Some(Field::Null) => numbered("row", first + i + 1),
            Some(Field::Str(s)) => s,
            Some(other) => other.to_string(),
        };
        let label = match label {
            None | Some(Field::Null) => None,
            Some(Field::Str(s)) if s.is_empty() => {
                return Err(err(format!(
                    "text `{id}` has an empty label: leave it null to leave the text unlabelled"
                )))
            }
            Some(Field::Str(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        };
        match text {
            Some(Field::Str(s)) if !s.is_empty() => Ok(TextInput { id, text: s, label }),
            Some(Field::Str(_)) => Err(err(format!("text `{id}` is empty"))),
            _ => Err(err(format!(
                "column {:?} is null: every row needs a text (filter the nulls out first)",
                self.text
            ))),
        }
    }
}

fn is_string(t: &Type) -> bool {
    let info = t.get_basic_info();
    t.is_primitive()
        && t.get_physical_type() == Physical::BYTE_ARRAY
        && (matches!(info.logical_type_ref(), Some(LogicalType::String))
            || info.converted_type() == ConvertedType::UTF8)
}

fn is_boolean(t: &Type) -> bool {
    t.is_primitive() && t.get_physical_type() == Physical::BOOLEAN
}

fn is_integer(t: &Type) -> bool {
    t.is_primitive() && matches!(t.get_physical_type(), Physical::INT32 | Physical::INT64)
}

/// A column's type as a message shows it.
fn describe(t: &Type) -> String {
    if !t.is_primitive() {
        return "a nested group".into();
    }
    let info = t.get_basic_info();
    match info.logical_type_ref() {
        Some(l) => format!("{} ({l:?})", t.get_physical_type()),
        None => t.get_physical_type().to_string(),
    }
}
