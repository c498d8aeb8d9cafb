//! Models and datasets by the names configs use.

use anyhow::{bail, Context, Result};
use models::Model;

use std::path::Path;

use crate::config::TrainConfig;
use data::pretrain::{BertPretrainData, PretrainOptions};
use data::text::{LmData, LmOptions};
use data::DataSource;

pub const MODELS: &[&str] = &[
    "mlp",
    "cnn",
    "gpt",
    "bert",
    "bert-classifier",
    "bert-span-qa",
    "encdec",
];

/// The model a config names, with its own keys parsed.
pub fn model(cfg: &TrainConfig) -> Result<Box<dyn Model>> {
    let m = plain_model(cfg)?;
    Ok(match &cfg.train.lora {
        Some(l) => Box::new(train::adapt::Lora {
            inner: m,
            cfg: l.clone(),
        }),
        None => m,
    })
}

/// The model a config names, without adapters.
pub fn plain_model(cfg: &TrainConfig) -> Result<Box<dyn Model>> {
    Ok(match cfg.model_kind()? {
        "mlp" => {
            let m = models::mlp::Mlp(cfg.model_config()?);
            m.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
            Box::new(m)
        }
        "cnn" => Box::new(models::cnn::Cnn(cfg.model_config()?)),
        "gpt" => {
            let m = models::gpt::Gpt(cfg.model_config()?);
            m.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
            Box::new(m)
        }
        "encdec" => {
            let m = models::encdec::EncDec(cfg.model_config()?);
            m.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
            Box::new(m)
        }
        "bert" => {
            let m = models::bert::Bert(cfg.model_config()?);
            m.0.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
            Box::new(m)
        }
        k if crate::finetune::is_task_model(k) => {
            crate::finetune::TaskNet::from_config(cfg)?.model()
        }
        other => bail!(
            "unknown model `{other}` (config key `model.kind`); known models: {}",
            MODELS.join(", ")
        ),
    })
}

/// The training data a config names; text data keeps its tokenizer and token cache in `dir`.
/// A language model's `model.vocab_size` comes from the tokenizer when the config leaves it out.
pub fn data(cfg: &mut TrainConfig, dir: &Path) -> Result<Box<dyn DataSource>> {
    let name = cfg.data.dataset.clone();
    if let Some(tokens) = name.strip_prefix("path:") {
        return token_dir_data(cfg, Path::new(tokens), dir);
    }
    if name.starts_with(data::pretrain::TEXT_PREFIX) {
        if cfg.model_kind()? != "bert" {
            bail!(
                "dataset `{name}` (text files by path) is read by BERT pretraining \
                 (model.kind = \"bert\"); for a language model tokenize the files with \
                 `rxla data` and give data.dataset = \"path:DIR\""
            );
        }
        return bert_data(cfg, dir);
    }
    if name == SQUAD_CONTEXTS && cfg.model_kind()? == "encdec" {
        return denoise_data(cfg, dir);
    }
    data::package(&name)?;
    if crate::finetune::is_task_model(cfg.model_kind()?) {
        return crate::finetune::data(cfg, dir);
    }
    if name == "squad" && cfg.model_kind()? == "encdec" {
        return qa_data(cfg);
    }
    if crate::finetune::DATASETS.contains(&name.as_str()) {
        bail!(
            "dataset `{name}` is a fine-tuning task: use model.kind = {} (see configs/finetune-*.toml)",
            crate::finetune::KINDS.join(" or ")
        );
    }
    if cfg.model_kind()? == "bert" {
        return bert_data(cfg, dir);
    }
    if cfg.model_kind()? == "encdec" {
        return denoise_data(cfg, dir);
    }
    if data::text::CORPORA.iter().any(|(n, _)| *n == name) {
        let seq_len = cfg
            .model
            .get("seq_len")
            .and_then(|v| v.as_integer())
            .filter(|&v| v > 0)
            .ok_or_else(|| {
                anyhow::anyhow!("text dataset `{name}` needs a language model with `model.seq_len`")
            })?;
        let opts = LmOptions {
            val_fraction: cfg.data.val_fraction,
            max_eval_windows: cfg.data.max_eval_windows,
            ..LmOptions::new(
                &name,
                cfg.data.tokenizer,
                seq_len as usize,
                cfg.train.batch_size,
                cfg.seed,
            )
        };
        let data =
            LmData::prepare(&opts, dir).with_context(|| format!("preparing dataset `{name}`"))?;
        let vocab = data.vocab_size() as i64;
        match cfg.model.get("vocab_size").and_then(|v| v.as_integer()) {
            None => {
                cfg.model
                    .insert("vocab_size".into(), toml::Value::Integer(vocab));
            }
            Some(v) if v != vocab => bail!(
                "config key `model.vocab_size` is {v} but the {} tokenizer has {vocab} tokens; \
                 remove the key to take the tokenizer's size",
                data.tokenizer().kind()
            ),
            Some(_) => {}
        }
        return Ok(Box::new(data));
    }
    match name.as_str() {
        "mnist" => {
            let train = data::mnist::load("train").context("loading MNIST")?;
            let test = data::mnist::load("test").context("loading MNIST")?;
            if cfg.train.batch_size > train.n {
                bail!(
                    "config key `train.batch_size` ({}) is larger than MNIST's training set \
                     ({} images)",
                    cfg.train.batch_size,
                    train.n
                );
            }
            Ok(Box::new(data::images::ImageClassification::new(
                train,
                test,
                cfg.train.batch_size,
                cfg.seed,
            )))
        }
        other => bail!("dataset `{other}` has no loader"),
    }
}

