//! Attention over a key/value cache, for generation: new tokens `x (B, S, D)` sit at cache
//! columns `[pos, pos + S)`; their keys and values are written there in place
//! (`dynamic_update_slice`, the cache buffers donated by the caller), and each query attends
//! to the columns a `visible (B, S, T)` mask allows. The same weights as
//! [`MultiHeadAttentionW`], so a trained model decodes with its training parameters. Also
//! cross-attention (queries from one sequence, keys and values from another), which the
//! encoder–decoder uses with keys and values computed once per input.

use graph::{DType, DotDims, Graph, NodeId, TensorType};

use crate::attention::MultiHeadAttentionW;

/// One layer's cache: keys and values `(B, H, T, hd)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvCache {
    pub k: NodeId,
    pub v: NodeId,
}

impl KvCache {
    /// The type of one cache tensor.
    pub fn tensor_type(batch: i64, n_heads: i64, len: i64, head_dim: i64) -> TensorType {
        TensorType::f32([batch, n_heads, len, head_dim])
    }
}

/// q, k, v `(B, H, S, hd)` of `x (B, S, D)` by the layer's projections (fused or separate).
#[track_caller]
pub fn project_qkv(
    g: &mut Graph,
    w: &MultiHeadAttentionW,
    x: NodeId,
) -> graph::Result<[NodeId; 3]> {
    let v = project(g, w, x, &[0, 1, 2])?;
    Ok([v[0], v[1], v[2]])
}

/// The projections `which` (0 = q, 1 = k, 2 = v) of `x (B, S, D)`, each `(B, H, S, hd)`;
/// separate weights compute only those asked for.
#[track_caller]
fn project(
    g: &mut Graph,
    w: &MultiHeadAttentionW,
    x: NodeId,
    which: &[usize],
) -> graph::Result<Vec<NodeId>> {
    let xd = g.dims(x)?.to_vec();
    let [b, s, _] = xd[..] else {
        return Err(graph::GraphError::Invalid(format!(
            "cached attention needs (B, S, D) input, got {xd:?}"
        )));
    };
    let (d, h) = (w.cfg.d_model, w.cfg.n_heads);
    let fused = match w.qkv.as_slice() {
        [qkv] => Some(qkv.apply(g, x)?), // (B, S, 3, H, hd)
        _ => None,
    };
    let mut out = Vec::new();
    for &i in which {
        let y = match fused {
            Some(qkv) => {
                let i = i as i64;
                let y = g.slice_dim(qkv, 2, i, i + 1)?;
                g.reshape(y, [b, s, h, d / h])?
            }
            None => w.qkv[i].apply(g, x)?, // (B, S, H, hd)
        };
        out.push(g.transpose(y, &[0, 2, 1, 3])?); // (B, H, S, hd)
    }
    Ok(out)
}

/// `visible (B, S, T)`: query `s` (at column `pos + s`) sees key column `c` when
/// `start[b] <= c <= pos + s` (left padding before `start[b]`; causal after).
#[track_caller]
pub fn causal_visibility(
    g: &mut Graph,
    start: NodeId,
    pos: NodeId,
    s: i64,
    t: i64,
) -> graph::Result<NodeId> {
    let b = g.dims(start)?[0];
    let shape = [b, s, t];
    let col = g.iota(TensorType::new(DType::I32, shape), 2)?;
    let row = g.iota(TensorType::new(DType::I32, shape), 1)?;
    let pos = g.broadcast_to(pos, &shape)?;
    let query_col = g.add(row, pos)?;
    let start = g.broadcast_in_dim(start, shape.to_vec(), &[0])?;
    let after_start = g.ge(col, start)?;
    let not_future = g.le(col, query_col)?;
    g.and(after_start, not_future)
}

