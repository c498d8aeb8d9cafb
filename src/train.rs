//! The training loop: compiled step, donated parameters and optimizer state on device,
//! periodic evaluation, metrics and summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use runtime::{Buffer, Client, CompileOptions, Executable};
use serde_json::json;

use crate::exec::HostArray;
use crate::metrics::{MetricsLog, Progress};
use crate::optim::Optimizer;
use crate::step::{eval_step, train_step, Feed, StepProgram, TRAIN_SCALARS};

/// Where batches come from. Batches depend only on (seed, step), so a resumed run sees the
/// same data.
pub trait DataSource {
    /// Examples per training step.
    fn batch_size(&self) -> usize;
    /// Training batches per epoch.
    fn steps_per_epoch(&self) -> usize;
    /// The data inputs of training step `step` (in the model's input order).
    fn train_batch(&mut self, step: usize) -> Result<Vec<HostArray>>;
    /// Evaluation batches of `batch` examples: inputs and how many leading examples are real
    /// (the last batch is padded).
    fn eval_batches(&self, batch: usize) -> Result<Vec<(Vec<HostArray>, usize)>>;
}

/// Settings of one run.
pub struct RunSpec<'a> {
    pub model: &'a dyn models::Model,
    pub optimizer: Optimizer,
    pub steps: usize,
    pub eval_every: usize,
    pub log_every: usize,
    pub eval_batch: usize,
    pub seed: u64,
    pub out: PathBuf,
    pub config_json: serde_json::Value,
}

/// A compiled program and how to feed it.
pub struct Compiled {
    pub prog: StepProgram,
    pub exe: Executable,
    pub compile_s: f64,
}

pub fn compile_program(client: &Client, prog: StepProgram) -> Result<Compiled> {
    let t = Instant::now();
    let (_, exe) = crate::exec::compile(
        client,
        &prog.graph,
        &prog.lower_options(),
        &CompileOptions::default(),
    )?;
    Ok(Compiled {
        prog,
        exe,
        compile_s: t.elapsed().as_secs_f64(),
    })
}

/// Parameters and optimizer state living on device 0.
pub struct TrainState {
    pub params: Vec<Buffer>,
    /// Param-major: `state[i * slots + k]`.
    pub state: Vec<Buffer>,
    pub step: usize,
}

impl TrainState {
    /// Fresh parameters from the seed, zero optimizer state.
    pub fn init(client: &Client, prog: &StepProgram, seed: u64) -> Result<TrainState> {
        let mut params = Vec::with_capacity(prog.params.len());
        let mut state = Vec::new();
        for p in &prog.params {
            let v = p.initial_values(seed);
            params.push(client.buffer_from_host(&v, p.ty.dims(), 0)?);
            for _ in &prog.slots {
                state.push(client.buffer_from_host(&vec![0f32; v.len()], p.ty.dims(), 0)?);
            }
        }
        Ok(TrainState {
            params,
            state,
            step: 0,
        })
    }
}

/// The data must have the shapes and dtypes the model declared.
fn check_data(prog: &StepProgram, batch: &[HostArray], what: &str) -> Result<()> {
    if batch.len() != prog.data_types.len() {
        bail!(
            "the {what} data has {} input(s) per batch but the model takes {}",
            batch.len(),
            prog.data_types.len()
        );
    }
    for (i, (a, t)) in batch.iter().zip(&prog.data_types).enumerate() {
        let dtype = match a {
            HostArray::F32 { .. } => graph::DType::F32,
            HostArray::I32 { .. } => graph::DType::I32,
        };
        if a.dims() != t.dims() || dtype != t.dtype {
            bail!(
                "{what} data input {i} is {dtype}{:?} but the model expects {t}: check the model's \
                 input shape against the dataset (config keys `model.*`, `train.batch_size`)",
                a.dims()
            );
        }
    }
    Ok(())
}

/// Builds the argument list of a program from its feeds.
fn arguments<'a>(
    prog: &StepProgram,
    params: &'a [Buffer],
    state: &'a [Buffer],
    step: Option<&'a Buffer>,
    data: &'a [Buffer],
) -> Result<Vec<&'a Buffer>> {
    let slots = prog.slots.len();
    prog.feeds
        .iter()
        .map(|f| {
            Ok(match *f {
                Feed::Param(i) => &params[i],
                Feed::State(i, k) => &state[i * slots + k],
                Feed::Step => step.context("program needs a step counter")?,
                Feed::Data(i) => data
                    .get(i)
                    .with_context(|| format!("missing data input {i}"))?,
            })
        })
        .collect()
}

/// One optimizer step; returns (loss, lr, grad_norm).
pub fn run_train_step(
    client: &Client,
    c: &Compiled,
    st: &mut TrainState,
    batch: &[HostArray],
) -> Result<(f32, f32, f32)> {
    let data: Vec<Buffer> = batch
        .iter()
        .map(|a| a.to_device(client, 0))
        .collect::<Result<_>>()?;
    let step_buf = client.buffer_from_host(&[st.step as f32], &[], 0)?;
    let args = arguments(&c.prog, &st.params, &st.state, Some(&step_buf), &data)?;
    let mut out = c.exe.execute1(&args)?;
    let n = st.params.len();
    let state = out.split_off(TRAIN_SCALARS + n);
    let params = out.split_off(TRAIN_SCALARS);
    let scalars: Vec<f32> = out
        .iter()
        .map(|b| Ok(b.to_host::<f32>()?[0]))
        .collect::<Result<_>>()?;
    st.params = params;
    st.state = state;
    st.step += 1;
    Ok((scalars[0], scalars[1], scalars[2]))
}

