//! LSH attention (Kitaev et al., "Reformer"): queries and keys share one projection (keys
//! are the length-normalized queries); each hash round buckets positions by a random
//! rotation (argmax over [xR, -xR]), sorts them by (bucket, position), and attends within
//! each chunk of `bucket_size` sorted positions and the chunk before it. Results go back
//! to sequence order and the rounds are combined by their log-sum-exp. A position attends
//! to itself only when nothing else is visible. Rotations come from the step's seed, so a
//! resumed run draws the same ones.

use graph::{DType, DotDims, Graph, NodeId, TensorType};

use super::local::Probs;
use super::{expand_trailing, hide, positions};

/// The score of a position against itself (Reformer's): above hidden keys, below any
/// visible one.
const SELF: f64 = -1e5;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lsh {
    pub causal: bool,
    /// Sorted positions per chunk; T / bucket_size buckets.
    pub bucket_size: i64,
    pub n_hashes: i64,
}

/// The seed the rotations are drawn from: the step's, or a fixed one (evaluation).
pub fn rotation_seed(g: &mut Graph, seed: Option<NodeId>) -> graph::Result<NodeId> {
    match seed {
        Some(s) => Ok(s),
        None => g.scalar(0.0, DType::U32),
    }
}

/// `x (.., n, X..)` rolled by one along `dim`: element i holds element i-1 (0 holds n-1).
fn roll_one(g: &mut Graph, x: NodeId, dim: usize) -> graph::Result<NodeId> {
    let n = g.dims(x)?[dim];
    let last = g.slice_dim(x, dim, n - 1, n)?;
    let head = g.slice_dim(x, dim, 0, n - 1)?;
    g.concatenate(&[last, head], dim)
}

impl Lsh {
    /// Shared-QK attention of `q, v (P.., T, hd)`; `key_mask (B, T)` is true at real
    /// tokens; `seed`/`salt` draw the rotations.
    #[allow(clippy::too_many_arguments)]
    #[track_caller]
    pub fn apply(
        &self,
        g: &mut Graph,
        q: NodeId,
        v: NodeId,
        key_mask: Option<NodeId>,
        seed: NodeId,
        salt: u32,
        probs: &mut Probs,
    ) -> graph::Result<NodeId> {
        let qd = g.dims(q)?.to_vec();
        let r = qd.len();
        let (t, hd) = (qd[r - 2], qd[r - 1]);
        let c = self.bucket_size;
        if r < 3 || c <= 0 || t % c != 0 || self.n_hashes < 1 {
            return Err(graph::GraphError::Invalid(format!(
                "lsh attention: bucket_size {c} must divide the length of q {qd:?}, \
                 n_hashes {} at least 1",
                self.n_hashes
            )));
        }
        let p = r - 2;
        let n_buckets = t / c;
        // Keys: the queries normalized over hd (shared QK).
        let sq = g.mul(q, q)?;
        let norm = g.reduce_sum(sq, &[r - 1])?;
        let norm = g.add_scalar(norm, 1e-6)?;
        let inv = g.rsqrt(norm)?;
        let inv = expand_trailing(g, inv, &qd)?;
        let kn = g.mul(q, inv)?; // (P.., T, hd)
        let row = qd[..r - 1].to_vec(); // (P.., T)
        let pos = positions(g, &row, p)?;
        let mask = match key_mask {
            Some(m) => Some(g.broadcast_in_dim(m, row.clone(), &[0, p])?),
            None => None,
        };
        // One rotation per round: (hd, buckets/2) for [xR, -xR], or (hd, buckets) if odd.
        let half = if n_buckets % 2 == 0 {
            n_buckets / 2
        } else {
            n_buckets
        };
        let rot = g.rng_normal(seed, salt, [self.n_hashes, hd, half], DType::F32)?;
        let hashed = g.stop_gradient(kn)?;
        let mut outs = Vec::new();
        let mut lses = Vec::new();
        for h in 0..self.n_hashes {
            let bucket = if n_buckets == 1 {
                g.full(0.0, TensorType::new(DType::I32, row.clone()))?
            } else {
                let rh = g.slice_dim(rot, 0, h, h + 1)?;
                let rh = g.reshape(rh, [hd, half])?;
                let x = g.dot_general(hashed, rh, DotDims::contract(&[r - 1], &[0]), None)?;
                let x = if n_buckets % 2 == 0 {
                    let nx = g.neg(x)?;
                    g.concatenate(&[x, nx], r - 1)?
                } else {
                    x
                };
                g.argmax(x, r - 1)? // (P.., T)
            };
            let key = g.mul_scalar(bucket, t as f64)?;
            let key = g.add(key, pos)?; // distinct: bucket·T + position
            let (y, lse) = self.round(g, key, pos, q, kn, v, mask, probs)?;
            outs.push(y);
            lses.push(lse);
        }
        if self.n_hashes == 1 {
            return Ok(outs[0]);
        }
        // Combine rounds: weights softmax over the rounds' log-sum-exps.
        let mut one = vec![1];
        one.extend_from_slice(&row);
        let stacked: Vec<NodeId> = lses
            .iter()
            .map(|&l| g.reshape(l, one.clone()))
            .collect::<graph::Result<_>>()?;
        let all = g.concatenate(&stacked, 0)?; // (n, P.., T)
        let w = g.softmax(all, 0)?;
        let mut y: Option<NodeId> = None;
        for (h, &o) in outs.iter().enumerate() {
            let wh = g.slice_dim(w, 0, h as i64, h as i64 + 1)?;
            let wh = g.reshape(wh, row.clone())?;
            let wh = expand_trailing(g, wh, &qd)?;
            let part = g.mul(o, wh)?;
            y = Some(match y {
                Some(acc) => g.add(acc, part)?,
                None => part,
            });
        }
        Ok(y.expect("n_hashes >= 1"))
    }

