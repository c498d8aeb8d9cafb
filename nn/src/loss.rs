//! Losses and metrics over logits. The per-position softmax cross-entropy itself is
//! `Graph::softmax_cross_entropy` (graph's composites, beside softmax and logsumexp).

use graph::{DType, Graph, NodeId};

/// Mean cross-entropy plus per-example loss and correctness, for classifiers of
/// `logits (B, C)` against integer `labels (B)`.
#[track_caller]
pub fn classification_head(
    g: &mut Graph,
    logits: NodeId,
    labels: NodeId,
) -> graph::Result<(NodeId, Vec<(String, NodeId)>)> {
    let c = g.rank(logits)? - 1;
    let per_loss = g.softmax_cross_entropy(logits, labels)?; // (B)
    let loss = g.mean_all(per_loss)?;
    let pred = g.argmax(logits, c)?;
    let labels_i = g.convert(labels, g.dtype(pred)?)?;
    let hit = g.eq(pred, labels_i)?;
    let correct = g.convert(hit, DType::F32)?;
    Ok((
        loss,
        vec![("loss".into(), per_loss), ("correct".into(), correct)],
    ))
}
