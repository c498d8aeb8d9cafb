//! Tokenizers for language-model data: raw bytes, or byte-level BPE trained with the
//! HuggingFace `tokenizers` crate.
//!
//! Both kinds are lossless: `decode(encode(s)) == s` for every string. A tokenizer is saved
//! as `tokenizer.json` — the HuggingFace JSON for BPE, `{"kind":"bytes"}` for bytes — so a
//! run (and anything that samples from its checkpoints) reads back exactly the same ids.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The file name a tokenizer is saved under, next to a run.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Which tokenizer to build (config form: `{ kind = "bytes" }` or
/// `{ kind = "bpe", vocab_size = 4096 }`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TokenizerSpec {
    /// One token per byte: vocab 256, id = byte value.
    #[default]
    Bytes,
    /// Byte-level BPE with at most `vocab_size` tokens (at least the 256 byte tokens).
    Bpe { vocab_size: usize },
    /// BERT's WordPiece, `vocab_size` tokens trained on the corpus ([`crate::wordpiece`]);
    /// for `model.kind = "bert"` only.
    Wordpiece { vocab_size: usize },
}

/// A trained (or trivial) tokenizer.
#[derive(Clone)]
pub enum Tokenizer {
    Bytes,
    Bpe(Box<Bpe>),
}

/// A byte-level BPE tokenizer and the raw bytes of each of its tokens.
#[derive(Clone)]
pub struct Bpe {
    inner: tokenizers::Tokenizer,
    /// `token_bytes[id]`: the bytes token `id` stands for.
    token_bytes: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tokenizer::Bytes => write!(f, "Tokenizer::Bytes"),
            Tokenizer::Bpe(b) => write!(f, "Tokenizer::Bpe(vocab {})", b.token_bytes.len()),
        }
    }
}

/// Largest block of text handed to the HuggingFace encoder at once.
const ENCODE_PIECE: usize = 1 << 16;

fn hf<T>(r: tokenizers::Result<T>) -> Result<T> {
    r.map_err(|e| anyhow!("{e}"))
}

impl Tokenizer {
    /// Builds the tokenizer `spec` asks for; BPE is trained on `text` (the train split).
    /// Deterministic: the same text and spec give the same tokenizer.
    pub fn train(spec: TokenizerSpec, text: &str) -> Result<Tokenizer> {
        match spec {
            TokenizerSpec::Bytes => Ok(Tokenizer::Bytes),
            TokenizerSpec::Bpe { vocab_size } => Tokenizer::train_bpe(text, vocab_size),
            TokenizerSpec::Wordpiece { .. } => bail!(
                "tokenizer kind \"wordpiece\" is BERT's (model.kind = \"bert\"); a language \
                 model takes {{ kind = \"bytes\" }} or {{ kind = \"bpe\", vocab_size = N }}"
            ),
        }
    }

    /// Trains a byte-level BPE (GPT-2 pre-tokenization, no prefix space, no special tokens)
    /// with at most `vocab_size` tokens; fewer when the text runs out of pairs to merge.
    pub fn train_bpe(text: &str, vocab_size: usize) -> Result<Tokenizer> {
        use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
        use tokenizers::models::TrainerWrapper;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;

        if vocab_size < 256 {
            bail!(
                "BPE vocab_size {vocab_size} is below 256: byte-level BPE needs one token per \
                 byte before any merge"
            );
        }
        if vocab_size > u32::MAX as usize {
            bail!("BPE vocab_size {vocab_size} does not fit token ids (u32)");
        }
        let byte_level = ByteLevel::new(false, false, true);
        let mut tok = tokenizers::Tokenizer::new(BPE::default());
        tok.with_pre_tokenizer(Some(byte_level));
        tok.with_decoder(Some(byte_level));
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(0)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        hf(tok.train(&mut trainer, pieces(text, ENCODE_PIECE)))
            .context("training the BPE tokenizer")?;
        Ok(Tokenizer::Bpe(Box::new(Bpe::new(tok)?)))
    }

