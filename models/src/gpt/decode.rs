//! The GPT forward over a key/value cache, for generation: the same parameters (by name) as
//! [`Gpt::logits`], with each block's attention reading and updating its layer's cache.
//! Rows of a batch are left-padded: row `b`'s tokens start at cache column `start[b]`, so
//! every row writes the same column `pos` each step and its position ids are `col - start[b]`.

use graph::{DType, DotDims, Graph, NodeId, TensorType};
use nn::axis::{EMBED, NONE, VOCAB};
use nn::kv_cache::{cached_self_attention, causal_visibility, KvCache};
use nn::linear::Linear;
use nn::{Embedding, Init, Params};

use super::Gpt;

impl Gpt {
    /// One layer's cache type for `batch` rows over the whole context `(B, H, T, hd)`.
    pub fn cache_type(&self, batch: usize) -> TensorType {
        let c = &self.0;
        KvCache::tensor_type(
            batch as i64,
            c.n_heads as i64,
            c.seq_len as i64,
            (c.d_model / c.n_heads) as i64,
        )
    }

    /// Logits `(B, S, V)` of `tokens (B, S)` placed at cache columns `[pos, pos + S)` (`pos`
    /// a scalar i32; `start (B,)` i32 the first real column of each row), and the caches
    /// (one per layer) with these tokens' keys and values written in.
    pub fn logits_cached(
        &self,
        g: &mut Graph,
        p: &mut Params,
        tokens: NodeId,
        pos: NodeId,
        start: NodeId,
        caches: &[KvCache],
    ) -> graph::Result<(NodeId, Vec<KvCache>)> {
        let w = self.declare_cached(g, p)?;
        self.apply_cached(g, &w, tokens, pos, start, caches)
    }

    /// The weights [`Gpt::logits_cached`] reads, declared once so that one program can
    /// run several decode steps over them.
    pub fn declare_cached(&self, g: &mut Graph, p: &mut Params) -> graph::Result<CachedWeights> {
        let c = &self.0;
        let (t, d, v) = (c.seq_len as i64, c.d_model as i64, c.vocab_size as i64);
        let normal = Init::Normal { std: 0.02 };
        let wte = Embedding::new(v, d, normal)
            .axes(&[VOCAB, EMBED])
            .declare(g, p, "wte")?;
        let wpe = Embedding::new(t, d, normal)
            .axes(&[NONE, EMBED])
            .declare(g, p, "wpe")?;
        let blocks = (0..c.n_layers)
            .map(|i| p.scope(&format!("h{i}"), |p| self.declare_block(g, p)))
            .collect::<graph::Result<Vec<_>>>()?;
        let ln_f = self.norm().declare(g, p, "ln_f", d)?;
        let head = if c.tied_head {
            None
        } else {
            Some(
                Linear::new([v])
                    .init(normal)
                    .axes(&[EMBED, VOCAB])
                    .bias(false)
                    .names("lm_head", "")
                    .declare(g, p, "", d)?,
            )
        };
        Ok(CachedWeights {
            wte,
            wpe,
            blocks,
            ln_f,
            head,
        })
    }

    /// [`Gpt::logits_cached`] over weights already declared.
    pub fn apply_cached(
        &self,
        g: &mut Graph,
        w: &CachedWeights,
        tokens: NodeId,
        pos: NodeId,
        start: NodeId,
        caches: &[KvCache],
    ) -> graph::Result<(NodeId, Vec<KvCache>)> {
        let c = &self.0;
        let t = c.seq_len as i64;
        let td = g.dims(tokens)?.to_vec();
        let (b, s) = (td[0], td[1]);
        if caches.len() != c.n_layers {
            return Err(graph::GraphError::Invalid(format!(
                "{} caches for {} layers",
                caches.len(),
                c.n_layers
            )));
        }
        // Position ids (B, S): column minus the row's start (0 on its left padding).
        let cols = g.iota(TensorType::new(DType::I32, [b, s]), 1)?;
        let cols = g.add(cols, pos)?;
        let starts = g.broadcast_in_dim(start, vec![b, s], &[0])?;
        let ids = g.sub(cols, starts)?;
        let zero = g.full(0.0, TensorType::new(DType::I32, [b, s]))?;
        let ids = g.max(ids, zero)?;
        let tok = g.gather(w.wte, tokens)?; // (B, S, D)
        let pe = g.gather(w.wpe, ids)?; // (B, S, D)
        let mut x = g.add(tok, pe)?;
        let visible = causal_visibility(g, start, pos, s, t)?; // (B, S, T)
        let mut out = Vec::with_capacity(c.n_layers);
        for (blk, cache) in w.blocks.iter().zip(caches) {
            let h = blk.ln1.apply(g, x)?;
            let (a, cache) = cached_self_attention(g, &blk.attn, h, *cache, pos, visible)?;
            x = g.add(x, a)?;
            let h = blk.ln2.apply(g, x)?;
            let m = blk.mlp.apply(g, h)?; // (B, S, D)
            x = g.add(x, m)?;
            out.push(cache);
        }
        let x = w.ln_f.apply(g, x)?;
        let logits = match &w.head {
            None => g.dot_general(x, w.wte, DotDims::contract(&[2], &[1]), None)?,
            Some(head) => head.apply(g, x)?,
        }; // (B, S, V)
        Ok((logits, out))
    }
}

