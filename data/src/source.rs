//! Where a training loop's batches come from.

use std::ops::Range;

use anyhow::Result;

use crate::host::HostArray;

/// Where batches come from. Batches depend only on (seed, step), so a resumed run sees the
/// same data.
pub trait DataSource {
    /// Examples per training step.
    fn batch_size(&self) -> usize;
    /// Training batches per epoch.
    fn steps_per_epoch(&self) -> usize;
    /// The data inputs of training step `step` (in the model's input order).
    fn train_batch(&mut self, step: usize) -> Result<Vec<HostArray>>;
    /// Rows `rows` of training step `step`'s batch: one process's part of the global batch
    /// (see [`crate::rows`]). Equal to those rows of `train_batch(step)`; sources override it
    /// to build only these rows.
    fn train_rows(&mut self, step: usize, rows: Range<usize>) -> Result<Vec<HostArray>> {
        Ok(self
            .train_batch(step)?
            .iter()
            .map(|a| a.rows(rows.clone()))
            .collect())
    }
    /// Evaluation batches of `batch` examples: inputs and how many leading examples are real
    /// (the last batch is padded).
    fn eval_batches(&self, batch: usize) -> Result<Vec<(Vec<HostArray>, usize)>>;
    /// Text bytes per evaluated token, for bits per byte (language-model data only).
    fn eval_bytes_per_token(&self) -> Option<f64> {
        None
    }
    /// Reference scores of a trivial model on the same held-out examples (e.g. BERT's
    /// unigram MLM baseline), as `(summary key, value)`.
    fn eval_baselines(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}
