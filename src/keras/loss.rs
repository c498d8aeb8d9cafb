//! Losses and metrics: per-example values `[batch]` built on the model's output.

use graph::{DType, Graph, NodeId, TensorType};

use super::layers::Activation;

/// Keras losses. With a softmax (sigmoid) output, the cross-entropies are computed from the
/// pre-activation logits, which is exact and stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// One-hot (or probability) targets, same shape as the output.
    CategoricalCrossentropy,
    /// Integer class targets: the output's shape without its last dim.
    SparseCategoricalCrossentropy,
    /// Targets in [0, 1], same shape as the output.
    BinaryCrossentropy,
    MeanSquaredError,
}

/// Keras metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Accuracy,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
        }
    }
}

/// The model's last layer: output before and after its activation.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub pre: NodeId,
    pub act: Activation,
    pub y: NodeId,
}

impl Loss {
    /// The type of the targets for an output of type `out`.
    pub fn target_type(self, out: &TensorType) -> TensorType {
        match self {
            Loss::SparseCategoricalCrossentropy => {
                let d = out.dims();
                TensorType::new(DType::I32, d[..d.len().saturating_sub(1)].to_vec())
            }
            _ => out.clone(),
        }
    }

    /// Per-example loss `[batch]` (mean over everything but the batch dim).
    #[track_caller]
    pub fn per_example(self, g: &mut Graph, out: Output, target: NodeId) -> graph::Result<NodeId> {
        let r = g.rank(out.y)?;
        let last = r.saturating_sub(1);
        let eps = 1e-7;
        let per_elem = match self {
            Loss::CategoricalCrossentropy | Loss::SparseCategoricalCrossentropy => {
                let y = if self == Loss::SparseCategoricalCrossentropy {
                    let c = g.dims(out.y)?[last];
                    g.one_hot(target, c, DType::F32)?
                } else {
                    target
                };
                let logp = if out.act == Activation::Softmax {
                    g.log_softmax(out.pre, last)?
                } else {
                    let p = clip(g, out.y, eps)?;
                    g.log(p)?
                };
                let yl = g.mul(y, logp)?;
                let s = g.reduce_sum(yl, &[last])?;
                g.neg(s)?
            }
            Loss::BinaryCrossentropy => {
                let l = if out.act == Activation::Sigmoid {
                    g.sigmoid_cross_entropy_elems(out.pre, target)?
                } else {
                    let p = clip(g, out.y, eps)?;
                    let lp = g.log(p)?;
                    let one = g.ones_like(p)?;
                    let q = g.sub(one, p)?;
                    let lq = g.log(q)?;
                    let one_t = g.ones_like(target)?;
                    let nt = g.sub(one_t, target)?;
                    let a = g.mul(target, lp)?;
                    let b = g.mul(nt, lq)?;
                    let s = g.add(a, b)?;
                    g.neg(s)?
                };
                g.mean(l, &[last])?
            }
            Loss::MeanSquaredError => {
                let d = g.sub(out.y, target)?;
                let sq = g.mul(d, d)?;
                g.mean(sq, &[last])?
            }
        };
        mean_per_example(g, per_elem)
    }
}

/// Per-example metric value `[batch]`.
#[track_caller]
pub fn metric_per_example(
    g: &mut Graph,
    m: Metric,
    loss: Loss,
    out: Output,
    target: NodeId,
) -> graph::Result<NodeId> {
    match m {
        Metric::Accuracy => {
            let last = g.rank(out.y)?.saturating_sub(1);
            let hit = match loss {
                Loss::SparseCategoricalCrossentropy => {
                    let pred = g.argmax(out.pre, last)?;
                    let t = g.convert(target, g.dtype(pred)?)?;
                    g.eq(pred, t)?
                }
                Loss::CategoricalCrossentropy => {
                    let pred = g.argmax(out.pre, last)?;
                    let t = g.argmax(target, last)?;
                    g.eq(pred, t)?
                }
                Loss::BinaryCrossentropy | Loss::MeanSquaredError => {
                    let half = g.scalar_like(out.y, 0.5)?;
                    let p = g.gt(out.y, half)?;
                    let half = g.scalar_like(target, 0.5)?;
                    let t = g.gt(target, half)?;
                    g.eq(p, t)?
                }
            };
            let hit = g.convert(hit, DType::F32)?;
            mean_per_example(g, hit)
        }
    }
}

#[track_caller]
fn clip(g: &mut Graph, p: NodeId, eps: f64) -> graph::Result<NodeId> {
    let lo = g.scalar_like(p, eps)?;
    let hi = g.scalar_like(p, 1.0 - eps)?;
    let p = g.max(p, lo)?;
    g.min(p, hi)
}

/// Mean over all but the leading dim: `[batch, ..] -> [batch]`.
#[track_caller]
fn mean_per_example(g: &mut Graph, x: NodeId) -> graph::Result<NodeId> {
    let r = g.rank(x)?;
    if r <= 1 {
        return Ok(x);
    }
    let dims: Vec<usize> = (1..r).collect();
    g.mean(x, &dims)
}
