//! Encoder–decoder Transformer ("Attention is All You Need"), written like nanoGPT: token
//! embeddings (shared between source, target and head, or separate) scaled by sqrt(d), learned
//! or sinusoidal positions; an encoder of bidirectional self-attention blocks over the source
//! (padding hidden from every query); a decoder of causal self-attention, cross-attention to
//! the encoder output, and MLP blocks; pre-LN (final LayerNorms) or post-LN as in the paper.
//! The loss is teacher-forced cross-entropy over non-padding targets, with optional label
//! smoothing. The same weights decode with a KV cache ([`EncDec::decode_cached`]): the
//! cross-attention keys and values are computed once per source ([`EncDec::memory`]).

use graph::{DType, DotDims, Graph, NodeId, TensorType};
use nn::attention::{AttentionKernel, MultiHeadAttention, MultiHeadAttentionW, QkvLayout};
use nn::axis::{EMBED, NONE, VOCAB};
use nn::kv_cache::{cached_self_attention, causal_visibility, cross_attention, memory_kv, KvCache};
use nn::linear::{Linear, LinearW};
use nn::mlp::{Gelu, Mlp, MlpW};
use nn::norm::{LayerNorm, LayerNormW};
use nn::{Dropout, Embedding, Forward, Init, Mode, Model, Params};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    #[default]
    Learned,
    Sinusoidal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncDecConfig {
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// Source and target lengths (tokens per example).
    pub src_len: usize,
    pub tgt_len: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub enc_layers: usize,
    pub dec_layers: usize,
    /// MLP width; 0 = 4 · d_model.
    #[serde(default)]
    pub d_ff: usize,
    #[serde(default)]
    pub dropout: f64,
    /// One token embedding for source and target.
    #[serde(default = "yes")]
    pub shared_embeddings: bool,
    /// The output head is the target embedding.
    #[serde(default = "yes")]
    pub tied_head: bool,
    /// LayerNorm after each residual add (the paper); pre-LN otherwise.
    #[serde(default)]
    pub post_ln: bool,
    #[serde(default)]
    pub positions: Positions,
    #[serde(default)]
    pub label_smoothing: f64,
    /// Padding token (hidden from attention, no loss).
    #[serde(default)]
    pub pad_id: u32,
    /// The encoder's self-attention kernel (`nn::kernels`; dense by default). The source is
    /// the long side; the decoder's self- and cross-attention stay dense, so KV-cached
    /// decoding computes exactly what training does.
    #[serde(default)]
    pub attention: nn::AttentionConfig,
}

fn default_vocab() -> usize {
    256
}
fn yes() -> bool {
    true
}

pub struct EncDec(pub EncDecConfig);

/// A decoder block's causal self-attention: `(g, layer, weights, h, dropout salt) -> (B, L, D)`.
type SelfAttention<'a> = dyn FnMut(&mut Graph, usize, &MultiHeadAttentionW, NodeId, &mut u32) -> graph::Result<NodeId>
    + 'a;

struct EncBlock {
    ln1: LayerNormW,
    attn: MultiHeadAttentionW,
    ln2: LayerNormW,
    mlp: MlpW,
}

struct DecBlock {
    ln1: LayerNormW,
    self_attn: MultiHeadAttentionW,
    ln2: LayerNormW,
    cross: MultiHeadAttentionW,
    ln3: LayerNormW,
    mlp: MlpW,
}

/// Every weight of the model.
struct Weights {
    src_embed: NodeId,
    tgt_embed: NodeId,
    /// `(len, D)` position tables: parameters, or sinusoid constants.
    src_pos: NodeId,
    tgt_pos: NodeId,
    enc: Vec<EncBlock>,
    enc_ln: Option<LayerNormW>,
    dec: Vec<DecBlock>,
    dec_ln: Option<LayerNormW>,
    head: Option<LinearW>,
}

/// The sinusoid table `(len, d)` of the paper: sin at even dims, cos at odd.
fn sinusoid(len: usize, d: usize) -> Vec<f32> {
    let mut v = vec![0f32; len * d];
    for p in 0..len {
        for i in 0..d {
            let rate = 10000f64.powf((2 * (i / 2)) as f64 / d as f64);
            let a = p as f64 / rate;
            v[p * d + i] = if i % 2 == 0 { a.sin() } else { a.cos() } as f32;
        }
    }
    v
}

