//! Chunked exact attention (Rabe & Staats, "Self-attention does not need O(n²) memory"):
//! keys and values are visited in chunks with a running max and sum per query, so only
//! `(T, chunk)` scores exist at a time. The custom VJP recomputes each chunk's
//! probabilities from the saved max and sum (as FlashAttention's backward does), so the
//! backward pass does not keep `(T, T)` probabilities either. Both passes are scan loops
//! over the chunks: XLA runs them as while loops, reusing one chunk's buffers.

use graph::{DotDims, Graph, NodeId, TensorType};

use super::{expand_trailing, hide, positions};

/// Scores of all queries against chunk `j` and which of them are visible.
struct Chunk {
    /// `(P.., T, c)`, hidden scores at [`super::NEG`].
    scores: NodeId,
    visible: Option<NodeId>,
}

/// Shared by both passes: the shapes and the per-chunk score computation.
#[derive(Clone)]
struct Plan {
    /// q's dims `(P.., T, hd)`.
    qd: Vec<i64>,
    chunk: i64,
    causal: bool,
}

impl Plan {
    fn r(&self) -> usize {
        self.qd.len()
    }
    fn t(&self) -> i64 {
        self.qd[self.r() - 2]
    }
    fn n_chunks(&self) -> i64 {
        self.t() / self.chunk
    }
    /// A dot over the leading `P` dims as batch dims.
    fn dot(&self, lc: usize, rc: usize) -> DotDims {
        let p = self.r() - 2;
        DotDims {
            lhs_batch: (0..p).collect(),
            rhs_batch: (0..p).collect(),
            lhs_contract: vec![lc],
            rhs_contract: vec![rc],
        }
    }

    /// `(P.., T, hd)` -> `(n, P.., c, hd)`: the chunks as the scanned dim.
    fn chunks(&self, g: &mut Graph, x: NodeId) -> graph::Result<NodeId> {
        let (r, p) = (self.r(), self.r() - 2);
        let mut d = self.qd[..p].to_vec();
        d.extend([self.n_chunks(), self.chunk, self.qd[r - 1]]);
        let x = g.reshape(x, d)?;
        let mut perm = vec![p];
        perm.extend(0..p);
        perm.extend([p + 1, p + 2]);
        g.transpose(x, &perm)
    }

    /// The inverse of [`Self::chunks`].
    fn unchunk(&self, g: &mut Graph, x: NodeId) -> graph::Result<NodeId> {
        let p = self.r() - 2;
        let mut perm: Vec<usize> = (1..=p).collect();
        perm.extend([0, p + 1, p + 2]);
        let x = g.transpose(x, &perm)?;
        g.reshape(x, self.qd.clone())
    }

    /// The key mask `(B, T)` as `(n, B, c)`.
    fn mask_chunks(&self, g: &mut Graph, m: NodeId) -> graph::Result<NodeId> {
        let b = g.dims(m)?[0];
        let m = g.reshape(m, [b, self.n_chunks(), self.chunk])?;
        g.transpose(m, &[1, 0, 2])
    }

    fn scores(
        &self,
        g: &mut Graph,
        q: NodeId,
        kj: NodeId,
        j: NodeId,
        mj: Option<NodeId>,
    ) -> graph::Result<Chunk> {
        let r = self.r();
        let (t, c, hd) = (self.t(), self.chunk, self.qd[r - 1]);
        let s = g.dot_general(q, kj, self.dot(r - 1, r - 1), None)?; // (P.., T, c)
        let s = g.mul_scalar(s, 1.0 / (hd as f64).sqrt())?;
        let sd = g.dims(s)?.to_vec();
        let mut visible = None;
        if self.causal {
            let qpos = positions(g, &[t, c], 0)?;
            let kpos = positions(g, &[t, c], 1)?;
            let start = g.mul_scalar(j, c as f64)?;
            let start = g.broadcast_in_dim(start, vec![t, c], &[])?;
            let kpos = g.add(kpos, start)?;
            let v = g.ge(qpos, kpos)?;
            visible = Some(g.broadcast_to(v, &sd)?);
        }
        if let Some(mj) = mj {
            let m = g.broadcast_in_dim(mj, sd.clone(), &[0, r - 1])?;
            visible = Some(match visible {
                Some(v) => g.and(v, m)?,
                None => m,
            });
        }
        let scores = match visible {
            Some(v) => hide(g, s, v)?,
            None => s,
        };
        Ok(Chunk { scores, visible })
    }
}

/// Exact softmax(q kᵀ / sqrt(hd) [+ causal] [+ key mask]) v over q, k, v `(P.., T, hd)`,
/// `chunk` keys at a time (`chunk` divides T); `key_mask (B, T)` is true at real tokens.
#[track_caller]
pub fn chunked_attention(
    g: &mut Graph,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    causal: bool,
    chunk: i64,
    key_mask: Option<NodeId>,
) -> graph::Result<NodeId> {
    let qd = g.dims(q)?.to_vec();
    let r = qd.len();
    if r < 3 || chunk <= 0 || qd[r - 2] % chunk != 0 {
        return Err(graph::GraphError::Invalid(format!(
            "chunked attention: chunk {chunk} must divide the length of q {qd:?}"
        )));
    }
    let plan = Plan { qd, chunk, causal };
    let fw = plan.clone();
    let mut inputs = vec![q, k, v];
    inputs.extend(key_mask);
    let outs = g.custom_vjp(
        "chunked_attention",
        &inputs,
        move |g, xs| forward(g, &fw, xs),
        move |g, xs, ys, cts| backward(g, &plan, xs, ys, cts),
    )?;
    Ok(outs[0])
}

