//! `scatter`: one hidden state of one text, as the notebook's two scatter plots (by
//! embedding dimension and by token). The state keeps that text's matrix only.

use charming::component::{Axis, Grid};
use charming::element::{AxisType, ItemStyle, NameLocation, Tooltip, Trigger};
use charming::series::Scatter as ScatterSeries;
use charming::Chart;
use serde::{Deserialize, Serialize};

use super::kind::{Analysis, Check, Context, KindError, Section, Setup, TextActivations};
use crate::charts::{option, r, title, ChartSpec, MAX_SCATTER_POINTS};
use crate::compare::rules::{Comparer, Mismatch};
use crate::spec::error::SpecError;
use crate::spec::layers::LayerRef;

/// `{kind: scatter, layer: 3, text: ID}`: one hidden state of one text.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scatter {
    /// The hidden state.
    pub layer: LayerRef,
    /// The text's id. Default: the first text that has a token left after
    /// `exclude_first_token`.
    #[serde(default)]
    pub text: Option<String>,
}

/// The kept text, once seen.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScatterState {
    /// Hidden-state index.
    pub layer: usize,
    /// Its label.
    pub label: String,
    /// The text asked for (`None`: the first with a row).
    pub text: Option<String>,
    /// The kept text's result (merges keep the earlier range's, so its place need not
    /// be stored).
    pub kept: Option<ScatterResult>,
}

/// One hidden state of one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScatterResult {
    /// Hidden-state label.
    pub label: String,
    /// Text id.
    pub text: String,
    /// Token positions of the rows (token 0 absent when excluded).
    pub token_index: Vec<usize>,
    /// The tokens of the rows, decoded.
    pub tokens: Vec<String>,
    /// `[rows][dim]` activations (f32).
    #[serde(serialize_with = "crate::json::short_f32_rows")]
    pub values: Vec<Vec<f32>>,
}

impl ScatterState {
    /// An empty state keeping hidden state `layer` of text `text` (`None`: the first text
    /// with a row).
    pub fn new(layer: usize, label: String, text: Option<String>) -> Self {
        Self {
            layer,
            label,
            text,
            kept: None,
        }
    }
}

impl Analysis for Scatter {
    const KIND: &'static str = "scatter";
    type State = ScatterState;
    type Output = ScatterResult;

    fn check(&self, at: &Check) -> Result<(), SpecError> {
        at.text_id(self.text.as_ref())
    }

    fn start(&self, at: &Setup) -> Result<ScatterState, SpecError> {
        let layer = at.layer("layer", &self.layer)?;
        Ok(ScatterState::new(
            layer,
            at.labels[layer].clone(),
            self.text.clone(),
        ))
    }

    fn layers(s: &ScatterState) -> Vec<usize> {
        vec![s.layer]
    }

    fn observe(s: &mut ScatterState, t: &TextActivations) {
        let wanted = match &s.text {
            Some(id) => id == t.id,
            // The first text with a row to show: a one-token text has none once token 0
            // is excluded.
            None => t.rows() > 0,
        };
        if !wanted || s.kept.is_some() {
            return;
        }
        let rows = t.rows();
        let kept = ScatterResult {
            label: s.label.clone(),
            text: t.id.to_string(),
            token_index: (t.first_token..t.first_token + rows).collect(),
            tokens: t.tokens[t.first_token..t.first_token + rows].to_vec(),
            values: t
                .state(s.layer)
                .chunks(t.dim.max(1))
                .map(<[f32]>::to_vec)
                .collect(),
        };
        s.kept = Some(kept);
    }

    fn merge(s: &mut ScatterState, right: ScatterState) -> Result<(), KindError> {
        if (s.layer, &s.text) != (right.layer, &right.text) {
            return Err(KindError::Mismatch(
                "scatters of different hidden states or texts".into(),
            ));
        }
        // The earlier text wins, as in one pass.
        if s.kept.is_none() {
            s.kept = right.kept;
        }
        Ok(())
    }

