//! GPT-2 style decoder, written like nanoGPT: token + position embeddings, pre-LayerNorm
//! blocks of causal multi-head self-attention and a GELU MLP (4×), final LayerNorm, tied or
//! untied head. GPT-2 initialisation: normal(0.02), residual projections scaled by
//! 1/sqrt(2·layers).

use graph::{DType, DotDims, Graph, NodeId, TensorType};
use serde::{Deserialize, Serialize};

use crate::param::{Init, Params};
use crate::{Forward, Mode, Model};

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

/// Parameters of a linear layer `x @ w + b` with GPT-2 init (`std` for the weight).
fn linear(
    g: &mut Graph,
    p: &mut Params,
    name: &str,
    x: NodeId,
    d_in: usize,
    d_out: usize,
    std: f64,
) -> graph::Result<NodeId> {
    let (w, b) = p.scope(name, |p| -> graph::Result<_> {
        let w = p.declare(
            g,
            "w",
            TensorType::f32([d_in as i64, d_out as i64]),
            Init::Normal { std },
        )?;
        let b = p.declare(g, "b", TensorType::f32([d_out as i64]), Init::Zeros)?;
        Ok((w, b))
    })?;
    let y = g.matmul(x, w)?;
    g.add(y, b)
}

fn layer_norm(
    g: &mut Graph,
    p: &mut Params,
    name: &str,
    x: NodeId,
    d: usize,
) -> graph::Result<NodeId> {
    let (gamma, beta) = p.scope(name, |p| -> graph::Result<_> {
        let gamma = p.declare(g, "g", TensorType::f32([d as i64]), Init::Ones)?;
        let beta = p.declare(g, "b", TensorType::f32([d as i64]), Init::Zeros)?;
        Ok((gamma, beta))
    })?;
    g.layer_norm(x, gamma, beta, 1e-5)
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

    /// Causal self-attention of `x (B, T, D)`.
    fn attention(
        &self,
        g: &mut Graph,
        p: &mut Params,
        x: NodeId,
        b: i64,
        seed: Option<NodeId>,
        salt: &mut u32,
    ) -> graph::Result<NodeId> {
        let c = &self.0;
        let (t, d, h) = (c.seq_len as i64, c.d_model as i64, c.n_heads as i64);
        let hd = d / h;
        let proj_std = 0.02 / (2.0 * c.n_layers as f64).sqrt();
        let qkv = linear(g, p, "qkv", x, c.d_model, 3 * c.d_model, 0.02)?; // (B, T, 3D)
        let qkv = g.reshape(qkv, [b, t, 3, h, hd])?;
        let heads = |g: &mut Graph, i: i64| -> graph::Result<NodeId> {
            let s = g.slice_dim(qkv, 2, i, i + 1)?;
            let s = g.reshape(s, [b, t, h, hd])?;
            g.transpose(s, &[0, 2, 1, 3]) // (B, H, T, hd)
        };
        let (q, k, v) = (heads(g, 0)?, heads(g, 1)?, heads(g, 2)?);
        let batch2 = |lc: usize, rc: usize| DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 1],
            lhs_contract: vec![lc],
            rhs_contract: vec![rc],
        };
        let att = g.dot_general(q, k, batch2(3, 3), None)?; // (B, H, T, T)
        let att = g.mul_scalar(att, 1.0 / (hd as f64).sqrt())?;
        // Causal mask: key position > query position gets a large negative score.
        let rows = g.iota(TensorType::new(DType::I32, [t, t]), 0)?;
        let cols = g.iota(TensorType::new(DType::I32, [t, t]), 1)?;
        let visible = g.ge(rows, cols)?; // (T, T)
        let visible = g.broadcast_to(visible, &[b, h, t, t])?;
        let neg = g.full(-1e9, TensorType::f32([b, h, t, t]))?;
        let att = g.select(visible, att, neg)?;
        let att = g.softmax(att, 3)?;
        let att = self.dropout(g, att, seed, salt)?;
        let y = g.dot_general(att, v, batch2(3, 2), None)?; // (B, H, T, hd)
        let y = g.transpose(y, &[0, 2, 1, 3])?; // (B, T, H, hd)
        let y = g.reshape(y, [b, t, d])?;
        linear(g, p, "proj", y, c.d_model, c.d_model, proj_std)
    }

    fn mlp(&self, g: &mut Graph, p: &mut Params, x: NodeId) -> graph::Result<NodeId> {
        let c = &self.0;
        let proj_std = 0.02 / (2.0 * c.n_layers as f64).sqrt();
        let h = linear(g, p, "fc", x, c.d_model, 4 * c.d_model, 0.02)?; // (B, T, 4D)
        let h = g.gelu(h)?;
        linear(g, p, "proj", h, 4 * c.d_model, c.d_model, proj_std) // (B, T, D)
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
        let c = &self.0;
        let (t, d, v) = (c.seq_len as i64, c.d_model as i64, c.vocab_size as i64);
        let wte = p.declare(
            g,
            "wte",
            TensorType::f32([v, d]),
            Init::Normal { std: 0.02 },
        )?;
        let wpe = p.declare(
            g,
            "wpe",
            TensorType::f32([t, d]),
            Init::Normal { std: 0.02 },
        )?;
        let tok = g.gather(wte, tokens)?; // (B, T, D)
        let x = g.add(tok, wpe)?;
        let mut salt = 0u32;
        let mut x = self.dropout(g, x, seed, &mut salt)?;
        for l in 0..c.n_layers {
            // Each block is a region: the unit the remat pass recomputes.
            let name = format!("h{l}");
            x = g.region(&name, |g| {
                p.scope(&name, |p| -> graph::Result<NodeId> {
                    let h = layer_norm(g, p, "ln1", x, c.d_model)?;
                    let a = p.scope("attn", |p| self.attention(g, p, h, b, seed, &mut salt))?;
                    let a = self.dropout(g, a, seed, &mut salt)?;
                    let x = g.add(x, a)?;
                    let h = layer_norm(g, p, "ln2", x, c.d_model)?;
                    let m = p.scope("mlp", |p| self.mlp(g, p, h))?;
                    let m = self.dropout(g, m, seed, &mut salt)?;
                    g.add(x, m)
                })
            })?;
        }
        let x = layer_norm(g, p, "ln_f", x, c.d_model)?;
        if c.tied_head {
            // x (B, T, D) · wte (V, D) over D
            g.dot_general(x, wte, DotDims::contract(&[2], &[1]), None)
        } else {
            let w = p.declare(
                g,
                "lm_head",
                TensorType::f32([d, v]),
                Init::Normal { std: 0.02 },
            )?;
            g.matmul(x, w)
        }
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
}

impl Model for Gpt {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
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
        let logits = self.logits(g, p, tokens, b, seed)?; // (B, T, V)
        let lse = g.logsumexp(logits, 2)?; // (B, T)
        let oh = g.one_hot(targets, self.0.vocab_size as i64, DType::F32)?;
        let picked = g.mul(logits, oh)?;
        let picked = g.reduce_sum(picked, &[2])?;
        let nll = g.sub(lse, picked)?; // (B, T)
        let loss = g.mean_all(nll)?;
        let per_window = g.mean(nll, &[1])?; // (B,)
        Ok(Forward {
            inputs: vec![tokens, targets],
            loss,
            per_example: vec![("loss".into(), per_window)],
            rng_seed: seed,
            updates: Vec::new(),
        })
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
}
