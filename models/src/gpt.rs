//! GPT-2 style decoder, written like nanoGPT: token + position embeddings, pre-LayerNorm
//! blocks of causal multi-head self-attention and a GELU MLP (4×), final LayerNorm, tied or
//! untied head. GPT-2 initialisation: normal(0.02), residual projections scaled by
//! 1/sqrt(2·layers).

use graph::{DType, DotDims, Graph, NodeId, TensorType};
use nn::attention::{AttentionKernel, MultiHeadAttention, MultiHeadAttentionW, QkvLayout};
use nn::axis::{BATCH, EMBED, NONE, VOCAB};
use nn::linear::Linear;
use nn::mlp::{Gelu, Mlp, MlpW};
use nn::norm::{LayerNorm, LayerNormW};
use nn::reversible::{Rebind, RevBlocks};
use nn::{repeated, AttentionConfig, Dropout, Embedding, Forward, Init, Mode, Model, Params};
use serde::{Deserialize, Serialize};

mod decode;

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
    /// The attention kernel (`{ kind = "dense" }` by default; see `nn::kernels`).
    #[serde(default)]
    pub attention: AttentionConfig,
    /// Reversible residual blocks (Reformer): the backward pass rebuilds each block's
    /// inputs from its outputs instead of keeping activations.
    #[serde(default)]
    pub reversible: bool,
    /// The MLP applied to `ff_chunks` slices of the sequence, one after the other.
    #[serde(default = "one")]
    pub ff_chunks: usize,
}

fn default_vocab() -> usize {
    256
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}

pub struct Gpt(pub GptConfig);

/// One block's layers.
struct Block {
    ln1: LayerNormW,
    attn: MultiHeadAttentionW,
    ln2: LayerNormW,
    mlp: MlpW,
}

impl Rebind for Block {
    fn nodes(&self, out: &mut Vec<NodeId>) {
        self.ln1.nodes(out);
        self.attn.nodes(out);
        self.ln2.nodes(out);
        self.mlp.nodes(out);
    }
    fn rebind(&self, ids: &mut dyn Iterator<Item = NodeId>) -> Self {
        Block {
            ln1: self.ln1.rebind(ids),
            attn: self.attn.rebind(ids),
            ln2: self.ln2.rebind(ids),
            mlp: self.mlp.rebind(ids),
        }
    }
}

impl Gpt {
    fn norm(&self) -> LayerNorm {
        LayerNorm::new(1e-5).axis(EMBED).names("g", "b")
    }

    fn drop(&self) -> Dropout {
        Dropout {
            rate: self.0.dropout,
        }
    }

    /// The configured attention kernel, causal.
    fn kernel(&self) -> graph::Result<AttentionKernel> {
        let c = &self.0;
        c.attention
            .kernel(true, c.seq_len, "model.attention")
            .map_err(graph::GraphError::Invalid)
    }

    /// Declares one block's parameters in the current scope.
    fn declare_block(&self, g: &mut Graph, p: &mut Params) -> graph::Result<Block> {
        let c = &self.0;
        let d = c.d_model as i64;
        let proj_std = 0.02 / (2.0 * c.n_layers as f64).sqrt();
        let attn = MultiHeadAttention {
            d_model: d,
            n_heads: c.n_heads as i64,
            kernel: self.kernel()?,
            qkv_layout: QkvLayout::Fused,
            dropout: c.dropout,
            qkv_std: 0.02,
            proj_std,
        };
        let mlp = Mlp {
            d_model: d,
            hidden: 4 * d,
            gelu: Gelu::Tanh,
            fc_std: 0.02,
            proj_std,
        };
        Ok(Block {
            ln1: self.norm().declare(g, p, "ln1", d)?,
            attn: attn.declare(g, p, "attn")?,
            ln2: self.norm().declare(g, p, "ln2", d)?,
            mlp: mlp.declare(g, p, "mlp")?,
        })
    }

