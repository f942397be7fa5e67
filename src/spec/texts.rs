//! Where a spec's texts come from, and the windows long texts are cut into.

use serde::Deserialize;

use super::error::SpecError;
use crate::corpus::TextInput;

/// One inline text.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// Unique name of the text.
    pub id: String,
    /// The text.
    pub text: String,
    /// Its class, for the kinds that compare classes of texts (`directions`, `project`).
    #[serde(default)]
    pub label: Option<String>,
}

/// Where the texts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextSource {
    /// Texts written in the spec.
    Inline(Vec<TextInput>),
    /// A corpus file or a Hub dataset.
    Corpus(crate::corpus::Corpus),
}

/// `window:` as written in a spec.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Most tokens in a window: at most the model's context.
    pub tokens: usize,
    /// Tokens from one window's start to the next (1 to `tokens`). Default `tokens`: the
    /// windows do not overlap. A smaller stride gives every analysed token at least
    /// `tokens - stride` tokens of context, as transformers' strided perplexity does.
    #[serde(default)]
    pub stride: Option<usize>,
}

/// Windows over long texts, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Most tokens in a window.
    pub tokens: usize,
    /// Tokens between window starts (`1..=tokens`).
    pub stride: usize,
}

impl Window {
    /// The windows over `n` tokens, as `(start, end, context)`: window `k` holds tokens
    /// `start..end`, and its first `context` tokens were analysed by an earlier window.
    /// The last window is the first to reach the end, as in transformers' strided
    /// perplexity loop.
    pub fn cut(&self, n: usize) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        let mut analysed = 0usize;
        let mut start = 0;
        loop {
            let end = (start + self.tokens).min(n);
            out.push((start, end, analysed.saturating_sub(start)));
            analysed = end;
            if end >= n {
                return out;
            }
            start += self.stride;
        }
    }

    /// The id of window `k` of text `id`.
    pub fn id(text: &str, k: usize) -> String {
        format!("{text}#{k}")
    }
}

/// Checks `window:`; `invalid` makes the error for a field, its value and a fix.
pub(crate) fn check_window(
    w: WindowSpec,
    invalid: &dyn Fn(&str, String, &str) -> SpecError,
) -> Result<Window, SpecError> {
    if w.tokens == 0 {
        return Err(invalid(
            "window.tokens",
            "0".into(),
            "give the most tokens a window holds, e.g. the model's context (1024 for GPT-2)",
        ));
    }
    let stride = w.stride.unwrap_or(w.tokens);
    if stride == 0 || stride > w.tokens {
        return Err(invalid(
            "window.stride",
            stride.to_string(),
            &format!(
                "use 1 to {} (window.tokens): a larger stride would skip tokens",
                w.tokens
            ),
        ));
    }
    Ok(Window {
        tokens: w.tokens,
        stride,
    })
}
