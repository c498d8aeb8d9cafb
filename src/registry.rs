//! Models and datasets by the names configs use.

use anyhow::{bail, Context, Result};
use models::Model;

use crate::config::TrainConfig;
use crate::train::DataSource;

pub const MODELS: &[&str] = &["mlp", "cnn"];

/// The model a config names, with its own keys parsed.
pub fn model(cfg: &TrainConfig) -> Result<Box<dyn Model>> {
    Ok(match cfg.model_kind()? {
        "mlp" => Box::new(models::mlp::Mlp(cfg.model_config()?)),
        "cnn" => Box::new(models::cnn::Cnn(cfg.model_config()?)),
        other => bail!(
            "unknown model `{other}` (config key `model.kind`); known models: {}",
            MODELS.join(", ")
        ),
    })
}

/// The training data a config names.
pub fn data(cfg: &TrainConfig) -> Result<Box<dyn DataSource>> {
    let name = cfg.data.dataset.as_str();
    crate::data::package(name)?;
    match name {
        "mnist" => {
            let train = crate::data::mnist::load("train").context("loading MNIST")?;
            let test = crate::data::mnist::load("test").context("loading MNIST")?;
            Ok(Box::new(crate::data::images::ImageClassification::new(
                train,
                test,
                cfg.train.batch_size,
                cfg.seed,
            )))
        }
        other => bail!("dataset `{other}` has no loader"),
    }
}
