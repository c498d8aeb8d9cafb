//! `rxla compress ...`: shrinking trained runs (int8 weight quantization) and measuring them
//! (`rxla compress eval` evaluates any run's newest checkpoint, quantized or not).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use train::checkpoint::{self, CheckpointState};
use train::tensor::Tensor;

use crate::config::TrainConfig;
use crate::registry;

#[derive(Subcommand, Debug, Clone)]
pub enum CompressCommand {
    /// Post-training int8 weight quantization (symmetric, per output channel, f32 scales) of
    /// a run's newest checkpoint into a new run directory.
    Quantize(QuantizeArgs),
    /// Low-rank factorization (truncated SVD) of a run's kernels into a new run directory:
    /// each factored linear runs as two smaller matmuls.
    Lowrank(LowrankArgs),
    /// Evaluate a run's newest checkpoint (f32 or quantized) on its validation data; one
    /// JSON object.
    Eval(EvalArgs),
    /// Fold a LoRA run's adapters into its kernels (W += alpha/r · A·B, like peft's
    /// merge_and_unload) into a new run of the plain model.
    MergeLora(QuantizeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// The trained run's output directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Where the quantized run goes (a new or empty directory).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct LowrankArgs {
    /// The trained run's output directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Where the factored run goes (a new or empty directory).
    #[arg(long)]
    pub out: PathBuf,
    /// Keep at most this many singular values per matrix.
    #[arg(long, conflicts_with = "energy", required_unless_present = "energy")]
    pub rank: Option<usize>,
    /// Keep the fewest singular values that hold this share of each matrix's Σσ².
    #[arg(long)]
    pub energy: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// The run's output directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Examples per evaluation batch (default: the config's `train.eval_batch_size`).
    #[arg(long)]
    pub batch: Option<usize>,
    /// An int8 run's kernels meet the activations in i8 × i8 → i32 dots (activations
    /// quantized per row on the fly) instead of being dequantized to f32.
    #[arg(long)]
    pub int8_dots: bool,
}

/// Runs a compress command; `client` starts the PJRT client (`rxla compress --backend ..`).
pub fn run(cmd: &CompressCommand, client: &dyn Fn() -> Result<runtime::Client>) -> Result<()> {
    match cmd {
        CompressCommand::Quantize(a) => quantize_cmd(a),
        CompressCommand::Lowrank(a) => lowrank_cmd(a),
        CompressCommand::Eval(a) => eval_cmd(a, client),
        CompressCommand::MergeLora(a) => merge_lora_cmd(a),
    }
}

fn config_of(state: &CheckpointState, dir: &Path) -> Result<TrainConfig> {
    serde_json::from_value(state.config.clone())
        .with_context(|| format!("reading the config stored in {}", dir.display()))
}

fn file_len(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p)
        .with_context(|| format!("reading {}", p.display()))?
        .len())
}

/// Refuses a non-empty output directory before any work.
fn check_out(out: &Path) -> Result<()> {
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "--out {} is not empty: choose a new directory for the compressed run",
            out.display()
        );
    }
    Ok(())
}

/// The newest f32 checkpoint of `run`, its model's eval program (which says how each weight
/// is used), and the checkpoint.
fn load_source(run: &Path) -> Result<(PathBuf, train::step::StepProgram, checkpoint::Checkpoint)> {
    let src = checkpoint::newest(run)?;
    let ckpt = checkpoint::load(&src).with_context(|| {
        format!(
            "loading {} (f32 weights; an already compressed run cannot be compressed again)",
            src.display()
        )
    })?;
    let cfg = config_of(&ckpt.state, &src)?;
    if cfg.train.lora.is_some() {
        bail!(
            "{} is a LoRA run: fold its adapters in first with `rxla compress merge-lora --run              {} --out <dir>`, then compress that run",
            run.display(),
            run.display()
        );
    }
    let model = registry::model(&cfg)?;
    let prog = train::step::eval_step(model.as_ref(), 1, None)?;
    Ok((src, prog, ckpt))
}

