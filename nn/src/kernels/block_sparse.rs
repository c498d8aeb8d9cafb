//! Block-sparse attention (BigBird, Zaheer et al.): the sequence is cut into blocks; each
//! query block attends to its neighbour blocks (the previous one when causal), the
//! `global` leading tokens' blocks and `random` other blocks drawn once from a fixed
//! seed, and the global tokens' queries attend to every key. Key blocks are gathered per
//! query block, so scores are `(T, K·block)` for K selected blocks, never `(T, T)`.

use graph::{DotDims, Graph, NodeId, TensorType};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::local::Probs;
use super::{hide, positions};

/// Which key blocks each query block attends to (fixed at graph build time).
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub t: i64,
    pub block: i64,
    /// Global tokens: the first `global` positions (whole blocks).
    pub global: i64,
    pub causal: bool,
    /// `(n_blocks, K)` key block ids per query block; `valid` false on padding slots.
    pub table: Vec<Vec<i32>>,
    pub valid: Vec<Vec<bool>>,
}

impl Pattern {
    /// Neighbours, global blocks and `random` random blocks per row (from `seed`); a block
    /// appears at most once per row, and only blocks at or before the row when causal.
    pub fn new(t: i64, block: i64, global: i64, random: i64, causal: bool, seed: u64) -> Pattern {
        let nb = t / block;
        let gb = global / block;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut rows: Vec<Vec<i32>> = Vec::new();
        for i in 0..nb {
            let allowed = |j: i64| j >= 0 && j < nb && (!causal || j <= i);
            let mut row: Vec<i32> = Vec::new();
            let push = |row: &mut Vec<i32>, j: i64| {
                if allowed(j) && !row.contains(&(j as i32)) {
                    row.push(j as i32);
                }
            };
            for j in [i - 1, i, i + 1] {
                push(&mut row, j);
            }
            for j in 0..gb {
                push(&mut row, j);
            }
            let mut rest: Vec<i64> = (0..nb)
                .filter(|&j| allowed(j) && !row.contains(&(j as i32)))
                .collect();
            rest.shuffle(&mut rng);
            for &j in rest.iter().take(random.max(0) as usize) {
                push(&mut row, j);
            }
            rows.push(row);
        }
        let k = rows.iter().map(Vec::len).max().unwrap_or(1);
        let valid = rows
            .iter()
            .map(|r| (0..k).map(|s| s < r.len()).collect())
            .collect();
        let table = rows
            .into_iter()
            .map(|mut r| {
                r.resize(k, 0);
                r
            })
            .collect();
        Pattern {
            t,
            block,
            global,
            causal,
            table,
            valid,
        }
    }

    fn n_blocks(&self) -> i64 {
        self.t / self.block
    }
    fn k(&self) -> i64 {
        self.table.first().map_or(0, |r| r.len() as i64)
    }
}

/// `x (P.., nb, b, X)` -> `(P.., nb, K·b, X)`: block `table[i][s]` at slot s of row i.
fn gather_blocks(
    g: &mut Graph,
    x: NodeId,
    p: usize,
    table: NodeId,
    pat: &Pattern,
) -> graph::Result<NodeId> {
    let d = g.dims(x)?.to_vec();
    let r = d.len();
    // Block dim first for the row gather: (nb, P.., b, X..)
    let mut perm = vec![p];
    perm.extend(0..p);
    perm.extend(p + 1..r);
    let xt = g.transpose(x, &perm)?;
    let gx = g.gather(xt, table)?; // (nb, K, P.., b, X..)
    let mut back: Vec<usize> = (2..p + 2).collect();
    back.extend([0, 1]);
    back.extend(p + 2..r + 1);
    let gx = g.transpose(gx, &back)?; // (P.., nb, K, b, X..)
    let mut out = d[..p].to_vec();
    out.extend([pat.n_blocks(), pat.k() * pat.block]);
    out.extend_from_slice(&d[p + 2..]);
    g.reshape(gx, out)
}

