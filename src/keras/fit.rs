//! The `fit` loop shared by every model: epochs of shuffled batches, a progress bar, validation,
//! callbacks and history. Models plug in through [`TrainStep`]; a model needing its own step
//! (a GAN's two optimizers) implements it instead of forking the loop.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::callbacks::{Callback, CallbackCtx};
use super::data::Dataset;

/// Named epoch or batch values (`loss`, `val_accuracy`, `lr` ...), in insertion order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Logs(pub Vec<(String, f64)>);

impl Logs {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    pub fn insert(&mut self, key: impl Into<String>, v: f64) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = v,
            None => self.0.push((key, v)),
        }
    }

    /// `loss: 0.1234 - val_loss: 0.2345`, as Keras prints them.
    pub fn line(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}: {v:.4}"))
            .collect::<Vec<_>>()
            .join(" - ")
    }
}

/// Per-epoch logs of a `fit`.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub epochs: Vec<Logs>,
    /// Optimizer steps taken.
    pub steps: usize,
}

impl History {
    /// The values of `key` per epoch.
    pub fn values(&self, key: &str) -> Vec<f64> {
        self.epochs.iter().filter_map(|l| l.get(key)).collect()
    }
}

/// What `fit` drives: one optimizer step per batch, evaluation, learning rate, weights.
pub trait TrainStep {
    /// Prepares (compiles) for batches of `batch_size`; called at the start of `fit`.
    fn begin(&mut self, batch_size: usize) -> Result<()>;
    /// One training step on a batch; returns its logs (at least `loss`).
    fn train_step(&mut self, batch: &Dataset) -> Result<Logs>;
    /// Metrics over a dataset (validation), keys without the `val_` prefix.
    fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Logs>;
    fn learning_rate(&self) -> f64;
    fn set_learning_rate(&mut self, lr: f64) -> Result<()>;
    fn save_weights(&mut self, path: &Path) -> Result<()>;
}

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
        }
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
    model.begin(bs)?;
    let mut history = History::default();
    let mut cbs = std::mem::take(&mut opts.callbacks);
    let mut cx = CallbackCtx {
        model,
        stop_training: false,
    };
    for cb in cbs.iter_mut() {
        cb.on_train_begin(&mut cx)?;
    }
    for epoch in 0..opts.epochs {
        for cb in cbs.iter_mut() {
            cb.on_epoch_begin(epoch, &mut cx)?;
        }
        let mut batches = if opts.shuffle {
            data::epoch_batches(data.len(), bs, opts.seed, epoch as u64)
        } else {
            let all: Vec<usize> = (0..data.len()).collect();
            all.chunks_exact(bs).map(|c| c.to_vec()).collect()
        };
        if let Some(n) = opts.steps_per_epoch {
            batches.truncate(n);
        }
        let bar = if opts.verbose {
            eprintln!("Epoch {}/{}", epoch + 1, opts.epochs);
            let b = ProgressBar::new(batches.len() as u64);
            b.set_style(
                ProgressStyle::with_template("{pos}/{len} [{bar:30}] {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b
        } else {
            ProgressBar::hidden()
        };
        let t = Instant::now();
        let mut sums = Logs::default();
        let mut n = 0usize;
        for idx in &batches {
            let logs = cx.model.train_step(&data.rows(idx))?;
            history.steps += 1;
            n += 1;
            for (k, v) in &logs.0 {
                let s = sums.get(k).unwrap_or(0.0);
                sums.insert(k.clone(), s + v);
            }
            for cb in cbs.iter_mut() {
                cb.on_batch_end(history.steps, &logs, &mut cx)?;
            }
            bar.inc(1);
            let mut mean = sums.clone();
            mean.0.iter_mut().for_each(|(_, v)| *v /= n as f64);
            bar.set_message(mean.line());
            if cx.stop_training {
                break;
            }
        }
        bar.finish_and_clear();
        let mut logs = sums;
        logs.0.iter_mut().for_each(|(_, v)| *v /= n.max(1) as f64);
        if let Some(v) = opts.validation {
            for (k, x) in cx.model.evaluate(v, bs)?.0 {
                logs.insert(format!("val_{k}"), x);
            }
        }
        logs.insert("lr", cx.model.learning_rate());
        if opts.verbose {
            eprintln!(
                "{}/{} - {:.0}s - {}",
                n,
                batches.len(),
                t.elapsed().as_secs_f64(),
                logs.line()
            );
        }
        history.epochs.push(logs.clone());
        for cb in cbs.iter_mut() {
            cb.on_epoch_end(epoch, &logs, &mut cx)?;
        }
        if cx.stop_training {
            break;
        }
    }
    for cb in cbs.iter_mut() {
        cb.on_train_end(&history, &mut cx)?;
    }
    Ok(history)
}
