//! What a corpus yields: below every reader, and what the spec's inline texts become.

/// A text to run, with the id that names it in messages and outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextInput {
    /// Name of the text (`text0`, a spec id, ...).
    pub id: String,
    /// The text itself.
    pub text: String,
    /// Its class, for the kinds that compare classes of texts (`directions`, `project`):
    /// a string, read from the corpus' label column or an inline `label:`.
    pub label: Option<String>,
}