    /// Parses a saved `tokenizer.json` (see [`Tokenizer::to_json`]).
    pub fn from_json(json: &str) -> Result<Tokenizer> {
        let value: serde_json::Value =
            serde_json::from_str(json).context("tokenizer file is not JSON")?;
        match value.get("kind") {
            Some(k) if k == "bytes" => return Ok(Tokenizer::Bytes),
            Some(k) => bail!("unknown tokenizer kind {k} (known: \"bytes\", or a HuggingFace BPE)"),
            None => {}
        }
        let inner: tokenizers::Tokenizer =
            hf(json.parse()).context("not a HuggingFace tokenizer JSON")?;
        Ok(Tokenizer::Bpe(Box::new(Bpe::new(inner)?)))
    }

    /// The saved form: `{"kind":"bytes"}` or the HuggingFace tokenizer JSON.
    pub fn to_json(&self) -> Result<String> {
        match self {
            Tokenizer::Bytes => Ok(r#"{"kind":"bytes"}"#.to_string()),
            Tokenizer::Bpe(b) => hf(b.inner.to_string(true)),
        }
    }

    /// Reads a `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let json = std::fs::read_to_string(path)
            .with_context(|| format!("reading tokenizer {}", path.display()))?;
        Tokenizer::from_json(&json).with_context(|| format!("loading tokenizer {}", path.display()))
    }

    /// Writes the tokenizer to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut json = self.to_json()?;
        json.push('\n');
        Ok(files::write_atomic(path, json.as_bytes())?)
    }

    /// `"bytes"` or `"bpe"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Tokenizer::Bytes => "bytes",
            Tokenizer::Bpe(_) => "bpe",
        }
    }

    /// Number of token ids (ids are `0..vocab_size()`).
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Bytes => 256,
            Tokenizer::Bpe(b) => b.token_bytes.len(),
        }
    }

    /// Token ids of `text`. Long texts are encoded in pieces cut after a newline that is
    /// followed by a non-space character, where GPT-2 pre-tokenization always splits, so
    /// the ids equal those of encoding the text whole.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Tokenizer::Bpe(b) => {
                let mut ids = Vec::with_capacity(text.len() / 3);
                let all: Vec<&str> = pieces(text, ENCODE_PIECE).collect();
                for group in all.chunks(16) {
                    let encs = hf(b.inner.encode_batch_fast(group.to_vec(), false))
                        .context("BPE encoding")?;
                    for e in encs {
                        ids.extend_from_slice(e.get_ids());
                    }
                }
                Ok(ids)
            }
        }
    }

    /// The exact bytes `ids` stand for; an id outside the vocabulary is an error.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 2);
        for &id in ids {
            match self {
                Tokenizer::Bytes => out.push(
                    u8::try_from(id)
                        .map_err(|_| anyhow!("token id {id} out of range for byte vocab 256"))?,
                ),
                Tokenizer::Bpe(b) => out.extend_from_slice(b.token_bytes(id)?),
            }
        }
        Ok(out)
    }

    /// The text `ids` stand for. Exact for the ids of a whole string; a slice that cuts a
    /// multi-byte character shows U+FFFD there.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Bytes => Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned()),
            Tokenizer::Bpe(b) => {
                if let Some(&bad) = ids.iter().find(|&&id| id as usize >= b.token_bytes.len()) {
                    bail!(
                        "token id {bad} out of range for BPE vocab {}",
                        b.token_bytes.len()
                    );
                }
                hf(b.inner.decode(ids, false)).context("BPE decoding")
            }
        }
    }

    /// How many bytes token `id` stands for (0 for an unknown id).
    pub fn token_len(&self, id: u32) -> usize {
        match self {
            Tokenizer::Bytes => usize::from(id < 256),
            Tokenizer::Bpe(b) => b.token_bytes.get(id as usize).map_or(0, Vec::len),
        }
    }
}

