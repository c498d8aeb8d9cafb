//! The one training loop, burn's `Learner`: steps grouped into epochs, periodic logging
//! (`metrics.jsonl`) and evaluation, callbacks at batch/log/epoch boundaries, checkpoints and
//! exact resume. What a step computes comes from a [`TrainStep`]: the CLI's compiled GPT/CNN
//! programs ([`ProgramStep`]), a Keras `Sequential`, or a program of its own (a GAN).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use data::{DataSource, HostArray};
use runtime::Client;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint::{Checkpoint, CheckpointState, NamedTensor};
use crate::metrics::{MetricsLog, Progress};
use crate::optim::Optimizer;
use crate::state::{
    build_train_step, check_data, compile_program, evaluate, run_train_step_rows, Compiled,
    TrainState,
};
use crate::step::{eval_step, Passes};

/// Named epoch, batch or log values (`loss`, `val_accuracy`, `lr` ...), in insertion order.
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

/// What a fit did: per-epoch logs, the logged records, and the steps taken.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub epochs: Vec<Logs>,
    /// Optimizer steps taken by this fit.
    pub steps: usize,
    /// Every record written to `metrics.jsonl` (or that would have been), in order.
    pub records: Vec<serde_json::Value>,
    /// Seconds spent in train steps.
    pub train_seconds: f64,
    /// The signal (number) that stopped the fit early, after checkpointing the step reached.
    pub interrupted_by: Option<usize>,
    /// Steps whose update was dropped for a non-finite loss or gradient norm.
    pub skipped_steps: usize,
}

impl History {
    /// The values of `key` per epoch.
    pub fn values(&self, key: &str) -> Vec<f64> {
        self.epochs.iter().filter_map(|l| l.get(key)).collect()
    }
}

/// What the [`Learner`] drives: one optimizer step per batch, evaluation, learning rate,
/// weights, and (for resumable models) the state a checkpoint holds.
pub trait TrainStep {
    /// Prepares (compiles) for batches of `batch_size`; called once before training.
    fn begin(&mut self, batch_size: usize) -> Result<()>;
    /// One training step on a batch (the model's data inputs, in order); returns its logs
    /// (at least `loss`).
    fn train_step(&mut self, batch: &[HostArray]) -> Result<Logs>;
    /// Mean metrics over evaluation batches (inputs and how many leading examples are real);
    /// keys without a prefix (`loss`, `accuracy`).
    fn evaluate(&mut self, batches: &[(Vec<HostArray>, usize)]) -> Result<Logs>;
    fn learning_rate(&self) -> f64;
    fn set_learning_rate(&mut self, lr: f64) -> Result<()>;
    fn save_weights(&mut self, path: &Path) -> Result<()>;
    /// Parameters and optimizer state as named host tensors, and the run's seed, for a
    /// checkpoint; `None`: this model keeps no such state.
    fn checkpoint_tensors(&mut self) -> Result<Option<Snapshot>> {
        Ok(None)
    }
    /// Continues from a checkpoint written from [`TrainStep::checkpoint_tensors`].
    fn restore(&mut self, _c: &Checkpoint) -> Result<()> {
        bail!("this model cannot resume from a checkpoint")
    }
    /// In a job of several processes: the rows of each global training batch this process
    /// feeds (`None`: the whole batch).
    fn batch_rows(&self) -> Option<Range<usize>> {
        None
    }
    /// Writes checkpoint `step` as a job does, each process its own tiles; `false`: not
    /// in a job, the Learner writes [`TrainStep::checkpoint_tensors`] as one process.
    fn save_job_checkpoint(&mut self, _cp: &CheckpointPolicy, _step: usize) -> Result<bool> {
        Ok(false)
    }
}

/// A model's state for a checkpoint.
pub struct Snapshot {
    pub params: Vec<NamedTensor>,
    pub optimizer: Vec<NamedTensor>,
    pub seed: u64,
}

/// What a callback may touch: the model and the stop flag.
pub struct CallbackCtx<'a> {
    pub model: &'a mut dyn TrainStep,
    pub stop_training: bool,
}

/// Hooks the loop calls at its boundaries (Keras' callbacks, plus `on_log` for every record
/// the loop logs, evaluations included).
pub trait Callback {
    fn on_train_begin(&mut self, _cx: &mut CallbackCtx) -> Result<()> {
        Ok(())
    }
    fn on_epoch_begin(&mut self, _epoch: usize, _cx: &mut CallbackCtx) -> Result<()> {
        Ok(())
    }
    /// After optimizer step `step` (1-based, counted over the whole fit).
    fn on_batch_end(&mut self, _step: usize, _logs: &Logs, _cx: &mut CallbackCtx) -> Result<()> {
        Ok(())
    }
    /// After a logged step: the record (`loss`, `lr`, `eval_loss` ...) as written.
    fn on_log(&mut self, _step: usize, _record: &Logs, _cx: &mut CallbackCtx) -> Result<()> {
        Ok(())
    }
    fn on_epoch_end(&mut self, _epoch: usize, _logs: &Logs, _cx: &mut CallbackCtx) -> Result<()> {
        Ok(())
    }
    fn on_train_end(&mut self, _history: &History, _cx: &mut CallbackCtx) -> Result<()> {
        Ok(())
    }
}

/// Where and how often checkpoints are written, and whether to resume from the newest.
pub struct CheckpointPolicy {
    /// `checkpoints/` directory; one `step-XXXXXXXX/` per checkpoint.
    pub root: PathBuf,
    /// Every N steps (0: only at the end).
    pub every: usize,
    pub keep: usize,
    /// The run's config, saved with each checkpoint; resuming checks it matches.
    pub config: serde_json::Value,
    /// Files saved with each checkpoint (name, path), e.g. the tokenizer.
    pub extra_files: Vec<(String, PathBuf)>,
    pub resume: Resume,
    /// A checkpoint that cannot be written (full disk): stop, or warn and train on.
    pub skip_failed_writes: bool,
}

