//! Task heads over a text encoder: sequence (and sentence-pair) classification and
//! extractive span QA. A head sees the encoder only through [`TextEncoder`]: the last hidden
//! states and the pooled `[CLS]` vector. Pairs are the same head on `[CLS] a [SEP] b [SEP]`
//! with segment ids 0/1. Head parameters live under `head.*` (classification) and `qa.*`
//! (span), so pretrained encoder weights load by their own names and heads stay at init.

use graph::{DType, Graph, NodeId, TensorType};
use nn::axis::{EMBED, NONE};
use nn::linear::Linear;
use nn::loss::classification_head;
use nn::{Dropout, Forward, Init, Mode, Model, Params};
use serde::{Deserialize, Serialize};

use crate::bert::Bert;

/// What an encoder gives a head.
pub struct Encoding {
    /// `(B, T, D)`
    pub hidden: NodeId,
    /// `(B, D)`, a learned summary of the sequence (BERT: tanh pooler over `[CLS]`).
    pub pooled: NodeId,
}

/// A text encoder over `tokens`, `segments`, `mask` (i32 `(B, T)`, mask 1 at real tokens).
pub trait TextEncoder {
    fn hidden_size(&self) -> usize;
    fn seq_len(&self) -> usize;
    /// Whether training applies dropout (then a `dropout_seed` input is declared).
    fn has_dropout(&self) -> bool;
    fn encode(
        &self,
        g: &mut Graph,
        p: &mut Params,
        tokens: NodeId,
        segments: NodeId,
        mask: NodeId,
        seed: Option<NodeId>,
    ) -> graph::Result<Encoding>;
}

impl TextEncoder for Bert {
    fn hidden_size(&self) -> usize {
        self.0.hidden_size
    }
    fn seq_len(&self) -> usize {
        self.0.seq_len
    }
    fn has_dropout(&self) -> bool {
        self.0.hidden_dropout_prob > 0.0 || self.0.attention_probs_dropout_prob > 0.0
    }
    fn encode(
        &self,
        g: &mut Graph,
        p: &mut Params,
        tokens: NodeId,
        segments: NodeId,
        mask: NodeId,
        seed: Option<NodeId>,
    ) -> graph::Result<Encoding> {
        let e = Bert::encode(self, g, p, tokens, segments, mask, seed)?;
        Ok(Encoding {
            hidden: e.hidden,
            pooled: e.pooled,
        })
    }
}

/// How a classifier reads one vector off the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The encoder's pooled vector (BERT's `BertForSequenceClassification`).
    #[default]
    Pooled,
    /// The mean of the hidden states over real tokens (sentence-transformers').
    Mean,
    /// The `[CLS]` hidden state.
    Cls,
}

/// Salts of the heads' dropout, apart from the encoder's (which counts up from 0).
const HEAD_SALT: u32 = 1 << 20;

/// The data inputs every head takes first.
fn text_inputs(g: &mut Graph, b: i64, t: i64) -> graph::Result<[NodeId; 3]> {
    let bt = TensorType::new(DType::I32, [b, t]);
    Ok([
        g.input("tokens", bt.clone())?,
        g.input("segments", bt.clone())?,
        g.input("mask", bt)?,
    ])
}

fn seed_input(g: &mut Graph, mode: Mode, dropout: bool) -> graph::Result<Option<NodeId>> {
    Ok(if mode == Mode::Train && dropout {
        Some(g.input("dropout_seed", TensorType::scalar(DType::U32))?)
    } else {
        None
    })
}

/// Mean of `hidden (B, T, D)` over the positions where `mask (B, T)` is nonzero.
fn masked_mean(g: &mut Graph, hidden: NodeId, mask: NodeId) -> graph::Result<NodeId> {
    let dims = g.dims(hidden)?.to_vec(); // [B, T, D]
    let zeros = g.full_like(mask, 0.0)?;
    let real = g.ne(mask, zeros)?;
    let w = g.convert(real, DType::F32)?; // (B, T)
    let wb = g.broadcast_in_dim(w, dims.clone(), &[0, 1])?; // (B, T, D)
    let s = g.mul(hidden, wb)?;
    let s = g.reduce_sum(s, &[1])?; // (B, D)
    let n = g.reduce_sum(w, &[1])?; // (B)
    let one = g.full_like(n, 1.0)?;
    let n = g.max(n, one)?;
    let n = g.broadcast_in_dim(n, vec![dims[0], dims[2]], &[0])?;
    g.div(s, n)
}

/// Sequence classification: pooled / mean / `[CLS]` vector -> dropout -> linear to
/// `classes` logits. Inputs `tokens, segments, mask (B, T)`, `labels (B)`.
pub struct Classifier<E> {
    pub encoder: E,
    pub classes: usize,
    pub pooling: Pooling,
    /// Dropout before the linear layer (HF: `classifier_dropout`, else the hidden dropout).
    pub dropout: f64,
}