    /// One pre-LayerNorm block on `x (B, T, D)`.
    fn block(
        &self,
        g: &mut Graph,
        b: &Block,
        x: NodeId,
        seed: Option<NodeId>,
        salt: &mut u32,
    ) -> graph::Result<NodeId> {
        let a = self.attn_branch(g, b, x, seed, salt)?;
        let x = g.add(x, a)?;
        let m = self.mlp_branch(g, b, x, seed, salt)?;
        let x = g.add(x, m)?;
        g.logical_axes(x, &[BATCH, NONE, EMBED])
    }

    /// dropout(attn(ln1(x))) `(B, T, D)`.
    fn attn_branch(
        &self,
        g: &mut Graph,
        b: &Block,
        x: NodeId,
        seed: Option<NodeId>,
        salt: &mut u32,
    ) -> graph::Result<NodeId> {
        let h = b.ln1.apply(g, x)?;
        let a = b.attn.apply(g, h, seed, salt)?; // (B, T, D)
        self.drop().apply(g, a, seed, salt)
    }

    /// dropout(mlp(ln2(x))) `(B, T, D)`, over `ff_chunks` slices of T.
    fn mlp_branch(
        &self,
        g: &mut Graph,
        b: &Block,
        x: NodeId,
        seed: Option<NodeId>,
        salt: &mut u32,
    ) -> graph::Result<NodeId> {
        let h = b.ln2.apply(g, x)?;
        let n = self.0.ff_chunks.max(1) as i64;
        let m = if n == 1 {
            b.mlp.apply(g, h)? // (B, T, D)
        } else {
            let len = self.0.seq_len as i64 / n;
            let parts: Vec<NodeId> = (0..n)
                .map(|i| {
                    let hi = g.slice_dim(h, 1, i * len, (i + 1) * len)?;
                    b.mlp.apply(g, hi)
                })
                .collect::<graph::Result<_>>()?;
            g.concatenate(&parts, 1)?
        };
        self.drop().apply(g, m, seed, salt)
    }

    /// The blocks as a reversible stack: both streams start at `x`, the output is their
    /// mean. Block `i`'s dropout salts are fixed by `i`, so the backward pass's recomputation
    /// draws the forward's masks.
    fn reversible_blocks(
        &self,
        g: &mut Graph,
        p: &mut Params,
        x: NodeId,
        seed: Option<NodeId>,
    ) -> graph::Result<NodeId> {
        if p.repeat.0.is_some() {
            return Err(graph::GraphError::Invalid(
                "model.reversible = true does not combine with a pipeline (parallel.pipeline)"
                    .into(),
            ));
        }
        let blocks: Vec<Block> = (0..self.0.n_layers)
            .map(|i| p.scope(&format!("h{i}"), |p| self.declare_block(g, p)))
            .collect::<graph::Result<_>>()?;
        let salt_of = |i: usize, branch: u32| ((i as u32 + 1) << 16) | (branch << 12);
        let f = |g: &mut Graph, i: usize, b: &Block, ex: &[NodeId], x: NodeId| {
            self.attn_branch(g, b, x, ex.first().copied(), &mut salt_of(i, 1))
        };
        let h = |g: &mut Graph, i: usize, b: &Block, ex: &[NodeId], x: NodeId| {
            self.mlp_branch(g, b, x, ex.first().copied(), &mut salt_of(i, 2))
        };
        let stack = RevBlocks {
            blocks: &blocks,
            f: &f,
            g: &h,
        };
        let extras: Vec<NodeId> = seed.into_iter().collect();
        let (y1, y2) = stack.reversible(g, x, x, &extras)?;
        let y = g.add(y1, y2)?;
        let y = g.mul_scalar(y, 0.5)?;
        g.logical_axes(y, &[BATCH, NONE, EMBED])
    }

