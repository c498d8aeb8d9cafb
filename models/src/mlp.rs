//! A multi-layer perceptron classifier on flattened inputs.

use graph::{DType, Graph, TensorType};
use serde::{Deserialize, Serialize};

use nn::conv::flatten;
use nn::loss::classification_head;
use nn::{Forward, Linear, Mode, Model, Params};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Hidden layer widths (ReLU after each).
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// Input shape of one example, e.g. [28, 28, 1].
    #[serde(default = "default_input")]
    pub input_shape: Vec<i64>,
    #[serde(default = "default_classes")]
    pub classes: usize,
}

fn default_hidden() -> Vec<usize> {
    vec![128]
}
fn default_input() -> Vec<i64> {
    vec![28, 28, 1]
}
fn default_classes() -> usize {
    10
}

pub struct Mlp(pub MlpConfig);

impl Mlp {
    /// Widths and shapes that build no network.
    pub fn validate(&self) -> Result<(), String> {
        let c = &self.0;
        if let Some(i) = c.hidden.iter().position(|&w| w == 0) {
            return Err(format!(
                "model.hidden[{i}] is 0: every hidden layer needs a width >= 1"
            ));
        }
        if c.classes < 2 {
            return Err(format!(
                "model.classes must be at least 2, got {}",
                c.classes
            ));
        }
        if c.input_shape.is_empty() || c.input_shape.iter().any(|&d| d < 1) {
            return Err(format!(
                "model.input_shape {:?} must be non-empty with every dim >= 1",
                c.input_shape
            ));
        }
        Ok(())
    }
}

impl Model for Mlp {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        _mode: Mode,
    ) -> graph::Result<Forward> {
        let c = &self.0;
        let mut shape = vec![batch as i64];
        shape.extend(&c.input_shape);
        let x = g.input("images", TensorType::f32(shape))?;
        let y = g.input("labels", TensorType::new(DType::I32, [batch as i64]))?;
        let mut h = flatten(g, x)?; // (B, D)
        for (i, &units) in c.hidden.iter().enumerate() {
            let d_in = g.dims(h)?[1];
            let dense = Linear::new([units as i64]).declare(g, p, &format!("dense{i}"), d_in)?;
            h = dense.apply(g, h)?;
            h = g.relu(h)?;
        }
        let d_in = g.dims(h)?[1];
        let out = Linear::new([c.classes as i64]).declare(g, p, "out", d_in)?;
        let logits = out.apply(g, h)?; // (B, classes)
        let (loss, per_example) = classification_head(g, logits, y)?;
        Ok(Forward {
            inputs: vec![x, y],
            loss,
            per_example,
            rng_seed: None,
            updates: Vec::new(),
        })
    }
}