impl Bpe {
    fn new(inner: tokenizers::Tokenizer) -> Result<Bpe> {
        use tokenizers::{DecoderWrapper, ModelWrapper, PreTokenizerWrapper};
        if !matches!(inner.get_model(), ModelWrapper::BPE(_)) {
            bail!("tokenizer model is not BPE");
        }
        if !matches!(
            inner.get_pre_tokenizer(),
            Some(PreTokenizerWrapper::ByteLevel(_))
        ) {
            bail!("BPE tokenizer has no ByteLevel pre-tokenizer (rxla uses byte-level BPE only)");
        }
        if !matches!(inner.get_decoder(), Some(DecoderWrapper::ByteLevel(_))) {
            bail!("BPE tokenizer has no ByteLevel decoder");
        }
        if inner.get_normalizer().is_some() {
            bail!("BPE tokenizer has a normalizer; rxla needs lossless byte-level BPE");
        }
        let n = inner.get_vocab_size(true);
        let char_byte = char_to_byte();
        let mut token_bytes = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let tok = inner
                .id_to_token(id)
                .ok_or_else(|| anyhow!("BPE vocabulary has no token with id {id} (of {n})"))?;
            let bytes = tok
                .chars()
                .map(|c| {
                    let i = c as usize;
                    match char_byte.get(i) {
                        Some(&b) if b >= 0 => Ok(b as u8),
                        _ => Err(anyhow!("BPE token {tok:?} (id {id}) is not byte-level")),
                    }
                })
                .collect::<Result<Vec<u8>>>()?;
            if bytes.is_empty() {
                bail!("BPE token id {id} is empty");
            }
            token_bytes.push(bytes);
        }
        Ok(Bpe { inner, token_bytes })
    }

    fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .ok_or_else(|| {
                anyhow!(
                    "token id {id} out of range for BPE vocab {}",
                    self.token_bytes.len()
                )
            })
    }

    /// The underlying HuggingFace tokenizer.
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// GPT-2's byte-to-char table, inverted: `table[char as usize]` is the byte a byte-level
/// token character stands for, or -1. The chars are all below 324.
fn char_to_byte() -> Vec<i16> {
    let mut table = vec![-1i16; 324];
    let mut extra = 0usize;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            b as usize
        } else {
            extra += 1;
            255 + extra
        };
        table[c] = i16::from(b);
    }
    table
}

