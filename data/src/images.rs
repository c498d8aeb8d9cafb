//! Image-classification batches for the trainer.

use anyhow::Result;

use crate::datasets::{epoch_batches, ImageSet};
use crate::host::HostArray;
use crate::source::DataSource;

/// Shuffled training batches (per epoch, from the seed) and a padded evaluation set.
pub struct ImageClassification {
    pub train: ImageSet,
    pub test: ImageSet,
    pub batch: usize,
    pub seed: u64,
    epoch: Option<(usize, Vec<Vec<usize>>)>,
}

impl ImageClassification {
    pub fn new(train: ImageSet, test: ImageSet, batch: usize, seed: u64) -> Self {
        ImageClassification {
            train,
            test,
            batch,
            seed,
            epoch: None,
        }
    }

    fn arrays(set: &ImageSet, idx: &[usize]) -> Vec<HostArray> {
        let (x, y) = set.gather(idx);
        let (h, w, c) = set.hwc;
        let b = idx.len() as i64;
        vec![
            HostArray::F32 {
                data: x,
                dims: vec![b, h as i64, w as i64, c as i64],
            },
            HostArray::I32 {
                data: y,
                dims: vec![b],
            },
        ]
    }
}

impl DataSource for ImageClassification {
    fn batch_size(&self) -> usize {
        self.batch
    }

    fn steps_per_epoch(&self) -> usize {
        self.train.n / self.batch
    }

    fn train_batch(&mut self, step: usize) -> Result<Vec<HostArray>> {
        let per = self.steps_per_epoch().max(1);
        let (epoch, i) = (step / per, step % per);
        if self.epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
            self.epoch = Some((
                epoch,
                epoch_batches(self.train.n, self.batch, self.seed, epoch as u64),
            ));
        }
        let idx = &self.epoch.as_ref().expect("epoch order").1[i];
        Ok(Self::arrays(&self.train, idx))
    }

    /// Gathers only these rows' images.
    fn train_rows(&mut self, step: usize, rows: std::ops::Range<usize>) -> Result<Vec<HostArray>> {
        let per = self.steps_per_epoch().max(1);
        let (epoch, i) = (step / per, step % per);
        if self.epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
            self.epoch = Some((
                epoch,
                epoch_batches(self.train.n, self.batch, self.seed, epoch as u64),
            ));
        }
        let idx = &self.epoch.as_ref().expect("epoch order").1[i];
        let Some(mine) = idx.get(rows.clone()) else {
            anyhow::bail!("rows {rows:?} of a batch of {}", idx.len());
        };
        Ok(Self::arrays(&self.train, mine))
    }

    fn eval_batches(&self, batch: usize) -> Result<Vec<(Vec<HostArray>, usize)>> {
        if batch == 0 {
            anyhow::bail!("eval batch size must be positive");
        }
        let n = self.test.n;
        Ok((0..n)
            .step_by(batch)
            .map(|start| {
                let valid = batch.min(n - start);
                // Pad by repeating the first example; padded rows are not counted.
                let idx: Vec<usize> = (0..batch)
                    .map(|k| if k < valid { start + k } else { start })
                    .collect();
                (Self::arrays(&self.test, &idx), valid)
            })
            .collect())
    }
}
