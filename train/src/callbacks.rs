//! Callbacks of the [`crate::learner::Learner`] (Keras' set): checkpoints of the best
//! weights, early stopping, CSV and TensorBoard logs, stopping on NaN, learning-rate
//! schedules. The same objects serve `keras::fit` and `rxla train`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::learner::{Callback, CallbackCtx, Logs};
use crate::tensorboard::EventWriter;

/// Whether larger is better for a monitored quantity (Keras `mode="auto"`).
fn maximize(monitor: &str) -> bool {
    monitor.ends_with("accuracy") || monitor.ends_with("acc")
}

/// Whether `v` beats `best` by more than `min_delta`.
fn improved(monitor: &str, v: f64, best: Option<f64>, min_delta: f64) -> bool {
    match best {
        None => v.is_finite(),
        Some(b) if maximize(monitor) => v > b + min_delta,
        Some(b) => v < b - min_delta,
    }
}

/// Saves the weights after each epoch to `path` (with `{epoch}` replaced by the 1-based
/// epoch); with `save_best_only`, only when `monitor` improved.
pub struct ModelCheckpoint {
    pub path: String,
    pub monitor: String,
    pub save_best_only: bool,
    best: Option<f64>,
    /// Files written, in order.
    pub saved: Vec<PathBuf>,
}

impl ModelCheckpoint {
    pub fn new(path: impl Into<String>) -> Self {
        ModelCheckpoint {
            path: path.into(),
            monitor: "val_loss".into(),
            save_best_only: false,
            best: None,
            saved: Vec::new(),
        }
    }
    pub fn monitor(mut self, m: &str) -> Self {
        self.monitor = m.into();
        self
    }
    pub fn save_best_only(mut self, yes: bool) -> Self {
        self.save_best_only = yes;
        self
    }
}

impl Callback for ModelCheckpoint {
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, cx: &mut CallbackCtx) -> Result<()> {
        if self.save_best_only {
            let v = logs.get(&self.monitor).ok_or_else(|| {
                anyhow::anyhow!(
                    "ModelCheckpoint monitors `{}` but the logs have {:?}: pass validation data or \
                     monitor another key",
                    self.monitor,
                    logs.0.iter().map(|(k, _)| k).collect::<Vec<_>>()
                )
            })?;
            if !improved(&self.monitor, v, self.best, 0.0) {
                return Ok(());
            }
            self.best = Some(v);
        }
        let path = PathBuf::from(self.path.replace("{epoch}", &format!("{:02}", epoch + 1)));
        cx.model.save_weights(&path)?;
        self.saved.push(path);
        Ok(())
    }
}

/// Stops when `monitor` has not improved by more than `min_delta` for `patience` epochs.
pub struct EarlyStopping {
    pub monitor: String,
    pub min_delta: f64,
    pub patience: usize,
    best: Option<f64>,
    wait: usize,
    /// The epoch (0-based) after which training stopped; with `on_evaluations`, the step.
    pub stopped_epoch: Option<usize>,
    /// Watch every logged record that has `monitor` (the CLI's evaluations) instead of
    /// epoch ends.
    pub per_record: bool,
}

impl EarlyStopping {
    pub fn new(monitor: &str, patience: usize) -> Self {
        EarlyStopping {
            monitor: monitor.into(),
            min_delta: 0.0,
            patience,
            best: None,
            wait: 0,
            stopped_epoch: None,
            per_record: false,
        }
    }
    pub fn min_delta(mut self, d: f64) -> Self {
        self.min_delta = d;
        self
    }
    /// Counts evaluations (logged records with `monitor`), not epochs, as patience.
    pub fn on_evaluations(mut self) -> Self {
        self.per_record = true;
        self
    }

    fn check(&mut self, at: usize, v: f64, cx: &mut CallbackCtx) {
        if self.best.is_none() || improved(&self.monitor, v, self.best, self.min_delta) {
            self.best = Some(v);
            self.wait = 0;
            return;
        }
        self.wait += 1;
        if self.wait >= self.patience {
            cx.stop_training = true;
            self.stopped_epoch = Some(at);
        }
    }
}