impl CheckpointPolicy {
    /// What checkpoint `step` of a run with `seed` records.
    fn state(&self, step: usize, seed: u64) -> CheckpointState {
        CheckpointState {
            format: 0,
            step,
            seed,
            config: self.config.clone(),
            checksums: Default::default(),
            files: Vec::new(),
        }
    }

    /// The extra files as `save` takes them.
    fn extra(&self) -> Vec<(&str, &Path)> {
        self.extra_files
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_path()))
            .collect()
    }
}

/// Whether a run continues from the newest complete checkpoint of its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resume {
    /// Start fresh (a new run in that directory).
    #[default]
    Never,
    /// Continue from the newest checkpoint; having none is an error.
    Latest,
    /// Continue from the newest checkpoint if there is one, else start fresh: one restart
    /// command for schedulers and preemptible machines.
    Auto,
}

impl std::str::FromStr for Resume {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "never" => Ok(Resume::Never),
            "latest" => Ok(Resume::Latest),
            "auto" => Ok(Resume::Auto),
            _ => bail!("resume mode `{s}`: use auto (resume if a checkpoint exists, else start fresh), latest or never"),
        }
    }
}

/// The checkpoint directory (and its step) a run with `mode` continues from; `None`: start
/// fresh. Only directory names and `state.json` presence are read (cheap, for the first log
/// line); [`CheckpointPolicy::to_resume`] loads and verifies it.
pub fn resume_point(root: &Path, mode: Resume) -> Result<Option<(usize, PathBuf)>> {
    if mode == Resume::Never {
        return Ok(None);
    }
    let newest = crate::checkpoint::list(root)?.pop();
    if newest.is_none() && mode == Resume::Latest {
        bail!(
            "--resume: no complete checkpoint in {}; use `--resume auto` to start fresh when \
             there is none",
            root.display()
        );
    }
    Ok(newest)
}

/// What the first log line of a run says: resumed (from where) or fresh (and why).
pub fn start_line(out: &Path, mode: Resume, point: Option<&(usize, PathBuf)>) -> String {
    match (point, mode) {
        (Some((step, dir)), _) => format!("rxla: resuming from {} (step {step})", dir.display()),
        (None, Resume::Auto) => format!(
            "rxla: starting fresh in {} (resume auto: no complete checkpoint yet)",
            out.display()
        ),
        (None, _) => format!("rxla: starting fresh in {}", out.display()),
    }
}

/// What the loop does when a step's loss or gradient norm is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinite {
    /// Nothing; callbacks (TerminateOnNaN) may stop the fit.
    #[default]
    Continue,
    /// Fail naming the step; the last checkpoint written stays the newest.
    Stop,
    /// The step program dropped the update (`Passes::skip_nonfinite`); count it and fail
    /// after this many in a row.
    Skip { max_in_a_row: usize },
}

impl CheckpointPolicy {
    /// A failed checkpoint write, saying which checkpoint is still the newest.
    fn failed(&self, e: anyhow::Error, step: usize) -> anyhow::Error {
        let newest = match crate::checkpoint::latest(&self.root) {
            Ok(Some(d)) => format!("{} stays the newest checkpoint", d.display()),
            _ => "there is no earlier checkpoint".to_string(),
        };
        e.context(format!(
            "writing the checkpoint of step {step} failed (is the disk full?); {newest}"
        ))
    }

    /// The checkpoint `resume` asks for (none with [`Resume::Auto`] in a fresh directory),
    /// checked to continue this run's config.
    pub fn to_resume(&self) -> Result<Option<Checkpoint>> {
        let Some((_, dir)) = resume_point(&self.root, self.resume)? else {
            return Ok(None);
        };
        let c = crate::checkpoint::load(&dir).with_context(|| {
            format!(
                "the newest checkpoint {} cannot be loaded; move it away to resume from an \
                 older one",
                dir.display()
            )
        })?;
        check_same_run(&c.state.config, &self.config)
            .with_context(|| format!("cannot resume from {}", c.dir.display()))?;
        Ok(Some(c))
    }
}

/// How the loop reports progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    Quiet,
    /// One bar over the whole run and a line per logged step (the CLI).
    Run,
    /// Keras: `Epoch i/N`, a bar per epoch, one line of epoch logs.
    Epochs,
}

/// Throughput figures in logged records.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub tokens_per_step: Option<usize>,
    pub flops_per_step: f64,
    pub peak_flops: f64,
}

/// The loop's settings; `Learner::new(steps, steps_per_epoch)` then set what you need.
pub struct Learner<'a> {
    pub steps: usize,
    pub steps_per_epoch: usize,
    /// Log a record every N steps (0: never; evaluations are always logged).
    pub log_every: usize,
    /// Evaluate every N steps (0: never by steps).
    pub eval_every: usize,
    /// Evaluate after the last step.
    pub eval_at_end: bool,
    /// Evaluate at every epoch end (Keras' validation data); keys get `eval_prefix`.
    pub eval_at_epoch_end: bool,
    pub eval_batches: Vec<(Vec<HostArray>, usize)>,
    /// `eval_` (the CLI) or `val_` (Keras).
    pub eval_prefix: &'static str,
    /// Text bytes per evaluated token: adds `eval_bits_per_byte` and `eval_perplexity`.
    pub bytes_per_token: Option<f64>,
    pub callbacks: Vec<Box<dyn Callback + 'a>>,
    pub checkpoint: Option<CheckpointPolicy>,
    /// `metrics.jsonl`, one JSON object per logged step.
    pub metrics: Option<PathBuf>,
    pub throughput: Option<Throughput>,
    pub display: Display,
    pub on_nonfinite: NonFinite,
    /// Set (to a signal number) by a signal handler: the loop checkpoints the step reached
    /// and returns ([`History::interrupted_by`]).
    pub interrupt: Option<Arc<AtomicUsize>>,
    /// The checkpoint to resume from, when the caller loaded it already
    /// ([`CheckpointPolicy::to_resume`]).
    pub resume_from: Option<Checkpoint>,
}

