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
    /// [SEP]` template. Ties between equal pair counts fall in hash order, so training again
    /// may give another vocabulary: save it and load it back (resume does).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A few hundred distinct words, each often enough to become a whole-word piece.
    fn corpus() -> Vec<String> {
        let words = [
            "the",
            "nation",
            "congress",
            "people",
            "government",
            "states",
            "united",
            "peace",
            "war",
            "treaty",
            "trade",
            "army",
            "navy",
            "law",
            "duty",
            "power",
            "union",
        ];
        (0..40)
            .map(|i| {
                let mut s = String::new();
                // Each document a different order, with inflections and punctuation.
                for j in 0..words.len() {
                    let w = words[(j * 7 + i) % words.len()];
                    s.push_str(&format!("{w} {w}s {w}ed, "));
                }
                s.push_str(&format!("The Year {}. ", 1790 + i));
                s
            })
            .collect()
    }

    fn pieces(t: &WordPiece, text: &str) -> Vec<String> {
        t.ids(text)
            .unwrap()
            .iter()
            .map(|&i| t.inner.id_to_token(i).unwrap())
            .collect()
    }

    #[test]
    fn trained_vocabulary_has_its_size_specials_and_whole_known_words() {
        let texts = corpus();
        let t = WordPiece::train(&texts, 150).unwrap();
        assert_eq!(t.vocab_size(), 150, "vocab_size is the size trained to");
        for (i, s) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .enumerate()
        {
            assert_eq!(t.token_id(s).unwrap(), i as u32, "{s} at id {i}");
        }
        // Frequent words are single pieces; lowercased, punctuation split off.
        assert_eq!(
            pieces(&t, "The Nation, peace."),
            ["the", "nation", ",", "peace", "."]
        );
        // A word never seen whole falls back to ## continuation pieces of known characters.
        let p = pieces(&t, "gravity");
        assert!(
            p.len() > 1 && p[1..].iter().all(|x| x.starts_with("##")),
            "{p:?}"
        );
        assert!(!t
            .ids("gravity")
            .unwrap()
            .contains(&t.token_id("[UNK]").unwrap()));
        // A character outside the corpus is [UNK].
        assert_eq!(pieces(&t, "€"), ["[UNK]"]);
        // Pairs follow BERT's template.
        let e = t.encode("the war", Some("peace")).unwrap();
        let (cls, sep) = (t.token_id("[CLS]").unwrap(), t.token_id("[SEP]").unwrap());
        let war = t.token_id("war").unwrap();
        let peace = t.token_id("peace").unwrap();
        let the = t.token_id("the").unwrap();
        assert_eq!(e.ids, [cls, the, war, sep, peace, sep]);
        assert_eq!(e.segments, [0, 0, 0, 0, 1, 1]);
        // Saved and loaded, it tokenizes the same.
        let path = std::env::temp_dir().join(format!("rxla-wp-{}.json", std::process::id()));
        t.save(&path).unwrap();
        let loaded = WordPiece::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded.vocab_size(), 150);
        assert_eq!(loaded.encode("the war", Some("peace")).unwrap(), e);
        // A larger budget keeps more whole words; it never exceeds what was asked.
        let big = WordPiece::train(&texts, 400).unwrap();
        assert!(
            big.vocab_size() <= 400 && big.vocab_size() > 150,
            "{}",
            big.vocab_size()
        );
    }

    #[test]
    fn too_small_a_vocabulary_is_a_clear_error() {
        let e = WordPiece::train(&corpus(), 50).err().unwrap().to_string();
        assert!(
            e.contains("vocab_size 50") && e.contains("1000 or more"),
            "{e}"
        );
        let e = WordPiece::load(Path::new("/no/such/tokenizer.json"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("/no/such/tokenizer.json"), "{e}");
    }
}
