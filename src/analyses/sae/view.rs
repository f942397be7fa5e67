//! The `sae` section: density and L0 histograms, the reconstruction figures (and the
//! splice metrics when asked for), and a small dashboard of features (the most frequent
//! and the strongest, each with its top examples in context).

use super::result::{SaeResult, TopFeature};
use super::splice::SpliceResult;
use crate::analyses::firing::{Example, BINS};
use crate::analyses::kind::{Context, Medium, Section};
use crate::charts::{bars, Bars, ChartSpec};
use crate::view::{fmt_num, Table};

/// Examples shown per feature in the dashboard.
const SHOWN: usize = 3;

/// The section.
pub fn section(o: &SaeResult, _: &Context, _: Medium) -> Section {
    let a = &o.sae;
    let k = a.k.map(|k| format!(", k = {k}")).unwrap_or_default();
    let (heading, reads) = match (&a.label_out, &a.hook_out) {
        (Some(out), Some(hook_out)) => (
            format!("Transcoder from {} to {out}", a.label),
            format!("reading {} and predicting {hook_out}", a.hook),
        ),
        _ => (
            format!("Sparse autoencoder at {}", a.label),
            format!("read at {}", a.hook),
        ),
    };
    Section {
        heading,
        intro: format!(
            "{} ({}{k}, {} features, {reads}) over {} tokens. Inputs {} centred per token ({}).",
            a.source.id,
            match a.label_out {
                Some(_) => a.architecture.clone(),
                None => format!("{} SAE", a.architecture),
            },
            a.d_sae,
            o.tokens,
            if a.center { "were" } else { "were not" },
            a.center_from
        ),
        notes: notes(o),
        charts: vec![density_chart(o), l0_chart(o)],
        tables: [figures_table(o)]
            .into_iter()
            .chain(o.splice.as_ref().map(splice_table))
            .chain([
                feature_table(o, &o.top_by_frequency, "Most frequent features"),
                feature_table(o, &o.top_by_max, "Features with the largest activations"),
            ])
            .collect(),
        wide: false,
        collapsed: None,
    }
}

fn notes(o: &SaeResult) -> Vec<String> {
    let mut notes = vec![format!(
        "{} pre-activations lay within 1e-5·(1+|cut|) of their cut (a threshold, ReLU's 0, or a top-k tie): another implementation's rounding may count those differently.",
        o.boundary
    )];
    if let Some(t) = &o.training {
        notes.push(format!(
            "{} features that fired in training never fired here; {} that never fired in training did.",
            t.alive_in_training_dead_here, t.dead_in_training_alive_here
        ));
    }
    notes
}

fn density_chart(o: &SaeResult) -> ChartSpec {
    let labels = o.log_frequency_edges[..BINS]
        .iter()
        .map(|e| format!("1e{}", fmt_num(*e)))
        .collect();
    let counts = o.frequency_counts.iter().map(|&c| c as f64).collect();
    bars(
        Bars {
            name: "sae-density",
            heading: (
                "Feature density",
                &format!(
                    "features per log10-frequency bin; {} dead features left out",
                    o.dead
                ),
            ),
            axes: ("firing frequency (bin start)", "features"),
        },
        labels,
        counts,
    )
}

fn l0_chart(o: &SaeResult) -> ChartSpec {
    let labels = o.l0_counts.iter().map(|(l, _)| l.to_string()).collect();
    let counts = o.l0_counts.iter().map(|&(_, c)| c as f64).collect();
    bars(
        Bars {
            name: "sae-l0",
            heading: (
                "Active features per token (L0)",
                &format!("mean {}", fmt_num(o.l0)),
            ),
            axes: ("active features", "tokens"),
        },
        labels,
        counts,
    )
}

fn figures_table(o: &SaeResult) -> Table {
    let d = o.sae.d_sae as f64;
    let rows = [
        ("L0 (mean active features)", o.l0),
        ("explained variance", o.explained_variance),
        ("FVU", o.fvu),
        ("MSE", o.mse),
        ("mean cos(x, x̂)", o.cosine),
        ("relative bias Σ‖x̂‖² / Σ⟨x, x̂⟩", o.rel_bias),
        ("mean ‖x̂‖ / ‖x‖", o.l2_ratio),
        ("dead features (fraction)", o.dead as f64 / d),
        (
            &*format!(
                "dense features, above {} (fraction)",
                fmt_num(o.dense_above)
            ),
            o.dense as f64 / d,
        ),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_string(), fmt_num(v)])
    .collect();
    Table {
        caption: "Sparsity and reconstruction".into(),
        headers: vec!["figure".into(), "value".into()],
        rows,
        text_columns: vec![0],
    }
}

fn splice_table(s: &SpliceResult) -> Table {
    let mut rows: Vec<Vec<String>> = [
        ("next-token loss, clean (nats)", s.ce_clean),
        ("next-token loss with x̂ spliced in", s.ce_sae),
        ("next-token loss with zeros spliced in", s.ce_zero),
        (
            "loss recovered (ce_zero − ce_sae) / (ce_zero − ce_clean)",
            s.ce_recovered,
        ),
        ("mean KL(clean ‖ x̂ spliced in)", s.kl_sae),
        ("mean KL(clean ‖ zeros spliced in)", s.kl_zero),
        ("KL recovered 1 − kl_sae / kl_zero", s.kl_recovered),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_string(), fmt_num(v)])
    .collect();
    rows.push(vec![
        "tokens the losses are over".into(),
        s.predicted.to_string(),
    ]);
    rows.push(vec!["tokens the KL is over".into(), s.rows.to_string()]);
    Table {
        caption: "Spliced into the forward".into(),
        headers: vec!["figure".into(), "value".into()],
        rows,
        text_columns: vec![0],
    }
}

/// An example in its context, the token marked: `… before ⟦token⟧ after …`.
fn in_context(e: &Example) -> String {
    format!(
        "{}⟦{}⟧{} ({} #{}, {})",
        e.before.as_deref().unwrap_or(""),
        e.token,
        e.after.as_deref().unwrap_or(""),
        e.text,
        e.position,
        fmt_num(e.value as f64)
    )
}

fn feature_table(o: &SaeResult, top: &[TopFeature], caption: &str) -> Table {
    let rows = top
        .iter()
        .map(|t| {
            let examples: Vec<String> = o.examples[t.feature]
                .iter()
                .take(SHOWN)
                .map(in_context)
                .collect();
            vec![
                t.feature.to_string(),
                fmt_num(t.frequency),
                fmt_num(t.mean),
                fmt_num(t.max as f64),
                examples.join(" · "),
            ]
        })
        .collect();
    Table {
        caption: caption.into(),
        headers: [
            "feature",
            "frequency",
            "mean",
            "max",
            "largest on (in context)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        text_columns: vec![4],
    }
}
