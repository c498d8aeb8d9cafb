//! The training loop: compiled step, donated parameters and optimizer state on device,
//! periodic evaluation, metrics and summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use runtime::{Client, CompileOptions, Executable, ShardLayout, ShardedArray};
use serde_json::json;

use crate::checkpoint::{Checkpoint, NamedTensor};
use crate::exec::HostArray;
use crate::metrics::{MetricsLog, Progress};
use crate::optim::Optimizer;
use crate::step::{eval_step, train_step, Feed, PassReport, Passes, StepProgram, TRAIN_SCALARS};

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
    /// Text bytes per evaluated token, for bits per byte (language-model data only).
    fn eval_bytes_per_token(&self) -> Option<f64> {
        None
    }
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
    /// Write a checkpoint every N steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Keep this many newest checkpoints.
    pub keep_checkpoints: usize,
    /// Continue from the newest complete checkpoint in `out/checkpoints`.
    pub resume: bool,
    /// Files saved with each checkpoint (name, path), e.g. the tokenizer.
    pub extra_files: Vec<(String, PathBuf)>,
    /// Peak FLOP/s for MFU; measured when `None`.
    pub peak_flops: Option<f64>,
    pub passes: Passes,
}

/// The train step with its passes; a remat budget is checked by compiling candidates.
pub fn build_train_step(
    client: &Client,
    model: &dyn models::Model,
    opt: &Optimizer,
    batch: usize,
    passes: &Passes,
) -> Result<(StepProgram, PassReport)> {
    let mut measure = |prog: &StepProgram| -> Result<u64> {
        let c = compile_program(client, prog.clone())?;
        Ok(c.exe.memory_stats()?.temp_bytes.max(0) as u64)
    };
    train_step(model, opt, batch, passes, Some(&mut measure))
}

/// A compiled program and how to feed it.
pub struct Compiled {
    pub prog: StepProgram,
    pub exe: Executable,
    pub compile_s: f64,
}

pub fn compile_program(client: &Client, prog: StepProgram) -> Result<Compiled> {
    let n = prog.num_devices();
    let have = client.addressable_devices().len();
    if n > have {
        bail!(
            "the `[parallel]` config needs {n} devices but the client has {have}: \
             pass `--cpu-devices {n}` (cpu backend) or shrink `parallel.*`"
        );
    }
    let t = Instant::now();
    let (_, exe) = crate::exec::compile(
        client,
        &prog.graph,
        &prog.lower_options(),
        &CompileOptions::spmd(n),
    )?;
    Ok(Compiled {
        prog,
        exe,
        compile_s: t.elapsed().as_secs_f64(),
    })
}

/// Parameters and optimizer state on the program's devices (sharded by its plan).
pub struct TrainState {
    pub params: Vec<ShardedArray>,
    /// Param-major: `state[i * slots + k]`.
    pub state: Vec<ShardedArray>,
    pub step: usize,
    /// The run's seed (dropout seeds derive from it and the step).
    pub seed: u64,
    /// Multiplier of the scheduled learning rate (Keras-style LR callbacks set it).
    pub lr_scale: f32,
}

/// The dropout seed of a step: a function of (seed, step) only, so resuming is exact.
pub fn step_seed(seed: u64, step: usize) -> u32 {
    let mut h = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (h ^ (h >> 33)) as u32
}

impl TrainState {
    /// Fresh parameters from the seed, zero optimizer state.
    pub fn init(client: &Client, prog: &StepProgram, seed: u64) -> Result<TrainState> {
        let mut params = Vec::with_capacity(prog.params.len());
        let mut state = Vec::new();
        let devices: Vec<usize> = (0..prog.num_devices()).collect();
        for (i, p) in prog.params.iter().enumerate() {
            let layout = prog.param_layout(i);
            let v = p.initial_values(seed);
            params.push(ShardedArray::from_host(client, &v, &layout, &devices)?);
            for _ in &prog.slots {
                let zeros = vec![0f32; v.len()];
                state.push(ShardedArray::from_host(client, &zeros, &layout, &devices)?);
            }
        }
        Ok(TrainState {
            params,
            state,
            step: 0,
            seed,
            lr_scale: 1.0,
        })
    }
}

