//! Fine-tuning a pretrained encoder on a task: `model.kind = "bert-classifier"` (sentiment,
//! entailment: a sentence or a pair) or `"bert-span-qa"` (SQuAD), starting from
//! `model.pretrained` (a name such as `all-minilm-l6-v2`, or an HF directory) or, with
//! `model.init = "random"`, the same architecture from scratch. After training, the run is
//! scored on the task's test split with its community's metric ([`evaluate_run`]);
//! [`Predictor`] serves `rxla predict`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use graph::{DType, Graph, NodeId, TensorType};
use models::bert::{Bert, BertConfig};
use models::heads::{Classifier, Pooling, SpanQa};
use models::{Model, ParamSpec, Params};
use runtime::{Buffer, Client};
use serde::{Deserialize, Serialize};

use data::tasks::batches::{arrays, classification_rows, span_rows, squad_features, Row, RowData};
use data::tasks::metrics;
use data::tasks::sentiment::Labels;
use data::tasks::squad::{self, Question, WindowOptions};
use data::tasks::{Labeled, Split};
use data::wordpiece::WordPiece;
use data::{DataSource, HostArray};

use crate::config::TrainConfig;
use crate::program::{DeviceParams, Program};
use train::checkpoint::NamedTensor;

pub const KINDS: &[&str] = &["bert-classifier", "bert-span-qa"];
pub const DATASETS: &[&str] = &["rotten-tomatoes", "snli", "squad"];

pub fn is_task_model(kind: &str) -> bool {
    KINDS.contains(&kind)
}

/// Where the encoder's first weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InitFrom {
    #[default]
    Pretrained,
    /// The same architecture from the seed: the from-scratch baseline.
    Random,
}

/// `[model]` of a fine-tuning run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskModel {
    /// A pretrained model's name or an HF-layout directory: its `config.json` is the
    /// architecture, its weights the initialization, its `tokenizer.json` the tokenizer.
    pub pretrained: String,
    #[serde(default)]
    pub init: InitFrom,
    pub seq_len: usize,
    /// Classifiers: `pooled` (BERT's), `mean` (sentence-transformers') or `cls`.
    #[serde(default)]
    pub pooling: Pooling,
    #[serde(default = "default_dropout")]
    pub classifier_dropout: f64,
    /// Classifiers: set from the dataset when left out.
    #[serde(default)]
    pub classes: Option<usize>,
    /// Override the encoder's dropout (HF config's).
    #[serde(default)]
    pub hidden_dropout_prob: Option<f64>,
    #[serde(default)]
    pub attention_probs_dropout_prob: Option<f64>,
}

fn default_dropout() -> f64 {
    0.1
}

/// `data.task` of a fine-tuning run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskData {
    /// rotten-tomatoes: `binary` (neutral band dropped) or `three_way`.
    #[serde(default = "default_labels")]
    pub labels: Labels,
    /// Train on the first N examples (questions for SQuAD) only.
    #[serde(default)]
    pub max_train_examples: Option<usize>,
    /// Score the finished run on the first N test examples (SQuAD dev questions) only.
    #[serde(default)]
    pub max_eval_examples: Option<usize>,
    /// Examples (SQuAD: windows) behind the `eval_loss`/`eval_accuracy` logged during
    /// training: the first N of the scored ones.
    #[serde(default = "default_monitor")]
    pub max_monitor_examples: usize,
    /// SQuAD: context tokens between window starts.
    #[serde(default = "default_stride")]
    pub doc_stride: usize,
    /// SQuAD: question tokens kept.
    #[serde(default = "default_max_query")]
    pub max_query: usize,
    /// SQuAD: the longest answer predicted, in tokens.
    #[serde(default = "default_max_answer")]
    pub max_answer: usize,
}

fn default_labels() -> Labels {
    Labels::Binary
}
fn default_monitor() -> usize {
    1000
}
fn default_stride() -> usize {
    128
}
fn default_max_query() -> usize {
    64
}
fn default_max_answer() -> usize {
    30
}