    fn finish(s: ScatterState) -> Result<ScatterResult, KindError> {
        match (s.kept, s.text) {
            (Some(kept), _) => Ok(kept),
            (None, Some(id)) => Err(KindError::NoResult(format!(
                "`text` = {id:?}: no text has this id; name one of the texts"
            ))),
            (None, None) => Ok(ScatterResult {
                label: s.label,
                text: String::new(),
                token_index: vec![],
                tokens: vec![],
                values: vec![],
            }),
        }
    }

    fn validate(o: &ScatterResult, cx: &Context) -> Result<(), KindError> {
        super::kind::expect_known_labels(std::slice::from_ref(&o.label), cx.labels)?;
        super::kind::expect_len("tokens", o.tokens.len(), o.values.len())?;
        super::kind::expect_len("token_index", o.token_index.len(), o.values.len())?;
        for (i, row) in o.values.iter().enumerate() {
            super::kind::expect_len(
                &format!("values[{i}] (one value per dimension)"),
                row.len(),
                cx.hidden_size,
            )?;
        }
        Ok(())
    }

    fn section(o: &ScatterResult, cx: &Context, medium: super::kind::Medium) -> Section {
        let dims = o.values.first().map_or(0, Vec::len);
        let stride = match medium {
            super::kind::Medium::Page => scatter_stride(o.values.len(), dims),
            super::kind::Medium::Figure => 1,
        };
        let mut notes = Vec::new();
        if stride > 1 {
            notes.push(format!(
                "Thinned for display: every {stride}th of {dims} dimensions is drawn ({} of {} points); results.json holds them all.",
                dims.div_ceil(stride) * o.values.len(),
                dims * o.values.len()
            ));
        }
        let index = cx
            .labels
            .iter()
            .position(|l| l == &o.label)
            .map(|i| format!(" (hidden_states[{i}])"))
            .unwrap_or_default();
        Section {
            wide: false,
            collapsed: None,
            heading: format!("Activations of hidden state {}{index}", o.label),
            intro: format!(
                "Text “{}”: {} tokens × {dims} dimensions. Hover a point for its token.",
                o.text,
                o.values.len()
            ),
            notes,
            charts: charts(&o.label, &o.tokens, &o.token_index, &o.values, stride),
            tables: vec![],
        }
    }

    fn compare(a: &ScatterResult, b: &ScatterResult, c: &mut Comparer) -> Result<(), Mismatch> {
        c.same("hidden state", &a.label, &b.label)?;
        c.same("text", &a.text, &b.text)?;
        // Different lengths: the token ids changed, which compare reports there.
        if a.values.len() == b.values.len() {
            let mut acc = c.metric("values");
            for (t, (ra, rb)) in a.values.iter().zip(&b.values).enumerate() {
                for (d, (x, y)) in ra.iter().zip(rb).enumerate() {
                    acc.add(*x as f64, *y as f64, || format!("row {t}, dim {d}"));
                }
            }
            c.push(acc);
        }
        Ok(())
    }
}

/// The dimension stride that keeps a `[tokens, dims]` scatter under the point budget.
pub fn scatter_stride(tokens: usize, dims: usize) -> usize {
    let total = tokens * dims;
    total.div_ceil(MAX_SCATTER_POINTS).max(1)
}

/// The notebook's two scatters: by embedding dimension (each token a colour) and by token
/// (each dimension a colour).
fn charts(
    label: &str,
    tokens: &[String],
    token_index: &[usize],
    values: &[Vec<f32>],
    stride: usize,
) -> Vec<ChartSpec> {
    let dims = values.first().map_or(0, Vec::len);
    let kept: Vec<usize> = (0..dims).step_by(stride).collect();
    let shown = |i: usize| format!("{}: {}", token_index[i], tokens[i].escape_debug());
    let names: Vec<String> = (0..values.len()).map(shown).collect();
    vec![
        ChartSpec {
            title: format!("scatter-{label}-by-dimension"),
            option: option(by_dimension(label, &names, values, &kept, dims)),
            height: 420,
        },
        ChartSpec {
            title: format!("scatter-{label}-by-token"),
            option: option(by_token(label, names, values, &kept)),
            height: 420,
        },
    ]
}