/// The data must have the shapes and dtypes the model declared.
pub fn check_data(prog: &StepProgram, batch: &[HostArray], what: &str) -> Result<()> {
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

impl TrainState {
    /// Parameters and optimizer state copied to the host, named for a checkpoint.
    pub fn to_host(&self, prog: &StepProgram) -> Result<(Vec<NamedTensor>, Vec<NamedTensor>)> {
        let mut params = Vec::with_capacity(self.params.len());
        let mut opt = Vec::with_capacity(self.state.len());
        for (i, p) in prog.params.iter().enumerate() {
            params.push(NamedTensor {
                name: p.name.clone(),
                dims: p.ty.dims().to_vec(),
                data: self.params[i].to_host::<f32>()?,
            });
            for (k, slot) in prog.slots.iter().enumerate() {
                opt.push(NamedTensor {
                    name: format!("{}.{slot}", p.name),
                    dims: p.ty.dims().to_vec(),
                    data: self.state[i * prog.slots.len() + k].to_host::<f32>()?,
                });
            }
        }
        Ok((params, opt))
    }

    /// Device state from a checkpoint, checked against the program's parameters.
    pub fn from_checkpoint(
        client: &Client,
        prog: &StepProgram,
        c: &Checkpoint,
    ) -> Result<TrainState> {
        let want: Vec<(String, Vec<i64>)> = prog
            .params
            .iter()
            .map(|p| (p.name.clone(), p.ty.dims().to_vec()))
            .collect();
        let want_opt: Vec<(String, Vec<i64>)> = prog
            .params
            .iter()
            .flat_map(|p| {
                prog.slots
                    .iter()
                    .map(move |s| (format!("{}.{s}", p.name), p.ty.dims().to_vec()))
            })
            .collect();
        let params = Checkpoint::ordered(&c.params, &want, "parameter")?;
        let opt = Checkpoint::ordered(&c.optimizer, &want_opt, "optimizer state")?;
        // Checkpoints hold logical tensors: scatter them by this program's plan.
        let devices: Vec<usize> = (0..prog.num_devices()).collect();
        let slots = prog.slots.len().max(1);
        let up = |i: usize, t: &NamedTensor| {
            ShardedArray::from_host(client, &t.data, &prog.param_layout(i), &devices)
        };
        Ok(TrainState {
            params: params
                .iter()
                .enumerate()
                .map(|(i, t)| up(i, t))
                .collect::<Result<_, _>>()?,
            state: opt
                .iter()
                .enumerate()
                .map(|(j, t)| up(j / slots, t))
                .collect::<Result<_, _>>()?,
            step: c.state.step,
            seed: c.state.seed,
            lr_scale: 1.0,
        })
    }
}

impl TrainState {
    /// Bytes of parameters one device holds (device 0; shards are equal).
    pub fn param_bytes_per_device(&self) -> usize {
        self.params.iter().map(|p| p.bytes_per_device()).sum()
    }

    /// Bytes of optimizer state one device holds.
    pub fn state_bytes_per_device(&self) -> usize {
        self.state.iter().map(|p| p.bytes_per_device()).sum()
    }
}

/// The per-step scalars a program may take (`None` where it takes none).
#[derive(Default, Clone, Copy)]
pub struct StepScalars<'a> {
    pub step: Option<&'a ShardedArray>,
    pub rng: Option<&'a ShardedArray>,
    pub lr_scale: Option<&'a ShardedArray>,
}

/// Builds the argument list of a program from its feeds.
pub fn arguments<'a>(
    prog: &StepProgram,
    params: &'a [ShardedArray],
    state: &'a [ShardedArray],
    scalars: StepScalars<'a>,
    data: &[&'a ShardedArray],
) -> Result<Vec<&'a ShardedArray>> {
    let slots = prog.slots.len();
    prog.feeds
        .iter()
        .map(|f| {
            Ok(match *f {
                Feed::Param(i) => &params[i],
                Feed::State(i, k) => &state[i * slots + k],
                Feed::Step => scalars.step.context("program needs a step counter")?,
                Feed::Data(i) => *data
                    .get(i)
                    .with_context(|| format!("missing data input {i}"))?,
                Feed::Rng => scalars.rng.context("program needs a random seed")?,
                Feed::LrScale => scalars
                    .lr_scale
                    .context("program needs a learning-rate scale")?,
            })
        })
        .collect()
}