impl EncDec {
    fn norm(&self) -> LayerNorm {
        LayerNorm::new(1e-5).axis(EMBED).names("g", "b")
    }

    fn drop(&self) -> Dropout {
        Dropout {
            rate: self.0.dropout,
        }
    }

    fn attention(&self, kernel: AttentionKernel, layout: QkvLayout) -> MultiHeadAttention {
        let c = &self.0;
        let layers = (c.enc_layers + c.dec_layers).max(1) as f64;
        MultiHeadAttention {
            d_model: c.d_model as i64,
            n_heads: c.n_heads as i64,
            kernel,
            qkv_layout: layout,
            dropout: c.dropout,
            qkv_std: 0.02,
            proj_std: 0.02 / (2.0 * layers).sqrt(),
        }
    }

    fn mlp(&self) -> Mlp {
        let c = &self.0;
        let d = c.d_model as i64;
        let hidden = if c.d_ff == 0 { 4 * d } else { c.d_ff as i64 };
        let layers = (c.enc_layers + c.dec_layers).max(1) as f64;
        Mlp {
            d_model: d,
            hidden,
            gelu: Gelu::Tanh,
            fc_std: 0.02,
            proj_std: 0.02 / (2.0 * layers).sqrt(),
        }
    }

    fn positions(
        &self,
        g: &mut Graph,
        p: &mut Params,
        name: &str,
        len: usize,
    ) -> graph::Result<NodeId> {
        let d = self.0.d_model;
        match self.0.positions {
            Positions::Learned => Embedding::new(len as i64, d as i64, Init::Normal { std: 0.02 })
                .axes(&[NONE, EMBED])
                .declare(g, p, name),
            Positions::Sinusoidal => g.constant_f32([len as i64, d as i64], sinusoid(len, d)),
        }
    }

    /// Declares every weight (the same names in the training step and in every decode
    /// program).
    fn declare(&self, g: &mut Graph, p: &mut Params) -> graph::Result<Weights> {
        let c = &self.0;
        let (d, v) = (c.d_model as i64, c.vocab_size as i64);
        let normal = Init::Normal { std: 0.02 };
        let embed = |g: &mut Graph, p: &mut Params, name: &str| {
            Embedding::new(v, d, normal)
                .axes(&[VOCAB, EMBED])
                .declare(g, p, name)
        };
        let (src_embed, tgt_embed) = if c.shared_embeddings {
            let e = embed(g, p, "embed")?;
            (e, e)
        } else {
            (embed(g, p, "src_embed")?, embed(g, p, "tgt_embed")?)
        };
        let src_pos = self.positions(g, p, "src_pos", c.src_len)?;
        let tgt_pos = self.positions(g, p, "tgt_pos", c.tgt_len)?;
        let enc_kernel = self.encoder_kernel().map_err(graph::GraphError::Invalid)?;
        let dense = |causal| AttentionKernel::Dense { causal };
        let mut enc = Vec::new();
        for i in 0..c.enc_layers {
            enc.push(p.scope(&format!("enc{i}"), |p| -> graph::Result<EncBlock> {
                Ok(EncBlock {
                    ln1: self.norm().declare(g, p, "ln1", d)?,
                    attn: self
                        .attention(enc_kernel, QkvLayout::Fused)
                        .declare(g, p, "attn")?,
                    ln2: self.norm().declare(g, p, "ln2", d)?,
                    mlp: self.mlp().declare(g, p, "mlp")?,
                })
            })?);
        }
        let enc_ln = match c.post_ln {
            false => Some(self.norm().declare(g, p, "enc_ln", d)?),
            true => None,
        };
        let mut dec = Vec::new();
        for i in 0..c.dec_layers {
            dec.push(p.scope(&format!("dec{i}"), |p| -> graph::Result<DecBlock> {
                Ok(DecBlock {
                    ln1: self.norm().declare(g, p, "ln1", d)?,
                    self_attn: self
                        .attention(dense(true), QkvLayout::Fused)
                        .declare(g, p, "attn")?,
                    ln2: self.norm().declare(g, p, "ln2", d)?,
                    cross: self
                        .attention(dense(false), QkvLayout::Separate)
                        .declare(g, p, "cross")?,
                    ln3: self.norm().declare(g, p, "ln3", d)?,
                    mlp: self.mlp().declare(g, p, "mlp")?,
                })
            })?);
        }
        let dec_ln = match c.post_ln {
            false => Some(self.norm().declare(g, p, "dec_ln", d)?),
            true => None,
        };
        let head = match c.tied_head {
            true => None,
            false => Some(
                Linear::new([v])
                    .init(normal)
                    .axes(&[EMBED, VOCAB])
                    .bias(false)
                    .names("lm_head", "")
                    .declare(g, p, "", d)?,
            ),
        };
        Ok(Weights {
            src_embed,
            tgt_embed,
            src_pos,
            tgt_pos,
            enc,
            enc_ln,
            dec,
            dec_ln,
            head,
        })
    }

