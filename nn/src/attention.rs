//! Multi-head self-attention with a pluggable kernel: the layer owns the projections
//! (one fused qkv weight, or separate q, k, v as in HF BERT; one output projection), the
//! kernel turns (q, k, v) and an optional key padding mask into the attended values. Kernels share one signature, so new ones (chunked, local, ...) are
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
    /// Exact, `chunk` keys at a time ([`crate::kernels::chunked`]).
    Chunked { causal: bool, chunk: i64 },
    /// The last `window` keys (causal) or ±window/2, in blocks of `block`
    /// ([`crate::kernels::local`]).
    Local {
        causal: bool,
        window: i64,
        block: i64,
    },
    /// BigBird's neighbour + global + random blocks ([`crate::kernels::block_sparse`]).
    BlockSparse {
        causal: bool,
        block: i64,
        global: i64,
        random: i64,
        seed: u64,
    },
    /// Rows then columns of a `rows x cols` grid ([`crate::kernels::axial`]).
    Axial { causal: bool, rows: i64, cols: i64 },
    /// Reformer's LSH attention, shared QK ([`crate::kernels::lsh`]).
    Lsh {
        causal: bool,
        bucket_size: i64,
        n_hashes: i64,
    },
}

/// How the q, k, v projections are stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QkvLayout {
    /// One `qkv.w (D, 3, H, hd)` (GPT-2's `c_attn`).
    Fused,
    /// `q.w`, `k.w`, `v.w`, each `(D, H, hd)` (BERT's query/key/value).
    Separate,
}

#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    pub d_model: i64,
    pub n_heads: i64,
    pub kernel: AttentionKernel,
    pub qkv_layout: QkvLayout,
    /// Dropout on the attention probabilities.
    pub dropout: f64,
    /// Init std of the qkv and output projections (GPT-2: 0.02 and 0.02 / sqrt(2 L)).
    pub qkv_std: f64,
    pub proj_std: f64,
}

#[derive(Debug, Clone)]
pub struct MultiHeadAttentionW {
    pub cfg: MultiHeadAttention,
    /// The fused qkv, or q, k, v (see [`QkvLayout`]).
    pub qkv: Vec<LinearW>,
    pub proj: LinearW,
}