/// Runs a program on its devices: per-device argument lists from the arrays' shards, and
/// the outputs regrouped into arrays laid out as the program says.
pub fn execute_sharded(c: &Compiled, args: &[&ShardedArray]) -> Result<Vec<ShardedArray>> {
    let n = c.prog.num_devices();
    let per_device: Vec<Vec<&runtime::Buffer>> = (0..n)
        .map(|d| args.iter().map(|a| &a.shards()[d]).collect())
        .collect();
    let outs = c.exe.execute(&per_device)?;
    let mut by_output: Vec<Vec<runtime::Buffer>> = Vec::new();
    for dev in outs {
        for (o, b) in dev.into_iter().enumerate() {
            if by_output.len() <= o {
                by_output.push(Vec::with_capacity(n));
            }
            by_output[o].push(b);
        }
    }
    by_output
        .into_iter()
        .enumerate()
        .map(|(o, shards)| {
            let dims = c.prog.graph.ty(c.prog.graph.outputs[o])?.dims().to_vec();
            Ok(ShardedArray::from_shards(
                c.prog.output_layout(o, &dims),
                shards,
            )?)
        })
        .collect()
}

/// A scalar on every device of `prog`.
fn replicated_scalar<T: runtime::NativeType>(
    client: &Client,
    prog: &StepProgram,
    v: T,
) -> Result<ShardedArray> {
    let n = prog.num_devices();
    let devices: Vec<usize> = (0..n).collect();
    Ok(ShardedArray::from_host(
        client,
        &[v],
        &ShardLayout::replicated(&[], n),
        &devices,
    )?)
}

/// The batch scattered as the program's data arguments are laid out.
fn data_arrays(
    client: &Client,
    prog: &StepProgram,
    batch: &[HostArray],
) -> Result<Vec<ShardedArray>> {
    batch
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let arg = prog
                .feeds
                .iter()
                .position(|f| *f == Feed::Data(i))
                .with_context(|| format!("program takes no data input {i}"))?;
            a.to_sharded(client, &prog.arg_layout(arg, a.dims()))
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
    let data = data_arrays(client, &c.prog, batch)?;
    let data: Vec<&ShardedArray> = data.iter().collect();
    run_train_step_on(client, c, st, &data)
}

/// One optimizer step on data already laid out on the program's devices (e.g. another
/// model's parameters).
pub fn run_train_step_on(
    client: &Client,
    c: &Compiled,
    st: &mut TrainState,
    data: &[&ShardedArray],
) -> Result<(f32, f32, f32)> {
    let step_buf = replicated_scalar(client, &c.prog, st.step as f32)?;
    let rng_buf = replicated_scalar(client, &c.prog, step_seed(st.seed, st.step))?;
    let lr_buf = replicated_scalar(client, &c.prog, st.lr_scale)?;
    let scalars = StepScalars {
        step: Some(&step_buf),
        rng: Some(&rng_buf),
        lr_scale: Some(&lr_buf),
    };
    let args = arguments(&c.prog, &st.params, &st.state, scalars, data)?;
    let mut out = execute_sharded(c, &args)?;
    let n = st.params.len();
    let state = out.split_off(TRAIN_SCALARS + n);
    let params = out.split_off(TRAIN_SCALARS);
    let scalars: Vec<f32> = out
        .iter()
        .map(|b| Ok(b.shards()[0].to_host::<f32>()?[0]))
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
    params: &[ShardedArray],
    batches: &[(Vec<HostArray>, usize)],
) -> Result<(Vec<f64>, usize)> {
    let mut sums = vec![0f64; c.prog.per_example.len()];
    let mut n = 0;
    for (inputs, valid) in batches {
        let data = data_arrays(client, &c.prog, inputs)?;
        let data: Vec<&ShardedArray> = data.iter().collect();
        let args = arguments(&c.prog, params, &[], StepScalars::default(), &data)?;
        let out = execute_sharded(c, &args)?;
        for (s, b) in sums.iter_mut().zip(&out) {
            let v = b.to_host::<f32>()?;
            *s += v[..*valid].iter().map(|&x| x as f64).sum::<f64>();
        }
        n += valid;
    }
    Ok((sums, n))
}