    /// `x + f(ln(x))` (pre-LN) or `ln(x + f(x))` (post-LN).
    fn residual(
        &self,
        g: &mut Graph,
        ln: &LayerNormW,
        x: NodeId,
        f: impl FnOnce(&mut Graph, NodeId) -> graph::Result<NodeId>,
    ) -> graph::Result<NodeId> {
        if self.0.post_ln {
            let y = f(g, x)?;
            let s = g.add(x, y)?;
            ln.apply(g, s)
        } else {
            let h = ln.apply(g, x)?;
            let y = f(g, h)?;
            g.add(x, y)
        }
    }

    /// Token embeddings · sqrt(d) plus positions: `(B, L, D)`.
    fn embed(
        &self,
        g: &mut Graph,
        table: NodeId,
        tokens: NodeId,
        pos: NodeId,
    ) -> graph::Result<NodeId> {
        let x = g.gather(table, tokens)?;
        let x = g.mul_scalar(x, (self.0.d_model as f64).sqrt())?;
        g.add(x, pos)
    }

    /// The encoder output `(B, S, D)` of `src (B, S)` with `src_mask (B, S)` true at real
    /// tokens.
    fn encode(
        &self,
        g: &mut Graph,
        w: &Weights,
        src: NodeId,
        src_mask: NodeId,
        seed: Option<NodeId>,
        salt: &mut u32,
    ) -> graph::Result<NodeId> {
        let mut x = self.embed(g, w.src_embed, src, w.src_pos)?;
        x = self.drop().apply(g, x, seed, salt)?;
        for b in &w.enc {
            x = self.residual(g, &b.ln1, x, |g, h| {
                let a = b.attn.apply_masked(g, h, Some(src_mask), seed, salt)?;
                self.drop().apply(g, a, seed, salt)
            })?;
            x = self.residual(g, &b.ln2, x, |g, h| {
                let m = b.mlp.apply(g, h)?;
                self.drop().apply(g, m, seed, salt)
            })?;
        }
        match &w.enc_ln {
            Some(ln) => ln.apply(g, x),
            None => Ok(x),
        }
    }

    /// Logits `(B, L, V)` of decoder input `x (B, L, D)` (embedded), given each layer's
    /// cross-attention memory and `cross_visible (B, L, S)`; `self_attn(g, layer, weights, h)`
    /// is the causal self-attention (full in training, cached when decoding).
    #[allow(clippy::too_many_arguments)]
    fn decode(
        &self,
        g: &mut Graph,
        w: &Weights,
        mut x: NodeId,
        memory: &[KvCache],
        cross_visible: NodeId,
        seed: Option<NodeId>,
        salt: &mut u32,
        self_attn: &mut SelfAttention,
    ) -> graph::Result<NodeId> {
        for (i, b) in w.dec.iter().enumerate() {
            x = self.residual(g, &b.ln1, x, |g, h| {
                let a = self_attn(g, i, &b.self_attn, h, salt)?;
                self.drop().apply(g, a, seed, salt)
            })?;
            x = self.residual(g, &b.ln2, x, |g, h| {
                let a = cross_attention(g, &b.cross, h, memory[i], cross_visible)?;
                self.drop().apply(g, a, seed, salt)
            })?;
            x = self.residual(g, &b.ln3, x, |g, h| {
                let m = b.mlp.apply(g, h)?;
                self.drop().apply(g, m, seed, salt)
            })?;
        }
        if let Some(ln) = &w.dec_ln {
            x = ln.apply(g, x)?;
        }
        match &w.head {
            None => g.dot_general(x, w.tgt_embed, DotDims::contract(&[2], &[1]), None),
            Some(h) => h.apply(g, x),
        }
    }