/// softmax(q kᵀ / sqrt(hd), hidden where `!visible`) v: q `(B, H, S, hd)`, k, v
/// `(B, H, T, hd)`, `visible (B, S, T)` bool; returns `(B, H, S, hd)`. The same ops in the
/// same order as [`crate::attention::dense_attention`], so cached and full logits agree.
#[track_caller]
pub fn masked_attention(
    g: &mut Graph,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    visible: NodeId,
) -> graph::Result<NodeId> {
    let hd = g.dims(q)?[3];
    let batch = |lc: usize, rc: usize| DotDims {
        lhs_batch: vec![0, 1],
        rhs_batch: vec![0, 1],
        lhs_contract: vec![lc],
        rhs_contract: vec![rc],
    };
    let att = g.dot_general(q, k, batch(3, 3), None)?; // (B, H, S, T)
    let att = g.mul_scalar(att, 1.0 / (hd as f64).sqrt())?;
    let full = g.dims(att)?.to_vec();
    let m = g.broadcast_in_dim(visible, full.clone(), &[0, 2, 3])?;
    let neg = g.full(-1e9, TensorType::f32(full))?;
    let att = g.select(m, att, neg)?;
    let att = g.softmax(att, 3)?;
    g.dot_general(att, v, batch(3, 2), None) // (B, H, S, hd)
}

/// Merges heads `(B, H, S, hd)` and applies the output projection: `(B, S, D)`.
#[track_caller]
pub fn merge_heads(g: &mut Graph, w: &MultiHeadAttentionW, y: NodeId) -> graph::Result<NodeId> {
    let yd = g.dims(y)?.to_vec();
    let y = g.transpose(y, &[0, 2, 1, 3])?; // (B, S, H, hd)
    let y = g.reshape(y, [yd[0], yd[2], yd[1] * yd[3]])?;
    w.proj.apply(g, y)
}

/// Self-attention of `x (B, S, D)` at cache columns `[pos, pos + S)`: writes the new keys
/// and values into `cache` at `pos` and attends over the updated cache where `visible`
/// `(B, S, T)` allows. Returns `(y (B, S, D), updated cache)`.
#[track_caller]
pub fn cached_self_attention(
    g: &mut Graph,
    w: &MultiHeadAttentionW,
    x: NodeId,
    cache: KvCache,
    pos: NodeId,
    visible: NodeId,
) -> graph::Result<(NodeId, KvCache)> {
    let [q, k, v] = project_qkv(g, w, x)?;
    let zero = g.scalar(0.0, DType::I32)?;
    let at = [zero, zero, pos, zero];
    let k = g.dynamic_update_slice(cache.k, k, &at)?;
    let v = g.dynamic_update_slice(cache.v, v, &at)?;
    // Without the barrier XLA fuses each update into both of its readers (the attention and
    // the returned cache), and every copy of it starts by copying the whole cache.
    let kv = g.optimization_barrier(&[k, v])?;
    let cache = KvCache { k: kv[0], v: kv[1] };
    let y = masked_attention(g, q, cache.k, cache.v, visible)?;
    Ok((merge_heads(g, w, y)?, cache))
}

/// Keys and values `(B, H, T, hd)` of a memory `m (B, T, D)` by the layer's k and v
/// projections: what cross-attention reads, computed once per input.
#[track_caller]
pub fn memory_kv(g: &mut Graph, w: &MultiHeadAttentionW, m: NodeId) -> graph::Result<KvCache> {
    let kv = project(g, w, m, &[1, 2])?;
    Ok(KvCache { k: kv[0], v: kv[1] })
}

/// Cross-attention of queries from `x (B, S, D)` to a memory's keys and values
/// `(B, H, T, hd)`, where `visible (B, S, T)` allows (the memory's padding mask).
#[track_caller]
pub fn cross_attention(
    g: &mut Graph,
    w: &MultiHeadAttentionW,
    x: NodeId,
    memory: KvCache,
    visible: NodeId,
) -> graph::Result<NodeId> {
    let q = project(g, w, x, &[0])?[0];
    let y = masked_attention(g, q, memory.k, memory.v, visible)?;
    merge_heads(g, w, y)
}