impl TaskData {
    pub fn of(cfg: &TrainConfig) -> Result<TaskData> {
        let t = cfg.data.task.clone().unwrap_or_default();
        crate::config::parse_section(toml::Value::Table(t), "data.task")
    }
}

pub fn task_model(cfg: &TrainConfig) -> Result<TaskModel> {
    let m: TaskModel = cfg.model_config()?;
    if !(0.0..1.0).contains(&m.classifier_dropout) {
        bail!("config key `model.classifier_dropout` must be in [0, 1)");
    }
    Ok(m)
}

/// The encoder's directory (fetched on first use).
pub fn pretrained_dir(m: &TaskModel) -> Result<PathBuf> {
    crate::pretrained::bert::model_dir(&m.pretrained)
}

pub fn bert_config(m: &TaskModel) -> Result<BertConfig> {
    let mut c = crate::pretrained::bert::config(&pretrained_dir(m)?, m.seq_len)?;
    if let Some(p) = m.hidden_dropout_prob {
        c.hidden_dropout_prob = p;
    }
    if let Some(p) = m.attention_probs_dropout_prob {
        c.attention_probs_dropout_prob = p;
    }
    c.validate()
        .map_err(|e| anyhow::anyhow!("config (from {}): {e}", m.pretrained))?;
    Ok(c)
}

/// A task model as the config names it, either head.
pub enum TaskNet {
    Classifier(Classifier<Bert>),
    Span(SpanQa<Bert>),
}

impl TaskNet {
    pub fn from_config(cfg: &TrainConfig) -> Result<TaskNet> {
        let m = task_model(cfg)?;
        let bert = Bert(bert_config(&m)?);
        Ok(match cfg.model_kind()? {
            "bert-classifier" => TaskNet::Classifier(Classifier {
                encoder: bert,
                classes: m.classes.context(
                    "config key `model.classes` is missing (it is set from the dataset)",
                )?,
                pooling: m.pooling,
                dropout: m.classifier_dropout,
            }),
            "bert-span-qa" => TaskNet::Span(SpanQa { encoder: bert }),
            k => bail!("`{k}` is not a fine-tuning model ({})", KINDS.join(", ")),
        })
    }

    pub fn model(self) -> Box<dyn Model> {
        match self {
            TaskNet::Classifier(c) => Box::new(c),
            TaskNet::Span(s) => Box::new(s),
        }
    }
}

/// Pretrained encoder weights for `params` (heads stay at init); `None` for `init = random`.
pub fn initial_weights(
    cfg: &TrainConfig,
    params: &[ParamSpec],
) -> Result<Option<Vec<Option<train::tensor::Tensor>>>> {
    let m = task_model(cfg)?;
    if m.init == InitFrom::Random {
        return Ok(None);
    }
    let file = pretrained_dir(&m)?.join("model.safetensors");
    let opts = train::weights::LoadOptions::default()
        .allow_missing("head.*")
        .allow_missing("qa.*")
        // LoRA adapters start fresh (`B = 0`: the pretrained model at step 0).
        .allow_missing("*.lora_a")
        .allow_missing("*.lora_b");
    let loaded = train::weights::load_named(
        &[&file],
        &train::weights::targets(params)?,
        &crate::pretrained::bert::hf_map(),
        &opts,
    )
    .with_context(|| format!("loading pretrained weights {}", file.display()))?;
    eprintln!("rxla: {}", loaded.report);
    Ok(Some(loaded.tensors))
}

fn tokenizer(m: &TaskModel) -> Result<(WordPiece, PathBuf)> {
    let path = pretrained_dir(m)?.join("tokenizer.json");
    Ok((WordPiece::load(&path)?, path))
}

fn cut<T>(mut v: Vec<T>, n: Option<usize>) -> Vec<T> {
    if let Some(n) = n {
        v.truncate(n);
    }
    v
}

