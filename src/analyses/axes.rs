//! What the positions of a result's arrays mean, declared once per kind, so `strata
//! table` can give every number named columns (`head`, `neuron`, `bin`...) that pandas
//! and polars pivot on without parsing the positional `index`.
//!
//! A kind declares [`Axes`]: for a metric path (a prefix of field names, where a
//! `{class}` segment stands for a class label), what each array position along it is.
//! Besides, any object in a list that carries its own id (`neuron`, `feature`, `expert`,
//! `head`) names it for every number inside it, whatever the kind: a neuron's top
//! examples carry the neuron.

/// What one array position along a metric's path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// An attention head.
    Head,
    /// An expert of a mixture of experts.
    Expert,
    /// An SAE or transcoder feature.
    Feature,
    /// An MLP neuron.
    Neuron,
    /// A histogram bin (for edges, the bin the edge opens; the last edge closes the last
    /// bin).
    Bin,
    /// A class, named by the `label` field of the list item at this position.
    Class,
    /// Something the named columns do not cover (a rank, a position, a hidden state).
    Other,
}

/// A kind's declaration of what its arrays' positions mean.
#[derive(Debug, Clone, Copy)]
pub struct Axes {
    /// The hidden-state labels name blocks (`attn.3`, `router.3`): their number fills
    /// `block`.
    pub label_is_block: bool,
    /// Per metric path prefix, the meaning of each array position along it (after the
    /// hidden state, when the field holds one array per hidden state). The first prefix
    /// that matches wins.
    pub paths: &'static [(&'static str, &'static [Axis])],
}

impl Axes {
    /// A kind whose positions have no named meaning.
    pub const NONE: Axes = Axes {
        label_is_block: false,
        paths: &[],
    };

    /// The positions' meanings for `metric`, and the class its path names (a `{class}`
    /// segment), if any.
    pub fn for_metric<'m>(&self, metric: &'m str) -> (&'static [Axis], Option<&'m str>) {
        for (pattern, axes) in self.paths {
            if let Some(class) = prefix_match(pattern, metric) {
                return (axes, class);
            }
        }
        (&[], None)
    }
}

/// Whether `pattern`'s segments begin `metric`'s (a `{class}` segment matching any one),
/// and the segment `{class}` matched: `None` when it does not match, `Some(None)` when it
/// matches without a class.
fn prefix_match<'m>(pattern: &str, metric: &'m str) -> Option<Option<&'m str>> {
    let mut segments = metric.split('.');
    let mut class = None;
    for p in pattern.split('.') {
        let s = segments.next()?;
        if p == "{class}" {
            class = Some(s);
        } else if p != s {
            return None;
        }
    }
    Some(class)
}

/// The integer fields of a list item that name what the item is about.
pub const ID_FIELDS: &[(&str, Axis)] = &[
    ("head", Axis::Head),
    ("expert", Axis::Expert),
    ("feature", Axis::Feature),
    ("neuron", Axis::Neuron),
];

/// The block a hidden-state label names (`attn.3` → 3).
pub fn block_of(label: &str) -> Option<u64> {
    label.rsplit('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_class_segments_match_whole_segments() {
        let axes = Axes {
            label_is_block: false,
            paths: &[
                ("by_class.{class}", &[Axis::Other]),
                ("top", &[Axis::Other, Axis::Bin]),
            ],
        };
        assert_eq!(
            axes.for_metric("by_class.neg.cohen_d"),
            (&[Axis::Other][..], Some("neg"))
        );
        assert_eq!(axes.for_metric("top.value").0, &[Axis::Other, Axis::Bin]);
        assert_eq!(axes.for_metric("topk").0, &[] as &[Axis]);
        assert_eq!(axes.for_metric("by_class").0, &[] as &[Axis]);
        assert_eq!(block_of("attn.11"), Some(11));
        assert_eq!(block_of("h.x"), None);
    }
}
