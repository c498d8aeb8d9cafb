//! Sampling text from a trained GPT. No KV cache: each new token recomputes the forward pass
//! over the last `seq_len` tokens with one compiled fixed-shape program (simple, exact, and
//! fast enough for small models; see the README for tokens/s).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use graph::{DType, Graph, TensorType};
use models::gpt::{Gpt, GptConfig};
use models::Params;
use rand::{Rng, SeedableRng};
use runtime::{Buffer, Client, CompileOptions};

use data::tokenizer::Tokenizer;
use train::checkpoint::{Checkpoint, NamedTensor};
use train::tensor::Tensor;

#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub seed: u64,
}

impl SampleOptions {
    /// Options that would sample nonsense (or nothing) are errors naming the flag.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            bail!(
                "--temperature {}: use a finite number >= 0 (0 = greedy, 1 = the model's \
                 distribution)",
                self.temperature
            );
        }
        if self.top_k == Some(0) {
            bail!("--top-k 0 keeps no token: use 1 or more (1 = greedy), or leave it out");
        }
        Ok(())
    }
}

/// `text` safe for a terminal: control characters other than newline and tab (escape
/// sequences a young model emits as bytes) become U+FFFD, as invalid UTF-8 already has.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// A compiled next-token program with its parameters on device.
pub struct Sampler {
    client: Client,
    exe: runtime::Executable,
    params: Vec<Buffer>,
    /// Argument order: tokens, pos, then params (by `order`).
    order: Vec<Option<usize>>,
    seq_len: usize,
    vocab: usize,
}

impl Sampler {
    pub fn new(client: &Client, cfg: &GptConfig, params: &[NamedTensor]) -> Result<Sampler> {
        let typed: Vec<Tensor> = params.iter().cloned().map(Tensor::from).collect();
        Sampler::new_typed(client, cfg, &typed)
    }

    /// A sampler over stored weights of any dtype: i8 weights with their `.qscale` tensors
    /// (`rxla compress quantize`) run dequantized inside the program.
    pub fn new_typed(client: &Client, cfg: &GptConfig, params: &[Tensor]) -> Result<Sampler> {
        let model = Gpt(cfg.clone());
        model.validate().map_err(anyhow::Error::msg)?;
        let t = cfg.seq_len as i64;
        let mut g = Graph::new("next_token");
        let mut p = Params::new();
        let tokens = g.input("tokens", TensorType::new(DType::I32, [1, t]))?;
        let pos = g.input("pos", TensorType::scalar(DType::I32))?;
        let logits = model.logits(&mut g, &mut p, tokens, None)?; // (1, T, V)
        let zero = g.scalar(0.0, DType::I32)?;
        let row = g.dynamic_slice(logits, &[zero, pos, zero], &[1, 1, cfg.vocab_size as i64])?;
        let row = g.reshape(row, [cfg.vocab_size as i64])?;
        g.set_outputs(&[row])?;
        let want: Vec<(String, Vec<i64>)> = p
            .specs
            .iter()
            .map(|s| (s.name.clone(), s.ty.dims().to_vec()))
            .collect();
        let compressed = params.iter().any(|t| t.dtype() == train::tensor::Dtype::I8)
            || train::compress::lowrank::is_factored(&p.specs, params);
        if !compressed {
            // Same count, names and shapes (the quantized path checks its own).
            let f32s: Vec<NamedTensor> = params
                .iter()
                .map(|t| t.clone().into_f32())
                .collect::<Result<_>>()?;
            Checkpoint::ordered(&f32s, &want, "parameter")?;
        }
        // Quantized weights are dequantized inside the program, factored ones run as two dots.
        let (g, bound) = train::compress::quantize::bind(&g, &p.specs, params)?;
        let mut bufs = Vec::new();
        let mut order = Vec::new();
        for b in &bound {
            order.push(match b {
                train::compress::quantize::BoundArg::Weight(t) => {
                    bufs.push(train::compress::quantize::upload(client, t)?);
                    Some(bufs.len() - 1)
                }
                train::compress::quantize::BoundArg::Other(_) => None,
            });
        }
        let (_, exe) =
            train::exec::compile(client, &g, &Default::default(), &CompileOptions::default())?;
        Ok(Sampler {
            client: client.clone(),
            exe,
            params: bufs,
            order,
            seq_len: cfg.seq_len,
            vocab: cfg.vocab_size,
        })
    }

    /// Next-token logits after `context` (its last `seq_len` tokens).
    pub fn logits(&self, context: &[u32]) -> Result<Vec<f32>> {
        if context.is_empty() {
            bail!("generation needs a non-empty prompt");
        }
        let start = context.len().saturating_sub(self.seq_len);
        let window = &context[start..];
        let mut ids: Vec<i32> = window.iter().map(|&t| t as i32).collect();
        let pos = ids.len() as i32 - 1;
        ids.resize(self.seq_len, 0); // right padding: causal attention never sees it
        let tok = self
            .client
            .buffer_from_host(&ids, &[1, self.seq_len as i64], 0)?;
        let posb = self.client.buffer_from_host(&[pos], &[], 0)?;
        let mut data = [Some(&tok), Some(&posb)].into_iter();
        let args: Vec<&Buffer> = self
            .order
            .iter()
            .map(|o| match o {
                Some(i) => &self.params[*i],
                None => data.next().flatten().expect("two data inputs"),
            })
            .collect();
        let out = self.exe.execute1(&args)?;
        Ok(out[0].to_host::<f32>()?)
    }

