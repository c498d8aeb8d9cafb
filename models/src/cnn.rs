//! The seed's MNIST CNN, exactly:
//! Conv2D(32, 3×3, relu) → MaxPool(2) → Conv2D(64, 3×3, relu) → MaxPool(2) →
//! Conv2D(64, 3×3, relu) → Flatten → Dense(64, relu) → Dense(10, softmax).
//! (Softmax is folded into the cross-entropy.) 93,322 parameters.

use graph::{DType, Graph, Padding, TensorType};
use serde::{Deserialize, Serialize};

use nn::conv::flatten;
use nn::loss::classification_head;
use nn::{Conv2d, Forward, Linear, Mode, Model, Params};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
    /// Input shape of one example (H, W, C).
    #[serde(default = "default_input")]
    pub input_shape: [i64; 3],
    #[serde(default = "default_classes")]
    pub classes: usize,
}

fn default_input() -> [i64; 3] {
    [28, 28, 1]
}
fn default_classes() -> usize {
    10
}

impl Default for CnnConfig {
    fn default() -> Self {
        CnnConfig {
            input_shape: default_input(),
            classes: default_classes(),
        }
    }
}

pub struct Cnn(pub CnnConfig);

impl Model for Cnn {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        _mode: Mode,
    ) -> graph::Result<Forward> {
        let [h, w, c] = self.0.input_shape;
        let b = batch as i64;
        let x = g.input("images", TensorType::f32([b, h, w, c]))?; // (B, 28, 28, 1)
        let y = g.input("labels", TensorType::new(DType::I32, [b]))?;
        // Each conv stage is a region: the unit the remat pass recomputes.
        let x1 = g.region("stage0", |g| -> graph::Result<_> {
            let x1 = Conv2d::new(32, (3, 3)).apply(g, p, "conv0", x)?; // (B, 26, 26, 32)
            let x1 = g.relu(x1)?;
            g.max_pool2d(x1, [2, 2], [2, 2], Padding::Valid) // (B, 13, 13, 32)
        })?;
        let x2 = g.region("stage1", |g| -> graph::Result<_> {
            let x2 = Conv2d::new(64, (3, 3)).apply(g, p, "conv1", x1)?; // (B, 11, 11, 64)
            let x2 = g.relu(x2)?;
            g.max_pool2d(x2, [2, 2], [2, 2], Padding::Valid) // (B, 5, 5, 64)
        })?;
        let x3 = g.region("stage2", |g| -> graph::Result<_> {
            let x3 = Conv2d::new(64, (3, 3)).apply(g, p, "conv2", x2)?; // (B, 3, 3, 64)
            g.relu(x3)
        })?;
        let f = flatten(g, x3)?; // (B, 576)
        let dense0 = Linear::new([64]).declare(g, p, "dense0", g.dims(f)?[1])?;
        let d = dense0.apply(g, f)?; // (B, 64)
        let d = g.relu(d)?;
        let head = Linear::new([self.0.classes as i64]).declare(g, p, "dense1", 64)?;
        let logits = head.apply(g, d)?; // (B, 10)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_cnn_has_keras_parameter_count() {
        let mut g = Graph::new("cnn");
        let mut p = Params::new();
        let f = Cnn(CnnConfig::default())
            .forward(&mut g, &mut p, 4, Mode::Train)
            .unwrap();
        assert_eq!(p.total(), 93_322);
        let counts: Vec<usize> = p.specs.iter().map(|s| s.count()).collect();
        assert_eq!(
            counts,
            vec![288, 32, 18432, 64, 36864, 64, 36864, 64, 640, 10]
        );
        assert_eq!(g.dims(f.per_example[0].1).unwrap(), &[4]);
        graph::verify(&g).unwrap();
    }
}
