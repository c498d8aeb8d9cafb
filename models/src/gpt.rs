//! GPT-2 style decoder, written like nanoGPT: token + position embeddings, pre-LayerNorm
//! blocks of causal multi-head self-attention and a GELU MLP (4×), final LayerNorm, tied or
//! untied head. GPT-2 initialisation: normal(0.02), residual projections scaled by
//! 1/sqrt(2·layers).

use graph::{DType, DotDims, Graph, NodeId, TensorType};
use serde::{Deserialize, Serialize};

use crate::param::axis::{Axis, BATCH, EMBED, HEADS, MLP, NONE, STAGE, VOCAB};
use crate::param::{Init, Params};
use crate::{Forward, Mode, Model, Pipeline};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Vocabulary size (256 for bytes; set from the tokenizer otherwise).
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// Context length (tokens per training window).
    pub seq_len: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    #[serde(default)]
    pub dropout: f64,
    /// Share the token embedding with the output head.
    #[serde(default = "yes")]
    pub tied_head: bool,
}

fn default_vocab() -> usize {
    256
}
fn yes() -> bool {
    true
}

pub struct Gpt(pub GptConfig);

/// A layer's two parameters: (weight, bias) or (gain, shift).
type Pair = (NodeId, NodeId);

/// One block's parameters. Stacked over pipeline stages, each has a leading stage dim.
#[derive(Debug, Clone, Copy)]
struct BlockParams {
    ln1: Pair,
    qkv: Pair,
    attn_proj: Pair,
    ln2: Pair,
    fc: Pair,
    mlp_proj: Pair,
}

impl BlockParams {
    fn all(&self) -> [NodeId; 12] {
        let p = [
            self.ln1,
            self.qkv,
            self.attn_proj,
            self.ln2,
            self.fc,
            self.mlp_proj,
        ];
        std::array::from_fn(|i| if i % 2 == 0 { p[i / 2].0 } else { p[i / 2].1 })
    }

    fn from_all(v: &[NodeId]) -> Self {
        BlockParams {
            ln1: (v[0], v[1]),
            qkv: (v[2], v[3]),
            attn_proj: (v[4], v[5]),
            ln2: (v[6], v[7]),
            fc: (v[8], v[9]),
            mlp_proj: (v[10], v[11]),
        }
    }
}

/// The leading dims of a block's activations: `[B]`, or `[S, mb]` when the block runs on
/// every pipeline stage at once (its parameters then have a leading stage dim).
struct Lead {
    dims: Vec<i64>,
    staged: bool,
}

impl Lead {
    /// Logical axes of an activation whose dims after the stage dim are named `rest`.
    fn axes(&self, rest: &[Axis]) -> Vec<Axis> {
        let mut v = if self.staged { vec![STAGE] } else { vec![] };
        v.extend_from_slice(rest);
        v
    }

    /// A per-layer vector `v` shaped to broadcast against activations of rank `rank`:
    /// stacked `[S, rest..]` becomes `[S, 1.., rest..]`.
    fn bcast(&self, g: &mut Graph, v: NodeId, rank: usize) -> graph::Result<NodeId> {
        if !self.staged {
            return Ok(v);
        }
        let d = g.dims(v)?.to_vec();
        let mut to = vec![d[0]];
        to.extend(std::iter::repeat_n(1, rank - d.len()));
        to.extend(&d[1..]);
        g.reshape(v, to)
    }

    /// `x (lead.., d_in) · w (d_in, out..) + b`, per stage when staged.
    fn linear(&self, g: &mut Graph, x: NodeId, (w, b): Pair) -> graph::Result<NodeId> {
        let r = g.rank(x)?;
        let dims = if self.staged {
            DotDims {
                lhs_batch: vec![0],
                rhs_batch: vec![0],
                lhs_contract: vec![r - 1],
                rhs_contract: vec![1],
            }
        } else {
            DotDims::contract(&[r - 1], &[0])
        };
        let y = g.dot_general(x, w, dims, None)?;
        let rank = g.rank(y)?;
        let b = self.bcast(g, b, rank)?;
        g.add(y, b)
    }

