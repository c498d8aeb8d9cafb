//! BERT encoder, written like nanoGPT: token + position + segment embeddings and a LayerNorm,
//! post-LayerNorm blocks of bidirectional self-attention (padded keys masked) and a GELU
//! (erf) MLP, a tanh pooler over `[CLS]`, and the pretraining heads: masked LM (transform,
//! LayerNorm, decoder tied to the word embeddings, bias) and next-sentence prediction.
//! Config keys are HF `BertConfig`'s, so a `config.json` reads as is. Init: normal(0.02).

use graph::{DType, DotDims, Graph, NodeId, TensorType};
use nn::attention::{MultiHeadAttention, MultiHeadAttentionW, QkvLayout};
use nn::axis::{BATCH, EMBED, NONE, VOCAB};
use nn::linear::{Linear, LinearW};
use nn::mlp::{Gelu, Mlp, MlpW};
use nn::norm::{LayerNorm, LayerNormW};
use nn::reversible::{Rebind, RevBlocks};
use nn::{repeated, Dropout, Embedding, Forward, Init, Mode, Model, Params, Weights};
mod config;

pub use config::{BertConfig, HiddenAct};

/// Labels of MLM positions that are not predicted (HF's `ignore_index`).
pub const IGNORE: i32 = -100;

pub struct Bert(pub BertConfig);

/// One block's layers, named after what they are (HF: attention.output.LayerNorm is `ln1`,
/// intermediate/output.dense are `mlp.fc`/`mlp.proj`, output.LayerNorm is `ln2`).
struct Block {
    attn: MultiHeadAttentionW,
    ln1: LayerNormW,
    mlp: MlpW,
    ln2: LayerNormW,
}

impl Rebind for Block {
    fn nodes(&self, out: &mut Vec<NodeId>) {
        self.attn.nodes(out);
        self.ln1.nodes(out);
        self.mlp.nodes(out);
        self.ln2.nodes(out);
    }
    fn rebind(&self, ids: &mut dyn Iterator<Item = NodeId>) -> Self {
        Block {
            attn: self.attn.rebind(ids),
            ln1: self.ln1.rebind(ids),
            mlp: self.mlp.rebind(ids),
            ln2: self.ln2.rebind(ids),
        }
    }
}

/// How `model.reversible = true` blocks are differentiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevStack {
    /// One custom VJP that rebuilds block inputs from outputs (what training uses).
    Rebuild,
    /// The same blocks as ordinary ops, every activation kept: the reference the rebuilding
    /// backward must reproduce.
    Plain,
}

/// What the encoder gives its heads.
pub struct Encoded {
    /// Last hidden states `(B, T, D)`.
    pub hidden: NodeId,
    /// tanh(dense(hidden[:, 0])) `(B, D)`.
    pub pooled: NodeId,
    /// The word embeddings `(V, D)`, which the MLM decoder reuses.
    pub wte: NodeId,
}

impl Bert {
    fn norm(&self) -> LayerNorm {
        LayerNorm::new(self.0.layer_norm_eps)
            .axis(EMBED)
            .names("g", "b")
    }

    fn drop(&self) -> Dropout {
        Dropout {
            rate: self.0.hidden_dropout_prob,
        }
    }

    fn gelu(&self) -> Gelu {
        match self.0.hidden_act {
            HiddenAct::Gelu => Gelu::Erf,
            HiddenAct::GeluNew => Gelu::Tanh,
        }
    }

    fn dense(&self, out: i64, axes: &[nn::axis::Axis]) -> Linear {
        let std = self.0.initializer_range;
        Linear::new([out])
            .init(Init::Normal { std })
            .axes(axes)
            .names("w", "b")
    }

