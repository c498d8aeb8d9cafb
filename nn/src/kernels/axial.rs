//! Axial attention (Ho et al., "Axial Attention in Multidimensional Transformers"): the
//! sequence is a `rows x cols` grid in raster order; attention runs along each row, then
//! along each column over the rows' results, so every position is reached in one layer
//! with `(T, cols)` + `(T, rows)` scores instead of `(T, T)`.
//!
//! Causal (raster order): position (r, c) may see (r', c') with r' < r, or r' = r and
//! c' <= c. The row pass is computed twice from the same scores: causal (`yc`) and
//! full (`yf`); the column pass at (r, c) then takes `yf` from the rows above (all of them
//! lie in the past) and `yc` from its own row.

use graph::{DotDims, Graph, NodeId, TensorType};

use super::local::Probs;
use super::{hide, positions};

/// Attention over dim `-2` of q, k `(P.., X, L, hd)` with values `(P.., X, L, hd)`:
/// the probabilities `(P.., X, L, L)` (masked by `visible`, broadcast to them).
fn probs_along(
    g: &mut Graph,
    q: NodeId,
    k: NodeId,
    visible: Option<NodeId>,
    probs: &mut Probs,
) -> graph::Result<NodeId> {
    let d = g.dims(q)?.to_vec();
    let r = d.len();
    let dims = DotDims {
        lhs_batch: (0..r - 2).collect(),
        rhs_batch: (0..r - 2).collect(),
        lhs_contract: vec![r - 1],
        rhs_contract: vec![r - 1],
    };
    let s = g.dot_general(q, k, dims, None)?;
    let s = g.mul_scalar(s, 1.0 / (d[r - 1] as f64).sqrt())?;
    let s = match visible {
        Some(v) => hide(g, s, v)?,
        None => s,
    };
    let p = g.softmax(s, r - 1)?;
    probs(g, p)
}

/// `p (P.., X, L, L) · v (P.., X, L, hd)`.
fn mix(g: &mut Graph, p: NodeId, v: NodeId) -> graph::Result<NodeId> {
    let r = g.dims(v)?.len();
    let dims = DotDims {
        lhs_batch: (0..r - 2).collect(),
        rhs_batch: (0..r - 2).collect(),
        lhs_contract: vec![r - 1],
        rhs_contract: vec![r - 2],
    };
    g.dot_general(p, v, dims, None)
}

/// `(L, L)` bool: `cmp(query, key)` on positions along the attended dim.
fn tri(
    g: &mut Graph,
    l: i64,
    cmp: fn(&mut Graph, NodeId, NodeId) -> graph::Result<NodeId>,
) -> graph::Result<NodeId> {
    let qi = positions(g, &[l, l], 0)?;
    let ki = positions(g, &[l, l], 1)?;
    cmp(g, qi, ki)
}

/// Rows then columns of q, k, v `(P.., T, hd)` folded into `rows x cols` (`rows * cols =
/// T`); `key_mask (B, T)` is true at real tokens.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn axial_attention(
    g: &mut Graph,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    causal: bool,
    rows: i64,
    cols: i64,
    key_mask: Option<NodeId>,
    probs: &mut Probs,
) -> graph::Result<NodeId> {
    let qd = g.dims(q)?.to_vec();
    let r = qd.len();
    let (t, hd) = (qd[r - 2], qd[r - 1]);
    if r < 3 || rows * cols != t {
        return Err(graph::GraphError::Invalid(format!(
            "axial attention: shape [{rows}, {cols}] does not fold q {qd:?}"
        )));
    }
    let p = r - 2;
    let mut grid = qd[..p].to_vec();
    grid.extend([rows, cols, hd]);
    let fold = |g: &mut Graph, x: NodeId| g.reshape(x, grid.clone());
    let (qg, kg, vg) = (fold(g, q)?, fold(g, k)?, fold(g, v)?); // (P.., R, C, hd)
                                                                // (P.., R, C, hd) <-> (P.., C, R, hd)
    let mut swap: Vec<usize> = (0..p).collect();
    swap.extend([p + 1, p, p + 2]);
    let mask = match key_mask {
        Some(m) => {
            let b = g.dims(m)?[0];
            Some(g.reshape(m, [b, rows, cols])?)
        }
        None => None,
    };
    // The row pass: scores (P.., R, C, C) over keys (r, c').
    let mut row_sd = qd[..p].to_vec();
    row_sd.extend([rows, cols, cols]);
    let row_keys = match mask {
        Some(m) => Some(g.broadcast_in_dim(m, row_sd.clone(), &[0, p, p + 2])?),
        None => None,
    };
    let both = |g: &mut Graph, a: Option<NodeId>, b: Option<NodeId>| match (a, b) {
        (Some(a), Some(b)) => {
            let sd = g.dims(b)?.to_vec();
            let a = g.broadcast_to(a, &sd)?;
            g.and(a, b).map(Some)
        }
        (a, None) => Ok(a),
        (None, b) => Ok(b),
    };
    let pf = probs_along(g, qg, kg, row_keys, probs)?;
    let yf = mix(g, pf, vg)?; // (P.., R, C, hd), all of each row
    let yc = if causal {
        let past = tri(g, cols, Graph::ge)?;
        let vis = both(g, Some(past), row_keys)?;
        let pc = probs_along(g, qg, kg, vis, probs)?;
        mix(g, pc, vg)?
    } else {
        yf
    };
    // The column pass: scores (P.., C, R, R) over keys (r', c).
    let (qt, kt) = (g.transpose(qg, &swap)?, g.transpose(kg, &swap)?);
    let mut col_sd = qd[..p].to_vec();
    col_sd.extend([cols, rows, rows]);
    let col_keys = match mask {
        Some(m) => {
            let m = g.transpose(m, &[0, 2, 1])?; // (B, C, R)
            Some(g.broadcast_in_dim(m, col_sd.clone(), &[0, p, p + 2])?)
        }
        None => None,
    };
    let yft = g.transpose(yf, &swap)?;
    let y = if causal {
        let past = tri(g, rows, Graph::ge)?;
        let vis = both(g, Some(past), col_keys)?;
        let pc = probs_along(g, qt, kt, vis, probs)?; // (P.., C, R, R)
                                                      // Rows above: yf; the own row: yc.
        let above = tri(g, rows, Graph::gt)?;
        let above = g.broadcast_to(above, &col_sd)?;
        let zero = g.full(0.0, TensorType::f32(col_sd.clone()))?;
        let strict = g.select(above, pc, zero)?;
        let diag = tri(g, rows, Graph::eq)?;
        let diag = g.broadcast_to(diag, &col_sd)?;
        let own = g.select(diag, pc, zero)?;
        let own = g.reduce_sum(own, &[p + 2])?; // (P.., C, R)
        let yct = g.transpose(yc, &swap)?;
        let mut td = qd[..p].to_vec();
        td.extend([cols, rows, hd]);
        let own = g.broadcast_in_dim(own, td, &(0..p + 2).collect::<Vec<_>>())?;
        let own = g.mul(own, yct)?;
        let up = mix(g, strict, yft)?;
        g.add(up, own)?
    } else {
        let pc = probs_along(g, qt, kt, col_keys, probs)?;
        mix(g, pc, yft)?
    };
    let y = g.transpose(y, &swap)?; // (P.., R, C, hd)
    g.reshape(y, qd)
}