/// The notebook's first scatter: activation against dimension, a series per token.
fn by_dimension(
    label: &str,
    names: &[String],
    values: &[Vec<f32>],
    kept: &[usize],
    dims: usize,
) -> Chart {
    let mut chart = Chart::new()
        .title(title(
            &format!("Hidden state {label}, by embedding dimension"),
            "Each color is a token",
        ))
        .tooltip(
            Tooltip::new()
                .trigger(Trigger::Item)
                .formatter("token {a}<br/>dim, activation: {c}"),
        )
        .grid(Grid::new().top(70).bottom(50).left(60).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Value)
                .name("Embedding dimension")
                .name_location(NameLocation::Middle)
                .name_gap(28)
                .min(0)
                .max(dims as f64),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name("Activation"));
    for (row, name) in values.iter().zip(names) {
        let data: Vec<Vec<f64>> = kept
            .iter()
            .map(|&d| vec![d as f64, r(row[d] as f64)])
            .collect();
        chart = chart.series(
            ScatterSeries::new()
                .name(name.as_str())
                .symbol_size(3)
                .data(data)
                .item_style(ItemStyle::new().opacity(0.4)),
        );
    }
    chart
}

/// The notebook's second scatter: activation against token, a series per dimension.
fn by_token(label: &str, categories: Vec<String>, values: &[Vec<f32>], kept: &[usize]) -> Chart {
    let mut chart = Chart::new()
        .title(title(
            &format!("Hidden state {label}, by token"),
            "Each color is an embedding dimension",
        ))
        .tooltip(
            Tooltip::new()
                .trigger(Trigger::Item)
                .formatter("dim {a}<br/>token {b}: {c}"),
        )
        .grid(Grid::new().top(70).bottom(70).left(60).right(20))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .name("Token index")
                .name_location(NameLocation::Middle)
                .name_gap(45)
                .data(categories),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name("Activation"));
    for &d in kept {
        let data: Vec<Vec<f64>> = values
            .iter()
            .enumerate()
            .map(|(i, row)| vec![i as f64, r(row[d] as f64)])
            .collect();
        chart = chart.series(
            ScatterSeries::new()
                .name(d.to_string())
                .symbol_size(3)
                .data(data)
                .item_style(ItemStyle::new().opacity(0.4)),
        );
    }
    chart
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_text_it_skips_texts_with_no_rows() {
        let mut s = ScatterState {
            layer: 0,
            label: "emb".into(),
            text: None,
            kept: None,
        };
        let one = vec!["<0>".to_string()];
        let two = vec!["<0>".to_string(), "b".to_string()];
        let empty = vec![Some(Vec::new())];
        let row = vec![Some(vec![1.0f32, 2.0])];
        for (i, (id, tokens, states)) in [("a", &one, &empty), ("b", &two, &row)]
            .into_iter()
            .enumerate()
        {
            Scatter::observe(
                &mut s,
                &TextActivations {
                    index: i,
                    id,
                    label: None,
                    window_of: None,
                    tokens,
                    first_token: 1,
                    dim: 2,
                    states,
                    token_ids: &[],
                    lens: None,
                    previous: None,
                    companions: &[],
                    companion_readouts: &[],
                    attention: &[],
                    routing: &[],
                    splice: None,
                    sites: &[],
                },
            );
        }
        let out = Scatter::finish(s).unwrap();
        assert_eq!(out.text, "b");
        assert_eq!(out.values, vec![vec![1.0, 2.0]]);
    }

    #[test]
    fn dense_scatters_are_thinned_by_whole_dimensions() {
        assert_eq!(scatter_stride(70, 768), 1);
        assert_eq!(scatter_stride(1024, 1600), 28);
    }
}
