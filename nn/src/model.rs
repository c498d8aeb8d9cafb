//! The one small trait the trainer drives a model through.

use graph::{Graph, NodeId};

use crate::param::Params;

/// Train (dropout on) or evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// What a model's forward pass hands the trainer.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Data inputs the trainer feeds each step, in order (e.g. images, labels).
    pub inputs: Vec<NodeId>,
    /// Scalar training objective (mean over the batch).
    pub loss: NodeId,
    /// Per-example values `[batch]` the trainer sums over an evaluation set
    /// (e.g. `loss`, `correct`).
    pub per_example: Vec<(String, NodeId)>,
    /// A u32 scalar input seeding in-graph randomness (dropout), fed per step by the trainer.
    pub rng_seed: Option<NodeId>,
    /// New values of non-trainable parameters (batch-norm moving statistics): after a train
    /// step, parameter `.0` becomes `.1` instead of taking an optimizer update.
    pub updates: Vec<(NodeId, NodeId)>,
}

/// A model the trainer can drive.
pub trait Model {
    /// Declares parameters in `p` and builds the loss of one batch of `batch` examples.
    /// Repeated blocks go through [`crate::repeated`], so the trainer can pipeline them.
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward>;

    /// [`Model::forward`] and the logits `(.., classes)` its loss is computed from, for
    /// knowledge distillation (a teacher's and a student's must have the same shape).
    /// `None`: this model exposes no logits (the default).
    fn forward_logits(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<(Forward, Option<NodeId>)> {
        Ok((self.forward(g, p, batch, mode)?, None))
    }
}