impl<'a> Learner<'a> {
    pub fn new(steps: usize, steps_per_epoch: usize) -> Self {
        Learner {
            steps,
            steps_per_epoch: steps_per_epoch.max(1),
            log_every: 0,
            eval_every: 0,
            eval_at_end: false,
            eval_at_epoch_end: false,
            eval_batches: Vec::new(),
            eval_prefix: "eval_",
            bytes_per_token: None,
            callbacks: Vec::new(),
            checkpoint: None,
            metrics: None,
            throughput: None,
            display: Display::Quiet,
            on_nonfinite: NonFinite::Continue,
            interrupt: None,
            resume_from: None,
        }
    }

    /// Evaluation logs with this learner's prefix (plus bits per byte for text).
    fn eval_logs(&self, model: &mut dyn TrainStep) -> Result<Logs> {
        let mut out = Logs::default();
        for (k, v) in model.evaluate(&self.eval_batches)?.0 {
            out.insert(format!("{}{k}", self.eval_prefix), v);
        }
        let loss_key = format!("{}loss", self.eval_prefix);
        if let (Some(bpt), Some(l)) = (self.bytes_per_token, out.get(&loss_key)) {
            out.insert(format!("{}perplexity", self.eval_prefix), l.exp());
            out.insert(
                format!("{}bits_per_byte", self.eval_prefix),
                l / std::f64::consts::LN_2 / bpt,
            );
        }
        Ok(out)
    }

