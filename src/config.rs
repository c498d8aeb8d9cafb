//! Training configuration: TOML files with `--set key=value` overrides.
//!
//! Unknown keys and wrong types are errors that name the full key (`optimizer.lr`). The
//! `[model]` table is kept raw here and parsed by the model it names, so each model owns its
//! own config struct.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Reads a TOML file and applies `key=value` overrides (dotted keys; values in TOML syntax,
/// bare words taken as strings).
pub fn load_table(path: &Path, sets: &[String]) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| anyhow!("config file {} is not valid TOML: {e}", path.display()))?;
    for s in sets {
        apply_set(&mut table, s)?;
    }
    Ok(table)
}

/// Applies one `a.b.c=value` override.
pub fn apply_set(table: &mut toml::Table, set: &str) -> Result<()> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| anyhow!("--set `{set}`: expected key=value"))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("--set `{set}`: empty key segment");
    }
    let value = parse_value(raw.trim());
    let mut t = table;
    for (i, p) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        t = entry.as_table_mut().ok_or_else(|| {
            anyhow!(
                "--set `{set}`: `{}` is a value, not a table",
                parts[..=i].join(".")
            )
        })?;
    }
    t.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Deserializes `value` into `T`; errors name the full dotted key under `prefix`.
pub fn parse_section<T: DeserializeOwned>(value: toml::Value, prefix: &str) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = match (prefix.is_empty(), path.as_str()) {
            (true, _) => path.clone(),
            (false, ".") => prefix.to_string(),
            (false, p) => format!("{prefix}.{p}"),
        };
        anyhow!("config key `{key}`: {}", e.inner())
    })
}

/// The whole training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seeds parameter init, data order and dropout.
    #[serde(default)]
    pub seed: u64,
    /// `kind = "..."` plus the model's own keys (parsed by the model).
    pub model: toml::Table,
    pub data: DataConfig,
    pub train: TrainSection,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Device mesh and sharding (data, fsdp, tensor parallelism).
    #[serde(default)]
    pub parallel: train::parallel::ParallelConfig,
    /// Knowledge distillation from a trained teacher run (`[distill]`; README, Compression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<train::distill::DistillConfig>,
}

impl TrainConfig {
    pub fn load(path: &Path, sets: &[String]) -> Result<TrainConfig> {
        let table = load_table(path, sets)?;
        let cfg: TrainConfig = parse_section(toml::Value::Table(table), "")
            .with_context(|| format!("in config {}", path.display()))?;
        cfg.validate()
            .with_context(|| format!("in config {}", path.display()))?;
        Ok(cfg)
    }

    /// Values out of range, checked before a run touches its directory; each error names
    /// the key. (The model's and the dataset's own keys are checked by them.)
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        for (key, v) in [
            ("train.batch_size", t.batch_size),
            ("train.log_every", t.log_every),
            ("train.keep_checkpoints", t.keep_checkpoints),
            ("train.max_skips_in_a_row", t.max_skips_in_a_row),
            ("train.eval_batch_size", t.eval_batch_size.unwrap_or(1)),
        ] {
            if v == 0 {
                bail!("config key `{key}` must be at least 1");
            }
        }
        if let Some(p) = t.peak_flops {
            if !(p.is_finite() && p > 0.0) {
                bail!("config key `train.peak_flops` must be a positive number of FLOP/s, got {p}");
            }
        }
        if let Some(es) = &t.early_stopping {
            if es.patience == 0 {
                bail!("config key `train.early_stopping.patience` must be at least 1");
            }
            if t.eval_every == 0 {
                bail!(
                    "`train.early_stopping` watches evaluations: set `train.eval_every` to \
                     evaluate during the run"
                );
            }
        }
        if self.data.max_eval_windows == Some(0) {
            bail!("config key `data.max_eval_windows` must be at least 1 (leave it out for all)");
        }
        let vf = self.data.val_fraction;
        if !(0.0..1.0).contains(&vf) {
            bail!("config key `data.val_fraction` must be in [0, 1), got {vf}");
        }
        self.passes()?;
        match t.quantize.as_deref() {
            None | Some("int8") => {}
            Some(q) => {
                bail!("config key `train.quantize` is {q:?}: use \"int8\" (or leave it out)")
            }
        }
        if let Some(l) = &t.lora {
            l.check()?;
        }
        if let Some(d) = &self.distill {
            d.check()?;
        }
        train::optim::Optimizer {
            opt: self.optimizer.clone(),
            schedule: self.schedule.clone(),
            total_steps: 1,
        }
        .validate()
    }

    /// The model kind (`[model] kind = "cnn"`).
    pub fn model_kind(&self) -> Result<&str> {
        self.model
            .get("kind")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                anyhow!("config key `model.kind` is missing: name a model, e.g. kind = \"cnn\"")
            })
    }

    /// The compiler passes and the sharding plan the config asks for.
    pub fn passes(&self) -> Result<train::step::Passes> {
        let mut p = self.train.passes()?;
        p.parallel = train::parallel::Plan::from_config(&self.parallel)?;
        Ok(p)
    }

    /// The `[model]` table without `kind`, parsed into the model's config struct.
    pub fn model_config<T: DeserializeOwned>(&self) -> Result<T> {
        let mut t = self.model.clone();
        t.remove("kind");
        parse_section(toml::Value::Table(t), "model")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A dataset name known to `rxla::data` (e.g. "mnist", "moby-dick").
    pub dataset: String,
    /// Text datasets: `{ kind = "bytes" }` or `{ kind = "bpe", vocab_size = N }`.
    #[serde(default)]
    pub tokenizer: data::tokenizer::TokenizerSpec,
    /// Text datasets: share of the text (at the end) held out for validation.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Text datasets: evaluate at most this many validation windows.
    #[serde(default)]
    pub max_eval_windows: Option<usize>,
    /// Fine-tuning datasets: their options (`rxla::finetune::TaskData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<toml::Table>,
}