    /// Continues `prompt` by `opts.max_tokens` tokens; returns the new tokens and tokens/s.
    pub fn sample(&self, prompt: &[u32], opts: &SampleOptions) -> Result<(Vec<u32>, f64)> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
        let mut ctx = prompt.to_vec();
        let t = Instant::now();
        for _ in 0..opts.max_tokens {
            let logits = self.logits(&ctx)?;
            ctx.push(pick(&logits, opts, &mut rng) as u32);
        }
        let rate = opts.max_tokens as f64 / t.elapsed().as_secs_f64().max(1e-9);
        Ok((ctx[prompt.len()..].to_vec(), rate))
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }
}

/// Samples an index from logits with temperature and top-k (greedy at temperature 0).
pub fn pick(logits: &[f32], opts: &SampleOptions, rng: &mut impl Rng) -> usize {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0)
    };
    if opts.temperature <= 0.0 {
        return argmax();
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if let Some(k) = opts.top_k {
        idx.truncate(k.max(1));
    }
    let m = logits[idx[0]] as f64;
    let w: Vec<f64> = idx
        .iter()
        .map(|&i| ((logits[i] as f64 - m) / opts.temperature).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut r = rng.gen::<f64>() * total;
    for (k, &wi) in w.iter().enumerate() {
        r -= wi;
        if r <= 0.0 {
            return idx[k];
        }
    }
    idx[idx.len() - 1]
}

/// Text after `prompt` from a model and tokenizer.
pub fn continue_text(
    sampler: &Sampler,
    tok: &Tokenizer,
    prompt: &str,
    opts: &SampleOptions,
) -> Result<(String, f64)> {
    let ids = tok.encode(prompt).context("encoding the prompt")?;
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= sampler.vocab()) {
        bail!("prompt token {bad} is outside the model's vocabulary");
    }
    if ids.len() > sampler.seq_len {
        bail!(
            "--prompt is {} tokens but the model reads at most {} (model.seq_len): shorten it",
            ids.len(),
            sampler.seq_len
        );
    }
    let (new, rate) = sampler.sample(&ids, opts)?;
    Ok((tok.decode(&new)?, rate))
}

/// Loads the newest checkpoint of a training run and continues `prompt`.
pub fn from_run(
    client: &Client,
    run: &std::path::Path,
    prompt: &str,
    opts: &SampleOptions,
) -> Result<(String, f64)> {
    opts.validate()?;
    if prompt.is_empty() {
        bail!("--prompt is empty: give the text to continue");
    }
    let root = run.join("checkpoints");
    let dir = train::checkpoint::latest(&root)?.with_context(|| {
        format!(
            "no complete checkpoint in {}: train with --out {} first",
            root.display(),
            run.display()
        )
    })?;
    let (state, params) = train::checkpoint::load_params_typed(&dir).with_context(|| {
        format!(
            "the newest checkpoint {} cannot be loaded; move it away to sample from an older one",
            dir.display()
        )
    })?;
    let cfg: crate::config::TrainConfig = serde_json::from_value(state.config.clone())
        .with_context(|| format!("reading the config stored in {}", dir.display()))?;
    if cfg.model_kind()? != "gpt" {
        bail!(
            "`rxla generate` samples GPT models; {} holds a `{}` model",
            run.display(),
            cfg.model_kind()?
        );
    }
    let gpt: GptConfig = cfg.model_config()?;
    let tok_path = dir.join(data::tokenizer::TOKENIZER_FILE);
    let tok =
        Tokenizer::load(&tok_path).with_context(|| format!("loading {}", tok_path.display()))?;
    let sampler = Sampler::new_typed(client, &gpt, &params)?;
    continue_text(&sampler, &tok, prompt, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_respects_greedy_and_top_k() {
        let logits = [0.0f32, 5.0, 1.0, 4.9];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let greedy = SampleOptions {
            max_tokens: 1,
            temperature: 0.0,
            top_k: None,
            seed: 0,
        };
        assert_eq!(pick(&logits, &greedy, &mut rng), 1);
        let top2 = SampleOptions {
            temperature: 1.0,
            top_k: Some(2),
            ..greedy
        };
        for _ in 0..200 {
            let i = pick(&logits, &top2, &mut rng);
            assert!(i == 1 || i == 3);
        }
    }

    #[test]
    fn bad_options_are_named_and_samples_are_printable() {
        let o = SampleOptions {
            max_tokens: 1,
            temperature: f64::NAN,
            top_k: None,
            seed: 0,
        };
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("--temperature NaN"), "{e}");
        let e = SampleOptions {
            temperature: -1.0,
            ..o.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--temperature -1"), "{e}");
        let e = SampleOptions {
            temperature: 1.0,
            top_k: Some(0),
            ..o.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--top-k 0"), "{e}");
        let bytes = data::tokenizer::Tokenizer::Bytes
            .decode(&[0x6f, 0xff, 0x1b, 0x5b, 0x32, 0x4a, 0x0a])
            .unwrap();
        assert_eq!(printable(&bytes), "o\u{FFFD}\u{FFFD}[2J\n");
    }
}
