//! Composites: functions built from primitive ops, no ops of their own.
//! All are `#[track_caller]`, so their nodes point at the model's line.

use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::types::{DType, TensorType};

impl Graph {
    /// Broadcasts `r` (x reduced over `dim`) back to x's shape.
    #[track_caller]
    fn unreduce(&mut self, r: NodeId, x: NodeId, dim: usize) -> Result<NodeId> {
        let xd = self.dims(x)?.to_vec();
        let kept: Vec<usize> = (0..xd.len()).filter(|&d| d != dim).collect();
        self.broadcast_in_dim(r, xd, &kept)
    }

    #[track_caller]
    fn check_dim(&self, op: &'static str, x: NodeId, dim: usize) -> Result<()> {
        let r = self.rank(x)?;
        if dim >= r {
            return Err(self.err(op, format!("dim {dim} out of range for {}", self.ty(x)?)));
        }
        Ok(())
    }

    #[track_caller]
    pub fn relu(&mut self, x: NodeId) -> Result<NodeId> {
        let z = self.scalar_like(x, 0.0)?;
        self.max(x, z)
    }

    #[track_caller]
    pub fn sigmoid(&mut self, x: NodeId) -> Result<NodeId> {
        self.logistic(x)
    }

    /// GELU, tanh approximation (GPT-2).
    #[track_caller]
    pub fn gelu(&mut self, x: NodeId) -> Result<NodeId> {
        let x3 = self.mul(x, x)?;
        let x3 = self.mul(x3, x)?;
        let inner = self.mul_scalar(x3, 0.044715)?;
        let inner = self.add(x, inner)?;
        let inner = self.mul_scalar(inner, (2.0 / std::f64::consts::PI).sqrt())?;
        let t = self.tanh(inner)?;
        let t = self.add_scalar(t, 1.0)?;
        let hx = self.mul_scalar(x, 0.5)?;
        self.mul(hx, t)
    }

    /// GELU with erf, `x/2 (1 + erf(x/sqrt 2))` (BERT).
    #[track_caller]
    pub fn gelu_erf(&mut self, x: NodeId) -> Result<NodeId> {
        let e = self.mul_scalar(x, std::f64::consts::FRAC_1_SQRT_2)?;
        let e = self.erf(e)?;
        let e = self.add_scalar(e, 1.0)?;
        let hx = self.mul_scalar(x, 0.5)?;
        self.mul(hx, e)
    }

    /// `(m, exp(x - m), sum(exp(x - m)))` over `dim` with `m` the (gradient-free) max:
    /// the max only shifts for stability, its gradient cancels exactly.
    #[track_caller]
    fn shifted_exp(&mut self, x: NodeId, dim: usize) -> Result<(NodeId, NodeId, NodeId)> {
        let m = self.reduce_max(x, &[dim])?;
        let m = self.stop_gradient(m)?;
        let mb = self.unreduce(m, x, dim)?;
        let s = self.sub(x, mb)?;
        let e = self.exp(s)?;
        let se = self.reduce_sum(e, &[dim])?;
        Ok((m, e, se))
    }

    /// `log(sum(exp(x)))` over `dim`, computed stably.
    #[track_caller]
    pub fn logsumexp(&mut self, x: NodeId, dim: usize) -> Result<NodeId> {
        self.check_dim("logsumexp", x, dim)?;
        let (m, _, se) = self.shifted_exp(x, dim)?;
        let l = self.log(se)?;
        self.add(l, m)
    }

    #[track_caller]
    pub fn log_softmax(&mut self, x: NodeId, dim: usize) -> Result<NodeId> {
        let lse = self.logsumexp(x, dim)?;
        let lse = self.unreduce(lse, x, dim)?;
        self.sub(x, lse)
    }

    #[track_caller]
    pub fn softmax(&mut self, x: NodeId, dim: usize) -> Result<NodeId> {
        self.check_dim("softmax", x, dim)?;
        let (_, e, se) = self.shifted_exp(x, dim)?;
        let se = self.unreduce(se, x, dim)?;
        self.div(e, se)
    }

    /// `[..] ints -> [.., n]` with 1 at each label (0 for out-of-range labels).
    #[track_caller]
    pub fn one_hot(&mut self, labels: NodeId, n: i64, dtype: DType) -> Result<NodeId> {
        let lt = self.ty(labels)?.clone();
        let mut d = lt.dims().to_vec();
        d.push(n);
        let r = lt.rank();
        let iota = self.iota(TensorType::new(lt.dtype, d.clone()), r)?;
        let lb = self.broadcast_in_dim(labels, d, &(0..r).collect::<Vec<_>>())?;
        let hit = self.eq(lb, iota)?;
        self.convert(hit, dtype)
    }

    /// Mean softmax cross-entropy of `logits [.., C]` against integer
    /// `labels [..]`: logsumexp minus the labelled logit, averaged.
    #[track_caller]
    pub fn cross_entropy(&mut self, logits: NodeId, labels: NodeId) -> Result<NodeId> {
        let l = self.softmax_cross_entropy(logits, labels)?;
        self.mean_all(l)
    }