    fn layer_norm(&self, g: &mut Graph, x: NodeId, (gamma, beta): Pair) -> graph::Result<NodeId> {
        let r = g.rank(x)?;
        let gamma = self.bcast(g, gamma, r)?;
        let beta = self.bcast(g, beta, r)?;
        g.layer_norm(x, gamma, beta, 1e-5)
    }
}

/// Declares a linear layer's `w (d_in, out..)` with GPT-2 init (`std`) and zero `b (out..)`;
/// `axes` are the logical axes of `w`.
fn linear_params(
    g: &mut Graph,
    p: &mut Params,
    name: &str,
    w_dims: &[i64],
    std: f64,
    axes: &[Axis],
) -> graph::Result<Pair> {
    p.scope(name, |p| -> graph::Result<_> {
        let w = p.declare_axes(
            g,
            "w",
            TensorType::f32(w_dims.to_vec()),
            Init::Normal { std },
            axes,
        )?;
        let b = p.declare_axes(
            g,
            "b",
            TensorType::f32(w_dims[1..].to_vec()),
            Init::Zeros,
            &axes[1..],
        )?;
        Ok((w, b))
    })
}

fn norm_params(g: &mut Graph, p: &mut Params, name: &str, d: i64) -> graph::Result<Pair> {
    p.scope(name, |p| -> graph::Result<_> {
        let gamma = p.declare_axes(g, "g", TensorType::f32([d]), Init::Ones, &[EMBED])?;
        let beta = p.declare_axes(g, "b", TensorType::f32([d]), Init::Zeros, &[EMBED])?;
        Ok((gamma, beta))
    })
}

impl Gpt {
    fn dropout(
        &self,
        g: &mut Graph,
        x: NodeId,
        seed: Option<NodeId>,
        salt: &mut u32,
    ) -> graph::Result<NodeId> {
        match seed {
            Some(s) if self.0.dropout > 0.0 => {
                *salt += 1;
                g.dropout(x, self.0.dropout, s, *salt)
            }
            _ => Ok(x),
        }
    }

    /// Declares one block's parameters in the current scope.
    fn declare_block(&self, g: &mut Graph, p: &mut Params) -> graph::Result<BlockParams> {
        let c = &self.0;
        let (d, h) = (c.d_model as i64, c.n_heads as i64);
        let proj_std = 0.02 / (2.0 * c.n_layers as f64).sqrt();
        let ln1 = norm_params(g, p, "ln1", d)?;
        let (qkv, attn_proj) = p.scope("attn", |p| -> graph::Result<_> {
            // One (D, 3, H, hd) weight, so tensor parallelism splits it by head (Megatron's
            // column-parallel layer); its values are those of a (D, 3D) matrix.
            let qkv = linear_params(
                g,
                p,
                "qkv",
                &[d, 3, h, d / h],
                0.02,
                &[EMBED, NONE, HEADS, NONE],
            )?;
            // Row-parallel: each device's heads give a partial sum, all-reduced by XLA.
            let proj = linear_params(g, p, "proj", &[d, d], proj_std, &[HEADS, EMBED])?;
            Ok((qkv, proj))
        })?;
        let ln2 = norm_params(g, p, "ln2", d)?;
        let (fc, mlp_proj) = p.scope("mlp", |p| -> graph::Result<_> {
            let fc = linear_params(g, p, "fc", &[d, 4 * d], 0.02, &[EMBED, MLP])?;
            let proj = linear_params(g, p, "proj", &[4 * d, d], proj_std, &[MLP, EMBED])?;
            Ok((fc, proj))
        })?;
        Ok(BlockParams {
            ln1,
            qkv,
            attn_proj,
            ln2,
            fc,
            mlp_proj,
        })
    }