/// The labelled examples of a classification dataset and its class count.
pub fn classification_examples(
    dataset: &str,
    t: &TaskData,
    split: Split,
) -> Result<(Vec<Labeled>, usize)> {
    Ok(match dataset {
        "rotten-tomatoes" => {
            let s = data::tasks::sentiment::load()?;
            (
                data::tasks::sentiment::examples(&s, t.labels, split),
                t.labels.classes(),
            )
        }
        "snli" => (
            data::tasks::snli::load(split)?,
            data::tasks::snli::CLASSES.len(),
        ),
        other => bail!("`{other}` is not a classification dataset (rotten-tomatoes, snli)"),
    })
}

fn window_options(tok: &WordPiece, seq_len: usize, t: &TaskData) -> Result<WindowOptions> {
    Ok(WindowOptions {
        max_len: seq_len,
        doc_stride: t.doc_stride,
        max_query: t.max_query,
        cls: tok.token_id("[CLS]")?,
        sep: tok.token_id("[SEP]")?,
    })
}

/// The training data of a fine-tuning config; sets `model.classes` from the dataset and
/// copies the tokenizer into `dir` (it travels with the checkpoints).
pub fn data(cfg: &mut TrainConfig, dir: &Path) -> Result<Box<dyn DataSource>> {
    let m = task_model(cfg)?;
    let t = TaskData::of(cfg)?;
    let name = cfg.data.dataset.clone();
    let kind = cfg.model_kind()?.to_string();
    let (tok, tok_path) = tokenizer(&m)?;
    let dest = dir.join(data::tokenizer::TOKENIZER_FILE);
    files::write_atomic(&dest, &std::fs::read(&tok_path)?)?;
    let (b, seed) = (cfg.train.batch_size, cfg.seed);
    match (kind.as_str(), name.as_str()) {
        ("bert-classifier", "rotten-tomatoes" | "snli") => {
            let (train, classes) = classification_examples(&name, &t, Split::Train)?;
            let (test, _) = classification_examples(&name, &t, Split::Test)?;
            match m.classes {
                None => {
                    cfg.model
                        .insert("classes".into(), toml::Value::Integer(classes as i64));
                }
                Some(c) if c != classes => bail!(
                    "config key `model.classes` is {c} but `{name}` has {classes} classes; \
                     remove the key to take the dataset's"
                ),
                Some(_) => {}
            }
            let train = classification_rows(&tok, &cut(train, t.max_train_examples), m.seq_len)?;
            let test = cut(cut(test, t.max_eval_examples), Some(t.max_monitor_examples));
            let test = classification_rows(&tok, &test, m.seq_len)?;
            Ok(Box::new(RowData::new(train, test, m.seq_len, b, seed)?))
        }
        ("bert-span-qa", "squad") => {
            let o = window_options(&tok, m.seq_len, &t)?;
            let train = cut(squad::load(Split::Train)?, t.max_train_examples);
            let dev = cut(squad::load(Split::Test)?, t.max_eval_examples);
            let train = squad_features(&tok, &train, &o, true)?;
            let dev = cut(
                squad_features(&tok, &dev, &o, true)?,
                Some(t.max_monitor_examples),
            );
            eprintln!(
                "rxla: squad: {} training windows, {} dev windows (seq_len {}, doc_stride {})",
                train.len(),
                dev.len(),
                m.seq_len,
                t.doc_stride
            );
            Ok(Box::new(RowData::new(
                span_rows(&train),
                span_rows(&dev),
                m.seq_len,
                b,
                seed,
            )?))
        }
        ("bert-span-qa", d) => bail!(
            "model.kind `bert-span-qa` trains on `squad`, not `{d}` (config key `data.dataset`)"
        ),
        (_, d) => bail!(
            "model.kind `bert-classifier` trains on rotten-tomatoes or snli, not `{d}` \
             (config key `data.dataset`; squad needs `bert-span-qa`)"
        ),
    }
}

/// A trained run's model compiled for inference: the newest checkpoint's parameters, the
/// tokenizer saved with it, logits out.
pub struct Predictor {
    pub cfg: TrainConfig,
    pub kind: String,
    pub seq_len: usize,
    pub batch: usize,
    pub tok: WordPiece,
    pub task: TaskData,
    client: Client,
    prog: Program,
    params: DeviceParams,
}