impl<E: TextEncoder> Classifier<E> {
    /// Logits `(B, classes)`.
    pub fn logits(
        &self,
        g: &mut Graph,
        p: &mut Params,
        [tokens, segments, mask]: [NodeId; 3],
        seed: Option<NodeId>,
    ) -> graph::Result<NodeId> {
        let d = self.encoder.hidden_size() as i64;
        let e = self.encoder.encode(g, p, tokens, segments, mask, seed)?;
        let v = match self.pooling {
            Pooling::Pooled => e.pooled,
            Pooling::Mean => masked_mean(g, e.hidden, mask)?,
            Pooling::Cls => {
                let b = g.dims(e.hidden)?[0];
                let c = g.slice_dim(e.hidden, 1, 0, 1)?;
                g.reshape(c, [b, d])?
            }
        }; // (B, D)
        let mut salt = HEAD_SALT;
        let v = Dropout { rate: self.dropout }.apply(g, v, seed, &mut salt)?;
        let head = Linear::new([self.classes as i64])
            .init(Init::Normal { std: 0.02 })
            .axes(&[EMBED, NONE])
            .names("w", "b")
            .declare(g, p, "head", d)?;
        head.apply(g, v) // (B, C)
    }
}

impl<E: TextEncoder> Model for Classifier<E> {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward> {
        Ok(self.forward_logits(g, p, batch, mode)?.0)
    }