    /// Causal self-attention of `x (lead.., T, D)`.
    fn attention(
        &self,
        g: &mut Graph,
        bp: &BlockParams,
        x: NodeId,
        lead: &Lead,
        seed: Option<NodeId>,
        salt: &mut u32,
    ) -> graph::Result<NodeId> {
        let c = &self.0;
        let (t, d, h) = (c.seq_len as i64, c.d_model as i64, c.n_heads as i64);
        let hd = d / h;
        let n = lead.dims.len();
        let with_lead = |rest: &[i64]| -> Vec<i64> {
            let mut v = lead.dims.clone();
            v.extend_from_slice(rest);
            v
        };
        // (lead.., T, X, Y) <-> (lead.., X, T, Y)
        let mut swap: Vec<usize> = (0..n).collect();
        swap.extend([n + 1, n, n + 2]);
        let qkv = lead.linear(g, x, bp.qkv)?; // (lead.., T, 3, H, hd)
        let heads = |g: &mut Graph, i: i64| -> graph::Result<NodeId> {
            let s = g.slice_dim(qkv, n + 1, i, i + 1)?;
            let s = g.reshape(s, with_lead(&[t, h, hd]))?;
            let s = g.transpose(s, &swap)?; // (lead.., H, T, hd)
            g.logical_axes(s, &lead.axes(&[BATCH, HEADS, NONE, NONE]))
        };
        let (q, k, v) = (heads(g, 0)?, heads(g, 1)?, heads(g, 2)?);
        let batch = |lc: usize, rc: usize| DotDims {
            lhs_batch: (0..=n).collect(),
            rhs_batch: (0..=n).collect(),
            lhs_contract: vec![lc],
            rhs_contract: vec![rc],
        };
        let att = g.dot_general(q, k, batch(n + 2, n + 2), None)?; // (lead.., H, T, T)
        let att = g.mul_scalar(att, 1.0 / (hd as f64).sqrt())?;
        // Causal mask: key position > query position gets a large negative score.
        let rows = g.iota(TensorType::new(DType::I32, [t, t]), 0)?;
        let cols = g.iota(TensorType::new(DType::I32, [t, t]), 1)?;
        let visible = g.ge(rows, cols)?; // (T, T)
        let full = with_lead(&[h, t, t]);
        let visible = g.broadcast_to(visible, &full)?;
        let neg = g.full(-1e9, TensorType::f32(full))?;
        let att = g.select(visible, att, neg)?;
        let att = g.softmax(att, n + 2)?;
        let att = self.dropout(g, att, seed, salt)?;
        let y = g.dot_general(att, v, batch(n + 2, n + 1), None)?; // (lead.., H, T, hd)
        let y = g.transpose(y, &swap)?; // (lead.., T, H, hd)
        let y = g.reshape(y, with_lead(&[t, d]))?;
        lead.linear(g, y, bp.attn_proj)
    }

    fn mlp(
        &self,
        g: &mut Graph,
        bp: &BlockParams,
        x: NodeId,
        lead: &Lead,
    ) -> graph::Result<NodeId> {
        let h = lead.linear(g, x, bp.fc)?; // (lead.., T, 4D)
        let h = g.gelu(h)?;
        let h = g.logical_axes(h, &lead.axes(&[BATCH, NONE, MLP]))?;
        lead.linear(g, h, bp.mlp_proj) // (lead.., T, D)
    }

    /// One pre-LayerNorm block on `x (lead.., T, D)`.
    fn block(
        &self,
        g: &mut Graph,
        bp: &BlockParams,
        x: NodeId,
        lead: &Lead,
        seed: Option<NodeId>,
        salt: &mut u32,
    ) -> graph::Result<NodeId> {
        let h = lead.layer_norm(g, x, bp.ln1)?;
        let a = self.attention(g, bp, h, lead, seed, salt)?;
        let a = self.dropout(g, a, seed, salt)?;
        let x = g.add(x, a)?;
        let h = lead.layer_norm(g, x, bp.ln2)?;
        let m = self.mlp(g, bp, h, lead)?;
        let m = self.dropout(g, m, seed, salt)?;
        let x = g.add(x, m)?;
        g.logical_axes(x, &lead.axes(&[BATCH, NONE, EMBED]))
    }