    fn declare_block(&self, g: &mut Graph, p: &mut Params) -> graph::Result<Block> {
        let c = &self.0;
        let (d, std) = (c.hidden_size as i64, c.initializer_range);
        let attn = MultiHeadAttention {
            d_model: d,
            n_heads: c.num_attention_heads as i64,
            kernel: c
                .attention
                .kernel(false, c.seq_len, "model.attention")
                .map_err(graph::GraphError::Invalid)?,
            qkv_layout: QkvLayout::Separate,
            dropout: c.attention_probs_dropout_prob,
            qkv_std: std,
            proj_std: std,
        };
        let mlp = Mlp {
            d_model: d,
            hidden: c.intermediate_size as i64,
            gelu: self.gelu(),
            fc_std: std,
            proj_std: std,
        };
        Ok(Block {
            attn: attn.declare(g, p, "attn")?,
            ln1: self.norm().declare(g, p, "ln1", d)?,
            mlp: mlp.declare(g, p, "mlp")?,
            ln2: self.norm().declare(g, p, "ln2", d)?,
        })
    }

    /// One post-LayerNorm block on `x (B, T, D)`; `mask (B, T)` bool marks real tokens.
    fn block(
        &self,
        g: &mut Graph,
        b: &Block,
        x: NodeId,
        mask: NodeId,
        seed: Option<NodeId>,
        salt: &mut u32,
    ) -> graph::Result<NodeId> {
        let a = b.attn.apply_masked(g, x, Some(mask), seed, salt)?; // (B, T, D)
        let a = self.drop().apply(g, a, seed, salt)?;
        let s = g.add(x, a)?;
        let x = b.ln1.apply(g, s)?;
        let m = b.mlp.apply(g, x)?; // (B, T, D)
        let m = self.drop().apply(g, m, seed, salt)?;
        let s = g.add(x, m)?;
        let x = b.ln2.apply(g, s)?;
        g.logical_axes(x, &[BATCH, NONE, EMBED])
    }

    /// A reversible stack (`model.reversible = true`): post-LayerNorm blocks normalize the
    /// residual sum, `LN(x + Attn(x))`, which cannot be solved for `x` from the output, so
    /// the branches are pre-LayerNorm, `y1 = x1 + drop(Attn(ln1(x2)))`,
    /// `y2 = x2 + drop(MLP(ln2(y1)))`, as in the Reformer; both streams start at the
    /// embeddings and `ln_f` normalizes their mean (what post-LN hands the heads).
    #[allow(clippy::too_many_arguments)]
    fn reversible_blocks(
        &self,
        g: &mut Graph,
        p: &mut Params,
        x: NodeId,
        real: NodeId,
        seed: Option<NodeId>,
        stack: RevStack,
    ) -> graph::Result<NodeId> {
        let c = &self.0;
        if p.repeat.0.is_some() {
            return Err(graph::GraphError::Invalid(
                "model.reversible = true does not combine with a pipeline (parallel.pipeline)"
                    .into(),
            ));
        }
        let blocks: Vec<Block> = (0..c.num_hidden_layers)
            .map(|i| p.scope(&format!("h{i}"), |p| self.declare_block(g, p)))
            .collect::<graph::Result<_>>()?;
        // Salts fixed by the block index: the backward's recomputation draws the same masks.
        let salt_of = |i: usize, branch: u32| ((i as u32 + 1) << 16) | (branch << 12);
        // extras: [key mask, dropout seed?]
        let f = |g: &mut Graph, i: usize, b: &Block, ex: &[NodeId], x: NodeId| {
            let seed = ex.get(1).copied();
            let salt = &mut salt_of(i, 1);
            let h = b.ln1.apply(g, x)?;
            let a = b.attn.apply_masked(g, h, Some(ex[0]), seed, salt)?;
            self.drop().apply(g, a, seed, salt)
        };
        let h = |g: &mut Graph, i: usize, b: &Block, ex: &[NodeId], x: NodeId| {
            let seed = ex.get(1).copied();
            let h = b.ln2.apply(g, x)?;
            let m = b.mlp.apply(g, h)?;
            self.drop().apply(g, m, seed, &mut salt_of(i, 2))
        };
        let rev = RevBlocks {
            blocks: &blocks,
            f: &f,
            g: &h,
        };
        let mut extras = vec![real];
        extras.extend(seed);
        let (y1, y2) = match stack {
            RevStack::Rebuild => rev.reversible(g, x, x, &extras)?,
            RevStack::Plain => rev.plain(g, x, x, &extras)?,
        };
        let y = g.add(y1, y2)?;
        let y = g.mul_scalar(y, 0.5)?;
        let y = self
            .norm()
            .declare(g, p, "ln_f", c.hidden_size as i64)?
            .apply(g, y)?;
        g.logical_axes(y, &[BATCH, NONE, EMBED])
    }