    /// The class logits `(B, C)`: what a distilled classifier learns from its teacher's.
    fn forward_logits(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<(Forward, Option<NodeId>)> {
        let (b, t) = (batch as i64, self.encoder.seq_len() as i64);
        let ins = text_inputs(g, b, t)?;
        let labels = g.input("labels", TensorType::new(DType::I32, [b]))?;
        let seed = seed_input(g, mode, self.encoder.has_dropout() || self.dropout > 0.0)?;
        let logits = self.logits(g, p, ins, seed)?;
        let (loss, per_example) = classification_head(g, logits, labels)?;
        let mut inputs = ins.to_vec();
        inputs.push(labels);
        let fwd = Forward {
            inputs,
            loss,
            per_example,
            rng_seed: seed,
            updates: Vec::new(),
        };
        Ok((fwd, Some(logits)))
    }
}

/// Extractive span QA: a linear layer to start and end logits per token. Inputs `tokens,
/// segments, mask (B, T)`, `start, end (B)` (token positions; 0 = `[CLS]`: no answer here).
/// Loss: the mean of the start and end cross-entropies (BERT's SQuAD head).
pub struct SpanQa<E> {
    pub encoder: E,
}

impl<E: TextEncoder> SpanQa<E> {
    /// Start and end logits, each `(B, T)`.
    pub fn logits(
        &self,
        g: &mut Graph,
        p: &mut Params,
        [tokens, segments, mask]: [NodeId; 3],
        seed: Option<NodeId>,
    ) -> graph::Result<(NodeId, NodeId)> {
        let d = self.encoder.hidden_size() as i64;
        let e = self.encoder.encode(g, p, tokens, segments, mask, seed)?;
        let qa = Linear::new([2])
            .init(Init::Normal { std: 0.02 })
            .axes(&[EMBED, NONE])
            .names("w", "b")
            .declare(g, p, "qa", d)?;
        let se = qa.apply(g, e.hidden)?; // (B, T, 2)
        let dims = g.dims(se)?.to_vec();
        let mut pick = |i: i64| -> graph::Result<NodeId> {
            let x = g.slice_dim(se, 2, i, i + 1)?;
            g.reshape(x, [dims[0], dims[1]])
        };
        Ok((pick(0)?, pick(1)?))
    }
}

impl<E: TextEncoder> Model for SpanQa<E> {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward> {
        let (b, t) = (batch as i64, self.encoder.seq_len() as i64);
        let ins = text_inputs(g, b, t)?;
        let start = g.input("start", TensorType::new(DType::I32, [b]))?;
        let end = g.input("end", TensorType::new(DType::I32, [b]))?;
        let seed = seed_input(g, mode, self.encoder.has_dropout())?;
        let (ls, le) = self.logits(g, p, ins, seed)?;
        let (loss_s, per_s) = classification_head(g, ls, start)?;
        let (loss_e, per_e) = classification_head(g, le, end)?;
        let loss = g.add(loss_s, loss_e)?;
        let loss = g.mul_scalar(loss, 0.5)?;
        let per_loss = g.add(per_s[0].1, per_e[0].1)?;
        let per_loss = g.mul_scalar(per_loss, 0.5)?;
        // Exact span: both ends right.
        let both = g.mul(per_s[1].1, per_e[1].1)?;
        let mut inputs = ins.to_vec();
        inputs.extend([start, end]);
        Ok(Forward {
            inputs,
            loss,
            per_example: vec![
                ("loss".into(), per_loss),
                ("correct".into(), both),
                ("start_accuracy".into(), per_s[1].1),
                ("end_accuracy".into(), per_e[1].1),
            ],
            rng_seed: seed,
            updates: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bert::BertConfig;
    use graph::interp::{eval, HostTensor};

    fn tiny() -> BertConfig {
        BertConfig::from_hf_json(
            r#"{"vocab_size": 13, "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16,
                "max_position_embeddings": 6, "type_vocab_size": 2}"#,
            4,
        )
        .unwrap()
    }

    /// Evaluates `outs` of a graph built by `build` on tokens/segments/mask, at init.
    fn run(
        build: impl Fn(&mut Graph, &mut Params, [NodeId; 3]) -> Vec<NodeId>,
        tokens: &[i32],
        mask: &[i32],
    ) -> Vec<Vec<f64>> {
        let mut g = Graph::new("t");
        let mut p = Params::new();
        let ins = text_inputs(&mut g, 2, 4).unwrap();
        let outs = build(&mut g, &mut p, ins);
        g.set_outputs(&outs).unwrap();
        let mut args = vec![
            HostTensor::i32(&[2, 4], tokens).unwrap(),
            HostTensor::i32(&[2, 4], &[0, 0, 1, 1, 0, 0, 1, 1]).unwrap(),
            HostTensor::i32(&[2, 4], mask).unwrap(),
        ];
        for s in &p.specs {
            let v = s.initial_values(3);
            args.push(
                HostTensor::new(s.ty.clone(), v.iter().map(|&x| x as f64).collect()).unwrap(),
            );
        }
        eval(&g, &args)
            .unwrap()
            .into_iter()
            .map(|t| t.data)
            .collect()
    }

    #[test]
    fn mean_pooling_ignores_padding_and_heads_have_their_names() {
        let c = Classifier {
            encoder: Bert(tiny()),
            classes: 3,
            pooling: Pooling::Mean,
            dropout: 0.1,
        };
        let logits = |tokens: &[i32]| {
            run(
                |g, p, ins| vec![c.logits(g, p, ins, None).unwrap()],
                tokens,
                &[1, 1, 0, 0, 1, 1, 1, 1],
            )[0]
            .clone()
        };
        let a = logits(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let b = logits(&[1, 2, 9, 0, 5, 6, 7, 8]);
        assert_eq!(a.len(), 6);
        assert_eq!(a, b, "padded tokens changed the pooled logits");
        let mut g = Graph::new("t");
        let mut p = Params::new();
        let f = c.forward(&mut g, &mut p, 2, Mode::Train).unwrap();
        assert_eq!(f.inputs.len(), 4);
        assert!(f.rng_seed.is_some());
        let head = p.specs.iter().find(|s| s.name == "head.w").unwrap();
        assert_eq!(head.ty.dims(), &[8, 3]);
        assert!(p.specs.iter().any(|s| s.name == "h0.attn.q.w"));
    }

    #[test]
    fn span_head_loss_is_the_mean_of_start_and_end_cross_entropies() {
        let qa = SpanQa {
            encoder: Bert(tiny()),
        };
        let mask = [1; 8];
        let out = run(
            |g, p, ins| {
                let (s, e) = qa.logits(g, p, ins, None).unwrap();
                vec![s, e]
            },
            &[1, 2, 3, 4, 5, 6, 7, 8],
            &mask,
        );
        let (s, e) = (&out[0], &out[1]);
        assert_eq!(s.len(), 8);
        // Host cross-entropy of example 0 with start 1, end 2.
        let ce = |l: &[f64], y: usize| {
            let m = l.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = l.iter().map(|x| (x - m).exp()).sum();
            m + z.ln() - l[y]
        };
        let want = 0.5 * (ce(&s[..4], 1) + ce(&e[..4], 2));
        let mut g = Graph::new("t");
        let mut p = Params::new();
        let f = qa.forward(&mut g, &mut p, 2, Mode::Eval).unwrap();
        g.set_outputs(&[f.per_example[0].1]).unwrap();
        let mut args = vec![
            HostTensor::i32(&[2, 4], &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
            HostTensor::i32(&[2, 4], &[0, 0, 1, 1, 0, 0, 1, 1]).unwrap(),
            HostTensor::i32(&[2, 4], &mask).unwrap(),
            HostTensor::i32(&[2], &[1, 0]).unwrap(),
            HostTensor::i32(&[2], &[2, 0]).unwrap(),
        ];
        for sp in &p.specs {
            let v = sp.initial_values(3);
            args.push(
                HostTensor::new(sp.ty.clone(), v.iter().map(|&x| x as f64).collect()).unwrap(),
            );
        }
        let got = eval(&g, &args).unwrap()[0].data[0];
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
