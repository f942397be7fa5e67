//! Hidden states as a spec names them (an index or a label), and their resolution against
//! a model, with an error naming the field, the value and what the model has.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::error::SpecError;
use crate::model::{ModelInfo, PRE_FINAL_NORM};

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

/// Resolves `layers` against a model: indices into `labels` + `[pre_final_norm]`.
pub fn resolve_layers(
    path: &Path,
    field: &str,
    refs: &LayersSpec,
    info: &ModelInfo,
) -> Result<Vec<usize>, SpecError> {
    match refs {
        LayersSpec::All => Ok((0..info.labels.len()).collect()),
        LayersSpec::List(list) => list
            .iter()
            .enumerate()
            .map(|(i, r)| resolve_layer(path, &format!("{field}[{i}]"), r, info))
            .collect(),
    }
}

/// Resolves one layer reference. `info` may be a site's view of the model (one label per
/// block, no `pre_final_norm`).
pub fn resolve_layer(
    path: &Path,
    field: &str,
    r: &LayerRef,
    info: &ModelInfo,
) -> Result<usize, SpecError> {
    let n = info.labels.len();
    // A site's view has one vector per block; the hidden states have one more.
    let hidden = n == info.n_layers + 1;
    let found = match r {
        LayerRef::Index(i) => (*i < n).then_some(*i),
        LayerRef::Label(l) if l == PRE_FINAL_NORM => hidden.then_some(n),
        LayerRef::Label(l) => info.labels.iter().position(|x| x == l),
    };
    let first = info.labels.first().map(String::as_str).unwrap_or("");
    let last = info.labels.last().map(String::as_str).unwrap_or("");
    let fix = if hidden {
        format!(
            "{} has {n} hidden states: indices 0..={}, labels {first} ... {last}, or \"{PRE_FINAL_NORM}\"",
            info.architecture,
            n.saturating_sub(1),
        )
    } else {
        format!(
            "{} has {n} vectors at this site, one per block: indices 0..={}, labels {first} ... {last}",
            info.architecture,
            n.saturating_sub(1),
        )
    };
    found.ok_or_else(|| SpecError::invalid(path, field, r.to_string(), fix))
}

/// An index or a label, as the deserializer above reads it.
impl schemars::JsonSchema for LayerRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LayerRef".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A hidden state: its index (0 is the embeddings) or its label (`emb`, `h.0`, ..., `pre_final_norm`).",
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "minLength": 1}]
        })
    }
}

/// `all` or a list, as the deserializer above reads it.
impl schemars::JsonSchema for LayersSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LayersSpec".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let item = generator.subschema_for::<LayerRef>();
        schemars::json_schema!({
            "description": "`all` (every hidden state) or a list of hidden-state indices and labels, e.g. `[0, 3, \"h.11\"]`.",
            "anyOf": [{"const": "all"}, {"type": "array", "items": item}]
        })
    }
}
