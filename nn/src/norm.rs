//! Layer normalization over the last dim with a learned gain and shift.

use graph::{Graph, NodeId, TensorType};

use crate::param::{axis::Axis, Init, Weights};

#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub eps: f64,
    /// Logical axis of the feature dim (`embed` in transformers); `None`: not declared.
    pub axis: Option<Axis>,
    /// Gain and shift names: Keras `gamma`/`beta`, GPT checkpoints `g`/`b`.
    pub names: (&'static str, &'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct LayerNormW {
    pub gamma: NodeId,
    pub beta: NodeId,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(eps: f64) -> Self {
        LayerNorm {
            eps,
            axis: None,
            names: ("gamma", "beta"),
        }
    }
    pub fn axis(mut self, a: Axis) -> Self {
        self.axis = Some(a);
        self
    }
    pub fn names(mut self, g: &'static str, b: &'static str) -> Self {
        self.names = (g, b);
        self
    }

    /// Declares gain (ones) and shift (zeros) of `d` features under `name`.
    #[track_caller]
    pub fn declare<W: Weights + ?Sized>(
        &self,
        g: &mut Graph,
        w: &mut W,
        name: &str,
        d: i64,
    ) -> graph::Result<LayerNormW> {
        let axes: Vec<Axis> = self.axis.into_iter().collect();
        if !name.is_empty() {
            w.push_scope(name);
        }
        let gamma = w.weight(g, self.names.0, TensorType::f32([d]), Init::Ones, &axes);
        let beta = match &gamma {
            Ok(_) => Some(w.weight(g, self.names.1, TensorType::f32([d]), Init::Zeros, &axes)),
            Err(_) => None,
        };
        if !name.is_empty() {
            w.pop_scope();
        }
        let gamma = gamma?;
        Ok(LayerNormW {
            gamma,
            beta: beta.transpose()?.unwrap_or(gamma),
            eps: self.eps,
        })
    }
}

impl LayerNormW {
    #[track_caller]
    pub fn apply(&self, g: &mut Graph, x: NodeId) -> graph::Result<NodeId> {
        g.layer_norm(x, self.gamma, self.beta, self.eps)
    }
}