    /// `ids != pad`: `(B, L)` bool.
    fn not_pad(&self, g: &mut Graph, ids: NodeId) -> graph::Result<NodeId> {
        let pad = g.scalar(self.0.pad_id as f64, DType::I32)?;
        let dims = g.dims(ids)?.to_vec();
        let pad = g.broadcast_to(pad, &dims)?;
        g.ne(ids, pad)
    }

    /// `(B, L, S)` visibility of the source's real tokens from every target position.
    fn cross_visibility(&self, g: &mut Graph, src_mask: NodeId, l: i64) -> graph::Result<NodeId> {
        let d = g.dims(src_mask)?.to_vec();
        g.broadcast_in_dim(src_mask, vec![d[0], l, d[1]], &[0, 2])
    }

    /// Teacher-forced logits `(B, T, V)` of `tgt_in (B, T)` given `src (B, S)`.
    pub fn logits(
        &self,
        g: &mut Graph,
        p: &mut Params,
        src: NodeId,
        tgt_in: NodeId,
        seed: Option<NodeId>,
    ) -> graph::Result<NodeId> {
        let w = self.declare(g, p)?;
        let mut salt = 0u32;
        let src_mask = self.not_pad(g, src)?;
        let enc = self.encode(g, &w, src, src_mask, seed, &mut salt)?;
        let memory: Vec<KvCache> = w
            .dec
            .iter()
            .map(|b| memory_kv(g, &b.cross, enc))
            .collect::<graph::Result<_>>()?;
        let t = g.dims(tgt_in)?[1];
        let vis = self.cross_visibility(g, src_mask, t)?;
        let x = self.embed(g, w.tgt_embed, tgt_in, w.tgt_pos)?;
        let x = self.drop().apply(g, x, seed, &mut salt)?;
        self.decode(
            g,
            &w,
            x,
            &memory,
            vis,
            seed,
            &mut salt,
            &mut |g, _, a, h, salt| a.apply(g, h, seed, salt),
        )
    }

    /// The encode program's outputs for `src (B, S)`: each decoder layer's cross-attention
    /// keys and values `(B, H, S, hd)`, and the source mask `(B, S)`.
    pub fn memory(
        &self,
        g: &mut Graph,
        p: &mut Params,
        src: NodeId,
    ) -> graph::Result<(Vec<KvCache>, NodeId)> {
        let w = self.declare(g, p)?;
        let src_mask = self.not_pad(g, src)?;
        let enc = self.encode(g, &w, src, src_mask, None, &mut 0)?;
        let memory = w
            .dec
            .iter()
            .map(|b| memory_kv(g, &b.cross, enc))
            .collect::<graph::Result<_>>()?;
        Ok((memory, src_mask))
    }

    /// One layer's decoder self-attention cache `(B, H, tgt_len, hd)`.
    pub fn cache_type(&self, batch: usize) -> TensorType {
        let c = &self.0;
        KvCache::tensor_type(
            batch as i64,
            c.n_heads as i64,
            c.tgt_len as i64,
            (c.d_model / c.n_heads) as i64,
        )
    }

