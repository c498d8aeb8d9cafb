//! `fit`: Keras' options over the trainer's one loop ([`train::learner::Learner`]): epochs of
//! shuffled batches, a progress bar, validation, callbacks, history, and (new to Keras
//! programs) checkpoints and exact resume. Models plug in through [`TrainStep`]; a model
//! needing its own step (a GAN's two optimizers) implements it instead of forking the loop.

use std::path::PathBuf;

use anyhow::{bail, Result};
use data::{DataSource, HostArray};
use serde_json::json;
use train::learner::{CheckpointPolicy, Display, Learner, Resume};

pub use train::learner::{Callback, CallbackCtx, History, Logs, TrainStep};

use super::data::{rows, Dataset};

/// Options of `fit` (`FitOptions { epochs: 2, batch_size: 64, ..Default::default() }`).
pub struct FitOptions<'a> {
    pub epochs: usize,
    pub batch_size: usize,
    pub validation: Option<&'a Dataset>,
    pub callbacks: Vec<Box<dyn Callback + 'a>>,
    /// Reshuffle the examples each epoch (from `seed` and the epoch number).
    pub shuffle: bool,
    pub seed: u64,
    /// At most this many batches per epoch (default: every full batch).
    pub steps_per_epoch: Option<usize>,
    /// Progress bar and one line per epoch on stderr.
    pub verbose: bool,
    /// Write weights and optimizer state under this directory at every epoch end
    /// (`step-XXXXXXXX/`, the newest 3 kept).
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the newest checkpoint in `checkpoint_dir` (bit-identical to an
    /// uninterrupted fit: batches are a function of (seed, epoch)).
    pub resume: bool,
}

impl Default for FitOptions<'_> {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            batch_size: 32,
            validation: None,
            callbacks: Vec::new(),
            shuffle: true,
            seed: 0,
            steps_per_epoch: None,
            verbose: true,
            checkpoint_dir: None,
            resume: false,
        }
    }
}

/// Batches `0..n` in `batch`es, the last padded with example 0: (indices, real count).
pub fn padded_batches(n: usize, batch: usize) -> Vec<(Vec<usize>, usize)> {
    (0..n)
        .step_by(batch.max(1))
        .map(|start| {
            let valid = batch.min(n - start);
            let idx = (0..batch)
                .map(|k| if k < valid { start + k } else { 0 })
                .collect();
            (idx, valid)
        })
        .collect()
}

/// A dataset's inputs (and targets) as padded evaluation batches.
pub fn eval_batches(data: &Dataset, batch: usize) -> Vec<(Vec<HostArray>, usize)> {
    padded_batches(data.len(), batch)
        .into_iter()
        .map(|(idx, valid)| {
            let mut v = vec![rows(&data.x, &idx)];
            v.extend(data.y.as_ref().map(|y| rows(y, &idx)));
            (v, valid)
        })
        .collect()
}

/// An in-memory dataset as the loop's data source: epoch `e`'s batch order is a function of
/// (seed, e) only, so a resumed fit sees the same batches.
struct Batches<'d> {
    data: &'d Dataset,
    batch: usize,
    steps_per_epoch: usize,
    shuffle: bool,
    seed: u64,
    order: Option<(usize, Vec<Vec<usize>>)>,
}

impl DataSource for Batches<'_> {
    fn batch_size(&self) -> usize {
        self.batch
    }

    fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }

    fn train_batch(&mut self, step: usize) -> Result<Vec<HostArray>> {
        let epoch = step / self.steps_per_epoch;
        if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let order = if self.shuffle {
                data::epoch_batches(self.data.len(), self.batch, self.seed, epoch as u64)
            } else {
                let all: Vec<usize> = (0..self.data.len()).collect();
                all.chunks_exact(self.batch).map(|c| c.to_vec()).collect()
            };
            self.order = Some((epoch, order));
        }
        let (_, order) = self.order.as_ref().expect("set above");
        let b = self.data.rows(&order[step % self.steps_per_epoch]);
        let mut v = vec![b.x];
        v.extend(b.y);
        Ok(v)
    }

    fn eval_batches(&self, batch: usize) -> Result<Vec<(Vec<HostArray>, usize)>> {
        Ok(eval_batches(self.data, batch))
    }
}

/// Trains `model` on `data`; the last partial batch of an epoch is dropped (static shapes).
pub fn fit_loop(
    model: &mut dyn TrainStep,
    data: &Dataset,
    mut opts: FitOptions,
) -> Result<History> {
    let bs = opts.batch_size;
    if bs == 0 || data.len() < bs {
        bail!(
            "batch_size {bs} needs at least that many examples, the data has {}",
            data.len()
        );
    }
    let mut spe = data.len() / bs;
    if let Some(n) = opts.steps_per_epoch {
        spe = spe.min(n.max(1));
    }
    let mut learner = Learner::new(opts.epochs * spe, spe);
    learner.callbacks = std::mem::take(&mut opts.callbacks);
    if let Some(v) = opts.validation {
        learner.eval_at_epoch_end = true;
        learner.eval_batches = eval_batches(v, bs);
        learner.eval_prefix = "val_";
    }
    learner.display = if opts.verbose {
        Display::Epochs
    } else {
        Display::Quiet
    };
    if let Some(dir) = &opts.checkpoint_dir {
        learner.checkpoint = Some(CheckpointPolicy {
            root: dir.clone(),
            every: spe,
            keep: 3,
            config: json!({"seed": opts.seed, "train": {"batch_size": bs}}),
            extra_files: Vec::new(),
            resume: if opts.resume {
                Resume::Latest
            } else {
                Resume::Never
            },
            skip_failed_writes: false,
        });
    } else if opts.resume {
        bail!("resume needs a checkpoint_dir to resume from");
    }
    let mut batches = Batches {
        data,
        batch: bs,
        steps_per_epoch: spe,
        shuffle: opts.shuffle,
        seed: opts.seed,
        order: None,
    };
    learner.fit(model, &mut batches)
}