    /// Logits `(B, T, V)` of token ids `(B, T)`; `seed` enables dropout.
    pub fn logits(
        &self,
        g: &mut Graph,
        p: &mut Params,
        tokens: NodeId,
        seed: Option<NodeId>,
    ) -> graph::Result<NodeId> {
        let c = &self.0;
        let (t, d, v) = (c.seq_len as i64, c.d_model as i64, c.vocab_size as i64);
        let normal = Init::Normal { std: 0.02 };
        let wte = Embedding::new(v, d, normal)
            .axes(&[VOCAB, EMBED])
            .declare(g, p, "wte")?;
        let wpe = Embedding::new(t, d, normal)
            .axes(&[NONE, EMBED])
            .declare(g, p, "wpe")?;
        let tok = g.gather(wte, tokens)?; // (B, T, D)
        let x = g.add(tok, wpe)?;
        let x = g.logical_axes(x, &[BATCH, NONE, EMBED])?;
        let mut salt = 0u32;
        let x = self.drop().apply(g, x, seed, &mut salt)?;
        // The blocks: each a region (the unit remat recomputes), pipelined by the trainer.
        let x = if c.reversible {
            self.reversible_blocks(g, p, x, seed)?
        } else {
            repeated(
                g,
                p,
                "h",
                c.n_layers,
                x,
                |g, p| self.declare_block(g, p),
                |g, b, x| self.block(g, b, x, seed, &mut salt),
            )?
        };
        let ln_f = self.norm().declare(g, p, "ln_f", d)?;
        let x = ln_f.apply(g, x)?;
        let logits = if c.tied_head {
            // x (B, T, D) · wte (V, D) over D
            g.dot_general(x, wte, DotDims::contract(&[2], &[1]), None)?
        } else {
            let head = Linear::new([v])
                .init(normal)
                .axes(&[EMBED, VOCAB])
                .bias(false)
                .names("lm_head", "")
                .declare(g, p, "", d)?;
            head.apply(g, x)? // (B, T, V)
        };
        g.logical_axes(logits, &[BATCH, NONE, VOCAB])
    }

    pub fn validate(&self) -> Result<(), String> {
        let c = &self.0;
        if c.d_model == 0 {
            return Err("model.d_model must be positive".into());
        }
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
        if c.ff_chunks == 0 || !c.seq_len.is_multiple_of(c.ff_chunks) {
            return Err(format!(
                "model.ff_chunks ({}) must be at least 1 and divide model.seq_len ({})",
                c.ff_chunks, c.seq_len
            ));
        }
        c.attention
            .kernel(true, c.seq_len, "model.attention")
            .and_then(|_| c.attention.check_dropout(c.dropout, "model.dropout"))?;
        Ok(())
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
        Ok(self.forward_logits(g, p, batch, mode)?.0)
    }

    fn forward_logits(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<(Forward, Option<NodeId>)> {
        self.validate().map_err(graph::GraphError::Invalid)?;
        let (b, t) = (batch as i64, self.0.seq_len as i64);
        let tokens = g.input("tokens", TensorType::new(DType::I32, [b, t]))?;
        let targets = g.input("targets", TensorType::new(DType::I32, [b, t]))?;
        // LSH draws its rotations from the step's seed too.
        let random = self.0.dropout > 0.0 || self.0.attention.needs_seed();
        let seed = if mode == Mode::Train && random {
            Some(g.input("dropout_seed", TensorType::scalar(DType::U32))?)
        } else {
            None
        };
        let logits = self.logits(g, p, tokens, seed)?; // (B, T, V)
        let nll = g.softmax_cross_entropy(logits, targets)?; // (B, T)
        let loss = g.mean_all(nll)?;
        let per_window = g.mean(nll, &[1])?; // (B,)
        let fwd = Forward {
            inputs: vec![tokens, targets],
            loss,
            per_example: vec![("loss".into(), per_window)],
            rng_seed: seed,
            updates: Vec::new(),
        };
        Ok((fwd, Some(logits)))
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
            attention: AttentionConfig::Dense,
            reversible: false,
            ff_chunks: 1,
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
        let logits = model.logits(&mut g, &mut p, tokens, None).unwrap();
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
}