    /// The blocks as a GPipe pipeline over `x (B, T, D)`. Stage `s` holds layers
    /// `[sK, (s+1)K)`; their weights are stacked on a leading `stage` dim (split over the
    /// `stage` mesh axis), so one iteration runs every stage on its current microbatch at
    /// once, then rotates the states one stage on (a collective-permute once XLA partitions
    /// it). M microbatches take M + S - 1 iterations; autodiff of the unrolled loop is the
    /// backward pipeline. Exact: bubble iterations compute on values no output depends on.
    #[allow(clippy::too_many_arguments)]
    fn pipeline(
        &self,
        g: &mut Graph,
        p: &mut Params,
        x: NodeId,
        b: i64,
        seed: Option<NodeId>,
        salt: &mut u32,
        pipe: Pipeline,
    ) -> graph::Result<NodeId> {
        let c = &self.0;
        let (t, d) = (c.seq_len as i64, c.d_model as i64);
        let (s_n, m_n) = (pipe.stages, pipe.microbatches);
        if s_n == 0 || m_n == 0 || !c.n_layers.is_multiple_of(s_n) {
            return Err(graph::GraphError::Invalid(format!(
                "model.n_layers ({}) must be a multiple of the pipeline stages ({s_n}), and \
                 the microbatches ({m_n}) at least 1",
                c.n_layers
            )));
        }
        if b % m_n as i64 != 0 {
            return Err(graph::GraphError::Invalid(format!(
                "the batch ({b}) must be a multiple of the pipeline microbatches ({m_n})"
            )));
        }
        let per_stage = c.n_layers / s_n;
        let layers = (0..c.n_layers)
            .map(|l| p.scope(&format!("h{l}"), |p| self.declare_block(g, p)))
            .collect::<graph::Result<Vec<_>>>()?;
        // stacked[j]: layer j of every stage, each tensor (S, ..).
        let mut stacked = Vec::with_capacity(per_stage);
        for j in 0..per_stage {
            let mut all = Vec::with_capacity(12);
            for i in 0..12 {
                let parts = (0..s_n)
                    .map(|s| {
                        let v = layers[s * per_stage + j].all()[i];
                        let mut dims = vec![1];
                        dims.extend(g.dims(v)?);
                        g.reshape(v, dims)
                    })
                    .collect::<graph::Result<Vec<_>>>()?;
                let v = g.concatenate(&parts, 0)?;
                // The stack keeps its layers' logical axes after the stage dim.
                let first = layers[j].all()[i];
                let spec = p.specs.iter().find(|s| s.node == first);
                let layer_axes = spec.map(|s| s.axes.clone()).unwrap_or_default();
                let mut axes: Vec<Option<&str>> = vec![STAGE];
                axes.extend(layer_axes.iter().map(|a| a.as_deref()));
                axes.resize(g.rank(v)?, NONE);
                all.push(g.logical_axes(v, &axes)?);
            }
            stacked.push(BlockParams::from_all(&all));
        }
        let (s, m) = (s_n as i64, m_n as i64);
        let mb = b / m;
        let lead = Lead {
            dims: vec![s, mb],
            staged: true,
        };
        let state_axes = [STAGE, BATCH, NONE, EMBED];
        // Microbatch i is rows i, M + i, 2M + i, ..: spread over the data-parallel devices
        // like the batch itself.
        let xm = g.reshape(x, [mb, m, t, d])?;
        let xm = g.transpose(xm, &[1, 0, 2, 3])?; // (M, mb, T, D)
        let stage_ty = TensorType::f32([s, mb, t, d]);
        let stage_idx = g.iota(TensorType::new(DType::I32, [s, mb, t, d]), 0)?;
        let zero = g.full(0.0, TensorType::new(DType::I32, [s, mb, t, d]))?;
        let is_first = g.eq(stage_idx, zero)?;
        let mut state = g.full(0.0, stage_ty)?;
        let iterations = pipe.iterations() as i64;
        let mut outs = Vec::with_capacity(m_n);
        for it in 0..iterations {
            if it < m {
                // Stage 0 takes microbatch `it`.
                let xi = g.slice_dim(xm, 0, it, it + 1)?;
                let xi = g.broadcast_to(xi, &[s, mb, t, d])?;
                state = g.select(is_first, xi, state)?;
            }
            let mut y = g.logical_axes(state, &state_axes)?;
            for (j, bp) in stacked.iter().enumerate() {
                // Each stage-vectorized block is a region: the unit remat recomputes.
                y = g.region(&format!("pipe{it}.h{j}"), |g| {
                    self.block(g, bp, y, &lead, seed, salt)
                })?;
            }
            if it >= s - 1 {
                // The last stage finished microbatch it - (S - 1).
                outs.push(g.slice_dim(y, 0, s - 1, s)?);
            }
            if it + 1 < iterations {
                // Stage k takes stage k - 1's output.
                let last = g.slice_dim(y, 0, s - 1, s)?;
                let rest = g.slice_dim(y, 0, 0, s - 1)?;
                state = g.concatenate(&[last, rest], 0)?;
            }
        }
        let y = g.concatenate(&outs, 0)?; // (M, mb, T, D)
        let y = g.transpose(y, &[1, 0, 2, 3])?;
        let y = g.reshape(y, [b, t, d])?;
        g.logical_axes(y, &[BATCH, NONE, EMBED])
    }

