//! Batches for fine-tuning: `(tokens, segments, mask, labels)` for a sequence classifier and
//! `(tokens, segments, mask, start, end)` for a span-QA head, all i32, padded to `seq_len`.
//! Training order is a function of (seed, epoch) only, so a resumed run sees the same data.

use anyhow::{bail, Result};

use crate::datasets::epoch_batches;
use crate::host::HostArray;
use crate::source::DataSource;
use crate::wordpiece::WordPiece;

use super::squad::{self, Feature, Question, WindowOptions};
use super::Labeled;

/// One model input row: ids, segments and the integer targets after them.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub ids: Vec<i32>,
    pub segments: Vec<i32>,
    pub targets: Vec<i32>,
}

/// Tokenizes classification examples, cut to `seq_len` (the last kept token becomes
/// `[SEP]`, so a cut pair still ends like BERT's inputs).
pub fn classification_rows(tok: &WordPiece, ex: &[Labeled], seq_len: usize) -> Result<Vec<Row>> {
    let sep = tok.token_id("[SEP]")? as i32;
    ex.iter()
        .map(|e| {
            let enc = tok.encode(&e.text, e.second.as_deref())?;
            let mut ids: Vec<i32> = enc.ids.iter().map(|&x| x as i32).collect();
            let mut segments: Vec<i32> = enc.segments.iter().map(|&x| x as i32).collect();
            if ids.len() > seq_len {
                ids.truncate(seq_len);
                segments.truncate(seq_len);
                ids[seq_len - 1] = sep;
            }
            Ok(Row {
                ids,
                segments,
                targets: vec![e.label],
            })
        })
        .collect()
}

/// Windows of SQuAD questions, tokenized; training windows carry the first gold answer.
pub fn squad_features(
    tok: &WordPiece,
    questions: &[Question],
    o: &WindowOptions,
    label: bool,
) -> Result<Vec<Feature>> {
    let mut out = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        let query: Vec<u32> = tok.ids(&q.question)?;
        let ctx: Vec<squad::Token> = tok
            .tokens_with_offsets(&q.context)?
            .into_iter()
            .map(|(id, start, end)| squad::Token { id, start, end })
            .collect();
        let answer = q
            .answers
            .first()
            .filter(|_| label)
            .map(|(t, s)| (*s, s + t.len()));
        out.extend(squad::windows(i, &query, &ctx, answer, o)?);
    }
    Ok(out)
}

/// Features as rows (targets: start, end).
pub fn span_rows(features: &[Feature]) -> Vec<Row> {
    features
        .iter()
        .map(|f| Row {
            ids: f.ids.iter().map(|&x| x as i32).collect(),
            segments: f.segments.iter().map(|&x| x as i32).collect(),
            targets: vec![f.start as i32, f.end as i32],
        })
        .collect()
}

/// Rows as padded batch arrays: tokens, segments, mask `(B, T)`, then one `(B,)` per target.
pub fn arrays(rows: &[&Row], seq_len: usize) -> Vec<HostArray> {
    let b = rows.len();
    let (mut ids, mut seg, mut mask) = (
        vec![0; b * seq_len],
        vec![0; b * seq_len],
        vec![0; b * seq_len],
    );
    let k = rows.first().map_or(0, |r| r.targets.len());
    let mut targets = vec![Vec::with_capacity(b); k];
    for (i, r) in rows.iter().enumerate() {
        let n = r.ids.len().min(seq_len);
        ids[i * seq_len..i * seq_len + n].copy_from_slice(&r.ids[..n]);
        seg[i * seq_len..i * seq_len + n].copy_from_slice(&r.segments[..n]);
        mask[i * seq_len..i * seq_len + n].fill(1);
        for (t, v) in targets.iter_mut().zip(&r.targets) {
            t.push(*v);
        }
    }
    let bt = vec![b as i64, seq_len as i64];
    let mut out = vec![
        HostArray::I32 {
            data: ids,
            dims: bt.clone(),
        },
        HostArray::I32 {
            data: seg,
            dims: bt.clone(),
        },
        HostArray::I32 {
            data: mask,
            dims: bt,
        },
    ];
    out.extend(targets.into_iter().map(|data| HostArray::I32 {
        data,
        dims: vec![b as i64],
    }));
    out
}

