//! KV-cached decoding of the encoder–decoder: an encode program computes each decoder layer's
//! cross-attention keys and values once per source; a one-token decode program (caches
//! donated, updated in place) does the rest. The decoder starts from the pad token. Beam
//! search reorders the cache rows with a small gather program. [`RecomputeEncDec`] (the whole
//! teacher-forced forward over the prefix for every token) is the reference the tests compare
//! with.

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
    /// Gathers of the self-attention caches and of the memory (rows of different
    /// sources only), compiled on first use (beam search).
    reorder_caches: Option<Program>,
    reorder_memory: Option<Program>,
    cfg: EncDecConfig,
    batch: usize,
    /// Cross-attention k, v per layer, then the source mask.
    memory: Vec<Buffer>,
    /// Every row encodes the same source (beam search): the memory needs no reordering.
    same_source: bool,
    caches: Vec<Buffer>,
    pos: usize,
}

/// Checks a batch of sources against the encoder's length and the vocabulary; returns them
/// right-padded with `pad_id` to `(B, src_len)`.
fn pad_sources(prompts: &[Vec<u32>], cfg: &EncDecConfig, batch: usize) -> Result<Vec<i32>> {
    let s = cfg.src_len;
    if prompts.len() != batch {
        bail!("internal: {} inputs for a batch of {batch}", prompts.len());
    }
    let mut ids = vec![cfg.pad_id as i32; batch * s];
    for (r, p) in prompts.iter().enumerate() {
        if p.is_empty() || p.len() > s {
            bail!(
                "--input is {} tokens but the encoder reads 1 to {s} (model.src_len): shorten it",
                p.len()
            );
        }
        if let Some(bad) = p.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            bail!(
                "--input has token {bad}, outside the model's vocabulary of {}",
                cfg.vocab_size
            );
        }
        for (j, &t) in p.iter().enumerate() {
            ids[r * s + j] = t as i32;
        }
    }
    Ok(ids)
}

