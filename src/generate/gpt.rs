//! GPT decoders: the KV-cached one `rxla generate` uses (a prefill program and a one-token
//! decode program, each compiled once, the caches donated and updated in place), and the
//! recompute one (the whole window per token) kept as the reference the tests and the bench
//! compare with.

use anyhow::{bail, Result};
use graph::{DType, Graph, NodeId, TensorType};
use models::gpt::{Gpt, GptConfig};
use models::Params;
use nn::kv_cache::KvCache;
use runtime::{Buffer, Client};

use super::program::{DeviceParams, Program};
use super::search::{Decoder, GreedyChunk, GREEDY_CHUNK};

fn check_prompts(prompts: &[Vec<u32>], batch: usize, vocab: usize, context: usize) -> Result<()> {
    if prompts.len() != batch {
        bail!("internal: {} prompts for a batch of {batch}", prompts.len());
    }
    for (i, p) in prompts.iter().enumerate() {
        // The CLI's words: `--prompt`, numbered when several.
        let what = if prompts.len() == 1 || prompts.iter().all(|q| q == p) {
            "--prompt".to_string()
        } else {
            format!("--prompt {}", i + 1)
        };
        if p.is_empty() {
            bail!("{what} is empty: give at least one token of text to continue");
        }
        if p.len() > context {
            bail!(
                "{what} is {} tokens but the model reads at most {context} (model.seq_len): \
                 shorten it",
                p.len()
            );
        }
        if let Some(bad) = p.iter().find(|&&t| t as usize >= vocab) {
            bail!("{what} has token {bad}, outside the model's vocabulary of {vocab}");
        }
    }
    Ok(())
}

/// KV-cached GPT decoding for a batch of `batch` rows. Rows are left-padded to the longest
/// prompt, so all rows write the same cache column each step. When the cache is full, each
/// row restarts from its last `seq_len / 2` tokens (a new prefill), so generation can run
/// past the context like the recompute path (which slides by one token instead).
pub struct CachedGpt {
    client: Client,
    params: DeviceParams,
    prefill: Program,
    decode: Program,
    /// [`GREEDY_CHUNK`] greedy steps in one program, compiled on first use.
    greedy: Option<Program>,
    reorder: Option<Program>,
    cfg: GptConfig,
    batch: usize,
    /// Per layer: k, v `(B, H, T, hd)`.
    caches: Vec<Buffer>,
    start: Option<Buffer>,
    /// The next column to write.
    pos: usize,
    /// Each row's tokens so far (for a restart when the cache is full).
    rows: Vec<Vec<u32>>,
}

impl CachedGpt {
    pub fn new(
        client: &Client,
        cfg: &GptConfig,
        params: DeviceParams,
        batch: usize,
    ) -> Result<CachedGpt> {
        let model = Gpt(cfg.clone());
        model.validate().map_err(anyhow::Error::msg)?;
        // The cache holds dense per-token keys/values: exact for dense and chunked attention
        // (same maths), not for the sparse kernels or the two-stream reversible stack.
        use nn::attention_config::AttentionConfig;
        if !matches!(
            cfg.attention,
            AttentionConfig::Dense | AttentionConfig::Chunked { .. }
        ) || cfg.reversible
        {
            bail!(
                "KV-cached generation needs dense or chunked attention and no reversible stack; \
                 this run has model.attention = {:?}, model.reversible = {}",
                cfg.attention,
                cfg.reversible
            );
        }
        let (b, t, v) = (batch as i64, cfg.seq_len as i64, cfg.vocab_size as i64);
        // Prefill: tokens (B, T) left-padded; logits of column `last` and the caches.
        let mut g = Graph::new("gpt_prefill");
        let mut p = Params::new();
        let tokens = g.input("tokens", TensorType::new(DType::I32, [b, t]))?;
        let start = g.input("start", TensorType::new(DType::I32, [b]))?;
        let last = g.input("last", TensorType::scalar(DType::I32))?;
        let zero = g.scalar(0.0, DType::I32)?;
        let empty: Vec<KvCache> = (0..cfg.n_layers)
            .map(|_| {
                Ok(KvCache {
                    k: g.full(0.0, model.cache_type(batch))?,
                    v: g.full(0.0, model.cache_type(batch))?,
                })
            })
            .collect::<graph::Result<_>>()?;
        let (logits, caches) = model.logits_cached(&mut g, &mut p, tokens, zero, start, &empty)?;
        let row = g.dynamic_slice(logits, &[zero, last, zero], &[b, 1, v])?;
        let row = g.reshape(row, [b, v])?;
        let mut outs = vec![row];
        outs.extend(caches.iter().flat_map(|c| [c.k, c.v]));
        g.set_outputs(&outs)?;
        let prefill = Program::compile(client, &g, &p, &params, &[])?;
        // Decode: one token per row at column `pos`; the caches are donated to the outputs.
        let mut g = Graph::new("gpt_decode");
        let mut p = Params::new();
        // One host upload per token: each row's new token, then the column `pos`.
        let step = g.input("step", TensorType::new(DType::I32, [b + 1]))?;
        let tokens = g.slice_dim(step, 0, 0, b)?;
        let tokens = g.reshape(tokens, [b, 1])?;
        let pos = g.slice_dim(step, 0, b, b + 1)?;
        let pos = g.reshape(pos, [])?;
        let start = g.input("start", TensorType::new(DType::I32, [b]))?;
        let mut ins = Vec::new();
        for l in 0..cfg.n_layers {
            ins.push(KvCache {
                k: g.input(&format!("k{l}"), model.cache_type(batch))?,
                v: g.input(&format!("v{l}"), model.cache_type(batch))?,
            });
        }
        let (logits, caches) = model.logits_cached(&mut g, &mut p, tokens, pos, start, &ins)?;
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
        Ok(CachedGpt {
            client: client.clone(),
            params,
            prefill,
            decode,
            greedy: None,
            reorder: None,
            cfg: cfg.clone(),
            batch,
            caches: Vec::new(),
            start: None,
            pos: 0,
            rows: vec![Vec::new(); batch],
        })
    }