    /// The encoder on `tokens`, `segments` (token type ids) and `mask` (1: real token), all
    /// i32 `(B, T)`; `seed` enables dropout.
    pub fn encode(
        &self,
        g: &mut Graph,
        p: &mut Params,
        tokens: NodeId,
        segments: NodeId,
        mask: NodeId,
        seed: Option<NodeId>,
    ) -> graph::Result<Encoded> {
        self.encode_with(g, p, tokens, segments, mask, seed, RevStack::Rebuild)
    }

    /// [`Bert::encode`], with `stack` choosing how reversible blocks are differentiated
    /// (ignored unless `model.reversible = true`).
    #[allow(clippy::too_many_arguments)]
    pub fn encode_with(
        &self,
        g: &mut Graph,
        p: &mut Params,
        tokens: NodeId,
        segments: NodeId,
        mask: NodeId,
        seed: Option<NodeId>,
        stack: RevStack,
    ) -> graph::Result<Encoded> {
        let c = &self.0;
        let d = c.hidden_size as i64;
        let t = *g.dims(tokens)?.last().unwrap_or(&0);
        let normal = Init::Normal {
            std: c.initializer_range,
        };
        let wte = Embedding::new(c.vocab_size as i64, d, normal)
            .axes(&[VOCAB, EMBED])
            .declare(g, p, "wte")?;
        let wpe = Embedding::new(c.max_position_embeddings as i64, d, normal)
            .axes(&[NONE, EMBED])
            .declare(g, p, "wpe")?;
        let wtt = Embedding::new(c.type_vocab_size as i64, d, normal)
            .axes(&[NONE, EMBED])
            .declare(g, p, "wtt")?;
        let tok = g.gather(wte, tokens)?; // (B, T, D)
        let seg = g.gather(wtt, segments)?; // (B, T, D)
        let pos = g.slice_dim(wpe, 0, 0, t)?; // (T, D)
        let x = g.add(tok, seg)?;
        let x = g.add(x, pos)?;
        let x = self.norm().declare(g, p, "ln_e", d)?.apply(g, x)?;
        let x = g.logical_axes(x, &[BATCH, NONE, EMBED])?;
        let mut salt = 0u32;
        let x = self.drop().apply(g, x, seed, &mut salt)?;
        let zeros = g.full(0.0, g.ty(mask)?.clone())?;
        let real = g.ne(mask, zeros)?; // (B, T) bool
        let hidden = if c.reversible {
            self.reversible_blocks(g, p, x, real, seed, stack)?
        } else {
            // The blocks: each a region (the unit remat recomputes).
            repeated(
                g,
                p,
                "h",
                c.num_hidden_layers,
                x,
                |g, p| self.declare_block(g, p),
                |g, b, x| self.block(g, b, x, real, seed, &mut salt),
            )?
        };
        let cls = g.slice_dim(hidden, 1, 0, 1)?;
        let cls = g.reshape(cls, [g.dims(hidden)?[0], d])?; // (B, D)
        let pooler = self.dense(d, &[EMBED, NONE]).declare(g, p, "pooler", d)?;
        let pooled = pooler.apply(g, cls)?;
        let pooled = g.tanh(pooled)?;
        Ok(Encoded {
            hidden,
            pooled,
            wte,
        })
    }