/// Sums of each per-example output over the evaluation set, and the example count.
pub fn evaluate(
    client: &Client,
    c: &Compiled,
    params: &[Buffer],
    batches: &[(Vec<HostArray>, usize)],
) -> Result<(Vec<f64>, usize)> {
    let mut sums = vec![0f64; c.prog.per_example.len()];
    let mut n = 0;
    for (inputs, valid) in batches {
        let data: Vec<Buffer> = inputs
            .iter()
            .map(|a| a.to_device(client, 0))
            .collect::<Result<_>>()?;
        let args = arguments(&c.prog, params, &[], None, &data)?;
        let out = c.exe.execute1(&args)?;
        for (s, b) in sums.iter_mut().zip(&out) {
            let v = b.to_host::<f32>()?;
            *s += v[..*valid].iter().map(|&x| x as f64).sum::<f64>();
        }
        n += valid;
    }
    Ok((sums, n))
}

/// Trains `spec.steps` steps, evaluating and logging; writes `metrics.jsonl` and
/// `summary.json` under `spec.out`. Returns the summary.
pub fn train(
    client: &Client,
    spec: &RunSpec,
    data: &mut dyn DataSource,
) -> Result<serde_json::Value> {
    let wall = Instant::now();
    std::fs::create_dir_all(&spec.out)
        .with_context(|| format!("creating output directory {}", spec.out.display()))?;
    crate::io::write_json_atomic(&spec.out.join("config.json"), &spec.config_json)?;
    let batch = data.batch_size();
    let train_prog = train_step(spec.model, &spec.optimizer, batch)?;
    check_data(&train_prog, &data.train_batch(0)?, "training")?;
    let eval_prog = eval_step(spec.model, spec.eval_batch)?;
    let eval_batches = data.eval_batches(spec.eval_batch)?;
    if let Some((first, _)) = eval_batches.first() {
        check_data(&eval_prog, first, "evaluation")?;
    }
    let train_c = compile_program(client, train_prog)?;
    let eval_c = compile_program(client, eval_prog)?;
    let n_params: usize = train_c.prog.params.iter().map(|p| p.count()).sum();
    let mem = train_c.exe.memory_stats()?;
    let progress = Progress::new(spec.steps as u64);
    progress.println(&format!(
        "rxla: {} parameters; train step compiled in {:.2}s (temp {} MB), eval step in {:.2}s",
        n_params,
        train_c.compile_s,
        mem.temp_bytes / (1 << 20),
        eval_c.compile_s
    ));
    let mut st = TrainState::init(client, &train_c.prog, spec.seed)?;
    let mut log = MetricsLog::open(&spec.out.join("metrics.jsonl"), false)?;
    let mut last = json!({});
    let mut interval_start = Instant::now();
    let mut interval_examples = 0usize;
    let mut train_time = 0f64;
    let mut last_eval = json!({});
    while st.step < spec.steps {
        let batch_data = data.train_batch(st.step)?;
        let t = Instant::now();
        let (loss, lr, gnorm) = run_train_step(client, &train_c, &mut st, &batch_data)?;
        train_time += t.elapsed().as_secs_f64();
        interval_examples += batch;
        if !loss.is_finite() {
            bail!(
                "loss became {loss} at step {}: lower the learning rate or enable clipping",
                st.step
            );
        }
        let step = st.step;
        progress.set_step(step as u64);
        let do_eval = step == spec.steps || (spec.eval_every > 0 && step % spec.eval_every == 0);
        let do_log = do_eval || step % spec.log_every.max(1) == 0;
        if !do_log {
            continue;
        }
        let secs = interval_start.elapsed().as_secs_f64();
        let eps = interval_examples as f64 / secs.max(1e-9);
        let mut rec = json!({
            "step": step,
            "loss": loss,
            "lr": lr,
            "grad_norm": gnorm,
            "examples_per_s": eps,
        });
        if do_eval {
            let (sums, n) = evaluate(client, &eval_c, &st.params, &eval_batches)?;
            for (name, s) in eval_c.prog.per_example.iter().zip(&sums) {
                let key = match name.as_str() {
                    "correct" => "eval_accuracy".to_string(),
                    other => format!("eval_{other}"),
                };
                rec[key] = json!(s / n.max(1) as f64);
            }
            last_eval = rec.clone();
        }
        let mut line = format!("step {step:>6}  loss {loss:.4}  lr {lr:.2e}  {eps:.0} ex/s");
        if let Some(l) = rec.get("eval_loss") {
            line.push_str(&format!(
                "  eval_loss {:.4}",
                l.as_f64().unwrap_or(f64::NAN)
            ));
        }
        if let Some(a) = rec.get("eval_accuracy") {
            line.push_str(&format!("  eval_acc {:.4}", a.as_f64().unwrap_or(f64::NAN)));
        }
        progress.line(&line);
        log.log(&rec)?;
        last = rec;
        interval_start = Instant::now();
        interval_examples = 0;
    }
    progress.finish();
    let mut summary = json!({
        "steps": st.step,
        "parameters": n_params,
        "loss": last.get("loss").cloned().unwrap_or(json!(null)),
        "examples_per_s": (st.step * batch) as f64 / train_time.max(1e-9),
        "compile_s": train_c.compile_s + eval_c.compile_s,
        "seconds": wall.elapsed().as_secs_f64(),
        "temp_bytes": mem.temp_bytes,
    });
    for (k, v) in last_eval.as_object().into_iter().flatten() {
        if k.starts_with("eval_") {
            summary[k] = v.clone();
        }
    }
    crate::io::write_json_atomic(&spec.out.join("summary.json"), &summary)?;
    Ok(summary)
}

/// Default output directory for a config: `runs/<config stem>`.
pub fn default_out(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    PathBuf::from("runs").join(stem)
}