/// A program taking `parents (B,)` and buffers of `types`, returning each buffer's rows
/// gathered by `parents`; the inputs are donated.
fn gather_program(
    client: &Client,
    params: &DeviceParams,
    name: &str,
    batch: usize,
    types: &[TensorType],
) -> Result<Program> {
    let mut g = Graph::new(name);
    let parents = g.input("parents", TensorType::new(DType::I32, [batch as i64]))?;
    let mut donate = Vec::new();
    let mut outs = Vec::new();
    for (i, ty) in types.iter().enumerate() {
        let x = g.input(&format!("x{i}"), ty.clone())?;
        donate.push((x, i));
        outs.push(g.gather(x, parents)?);
    }
    g.set_outputs(&outs)?;
    Program::compile(client, &g, &Params::new(), params, &donate)
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
        let decode = Program::compile_decode(client, &g, &p, &params, &donate, batch)?;
        Ok(CachedEncDec {
            client: client.clone(),
            params,
            encode,
            decode,
            reorder_caches: None,
            reorder_memory: None,
            cfg: cfg.clone(),
            batch,
            memory: Vec::new(),
            same_source: true,
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
        let ids = pad_sources(prompts, &self.cfg, b)?;
        let src = self
            .client
            .buffer_from_host(&ids, &[b as i64, s as i64], 0)?;
        self.memory = self.encode.run(&self.params, &[&src])?;
        self.same_source = prompts.iter().all(|p| *p == prompts[0]);
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
        let b = self.batch;
        if parents.len() != b || parents.iter().any(|&p| p >= b) {
            bail!("internal: reorder {parents:?} of a batch of {b}");
        }
        let idx: Vec<i32> = parents.iter().map(|&p| p as i32).collect();
        let pb = self.client.buffer_from_host(&idx, &[b as i64], 0)?;
        let m = EncDec(self.cfg.clone());
        if self.reorder_caches.is_none() {
            let types = vec![m.cache_type(b); 2 * self.cfg.dec_layers];
            let prog = gather_program(&self.client, &self.params, "encdec_reorder", b, &types)?;
            self.reorder_caches = Some(prog);
        }
        let prog = self.reorder_caches.as_ref().expect("compiled");
        let mut data: Vec<&Buffer> = vec![&pb];
        data.extend(self.caches.iter());
        self.caches = prog.run(&self.params, &data)?;
        if !self.same_source {
            if self.reorder_memory.is_none() {
                let c = &self.cfg;
                let hd = (c.d_model / c.n_heads) as i64;
                let mem = KvCache::tensor_type(b as i64, c.n_heads as i64, c.src_len as i64, hd);
                let mut types = vec![mem; 2 * c.dec_layers];
                types.push(TensorType::new(DType::Bool, [b as i64, c.src_len as i64]));
                let prog = gather_program(
                    &self.client,
                    &self.params,
                    "encdec_reorder_memory",
                    b,
                    &types,
                )?;
                self.reorder_memory = Some(prog);
            }
            let prog = self.reorder_memory.as_ref().expect("compiled");
            let mut data: Vec<&Buffer> = vec![&pb];
            data.extend(self.memory.iter());
            self.memory = prog.run(&self.params, &data)?;
        }
        Ok(())
    }
}

/// The reference: each row's next-token logits by the plain teacher-forced forward of the
/// training step (`EncDec::logits`: the encoder over the source and the decoder over the start
/// token and every token so far, right-padded to `tgt_len`), recomputed for every token.
pub struct RecomputeEncDec {
    client: Client,
    params: DeviceParams,
    program: Program,
    cfg: EncDecConfig,
    batch: usize,
    src: Vec<i32>,
    rows: Vec<Vec<u32>>,
}

impl RecomputeEncDec {
    pub fn new(
        client: &Client,
        cfg: &EncDecConfig,
        params: DeviceParams,
        batch: usize,
    ) -> Result<RecomputeEncDec> {
        let m = EncDec(cfg.clone());
        m.validate().map_err(anyhow::Error::msg)?;
        let (b, s, t) = (batch as i64, cfg.src_len as i64, cfg.tgt_len as i64);
        let mut g = Graph::new("encdec_next_token");
        let mut p = Params::new();
        let src = g.input("src", TensorType::new(DType::I32, [b, s]))?;
        let tgt = g.input("tgt_in", TensorType::new(DType::I32, [b, t]))?;
        let last = g.input("last", TensorType::new(DType::I32, [b]))?;
        let logits = m.logits(&mut g, &mut p, src, tgt, None)?; // (B, T, V)
                                                                // Row b's logits at column last[b]: a one-hot mask summed over T (adds exact zeros).
        let full = g.dims(logits)?.to_vec();
        let cols = g.iota(TensorType::new(DType::I32, full.clone()), 1)?;
        let last = g.broadcast_in_dim(last, full, &[0])?;
        let at = Graph::eq(&mut g, cols, last)?;
        let zeros = g.zeros_like(logits)?;
        let picked = g.select(at, logits, zeros)?;
        let row = g.reduce_sum(picked, &[1])?; // (B, V)
        g.set_outputs(&[row])?;
        let program = Program::compile(client, &g, &p, &params, &[])?;
        Ok(RecomputeEncDec {
            client: client.clone(),
            params,
            program,
            cfg: cfg.clone(),
            batch,
            src: Vec::new(),
            rows: Vec::new(),
        })
    }

    fn run(&self) -> Result<Vec<f32>> {
        let (b, s, t) = (self.batch, self.cfg.src_len, self.cfg.tgt_len);
        let pad = self.cfg.pad_id as i32;
        let mut ids = vec![pad; b * t];
        let mut last = vec![0i32; b];
        for (r, row) in self.rows.iter().enumerate() {
            if row.len() > t {
                bail!("the decoder reads at most {t} tokens (model.tgt_len): lower --max-tokens");
            }
            for (j, &tok) in row.iter().enumerate() {
                ids[r * t + j] = tok as i32;
            }
            last[r] = row.len() as i32 - 1;
        }
        let src = self
            .client
            .buffer_from_host(&self.src, &[b as i64, s as i64], 0)?;
        let tgt = self
            .client
            .buffer_from_host(&ids, &[b as i64, t as i64], 0)?;
        let lastb = self.client.buffer_from_host(&last, &[b as i64], 0)?;
        let out = self.program.run(&self.params, &[&src, &tgt, &lastb])?;
        Ok(out[0].to_host::<f32>()?)
    }
}

impl Decoder for RecomputeEncDec {
    fn batch(&self) -> usize {
        self.batch
    }

    fn vocab(&self) -> usize {
        self.cfg.vocab_size
    }

    fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<f32>> {
        self.src = pad_sources(prompts, &self.cfg, self.batch)?;
        self.rows = vec![vec![self.cfg.pad_id]; self.batch];
        self.run()
    }

    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        for (r, &t) in self.rows.iter_mut().zip(tokens) {
            r.push(t);
        }
        self.run()
    }

    fn reorder(&mut self, parents: &[usize]) -> Result<()> {
        let s = self.cfg.src_len;
        self.rows = parents.iter().map(|&p| self.rows[p].clone()).collect();
        self.src = parents
            .iter()
            .flat_map(|&p| self.src[p * s..(p + 1) * s].to_vec())
            .collect();
        Ok(())
    }
}