/// Trains until `spec.steps` steps, evaluating, logging and checkpointing; writes
/// `metrics.jsonl`, `summary.json` and `checkpoints/` under `spec.out`. Returns the summary.
pub fn train(
    client: &Client,
    spec: &RunSpec,
    data: &mut dyn DataSource,
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
    let flops_per_step = crate::flops::matmul_flops(&train_prog.graph);
    let tokens_per_step = train_prog
        .data_types
        .first()
        .filter(|t| !t.dtype.is_float() && t.rank() == 2)
        .map(|t| (t.dims()[0] * t.dims()[1]) as usize);
    let ckpt_root = spec.out.join("checkpoints");
    let resumed = if spec.resume {
        let dir = crate::checkpoint::latest(&ckpt_root)?.with_context(|| {
            format!(
                "--resume: no complete checkpoint in {}",
                ckpt_root.display()
            )
        })?;
        Some(crate::checkpoint::load(&dir)?)
    } else {
        None
    };
    if let Some(c) = &resumed {
        check_same_run(&c.state.config, &spec.config_json)
            .with_context(|| format!("cannot resume from {}", c.dir.display()))?;
    }
    crate::io::write_json_atomic(&spec.out.join("config.json"), &spec.config_json)?;
    let train_c = compile_program(client, train_prog)?;
    let eval_c = compile_program(client, eval_prog)?;
    let n_params: usize = train_c.prog.params.iter().map(|p| p.count()).sum();
    let mem = train_c.exe.memory_stats()?;
    let peak = match spec.peak_flops {
        Some(p) => p,
        None => crate::bench::measured_peak_flops(client)?,
    };
    let progress = Progress::new(spec.steps as u64);
    progress.println(&format!("rxla: {}", pass_report.line()));
    if pass_report.precision.is_some()
        && client.platform_name() == "cpu"
        && !crate::bench::cpu_has_native_bf16()
    {
        progress.println(
            "rxla: warning: this CPU has no avx512_bf16, so XLA emulates bf16 dots and they run slower \
             than f32 here (`rxla bench` reports matmul_bf16_flops); use train.precision = \"f32\" for speed",
        );
    }
    progress.println(&format!(
        "rxla: {} parameters; train step compiled in {:.2}s (argument {} MB, output {} MB, temp {} MB), eval step in {:.2}s",
        n_params,
        train_c.compile_s,
        mem.argument_bytes >> 20,
        mem.output_bytes >> 20,
        mem.temp_bytes >> 20,
        eval_c.compile_s
    ));
    let mut st = match &resumed {
        Some(c) => {
            let st = TrainState::from_checkpoint(client, &train_c.prog, c)?;
            progress.println(&format!(
                "rxla: resumed from {} at step {}",
                c.dir.display(),
                st.step
            ));
            st
        }
        None => TrainState::init(client, &train_c.prog, spec.seed)?,
    };
    let param_bytes = st.param_bytes_per_device();
    let state_bytes = st.state_bytes_per_device();
    if let Some(plan) = &spec.passes.parallel {
        progress.println(&format!(
            "rxla: mesh {} on {} devices; per device: parameters {} KB, optimizer state {} KB",
            plan.describe(),
            plan.num_devices(),
            param_bytes >> 10,
            state_bytes >> 10
        ));
    }
    if let Some(p) = train_c.prog.pipeline_json() {
        progress.println(&format!(
            "rxla: {}",
            crate::summary::pipeline_text(&p).trim_end()
        ));
    }
    let metrics_path = spec.out.join("metrics.jsonl");
    if resumed.is_some() {
        truncate_metrics(&metrics_path, st.step)?;
    }
    let mut log = MetricsLog::open(&metrics_path, resumed.is_some())?;
    let mut last = json!({});
    let mut interval_start = Instant::now();
    let mut interval_steps = 0usize;
    let mut train_time = 0f64;
    let mut trained = 0usize;
    let mut last_eval = json!({});
    let extra: Vec<(&str, &Path)> = spec
        .extra_files
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    while st.step < spec.steps {
        let batch_data = data.train_batch(st.step)?;
        let t = Instant::now();
        let (loss, lr, gnorm) = run_train_step(client, &train_c, &mut st, &batch_data)?;
        train_time += t.elapsed().as_secs_f64();
        interval_steps += 1;
        trained += 1;
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
        if do_log {
            let secs = interval_start.elapsed().as_secs_f64().max(1e-9);
            let steps_per_s = interval_steps as f64 / secs;
            let mut rec = json!({
                "step": step,
                "loss": loss,
                "lr": lr,
                "grad_norm": gnorm,
                "examples_per_s": steps_per_s * batch as f64,
                "mfu": flops_per_step * steps_per_s / peak,
            });
            if let Some(tok) = tokens_per_step {
                rec["tokens_per_s"] = json!(steps_per_s * tok as f64);
            }
            if do_eval {
                let (sums, n) = evaluate(client, &eval_c, &st.params, &eval_batches)?;
                for (name, s) in eval_c.prog.per_example.iter().zip(&sums) {
                    let key = match name.as_str() {
                        "correct" => "eval_accuracy".to_string(),
                        other => format!("eval_{other}"),
                    };
                    rec[key] = json!(s / n.max(1) as f64);
                }
                if let (Some(bpt), Some(l)) =
                    (data.eval_bytes_per_token(), rec["eval_loss"].as_f64())
                {
                    rec["eval_perplexity"] = json!(l.exp());
                    rec["eval_bits_per_byte"] = json!(l / std::f64::consts::LN_2 / bpt);
                }
                last_eval = rec.clone();
            }
            progress.line(&log_line(&rec));
            log.log(&rec)?;
            last = rec;
            interval_start = Instant::now();
            interval_steps = 0;
        }
        let do_ckpt =
            step == spec.steps || (spec.checkpoint_every > 0 && step % spec.checkpoint_every == 0);
        if do_ckpt {
            let (params, opt) = st.to_host(&train_c.prog)?;
            let state = crate::checkpoint::CheckpointState {
                format: 0,
                step,
                seed: st.seed,
                config: spec.config_json.clone(),
                checksums: Default::default(),
                files: Vec::new(),
            };
            crate::checkpoint::save(
                &ckpt_root,
                &state,
                &params,
                &opt,
                &extra,
                spec.keep_checkpoints,
            )?;
        }
    }
    progress.finish();
    let mut summary = json!({
        "steps": st.step,
        "parameters": n_params,
        "loss": last.get("loss").cloned().unwrap_or(json!(null)),
        "examples_per_s": (trained * batch) as f64 / train_time.max(1e-9),
        "flops_per_step": flops_per_step,
        "mfu": flops_per_step * trained as f64 / train_time.max(1e-9) / peak,
        "compile_s": train_c.compile_s + eval_c.compile_s,
        "seconds": wall.elapsed().as_secs_f64(),
        "argument_bytes": mem.argument_bytes,
        "output_bytes": mem.output_bytes,
        "temp_bytes": mem.temp_bytes,
        "passes": pass_report.to_json(),
        "devices": train_c.prog.num_devices(),
        "parameter_bytes_per_device": param_bytes,
        "optimizer_state_bytes_per_device": state_bytes,
    });
    if let Some(p) = train_c.prog.pipeline_json() {
        summary["pipeline"] = p;
    }
    if let Some(tok) = tokens_per_step {
        summary["tokens_per_s"] = json!((trained * tok) as f64 / train_time.max(1e-9));
    }
    for (k, v) in last_eval.as_object().into_iter().flatten() {
        if k.starts_with("eval_") {
            summary[k] = v.clone();
        }
    }
    crate::io::write_json_atomic(&spec.out.join("summary.json"), &summary)?;
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

/// Drops metric lines past `step` (logged after the checkpoint we resume from).
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::io::write_atomic(path, kept.as_bytes())
}

/// Default output directory for a config: `runs/<config stem>`.
pub fn default_out(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    PathBuf::from("runs").join(stem)
}
