//! Multi-head self-attention with a pluggable kernel: the layer owns the projections
//! (one fused qkv weight, one output projection), the kernel turns (q, k, v) into the
//! attended values. Kernels share one signature, so new ones (chunked, local, ...) are
//! variants of [`AttentionKernel`], not copies of the layer.

use graph::{DType, DotDims, Graph, NodeId, TensorType};

use crate::dropout::Dropout;
use crate::linear::{Linear, LinearW};
use crate::param::axis::{Axis, BATCH, EMBED, HEADS, NONE};
use crate::param::{Init, Weights};

/// How attention probabilities are computed from q, k, v `(.., H, T, hd)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttentionKernel {
    /// softmax(q kᵀ / sqrt(hd) + mask) v, materializing the `(T, T)` scores.
    Dense { causal: bool },
}

#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    pub d_model: i64,
    pub n_heads: i64,
    pub kernel: AttentionKernel,
    /// Dropout on the attention probabilities.
    pub dropout: f64,
    /// Init std of the qkv and output projections (GPT-2: 0.02 and 0.02 / sqrt(2 L)).
    pub qkv_std: f64,
    pub proj_std: f64,
}

#[derive(Debug, Clone)]
pub struct MultiHeadAttentionW {
    pub cfg: MultiHeadAttention,
    pub qkv: LinearW,
    pub proj: LinearW,
}

impl MultiHeadAttention {
    /// Declares `qkv.w (D, 3, H, hd)` and `proj.w (D, D)` (with biases) under `name`.
    #[track_caller]
    pub fn declare<W: Weights + ?Sized>(
        &self,
        g: &mut Graph,
        w: &mut W,
        name: &str,
    ) -> graph::Result<MultiHeadAttentionW> {
        let (d, h) = (self.d_model, self.n_heads);
        if h <= 0 || d % h != 0 {
            return Err(graph::GraphError::Invalid(format!(
                "attention: d_model ({d}) must be a positive multiple of n_heads ({h})"
            )));
        }
        w.push_scope(name);
        // One (D, 3, H, hd) weight, so tensor parallelism splits it by head (Megatron's
        // column-parallel layer); its values are those of a (D, 3D) matrix.
        let qkv = Linear::new([3, h, d / h])
            .init(Init::Normal { std: self.qkv_std })
            .axes(&[EMBED, NONE, HEADS, NONE])
            .names("w", "b")
            .declare(g, w, "qkv", d);
        // Row-parallel: each device's heads give a partial sum, all-reduced by XLA.
        let proj = match &qkv {
            Ok(_) => Some(
                Linear::new([d])
                    .init(Init::Normal { std: self.proj_std })
                    .axes(&[HEADS, EMBED])
                    .names("w", "b")
                    .declare(g, w, "proj", d),
            ),
            Err(_) => None,
        };
        w.pop_scope();
        Ok(MultiHeadAttentionW {
            cfg: self.clone(),
            qkv: qkv?,
            proj: proj.transpose()?.expect("declared with qkv"),
        })
    }
}

impl MultiHeadAttentionW {
    /// Self-attention of `x (.., T, D)`; `seed` enables dropout on the probabilities.
    #[track_caller]
    pub fn apply(
        &self,
        g: &mut Graph,
        x: NodeId,
        seed: Option<NodeId>,
        salt: &mut u32,
    ) -> graph::Result<NodeId> {
        let xd = g.dims(x)?.to_vec();
        let r = xd.len();
        if r < 2 {
            return Err(graph::GraphError::Invalid(format!(
                "attention needs (.., T, D) input, got {xd:?}"
            )));
        }
        let (lead, t) = (xd[..r - 2].to_vec(), xd[r - 2]);
        let (d, h) = (self.cfg.d_model, self.cfg.n_heads);
        let hd = d / h;
        let n = lead.len();
        let with_lead = |rest: &[i64]| -> Vec<i64> {
            let mut v = lead.clone();
            v.extend_from_slice(rest);
            v
        };
        // (lead.., T, X, Y) <-> (lead.., X, T, Y)
        let mut swap: Vec<usize> = (0..n).collect();
        swap.extend([n + 1, n, n + 2]);
        let qkv = self.qkv.apply(g, x)?; // (lead.., T, 3, H, hd)
        let mut heads = [qkv; 3];
        for (i, s) in heads.iter_mut().enumerate() {
            let i = i as i64;
            let v = g.slice_dim(qkv, n + 1, i, i + 1)?;
            let v = g.reshape(v, with_lead(&[t, h, hd]))?;
            let v = g.transpose(v, &swap)?; // (lead.., H, T, hd)
            *s = g.logical_axes(v, &lead_axes(n, &[BATCH, HEADS, NONE, NONE]))?;
        }
        let [q, k, v] = heads;
        let y = match self.cfg.kernel {
            AttentionKernel::Dense { causal } => {
                let drop = Dropout {
                    rate: self.cfg.dropout,
                };
                dense_attention(g, q, k, v, causal, |g, p| drop.apply(g, p, seed, salt))?
            }
        }; // (lead.., H, T, hd)
        let y = g.transpose(y, &swap)?; // (lead.., T, H, hd)
        let y = g.reshape(y, with_lead(&[t, d]))?;
        self.proj.apply(g, y)
    }
}

/// Logical axes `rest` after `n - 1` unnamed extra leading dims (rest names the batch dim).
fn lead_axes(n: usize, rest: &[Axis]) -> Vec<Axis> {
    let mut v = vec![NONE; n.saturating_sub(1)];
    v.extend_from_slice(rest);
    v
}

/// softmax(q kᵀ / sqrt(hd) [+ causal mask]) v over q, k, v `(lead.., T, hd)`; `probs` is
/// applied to the probabilities (dropout).
#[track_caller]
pub fn dense_attention(
    g: &mut Graph,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    causal: bool,
    probs: impl FnOnce(&mut Graph, NodeId) -> graph::Result<NodeId>,
) -> graph::Result<NodeId> {
    let qd = g.dims(q)?.to_vec();
    let r = qd.len();
    let (t, hd) = (qd[r - 2], qd[r - 1]);
    let batch = |lc: usize, rc: usize| DotDims {
        lhs_batch: (0..r - 2).collect(),
        rhs_batch: (0..r - 2).collect(),
        lhs_contract: vec![lc],
        rhs_contract: vec![rc],
    };
    let att = g.dot_general(q, k, batch(r - 1, r - 1), None)?; // (lead.., T, T)
    let att = g.mul_scalar(att, 1.0 / (hd as f64).sqrt())?;
    let att = if causal {
        // Key position > query position gets a large negative score.
        let rows = g.iota(TensorType::new(DType::I32, [t, t]), 0)?;
        let cols = g.iota(TensorType::new(DType::I32, [t, t]), 1)?;
        let visible = g.ge(rows, cols)?; // (T, T)
        let full = g.dims(att)?.to_vec();
        let visible = g.broadcast_to(visible, &full)?;
        let neg = g.full(-1e9, TensorType::f32(full))?;
        g.select(visible, att, neg)?
    } else {
        att
    };
    let att = g.softmax(att, r - 1)?;
    let att = probs(g, att)?;
    g.dot_general(att, v, batch(r - 1, r - 2), None) // (lead.., T, hd)
}