/// The decode-time weights of a GPT (see [`Gpt::declare_cached`]).
pub struct CachedWeights {
    wte: NodeId,
    wpe: NodeId,
    blocks: Vec<super::Block>,
    ln_f: nn::norm::LayerNormW,
    head: Option<nn::linear::LinearW>,
}

#[cfg(test)]
mod tests {
    use super::super::GptConfig;
    use super::*;
    use graph::interp::{eval, HostTensor};

    /// Prefilling a left-padded row then decoding one token gives the logits of the plain
    /// forward over the unpadded tokens (the interpreter, no XLA).
    #[test]
    fn cached_logits_match_the_full_forward() {
        let c = GptConfig {
            vocab_size: 11,
            seq_len: 6,
            d_model: 8,
            n_layers: 2,
            n_heads: 2,
            dropout: 0.0,
            tied_head: false,
            attention: Default::default(),
            reversible: false,
            ff_chunks: 1,
        };
        let model = Gpt(c.clone());
        // Full forward over [3, 1, 4, 1] (right-padded to 6).
        let mut g = Graph::new("full");
        let mut p = Params::new();
        let tokens = g.input("t", TensorType::new(DType::I32, [1, 6])).unwrap();
        let full = model.logits(&mut g, &mut p, tokens, None).unwrap();
        g.set_outputs(&[full]).unwrap();
        let params: Vec<(String, HostTensor)> = p
            .specs
            .iter()
            .map(|s| {
                let v = s
                    .initial_values(7)
                    .iter()
                    .map(|&x| x as f64 * 20.0)
                    .collect();
                (s.name.clone(), HostTensor::new(s.ty.clone(), v).unwrap())
            })
            .collect();
        let args = |g: &Graph, p: &Params, data: Vec<HostTensor>| {
            let mut data = data.into_iter();
            g.args()
                .iter()
                .map(|a| match p.specs.iter().position(|s| s.node == *a) {
                    Some(i) => {
                        let name = p.specs[i].name.trim_start_matches("again.");
                        params.iter().find(|(n, _)| n == name).unwrap().1.clone()
                    }
                    None => data.next().unwrap(),
                })
                .collect::<Vec<_>>()
        };
        let a = args(
            &g,
            &p,
            vec![HostTensor::i32(&[1, 6], &[3, 1, 4, 1, 0, 0]).unwrap()],
        );
        let want = eval(&g, &a).unwrap()[0].clone();
        // Cached: the row starts at column 2 (two pad columns); prefill 3 tokens at 0..5,
        // then decode the 4th at column 5.
        let mut g = Graph::new("cached");
        let mut p = Params::new();
        let tokens = g.input("t", TensorType::new(DType::I32, [1, 6])).unwrap();
        let start = g.input("start", TensorType::new(DType::I32, [1])).unwrap();
        let zero = g.scalar(0.0, DType::I32).unwrap();
        let caches: Vec<KvCache> = (0..2)
            .map(|_| KvCache {
                k: g.full(0.0, model.cache_type(1)).unwrap(),
                v: g.full(0.0, model.cache_type(1)).unwrap(),
            })
            .collect();
        let (l0, caches) = model
            .logits_cached(&mut g, &mut p, tokens, zero, start, &caches)
            .unwrap();
        let mut p2 = Params::new();
        let last = g
            .input("last", TensorType::new(DType::I32, [1, 1]))
            .unwrap();
        let five = g.scalar(5.0, DType::I32).unwrap();
        // A second call declares its own parameter nodes (under `again.`), fed the same values.
        let (l1, _) = p2
            .scope("again", |p2| {
                model.logits_cached(&mut g, p2, last, five, start, &caches)
            })
            .unwrap();
        p.specs.extend(p2.specs);
        g.set_outputs(&[l0, l1]).unwrap();
        graph::verify(&g).unwrap();
        let a = args(
            &g,
            &p,
            vec![
                HostTensor::i32(&[1, 6], &[9, 9, 3, 1, 4, 7]).unwrap(),
                HostTensor::i32(&[1], &[2]).unwrap(),
                HostTensor::i32(&[1, 1], &[1]).unwrap(),
            ],
        );
        let out = eval(&g, &a).unwrap();
        let v = 11;
        for (col, pos) in [(2, 0), (3, 1), (4, 2)] {
            let got = &out[0].data[col * v..(col + 1) * v];
            let w = &want.data[pos * v..(pos + 1) * v];
            for (x, y) in got.iter().zip(w) {
                assert!((x - y).abs() < 1e-9, "column {col}: {x} vs {y}");
            }
        }
        for (x, y) in out[1].data.iter().zip(&want.data[3 * v..4 * v]) {
            assert!((x - y).abs() < 1e-9, "decoded: {x} vs {y}");
        }
    }
}
