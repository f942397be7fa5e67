//! What pages, figures and compare share to show numbers: tables of formatted cells and
//! the number formats. Below every analysis kind and every page; it imports neither.
//! [`provenance`], a results.json's provenance as display rows, sits above results.json
//! and is reached by its own path, never through this file.

pub mod provenance;

use serde::Serialize;

/// A table with pre-formatted cells.
#[derive(Serialize, Default)]
pub struct Table {
    /// Caption above the table.
    pub caption: String,
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows of formatted cells.
    pub rows: Vec<Vec<String>>,
    /// Columns of text (left-aligned); the rest are numbers (right-aligned).
    pub text_columns: Vec<usize>,
}

/// Numbers as a report shows them: 6 significant digits, scientific when far from 1.
pub fn fmt_num(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if (1e-3..1e6).contains(&a) {
        let decimals = (5 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{x:.5e}")
    }
}

/// An optional number as [`fmt_num`] writes it, `—` when undefined.
pub fn fmt_opt(x: Option<f64>) -> String {
    x.map(fmt_num).unwrap_or_else(|| "—".into())
}

/// A square matrix as a table with labelled rows and columns.
pub fn matrix_table(
    caption: &str,
    labels: &[String],
    cell: &dyn Fn(usize, usize) -> String,
) -> Table {
    Table {
        text_columns: vec![0],
        caption: caption.into(),
        headers: std::iter::once(String::new())
            .chain(labels.iter().cloned())
            .collect(),
        rows: (0..labels.len())
            .map(|i| {
                std::iter::once(labels[i].clone())
                    .chain((0..labels.len()).map(|j| cell(i, j)))
                    .collect()
            })
            .collect(),
    }
}

/// Each distinct item with its count, most frequent first, ties in item order.
pub fn by_frequency<K: Ord>(items: impl Iterator<Item = K>) -> Vec<(K, usize)> {
    let mut counts: std::collections::BTreeMap<K, usize> = Default::default();
    for k in items {
        *counts.entry(k).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    // Stable: equal counts keep the map's item order.
    v.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    v
}

/// A file name part from free text: lower-case letters, digits and dashes.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::{by_frequency, fmt_num};

    #[test]
    fn by_frequency_counts_most_frequent_first_ties_in_item_order() {
        let got = by_frequency([5, 3, 5, 9, 3, 1, 5].into_iter());
        assert_eq!(got, vec![(5, 3), (3, 2), (1, 1), (9, 1)]);
        assert!(by_frequency(std::iter::empty::<u8>()).is_empty());
    }

    #[test]
    fn numbers_are_formatted_in_rust() {
        assert_eq!(fmt_num(0.123456789), "0.123457");
        assert_eq!(fmt_num(1234.5678), "1234.57");
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(-2.5e-7), "-2.50000e-7");
        assert_eq!(fmt_num(0.0), "0");
    }
}