impl Predictor {
    pub fn from_run(client: &Client, run: &Path, batch: usize) -> Result<Predictor> {
        if !run.is_dir() {
            bail!(
                "no run directory {}: train one with `rxla train --config configs/finetune-sentiment.toml --out {}`",
                run.display(),
                run.display()
            );
        }
        let dir = train::checkpoint::newest(run)?;
        // Weights as stored: f32, or int8 + scales / low-rank factors (`rxla compress`).
        let (state, stored) = train::checkpoint::load_params_typed(&dir)
            .with_context(|| format!("loading the newest checkpoint {}", dir.display()))?;
        let cfg: TrainConfig = serde_json::from_value(state.config.clone())
            .with_context(|| format!("reading the config stored in {}", dir.display()))?;
        let kind = cfg.model_kind()?.to_string();
        if !is_task_model(&kind) {
            bail!(
                "`rxla predict` runs fine-tuned models ({}); {} holds a `{kind}` model",
                KINDS.join(", "),
                run.display()
            );
        }
        let params = match &cfg.train.lora {
            // A LoRA run predicts with its adapters folded into the base (as `merge-lora`).
            Some(l) => {
                let f32s: Vec<NamedTensor> = stored
                    .into_iter()
                    .map(|t| t.into_f32())
                    .collect::<Result<_>>()?;
                let (merged, _) = train::adapt::merge_lora(&f32s, l.scale())
                    .with_context(|| format!("merging the LoRA adapters of {}", dir.display()))?;
                DeviceParams::upload(client, &merged)?
            }
            None => DeviceParams::upload_stored(client, &stored)?,
        };
        let tok_path = dir.join(data::tokenizer::TOKENIZER_FILE);
        let tok = WordPiece::load(&tok_path)?;
        let m = task_model(&cfg)?;
        let net = TaskNet::from_config(&cfg)?;
        let (b, t) = (batch as i64, m.seq_len as i64);
        let mut g = Graph::new("predict");
        let mut p = Params::new();
        let ty = TensorType::new(DType::I32, [b, t]);
        let ins: Vec<NodeId> = ["tokens", "segments", "mask"]
            .iter()
            .map(|n| g.input(n, ty.clone()))
            .collect::<graph::Result<_>>()?;
        let ins3 = [ins[0], ins[1], ins[2]];
        let outs = match &net {
            TaskNet::Classifier(c) => vec![c.logits(&mut g, &mut p, ins3, None)?],
            TaskNet::Span(s) => {
                let (a, e) = s.logits(&mut g, &mut p, ins3, None)?;
                vec![a, e]
            }
        };
        g.set_outputs(&outs)?;
        let prog = Program::compile(client, &g, &p, &params, &[])
            .with_context(|| format!("binding the weights of {}", dir.display()))?;
        Ok(Predictor {
            task: TaskData::of(&cfg)?,
            cfg,
            kind,
            seq_len: m.seq_len,
            batch,
            tok,
            client: client.clone(),
            prog,
            params,
        })
    }

    /// Per row, the model's outputs concatenated (class logits, or start then end logits).
    fn run(&self, rows: &[Row]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(self.batch) {
            let mut rs: Vec<&Row> = chunk.iter().collect();
            rs.resize(self.batch, &chunk[0]);
            let a = arrays(&rs, self.seq_len);
            let dims = [self.batch as i64, self.seq_len as i64];
            let bufs: Vec<Buffer> = a[..3]
                .iter()
                .map(|x| match x {
                    HostArray::I32 { data, .. } => {
                        Ok(self.client.buffer_from_host(data, &dims, 0)?)
                    }
                    HostArray::F32 { .. } => bail!("text inputs are i32"),
                })
                .collect::<Result<_>>()?;
            let data: Vec<&Buffer> = bufs.iter().collect();
            let res = self.prog.run(&self.params, &data)?;
            let host: Vec<Vec<f32>> = res
                .iter()
                .map(|r| Ok(r.to_host::<f32>()?))
                .collect::<Result<_>>()?;
            for i in 0..chunk.len() {
                let mut row = Vec::new();
                for h in &host {
                    let w = h.len() / self.batch;
                    row.extend_from_slice(&h[i * w..(i + 1) * w]);
                }
                out.push(row);
            }
        }
        Ok(out)
    }

