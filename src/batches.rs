//! `rxla batches --config C --steps N --out DIR` (hidden): what `rxla train --config C` would
//! start from, for training the same model in another framework (scripts/bert_hf_train.py):
//! `DIR/batches.safetensors` holds the data inputs of training steps 0..N (`train.<input>`,
//! `(N, B, ..)`) and the held-out examples every evaluation scores (`eval.<input>`, `(E, ..)`);
//! `DIR/init/` holds the step-0 weights (the config's seed) in HF BERT layout with the
//! tokenizer, as `rxla export --format hf` writes a checkpoint.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use data::host::HostArray;
use train::tensor::{NamedTensor, Tensor, TensorData};

use crate::config::ConfigArgs;

/// The model inputs the batches hold, in the BERT model's input order.
pub const BERT_INPUTS: [&str; 5] = ["tokens", "segments", "mask", "mlm_labels", "nsp_labels"];

#[derive(Args, Debug, Clone)]
pub struct BatchesArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Training steps to write (steps 0..N).
    #[arg(long)]
    pub steps: usize,
    /// The directory to write (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &BatchesArgs) -> Result<()> {
    let mut cfg = crate::config::TrainConfig::load(&args.config.config, &args.config.sets)?;
    if cfg.model_kind()? != "bert" {
        bail!(
            "`rxla batches` writes BERT pretraining batches; {} trains a `{}` model",
            args.config.config.display(),
            cfg.model_kind()?
        );
    }
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if args.out.exists() {
        bail!(
            "{} already exists: give a new --out directory (nothing was written)",
            args.out.display()
        );
    }
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut data = crate::registry::data(&mut cfg, out)?;
    let eval_batch = cfg.train.eval_batch_size.unwrap_or(cfg.train.batch_size);
    let mut train: Vec<Vec<HostArray>> = Vec::with_capacity(args.steps);
    for step in 0..args.steps {
        train.push(data.train_batch(step)?);
    }
    let mut eval: Vec<Vec<HostArray>> = Vec::new();
    for (inputs, real) in data.eval_batches(eval_batch)? {
        eval.push(inputs.iter().map(|a| a.rows(0..real)).collect());
    }
    // The resolved config (model.vocab_size filled in) and the run's total steps, which the
    // schedule spans.
    let mut cfg_json = serde_json::to_value(&cfg)?;
    let total = crate::config::total_steps(&cfg, data.steps_per_epoch())?;
    cfg_json["train"]["steps"] = serde_json::json!(total);
    files::write_json_atomic(&out.join("rxla_config.json"), &cfg_json)?;
    let mut tensors = stack("train", &train, true)?;
    tensors.extend(stack("eval", &eval, false)?);
    train::tensor::write(&out.join("batches.safetensors"), &tensors)?;

    // Step-0 weights: each parameter's values are a function of (seed, name), as
    // TrainState::init draws them.
    let bert: models::bert::BertConfig = cfg.model_config()?;
    let model = crate::registry::model(&cfg)?;
    let mut g = graph::Graph::new("bert");
    let mut p = models::Params::new();
    model.forward(&mut g, &mut p, 1, models::Mode::Train)?;
    let params: Vec<NamedTensor> = p
        .specs
        .iter()
        .map(|s| NamedTensor {
            name: s.name.clone(),
            dims: s.ty.dims().to_vec(),
            data: s.initial_values(cfg.seed),
        })
        .collect();
    let init = out.join("init");
    std::fs::create_dir_all(&init).with_context(|| format!("creating {}", init.display()))?;
    train::tensor::write(
        &init.join("model.safetensors"),
        &crate::export::to_hf(&params)?,
    )?;
    files::write_json_atomic(
        &init.join("config.json"),
        &crate::export::hf_config(&bert, true)?,
    )?;
    let tok = out.join(data::tokenizer::TOKENIZER_FILE);
    std::fs::copy(&tok, init.join(data::tokenizer::TOKENIZER_FILE))
        .with_context(|| format!("copying {}", tok.display()))?;
    eprintln!(
        "rxla: wrote {} (steps 0..{} of batch {}, {} held-out examples) and the step-0 \
         weights in HF layout in {}",
        out.join("batches.safetensors").display(),
        args.steps,
        cfg.train.batch_size,
        eval.iter().map(|b| b[0].dims()[0]).sum::<i64>(),
        init.display()
    );
    Ok(())
}

/// `prefix.<input>` tensors: the batches stacked on a new leading axis (`stacked`) or
/// concatenated along their first.
fn stack(prefix: &str, batches: &[Vec<HostArray>], stacked: bool) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for (i, name) in BERT_INPUTS.iter().enumerate() {
        let mut values: Vec<i32> = Vec::new();
        let mut dims: Vec<i64> = Vec::new();
        for b in batches {
            let Some(HostArray::I32 { data, dims: d }) = b.get(i) else {
                bail!("input {i} ({name}) of a BERT batch is not i32");
            };
            values.extend_from_slice(data);
            if dims.is_empty() {
                dims = d.clone();
            } else if !stacked {
                dims[0] += d[0];
            }
        }
        if stacked {
            dims.insert(0, batches.len() as i64);
        }
        out.push(Tensor::new(
            format!("{prefix}.{name}"),
            dims,
            TensorData::I32(values),
        )?);
    }
    Ok(out)
}