fn merge_lora_cmd(args: &QuantizeArgs) -> Result<()> {
    check_out(&args.out)?;
    let src = checkpoint::newest(&args.run)?;
    let mut ckpt = checkpoint::load(&src).with_context(|| format!("loading {}", src.display()))?;
    let cfg = config_of(&ckpt.state, &src)?;
    let Some(lora) = &cfg.train.lora else {
        bail!(
            "{} has no `train.lora` in its config: there are no adapters to merge",
            args.run.display()
        );
    };
    let (merged, n) = train::adapt::merge_lora(&ckpt.params, lora.scale())?;
    // The merged run is the plain model: its config without `train.lora`.
    if let Some(t) = ckpt
        .state
        .config
        .get_mut("train")
        .and_then(|t| t.as_object_mut())
    {
        t.remove("lora");
    }
    let tensors: Vec<Tensor> = merged.into_iter().map(Tensor::from).collect();
    let json = serde_json::json!({
        "method": "LoRA merge: W + alpha/r · A·B",
        "kernels_merged": n,
        "rank": lora.rank,
        "alpha": lora.alpha,
    });
    let (_, _, dir) = write_run(&src, &ckpt, &args.out, &tensors, json)?;
    eprintln!(
        "rxla: merged {n} LoRA adapters into their kernels; wrote {}",
        dir.display()
    );
    Ok(())
}

