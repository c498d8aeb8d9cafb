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

    /// Trains a BERT-style (uncased) WordPiece vocabulary of `vocab_size` tokens on `texts`:
    /// BERT's normalizer (lowercase, accents stripped, control characters dropped) and
    /// pre-tokenizer (whitespace and punctuation), `##` continuations, the special tokens
    /// `[PAD]` (id 0), `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]` first, and the `[CLS] a [SEP] b
    /// [SEP]` template; the same texts give the same vocabulary.
    pub fn train<S: AsRef<str> + Sync>(texts: &[S], vocab_size: usize) -> Result<WordPiece> {
        use tokenizers::decoders::wordpiece::WordPiece as Decoder;
        use tokenizers::models::wordpiece::{WordPiece as Model, WordPieceTrainerBuilder};
        use tokenizers::models::TrainerWrapper;
        use tokenizers::normalizers::bert::BertNormalizer;
        use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
        use tokenizers::processors::template::TemplateProcessing;
        use tokenizers::AddedToken;

        const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
        if vocab_size < 100 {
            anyhow::bail!(
                "WordPiece vocab_size {vocab_size} is too small: it holds the 5 special tokens \
                 and every character of the corpus; take 1000 or more"
            );
        }
        let model = Model::builder()
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .build()
            .map_err(|e| anyhow!("WordPiece model: {e}"))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_normalizer(Some(BertNormalizer::new(true, true, None, true)));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_decoder(Some(Decoder::new("##".into(), true)));
        let trainer = WordPieceTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(0)
            .show_progress(false)
            .special_tokens(
                SPECIALS
                    .iter()
                    .map(|t| AddedToken::from(*t, true))
                    .collect(),
            )
            .continuing_subword_prefix("##".into())
            .build();
        let mut trainer = TrainerWrapper::WordPieceTrainer(trainer);
        inner
            .train(&mut trainer, texts.iter().map(|t| t.as_ref()))
            .map_err(|e| anyhow!("training the WordPiece vocabulary: {e}"))?;
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| anyhow!("the trained vocabulary lacks `{t}`"))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let template = TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .and_then(|b| b.try_pair("[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1"))
            .map_err(|e| anyhow!("WordPiece template: {e}"))?
            .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
            .build()
            .map_err(|e| anyhow!("WordPiece template: {e}"))?;
        inner.with_post_processor(Some(template));
        Ok(WordPiece { inner })
    }

    /// Writes the tokenizer as an HF `tokenizer.json` (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(false)
            .map_err(|e| anyhow!("serializing the tokenizer: {e}"))?;
        files::write_atomic(path, json.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
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
