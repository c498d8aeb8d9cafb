//! The training loop: compiled step, donated parameters and optimizer state on device,
//! periodic evaluation, metrics, checkpoints, resume and summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use data::DataSource;
use runtime::Client;
use serde_json::json;

use crate::metrics::{MetricsLog, Progress};
use crate::optim::Optimizer;
use crate::state::{
    build_train_step, check_data, compile_program, evaluate, run_train_step, TrainState,
};
use crate::step::{eval_step, Passes};

/// Settings of one run.
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
    /// Continue from the newest complete checkpoint in `out/checkpoints`.
    pub resume: bool,
    /// Files saved with each checkpoint (name, path), e.g. the tokenizer.
    pub extra_files: Vec<(String, PathBuf)>,
    /// Peak FLOP/s for MFU; measured when `None`.
    pub peak_flops: Option<f64>,
    pub passes: Passes,
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
    files::write_json_atomic(&spec.out.join("config.json"), &spec.config_json)?;
    let train_c = compile_program(client, train_prog)?;
    let eval_c = compile_program(client, eval_prog)?;
    let n_params: usize = train_c.prog.params.iter().map(|p| p.count()).sum();
    let mem = train_c.exe.memory_stats()?;
    let peak = match spec.peak_flops {
        Some(p) => p,
        None => crate::flops::measured_peak_flops(client)?,
    };
    let progress = Progress::new(spec.steps as u64);
    progress.println(&format!("rxla: {}", pass_report.line()));
    if pass_report.precision.is_some()
        && client.platform_name() == "cpu"
        && !crate::flops::cpu_has_native_bf16()
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
            crate::step::pipeline_text(&p).trim_end()
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
    files::write_json_atomic(&spec.out.join("summary.json"), &summary)?;
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
    Ok(files::write_atomic(path, kept.as_bytes())?)
}

/// Default output directory for a config: `runs/<config stem>`.
pub fn default_out(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    PathBuf::from("runs").join(stem)
}