impl MultiHeadAttention {
    /// Declares `qkv.w (D, 3, H, hd)` (or `q.w`, `k.w`, `v.w (D, H, hd)`) and
    /// `proj.w (D, D)`, with biases, under `name`.
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
        // Heads get their own dim, so tensor parallelism splits by head (Megatron's
        // column-parallel layer); the fused weight's values are those of a (D, 3D) matrix.
        let init = Init::Normal { std: self.qkv_std };
        let qkv: graph::Result<Vec<LinearW>> = match self.qkv_layout {
            QkvLayout::Fused => Linear::new([3, h, d / h])
                .init(init)
                .axes(&[EMBED, NONE, HEADS, NONE])
                .names("w", "b")
                .declare(g, w, "qkv", d)
                .map(|l| vec![l]),
            QkvLayout::Separate => {
                // A loop, not a closure: `#[track_caller]` then names the model line.
                let mut v = Vec::new();
                for n in ["q", "k", "v"] {
                    let l = Linear::new([h, d / h])
                        .init(init)
                        .axes(&[EMBED, HEADS, NONE])
                        .names("w", "b")
                        .declare(g, w, n, d);
                    match l {
                        Ok(l) => v.push(l),
                        Err(e) => {
                            w.pop_scope();
                            return Err(e);
                        }
                    }
                }
                Ok(v)
            }
        };
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
        self.apply_masked(g, x, None, seed, salt)
    }

    /// Like [`Self::apply`], with `key_mask (B, T)` bool (true: a real token) hiding padded
    /// keys from every query.
    #[track_caller]
    pub fn apply_masked(
        &self,
        g: &mut Graph,
        x: NodeId,
        key_mask: Option<NodeId>,
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
        let fused = match self.qkv.as_slice() {
            [qkv] => Some(qkv.apply(g, x)?), // (lead.., T, 3, H, hd)
            _ => None,
        };
        let mut heads = [x; 3];
        for (i, s) in heads.iter_mut().enumerate() {
            let v = match fused {
                Some(qkv) => {
                    let i = i as i64;
                    let v = g.slice_dim(qkv, n + 1, i, i + 1)?;
                    g.reshape(v, with_lead(&[t, h, hd]))?
                }
                None => self.qkv[i].apply(g, x)?, // (lead.., T, H, hd)
            };
            let v = g.transpose(v, &swap)?; // (lead.., H, T, hd)
            *s = g.logical_axes(v, &lead_axes(n, &[BATCH, HEADS, NONE, NONE]))?;
        }
        let [q, k, v] = heads;
        let drop = Dropout {
            rate: self.cfg.dropout,
        };
        // LSH's rotations take their own salt, before the dropout masks take theirs.
        let lsh_salt = match self.cfg.kernel {
            AttentionKernel::Lsh { .. } => {
                *salt += 1;
                *salt
            }
            _ => 0,
        };
        let mut probs = |g: &mut Graph, p: NodeId| drop.apply(g, p, seed, salt);
        use crate::kernels::{axial, block_sparse, chunked, local, lsh};
        let y = match self.cfg.kernel {
            AttentionKernel::Dense { causal } => {
                dense_attention(g, q, k, v, causal, key_mask, probs)?
            }
            AttentionKernel::Chunked { causal, chunk } => {
                if seed.is_some() && self.cfg.dropout > 0.0 {
                    return Err(graph::GraphError::Invalid(format!(
                        "chunked attention has no dropout on its probabilities (dropout {})",
                        self.cfg.dropout
                    )));
                }
                chunked::chunked_attention(g, q, k, v, causal, chunk, key_mask)?
            }
            AttentionKernel::Local {
                causal,
                window,
                block,
            } => local::local_attention(g, q, k, v, causal, window, block, key_mask, &mut probs)?,
            AttentionKernel::BlockSparse {
                causal,
                block,
                global,
                random,
                seed: pattern_seed,
            } => {
                let pattern =
                    block_sparse::Pattern::new(t, block, global, random, causal, pattern_seed);
                block_sparse::block_sparse_attention(g, q, k, v, &pattern, key_mask, &mut probs)?
            }
            AttentionKernel::Axial { causal, rows, cols } => {
                axial::axial_attention(g, q, k, v, causal, rows, cols, key_mask, &mut probs)?
            }
            AttentionKernel::Lsh {
                causal,
                bucket_size,
                n_hashes,
            } => {
                let lsh = lsh::Lsh {
                    causal,
                    bucket_size,
                    n_hashes,
                };
                let rng = lsh::rotation_seed(g, seed)?;
                lsh.apply(g, q, v, key_mask, rng, lsh_salt, &mut probs)?
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

/// softmax(q kᵀ / sqrt(hd) [+ causal mask] [+ key mask]) v over q, k, v `(B, .., T, hd)`;
/// `key_mask (B, T)` bool is true at real tokens; `probs` is applied to the probabilities
/// (dropout).
#[track_caller]
pub fn dense_attention(
    g: &mut Graph,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    causal: bool,
    key_mask: Option<NodeId>,
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
    let att = match key_mask {
        // A masked key scores -1e9: exp underflows to exactly 0, as HF's finfo.min does.
        Some(m) => {
            let full = g.dims(att)?.to_vec();
            let m = g.broadcast_in_dim(m, full.clone(), &[0, r - 1])?;
            let neg = g.full(-1e9, TensorType::f32(full))?;
            g.select(m, att, neg)?
        }
        None => att,
    };
    let att = g.softmax(att, r - 1)?;
    let att = probs(g, att)?;
    g.dot_general(att, v, batch(r - 1, r - 2), None) // (lead.., T, hd)
}