    /// MLM logits `(B, T, V)` (decoder tied to `wte`) and NSP logits `(B, 2)`.
    pub fn pretraining_heads(
        &self,
        g: &mut Graph,
        p: &mut Params,
        e: &Encoded,
    ) -> graph::Result<(NodeId, NodeId)> {
        let c = &self.0;
        let (d, v) = (c.hidden_size as i64, c.vocab_size as i64);
        let (fc, ln, bias) =
            p.scope("mlm", |p| -> graph::Result<(LinearW, LayerNormW, NodeId)> {
                Ok((
                    self.dense(d, &[EMBED, NONE]).declare(g, p, "fc", d)?,
                    self.norm().declare(g, p, "ln", d)?,
                    p.weight(g, "bias", TensorType::f32([v]), Init::Zeros, &[VOCAB])?,
                ))
            })?;
        let h = fc.apply(g, e.hidden)?; // (B, T, D)
        let h = match self.gelu() {
            Gelu::Erf => g.gelu_erf(h)?,
            Gelu::Tanh => g.gelu(h)?,
        };
        let h = ln.apply(g, h)?;
        // h (B, T, D) · wte (V, D) over D
        let mlm = g.dot_general(h, e.wte, DotDims::contract(&[2], &[1]), None)?;
        let mlm = g.add(mlm, bias)?;
        let mlm = g.logical_axes(mlm, &[BATCH, NONE, VOCAB])?;
        let nsp = self.dense(2, &[EMBED, NONE]).declare(g, p, "nsp", d)?;
        let nsp = nsp.apply(g, e.pooled)?; // (B, 2)
        Ok((mlm, nsp))
    }
}