    /// Class probabilities of texts or pairs.
    pub fn classify(&self, ex: &[Labeled]) -> Result<Vec<Vec<f32>>> {
        if self.kind != "bert-classifier" {
            bail!("this run answers questions: use --question and --context");
        }
        let rows = classification_rows(&self.tok, ex, self.seq_len)?;
        Ok(self.run(&rows)?.into_iter().map(|l| softmax(&l)).collect())
    }

    /// Predicted answers to questions over their contexts (all windows, best span).
    pub fn answer(&self, qs: &[Question]) -> Result<Vec<String>> {
        if self.kind != "bert-span-qa" {
            bail!("this run classifies text: use --text or --pair");
        }
        let o = window_options(&self.tok, self.seq_len, &self.task)?;
        let feats = squad_features(&self.tok, qs, &o, false)?;
        let logits = self.run(&span_rows(&feats))?;
        let t = self.seq_len;
        let mut per_q: Vec<Vec<squad::WindowLogits>> = vec![Vec::new(); qs.len()];
        for (f, l) in feats.iter().zip(&logits) {
            per_q[f.example].push((f, &l[..t], &l[t..]));
        }
        Ok(qs
            .iter()
            .zip(&per_q)
            .map(|(q, w)| squad::predict(&q.context, w, self.task.max_answer))
            .collect())
    }

    /// Class names of a classifier run.
    pub fn class_names(&self) -> Vec<String> {
        match self.cfg.data.dataset.as_str() {
            "rotten-tomatoes" => self
                .task
                .labels
                .names()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "snli" => data::tasks::snli::CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn softmax(l: &[f32]) -> Vec<f32> {
    let m = l.iter().cloned().fold(f32::MIN, f32::max);
    let e: Vec<f32> = l.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

/// Scores a finished run on its task's test split (the first `data.task.max_eval_examples`):
/// `test_accuracy` and `test_macro_f1`, or SQuAD's `dev_exact_match` and `dev_f1`.
pub fn evaluate_run(
    client: &Client,
    run: &Path,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let p = Predictor::from_run(client, run, 32)?;
    let mut out = serde_json::Map::new();
    let t0 = std::time::Instant::now();
    if p.kind == "bert-span-qa" {
        let dev = cut(squad::load(Split::Test)?, p.task.max_eval_examples);
        let pred = p.answer(&dev)?;
        let pairs: Vec<(String, Vec<String>)> = pred
            .into_iter()
            .zip(&dev)
            .map(|(a, q)| (a, q.answers.iter().map(|(t, _)| t.clone()).collect()))
            .collect();
        let (em, f1) = metrics::squad_em_f1(&pairs);
        out.insert("dev_questions".into(), pairs.len().into());
        out.insert("dev_exact_match".into(), em.into());
        out.insert("dev_f1".into(), f1.into());
    } else {
        let (test, classes) = classification_examples(&p.cfg.data.dataset, &p.task, Split::Test)?;
        let test = cut(test, p.task.max_eval_examples);
        let probs = p.classify(&test)?;
        let pred: Vec<i32> = probs
            .iter()
            .map(|v| {
                v.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i as i32)
            })
            .collect();
        let gold: Vec<i32> = test.iter().map(|e| e.label).collect();
        out.insert("test_examples".into(), gold.len().into());
        out.insert(
            "test_accuracy".into(),
            metrics::accuracy(&pred, &gold).into(),
        );
        out.insert(
            "test_macro_f1".into(),
            metrics::macro_f1(&pred, &gold, classes).into(),
        );
    }
    out.insert("test_eval_s".into(), t0.elapsed().as_secs_f64().into());
    Ok(out)
}
