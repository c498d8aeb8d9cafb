//! `rxla bench-generate`: GPT decode tokens/s with the KV cache and with the recompute
//! reference at each batch size, and the time to first token of a long prompt; one JSON
//! object. Speed does not depend on the weights, so a config's random init serves as well
//! as a trained run.

use anyhow::Result;
use graph::Graph;
use models::gpt::{Gpt, GptConfig};
use models::{Mode, Model, Params};
use runtime::Client;
use serde_json::json;
use train::checkpoint::NamedTensor;

use super::gpt::{CachedGpt, RecomputeGpt};
use super::program::DeviceParams;
use super::search::{sample, Decoder, SampleOptions};

/// Parameters of `cfg`'s GPT at its initialisation from `seed`.
pub fn initial_params(cfg: &GptConfig, seed: u64) -> Result<Vec<NamedTensor>> {
    model_initial_params(&Gpt(cfg.clone()), seed)
}

/// Parameters of any model at its initialisation from `seed` (one seed per tensor).
pub fn model_initial_params<M: Model>(model: &M, seed: u64) -> Result<Vec<NamedTensor>> {
    let mut g = Graph::new("model");
    let mut p = Params::new();
    model.forward(&mut g, &mut p, 1, Mode::Eval)?;
    Ok(p.specs
        .iter()
        .enumerate()
        .map(|(i, s)| NamedTensor {
            name: s.name.clone(),
            dims: s.ty.dims().to_vec(),
            data: s.initial_values(seed.wrapping_add(i as u64)),
        })
        .collect())
}

pub struct GenBenchSpec {
    pub batches: Vec<usize>,
    /// Prompt tokens per row before the timed decode.
    pub prompt_len: usize,
    /// Tokens decoded per row (timed: all but the first).
    pub tokens: usize,
    /// Prompt length for the time to first token.
    pub ttft_prompt_len: usize,
    pub repeats: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Decode tokens/s (median of `repeats`) of greedy generation.
fn decode_rate(dec: &mut dyn Decoder, spec: &GenBenchSpec, vocab: usize) -> Result<f64> {
    let b = dec.batch();
    let prompts: Vec<Vec<u32>> = (0..b)
        .map(|r| {
            (0..spec.prompt_len)
                .map(|i| ((r * 31 + i * 7) % vocab) as u32)
                .collect()
        })
        .collect();
    let opts = SampleOptions::greedy(spec.tokens);
    sample(dec, &prompts, &opts, &mut |_, _, _| {})?; // warm-up
    let mut rates = Vec::new();
    for _ in 0..spec.repeats {
        rates.push(sample(dec, &prompts, &opts, &mut |_, _, _| {})?.tokens_per_s());
    }
    Ok(median(rates))
}

/// Time to first token (median seconds) of one prompt of `ttft_prompt_len` tokens.
fn ttft(dec: &mut dyn Decoder, spec: &GenBenchSpec, vocab: usize) -> Result<f64> {
    let prompt: Vec<u32> = (0..spec.ttft_prompt_len)
        .map(|i| ((i * 13) % vocab) as u32)
        .collect();
    let opts = SampleOptions::greedy(1);
    sample(dec, std::slice::from_ref(&prompt), &opts, &mut |_, _, _| {})?;
    let mut t = Vec::new();
    for _ in 0..spec.repeats {
        let g = sample(dec, std::slice::from_ref(&prompt), &opts, &mut |_, _, _| {})?;
        t.push(g.time_to_first_token_s);
    }
    Ok(median(t))
}

pub fn bench_generate(
    client: &Client,
    cfg: &GptConfig,
    params: &[NamedTensor],
    spec: &GenBenchSpec,
) -> Result<serde_json::Value> {
    let v = cfg.vocab_size;
    let mut rows = Vec::new();
    for &b in &spec.batches {
        let mut cached = CachedGpt::new(client, cfg, DeviceParams::upload(client, params)?, b)?;
        let c = decode_rate(&mut cached, spec, v)?;
        let mut re = RecomputeGpt::new(client, cfg, DeviceParams::upload(client, params)?, b)?;
        let r = decode_rate(&mut re, spec, v)?;
        rows.push(json!({
            "batch": b,
            "cached_tokens_per_s": c,
            "recompute_tokens_per_s": r,
            "speedup": c / r,
        }));
    }
    let mut cached = CachedGpt::new(client, cfg, DeviceParams::upload(client, params)?, 1)?;
    let mut re = RecomputeGpt::new(client, cfg, DeviceParams::upload(client, params)?, 1)?;
    Ok(json!({
        "model": {"seq_len": cfg.seq_len, "d_model": cfg.d_model, "n_layers": cfg.n_layers,
                  "n_heads": cfg.n_heads, "vocab_size": cfg.vocab_size},
        "prompt_len": spec.prompt_len,
        "tokens": spec.tokens,
        "decode": rows,
        "ttft_prompt_len": spec.ttft_prompt_len,
        "cached_time_to_first_token_s": ttft(&mut cached, spec, v)?,
        "recompute_time_to_first_token_s": ttft(&mut re, spec, v)?,
    }))
}
