//! T5-style span corruption on a text corpus, for encoder–decoder pretraining: a window of
//! `src_len` byte tokens has ~15% of its tokens, in spans of mean length 3, replaced by one
//! sentinel each (the source); the target is each sentinel followed by the tokens it hid,
//! closed by one more sentinel. Sentinels are bytes 0xFF, 0xFE, .. (never in UTF-8 text), and
//! 0 (never in text either) pads and starts the decoder input. Training batch `s` is a
//! function of `(seed, s)` only, so a resumed run sees the same batches.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::host::HostArray;
use crate::source::DataSource;
use crate::text::{LmData, Split};
use crate::tokenizer::Tokenizer;

/// Share of tokens hidden and the mean span length (T5's defaults).
pub const NOISE_DENSITY: f64 = 0.15;
pub const MEAN_SPAN: f64 = 3.0;
/// At most this many spans per window (one sentinel byte each, 0xF8..=0xFF).
pub const MAX_SPANS: usize = 8;
pub const PAD: i32 = 0;

/// One corrupted window: source and target token ids (unpadded).
#[derive(Debug, Clone, PartialEq)]
pub struct Corrupted {
    pub src: Vec<i32>,
    pub tgt: Vec<i32>,
}

/// Noise tokens and spans of a window of `n` tokens.
pub fn noise_counts(n: usize) -> (usize, usize) {
    let noise = ((n as f64 * NOISE_DENSITY).round() as usize).clamp(1, n.saturating_sub(1).max(1));
    let most = MAX_SPANS.min(noise).min(n - noise).max(1);
    let spans = ((noise as f64 / MEAN_SPAN).round() as usize).clamp(1, most);
    (noise, spans)
}

/// The target length span corruption of `n` tokens needs: hidden tokens, a sentinel per
/// span and the closing one.
pub fn target_len(n: usize) -> usize {
    let (noise, spans) = noise_counts(n);
    noise + spans + 1
}

/// `total` split into `parts` positive lengths at random.
fn partition(total: usize, parts: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut cuts: Vec<usize> = rand::seq::index::sample(rng, total - 1, parts - 1)
        .into_iter()
        .map(|c| c + 1)
        .collect();
    cuts.sort_unstable();
    let mut out = Vec::with_capacity(parts);
    let mut prev = 0;
    for c in cuts.into_iter().chain([total]) {
        out.push(c - prev);
        prev = c;
    }
    out
}

/// Span corruption of `tokens`: kept runs and hidden spans alternate, starting with a kept run.
pub fn corrupt(tokens: &[u32], rng: &mut ChaCha8Rng) -> Corrupted {
    let n = tokens.len();
    let (noise, spans) = noise_counts(n);
    let hidden = partition(noise, spans, rng);
    let kept = partition(n - noise, spans, rng);
    let sentinel = |k: usize| 255 - k as i32;
    let (mut src, mut tgt) = (Vec::new(), Vec::new());
    let mut at = 0;
    for k in 0..spans {
        src.extend(tokens[at..at + kept[k]].iter().map(|&t| t as i32));
        at += kept[k];
        src.push(sentinel(k));
        tgt.push(sentinel(k));
        tgt.extend(tokens[at..at + hidden[k]].iter().map(|&t| t as i32));
        at += hidden[k];
    }
    tgt.push(sentinel(spans));
    Corrupted { src, tgt }
}

/// Span-corruption batches `[src (B, S), tgt_in (B, T), targets (B, T)]` over a corpus.
pub struct DenoiseData {
    lm: LmData,
    src_len: usize,
    tgt_len: usize,
    batch: usize,
    seed: u64,
    eval_windows: usize,
}

impl DenoiseData {
    /// `lm` must be byte-level with windows of `src_len` tokens (its `seq_len`).
    pub fn new(
        lm: LmData,
        tgt_len: usize,
        batch: usize,
        seed: u64,
        max_eval: Option<usize>,
    ) -> Result<DenoiseData> {
        if !matches!(lm.tokenizer(), Tokenizer::Bytes) {
            bail!(
                "span corruption uses the bytes 0xF8..0xFF as sentinels: set data.tokenizer = \
                 {{ kind = \"bytes\" }}"
            );
        }
        let src_len = lm.seq_len();
        let need = target_len(src_len);
        if tgt_len < need {
            bail!(
                "model.tgt_len is {tgt_len} but span corruption of {src_len} tokens \
                 (model.src_len) makes targets of {need}: raise model.tgt_len to {need}"
            );
        }
        let fit = lm.len(Split::Val) / src_len;
        if fit == 0 {
            bail!("the validation split is shorter than one window of model.src_len tokens");
        }
        Ok(DenoiseData {
            eval_windows: max_eval.unwrap_or(256).min(fit),
            lm,
            src_len,
            tgt_len,
            batch,
            seed,
        })
    }