    /// Logits `(B, T, V)` of token ids `(B, T)`; `seed` enables dropout.
    pub fn logits(
        &self,
        g: &mut Graph,
        p: &mut Params,
        tokens: NodeId,
        b: i64,
        seed: Option<NodeId>,
    ) -> graph::Result<NodeId> {
        self.logits_with(g, p, tokens, b, seed, None)
    }

    /// [`Gpt::logits`], with the blocks run as `pipe` when given.
    fn logits_with(
        &self,
        g: &mut Graph,
        p: &mut Params,
        tokens: NodeId,
        b: i64,
        seed: Option<NodeId>,
        pipe: Option<Pipeline>,
    ) -> graph::Result<NodeId> {
        let c = &self.0;
        let (t, d, v) = (c.seq_len as i64, c.d_model as i64, c.vocab_size as i64);
        let wte = p.declare_axes(
            g,
            "wte",
            TensorType::f32([v, d]),
            Init::Normal { std: 0.02 },
            &[VOCAB, EMBED],
        )?;
        let wpe = p.declare_axes(
            g,
            "wpe",
            TensorType::f32([t, d]),
            Init::Normal { std: 0.02 },
            &[NONE, EMBED],
        )?;
        let tok = g.gather(wte, tokens)?; // (B, T, D)
        let x = g.add(tok, wpe)?;
        let x = g.logical_axes(x, &[BATCH, NONE, EMBED])?;
        let mut salt = 0u32;
        let mut x = self.dropout(g, x, seed, &mut salt)?;
        match pipe {
            Some(pipe) => x = self.pipeline(g, p, x, b, seed, &mut salt, pipe)?,
            None => {
                let lead = Lead {
                    dims: vec![b],
                    staged: false,
                };
                for l in 0..c.n_layers {
                    // Each block is a region: the unit the remat pass recomputes.
                    let name = format!("h{l}");
                    let bp = p.scope(&name, |p| self.declare_block(g, p))?;
                    x = g.region(&name, |g| self.block(g, &bp, x, &lead, seed, &mut salt))?;
                }
            }
        }
        let ln_f = norm_params(g, p, "ln_f", d)?;
        let x = g.layer_norm(x, ln_f.0, ln_f.1, 1e-5)?;
        let logits = if c.tied_head {
            // x (B, T, D) · wte (V, D) over D
            g.dot_general(x, wte, DotDims::contract(&[2], &[1]), None)?
        } else {
            let w = p.declare_axes(
                g,
                "lm_head",
                TensorType::f32([d, v]),
                Init::Normal { std: 0.02 },
                &[EMBED, VOCAB],
            )?;
            g.matmul(x, w)?
        };
        g.logical_axes(logits, &[BATCH, NONE, VOCAB])
    }