    /// `GREEDY_CHUNK` decode steps unrolled in one program: each step's argmax (first
    /// maximum, as the host's) is the next step's token, so one call makes that many greedy
    /// tokens and the per-call cost (dispatch, uploads, waits) is paid once. Inputs: `step`
    /// `[tokens (B), pos]`, `start`, the caches (donated); outputs: logits `(K, B, V)`,
    /// tokens `(K, B)` i32, the caches.
    fn greedy_program(&mut self) -> Result<&Program> {
        if self.greedy.is_none() {
            let model = Gpt(self.cfg.clone());
            let (b, v) = (self.batch as i64, self.cfg.vocab_size as i64);
            let mut g = Graph::new("gpt_decode_greedy");
            let mut p = Params::new();
            let step = g.input("step", TensorType::new(DType::I32, [b + 1]))?;
            let start = g.input("start", TensorType::new(DType::I32, [b]))?;
            let mut caches = Vec::new();
            for l in 0..self.cfg.n_layers {
                caches.push(KvCache {
                    k: g.input(&format!("k{l}"), model.cache_type(self.batch))?,
                    v: g.input(&format!("v{l}"), model.cache_type(self.batch))?,
                });
            }
            let ins: Vec<NodeId> = caches.iter().flat_map(|c| [c.k, c.v]).collect();
            let w = model.declare_cached(&mut g, &mut p)?;
            let tok = g.slice_dim(step, 0, 0, b)?;
            let mut tokens = g.reshape(tok, [b, 1])?;
            let pos0 = g.slice_dim(step, 0, b, b + 1)?;
            let pos0 = g.reshape(pos0, [])?;
            let (mut all_logits, mut all_tokens) = (Vec::new(), Vec::new());
            for k in 0..GREEDY_CHUNK {
                let off = g.scalar(k as f64, DType::I32)?;
                let pos = g.add(pos0, off)?;
                let (logits, next) = model.apply_cached(&mut g, &w, tokens, pos, start, &caches)?;
                caches = next;
                let row = g.reshape(logits, [b, v])?;
                let pick = g.argmax(row, 1)?; // (B,) i32
                all_logits.push(g.reshape(row, [1, b, v])?);
                all_tokens.push(g.reshape(pick, [1, b])?);
                tokens = g.reshape(pick, [b, 1])?;
            }
            let mut outs = vec![
                g.concatenate(&all_logits, 0)?,
                g.concatenate(&all_tokens, 0)?,
            ];
            outs.extend(caches.iter().flat_map(|c| [c.k, c.v]));
            g.set_outputs(&outs)?;
            let donate: Vec<(NodeId, usize)> =
                ins.iter().enumerate().map(|(i, &n)| (n, i + 2)).collect();
            self.greedy = Some(Program::compile_decode(
                &self.client,
                &g,
                &p,
                &self.params,
                &donate,
                self.batch,
            )?);
        }
        Ok(self.greedy.as_ref().expect("just compiled"))
    }