/// `data.dataset = "path:DIR"`: the token shards and tokenizer `rxla data tokenize` wrote.
fn token_dir_data(
    cfg: &mut TrainConfig,
    dir: &Path,
    run_dir: &Path,
) -> Result<Box<dyn DataSource>> {
    let seq_len = cfg
        .model
        .get("seq_len")
        .and_then(|v| v.as_integer())
        .filter(|&v| v > 0)
        .ok_or_else(|| {
            anyhow::anyhow!("dataset `path:` needs a language model with `model.seq_len`")
        })?;
    let (tok, ids) = data::pipeline::tokenize::read_token_dir(dir)
        .with_context(|| format!("reading token directory {}", dir.display()))?;
    let opts = LmOptions {
        val_fraction: cfg.data.val_fraction,
        max_eval_windows: cfg.data.max_eval_windows,
        ..LmOptions::new(
            "path",
            cfg.data.tokenizer,
            seq_len as usize,
            cfg.train.batch_size,
            cfg.seed,
        )
    };
    let data = LmData::from_token_ids(&dir.display().to_string(), tok, &ids, &opts, run_dir)?;
    let vocab = data.vocab_size() as i64;
    match cfg.model.get("vocab_size").and_then(|v| v.as_integer()) {
        None => {
            cfg.model
                .insert("vocab_size".into(), toml::Value::Integer(vocab));
        }
        Some(v) if v != vocab => bail!(
            "config key `model.vocab_size` is {v} but {} has a tokenizer of {vocab} tokens; \
             remove the key to take the tokenizer's size",
            dir.display()
        ),
        Some(_) => {}
    }
    Ok(Box::new(data))
}

/// BERT pretraining pairs from a text corpus (each file a document) or `text:PATH[,PATH..]`
/// (text files, JSONL, directories), with MiniLM's WordPiece vocabulary or, with
/// `data.tokenizer = { kind = "wordpiece", vocab_size = N }`, one trained on the corpus;
/// `model.vocab_size` must match it.
fn bert_data(cfg: &mut TrainConfig, dir: &Path) -> Result<Box<dyn DataSource>> {
    use data::pretrain::VocabSource;
    use data::tokenizer::TokenizerSpec;
    let name = cfg.data.dataset.clone();
    if !name.starts_with(data::pretrain::TEXT_PREFIX)
        && !data::text::CORPORA.iter().any(|(n, _)| *n == name)
    {
        bail!(
            "BERT pretraining needs a text corpus (config key `data.dataset`: a corpus name or \
             \"text:PATH\"), got `{name}`"
        );
    }
    let vocab = match cfg.data.tokenizer {
        TokenizerSpec::Bytes => VocabSource::Pretrained("all-minilm-l6-v2".into()),
        TokenizerSpec::Wordpiece { vocab_size } => VocabSource::Train { vocab_size },
        TokenizerSpec::Bpe { .. } => bail!(
            "config key `data.tokenizer`: BERT takes MiniLM's WordPiece (leave the key out) or \
             {{ kind = \"wordpiece\", vocab_size = N }} trained on the corpus, not BPE"
        ),
    };
    let model: models::bert::BertConfig = cfg.model_config()?;
    let opts = PretrainOptions {
        corpus: name.clone(),
        vocab,
        val_fraction: cfg.data.val_fraction,
        eval_examples: cfg.data.max_eval_windows.unwrap_or(512),
        seq_len: model.seq_len,
        batch: cfg.train.batch_size,
        seed: cfg.seed,
    };
    let data = BertPretrainData::prepare(&opts, dir)
        .with_context(|| format!("preparing BERT pretraining data from `{name}`"))?;
    if data.vocab_size() != model.vocab_size {
        bail!(
            "config key `model.vocab_size` is {} but the WordPiece tokenizer has {} tokens",
            model.vocab_size,
            data.vocab_size()
        );
    }
    Ok(Box::new(data))
}