    /// Softmax cross-entropy per position: `logits [.., C]`, integer `labels [..]` ->
    /// `[..]`, logsumexp minus the labelled logit.
    #[track_caller]
    pub fn softmax_cross_entropy(&mut self, logits: NodeId, labels: NodeId) -> Result<NodeId> {
        let lt = self.ty(logits)?.clone();
        let bt = self.ty(labels)?.clone();
        if lt.rank() == 0 || bt.dims() != &lt.dims()[..lt.rank() - 1] || !bt.dtype.is_int() {
            return Err(self.err(
                "cross_entropy",
                format!("logits {lt} need integer labels of their leading dims, got {bt}"),
            ));
        }
        let c = lt.rank() - 1;
        let lse = self.logsumexp(logits, c)?;
        let oh = self.one_hot(labels, lt.dims()[c], lt.dtype)?;
        let picked = self.mul(logits, oh)?;
        let picked = self.reduce_sum(picked, &[c])?;
        self.sub(lse, picked)
    }

    /// Mean binary cross-entropy of sigmoid(logits) against targets in [0, 1].
    #[track_caller]
    pub fn sigmoid_cross_entropy(&mut self, logits: NodeId, targets: NodeId) -> Result<NodeId> {
        let l = self.sigmoid_cross_entropy_elems(logits, targets)?;
        self.mean_all(l)
    }

    /// Binary cross-entropy of sigmoid(logits) per element, stable for any logit:
    /// `max(x, 0) - x t + log1p(exp(-|x|))`.
    #[track_caller]
    pub fn sigmoid_cross_entropy_elems(
        &mut self,
        logits: NodeId,
        targets: NodeId,
    ) -> Result<NodeId> {
        let r = self.relu(logits)?;
        let xt = self.mul(logits, targets)?;
        let a = self.abs(logits)?;
        let na = self.neg(a)?;
        let e = self.exp(na)?;
        let l1 = self.log1p(e)?;
        let l = self.sub(r, xt)?;
        self.add(l, l1)
    }

    /// Layer norm over the last dim with scale `gamma` and shift `beta` `[D]`.
    #[track_caller]
    pub fn layer_norm(
        &mut self,
        x: NodeId,
        gamma: NodeId,
        beta: NodeId,
        eps: f64,
    ) -> Result<NodeId> {
        let r = self.rank(x)?;
        if r == 0 {
            return Err(self.err("layer_norm", "layer_norm of a scalar"));
        }
        let d = r - 1;
        let mu = self.mean(x, &[d])?;
        let mu = self.unreduce(mu, x, d)?;
        let xc = self.sub(x, mu)?;
        let sq = self.mul(xc, xc)?;
        let var = self.mean(sq, &[d])?;
        let var = self.add_scalar(var, eps)?;
        let inv = self.rsqrt(var)?;
        let inv = self.unreduce(inv, x, d)?;
        let y = self.mul(xc, inv)?;
        let y = self.mul(y, gamma)?;
        self.add(y, beta)
    }

    /// Inverted dropout: zeroes a `rate` fraction, scales the rest by
    /// `1 / (1 - rate)`. `seed` is a scalar integer node, `salt` tells
    /// layers apart.
    #[track_caller]
    pub fn dropout(&mut self, x: NodeId, rate: f64, seed: NodeId, salt: u32) -> Result<NodeId> {
        if !(0.0..1.0).contains(&rate) {
            return Err(self.err("dropout", format!("rate {rate} not in [0, 1)")));
        }
        if rate == 0.0 {
            return Ok(x);
        }
        let t = self.ty(x)?.clone();
        let u = self.rng_uniform(seed, salt, t.shape.clone(), t.dtype)?;
        let r = self.scalar(rate, t.dtype)?;
        let keep = self.ge(u, r)?;
        let scaled = self.mul_scalar(x, 1.0 / (1.0 - rate))?;
        let zero = self.scalar(0.0, t.dtype)?;
        self.select(keep, scaled, zero)
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Graph, TensorType};

    #[test]
    fn composite_shapes() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([4, 10])).unwrap();
        let y = g.input("y", TensorType::new(DType::I32, [4])).unwrap();
        let l = g.cross_entropy(x, y).unwrap();
        assert_eq!(g.dims(l).unwrap(), &[] as &[i64]);
        let s = g.softmax(x, 1).unwrap();
        assert_eq!(g.dims(s).unwrap(), &[4, 10]);
        let e = g.cross_entropy(x, x).unwrap_err().to_string();
        assert!(
            e.starts_with("cross_entropy at") && e.contains("f32[4,10]"),
            "{e}"
        );
        let e = g.softmax(x, 2).unwrap_err().to_string();
        assert!(e.starts_with("softmax at"), "{e}");
    }
}
