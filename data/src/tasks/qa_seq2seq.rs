//! Generative question answering on SQuAD v1.1 for the encoder–decoder, byte-level: the
//! source is `question: Q context: C` cut to `src_len` bytes; the target is the first gold
//! answer's bytes closed by [`EOS`] (0x03, never in SQuAD text). A long context's training
//! window starts at a seeded offset that keeps the answer inside, so every target can be read
//! from its source; evaluation reads each context from its start (it never looks at the
//! answer). Training batch `s` is a function of `(seed, s)` only, so a resumed run sees the
//! same batches.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::squad::Question;
use crate::host::HostArray;
use crate::source::DataSource;

/// Ends every target; generation stops on it.
pub const EOS: u32 = 3;
/// Pads sources and targets, and starts the decoder input.
pub const PAD: i32 = 0;

/// Bytes as tokens, with PAD and EOS bytes (never in SQuAD text) made spaces.
fn bytes(s: &str) -> impl Iterator<Item = i32> + '_ {
    s.bytes().map(|b| match b as u32 {
        0 | EOS => b' ' as i32,
        b => b as i32,
    })
}

/// The source tokens of `q` with its context read from byte `offset`, at most `src_len`.
pub fn source(q: &Question, src_len: usize, offset: usize) -> Vec<i32> {
    let head = format!("question: {} context: ", q.question);
    let mut out: Vec<i32> = bytes(&head).take(src_len / 2).collect();
    let room = src_len - out.len();
    out.extend(bytes(&q.context).skip(offset).take(room));
    out
}

/// The target tokens: the first gold answer (cut to `tgt_len - 1` bytes) and EOS.
pub fn target(q: &Question, tgt_len: usize) -> Vec<i32> {
    let ans = q.answers.first().map_or("", |a| a.0.as_str());
    let mut out: Vec<i32> = bytes(ans).take(tgt_len - 1).collect();
    out.push(EOS as i32);
    out
}

/// A training offset into `q`'s context that keeps its first answer inside the source
/// (uniform over those that do; 0 when the whole context fits).
pub fn train_offset(q: &Question, src_len: usize, rng: &mut ChaCha8Rng) -> usize {
    let head = format!("question: {} context: ", q.question);
    let room = src_len - head.len().min(src_len / 2);
    let n = q.context.len();
    if n <= room {
        return 0;
    }
    let Some((text, start)) = q.answers.first() else {
        return 0;
    };
    let end = start + text.len();
    let lo = end.saturating_sub(room);
    let hi = (*start).min(n - room);
    if lo >= hi {
        return hi.min(*start);
    }
    rng.gen_range(lo..=hi)
}

pub struct QaData {
    train: Vec<Question>,
    dev: Vec<Question>,
    src_len: usize,
    tgt_len: usize,
    batch: usize,
    seed: u64,
}

impl QaData {
    /// `dev`: the questions evaluated (teacher-forced loss, and EM/F1 after training).
    pub fn new(
        train: Vec<Question>,
        dev: Vec<Question>,
        src_len: usize,
        tgt_len: usize,
        batch: usize,
        seed: u64,
    ) -> Result<QaData> {
        if train.is_empty() || dev.is_empty() {
            bail!("SQuAD question answering needs training and dev questions; got none");
        }
        if src_len < 64 || tgt_len < 2 {
            bail!(
                "generative QA reads `question: .. context: ..` and writes an answer and EOS: \
                 use model.src_len >= 64 and model.tgt_len >= 2 (got {src_len}, {tgt_len})"
            );
        }
        Ok(QaData {
            train,
            dev,
            src_len,
            tgt_len,
            batch,
            seed,
        })
    }

    fn arrays(&self, rows: &[(&Question, usize)]) -> Vec<HostArray> {
        let (s, t, b) = (self.src_len, self.tgt_len, rows.len());
        let mut src = vec![PAD; b * s];
        let mut tgt_in = vec![PAD; b * t];
        let mut targets = vec![PAD; b * t];
        for (r, (q, offset)) in rows.iter().enumerate() {
            let x = source(q, s, *offset);
            let y = target(q, t);
            src[r * s..r * s + x.len()].copy_from_slice(&x);
            targets[r * t..r * t + y.len()].copy_from_slice(&y);
            // Teacher forcing: the decoder reads PAD, then the targets shifted right.
            tgt_in[r * t + 1..r * t + y.len()].copy_from_slice(&y[..y.len() - 1]);
        }
        let i32s = |data: Vec<i32>, cols: usize| HostArray::I32 {
            data,
            dims: vec![b as i64, cols as i64],
        };
        vec![i32s(src, s), i32s(tgt_in, t), i32s(targets, t)]
    }
}

