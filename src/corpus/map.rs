//! `corpus:` as a spec writes it: a file path, or a map.

use std::path::PathBuf;

use serde::Deserialize;

/// `corpus:` as written: a path, or a map.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorpusMap {
    /// A corpus file, relative to the spec file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A Hub dataset (`Salesforce/wikitext`): the Parquet files the Hub keeps of it are read.
    #[serde(default)]
    pub dataset: Option<String>,
    /// The dataset's configuration (subset). Default `default`.
    #[serde(default)]
    pub config: Option<String>,
    /// The dataset's split. Default `train`.
    #[serde(default)]
    pub split: Option<String>,
    /// The revision holding the dataset's Parquet files. Default `refs/convert/parquet`,
    /// the branch where the Hub keeps its Parquet conversion of every public dataset; a
    /// commit of it pins the files.
    #[serde(default)]
    pub revision: Option<String>,
    /// The text column (JSONL field, Parquet column). Default `text`.
    #[serde(default)]
    pub column: Option<String>,
    /// The id column. Default: `id` when there is one, else the line or row number
    /// (`line7`, `row7`, from 1).
    #[serde(default)]
    pub id_column: Option<String>,
    /// The label column (JSONL field, Parquet column): each text's class, for the kinds
    /// that compare classes (`directions`, `project`). Default: `label` when there is
    /// one. Strings, integers and booleans are read as their text; a null or a missing
    /// field leaves the text unlabelled.
    #[serde(default)]
    pub label: Option<String>,
    /// Read only the first N texts.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `corpus:` in a spec: a file path, or a [`CorpusMap`].
#[derive(Debug, Clone)]
pub struct CorpusSpec(pub CorpusMap);

/// A path or a map, as the deserializer below reads them.
impl schemars::JsonSchema for CorpusSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CorpusSpec".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let map = generator.subschema_for::<CorpusMap>();
        schemars::json_schema!({
            "description": "A corpus file relative to the spec (`.txt`, `.jsonl`, `.parquet`, each optionally `.gz` or `.zst`), or a map `{path: FILE, ...}` or `{dataset: ID, config: ..., split: ...}`.",
            "anyOf": [{"type": "string", "minLength": 1}, map]
        })
    }
}

impl<'de> Deserialize<'de> for CorpusSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CorpusSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a corpus file, or a map {path: FILE} or {dataset: ID, split: ...}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CorpusSpec, E> {
                Ok(CorpusSpec(CorpusMap {
                    path: Some(v.into()),
                    ..Default::default()
                }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<CorpusSpec, A::Error> {
                CorpusMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(CorpusSpec)
            }
        }
        d.deserialize_any(V)
    }
}
