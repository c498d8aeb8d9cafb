//! BERT's WordPiece tokenizer from an HF `tokenizer.json`: `[CLS] a [SEP]` or
//! `[CLS] a [SEP] b [SEP]` with segment ids, through the `tokenizers` crate. Any padding or
//! truncation the file builds in (MiniLM's pads to 128) is turned off: batches pad themselves.

use std::path::Path;

use anyhow::{anyhow, Context, Result};

pub struct WordPiece {
    inner: tokenizers::Tokenizer,
}

/// One tokenized example.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    /// 0 for `[CLS] a [SEP]`, 1 for `b [SEP]`.
    pub segments: Vec<u32>,
}

impl WordPiece {
    pub fn load(path: &Path) -> Result<WordPiece> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("loading tokenizer {}: {e}", path.display()))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| anyhow!("tokenizer {}: {e}", path.display()))?;
        Ok(WordPiece { inner })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// `text` alone, or the pair (`text`, `second`), with the special tokens.
    pub fn encode(&self, text: &str, second: Option<&str>) -> Result<Encoding> {
        let e = match second {
            Some(b) => self.inner.encode((text, b), true),
            None => self.inner.encode(text, true),
        }
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("tokenizing {text:?}"))?;
        Ok(Encoding {
            ids: e.get_ids().to_vec(),
            segments: e.get_type_ids().to_vec(),
        })
    }

    /// `text`'s ids without special tokens (pretraining builds its own pairs).
    pub fn ids(&self, text: &str) -> Result<Vec<u32>> {
        let e = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("tokenizing {text:?}"))?;
        Ok(e.get_ids().to_vec())
    }

    /// `text`'s tokens without special tokens, each `(id, start byte, end byte)` in `text`
    /// (span QA maps predicted tokens back to the text through these).
    pub fn tokens_with_offsets(&self, text: &str) -> Result<Vec<(u32, usize, usize)>> {
        let e = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("tokenizing {text:?}"))?;
        Ok(e.get_ids()
            .iter()
            .zip(e.get_offsets())
            .map(|(&id, &(a, b))| (id, a, b))
            .collect())
    }

    /// The id of `token` (e.g. `[MASK]`), an error naming it when the vocabulary lacks it.
    pub fn token_id(&self, token: &str) -> Result<u32> {
        self.inner
            .token_to_id(token)
            .ok_or_else(|| anyhow!("the tokenizer has no `{token}` token"))
    }
}