impl DataSource for QaData {
    fn batch_size(&self) -> usize {
        self.batch
    }

    fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.batch).max(1)
    }

    fn train_batch(&mut self, step: usize) -> Result<Vec<HostArray>> {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(b"rxla-qa\0");
        key[8..16].copy_from_slice(&self.seed.to_le_bytes());
        key[16..24].copy_from_slice(&(step as u64).to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(key);
        let rows: Vec<(&Question, usize)> = (0..self.batch)
            .map(|_| {
                let q = &self.train[rng.gen_range(0..self.train.len())];
                (q, train_offset(q, self.src_len, &mut rng))
            })
            .collect();
        Ok(self.arrays(&rows))
    }

    fn eval_batches(&self, batch: usize) -> Result<Vec<(Vec<HostArray>, usize)>> {
        if batch == 0 {
            bail!("eval batch size must be positive");
        }
        let n = self.dev.len();
        Ok((0..n)
            .step_by(batch)
            .map(|first| {
                let valid = batch.min(n - first);
                let rows: Vec<(&Question, usize)> = (0..batch)
                    .map(|k| (&self.dev[first + if k < valid { k } else { 0 }], 0))
                    .collect();
                (self.arrays(&rows), valid)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(context: &str, answer: &str) -> Question {
        Question {
            id: "q".into(),
            context: context.into(),
            question: "Who?".into(),
            answers: vec![(answer.into(), context.find(answer).unwrap())],
        }
    }

    #[test]
    fn sources_hold_the_answer_in_training_and_targets_end_in_eos() {
        let long = format!("{}Moby Dick{}", "a".repeat(300), "b".repeat(300));
        let q = question(&long, "Moby Dick");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut offsets = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let off = train_offset(&q, 128, &mut rng);
            let src: Vec<u8> = source(&q, 128, off).iter().map(|&t| t as u8).collect();
            assert_eq!(src.len(), 128);
            let text = String::from_utf8(src).unwrap();
            assert!(text.starts_with("question: Who? context: "), "{text}");
            assert!(text.contains("Moby Dick"), "offset {off}: {text}");
            offsets.insert(off);
        }
        assert!(offsets.len() > 10, "offsets vary: {offsets:?}");
        // Evaluation reads from the start: here the answer is past the window.
        let eval: Vec<u8> = source(&q, 128, 0).iter().map(|&t| t as u8).collect();
        assert!(!String::from_utf8(eval).unwrap().contains("Moby"));
        let t = target(&q, 32);
        assert_eq!(t.len(), 10);
        assert_eq!(*t.last().unwrap(), EOS as i32);
        assert_eq!(target(&q, 4), vec![77, 111, 98, EOS as i32]);
        // A short context fits whole.
        let short = question("Call me Ishmael.", "Ishmael");
        assert_eq!(train_offset(&short, 128, &mut rng), 0);
    }

    #[test]
    fn batches_are_functions_of_the_step_with_shifted_teacher_inputs() {
        let qs: Vec<Question> = (0..5)
            .map(|i| {
                question(
                    &format!("context {i} with answer{i} inside"),
                    &format!("answer{i}"),
                )
            })
            .collect();
        let mut d = QaData::new(qs.clone(), qs, 64, 12, 3, 7).unwrap();
        let a = d.train_batch(4).unwrap();
        assert_eq!(a, d.train_batch(4).unwrap());
        assert_ne!(a, d.train_batch(5).unwrap());
        let (HostArray::I32 { data: tin, .. }, HostArray::I32 { data: tg, .. }) = (&a[1], &a[2])
        else {
            panic!("i32 batches")
        };
        for r in 0..3 {
            let (x, y) = (&tin[r * 12..(r + 1) * 12], &tg[r * 12..(r + 1) * 12]);
            assert_eq!(x[0], PAD);
            let eos = y.iter().position(|&t| t == EOS as i32).unwrap();
            assert_eq!(eos, 7); // "answerN"
            assert_eq!(&x[1..=eos], &y[..eos]);
            assert!(x[eos + 1..].iter().chain(&y[eos + 1..]).all(|&t| t == PAD));
        }
        let ev = d.eval_batches(2).unwrap();
        assert_eq!(ev.iter().map(|e| e.1).collect::<Vec<_>>(), vec![2, 2, 1]);
    }
}
