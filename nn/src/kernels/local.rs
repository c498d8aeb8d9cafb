//! Local (sliding-window) attention, computed blockwise: the sequence is cut into blocks of
//! `block` (= the window), and each query block attends to its own block and its
//! neighbours (the previous one when causal; previous and next otherwise), masked to the
//! window. Scores are `(T, 2..3 blocks)`, never `(T, T)`.

use graph::{DotDims, Graph, NodeId};

use super::{hide, positions};

/// Probabilities hook (dropout), as dense attention's.
pub type Probs<'a> = dyn FnMut(&mut Graph, NodeId) -> graph::Result<NodeId> + 'a;

/// `x (P.., nb, w, X..)` shifted by `by` blocks along dim `dim` (`+1`: block i holds
/// block i-1), filled with `fill` where no block comes from.
pub(crate) fn shift_blocks(
    g: &mut Graph,
    x: NodeId,
    dim: usize,
    by: i64,
    fill: NodeId,
) -> graph::Result<NodeId> {
    let rank = g.dims(x)?.len();
    let (mut low, mut high) = (vec![0; rank], vec![0; rank]);
    low[dim] = by;
    high[dim] = -by;
    g.pad(x, fill, &low, &high, &vec![0; rank])
}

/// Each query sees keys `j` with `0 <= i - j < window` (causal) or `|i - j| <= window / 2`
/// over q, k, v `(P.., T, hd)`, in blocks of `block` (dividing T); `key_mask (B, T)` is true
/// at real tokens.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn local_attention(
    g: &mut Graph,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    causal: bool,
    window: i64,
    block: i64,
    key_mask: Option<NodeId>,
    probs: &mut Probs,
) -> graph::Result<NodeId> {
    let qd = g.dims(q)?.to_vec();
    let r = qd.len();
    let (t, hd) = (qd[r - 2], qd[r - 1]);
    if r < 3 || block <= 0 || t % block != 0 {
        return Err(graph::GraphError::Invalid(format!(
            "local attention: block {block} must divide the length of q {qd:?}"
        )));
    }
    let p = r - 2;
    let (nb, w) = (t / block, block);
    let mut bd = qd[..p].to_vec();
    bd.extend([nb, w, hd]);
    let blocks = |g: &mut Graph, x: NodeId| g.reshape(x, bd.clone());
    let (qb, kb, vb) = (blocks(g, q)?, blocks(g, k)?, blocks(g, v)?);
    // Neighbour blocks: offsets relative to the query block.
    let offsets: Vec<i64> = match (nb, causal) {
        (1, _) => vec![0],
        (_, true) => vec![-1, 0],
        (_, false) => vec![-1, 0, 1],
    };
    let n_prev = offsets.iter().filter(|&&o| o < 0).count() as i64;
    // `x` with its neighbour blocks (block dim `bdim`) side by side along `dim`.
    let gather = |g: &mut Graph, x: NodeId, bdim: usize, dim: usize, fill: NodeId| {
        let parts: Vec<NodeId> = offsets
            .iter()
            .map(|&o| match o {
                0 => Ok(x),
                o => shift_blocks(g, x, bdim, -o, fill),
            })
            .collect::<graph::Result<_>>()?;
        g.concatenate(&parts, dim)
    };
    let zero = g.scalar(0.0, graph::DType::F32)?;
    let keys = gather(g, kb, p, p + 1, zero)?; // (P.., nb, K·w, hd)
    let vals = gather(g, vb, p, p + 1, zero)?;
    let kw = offsets.len() as i64 * w;
    let batch: Vec<usize> = (0..=p).collect();
    let dims = |lc: usize, rc: usize| DotDims {
        lhs_batch: batch.clone(),
        rhs_batch: batch.clone(),
        lhs_contract: vec![lc],
        rhs_contract: vec![rc],
    };
    let s = g.dot_general(qb, keys, dims(p + 2, p + 2), None)?; // (P.., nb, w, K·w)
    let s = g.mul_scalar(s, 1.0 / (hd as f64).sqrt())?;
    let sd = g.dims(s)?.to_vec();
    // Positions: query i·w + a, key slot s of block i at i·w + s - n_prev·w.
    let pd = [nb, w, kw];
    let bi = positions(g, &pd, 0)?;
    let bi = g.mul_scalar(bi, w as f64)?;
    let a = positions(g, &pd, 1)?;
    let qpos = g.add(bi, a)?;
    let slot = positions(g, &pd, 2)?;
    let kpos = g.add(bi, slot)?;
    let kpos = g.add_scalar(kpos, -(n_prev * w) as f64)?;
    let zero_i = g.full(0.0, graph::TensorType::new(graph::DType::I32, pd.to_vec()))?;
    let t_i = g.full(
        t as f64,
        graph::TensorType::new(graph::DType::I32, pd.to_vec()),
    )?;
    let in_lo = g.ge(kpos, zero_i)?;
    let in_hi = g.lt(kpos, t_i)?;
    let inside = g.and(in_lo, in_hi)?;
    let rel = g.sub(qpos, kpos)?; // i - j
    let near = if causal {
        let ahead = g.ge(rel, zero_i)?;
        let wn = g.full(
            window as f64,
            graph::TensorType::new(graph::DType::I32, pd.to_vec()),
        )?;
        let within = g.lt(rel, wn)?;
        g.and(ahead, within)?
    } else {
        let half = g.full(
            (window / 2) as f64,
            graph::TensorType::new(graph::DType::I32, pd.to_vec()),
        )?;
        let back = g.le(rel, half)?;
        let neg_half = g.neg(half)?;
        let fwd = g.ge(rel, neg_half)?;
        g.and(back, fwd)?
    };
    let vis = g.and(inside, near)?;
    let mut vis = g.broadcast_to(vis, &sd)?;
    if let Some(m) = key_mask {
        let b = g.dims(m)?[0];
        let m = g.reshape(m, [b, nb, w])?;
        let f = g.scalar(0.0, graph::DType::Bool)?;
        let m = gather(g, m, 1, 2, f)?; // (B, nb, K·w)
        let m = g.broadcast_in_dim(m, sd.clone(), &[0, p, p + 2])?;
        vis = g.and(vis, m)?;
    }
    let s = hide(g, s, vis)?;
    let att = g.softmax(s, p + 2)?;
    let att = probs(g, att)?;
    let y = g.dot_general(att, vals, dims(p + 2, p + 1), None)?; // (P.., nb, w, hd)
    g.reshape(y, qd)
}