impl Callback for EarlyStopping {
    fn on_log(&mut self, step: usize, record: &Logs, cx: &mut CallbackCtx) -> Result<()> {
        if !self.per_record {
            return Ok(());
        }
        match record.get(&self.monitor) {
            Some(v) => self.check(step, v, cx),
            None if record.0.iter().any(|(k, _)| k.starts_with("eval_")) => anyhow::bail!(
                "EarlyStopping monitors `{}`, which the evaluations do not have (they have {:?})",
                self.monitor,
                record
                    .0
                    .iter()
                    .filter(|(k, _)| k.starts_with("eval_"))
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>()
            ),
            None => {}
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, cx: &mut CallbackCtx) -> Result<()> {
        if self.per_record {
            return Ok(());
        }
        let Some(v) = logs.get(&self.monitor) else {
            anyhow::bail!(
                "EarlyStopping monitors `{}`, which the logs do not have",
                self.monitor
            );
        };
        self.check(epoch, v, cx);
        Ok(())
    }
}

/// One CSV row per epoch (`epoch,` then the log keys of the first epoch), rewritten atomically.
pub struct CsvLogger {
    pub path: PathBuf,
    keys: Vec<String>,
    text: String,
}

impl CsvLogger {
    pub fn new(path: impl AsRef<Path>) -> Self {
        CsvLogger {
            path: path.as_ref().to_path_buf(),
            keys: Vec::new(),
            text: String::new(),
        }
    }
}

impl Callback for CsvLogger {
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, _cx: &mut CallbackCtx) -> Result<()> {
        if self.keys.is_empty() {
            self.keys = logs.0.iter().map(|(k, _)| k.clone()).collect();
            self.text = format!("epoch,{}\n", self.keys.join(","));
        }
        let vals: Vec<String> = self
            .keys
            .iter()
            .map(|k| logs.get(k).map(|v| v.to_string()).unwrap_or_default())
            .collect();
        self.text.push_str(&format!("{epoch},{}\n", vals.join(",")));
        Ok(files::write_atomic(&self.path, self.text.as_bytes())?)
    }
}

/// Epoch scalars (every log key, as `epoch_<key>`) and every logged record's values (by
/// step) as TensorBoard event files under `log_dir`.
pub struct TensorBoard {
    pub log_dir: PathBuf,
    writer: Option<EventWriter>,
}

impl TensorBoard {
    pub fn new(log_dir: impl AsRef<Path>) -> Self {
        TensorBoard {
            log_dir: log_dir.as_ref().to_path_buf(),
            writer: None,
        }
    }
}

impl Callback for TensorBoard {
    fn on_train_begin(&mut self, _cx: &mut CallbackCtx) -> Result<()> {
        self.writer = Some(EventWriter::create(&self.log_dir)?);
        Ok(())
    }
    fn on_log(&mut self, step: usize, record: &Logs, _cx: &mut CallbackCtx) -> Result<()> {
        let vals: Vec<(String, f64)> = record
            .0
            .iter()
            .filter(|(k, _)| k != "step")
            .cloned()
            .collect();
        match &mut self.writer {
            Some(w) => w.scalars(step as i64, &vals),
            None => Ok(()),
        }
    }
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, _cx: &mut CallbackCtx) -> Result<()> {
        let vals: Vec<(String, f64)> = logs
            .0
            .iter()
            .map(|(k, v)| (format!("epoch_{k}"), *v))
            .collect();
        match &mut self.writer {
            Some(w) => w.scalars(epoch as i64, &vals),
            None => Ok(()),
        }
    }
}

/// Stops as soon as a batch loss is NaN or infinite.
#[derive(Default)]
pub struct TerminateOnNaN {
    /// The step at which the loss stopped being finite.
    pub terminated_at: Option<usize>,
}

impl TerminateOnNaN {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Callback for TerminateOnNaN {
    fn on_batch_end(&mut self, step: usize, logs: &Logs, cx: &mut CallbackCtx) -> Result<()> {
        if logs.get("loss").is_some_and(|l| !l.is_finite()) {
            eprintln!("step {step}: invalid loss, terminating training");
            self.terminated_at = Some(step);
            cx.stop_training = true;
        }
        Ok(())
    }
}

/// Sets the learning rate at each epoch start to `schedule(epoch, current_lr)`.
pub struct LearningRateScheduler<'a> {
    schedule: Box<dyn FnMut(usize, f64) -> f64 + 'a>,
}

impl<'a> LearningRateScheduler<'a> {
    pub fn new(schedule: impl FnMut(usize, f64) -> f64 + 'a) -> Self {
        LearningRateScheduler {
            schedule: Box::new(schedule),
        }
    }
}

impl Callback for LearningRateScheduler<'_> {
    fn on_epoch_begin(&mut self, epoch: usize, cx: &mut CallbackCtx) -> Result<()> {
        let lr = (self.schedule)(epoch, cx.model.learning_rate());
        if !(lr.is_finite() && lr >= 0.0) {
            anyhow::bail!("LearningRateScheduler returned {lr} for epoch {epoch}");
        }
        cx.model.set_learning_rate(lr)
    }
}