/// Splits `text` into pieces of about `target` bytes, each cut just after a `\n` that has a
/// non-whitespace character on both sides. GPT-2 pre-tokenization makes such a newline a
/// token of its own whether or not the text continues, so encoding the pieces one by one
/// gives the ids of encoding the whole text. Text without such a point stays in one piece.
pub(crate) fn pieces(text: &str, target: usize) -> impl Iterator<Item = &str> + Send {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = if rest.len() > target {
            split_point(rest, target).unwrap_or(rest.len())
        } else {
            rest.len()
        };
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

/// The first index at or after `from` just past a newline with non-whitespace on both sides.
fn split_point(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from.max(1);
    while i < bytes.len() {
        let nl = i + bytes[i..].iter().position(|&b| b == b'\n')?;
        let before = text[..nl].chars().next_back();
        let after = text[nl + 1..].chars().next();
        if matches!((before, after), (Some(b), Some(a)) if !b.is_whitespace() && !a.is_whitespace())
        {
            return Some(nl + 1);
        }
        i = nl + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Call me Ishmael. Some years ago—never mind how long precisely—\n\
        having little or no money in my purse, and nothing particular to interest me on\n  \
        shore, I thought I would sail about a little: café, naïve, Ærø, 東京, 🐋!\n\n\
        \tThe whale, the whale, the white whale.\r\nThe end.  \n";

    #[test]
    fn byte_table_is_gpt2() {
        let t = char_to_byte();
        let mut seen = [false; 256];
        for (c, &b) in t.iter().enumerate() {
            if b >= 0 {
                assert!(!seen[b as usize]);
                seen[b as usize] = true;
                if (33..=126).contains(&c) {
                    assert_eq!(c, b as usize);
                }
            }
        }
        assert!(seen.iter().all(|&s| s));
        // GPT-2: space is 'Ġ' (U+0120), newline 'Ċ' (U+010A).
        assert_eq!(t['Ġ' as usize], 32);
        assert_eq!(t['Ċ' as usize], 10);
    }

    #[test]
    fn pieces_cut_only_before_non_space() {
        let text = "aaaa\n bbbb\ncccc\n\ndddd\n";
        let p: Vec<&str> = pieces(text, 2).collect();
        assert_eq!(p.concat(), text);
        assert_eq!(p, vec!["aaaa\n bbbb\n", "cccc\n\ndddd\n"]);
        assert_eq!(pieces("", 4).count(), 0);
        assert_eq!(pieces("no newline at all", 4).collect::<Vec<_>>().len(), 1);
    }

    #[test]
    fn bytes_round_trip_and_json() {
        let t = Tokenizer::train(TokenizerSpec::Bytes, "").unwrap();
        let ids = t.encode(SAMPLE).unwrap();
        assert_eq!(ids.len(), SAMPLE.len());
        assert_eq!(t.decode(&ids).unwrap(), SAMPLE);
        assert_eq!(t.vocab_size(), 256);
        assert_eq!(t.to_json().unwrap(), r#"{"kind":"bytes"}"#);
        assert!(matches!(
            Tokenizer::from_json(&t.to_json().unwrap()).unwrap(),
            Tokenizer::Bytes
        ));
        assert!(t.decode(&[256]).is_err());
        let err = Tokenizer::from_json(r#"{"kind":"chars"}"#).unwrap_err();
        assert!(format!("{err:#}").contains("chars"), "{err:#}");
    }

    #[test]
    fn bpe_round_trip_small_text() {
        let text = SAMPLE.repeat(5);
        let t = Tokenizer::train_bpe(&text, 300).unwrap();
        assert!(
            t.vocab_size() <= 300 && t.vocab_size() > 256,
            "{}",
            t.vocab_size()
        );
        let ids = t.encode(SAMPLE).unwrap();
        assert!(ids.len() < SAMPLE.len());
        assert_eq!(t.decode(&ids).unwrap(), SAMPLE);
        assert_eq!(t.decode_bytes(&ids).unwrap(), SAMPLE.as_bytes());
        let n: usize = ids.iter().map(|&i| t.token_len(i)).sum();
        assert_eq!(n, SAMPLE.len());
        // Unseen characters still round-trip (every byte is a token).
        let unseen = "Ωμέγα ∑ 𝔘nicode \u{0}\u{7f}";
        assert_eq!(t.decode(&t.encode(unseen).unwrap()).unwrap(), unseen);
        // Saved and loaded: same ids.
        let back = Tokenizer::from_json(&t.to_json().unwrap()).unwrap();
        assert_eq!(back.encode(&text).unwrap(), t.encode(&text).unwrap());
        assert!(Tokenizer::train_bpe(&text, 100).is_err());
        assert!(t.decode(&[t.vocab_size() as u32]).is_err());
    }

    #[test]
    fn piecewise_encoding_equals_whole() {
        let text = SAMPLE.repeat(40);
        let t = Tokenizer::train_bpe(&text, 320).unwrap();
        let Tokenizer::Bpe(b) = &t else {
            unreachable!()
        };
        let whole = b.hf().encode_fast(text.as_str(), false).unwrap();
        let mut split = Vec::new();
        for p in pieces(&text, 100) {
            split.extend_from_slice(b.hf().encode_fast(p, false).unwrap().get_ids());
        }
        assert_eq!(whole.get_ids(), split.as_slice());
        assert_eq!(t.encode(&text).unwrap(), whole.get_ids());
    }

    #[test]
    fn spec_parses_from_config() {
        let s: TokenizerSpec = toml::from_str("kind = \"bpe\"\nvocab_size = 512").unwrap();
        assert_eq!(s, TokenizerSpec::Bpe { vocab_size: 512 });
        let s: TokenizerSpec = toml::from_str("kind = \"bytes\"").unwrap();
        assert_eq!(s, TokenizerSpec::Bytes);
        assert!(toml::from_str::<TokenizerSpec>("kind = \"bpe\"").is_err());
    }
}