    pub fn validate(&self) -> Result<(), String> {
        let c = &self.0;
        if c.n_heads == 0 || !c.d_model.is_multiple_of(c.n_heads) {
            return Err(format!(
                "model.d_model ({}) must be a multiple of model.n_heads ({})",
                c.d_model, c.n_heads
            ));
        }
        if c.seq_len == 0 || c.vocab_size == 0 || c.n_layers == 0 {
            return Err(
                "model.seq_len, model.vocab_size and model.n_layers must be positive".into(),
            );
        }
        if !(0.0..1.0).contains(&c.dropout) {
            return Err(format!(
                "model.dropout must be in [0, 1), got {}",
                c.dropout
            ));
        }
        Ok(())
    }

    fn forward_with(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
        pipe: Option<Pipeline>,
    ) -> graph::Result<Forward> {
        self.validate().map_err(graph::GraphError::Invalid)?;
        let (b, t) = (batch as i64, self.0.seq_len as i64);
        let tokens = g.input("tokens", TensorType::new(DType::I32, [b, t]))?;
        let targets = g.input("targets", TensorType::new(DType::I32, [b, t]))?;
        let seed = if mode == Mode::Train && self.0.dropout > 0.0 {
            Some(g.input("dropout_seed", TensorType::scalar(DType::U32))?)
        } else {
            None
        };
        let logits = self.logits_with(g, p, tokens, b, seed, pipe)?; // (B, T, V)
        let lse = g.logsumexp(logits, 2)?; // (B, T)
        let oh = g.one_hot(targets, self.0.vocab_size as i64, DType::F32)?;
        let picked = g.mul(logits, oh)?;
        let picked = g.reduce_sum(picked, &[2])?;
        let nll = g.sub(lse, picked)?; // (B, T)
        let loss = g.mean_all(nll)?;
        let per_window = g.mean(nll, &[1])?; // (B,)
        let stages = match pipe {
            Some(pipe) => {
                let k = self.0.n_layers / pipe.stages;
                (0..pipe.stages)
                    .map(|s| (s * k..(s + 1) * k).map(|l| format!("h{l}")).collect())
                    .collect()
            }
            None => Vec::new(),
        };
        Ok(Forward {
            inputs: vec![tokens, targets],
            loss,
            per_example: vec![("loss".into(), per_window)],
            rng_seed: seed,
            stages,
            updates: Vec::new(),
        })
    }
}

impl Model for Gpt {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward> {
        self.forward_with(g, p, batch, mode, None)
    }