    /// Logits `(B, S, V)` of decoder tokens `(B, S)` at cache columns `[pos, pos + S)` (every
    /// row starts at column 0), reading the encode program's `memory` and `src_mask`; returns
    /// the updated self-attention caches.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_cached(
        &self,
        g: &mut Graph,
        p: &mut Params,
        tokens: NodeId,
        pos: NodeId,
        memory: &[KvCache],
        src_mask: NodeId,
        caches: &[KvCache],
    ) -> graph::Result<(NodeId, Vec<KvCache>)> {
        let c = &self.0;
        let w = self.declare(g, p)?;
        let td = g.dims(tokens)?.to_vec();
        let (b, s, t) = (td[0], td[1], c.tgt_len as i64);
        let cols = g.iota(TensorType::new(DType::I32, [b, s]), 1)?;
        let cols = g.add(cols, pos)?;
        let pe = g.gather(w.tgt_pos, cols)?; // (B, S, D)
        let x = self.embed(g, w.tgt_embed, tokens, pe)?;
        let start = g.full(0.0, TensorType::new(DType::I32, [b]))?;
        let visible = causal_visibility(g, start, pos, s, t)?;
        let cross = self.cross_visibility(g, src_mask, s)?;
        let mut out = caches.to_vec();
        let logits = self.decode(
            g,
            &w,
            x,
            memory,
            cross,
            None,
            &mut 0,
            &mut |g, i, a, h, _| {
                let (y, c) = cached_self_attention(g, a, h, out[i], pos, visible)?;
                out[i] = c;
                Ok(y)
            },
        )?;
        Ok((logits, out))
    }

    pub fn validate(&self) -> Result<(), String> {
        let c = &self.0;
        if c.n_heads == 0 || c.d_model == 0 || !c.d_model.is_multiple_of(c.n_heads) {
            return Err(format!(
                "model.d_model ({}) must be a positive multiple of model.n_heads ({})",
                c.d_model, c.n_heads
            ));
        }
        if c.src_len == 0 || c.tgt_len == 0 || c.vocab_size == 0 || c.dec_layers == 0 {
            return Err(
                "model.src_len, model.tgt_len, model.vocab_size and model.dec_layers must be \
                 positive"
                    .into(),
            );
        }
        if c.pad_id as usize >= c.vocab_size {
            return Err(format!(
                "model.pad_id ({}) must be below model.vocab_size ({})",
                c.pad_id, c.vocab_size
            ));
        }
        if !(0.0..1.0).contains(&c.dropout) || !(0.0..1.0).contains(&c.label_smoothing) {
            return Err("model.dropout and model.label_smoothing must be in [0, 1)".into());
        }
        self.encoder_kernel()?;
        c.attention.check_dropout(c.dropout, "model.dropout")
    }

    /// The encoder self-attention's kernel (`model.attention` over `model.src_len`).
    fn encoder_kernel(&self) -> Result<AttentionKernel, String> {
        let c = &self.0;
        c.attention
            .kernel_over(false, c.src_len, "model.src_len", "model.attention")
    }
}