fn default_val_fraction() -> f64 {
    data::text::DEFAULT_VAL_FRACTION
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub batch_size: usize,
    /// Train for this many epochs (ignored when `steps` is set).
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Train for this many optimizer steps.
    #[serde(default)]
    pub steps: Option<usize>,
    /// Evaluate every N steps (and at the end); 0 = only at the end.
    #[serde(default)]
    pub eval_every: usize,
    /// Log a line every N steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Eval batch size (defaults to the training batch size).
    #[serde(default)]
    pub eval_batch_size: Option<usize>,
    /// Write a checkpoint every N steps (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Keep this many newest checkpoints.
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Peak FLOP/s of the device for MFU (default: measured f32 matmul throughput).
    #[serde(default)]
    pub peak_flops: Option<f64>,
    /// Rematerialization: "none", "full", "save_dots" or "budget:<bytes>".
    #[serde(default = "default_remat")]
    pub remat: String,
    /// "f32" or "bf16" (bf16 matmul/conv operands, f32 accumulation and master weights).
    #[serde(default = "default_precision")]
    pub precision: String,
    /// Microbatches per optimizer step (gradients summed in f32 inside one executable).
    #[serde(default = "default_grad_accum")]
    pub grad_accum: usize,
    /// Stop when an evaluation metric stops improving (the Learner's EarlyStopping).
    #[serde(default)]
    pub early_stopping: Option<EarlyStoppingConfig>,
    /// Write every logged record as TensorBoard scalars under `<out>/tensorboard`.
    #[serde(default)]
    pub tensorboard: bool,
    /// "never", "latest" (the newest checkpoint must exist) or "auto" (resume if there is a
    /// checkpoint, else start fresh); `--resume [auto]` overrides it.
    #[serde(default)]
    pub resume: train::learner::Resume,
    /// A NaN/Inf loss or gradient norm: "stop" (fail naming the step) or "skip" (drop that
    /// update inside the compiled step and go on).
    #[serde(default)]
    pub on_nonfinite: OnNonfinite,
    /// With `on_nonfinite = "skip"`: fail after this many skipped steps in a row.
    #[serde(default = "default_max_skips")]
    pub max_skips_in_a_row: usize,
    /// A checkpoint that cannot be written (a full disk): "stop" (fail; the previous
    /// checkpoint stays the newest) or "skip" (warn and train on).
    #[serde(default)]
    pub on_checkpoint_error: OnCheckpointError,
    /// Parameters that do not train: regexes over names (`train::groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// `[pattern, multiplier]` pairs of the learning rate; the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lr_multipliers: Vec<(String, f64)>,
    /// Magnitude pruning on a gradual schedule (`[train.prune]`; see README, Compression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<train::prune::PruneConfig>,
    /// Quantization-aware training: "int8" (fake-quantized kernels, straight-through
    /// gradient; `train::adapt::Qat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<String>,
    /// LoRA adapters on the targeted kernels, the base frozen (`train::adapt::Lora`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<train::adapt::LoraConfig>,
    /// Start from the newest checkpoint of this run: its tensors by name (a factored run's
    /// `W.u`/`W.v` train as factors); parameters it lacks (LoRA adapters) start fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCheckpointError {
    #[default]
    Stop,
    Skip,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNonfinite {
    #[default]
    Stop,
    Skip,
}

fn default_max_skips() -> usize {
    5
}

/// `[train.early_stopping]`: stop after `patience` evaluations without improvement.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStoppingConfig {
    /// A logged key, e.g. `eval_loss` or `eval_accuracy` (larger is better for accuracy).
    #[serde(default = "default_monitor")]
    pub monitor: String,
    pub patience: usize,
    #[serde(default)]
    pub min_delta: f64,
}