/// BigBird attention of q, k, v `(P.., T, hd)` with `pattern`; `key_mask (B, T)` is true at
/// real tokens.
#[track_caller]
pub fn block_sparse_attention(
    g: &mut Graph,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    pat: &Pattern,
    key_mask: Option<NodeId>,
    probs: &mut Probs,
) -> graph::Result<NodeId> {
    let qd = g.dims(q)?.to_vec();
    let r = qd.len();
    let (t, hd) = (qd[r - 2], qd[r - 1]);
    if r < 3 || t != pat.t || t % pat.block != 0 {
        return Err(graph::GraphError::Invalid(format!(
            "block-sparse attention: a pattern for {} tokens in blocks of {} does not fit q {qd:?}",
            pat.t, pat.block
        )));
    }
    let p = r - 2;
    let (nb, b, kk) = (pat.n_blocks(), pat.block, pat.k());
    let flat: Vec<i32> = pat.table.iter().flatten().copied().collect();
    let table = g.constant_i32([nb, kk], flat)?;
    let mut bd = qd[..p].to_vec();
    bd.extend([nb, b, hd]);
    let qb = g.reshape(q, bd.clone())?;
    let kb = g.reshape(k, bd.clone())?;
    let vb = g.reshape(v, bd)?;
    let keys = gather_blocks(g, kb, p, table, pat)?; // (P.., nb, K·b, hd)
    let vals = gather_blocks(g, vb, p, table, pat)?;
    let batch: Vec<usize> = (0..=p).collect();
    let dims = |lc: usize, rc: usize| DotDims {
        lhs_batch: batch.clone(),
        rhs_batch: batch.clone(),
        lhs_contract: vec![lc],
        rhs_contract: vec![rc],
    };
    let s = g.dot_general(qb, keys, dims(p + 2, p + 2), None)?; // (P.., nb, b, K·b)
    let s = g.mul_scalar(s, 1.0 / (hd as f64).sqrt())?;
    let sd = g.dims(s)?.to_vec();
    // Valid slots, and (causal) key position <= query position.
    let pd = [nb, b, kk, b];
    let flat_valid: Vec<f32> = pat
        .valid
        .iter()
        .flatten()
        .map(|&v| if v { 1.0 } else { 0.0 })
        .collect();
    let valid = g.constant_f32([nb, kk], flat_valid)?;
    let half = g.full(0.5, TensorType::f32([nb, kk]))?;
    let valid = g.gt(valid, half)?;
    let mut vis = g.broadcast_in_dim(valid, pd.to_vec(), &[0, 2])?;
    if pat.causal {
        let tb = g.broadcast_in_dim(table, pd.to_vec(), &[0, 2])?;
        let tb = g.mul_scalar(tb, b as f64)?;
        let within = positions(g, &pd, 3)?;
        let kpos = g.add(tb, within)?;
        let bi = positions(g, &pd, 0)?;
        let bi = g.mul_scalar(bi, b as f64)?;
        let a = positions(g, &pd, 1)?;
        let qpos = g.add(bi, a)?;
        let past = g.ge(qpos, kpos)?;
        vis = g.and(vis, past)?;
    }
    let vis = g.reshape(vis, [nb, b, kk * b])?;
    let mut vis = g.broadcast_to(vis, &sd)?;
    if let Some(m) = key_mask {
        let bsz = g.dims(m)?[0];
        let m = g.reshape(m, [bsz, nb, b])?;
        let m = gather_blocks(g, m, 1, table, pat)?; // (B, nb, K·b)
        let m = g.broadcast_in_dim(m, sd.clone(), &[0, p, p + 2])?;
        vis = g.and(vis, m)?;
    }
    let s = hide(g, s, vis)?;
    let att = g.softmax(s, p + 2)?;
    let att = probs(g, att)?;
    let y = g.dot_general(att, vals, dims(p + 2, p + 1), None)?; // (P.., nb, b, hd)
    let y = g.reshape(y, qd.clone())?;
    if pat.global == 0 {
        return Ok(y);
    }
    // Global queries see every (earlier, when causal) key: dense rows (P.., G, T).
    let gl = pat.global;
    let qg = g.slice_dim(q, r - 2, 0, gl)?;
    let gdims = DotDims {
        lhs_batch: (0..p).collect(),
        rhs_batch: (0..p).collect(),
        lhs_contract: vec![r - 1],
        rhs_contract: vec![r - 1],
    };
    let sg = g.dot_general(qg, k, gdims, None)?; // (P.., G, T)
    let sg = g.mul_scalar(sg, 1.0 / (hd as f64).sqrt())?;
    let gd = g.dims(sg)?.to_vec();
    let mut gvis: Option<NodeId> = None;
    if pat.causal {
        let qi = positions(g, &[gl, t], 0)?;
        let ki = positions(g, &[gl, t], 1)?;
        let past = g.ge(qi, ki)?;
        gvis = Some(g.broadcast_to(past, &gd)?);
    }
    if let Some(m) = key_mask {
        let m = g.broadcast_in_dim(m, gd.clone(), &[0, r - 1])?;
        gvis = Some(match gvis {
            Some(v) => g.and(v, m)?,
            None => m,
        });
    }
    let sg = match gvis {
        Some(v) => hide(g, sg, v)?,
        None => sg,
    };
    let pg = g.softmax(sg, r - 1)?;
    let pg = probs(g, pg)?;
    let vdims = DotDims {
        lhs_batch: (0..p).collect(),
        rhs_batch: (0..p).collect(),
        lhs_contract: vec![r - 1],
        rhs_contract: vec![r - 2],
    };
    let yg = g.dot_general(pg, v, vdims, None)?; // (P.., G, hd)
    let rest = g.slice_dim(y, r - 2, gl, t)?;
    g.concatenate(&[yg, rest], r - 2)
}