    /// Row `b` takes row `parents[b]`'s caches: a gather over the batch dim, compiled on
    /// first use (beam search only).
    fn reorder_program(&mut self) -> Result<&Program> {
        if self.reorder.is_none() {
            let model = Gpt(self.cfg.clone());
            let mut g = Graph::new("gpt_reorder");
            let p = Params::new();
            let parents = g.input("parents", TensorType::new(DType::I32, [self.batch as i64]))?;
            let mut ins = Vec::new();
            let mut outs = Vec::new();
            for i in 0..2 * self.cfg.n_layers {
                let c = g.input(&format!("c{i}"), model.cache_type(self.batch))?;
                ins.push((c, i));
                outs.push(g.gather(c, parents)?);
            }
            g.set_outputs(&outs)?;
            self.reorder = Some(Program::compile(&self.client, &g, &p, &self.params, &ins)?);
        }
        Ok(self.reorder.as_ref().expect("just compiled"))
    }

    fn run_prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<f32>> {
        let (b, t) = (self.batch, self.cfg.seq_len);
        let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut ids = vec![0i32; b * t];
        let mut start = vec![0i32; b];
        for (r, p) in prompts.iter().enumerate() {
            let s = longest - p.len();
            start[r] = s as i32;
            for (j, &tok) in p.iter().enumerate() {
                ids[r * t + s + j] = tok as i32;
            }
        }
        let tokens = self
            .client
            .buffer_from_host(&ids, &[b as i64, t as i64], 0)?;
        let startb = self.client.buffer_from_host(&start, &[b as i64], 0)?;
        let last = self
            .client
            .buffer_from_host(&[longest as i32 - 1], &[], 0)?;
        let mut out = self.prefill.run(&self.params, &[&tokens, &startb, &last])?;
        self.caches = out.split_off(1);
        self.start = Some(startb);
        self.pos = longest;
        self.rows = prompts.to_vec();
        Ok(out[0].to_host::<f32>()?)
    }
}

impl Decoder for CachedGpt {
    fn batch(&self) -> usize {
        self.batch
    }

    fn vocab(&self) -> usize {
        self.cfg.vocab_size
    }

    fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<f32>> {
        check_prompts(prompts, self.batch, self.cfg.vocab_size, self.cfg.seq_len)?;
        self.run_prefill(prompts)
    }

    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        for (r, &t) in self.rows.iter_mut().zip(tokens) {
            r.push(t);
        }
        if self.pos == self.cfg.seq_len {
            // The cache is full: restart every row from its last half window.
            let keep = (self.cfg.seq_len / 2).max(1);
            let rows: Vec<Vec<u32>> = self
                .rows
                .iter()
                .map(|r| r[r.len().saturating_sub(keep)..].to_vec())
                .collect();
            return self.run_prefill(&rows);
        }
        let b = self.batch as i64;
        let mut ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        ids.push(self.pos as i32);
        let step = self.client.buffer_from_host(&ids, &[b + 1], 0)?;
        let start = self.start.as_ref().expect("prefilled");
        let mut data: Vec<&Buffer> = vec![&step, start];
        data.extend(self.caches.iter());
        let mut out = self.decode.run(&self.params, &data)?;
        self.caches = out.split_off(1);
        self.pos += 1;
        Ok(out[0].to_host::<f32>()?)
    }

    fn greedy_steps(&mut self, tokens: &[u32]) -> Result<Option<GreedyChunk>> {
        // Only where all of the chunk's columns fit in the cache (else single steps, which
        // restart a full cache).
        if self.pos + GREEDY_CHUNK > self.cfg.seq_len {
            return Ok(None);
        }
        let b = self.batch;
        let mut ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        ids.push(self.pos as i32);
        let step = self.client.buffer_from_host(&ids, &[b as i64 + 1], 0)?;
        self.greedy_program()?;
        let prog = self.greedy.as_ref().expect("compiled");
        let start = self.start.as_ref().expect("prefilled");
        let mut data: Vec<&Buffer> = vec![&step, start];
        data.extend(self.caches.iter());
        let mut out = prog.run(&self.params, &data)?;
        self.caches = out.split_off(2);
        let chosen: Vec<u32> = out[1].to_host::<i32>()?.iter().map(|&t| t as u32).collect();
        let logits = out[0].to_host::<f32>()?;
        // The cache now holds `tokens` and the chunk's first K-1 choices.
        for (r, row) in self.rows.iter_mut().enumerate() {
            row.push(tokens[r]);
            row.extend((0..GREEDY_CHUNK - 1).map(|k| chosen[k * b + r]));
        }
        self.pos += GREEDY_CHUNK;
        Ok(Some(GreedyChunk { logits, chosen }))
    }

    fn reorder(&mut self, parents: &[usize]) -> Result<()> {
        if parents.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(());
        }
        let idx: Vec<i32> = parents.iter().map(|&p| p as i32).collect();
        let pb = self
            .client
            .buffer_from_host(&idx, &[self.batch as i64], 0)?;
        self.reorder_program()?;
        let prog = self.reorder.as_ref().expect("compiled");
        let mut data: Vec<&Buffer> = vec![&pb];
        data.extend(self.caches.iter());
        self.caches = prog.run(&self.params, &data)?;
        self.rows = parents.iter().map(|&p| self.rows[p].clone()).collect();
        // Rows' first columns follow their parents.
        let old = self.start.as_ref().expect("prefilled").to_host::<i32>()?;
        let start: Vec<i32> = parents.iter().map(|&p| old[p]).collect();
        self.start = Some(
            self.client
                .buffer_from_host(&start, &[self.batch as i64], 0)?,
        );
        Ok(())
    }
}