impl Model for EncDec {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward> {
        self.validate().map_err(graph::GraphError::Invalid)?;
        let c = &self.0;
        let (b, s, t) = (batch as i64, c.src_len as i64, c.tgt_len as i64);
        let src = g.input("src", TensorType::new(DType::I32, [b, s]))?;
        let tgt_in = g.input("tgt_in", TensorType::new(DType::I32, [b, t]))?;
        let targets = g.input("targets", TensorType::new(DType::I32, [b, t]))?;
        // LSH draws its rotations from the step's seed too.
        let seed = if mode == Mode::Train && (c.dropout > 0.0 || c.attention.needs_seed()) {
            Some(g.input("dropout_seed", TensorType::scalar(DType::U32))?)
        } else {
            None
        };
        let logits = self.logits(g, p, src, tgt_in, seed)?; // (B, T, V)
        let nll = g.softmax_cross_entropy(logits, targets)?; // (B, T)
        let per_token = if c.label_smoothing > 0.0 {
            // (1 - ε) · nll + ε · mean over the vocabulary of -log p.
            let e = c.label_smoothing;
            let logp = g.log_softmax(logits, 2)?;
            let uniform = g.mean(logp, &[2])?;
            let uniform = g.neg(uniform)?;
            let a = g.mul_scalar(nll, 1.0 - e)?;
            let u = g.mul_scalar(uniform, e)?;
            g.add(a, u)?
        } else {
            nll
        };
        // Mean over real target tokens.
        let real = self.not_pad(g, targets)?;
        let real = g.convert(real, DType::F32)?;
        let masked = g.mul(per_token, real)?;
        let per_row = g.reduce_sum(masked, &[1])?; // (B,)
        let n_row = g.reduce_sum(real, &[1])?;
        let one = g.full(1.0, TensorType::f32([b]))?;
        let n_row = g.max(n_row, one)?;
        let per_example = g.div(per_row, n_row)?;
        let total = g.sum_all(masked)?;
        let n = g.sum_all(real)?;
        let one = g.scalar(1.0, DType::F32)?;
        let n = g.max(n, one)?;
        let loss = g.div(total, n)?;
        Ok(Forward {
            inputs: vec![src, tgt_in, targets],
            loss,
            per_example: vec![("loss".into(), per_example)],
            rng_seed: seed,
            updates: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::interp::{eval, HostTensor};

    fn tiny(post_ln: bool, positions: Positions, shared: bool) -> EncDecConfig {
        EncDecConfig {
            vocab_size: 13,
            src_len: 5,
            tgt_len: 4,
            d_model: 8,
            n_heads: 2,
            enc_layers: 1,
            dec_layers: 2,
            d_ff: 0,
            dropout: 0.0,
            shared_embeddings: shared,
            tied_head: shared,
            post_ln,
            positions,
            label_smoothing: 0.1,
            pad_id: 0,
            attention: Default::default(),
        }
    }

    /// Parameter values for `p`'s specs, scaled so the model is far from uniform.
    fn values(p: &Params, seed: u64) -> Vec<(String, HostTensor)> {
        p.specs
            .iter()
            .map(|s| {
                let v = s
                    .initial_values(seed)
                    .iter()
                    .map(|&x| x as f64 * 20.0)
                    .collect();
                (s.name.clone(), HostTensor::new(s.ty.clone(), v).unwrap())
            })
            .collect()
    }

    fn args(
        g: &Graph,
        p: &Params,
        vals: &[(String, HostTensor)],
        data: Vec<HostTensor>,
    ) -> Vec<HostTensor> {
        let mut data = data.into_iter();
        g.args()
            .iter()
            .map(|a| match p.specs.iter().find(|s| s.node == *a) {
                Some(s) => vals.iter().find(|(n, _)| *n == s.name).unwrap().1.clone(),
                None => data.next().unwrap(),
            })
            .collect()
    }

    /// `m`'s teacher-forced logits as a graph of `src (batch, src_len)`, `tgt (batch, tgt_len)`.
    fn logits_graph(m: &EncDec, batch: i64) -> (Graph, Params) {
        let mut g = Graph::new("encdec");
        let mut p = Params::new();
        let (s, t) = (m.0.src_len as i64, m.0.tgt_len as i64);
        let src = g
            .input("src", TensorType::new(DType::I32, [batch, s]))
            .unwrap();
        let tgt = g
            .input("tgt", TensorType::new(DType::I32, [batch, t]))
            .unwrap();
        let logits = m.logits(&mut g, &mut p, src, tgt, None).unwrap();
        g.set_outputs(&[logits]).unwrap();
        (g, p)
    }

    #[test]
    fn source_padding_and_the_future_are_hidden() {
        for (post, pos, shared) in [
            (false, Positions::Learned, true),
            (true, Positions::Sinusoidal, false),
        ] {
            let m = EncDec(tiny(post, pos, shared));
            let (g, p) = logits_graph(&m, 1);
            let vals = values(&p, 1);
            let run = |s: &[i32], t: &[i32]| {
                let a = args(
                    &g,
                    &p,
                    &vals,
                    vec![
                        HostTensor::i32(&[1, 5], s).unwrap(),
                        HostTensor::i32(&[1, 4], t).unwrap(),
                    ],
                );
                eval(&g, &a).unwrap()[0].data.clone()
            };
            let base = run(&[3, 4, 5, 0, 0], &[1, 7, 8, 9]);
            let changed = run(&[3, 4, 5, 0, 0], &[1, 7, 8, 2]);
            // Changing target token 3 leaves positions 0..3 alone (causal).
            assert_eq!(base[..3 * 13], changed[..3 * 13]);
            assert_ne!(base[3 * 13..], changed[3 * 13..]);
            // Changing a real source token changes every position.
            let src_changed = run(&[3, 6, 5, 0, 0], &[1, 7, 8, 9]);
            assert_ne!(base[..13], src_changed[..13]);
            if pos == Positions::Sinusoidal {
                // The padded source gives the logits of the same source without padding.
                let short = EncDec(EncDecConfig {
                    src_len: 3,
                    ..m.0.clone()
                });
                let (g, p) = logits_graph(&short, 1);
                let a = args(
                    &g,
                    &p,
                    &vals,
                    vec![
                        HostTensor::i32(&[1, 3], &[3, 4, 5]).unwrap(),
                        HostTensor::i32(&[1, 4], &[1, 7, 8, 9]).unwrap(),
                    ],
                );
                let unpadded = eval(&g, &a).unwrap()[0].data.clone();
                for (x, y) in base.iter().zip(&unpadded) {
                    assert!((x - y).abs() < 1e-9, "{x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn encoder_attention_kernels_compute_dense_attention_where_exact() {
        // A padded source of 6: chunked (chunks of 2) and local with a window covering it
        // give dense attention's logits; a window that does not divide the source is an error.
        let logits = |attention: nn::AttentionConfig| {
            let m = EncDec(EncDecConfig {
                src_len: 6,
                attention,
                ..tiny(false, Positions::Learned, true)
            });
            let (g, p) = logits_graph(&m, 2);
            let a = args(
                &g,
                &p,
                &values(&p, 1),
                vec![
                    HostTensor::i32(&[2, 6], &[3, 4, 5, 0, 0, 0, 7, 8, 9, 10, 11, 0]).unwrap(),
                    HostTensor::i32(&[2, 4], &[1, 7, 8, 9, 1, 2, 3, 4]).unwrap(),
                ],
            );
            eval(&g, &a).unwrap()[0].data.clone()
        };
        let dense = logits(nn::AttentionConfig::Dense);
        for k in [
            nn::AttentionConfig::Chunked { chunk: 2 },
            nn::AttentionConfig::Local { window: 12 },
        ] {
            let got = logits(k);
            for (x, y) in dense.iter().zip(&got) {
                assert!((x - y).abs() < 1e-9, "{k:?}: {x} vs {y}");
            }
        }
        // A window of 2 sees less: the kernel is the encoder's.
        assert_ne!(logits(nn::AttentionConfig::Local { window: 2 }), dense);
        let bad = EncDec(EncDecConfig {
            src_len: 6,
            attention: nn::AttentionConfig::Local { window: 4 },
            ..tiny(false, Positions::Learned, true)
        });
        let e = bad.validate().unwrap_err();
        assert!(
            e.contains("model.attention.window (4) must divide model.src_len (6)"),
            "{e}"
        );
        // LSH draws its rotations from the step seed: the training step takes one.
        let lsh = EncDec(EncDecConfig {
            src_len: 6,
            attention: nn::AttentionConfig::Lsh {
                bucket_size: 3,
                n_hashes: 1,
            },
            ..tiny(false, Positions::Learned, true)
        });
        let mut g = Graph::new("lsh");
        let mut p = Params::new();
        lsh.forward(&mut g, &mut p, 2, Mode::Train).unwrap();
        assert!(g.find("dropout_seed").is_some());
    }

    #[test]
    fn cross_attention_gradients_match_finite_differences() {
        use graph::gradcheck::{check, interp_evaluator, GradCase, Tolerance};
        let m = EncDec(tiny(false, Positions::Learned, true));
        let mut g = Graph::new("cross");
        let mut p = Params::new();
        let cross = m
            .attention(
                AttentionKernel::Dense { causal: false },
                QkvLayout::Separate,
            )
            .declare(&mut g, &mut p, "cross")
            .unwrap();
        let x = g.input("x", TensorType::f32([2, 3, 8])).unwrap();
        let mem = g.input("mem", TensorType::f32([2, 5, 8])).unwrap();
        let mask = g
            .input("mask", TensorType::new(DType::Bool, [2, 5]))
            .unwrap();
        let kv = memory_kv(&mut g, &cross, mem).unwrap();
        let vis = m.cross_visibility(&mut g, mask, 3).unwrap();
        let y = cross_attention(&mut g, &cross, x, kv, vis).unwrap();
        g.set_outputs(&[y]).unwrap();
        let vals = values(&p, 2);
        let mut lcg = graph::gradcheck::Lcg::new(5);
        let mut rand = |n: usize| (0..n).map(|_| lcg.next(-1.0, 1.0)).collect::<Vec<_>>();
        let xs = HostTensor::new(TensorType::f32([2, 3, 8]), rand(48)).unwrap();
        let ms = HostTensor::new(TensorType::f32([2, 5, 8]), rand(80)).unwrap();
        let mask = HostTensor::new(
            TensorType::new(DType::Bool, [2, 5]),
            vec![1., 1., 1., 0., 0., 1., 1., 1., 1., 1.],
        )
        .unwrap();
        // Gradients wrt x, the memory and every q, k, v, output weight; masked keys get none.
        let case = GradCase {
            name: "cross_attention",
            args: args(&g, &p, &vals, vec![xs, ms, mask]),
            graph: g,
        };
        check(&case, &mut interp_evaluator(), Tolerance::F64).unwrap();
    }

    #[test]
    fn cached_decoding_matches_the_teacher_forced_logits() {
        let m = EncDec(tiny(false, Positions::Sinusoidal, false));
        // Teacher-forced logits of the whole target.
        let mut g = Graph::new("full");
        let mut p = Params::new();
        let src = g.input("src", TensorType::new(DType::I32, [1, 5])).unwrap();
        let tgt = g.input("tgt", TensorType::new(DType::I32, [1, 4])).unwrap();
        let logits = m.logits(&mut g, &mut p, src, tgt, None).unwrap();
        g.set_outputs(&[logits]).unwrap();
        let vals = values(&p, 3);
        let s = HostTensor::i32(&[1, 5], &[3, 4, 5, 6, 0]).unwrap();
        let t = [1, 7, 8, 9];
        let a = args(
            &g,
            &p,
            &vals,
            vec![s.clone(), HostTensor::i32(&[1, 4], &t).unwrap()],
        );
        let want = eval(&g, &a).unwrap()[0].data.clone();
        // Encode once, then one token at a time through the cache.
        let mut g = Graph::new("cached");
        let mut p = Params::new();
        let src = g.input("src", TensorType::new(DType::I32, [1, 5])).unwrap();
        let (memory, mask) = m.memory(&mut g, &mut p, src).unwrap();
        let mut caches: Vec<KvCache> = (0..2)
            .map(|_| KvCache {
                k: g.full(0.0, m.cache_type(1)).unwrap(),
                v: g.full(0.0, m.cache_type(1)).unwrap(),
            })
            .collect();
        let mut outs = Vec::new();
        let mut toks = Vec::new();
        let mut all = Params::new();
        all.specs.extend(p.specs.clone());
        for (i, _) in t.iter().enumerate() {
            let tok = g
                .input(&format!("t{i}"), TensorType::new(DType::I32, [1, 1]))
                .unwrap();
            let pos = g.scalar(i as f64, DType::I32).unwrap();
            let mut pi = Params::new();
            let (l, c) = pi
                .scope(&format!("s{i}"), |pi| {
                    m.decode_cached(&mut g, pi, tok, pos, &memory, mask, &caches)
                })
                .unwrap();
            caches = c;
            outs.push(l);
            toks.push(tok);
            for mut s in pi.specs {
                s.name = s.name.split_once('.').unwrap().1.to_string();
                all.specs.push(s);
            }
        }
        g.set_outputs(&outs).unwrap();
        let data = std::iter::once(s)
            .chain(t.iter().map(|&x| HostTensor::i32(&[1, 1], &[x]).unwrap()))
            .collect();
        let a = args(&g, &all, &vals, data);
        let out = eval(&g, &a).unwrap();
        for (i, o) in out.iter().enumerate() {
            for (x, y) in o.data.iter().zip(&want[i * 13..(i + 1) * 13]) {
                assert!((x - y).abs() < 1e-9, "step {i}: {x} vs {y}");
            }
        }
    }
}