    /// Trains `model` on `data` for `self.steps` steps (from a checkpoint's step when
    /// resuming).
    pub fn fit(&mut self, model: &mut dyn TrainStep, data: &mut dyn DataSource) -> Result<History> {
        let batch = data.batch_size();
        // A caller that loaded the checkpoint itself has said so in its first line.
        let (resumed, announce) = match (self.resume_from.take(), &self.checkpoint) {
            (Some(c), _) => (Some(c), false),
            (None, Some(cp)) => (cp.to_resume()?, true),
            (None, None) => (None, false),
        };
        model.begin(batch)?;
        let mut start = 0;
        let progress = match self.display {
            Display::Run => Some(Progress::new(self.steps as u64)),
            _ => None,
        };
        let say = |msg: &str| match &progress {
            Some(p) => p.println(msg),
            None if self.display != Display::Quiet => eprintln!("{msg}"),
            None => {}
        };
        if let Some(c) = &resumed {
            model.restore(c)?;
            start = c.state.step;
            if announce {
                say(&format!(
                    "rxla: resumed from {} at step {start}",
                    c.dir.display()
                ));
            }
        }
        let mut log = match &self.metrics {
            Some(path) => {
                if resumed.is_some() {
                    truncate_metrics(path, start)?;
                }
                Some(MetricsLog::open(path, resumed.is_some())?)
            }
            None => None,
        };
        let mut history = History::default();
        let mut cbs = std::mem::take(&mut self.callbacks);
        let mut cx = CallbackCtx {
            model,
            stop_training: false,
        };
        for cb in cbs.iter_mut() {
            cb.on_train_begin(&mut cx)?;
        }
        let spe = self.steps_per_epoch;
        let mut interval_start = Instant::now();
        let mut interval_steps = 0usize;
        let mut step = start;
        let mut epoch_sums = Logs::default();
        let mut epoch_n = 0usize;
        let mut epoch_t = Instant::now();
        let mut bar = indicatif::ProgressBar::hidden();
        let run_start = Instant::now();
        let mut skips_in_a_row = 0usize;
        let mut saved_at = None;
        while step < self.steps && !cx.stop_training {
            if let Some(sig) = self.interrupt.as_ref().map(|f| f.load(Ordering::SeqCst)) {
                if sig != 0 {
                    if let Some(cp) = &self.checkpoint {
                        if step > start && saved_at != Some(step) {
                            save_checkpoint(cx.model, cp, step).map_err(|e| cp.failed(e, step))?;
                        }
                    }
                    history.interrupted_by = Some(sig);
                    break;
                }
            }
            let epoch = step / spe;
            if step % spe == 0 || step == start {
                for cb in cbs.iter_mut() {
                    cb.on_epoch_begin(epoch, &mut cx)?;
                }
                epoch_sums = Logs::default();
                epoch_n = 0;
                epoch_t = Instant::now();
                if self.display == Display::Epochs {
                    let epochs = self.steps.div_ceil(spe);
                    eprintln!("Epoch {}/{}", epoch + 1, epochs);
                    bar = epoch_bar(spe.min(self.steps - epoch * spe) as u64);
                }
            }
            let batch_data = match cx.model.batch_rows() {
                Some(rows) => data.train_rows(step, rows)?,
                None => data.train_batch(step)?,
            };
            let t = Instant::now();
            let logs = cx.model.train_step(&batch_data)?;
            history.train_seconds += t.elapsed().as_secs_f64();
            step += 1;
            history.steps += 1;
            interval_steps += 1;
            let loss = logs.get("loss").unwrap_or(f64::NAN);
            let gnorm = logs.get("grad_norm").unwrap_or(0.0);
            if !(loss.is_finite() && gnorm.is_finite()) {
                let what = format!("loss {loss}, gradient norm {gnorm} at step {step}");
                match self.on_nonfinite {
                    NonFinite::Continue => {}
                    NonFinite::Stop => bail!(
                        "{what}: stopped (the newest checkpoint is the last good state); lower \
                         the learning rate, enable optimizer.clip_norm, or set \
                         train.on_nonfinite = \"skip\""
                    ),
                    NonFinite::Skip { max_in_a_row } => {
                        skips_in_a_row += 1;
                        history.skipped_steps += 1;
                        if skips_in_a_row >= max_in_a_row {
                            bail!(
                                "{what}: {skips_in_a_row} steps in a row were non-finite and \
                                 skipped (train.max_skips_in_a_row = {max_in_a_row}); the run \
                                 diverged: lower the learning rate or enable optimizer.clip_norm"
                            );
                        }
                        say(&format!(
                            "rxla: {what}: update skipped ({skips_in_a_row} in a row, {} in all)",
                            history.skipped_steps
                        ));
                    }
                }
            } else {
                skips_in_a_row = 0;
            }
            epoch_n += 1;
            for (k, v) in &logs.0 {
                let s = epoch_sums.get(k).unwrap_or(0.0);
                epoch_sums.insert(k.clone(), s + v);
            }
            for cb in cbs.iter_mut() {
                cb.on_batch_end(step, &logs, &mut cx)?;
            }
            if let Some(p) = &progress {
                p.set_step(step as u64);
            }
            if self.display == Display::Epochs {
                bar.inc(1);
                let mut mean = epoch_sums.clone();
                mean.0.iter_mut().for_each(|(_, v)| *v /= epoch_n as f64);
                bar.set_message(mean.line());
            }
            let do_eval = (self.eval_at_end && step == self.steps)
                || (self.eval_every > 0 && step.is_multiple_of(self.eval_every));
            let do_log = do_eval || (self.log_every > 0 && step.is_multiple_of(self.log_every));
            if do_log {
                let secs = interval_start.elapsed().as_secs_f64().max(1e-9);
                let steps_per_s = interval_steps as f64 / secs;
                let mut rec = Logs::default();
                rec.insert("step", step as f64);
                for (k, v) in &logs.0 {
                    rec.insert(k.clone(), *v);
                }
                rec.insert("examples_per_s", steps_per_s * batch as f64);
                if let Some(tp) = &self.throughput {
                    rec.insert("mfu", tp.flops_per_step * steps_per_s / tp.peak_flops);
                    if let Some(tok) = tp.tokens_per_step {
                        rec.insert("tokens_per_s", steps_per_s * tok as f64);
                    }
                }
                if do_eval {
                    for (k, v) in self.eval_logs(cx.model)?.0 {
                        rec.insert(k, v);
                    }
                }
                let json = record_json(&rec);
                if let Some(p) = &progress {
                    let per_step = run_start.elapsed().as_secs_f64() / (step - start) as f64;
                    let eta = per_step * (self.steps - step) as f64;
                    p.line(&format!("{}  eta {}", log_line(&json), duration_text(eta)));
                }
                if let Some(l) = &mut log {
                    l.log(&json)?;
                }
                history.records.push(json);
                for cb in cbs.iter_mut() {
                    cb.on_log(step, &rec, &mut cx)?;
                }
                interval_start = Instant::now();
                interval_steps = 0;
            }
            if let Some(cp) = &self.checkpoint {
                if step == self.steps || (cp.every > 0 && step.is_multiple_of(cp.every)) {
                    match save_checkpoint(cx.model, cp, step) {
                        Ok(()) => saved_at = Some(step),
                        Err(e) if cp.skip_failed_writes => say(&format!(
                            "rxla: warning: {:#}; training goes on (train.on_checkpoint_error = \
                             \"skip\")",
                            cp.failed(e, step)
                        )),
                        Err(e) => return Err(cp.failed(e, step)),
                    }
                }
            }
            let epoch_done = step.is_multiple_of(spe) || step == self.steps;
            if epoch_done || cx.stop_training {
                bar.finish_and_clear();
                let mut logs = epoch_sums.clone();
                logs.0
                    .iter_mut()
                    .for_each(|(_, v)| *v /= epoch_n.max(1) as f64);
                if self.eval_at_epoch_end {
                    for (k, v) in self.eval_logs(cx.model)?.0 {
                        logs.insert(k, v);
                    }
                }
                logs.insert("lr", cx.model.learning_rate());
                if self.display == Display::Epochs {
                    eprintln!(
                        "{}/{} - {:.0}s - {}",
                        epoch_n,
                        spe.min(self.steps - epoch * spe),
                        epoch_t.elapsed().as_secs_f64(),
                        logs.line()
                    );
                }
                history.epochs.push(logs.clone());
                for cb in cbs.iter_mut() {
                    cb.on_epoch_end(epoch, &logs, &mut cx)?;
                }
            }
        }
        if let Some(p) = &progress {
            p.finish();
        }
        for cb in cbs.iter_mut() {
            cb.on_train_end(&history, &mut cx)?;
        }
        self.callbacks = cbs;
        Ok(history)
    }
}

/// `42s`, `3m05s`, `2h07m`.
fn duration_text(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn epoch_bar(len: u64) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template("{pos}/{len} [{bar:30}] {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b
}

/// A record as `metrics.jsonl` holds it: `step` an integer, the rest numbers.
fn record_json(rec: &Logs) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in &rec.0 {
        let val = if k == "step" {
            json!(*v as u64)
        } else {
            json!(v)
        };
        m.insert(k.clone(), val);
    }
    serde_json::Value::Object(m)
}

fn save_checkpoint(model: &mut dyn TrainStep, cp: &CheckpointPolicy, step: usize) -> Result<()> {
    if model.save_job_checkpoint(cp, step)? {
        return Ok(());
    }
    let Some(snap) = model.checkpoint_tensors()? else {
        bail!("this model keeps no checkpointable state: drop the checkpoint settings");
    };
    let state = cp.state(step, snap.seed);
    let extra = cp.extra();
    crate::checkpoint::save(
        &cp.root,
        &state,
        &snap.params,
        &snap.optimizer,
        &extra,
        cp.keep,
    )?;
    Ok(())
}