impl Model for Bert {
    /// MLM + NSP loss: inputs `tokens`, `segments`, `mask`, `mlm_labels` (B, T) (IGNORE at
    /// unmasked positions) and `nsp_labels` (B,) (1: the second segment is random).
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward> {
        self.0.validate().map_err(graph::GraphError::Invalid)?;
        let (b, t) = (batch as i64, self.0.seq_len as i64);
        let bt = TensorType::new(DType::I32, [b, t]);
        let tokens = g.input("tokens", bt.clone())?;
        let segments = g.input("segments", bt.clone())?;
        let mask = g.input("mask", bt.clone())?;
        let mlm_labels = g.input("mlm_labels", bt.clone())?;
        let nsp_labels = g.input("nsp_labels", TensorType::new(DType::I32, [b]))?;
        // LSH draws its rotations from the step's seed too.
        let dropout = self.0.hidden_dropout_prob > 0.0
            || self.0.attention_probs_dropout_prob > 0.0
            || self.0.attention.needs_seed();
        let seed = if mode == Mode::Train && dropout {
            Some(g.input("dropout_seed", TensorType::scalar(DType::U32))?)
        } else {
            None
        };
        let e = self.encode(g, p, tokens, segments, mask, seed)?;
        let (mlm, nsp) = self.pretraining_heads(g, p, &e)?;
        // MLM: mean over the predicted positions of the batch, as HF's ignore_index does.
        let ignore = g.full(IGNORE as f64, bt)?;
        let picked = g.ne(mlm_labels, ignore)?;
        let zeros = g.full(0.0, TensorType::new(DType::I32, [b, t]))?;
        let safe = g.select(picked, mlm_labels, zeros)?;
        let w = g.convert(picked, DType::F32)?; // (B, T)
        let nll = g.softmax_cross_entropy(mlm, safe)?;
        let nll = g.mul(nll, w)?;
        let hit = g.argmax(mlm, 2)?;
        let hit = g.eq(hit, safe)?;
        let hit = g.convert(hit, DType::F32)?;
        let hit = g.mul(hit, w)?;
        let per_ex = |g: &mut Graph, x: NodeId| -> graph::Result<NodeId> {
            let s = g.reduce_sum(x, &[1])?;
            let n = g.reduce_sum(w, &[1])?;
            let one = g.full(1.0, TensorType::f32([b]))?;
            let n = g.max(n, one)?;
            g.div(s, n)
        };
        let mlm_loss = per_ex(g, nll)?; // (B,)
        let mlm_acc = per_ex(g, hit)?;
        let total = g.reduce_sum(nll, &[0, 1])?;
        let count = g.reduce_sum(w, &[0, 1])?;
        let one = g.scalar(1.0, DType::F32)?;
        let count = g.max(count, one)?;
        let mlm_mean = g.div(total, count)?;
        let nsp_nll = g.softmax_cross_entropy(nsp, nsp_labels)?; // (B,)
        let nsp_hit = g.argmax(nsp, 1)?;
        let nsp_hit = g.eq(nsp_hit, nsp_labels)?;
        let nsp_hit = g.convert(nsp_hit, DType::F32)?;
        let nsp_mean = g.mean_all(nsp_nll)?;
        let loss = g.add(mlm_mean, nsp_mean)?;
        Ok(Forward {
            inputs: vec![tokens, segments, mask, mlm_labels, nsp_labels],
            loss,
            per_example: vec![
                ("mlm_loss".into(), mlm_loss),
                ("mlm_accuracy".into(), mlm_acc),
                ("nsp_loss".into(), nsp_nll),
                ("nsp_accuracy".into(), nsp_hit),
            ],
            rng_seed: seed,
            updates: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::interp::{eval, HostTensor};

    fn tiny() -> BertConfig {
        BertConfig::from_hf_json(
            r#"{"vocab_size": 13, "hidden_size": 8, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 16,
                "max_position_embeddings": 6, "type_vocab_size": 2,
                "architectures": ["BertModel"], "model_type": "bert"}"#,
            4,
        )
        .unwrap()
    }

    #[test]
    fn parameter_count_and_names_follow_bert() {
        let mut g = Graph::new("bert");
        let mut p = Params::new();
        let f = Bert(tiny())
            .forward(&mut g, &mut p, 3, Mode::Train)
            .unwrap();
        graph::verify(&g).unwrap();
        let (v, d, i, l, pos) = (13, 8, 16, 2, 6);
        let emb = v * d + pos * d + 2 * d + 2 * d;
        let block = 4 * (d * d + d) + 2 * (2 * d) + (d * i + i) + (i * d + d);
        let heads = (d * d + d) + (d * d + d) + 2 * d + v + (d * 2 + 2);
        assert_eq!(p.total(), emb + l * block + heads);
        assert_eq!(f.inputs.len(), 5);
        for n in ["h1.attn.q.w", "h0.ln2.g", "pooler.w", "mlm.bias", "nsp.w"] {
            assert!(p.specs.iter().any(|s| s.name == n), "{n}");
        }
        let q = p.specs.iter().find(|s| s.name == "h0.attn.q.w").unwrap();
        assert_eq!(q.ty.dims(), &[8, 2, 4]);
    }

    #[test]
    fn padded_keys_do_not_change_real_tokens() {
        let model = Bert(tiny());
        let mut g = Graph::new("bert");
        let mut p = Params::new();
        let ty = TensorType::new(DType::I32, [1, 4]);
        let ins: Vec<NodeId> = ["tokens", "segments", "mask"]
            .iter()
            .map(|n| g.input(n, ty.clone()).unwrap())
            .collect();
        let e = model
            .encode(&mut g, &mut p, ins[0], ins[1], ins[2], None)
            .unwrap();
        g.set_outputs(&[e.hidden]).unwrap();
        let run = |tokens: &[i32], mask: &[i32]| {
            let mut args = vec![
                HostTensor::i32(&[1, 4], tokens).unwrap(),
                HostTensor::i32(&[1, 4], &[0, 0, 1, 1]).unwrap(),
                HostTensor::i32(&[1, 4], mask).unwrap(),
            ];
            for s in &p.specs {
                let v = s.initial_values(1);
                args.push(
                    HostTensor::new(s.ty.clone(), v.iter().map(|&x| x as f64).collect()).unwrap(),
                );
            }
            eval(&g, &args).unwrap()[0].data.clone()
        };
        // Tokens 2 and 3 masked: changing them leaves tokens 0 and 1 exactly as they were.
        let a = run(&[1, 2, 3, 4], &[1, 1, 0, 0]);
        let b = run(&[1, 2, 9, 0], &[1, 1, 0, 0]);
        assert_eq!(a[..16], b[..16]);
        // Unmasked, they are seen (bidirectional: token 0 attends to token 3).
        let c = run(&[1, 2, 3, 4], &[1, 1, 1, 1]);
        let d = run(&[1, 2, 3, 0], &[1, 1, 1, 1]);
        assert_ne!(c[..8], d[..8]);
    }

    /// Gradients of `sum(hidden * r) + sum(pooled * s)` w.r.t. every parameter of a
    /// 3-block reversible BERT (dropout on, padded keys), rebuilt or plain.
    fn reversible_gradients(stack: RevStack) -> Vec<Vec<f64>> {
        let mut c = tiny();
        c.reversible = true;
        c.num_hidden_layers = 3;
        c.hidden_dropout_prob = 0.2;
        c.attention_probs_dropout_prob = 0.1;
        let model = Bert(c);
        let mut g = Graph::new("bert");
        let mut p = Params::new();
        let ty = TensorType::new(DType::I32, [2, 4]);
        let ins: Vec<NodeId> = ["tokens", "segments", "mask"]
            .iter()
            .map(|n| g.input(n, ty.clone()).unwrap())
            .collect();
        let seed = g.input("seed", TensorType::scalar(DType::U32)).unwrap();
        let e = model
            .encode_with(&mut g, &mut p, ins[0], ins[1], ins[2], Some(seed), stack)
            .unwrap();
        let mut rng = graph::gradcheck::Lcg::new(2);
        let mut dot = |g: &mut Graph, y: NodeId| {
            let dims = g.dims(y).unwrap().to_vec();
            let n = dims.iter().product::<i64>();
            let r: Vec<f32> = (0..n).map(|_| rng.next(-1.0, 1.0) as f32).collect();
            let r = g.constant_f32(dims, r).unwrap();
            let m = g.mul(y, r).unwrap();
            g.sum_all(m).unwrap()
        };
        let (a, b) = (dot(&mut g, e.hidden), dot(&mut g, e.pooled));
        let loss = g.add(a, b).unwrap();
        let wrt = g.parameters();
        let (mut gg, grads) = graph::autodiff::grad(&g, loss, &wrt).unwrap();
        gg.set_outputs(&grads).unwrap();
        graph::verify(&gg).unwrap();
        let mut args = vec![
            HostTensor::i32(&[2, 4], &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
            HostTensor::i32(&[2, 4], &[0, 0, 1, 1, 0, 1, 1, 1]).unwrap(),
            HostTensor::i32(&[2, 4], &[1, 1, 1, 0, 1, 1, 1, 1]).unwrap(),
            HostTensor::new(TensorType::scalar(DType::U32), vec![9.0]).unwrap(),
        ];
        for s in &p.specs {
            let v = s.initial_values(3);
            args.push(
                HostTensor::new(s.ty.clone(), v.iter().map(|&x| x as f64).collect()).unwrap(),
            );
        }
        assert!(p.specs.iter().any(|s| s.name == "ln_f.g"));
        eval(&gg, &args)
            .unwrap()
            .into_iter()
            .map(|t| t.data)
            .collect()
    }

    #[test]
    fn reversible_bert_gradients_equal_the_plain_blocks() {
        let rev = reversible_gradients(RevStack::Rebuild);
        let plain = reversible_gradients(RevStack::Plain);
        assert_eq!(rev.len(), plain.len());
        let max = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let global = plain.iter().map(|b| max(b)).fold(0.0, f64::max);
        let mut zero = 0;
        for (i, (a, b)) in rev.iter().zip(&plain).enumerate() {
            let diff = a
                .iter()
                .zip(b)
                .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            // The key biases' gradient is zero in exact arithmetic (softmax ignores a
            // per-query constant): compared at the global scale.
            let scale = max(b);
            let scale = if scale < 1e-9 * global {
                zero += 1;
                global
            } else {
                scale
            };
            assert!(
                diff <= 1e-9 * scale,
                "gradient {i}: {diff} at scale {scale}"
            );
        }
        assert_eq!(zero, 3, "one key bias per block");
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let base = tiny();
        let err = |f: fn(&mut BertConfig)| {
            let mut c = base.clone();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(err(|c| c.num_attention_heads = 3).contains("num_attention_heads (3)"));
        assert!(err(|c| c.seq_len = 7).contains("max_position_embeddings (6)"));
        assert!(err(|c| c.hidden_dropout_prob = 1.0).contains("hidden_dropout_prob"));
        let e =
            BertConfig::from_hf_json(r#"{"hidden_size": 8, "hidden_act": "relu"}"#, 4).unwrap_err();
        assert!(e.contains("relu"), "{e}");
        let e = BertConfig::from_hf_json(
            r#"{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 4, "position_embedding_type": "relative_key"}"#,
            4,
        )
        .unwrap_err();
        assert!(e.contains("relative_key"), "{e}");
    }
}