    fn rng(&self, what: &[u8; 8], i: usize) -> ChaCha8Rng {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(what);
        key[8..16].copy_from_slice(&self.seed.to_le_bytes());
        key[16..24].copy_from_slice(&(i as u64).to_le_bytes());
        ChaCha8Rng::from_seed(key)
    }

    fn arrays(&self, split: Split, windows: &[(usize, ChaCha8Rng)]) -> Result<Vec<HostArray>> {
        let (s, t) = (self.src_len, self.tgt_len);
        let b = windows.len();
        let mut src = vec![PAD; b * s];
        let mut tgt_in = vec![PAD; b * t];
        let mut targets = vec![PAD; b * t];
        for (r, (start, rng)) in windows.iter().enumerate() {
            let toks = self.lm.tokens(split, *start..*start + s)?;
            let c = corrupt(&toks, &mut rng.clone());
            src[r * s..r * s + c.src.len()].copy_from_slice(&c.src);
            targets[r * t..r * t + c.tgt.len()].copy_from_slice(&c.tgt);
            // Teacher forcing: the decoder reads PAD, then the targets shifted right.
            tgt_in[r * t + 1..r * t + c.tgt.len()].copy_from_slice(&c.tgt[..c.tgt.len() - 1]);
        }
        let (bi, si, ti) = (b as i64, s as i64, t as i64);
        Ok(vec![
            HostArray::I32 {
                data: src,
                dims: vec![bi, si],
            },
            HostArray::I32 {
                data: tgt_in,
                dims: vec![bi, ti],
            },
            HostArray::I32 {
                data: targets,
                dims: vec![bi, ti],
            },
        ])
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        self.lm.tokenizer()
    }
}

impl DataSource for DenoiseData {
    fn batch_size(&self) -> usize {
        self.batch
    }

    fn steps_per_epoch(&self) -> usize {
        self.lm.steps_per_epoch()
    }

    fn train_batch(&mut self, step: usize) -> Result<Vec<HostArray>> {
        let mut rng = self.rng(b"rxla-dn\0", step);
        let last = self.lm.len(Split::Train) - self.src_len;
        let windows: Vec<(usize, ChaCha8Rng)> = (0..self.batch)
            .map(|_| {
                let start = rng.gen_range(0..=last);
                let seed: [u8; 32] = rng.gen();
                (start, ChaCha8Rng::from_seed(seed))
            })
            .collect();
        self.arrays(Split::Train, &windows)
    }

    fn eval_batches(&self, batch: usize) -> Result<Vec<(Vec<HostArray>, usize)>> {
        if batch == 0 {
            bail!("eval batch size must be positive");
        }
        let n = self.eval_windows;
        (0..n)
            .step_by(batch)
            .map(|first| {
                let valid = batch.min(n - first);
                let windows: Vec<(usize, ChaCha8Rng)> = (0..batch)
                    .map(|k| {
                        let w = first + if k < valid { k } else { 0 };
                        (w * self.src_len, self.rng(b"rxla-de\0", w))
                    })
                    .collect();
                Ok((self.arrays(Split::Val, &windows)?, valid))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_hides_spans_behind_sentinels_and_the_target_restores_them() {
        let text: Vec<u32> = b"Call me Ishmael. Some years ago, never mind how long precisely"
            .iter()
            .map(|&b| b as u32)
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let c = corrupt(&text, &mut rng);
        let (noise, spans) = noise_counts(text.len());
        assert_eq!(c.src.len(), text.len() - noise + spans);
        assert_eq!(c.tgt.len(), target_len(text.len()));
        // Filling each sentinel of the source with its target span gives the text back.
        let mut restored = Vec::new();
        for &t in &c.src {
            if t >= 248 {
                let at = c.tgt.iter().position(|&x| x == t).unwrap();
                let span: Vec<i32> = c.tgt[at + 1..]
                    .iter()
                    .take_while(|&&x| x < 248)
                    .copied()
                    .collect();
                assert!(!span.is_empty());
                restored.extend(span);
            } else {
                restored.push(t);
            }
        }
        assert_eq!(restored, text.iter().map(|&t| t as i32).collect::<Vec<_>>());
        assert_eq!(*c.tgt.last().unwrap(), 255 - spans as i32);
        // Another seed hides other spans.
        assert_ne!(corrupt(&text, &mut ChaCha8Rng::seed_from_u64(2)), c);
    }
}