    fn forward_pipelined(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
        pipe: Pipeline,
    ) -> graph::Result<Forward> {
        self.forward_with(g, p, batch, mode, Some(pipe))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> GptConfig {
        GptConfig {
            vocab_size: 11,
            seq_len: 5,
            d_model: 8,
            n_layers: 2,
            n_heads: 2,
            dropout: 0.0,
            tied_head: true,
        }
    }

    #[test]
    fn parameter_count_and_shapes() {
        let mut g = Graph::new("gpt");
        let mut p = Params::new();
        let f = Gpt(tiny()).forward(&mut g, &mut p, 3, Mode::Train).unwrap();
        graph::verify(&g).unwrap();
        let (v, t, d, l) = (11, 5, 8, 2);
        let per_block =
            2 * (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d);
        assert_eq!(p.total(), v * d + t * d + l * per_block + 2 * d);
        assert_eq!(g.dims(f.per_example[0].1).unwrap(), &[3]);
        assert!(p.specs.iter().any(|s| s.name == "h1.attn.qkv.w"));
    }

    #[test]
    fn causal_and_initial_loss_near_uniform() {
        use graph::interp::{eval, HostTensor};
        let c = tiny();
        let mut g = Graph::new("gpt");
        let mut p = Params::new();
        let model = Gpt(c.clone());
        let tokens = g
            .input("tokens", TensorType::new(DType::I32, [1, 5]))
            .unwrap();
        let logits = model.logits(&mut g, &mut p, tokens, 1, None).unwrap();
        g.set_outputs(&[logits]).unwrap();
        let mut args = vec![HostTensor::i32(&[1, 5], &[1, 2, 3, 4, 5]).unwrap()];
        for s in &p.specs {
            let v = s.initial_values(0);
            args.push(
                HostTensor::new(s.ty.clone(), v.iter().map(|&x| x as f64).collect()).unwrap(),
            );
        }
        let a = eval(&g, &args).unwrap()[0].clone();
        args[0] = HostTensor::i32(&[1, 5], &[1, 2, 3, 9, 0]).unwrap();
        let b = eval(&g, &args).unwrap()[0].clone();
        // Changing tokens 3 and 4 leaves the logits of positions 0..3 unchanged.
        let per_pos = 11;
        assert_eq!(a.data[..3 * per_pos], b.data[..3 * per_pos]);
        assert_ne!(a.data[3 * per_pos..], b.data[3 * per_pos..]);
        // Small init: logits near zero, so the loss starts near ln(V).
        assert!(a.data.iter().all(|x| x.abs() < 0.5));
    }

    /// The pipelined blocks compute the plain model's logits, for one or two layers per stage.
    #[test]
    fn pipeline_gives_the_plain_logits() {
        use graph::interp::{eval, HostTensor};
        for (layers, stages, micro) in [(2, 2, 2), (2, 2, 4), (4, 2, 2), (3, 3, 1)] {
            let c = GptConfig {
                n_layers: layers,
                ..tiny()
            };
            let model = Gpt(c);
            let b = 4;
            let run = |pipe: Option<Pipeline>| {
                let mut g = Graph::new("gpt");
                let mut p = Params::new();
                let tokens = g
                    .input("tokens", TensorType::new(DType::I32, [b, 5]))
                    .unwrap();
                let logits = model
                    .logits_with(&mut g, &mut p, tokens, b, None, pipe)
                    .unwrap();
                g.set_outputs(&[logits]).unwrap();
                graph::verify(&g).unwrap();
                let ids: Vec<i32> = (0..b as i32 * 5).map(|i| (i * 7 + 3) % 11).collect();
                let mut args = vec![HostTensor::i32(&[b, 5], &ids).unwrap()];
                for s in &p.specs {
                    let v = s.initial_values(0);
                    args.push(
                        HostTensor::new(s.ty.clone(), v.iter().map(|&x| x as f64).collect())
                            .unwrap(),
                    );
                }
                let names: Vec<String> = p.specs.iter().map(|s| s.name.clone()).collect();
                (eval(&g, &args).unwrap()[0].clone(), names)
            };
            let (plain, names) = run(None);
            let pipe = Pipeline {
                stages,
                microbatches: micro,
            };
            let (piped, piped_names) = run(Some(pipe));
            assert_eq!(names, piped_names, "same parameters");
            let diff = plain
                .data
                .iter()
                .zip(&piped.data)
                .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff < 1e-6, "{layers} layers, {pipe:?}: max diff {diff}");
        }
        let e = Gpt(tiny())
            .forward_pipelined(
                &mut Graph::new("g"),
                &mut Params::new(),
                3,
                Mode::Train,
                Pipeline {
                    stages: 2,
                    microbatches: 2,
                },
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("batch (3)") && e.contains("microbatches (2)"),
            "{e}"
        );
    }
}