/// A model's compiled train and eval programs with their state on device: the CLI's
/// [`TrainStep`].
pub struct ProgramStep<'c> {
    pub client: &'c Client,
    pub train: Compiled,
    pub eval: Compiled,
    pub state: TrainState,
    /// The optimizer's base learning rate (the schedule scales it in the step).
    pub base_lr: f64,
    last_lr: f64,
    /// Per parameter: not written to checkpoints (a distillation teacher's, loaded at every
    /// start by `RunSpec::init_weights`).
    unsaved: Vec<bool>,
    /// The job this process belongs to: heartbeats carry its step, evaluation sums over the
    /// processes, checkpoints are written by all of them.
    pub job: Option<&'c dist::Session>,
    evals: usize,
}

impl<'c> ProgramStep<'c> {
    pub fn new(
        client: &'c Client,
        train: Compiled,
        eval: Compiled,
        seed: u64,
        base_lr: f64,
    ) -> Result<Self> {
        let state = TrainState::init(client, &train.prog, seed)?;
        let unsaved = train
            .prog
            .params
            .iter()
            .map(|p| crate::distill::is_teacher(&p.name))
            .collect();
        Ok(ProgramStep {
            unsaved,
            job: None,
            evals: 0,
            client,
            train,
            eval,
            state,
            base_lr,
            last_lr: base_lr,
        })
    }
}

impl TrainStep for ProgramStep<'_> {
    fn begin(&mut self, _batch_size: usize) -> Result<()> {
        Ok(())
    }

    fn train_step(&mut self, batch: &[HostArray]) -> Result<Logs> {
        let rows = self.batch_rows();
        let (loss, lr, gnorm) =
            run_train_step_rows(self.client, &self.train, &mut self.state, batch, rows)?;
        if let Some(job) = self.job {
            job.progress(self.state.step as u64);
        }
        self.last_lr = lr as f64;
        let mut logs = Logs::default();
        logs.insert("loss", loss as f64);
        logs.insert("lr", lr as f64);
        logs.insert("grad_norm", gnorm as f64);
        Ok(logs)
    }

    fn evaluate(&mut self, batches: &[(Vec<HostArray>, usize)]) -> Result<Logs> {
        let (mut sums, n) = evaluate(self.client, &self.eval, &self.state.params, batches)?;
        if let Some(job) = self.job {
            self.evals += 1;
            sums = job.all_sum(&format!("eval/{}", self.evals), &sums)?;
        }
        let mut logs = Logs::default();
        for (name, s) in self.eval.prog.per_example.iter().zip(&sums) {
            let key = if name == "correct" { "accuracy" } else { name };
            logs.insert(key, s / n.max(1) as f64);
        }
        Ok(logs)
    }

    fn learning_rate(&self) -> f64 {
        self.last_lr * self.state.lr_scale as f64
    }

    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        if self.last_lr <= 0.0 {
            bail!("the scheduled learning rate is 0 here; it cannot be scaled to {lr}");
        }
        self.state.lr_scale = (lr / self.last_lr) as f32;
        Ok(())
    }

    fn save_weights(&mut self, path: &Path) -> Result<()> {
        let params = self.saved_params()?.0;
        crate::checkpoint::write_tensors(path, &params)
    }

    fn checkpoint_tensors(&mut self) -> Result<Option<Snapshot>> {
        let (params, optimizer) = self.saved_params()?;
        Ok(Some(Snapshot {
            params,
            optimizer,
            seed: self.state.seed,
        }))
    }

    fn batch_rows(&self) -> Option<Range<usize>> {
        (!self.train.mesh.fully_addressable()).then(|| self.train.local_rows())
    }

    fn save_job_checkpoint(&mut self, cp: &CheckpointPolicy, step: usize) -> Result<bool> {
        let Some(job) = self.job else {
            return Ok(false);
        };
        use crate::checkpoint::sharded::{save, Group, SaveJob};
        let owner = self.train.mesh.process_of_position();
        let me = job.process_id();
        let (named_params, named_opt) = self.state.named(&self.train.prog);
        let mut tiles = Vec::new();
        let mut names = |group, arrays: Vec<crate::state::Named>| -> Result<Vec<String>> {
            let mut out = Vec::new();
            // Unsaved parameters (a teacher's) are frozen: no optimizer state either.
            for (_, name, a) in arrays.into_iter().filter(|(i, ..)| !self.unsaved[*i]) {
                owned_tiles(&mut tiles, group, &name, a, &owner, me)?;
                out.push(name);
            }
            Ok(out)
        };
        let params = names(Group::Params, named_params)?;
        let optimizer = names(Group::Optimizer, named_opt)?;
        let state = cp.state(step, self.state.seed);
        let extra = cp.extra();
        let sj = SaveJob {
            root: &cp.root,
            state: &state,
            params: &params,
            optimizer: &optimizer,
            extra_files: &extra,
            keep: cp.keep,
            process: me,
            num_processes: job.num_processes(),
        };
        save(&sj, &tiles, &mut |name| Ok(job.barrier(name)?))?;
        Ok(true)
    }

    fn restore(&mut self, c: &Checkpoint) -> Result<()> {
        self.state = if self.unsaved.iter().any(|&u| u) {
            let current = std::mem::take(&mut self.state.params);
            TrainState::from_checkpoint_keeping(
                self.client,
                &self.train.prog,
                c,
                Some((&self.unsaved, current)),
            )?
        } else {
            TrainState::from_checkpoint(self.client, &self.train.prog, c)?
        };
        Ok(())
    }
}

impl ProgramStep<'_> {
    /// Parameters and optimizer state for a checkpoint: all but the unsaved ones (which
    /// are frozen, so have no optimizer state).
    fn saved_params(&self) -> Result<(Vec<NamedTensor>, Vec<NamedTensor>)> {
        let (params, optimizer) = self.state.to_host(&self.train.prog)?;
        let params = params
            .into_iter()
            .zip(&self.unsaved)
            .filter(|(_, &u)| !u)
            .map(|(p, _)| p)
            .collect();
        Ok((params, optimizer))
    }
}

