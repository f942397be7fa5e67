//! Text to token ids, exactly as `transformers`' tokenizer for the model does it.

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::error::ModelError;
use super::hub::TokenizerFiles;

/// A loaded tokenizer.
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, or builds GPT-2's byte-level BPE from `vocab.json` +
    /// `merges.txt` the way `GPT2Tokenizer` reads them (no prefix space, `<|endoftext|>`
    /// special when the vocabulary has it).
    pub fn load(files: &TokenizerFiles) -> Result<Self, ModelError> {
        let inner = match files {
            TokenizerFiles::Json(path) => {
                Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
                    path: path.clone(),
                    detail: format!("{e}; the file is not a valid tokenizer.json"),
                })?
            }
            TokenizerFiles::VocabMerges { vocab, merges } => {
                let err = |e: &dyn std::fmt::Display| ModelError::Tokenizer {
                    path: vocab.clone(),
                    detail: format!(
                        "{e}; vocab.json and merges.txt must be GPT-2's byte-level BPE files"
                    ),
                };
                let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
                    .build()
                    .map_err(|e| err(&e))?;
                let mut tok = Tokenizer::new(bpe);
                tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
                    .with_decoder(Some(ByteLevel::default()))
                    .with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
                if tok.token_to_id("<|endoftext|>").is_some() {
                    tok.add_special_tokens([AddedToken::from("<|endoftext|>", true)])
                        .map_err(|e| err(&e))?;
                }
                tok
            }
            TokenizerFiles::Gguf(path) => super::gguf::tokenizer::tokenizer(path)?,
        };
        Ok(Self::plain(inner))
    }

    /// Padding and truncation off: sentence-transformers' tokenizer.json pads every text
    /// to 128 tokens and truncates; strata pads batches itself and refuses (never cuts)
    /// texts that are too long.
    fn plain(mut inner: Tokenizer) -> Self {
        inner.with_padding(None);
        // Setting no truncation cannot fail.
        let _ = inner.with_truncation(None);
        Self { inner }
    }

    /// Token ids of `text`, with the special tokens `transformers`' `encode` adds by default
    /// (none for GPT-2: no BOS, as in the notebook).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer {
                path: Default::default(),
                detail: format!("cannot encode text: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Each token on its own, decoded to text (`tokenizer.decode([id])`): what a reader
    /// sees. A token that is part of a multi-byte character decodes to U+FFFD.
    pub fn token_strings(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| {
                self.inner
                    .decode(&[id], false)
                    .unwrap_or_else(|_| format!("<{id}>"))
            })
            .collect()
    }
}