/// `[y, running max, running sum]` of `[q, k, v, (mask)]`.
fn forward(g: &mut Graph, p: &Plan, xs: &[NodeId]) -> graph::Result<Vec<NodeId>> {
    let (q, k, v) = (xs[0], xs[1], xs[2]);
    let r = p.r();
    let kc = p.chunks(g, k)?;
    let vc = p.chunks(g, v)?;
    let idx = positions(g, &[p.n_chunks()], 0)?;
    let mut scanned = vec![kc, vc, idx];
    if let Some(&m) = xs.get(3) {
        scanned.push(p.mask_chunks(g, m)?);
    }
    let row = TensorType::f32(p.qd[..r - 1].to_vec()); // (P.., T)
    let m0 = g.full(-1e30, row.clone())?;
    let l0 = g.full(0.0, row)?;
    let a0 = g.full(0.0, TensorType::f32(p.qd.clone()))?;
    let out = g.scan(
        p.n_chunks(),
        &[q],
        &[m0, l0, a0],
        &scanned,
        false,
        |b, a| {
            let (mx, l, acc) = (a.carries[0], a.carries[1], a.carries[2]);
            let ch = p.scores(b, a.consts[0], a.xs[0], a.xs[2], a.xs.get(3).copied())?;
            let sd = b.dims(ch.scores)?.to_vec();
            let smax = b.reduce_max(ch.scores, &[r - 1])?;
            let mnew = b.max(mx, smax)?;
            let shift = expand_trailing(b, mnew, &sd)?;
            let e = b.sub(ch.scores, shift)?;
            let e = b.exp(e)?; // (P.., T, c)
            let corr = b.sub(mx, mnew)?;
            let corr = b.exp(corr)?;
            let l = b.mul(l, corr)?;
            let es = b.reduce_sum(e, &[r - 1])?;
            let l = b.add(l, es)?;
            let pv = b.dot_general(e, a.xs[1], p.dot(r - 1, r - 2), None)?; // (P.., T, hd)
            let corr = expand_trailing(b, corr, &p.qd)?;
            let acc = b.mul(acc, corr)?;
            let acc = b.add(acc, pv)?;
            Ok((vec![mnew, l, acc], vec![]))
        },
    )?;
    let (mx, l, acc) = (out.carries[0], out.carries[1], out.carries[2]);
    let lb = expand_trailing(g, l, &p.qd)?;
    let y = g.div(acc, lb)?;
    Ok(vec![y, mx, l])
}

/// Cotangents of q, k, v (none for the mask); the max and sum are internal outputs whose
/// cotangents are zero.
fn backward(
    g: &mut Graph,
    p: &Plan,
    xs: &[NodeId],
    ys: &[NodeId],
    cts: &[NodeId],
) -> graph::Result<Vec<Option<NodeId>>> {
    let (q, k, v) = (xs[0], xs[1], xs[2]);
    let (y, mx, l, dy) = (ys[0], ys[1], ys[2], cts[0]);
    let r = p.r();
    let hd = p.qd[r - 1];
    // D = rowsum(dy * y): the softmax VJP's subtracted term.
    let dyy = g.mul(dy, y)?;
    let dsum = g.reduce_sum(dyy, &[r - 1])?; // (P.., T)
    let kc = p.chunks(g, k)?;
    let vc = p.chunks(g, v)?;
    let idx = positions(g, &[p.n_chunks()], 0)?;
    let mut scanned = vec![kc, vc, idx];
    if let Some(&m) = xs.get(3) {
        scanned.push(p.mask_chunks(g, m)?);
    }
    let dq0 = g.full(0.0, TensorType::f32(p.qd.clone()))?;
    let consts = [q, dy, mx, l, dsum];
    let out = g.scan(p.n_chunks(), &consts, &[dq0], &scanned, false, |b, a| {
        let [q, dy, mx, l, dsum] = [0, 1, 2, 3, 4].map(|i| a.consts[i]);
        let (kj, vj) = (a.xs[0], a.xs[1]);
        let ch = p.scores(b, q, kj, a.xs[2], a.xs.get(3).copied())?;
        let sd = b.dims(ch.scores)?.to_vec();
        // The chunk's probabilities, recomputed: exp(s - max) / sum.
        let shift = expand_trailing(b, mx, &sd)?;
        let e = b.sub(ch.scores, shift)?;
        let e = b.exp(e)?;
        let lb = expand_trailing(b, l, &sd)?;
        let prob = b.div(e, lb)?; // (P.., T, c)
        let dv = b.dot_general(prob, dy, p.dot(r - 2, r - 2), None)?; // (P.., c, hd)
        let dp = b.dot_general(dy, vj, p.dot(r - 1, r - 1), None)?; // (P.., T, c)
        let db = expand_trailing(b, dsum, &sd)?;
        let ds = b.sub(dp, db)?;
        let ds = b.mul(prob, ds)?;
        // Hidden scores are constants: no gradient flows through them.
        let ds = match ch.visible {
            Some(vis) => {
                let z = b.full(0.0, TensorType::f32(sd.clone()))?;
                b.select(vis, ds, z)?
            }
            None => ds,
        };
        let ds = b.mul_scalar(ds, 1.0 / (hd as f64).sqrt())?;
        let dqj = b.dot_general(ds, kj, p.dot(r - 1, r - 2), None)?; // (P.., T, hd)
        let dq = b.add(a.carries[0], dqj)?;
        let dk = b.dot_general(ds, q, p.dot(r - 2, r - 2), None)?; // (P.., c, hd)
        Ok((vec![dq], vec![dk, dv]))
    })?;
    let dk = p.unchunk(g, out.ys[0])?;
    let dv = p.unchunk(g, out.ys[1])?;
    let mut res = vec![Some(out.carries[0]), Some(dk), Some(dv)];
    if xs.len() > 3 {
        res.push(None);
    }
    Ok(res)
}