fn default_monitor() -> String {
    "eval_loss".into()
}

fn default_remat() -> String {
    "none".into()
}
fn default_precision() -> String {
    "f32".into()
}
fn default_grad_accum() -> usize {
    1
}

impl TrainSection {
    /// The compiler passes these keys ask for.
    pub fn passes(&self) -> Result<train::step::Passes> {
        if self.grad_accum == 0 {
            bail!("config key `train.grad_accum` must be at least 1");
        }
        Ok(train::step::Passes {
            precision: self.precision.parse()?,
            remat: self.remat.parse()?,
            grad_accum: self.grad_accum,
            parallel: None,
            skip_nonfinite: self.on_nonfinite == OnNonfinite::Skip,
            groups: train::groups::ParamGroups {
                freeze: self.freeze.clone(),
                lr_multipliers: self.lr_multipliers.clone(),
                train_only: match &self.lora {
                    Some(l) => l.train_only(),
                    None => Vec::new(),
                },
            },
            prune: self.prune.as_ref().map(|p| p.plan()).transpose()?,
        })
    }

    /// What the training loop does with a non-finite step.
    pub fn nonfinite(&self) -> Result<train::learner::NonFinite> {
        Ok(match self.on_nonfinite {
            OnNonfinite::Stop => train::learner::NonFinite::Stop,
            OnNonfinite::Skip => {
                if self.max_skips_in_a_row == 0 {
                    bail!("config key `train.max_skips_in_a_row` must be at least 1");
                }
                train::learner::NonFinite::Skip {
                    max_in_a_row: self.max_skips_in_a_row,
                }
            }
        })
    }
}

fn default_keep() -> usize {
    3
}

fn default_log_every() -> usize {
    50
}

pub use train::optim::{OptimizerConfig, OptimizerKind, ScheduleConfig, ScheduleKind};

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, sets: &[&str]) -> Result<TrainConfig> {
        let mut t: toml::Table = text.parse()?;
        for s in sets {
            apply_set(&mut t, s)?;
        }
        parse_section(toml::Value::Table(t), "")
    }

    const BASE: &str = r#"
seed = 3
[model]
kind = "mlp"
[data]
dataset = "mnist"
[train]
batch_size = 32
epochs = 1
[optimizer]
kind = "adam"
lr = 0.001
"#;

    #[test]
    fn parses_and_overrides() {
        let c = parse(
            BASE,
            &[
                "optimizer.lr=3e-3",
                "train.steps=10",
                "model.hidden=[64, 32]",
            ],
        )
        .unwrap();
        assert_eq!(c.seed, 3);
        assert_eq!(c.optimizer.lr, 3e-3);
        assert_eq!(c.train.steps, Some(10));
        assert_eq!(c.model_kind().unwrap(), "mlp");
        assert_eq!(c.model["hidden"].as_array().unwrap().len(), 2);
        assert_eq!(c.schedule.kind, ScheduleKind::Constant);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(BASE, &["optimizer.lrr=1"]).unwrap_err().to_string();
        assert!(err.contains("optimizer") && err.contains("lrr"), "{err}");
        let err = parse(BASE, &["colour=1"]).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = parse(BASE, &["train.batch_size=\"big\""])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`train.batch_size`") && err.contains("invalid type"),
            "{err}"
        );
        let err = parse(BASE, &["optimizer.kind=rmsprop"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`optimizer.kind`") && err.contains("rmsprop"),
            "{err}"
        );
    }

    #[test]
    fn set_needs_key_value() {
        let mut t = toml::Table::new();
        assert!(apply_set(&mut t, "novalue").is_err());
        assert!(apply_set(&mut t, "a..b=1").is_err());
        apply_set(&mut t, "a=1").unwrap();
        let err = apply_set(&mut t, "a.b=2").unwrap_err().to_string();
        assert!(err.contains("`a` is a value"), "{err}");
    }
}

/// The default config of `rxla train` and friends: the README's main job.
pub const DEFAULT_CONFIG: &str = "configs/gpt-tiny.toml";

/// A config file and overrides.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// TOML config file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Override a config key: `--set optimizer.lr=3e-3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// Total optimizer steps of a run.
pub fn total_steps(cfg: &TrainConfig, steps_per_epoch: usize) -> Result<usize> {
    if cfg.train.batch_size == 0 {
        bail!("config key `train.batch_size` must be at least 1");
    }
    match (cfg.train.steps, cfg.train.epochs) {
        (Some(s), _) if s > 0 => Ok(s),
        (None, Some(e)) if e > 0 => Ok(e * steps_per_epoch),
        _ => bail!("set `train.steps` or `train.epochs` to a positive number"),
    }
}