    /// One hash round: attended values `(P.., T, hd)` and their log-sum-exp `(P.., T)`, in
    /// sequence order. `key (P.., T)` i32 orders the positions.
    #[allow(clippy::too_many_arguments)]
    fn round(
        &self,
        g: &mut Graph,
        key: NodeId,
        pos: NodeId,
        q: NodeId,
        kn: NodeId,
        v: NodeId,
        mask: Option<NodeId>,
        probs: &mut Probs,
    ) -> graph::Result<(NodeId, NodeId)> {
        let qd = g.dims(q)?.to_vec();
        let r = qd.len();
        let p = r - 2;
        let (t, hd, c) = (qd[r - 2], qd[r - 1], self.bucket_size);
        let nc = t / c;
        // Sort positions (and the mask) by key; q, kn, v by the same key broadcast over hd.
        let mut payload = vec![pos];
        if let Some(m) = mask {
            payload.push(g.convert(m, DType::I32)?);
        }
        let sorted = g.sort_with_payload(key, &payload, p, false)?;
        let spos = sorted[1];
        let smask = sorted.get(2).copied();
        let kb = expand_trailing(g, key, &qd)?;
        let sv = g.sort_with_payload(kb, &[q, kn, v], p, false)?;
        let (sq, sk, svv) = (sv[1], sv[2], sv[3]);
        // Chunks (P.., nc, c, ..), keys from the chunk and the one before it.
        let mut cd = qd[..p].to_vec();
        cd.extend([nc, c, hd]);
        let mut cpos = qd[..p].to_vec();
        cpos.extend([nc, c]);
        let qc = g.reshape(sq, cd.clone())?;
        let with_prev = |g: &mut Graph, x: NodeId| -> graph::Result<NodeId> {
            if nc == 1 {
                return Ok(x);
            }
            let prev = roll_one(g, x, p)?;
            g.concatenate(&[x, prev], p + 1)
        };
        let kc = g.reshape(sk, cd.clone())?;
        let kc = with_prev(g, kc)?; // (P.., nc, K·c, hd)
        let vc = g.reshape(svv, cd.clone())?;
        let vc = with_prev(g, vc)?;
        let qp = g.reshape(spos, cpos.clone())?; // (P.., nc, c)
        let kp = with_prev(g, qp)?; // (P.., nc, K·c)
        let batch: Vec<usize> = (0..=p).collect();
        let dims = |lc: usize, rc: usize| DotDims {
            lhs_batch: batch.clone(),
            rhs_batch: batch.clone(),
            lhs_contract: vec![lc],
            rhs_contract: vec![rc],
        };
        let s = g.dot_general(qc, kc, dims(p + 2, p + 2), None)?; // (P.., nc, c, K·c)
        let s = g.mul_scalar(s, 1.0 / (hd as f64).sqrt())?;
        let sd = g.dims(s)?.to_vec();
        let qpb = g.broadcast_in_dim(qp, sd.clone(), &(0..p + 2).collect::<Vec<_>>())?;
        let mut kdims: Vec<usize> = (0..=p).collect();
        kdims.push(p + 2);
        let kpb = g.broadcast_in_dim(kp, sd.clone(), &kdims)?;
        let mut vis: Option<NodeId> = None;
        if self.causal {
            vis = Some(g.ge(qpb, kpb)?);
        }
        if let Some(m) = smask {
            let m = g.reshape(m, cpos)?;
            let m = with_prev(g, m)?;
            let zero = g.full(0.0, TensorType::new(DType::I32, g.dims(m)?.to_vec()))?;
            let m = g.ne(m, zero)?;
            let m = g.broadcast_in_dim(m, sd.clone(), &kdims)?;
            vis = Some(match vis {
                Some(v) => g.and(v, m)?,
                None => m,
            });
        }
        let s = match vis {
            Some(v) => hide(g, s, v)?,
            None => s,
        };
        // Self: a fixed low score, kept only when nothing else is visible.
        let is_self = g.eq(qpb, kpb)?;
        let low = g.full(SELF, TensorType::f32(sd.clone()))?;
        let s = g.select(is_self, low, s)?;
        let lse = g.logsumexp(s, p + 2)?; // (P.., nc, c)
        let lb = expand_trailing(g, lse, &sd)?;
        let att = g.sub(s, lb)?;
        let att = g.exp(att)?;
        let att = probs(g, att)?;
        let y = g.dot_general(att, vc, dims(p + 2, p + 1), None)?; // (P.., nc, c, hd)
        let y = g.reshape(y, qd.clone())?;
        let lse = g.reshape(lse, qd[..r - 1].to_vec())?;
        // Back to sequence order: sort by the original positions.
        let pb = expand_trailing(g, spos, &qd)?;
        let y = g.sort_with_payload(pb, &[y], p, false)?[1];
        let lse = g.sort_with_payload(spos, &[lse], p, false)?[1];
        Ok((y, lse))
    }
}
