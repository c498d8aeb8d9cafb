//! Model definitions written against the graph API, each readable on its own.
//!
//! A model declares its parameters through [`Params`] (name, shape, initializer) and builds
//! its forward computation; the trainer never looks inside.

pub mod cnn;
pub mod gpt;
pub mod layers;
pub mod mlp;
pub mod param;

pub use param::{Init, ParamSpec, Params};

use graph::{Graph, NodeId};

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
    /// Pipelined forwards: the layer scopes (parameter name prefixes) each stage runs.
    pub stages: Vec<Vec<String>>,
    /// New values of non-trainable parameters (batch-norm moving statistics): after a train
    /// step, parameter `.0` becomes `.1` instead of taking an optimizer update.
    pub updates: Vec<(NodeId, NodeId)>,
}

/// A GPipe schedule: a model's repeated blocks split into `stages` groups of consecutive
/// layers, each batch into `microbatches`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipeline {
    pub stages: usize,
    pub microbatches: usize,
}

impl Pipeline {
    /// Iterations of the schedule: the last microbatch leaves the last stage at M + S - 1.
    pub fn iterations(&self) -> usize {
        self.microbatches + self.stages - 1
    }

    /// The share of stage-iterations spent idle: (S - 1) / (M + S - 1).
    pub fn bubble_fraction(&self) -> f64 {
        (self.stages - 1) as f64 / self.iterations() as f64
    }
}

/// A model the trainer can drive.
pub trait Model {
    /// Declares parameters in `p` and builds the loss of one batch of `batch` examples.
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward>;

    /// [`Model::forward`] with the repeated blocks run as a pipeline `pipe`; the parameters
    /// (names, shapes, initial values) are those of `forward`.
    fn forward_pipelined(
        &self,
        _g: &mut Graph,
        _p: &mut Params,
        _batch: usize,
        _mode: Mode,
        _pipe: Pipeline,
    ) -> graph::Result<Forward> {
        Err(graph::GraphError::Invalid(
            "this model has no pipeline form: only `gpt` supports `parallel.pipeline`".into(),
        ))
    }
}

/// Mean cross-entropy plus per-example loss and correctness, for classifiers.
pub fn classification_head(
    g: &mut Graph,
    logits: NodeId,
    labels: NodeId,
) -> graph::Result<(NodeId, Vec<(String, NodeId)>)> {
    let c = g.rank(logits)? - 1;
    let classes = g.dims(logits)?[c];
    let dtype = g.dtype(logits)?;
    let lse = g.logsumexp(logits, c)?;
    let oh = g.one_hot(labels, classes, dtype)?;
    let picked = g.mul(logits, oh)?;
    let picked = g.reduce_sum(picked, &[c])?;
    let per_loss = g.sub(lse, picked)?; // [B]
    let loss = g.mean_all(per_loss)?;
    let pred = g.argmax(logits, c)?;
    let labels_i = g.convert(labels, g.dtype(pred)?)?;
    let hit = g.eq(pred, labels_i)?;
    let correct = g.convert(hit, graph::DType::F32)?;
    Ok((
        loss,
        vec![("loss".into(), per_loss), ("correct".into(), correct)],
    ))
}