/// The tiles of `a` this process writes to a job's checkpoint (each distinct tile once in
/// the job, by the process of its first device).
fn owned_tiles(
    out: &mut Vec<crate::checkpoint::sharded::Tile>,
    group: crate::checkpoint::sharded::Group,
    name: &str,
    a: &runtime::ShardedArray,
    owner: &[u32],
    me: u32,
) -> Result<()> {
    for index in crate::checkpoint::sharded::owned_tiles(&a.layout, owner, me) {
        let k = a
            .positions()
            .iter()
            .position(|&p| a.layout.device_tiles[p] == index)
            .with_context(|| format!("tile {index:?} of `{name}` is not on this process"))?;
        out.push(crate::checkpoint::sharded::Tile {
            group,
            name: name.to_string(),
            dims: a.layout.dims.clone(),
            tiles: a.layout.tiles.clone(),
            index,
            data: a.shards()[k].to_host::<f32>()?,
        });
    }
    Ok(())
}

/// Settings of one `rxla train` run.
pub struct RunSpec<'a> {
    pub model: &'a dyn nn::Model,
    pub optimizer: Optimizer,
    pub steps: usize,
    pub eval_every: usize,
    pub log_every: usize,
    pub eval_batch: usize,
    pub seed: u64,
    pub out: PathBuf,
    pub config_json: serde_json::Value,
    /// Write a checkpoint every N steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Keep this many newest checkpoints.
    pub keep_checkpoints: usize,
    /// Whether to continue from the newest complete checkpoint in `out/checkpoints`.
    pub resume: Resume,
    pub on_nonfinite: NonFinite,
    /// Warn and train on when a checkpoint cannot be written (else stop).
    pub skip_failed_checkpoints: bool,
    /// Set to a signal number by the caller's handler: checkpoint and stop.
    pub interrupt: Option<Arc<AtomicUsize>>,
    /// Files saved with each checkpoint (name, path), e.g. the tokenizer.
    pub extra_files: Vec<(String, PathBuf)>,
    /// Peak FLOP/s for MFU; measured when `None`.
    pub peak_flops: Option<f64>,
    pub passes: Passes,
    /// First weights of a fresh run, given the train program's parameters (in order;
    /// `None` entries, or no loader: from the seed), e.g. a pretrained encoder's.
    #[allow(clippy::type_complexity)]
    pub init_weights:
        Option<&'a dyn Fn(&[nn::ParamSpec]) -> Result<Option<Vec<Option<crate::tensor::Tensor>>>>>,
    /// The job this process is one of (`None`: a single process). Process 0 writes the
    /// run's logs and summary; every process writes its tiles of each checkpoint.
    pub job: Option<&'a dist::Session>,
}

/// `compile: cached (..)` when both programs came from the compile cache, else the seconds.
fn compile_line(train_c: &Compiled, eval_c: &Compiled) -> String {
    let what = if train_c.cached && eval_c.cached {
        "cached".to_string()
    } else if train_c.cached || eval_c.cached {
        "partly cached".to_string()
    } else {
        "compiled".to_string()
    };
    format!(
        "rxla: compile: {what} (train step {:.2}s, eval step {:.2}s)",
        train_c.compile_s, eval_c.compile_s
    )
}

