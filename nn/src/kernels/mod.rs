//! Attention kernels beyond dense: each turns q, k, v `(.., H, T, hd)` (and an optional key
//! padding mask `(B, T)`) into the attended values `(.., H, T, hd)` without materializing
//! the `(T, T)` scores. [`crate::AttentionConfig`] (the `[model] attention` table) picks one
//! as an [`crate::attention::AttentionKernel`] variant, which the layer dispatches on.

pub mod axial;
pub mod block_sparse;
pub mod chunked;
pub mod local;
pub mod lsh;

use graph::{DType, Graph, NodeId, TensorType};

/// The score a hidden key gets: exp underflows to exactly 0 (as dense attention's mask).
pub(crate) const NEG: f64 = -1e9;

/// `x` broadcast to `to`, its dims landing on the leading dims of `to`.
pub(crate) fn expand_trailing(g: &mut Graph, x: NodeId, to: &[i64]) -> graph::Result<NodeId> {
    let r = g.dims(x)?.len();
    g.broadcast_in_dim(x, to.to_vec(), &(0..r).collect::<Vec<_>>())
}

/// `s` where `visible`, [`NEG`] elsewhere (`visible` broadcast numpy-style to `s`).
pub(crate) fn hide(g: &mut Graph, s: NodeId, visible: NodeId) -> graph::Result<NodeId> {
    let full = g.dims(s)?.to_vec();
    let visible = g.broadcast_to(visible, &full)?;
    let neg = g.full(NEG, TensorType::f32(full))?;
    g.select(visible, s, neg)
}

/// An i32 iota of `dims` along `dim`.
pub(crate) fn positions(g: &mut Graph, dims: &[i64], dim: usize) -> graph::Result<NodeId> {
    g.iota(TensorType::new(DType::I32, dims.to_vec()), dim)
}