/// Writes `tensors` as the one checkpoint of a new run `out` (the source's config, step and
/// files; no optimizer state), its tokenizer beside it, and `compress.json`; returns the
/// params file sizes (before, after).
fn write_run(
    src: &Path,
    ckpt: &checkpoint::Checkpoint,
    out: &Path,
    tensors: &[Tensor],
    mut report: serde_json::Value,
) -> Result<(u64, u64, PathBuf)> {
    let mut state = ckpt.state.clone();
    state.checksums.clear();
    state.files.clear();
    let extra: Vec<(String, PathBuf)> = ckpt
        .state
        .files
        .iter()
        .map(|f| (f.clone(), src.join(f)))
        .collect();
    let extra_refs: Vec<(&str, &Path)> = extra
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let dir = checkpoint::save(
        &out.join("checkpoints"),
        &state,
        tensors,
        &[] as &[Tensor],
        &extra_refs,
        1,
    )?;
    // Evaluation prepares its data beside the run, with the run's own tokenizer.
    let tok = src.join(data::tokenizer::TOKENIZER_FILE);
    if tok.is_file() {
        let bytes = std::fs::read(&tok).with_context(|| format!("reading {}", tok.display()))?;
        files::write_atomic(&out.join(data::tokenizer::TOKENIZER_FILE), &bytes)?;
    }
    let before = file_len(&src.join("params.safetensors"))?;
    let after = file_len(&dir.join("params.safetensors"))?;
    report["source"] = serde_json::json!(src);
    report["checkpoint"] = serde_json::json!(dir);
    report["params_bytes_before"] = serde_json::json!(before);
    report["params_bytes_after"] = serde_json::json!(after);
    report["ratio"] = serde_json::json!(before as f64 / after.max(1) as f64);
    files::write_atomic(
        &out.join("compress.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    Ok((before, after, dir))
}

fn quantize_cmd(args: &QuantizeArgs) -> Result<()> {
    check_out(&args.out)?;
    let (src, prog, ckpt) = load_source(&args.run)?;
    let (tensors, report) =
        train::compress::quantize::quantize_weights(&prog.graph, &prog.params, &ckpt.params)?;
    let quantized = report.len();
    let json = serde_json::json!({
        "method": "int8 weights, symmetric, per output channel, f32 scales",
        "tensors_quantized": quantized,
        "tensors_kept_f32": ckpt.params.len() - quantized,
        "tensors": report,
    });
    let (before, after, dir) = write_run(&src, &ckpt, &args.out, &tensors, json)?;
    eprintln!(
        "rxla: quantized {quantized} of {} tensors to int8; params {before} -> {after} bytes \
         ({:.2}x smaller); wrote {}",
        ckpt.params.len(),
        before as f64 / after.max(1) as f64,
        dir.display()
    );
    Ok(())
}

fn lowrank_cmd(args: &LowrankArgs) -> Result<()> {
    use train::compress::lowrank::{factor_weights, RankChoice};
    let choice = match (args.rank, args.energy) {
        (Some(r), _) => RankChoice::Rank(r),
        (None, Some(e)) => RankChoice::Energy(e),
        (None, None) => bail!("give --rank R or --energy E"),
    };
    // Bad values fail before anything is read or written.
    factor_weights(&graph::Graph::new("check"), &[], &[], choice)?;
    check_out(&args.out)?;
    let (src, prog, ckpt) = load_source(&args.run)?;
    let (tensors, report) = factor_weights(&prog.graph, &prog.params, &ckpt.params, choice)?;
    let total_before: usize = ckpt.params.iter().map(|t| t.data.len()).sum();
    let total_after: usize = tensors.iter().map(|t| t.data.len()).sum();
    let json = serde_json::json!({
        "method": "truncated SVD: W = U (in, r) · V (r, out), two matmuls",
        "choice": format!("{choice:?}"),
        "parameters_before": total_before,
        "parameters_after": total_after,
        "tensors": report,
    });
    let (_, _, dir) = write_run(&src, &ckpt, &args.out, &tensors, json)?;
    eprintln!(
        "rxla: factored {} tensors; parameters {total_before} -> {total_after}; wrote {}",
        report.len(),
        dir.display()
    );
    Ok(())
}

fn eval_cmd(args: &EvalArgs, client: &dyn Fn() -> Result<runtime::Client>) -> Result<()> {
    let dir = checkpoint::newest(&args.run)?;
    let (state, weights) = checkpoint::load_params_typed(&dir)
        .with_context(|| format!("loading {}", dir.display()))?;
    let mut cfg = config_of(&state, &dir)?;
    let batch = args
        .batch
        .or(cfg.train.eval_batch_size)
        .unwrap_or(cfg.train.batch_size)
        .max(1);
    let data = registry::data(&mut cfg, &args.run)?;
    let model = registry::model(&cfg)?;
    let client = client()?;
    let r = train::compress::eval::evaluate_with(
        &client,
        model.as_ref(),
        &weights,
        data.as_ref(),
        batch,
        args.int8_dots,
    )?;
    let mut out = serde_json::to_value(&r)?;
    out["checkpoint"] = serde_json::json!(dir);
    out["step"] = serde_json::json!(state.step);
    out["params_file_bytes"] = serde_json::json!(file_len(&dir.join("params.safetensors"))?);
    // Pruned runs: the share of exact zeros of each tensor that has any.
    let floats: Vec<train::tensor::NamedTensor> = weights
        .iter()
        .filter(|t| t.dtype().is_float())
        .map(|t| t.clone().into_f32())
        .collect::<Result<_>>()?;
    let sparse: serde_json::Map<String, serde_json::Value> = train::prune::sparsity(&floats)
        .into_iter()
        .filter(|(_, s)| *s > 0.0)
        .map(|(n, s)| (n, serde_json::json!(s)))
        .collect();
    out["sparsity"] = serde_json::Value::Object(sparse);
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// The share of exact zeros of each float tensor of `run`'s newest checkpoint: as JSON
/// (`{name: share}`) and as a table for `rxla summary --run`.
pub fn sparsity_of_run(run: &Path) -> Result<(serde_json::Value, String)> {
    let dir = checkpoint::newest(run)?;
    let (_, weights) = checkpoint::load_params_typed(&dir)
        .with_context(|| format!("loading {}", dir.display()))?;
    let floats: Vec<train::tensor::NamedTensor> = weights
        .iter()
        .filter(|t| t.dtype().is_float())
        .map(|t| t.clone().into_f32())
        .collect::<Result<_>>()?;
    let rows = train::prune::sparsity(&floats);
    let (mut zeros, mut total) = (0f64, 0usize);
    let mut text = format!("\nSparsity of {} (exact zeros)\n", dir.display());
    let mut json = serde_json::Map::new();
    for ((name, s), t) in rows.iter().zip(&floats) {
        zeros += s * t.data.len() as f64;
        total += t.data.len();
        text.push_str(&format!(
            "  {name:<32} {:>10} {:>8.2}%\n",
            t.data.len(),
            s * 100.0
        ));
        json.insert(name.clone(), serde_json::json!(s));
    }
    let all = zeros / total.max(1) as f64;
    text.push_str(&format!(
        "  {:<32} {total:>10} {:>8.2}%\n",
        "all",
        all * 100.0
    ));
    Ok((serde_json::Value::Object(json), text))
}

/// The newest checkpoint of run `run` (named by config key `key`) and its stored config.
fn run_source(run: &Path, key: &str) -> Result<(PathBuf, TrainConfig, Vec<Tensor>)> {
    let dir = checkpoint::newest(run).with_context(|| format!("config key `{key}`"))?;
    let (state, weights) = checkpoint::load_params_typed(&dir)
        .with_context(|| format!("loading {} (config key `{key}`)", dir.display()))?;
    let cfg = config_of(&state, &dir)?;
    Ok((dir, cfg, weights))
}

/// The model `rxla train` trains for `cfg`: the config's model ([`registry::model`], LoRA
/// included), as the factors of a low-rank `train.init_from` run, fake-quantized with
/// `train.quantize`, and distilled from `[distill]`'s teacher.
pub fn train_model(cfg: &TrainConfig) -> Result<Box<dyn models::Model>> {
    let mut model = registry::model(cfg)?;
    if let Some(from) = &cfg.train.init_from {
        let (_, _, weights) = run_source(Path::new(from), "train.init_from")?;
        let specs = train::step::eval_step(model.as_ref(), 1, None)?.params;
        let ranks: Vec<(String, i64)> = weights
            .iter()
            .filter_map(|t| {
                let base = t.name.strip_suffix(train::compress::lowrank::U_SUFFIX)?;
                specs
                    .iter()
                    .any(|s| s.name == base)
                    .then(|| (base.to_string(), t.dims[1]))
            })
            .collect();
        if !ranks.is_empty() {
            model = Box::new(train::adapt::Factored {
                inner: model,
                ranks,
            });
        }
    }
    if cfg.train.quantize.as_deref() == Some("int8") {
        model = Box::new(train::adapt::Qat(model));
    }
    if let Some(d) = &cfg.distill {
        let (_, tcfg, _) = run_source(Path::new(&d.teacher), "distill.teacher")?;
        let teacher =
            registry::model(&tcfg).with_context(|| format!("the teacher run {}", d.teacher))?;
        model = Box::new(train::distill::Distill {
            student: model,
            teacher,
            temperature: d.temperature,
            alpha: d.alpha,
        });
    }
    Ok(model)
}

/// First weights of a run, in the order of `params`: a fine-tuning task's pretrained
/// encoder, the tensors of `train.init_from`'s run by name (LoRA adapters, which it lacks,
/// start fresh), and the `[distill]` teacher's as `teacher.*`. `None`: all from the seed.
pub fn initial_weights(
    cfg: &TrainConfig,
    params: &[models::ParamSpec],
) -> Result<Option<Vec<Option<Tensor>>>> {
    let mut out: Vec<Option<Tensor>> = match crate::finetune::is_task_model(cfg.model_kind()?) {
        true => crate::finetune::initial_weights(cfg, params)?
            .unwrap_or_else(|| vec![None; params.len()]),
        false => vec![None; params.len()],
    };
    let mut any = out.iter().any(Option::is_some);
    let mut fill = |weights: Vec<Tensor>,
                    key: &str,
                    run: &str,
                    own: &dyn Fn(&str) -> Option<String>|
     -> Result<()> {
        let mut by_name: std::collections::HashMap<String, Tensor> =
            weights.into_iter().map(|t| (t.name.clone(), t)).collect();
        for (slot, p) in out.iter_mut().zip(params) {
            let Some(name) = own(&p.name) else { continue };
            match by_name.remove(&name) {
                Some(t) => {
                    if t.dtype() != train::tensor::Dtype::F32 {
                        bail!(
                            "config key `{key}`: tensor `{name}` of {run} is {}: train from an \
                             f32 run (not a quantized one)",
                            t.dtype()
                        );
                    }
                    *slot = Some(Tensor {
                        name: p.name.clone(),
                        ..t
                    });
                    any = true;
                }
                None if name.ends_with(train::adapt::LORA_A)
                    || name.ends_with(train::adapt::LORA_B) => {}
                None => bail!(
                    "config key `{key}`: the newest checkpoint of {run} has no tensor `{name}`: \
                     it was written for another model"
                ),
            }
        }
        Ok(())
    };
    if let Some(from) = &cfg.train.init_from {
        let (_, _, weights) = run_source(Path::new(from), "train.init_from")?;
        fill(weights, "train.init_from", from, &|n: &str| {
            (!train::distill::is_teacher(n)).then(|| n.to_string())
        })?;
    }
    if let Some(d) = &cfg.distill {
        let (_, _, weights) = run_source(Path::new(&d.teacher), "distill.teacher")?;
        let prefix = format!("{}.", train::distill::TEACHER);
        fill(weights, "distill.teacher", &d.teacher, &|n: &str| {
            n.strip_prefix(&prefix).map(String::from)
        })?;
    }
    Ok(any.then_some(out))
}