/// `rxla train`: compiles the model's programs, runs the [`Learner`] with `callbacks`, and
/// writes `config.json`, `metrics.jsonl`, `summary.json` and `checkpoints/` under `spec.out`.
/// Returns the summary (with `stopped_by_signal` when interrupted). The caller holds the
/// run directory's lock ([`files::DirLock`]): this clears partial checkpoints left by crashes.
pub fn train<'a>(
    client: &Client,
    spec: &RunSpec,
    data: &mut dyn DataSource,
    callbacks: Vec<Box<dyn Callback + 'a>>,
) -> Result<serde_json::Value> {
    let wall = Instant::now();
    std::fs::create_dir_all(&spec.out)
        .with_context(|| format!("creating output directory {}", spec.out.display()))?;
    let batch = data.batch_size();
    let (train_prog, pass_report) =
        build_train_step(client, spec.model, &spec.optimizer, batch, &spec.passes)?;
    check_data(&train_prog, &data.train_batch(0)?, "training")?;
    let eval_prog = eval_step(spec.model, spec.eval_batch, spec.passes.parallel.as_ref())?;
    let eval_batches = data.eval_batches(spec.eval_batch)?;
    if let Some((first, _)) = eval_batches.first() {
        check_data(&eval_prog, first, "evaluation")?;
    }
    let policy = CheckpointPolicy {
        root: spec.out.join("checkpoints"),
        every: spec.checkpoint_every,
        keep: spec.keep_checkpoints,
        config: spec.config_json.clone(),
        extra_files: spec.extra_files.clone(),
        resume: spec.resume,
        skip_failed_writes: spec.skip_failed_checkpoints,
    };
    let leader = spec.job.is_none_or(|j| j.process_id() == 0);
    // Before config.json is rewritten: a run that cannot continue is left as it was.
    let resume_from = policy.to_resume()?;
    if leader {
        remove_partial_checkpoints(&policy.root)?;
    }
    let flops_per_step = crate::flops::matmul_flops(&train_prog.graph);
    let tokens_per_step = train_prog
        .data_types
        .first()
        .filter(|t| !t.dtype.is_float() && t.rank() == 2)
        .map(|t| (t.dims()[0] * t.dims()[1]) as usize);
    if leader {
        files::write_json_atomic(&spec.out.join("config.json"), &spec.config_json)?;
    }
    if let Some(job) = spec.job {
        // Every process has read the checkpoint to resume from before any writes again.
        job.barrier("rxla/train/begin")?;
    }
    let train_c = compile_program(client, train_prog)?;
    let eval_c = compile_program(client, eval_prog)?;
    let n_params: usize = train_c.prog.params.iter().map(|p| p.count()).sum();
    let mem = train_c.exe.memory_stats()?;
    let peak = match spec.peak_flops {
        Some(p) => p,
        None => crate::flops::measured_peak_flops(client)?,
    };
    let say = |m: &str| {
        if leader {
            eprintln!("{m}")
        }
    };
    say(&compile_line(&train_c, &eval_c));
    say(&format!("rxla: {}", pass_report.line()));
    if pass_report.precision.is_some()
        && client.platform_name() == "cpu"
        && !crate::flops::cpu_has_native_bf16()
    {
        say(
            "rxla: warning: this CPU has no avx512_bf16, so XLA emulates bf16 dots and they run slower \
             than f32 here (`rxla bench` reports matmul_bf16_flops); use train.precision = \"f32\" for speed",
        );
    }
    say(&format!(
        "rxla: {} parameters; train step compiled in {:.2}s (argument {} MB, output {} MB, temp {} MB), eval step in {:.2}s",
        n_params,
        train_c.compile_s,
        mem.argument_bytes >> 20,
        mem.output_bytes >> 20,
        mem.temp_bytes >> 20,
        eval_c.compile_s
    ));
    let compile_s = train_c.compile_s + eval_c.compile_s;
    let pipeline = train_c.prog.pipeline_json();
    let devices = train_c.prog.num_devices();
    let mut step = ProgramStep::new(client, train_c, eval_c, spec.seed, spec.optimizer.opt.lr)?;
    step.job = spec.job;
    // A run with unsaved parameters (a teacher) loads them on resume too.
    let reload = step.unsaved.iter().any(|&u| u);
    if let (Some(load), true) = (spec.init_weights, resume_from.is_none() || reload) {
        if let Some(t) = load(&step.train.prog.params)? {
            step.state = TrainState::init_from(client, &step.train.prog, spec.seed, &t)?;
        }
    }
    let param_bytes = step.state.param_bytes_per_device();
    let state_bytes = step.state.state_bytes_per_device();
    if let Some(plan) = &spec.passes.parallel {
        say(&format!(
            "rxla: mesh {} on {} devices; per device: parameters {} KB, optimizer state {} KB",
            plan.describe(),
            plan.num_devices(),
            param_bytes >> 10,
            state_bytes >> 10
        ));
    }
    if let Some(p) = &pipeline {
        say(&format!(
            "rxla: {}",
            crate::step::pipeline_text(p).trim_end()
        ));
    }
    let mut learner = Learner::new(spec.steps, data.steps_per_epoch());
    learner.log_every = spec.log_every.max(1);
    learner.eval_every = spec.eval_every;
    learner.eval_at_end = true;
    learner.eval_batches = eval_batches;
    learner.bytes_per_token = data.eval_bytes_per_token();
    learner.callbacks = callbacks;
    learner.checkpoint = Some(policy);
    learner.resume_from = resume_from;
    learner.metrics = leader.then(|| spec.out.join("metrics.jsonl"));
    learner.throughput = Some(Throughput {
        tokens_per_step,
        flops_per_step,
        peak_flops: peak,
    });
    learner.display = if leader { Display::Run } else { Display::Quiet };
    learner.on_nonfinite = spec.on_nonfinite;
    learner.interrupt = spec.interrupt.clone();
    let history = learner.fit(&mut step, data)?;
    let trained = history.steps;
    let train_time = history.train_seconds;
    // Resumed from the final checkpoint (a crash after it): the records are in the file.
    let records = if history.records.is_empty() {
        read_metrics(&spec.out.join("metrics.jsonl"))
    } else {
        history.records.clone()
    };
    let last = records.last().cloned().unwrap_or(json!({}));
    let last_eval = records
        .iter()
        .rev()
        // Any eval record: BERT's carries eval_mlm_loss and eval_nsp_loss, no eval_loss.
        .find(|r| {
            r.as_object()
                .is_some_and(|o| o.keys().any(|k| k.starts_with("eval_")))
        })
        .cloned()
        .unwrap_or(json!({}));
    let mut summary = json!({
        "steps": step.state.step,
        "parameters": n_params,
        "loss": last.get("loss").cloned().unwrap_or(json!(null)),
        "examples_per_s": (trained * batch) as f64 / train_time.max(1e-9),
        "flops_per_step": flops_per_step,
        "mfu": flops_per_step * trained as f64 / train_time.max(1e-9) / peak,
        "compile_s": compile_s,
        "seconds": wall.elapsed().as_secs_f64(),
        "argument_bytes": mem.argument_bytes,
        "output_bytes": mem.output_bytes,
        "temp_bytes": mem.temp_bytes,
        "passes": pass_report.to_json(),
        "devices": devices,
        "parameter_bytes_per_device": param_bytes,
        "optimizer_state_bytes_per_device": state_bytes,
    });
    if let Some(p) = pipeline {
        summary["pipeline"] = p;
    }
    if history.skipped_steps > 0 {
        summary["skipped_steps"] = json!(history.skipped_steps);
    }
    if let Some(sig) = history.interrupted_by {
        summary["stopped_by_signal"] = json!(sig);
    }
    if let Some(tok) = tokens_per_step {
        summary["tokens_per_s"] = json!((trained * tok) as f64 / train_time.max(1e-9));
    }
    for (k, v) in last_eval.as_object().into_iter().flatten() {
        if k.starts_with("eval_") {
            summary[k] = v.clone();
        }
    }
    if leader {
        files::write_json_atomic(&spec.out.join("summary.json"), &summary)?;
    }
    Ok(summary)
}