/// How many SQuAD dev questions an encoder-decoder QA run evaluates (`data.max_eval_windows`,
/// else all 10,570).
pub fn qa_dev_questions(cfg: &TrainConfig) -> Result<Vec<data::tasks::squad::Question>> {
    let mut dev = data::tasks::squad::load(data::tasks::Split::Test)?;
    dev.truncate(cfg.data.max_eval_windows.unwrap_or(dev.len()));
    Ok(dev)
}

/// Generative question answering on SQuAD v1.1 for the encoder-decoder, byte-level.
fn qa_data(cfg: &TrainConfig) -> Result<Box<dyn DataSource>> {
    let model: models::encdec::EncDecConfig = cfg.model_config()?;
    if model.vocab_size != 256 || model.pad_id != 0 {
        bail!(
            "generative QA on squad is byte-level: set model.vocab_size = 256 and model.pad_id = 0"
        );
    }
    let train = data::tasks::squad::load(data::tasks::Split::Train)?;
    let data = data::tasks::qa_seq2seq::QaData::new(
        train,
        qa_dev_questions(cfg)?,
        model.src_len,
        model.tgt_len,
        cfg.train.batch_size,
        cfg.seed,
    )?;
    Ok(Box::new(data))
}

/// In-domain unlabeled text for pretraining a QA model: the distinct paragraphs of SQuAD
/// v1.1 train (Wikipedia), without questions or answers, in file order.
pub const SQUAD_CONTEXTS: &str = "squad-contexts";

fn squad_contexts() -> Result<String> {
    let mut seen = std::collections::HashSet::new();
    let mut text = String::new();
    for q in data::tasks::squad::load(data::tasks::Split::Train)? {
        if seen.insert(q.context.clone()) {
            text.push_str(&q.context);
            text.push_str("\n\n");
        }
    }
    Ok(text)
}

/// Span-corruption denoising pairs (T5 style) from a text corpus, byte-level.
fn denoise_data(cfg: &mut TrainConfig, dir: &Path) -> Result<Box<dyn DataSource>> {
    let name = cfg.data.dataset.clone();
    if name != SQUAD_CONTEXTS && !data::text::CORPORA.iter().any(|(n, _)| *n == name) {
        bail!(
            "span-corruption denoising needs a text corpus (config key `data.dataset`: {} or \
             {SQUAD_CONTEXTS}), got `{name}`",
            data::text::CORPORA
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let model: models::encdec::EncDecConfig = cfg.model_config()?;
    if model.vocab_size != 256 || model.pad_id != 0 {
        bail!(
            "span-corruption denoising is byte-level: set model.vocab_size = 256 and model.pad_id = 0"
        );
    }
    let opts = LmOptions {
        val_fraction: cfg.data.val_fraction,
        ..LmOptions::new(
            &name,
            cfg.data.tokenizer,
            model.src_len,
            cfg.train.batch_size,
            cfg.seed,
        )
    };
    let lm = if name == SQUAD_CONTEXTS {
        LmData::from_text(&name, &squad_contexts()?, &opts, dir)
    } else {
        LmData::prepare(&opts, dir)
    }
    .with_context(|| format!("preparing dataset `{name}`"))?;
    let data = data::denoise::DenoiseData::new(
        lm,
        model.tgt_len,
        cfg.train.batch_size,
        cfg.seed,
        cfg.data.max_eval_windows,
    )?;
    Ok(Box::new(data))
}