/// Shuffled training rows and padded evaluation rows.
pub struct RowData {
    pub train: Vec<Row>,
    pub eval: Vec<Row>,
    pub seq_len: usize,
    pub batch: usize,
    pub seed: u64,
    epoch: Option<(usize, Vec<Vec<usize>>)>,
}

impl RowData {
    pub fn new(
        train: Vec<Row>,
        eval: Vec<Row>,
        seq_len: usize,
        batch: usize,
        seed: u64,
    ) -> Result<RowData> {
        if train.len() < batch {
            bail!(
                "config key `train.batch_size` ({batch}) is larger than the training set \
                 ({} examples)",
                train.len()
            );
        }
        if eval.is_empty() {
            bail!("the evaluation split is empty");
        }
        if let Some(r) = train.iter().chain(&eval).find(|r| r.ids.len() > seq_len) {
            bail!(
                "an example has {} tokens, more than model.seq_len ({seq_len})",
                r.ids.len()
            );
        }
        Ok(RowData {
            train,
            eval,
            seq_len,
            batch,
            seed,
            epoch: None,
        })
    }
}

impl DataSource for RowData {
    fn batch_size(&self) -> usize {
        self.batch
    }

    fn steps_per_epoch(&self) -> usize {
        self.train.len() / self.batch
    }

    fn train_batch(&mut self, step: usize) -> Result<Vec<HostArray>> {
        let per = self.steps_per_epoch().max(1);
        let (epoch, i) = (step / per, step % per);
        if self.epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let order = epoch_batches(self.train.len(), self.batch, self.seed, epoch as u64);
            self.epoch = Some((epoch, order));
        }
        let idx = &self.epoch.as_ref().expect("set above").1[i];
        let rows: Vec<&Row> = idx.iter().map(|&j| &self.train[j]).collect();
        Ok(arrays(&rows, self.seq_len))
    }

    fn eval_batches(&self, batch: usize) -> Result<Vec<(Vec<HostArray>, usize)>> {
        Ok(self
            .eval
            .chunks(batch)
            .map(|c| {
                // The last batch is padded with its first row (not counted).
                let mut rows: Vec<&Row> = c.iter().collect();
                rows.resize(batch, &c[0]);
                (arrays(&rows, self.seq_len), c.len())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_pad_mask_and_batch_deterministically() {
        let row = |n: usize, l: i32| Row {
            ids: (1..=n as i32).collect(),
            segments: vec![0; n],
            targets: vec![l],
        };
        let train: Vec<Row> = (0..10).map(|i| row(1 + i % 3, i as i32)).collect();
        let mut d = RowData::new(train.clone(), vec![row(2, 0); 5], 4, 3, 7).unwrap();
        assert_eq!(d.steps_per_epoch(), 3);
        let a = d.train_batch(4).unwrap();
        assert_eq!(a, d.train_batch(4).unwrap());
        let HostArray::I32 { data: mask, dims } = &a[2] else {
            panic!()
        };
        assert_eq!(dims, &[3, 4]);
        let HostArray::I32 { data: labels, .. } = &a[3] else {
            panic!()
        };
        for (i, &l) in labels.iter().enumerate() {
            let n = 1 + l as usize % 3;
            assert_eq!(mask[i * 4..i * 4 + 4].iter().sum::<i32>(), n as i32);
        }
        let ev = d.eval_batches(2).unwrap();
        assert_eq!(ev.iter().map(|e| e.1).collect::<Vec<_>>(), vec![2, 2, 1]);
        let long = vec![row(5, 0)];
        assert!(RowData::new(train, long, 4, 3, 7)
            .err()
            .unwrap()
            .to_string()
            .contains("seq_len"));
    }
}