fn log_line(rec: &serde_json::Value) -> String {
    let f = |k: &str| rec.get(k).and_then(|v| v.as_f64());
    let mut line = format!(
        "step {:>6}  loss {:.4}  lr {:.2e}",
        rec["step"],
        f("loss").unwrap_or(f64::NAN),
        f("lr").unwrap_or(f64::NAN)
    );
    match f("tokens_per_s") {
        Some(t) => line.push_str(&format!("  {t:.0} tok/s")),
        None => line.push_str(&format!("  {:.0} ex/s", f("examples_per_s").unwrap_or(0.0))),
    }
    line.push_str(&format!("  mfu {:.1}%", 100.0 * f("mfu").unwrap_or(0.0)));
    for (k, label) in [
        ("eval_loss", "eval_loss"),
        ("eval_accuracy", "eval_acc"),
        ("eval_bits_per_byte", "eval_bpb"),
    ] {
        if let Some(v) = f(k) {
            line.push_str(&format!("  {label} {v:.4}"));
        }
    }
    line
}

/// A checkpoint may only continue the same run: everything but the `train` section (steps,
/// intervals) must match.
fn check_same_run(saved: &serde_json::Value, now: &serde_json::Value) -> Result<()> {
    for key in ["seed", "model", "data", "optimizer", "schedule"] {
        if saved.get(key) != now.get(key) {
            bail!(
                "the checkpoint was written with a different `{key}` config ({} vs now {}); \
                 use a new --out directory for a different run",
                saved.get(key).map(|v| v.to_string()).unwrap_or_default(),
                now.get(key).map(|v| v.to_string()).unwrap_or_default()
            );
        }
    }
    if saved.get("train").and_then(|t| t.get("batch_size"))
        != now.get("train").and_then(|t| t.get("batch_size"))
    {
        bail!("the checkpoint was written with a different `train.batch_size`");
    }
    Ok(())
}

/// Keeps the metric lines up to `step` (the checkpoint we resume from): drops those logged
/// after it and a torn last line (a write cut short by a crash: no newline, or not JSON).
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    let kept: Vec<u8> = bytes
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| {
            l.ends_with(b"\n")
                && serde_json::from_slice::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s as usize <= step)
        })
        .flatten()
        .copied()
        .collect();
    if kept != bytes {
        files::write_atomic(path, &kept)?;
    }
    Ok(())
}

/// Removes what a crash left behind under `root`: `.tmp-*` directories of checkpoint writes
/// cut short, `.del-*` ones of deletions cut short, and `step-*` directories without
/// `state.json` (left by rxla versions that deleted in place). Only for a caller that holds the
/// run directory's lock: another writer's temp directory would look the same.
pub fn remove_partial_checkpoints(root: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let half_removed = name.starts_with("step-") && !e.path().join("state.json").is_file();
        let deleting = name.starts_with(crate::checkpoint::DELETING_PREFIX);
        if name.starts_with(".tmp-") || deleting || half_removed {
            let p = e.path();
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.with_context(|| format!("removing partial checkpoint {}", p.display()))?;
        }
    }
    Ok(())
}

/// The records of a `metrics.jsonl` (none if it is missing).
fn read_metrics(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Default output directory for a config: `runs/<config stem>`.
pub fn default_out(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    PathBuf::from("runs").join(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_metrics_drops_later_steps_and_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("rxla-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("metrics.jsonl");
        let full = "{\"step\":1,\"loss\":2.5}\n{\"step\":2,\"loss\":2.4}\n";
        // A crash mid-write: the last line has no newline (and is cut inside the JSON).
        std::fs::write(&p, format!("{full}{{\"step\":3,\"lo")).unwrap();
        truncate_metrics(&p, 5).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), full);
        // A whole line that happens to parse but lacks its newline is torn too.
        std::fs::write(&p, format!("{full}{{\"step\":3,\"loss\":2.3}}")).unwrap();
        truncate_metrics(&p, 5).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), full);
        // Steps past the checkpoint are dropped.
        truncate_metrics(&p, 1).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"step\":1,\"loss\":2.5}\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(42.4), "42s");
        assert_eq!(duration_text(185.0), "3m05s");
        assert_eq!(duration_text(7620.0), "2h07m");
        assert_eq!(duration_text(-1.0), "0s");
    }

    #[test]
    fn resume_modes() {
        let root = std::env::temp_dir().join(format!("rxla-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(resume_point(&root, Resume::Auto).unwrap(), None);
        assert_eq!(resume_point(&root, Resume::Never).unwrap(), None);
        let e = resume_point(&root, Resume::Latest).unwrap_err().to_string();
        assert!(
            e.contains("no complete checkpoint") && e.contains("auto"),
            "{e}"
        );
        let line = start_line(&root, Resume::Auto, None);
        assert!(line.contains("starting fresh"), "{line}");
        let d = root.join("step-00000007");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("state.json"), "{}").unwrap();
        std::fs::create_dir_all(root.join(".tmp-step-00000009-1")).unwrap();
        // A deletion cut short after its rename: state.json still there, never listed.
        let deleting = root.join(".del-step-00000008-1");
        std::fs::create_dir_all(&deleting).unwrap();
        std::fs::write(deleting.join("state.json"), "{}").unwrap();
        let half_removed = root.join("step-00000003");
        std::fs::create_dir_all(&half_removed).unwrap();
        std::fs::write(half_removed.join("params.safetensors"), "x").unwrap();
        let p = resume_point(&root, Resume::Auto).unwrap();
        assert_eq!(p, Some((7, d.clone())));
        assert!(start_line(&root, Resume::Auto, p.as_ref()).contains("resuming from"));
        remove_partial_checkpoints(&root).unwrap();
        assert!(!root.join(".tmp-step-00000009-1").exists());
        assert!(!half_removed.exists());
        assert!(!deleting.exists());
        assert!(d.exists());
        assert_eq!("auto".parse::<Resume>().unwrap(), Resume::Auto);
        assert!("sometimes".parse::<Resume>().is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