/// The reference: next-token logits of each row's last `seq_len` tokens by the plain
/// training forward, recomputed over the whole window for every token.
pub struct RecomputeGpt {
    client: Client,
    params: DeviceParams,
    program: Program,
    cfg: GptConfig,
    batch: usize,
    rows: Vec<Vec<u32>>,
}

impl RecomputeGpt {
    pub fn new(
        client: &Client,
        cfg: &GptConfig,
        params: DeviceParams,
        batch: usize,
    ) -> Result<RecomputeGpt> {
        let model = Gpt(cfg.clone());
        model.validate().map_err(anyhow::Error::msg)?;
        let (b, t) = (batch as i64, cfg.seq_len as i64);
        let mut g = Graph::new("gpt_next_token");
        let mut p = Params::new();
        let tokens = g.input("tokens", TensorType::new(DType::I32, [b, t]))?;
        let last = g.input("last", TensorType::new(DType::I32, [b]))?;
        let logits = model.logits(&mut g, &mut p, tokens, None)?; // (B, T, V)
                                                                  // Row b's logits at column last[b]: a one-hot mask summed over T (adds exact zeros).
        let full = g.dims(logits)?.to_vec();
        let cols = g.iota(TensorType::new(DType::I32, full.clone()), 1)?;
        let last = g.broadcast_in_dim(last, full.clone(), &[0])?;
        let at = graph::Graph::eq(&mut g, cols, last)?;
        let zeros = g.zeros_like(logits)?;
        let picked = g.select(at, logits, zeros)?;
        let row = g.reduce_sum(picked, &[1])?; // (B, V)
        g.set_outputs(&[row])?;
        let program = Program::compile(client, &g, &p, &params, &[])?;
        Ok(RecomputeGpt {
            client: client.clone(),
            params,
            program,
            cfg: cfg.clone(),
            batch,
            rows: Vec::new(),
        })
    }

    fn run(&self) -> Result<Vec<f32>> {
        let (b, t) = (self.batch, self.cfg.seq_len);
        let mut ids = vec![0i32; b * t]; // right padding: causal attention never sees it
        let mut last = vec![0i32; b];
        for (r, row) in self.rows.iter().enumerate() {
            let w = &row[row.len().saturating_sub(t)..];
            for (j, &tok) in w.iter().enumerate() {
                ids[r * t + j] = tok as i32;
            }
            last[r] = w.len() as i32 - 1;
        }
        let tok = self
            .client
            .buffer_from_host(&ids, &[b as i64, t as i64], 0)?;
        let lastb = self.client.buffer_from_host(&last, &[b as i64], 0)?;
        let out = self.program.run(&self.params, &[&tok, &lastb])?;
        Ok(out[0].to_host::<f32>()?)
    }
}

impl Decoder for RecomputeGpt {
    fn batch(&self) -> usize {
        self.batch
    }

    fn vocab(&self) -> usize {
        self.cfg.vocab_size
    }

    fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<f32>> {
        check_prompts(prompts, self.batch, self.cfg.vocab_size, self.cfg.seq_len)?;
        self.rows = prompts.to_vec();
        self.run()
    }

    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        for (r, &t) in self.rows.iter_mut().zip(tokens) {
            r.push(t);
        }
        self.run()
    }

    fn reorder(&mut self, parents: &[usize]) -> Result<()> {
        self.rows = parents.iter().map(|&p| self.rows[p].clone()).collect();
        Ok(())
    }
}
