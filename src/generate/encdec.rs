//! KV-cached decoding of the encoder–decoder: an encode program computes each decoder layer's
//! cross-attention keys and values once per source; a one-token decode program (caches
//! donated, updated in place) does the rest. The decoder starts from the pad token.

use anyhow::{bail, Result};
use graph::{DType, Graph, NodeId, TensorType};
use models::encdec::{EncDec, EncDecConfig};
use models::Params;
use nn::kv_cache::KvCache;
use runtime::{Buffer, Client};

use super::program::{DeviceParams, Program};
use super::search::Decoder;

pub struct CachedEncDec {
    client: Client,
    params: DeviceParams,
    encode: Program,
    decode: Program,
    cfg: EncDecConfig,
    batch: usize,
    /// Cross-attention k, v per layer, then the source mask.
    memory: Vec<Buffer>,
    caches: Vec<Buffer>,
    pos: usize,
}

impl CachedEncDec {
    pub fn new(
        client: &Client,
        cfg: &EncDecConfig,
        params: DeviceParams,
        batch: usize,
    ) -> Result<CachedEncDec> {
        let m = EncDec(cfg.clone());
        m.validate().map_err(anyhow::Error::msg)?;
        let (b, s, v) = (batch as i64, cfg.src_len as i64, cfg.vocab_size as i64);
        let hd = (cfg.d_model / cfg.n_heads) as i64;
        let mem_ty = KvCache::tensor_type(b, cfg.n_heads as i64, s, hd);
        // Encode: src (B, S) -> memory k, v per decoder layer and the source mask.
        let mut g = Graph::new("encdec_encode");
        let mut p = Params::new();
        let src = g.input("src", TensorType::new(DType::I32, [b, s]))?;
        let (memory, mask) = m.memory(&mut g, &mut p, src)?;
        let mut outs: Vec<NodeId> = memory.iter().flat_map(|c| [c.k, c.v]).collect();
        outs.push(mask);
        g.set_outputs(&outs)?;
        let encode = Program::compile(client, &g, &p, &params, &[])?;
        // Decode one token per row at column `pos`.
        let mut g = Graph::new("encdec_decode");
        let mut p = Params::new();
        let tokens = g.input("tokens", TensorType::new(DType::I32, [b, 1]))?;
        let pos = g.input("pos", TensorType::scalar(DType::I32))?;
        let mut mem = Vec::new();
        for l in 0..cfg.dec_layers {
            mem.push(KvCache {
                k: g.input(&format!("mk{l}"), mem_ty.clone())?,
                v: g.input(&format!("mv{l}"), mem_ty.clone())?,
            });
        }
        let mask = g.input("mask", TensorType::new(DType::Bool, [b, s]))?;
        let mut ins = Vec::new();
        for l in 0..cfg.dec_layers {
            ins.push(KvCache {
                k: g.input(&format!("k{l}"), m.cache_type(batch))?,
                v: g.input(&format!("v{l}"), m.cache_type(batch))?,
            });
        }
        let (logits, caches) = m.decode_cached(&mut g, &mut p, tokens, pos, &mem, mask, &ins)?;
        let row = g.reshape(logits, [b, v])?;
        let mut outs = vec![row];
        outs.extend(caches.iter().flat_map(|c| [c.k, c.v]));
        g.set_outputs(&outs)?;
        let donate: Vec<(NodeId, usize)> = ins
            .iter()
            .flat_map(|c| [c.k, c.v])
            .enumerate()
            .map(|(i, n)| (n, i + 1))
            .collect();
        let decode = Program::compile(client, &g, &p, &params, &donate)?;
        Ok(CachedEncDec {
            client: client.clone(),
            params,
            encode,
            decode,
            cfg: cfg.clone(),
            batch,
            memory: Vec::new(),
            caches: Vec::new(),
            pos: 0,
        })
    }

    fn run_decode(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if self.pos >= self.cfg.tgt_len {
            bail!(
                "the decoder reads at most {} tokens (model.tgt_len): lower --max-tokens",
                self.cfg.tgt_len
            );
        }
        let b = self.batch as i64;
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let tok = self.client.buffer_from_host(&ids, &[b, 1], 0)?;
        let pos = self.client.buffer_from_host(&[self.pos as i32], &[], 0)?;
        let mut data: Vec<&Buffer> = vec![&tok, &pos];
        data.extend(self.memory.iter());
        data.extend(self.caches.iter());
        let mut out = self.decode.run(&self.params, &data)?;
        self.caches = out.split_off(1);
        self.pos += 1;
        Ok(out[0].to_host::<f32>()?)
    }
}

impl Decoder for CachedEncDec {
    fn batch(&self) -> usize {
        self.batch
    }

    fn vocab(&self) -> usize {
        self.cfg.vocab_size
    }

    /// Encodes the sources (`prompts`, padded to `src_len`) and decodes the start token.
    fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<f32>> {
        let (b, s) = (self.batch, self.cfg.src_len);
        if prompts.len() != b {
            bail!("internal: {} inputs for a batch of {b}", prompts.len());
        }
        let pad = self.cfg.pad_id as i32;
        let mut ids = vec![pad; b * s];
        for (r, p) in prompts.iter().enumerate() {
            if p.is_empty() || p.len() > s {
                bail!(
                    "--input is {} tokens but the encoder reads 1 to {s} (model.src_len)",
                    p.len()
                );
            }
            if let Some(bad) = p.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
                bail!("--input has token {bad}, outside the model's vocabulary");
            }
            for (j, &t) in p.iter().enumerate() {
                ids[r * s + j] = t as i32;
            }
        }
        let src = self
            .client
            .buffer_from_host(&ids, &[b as i64, s as i64], 0)?;
        self.memory = self.encode.run(&self.params, &[&src])?;
        let m = EncDec(self.cfg.clone());
        let zeros = vec![0f32; m.cache_type(b).shape.num_elements() as usize];
        let dims = m.cache_type(b).dims().to_vec();
        self.caches = (0..2 * self.cfg.dec_layers)
            .map(|_| self.client.buffer_from_host(&zeros, &dims, 0))
            .collect::<Result<_, _>>()?;
        self.pos = 0;
        self.run_decode(&vec![self.cfg.pad_id; b])
    }

    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.run_decode(tokens)
    }

    fn reorder(&mut self, parents: &[usize]) -> Result<()> {
        if parents.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(());
        }
        bail!("beam search is not implemented for encoder-decoder runs yet; leave out --beam")
    }
}
