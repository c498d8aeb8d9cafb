//! `rxla generate`: text from a trained run through KV-cached decoding (see
//! [`gpt::CachedGpt`]): one prefill program and one one-token decode program, compiled once,
//! the caches donated and updated in place on device. Sampling (greedy, temperature, top-k,
//! top-p) or beam search, stopping at EOS or after max tokens, streaming text to stdout as it
//! is produced. [`gpt::RecomputeGpt`] (the whole window per token) is the reference the
//! tests and `rxla bench-generate` compare with.

pub mod bench;
pub mod encdec;
pub mod gpt;
pub use crate::program;
pub mod search;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use models::gpt::GptConfig;
use runtime::Client;

use data::tokenizer::Tokenizer;
use train::checkpoint::NamedTensor;

pub use search::{
    beam_search, pick, sample, BeamOptions, Decoder, Generation, Hypothesis, SampleOptions,
};

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

/// A trained run's newest checkpoint: its config, parameters and tokenizer.
pub struct Run {
    pub dir: PathBuf,
    pub config: crate::config::TrainConfig,
    pub params: Vec<NamedTensor>,
    /// The parameters as stored (any dtype): what generation uploads.
    pub stored: Vec<train::tensor::Tensor>,
    pub tokenizer: Tokenizer,
}

impl Run {
    pub fn load(run: &Path) -> Result<Run> {
        if !run.is_dir() {
            bail!(
                "--run {0}: no such run directory, so no complete checkpoint in it: give the \
                 --out directory of `rxla train`, or train with --out {0} first",
                run.display()
            );
        }
        let dir = train::checkpoint::newest(run)?;
        // Parameters only, in their stored dtypes (a compressed run holds i8 weights).
        let (state, stored) = train::checkpoint::load_params_typed(&dir).with_context(|| {
            format!(
                "the newest checkpoint {} cannot be loaded; move it away to sample from an older one",
                dir.display()
            )
        })?;
        let config: crate::config::TrainConfig = serde_json::from_value(state.config.clone())
            .with_context(|| format!("reading the config stored in {}", dir.display()))?;
        let i8 = train::tensor::Dtype::I8;
        if let Some(t) = stored
            .iter()
            .find(|t| !t.dtype().is_float() && t.dtype() != i8)
        {
            bail!(
                "{}: tensor `{}` is {}, not a float (nor an i8 weight with its scales, as \
                 `rxla compress quantize` writes): move the checkpoint away to sample from an \
                 older one",
                dir.join("params.safetensors").display(),
                t.name,
                t.dtype()
            );
        }
        // f32 copies when every tensor is a float (what the benches and references take).
        let params = if stored.iter().all(|t| t.dtype().is_float()) {
            stored
                .iter()
                .map(|t| t.clone().into_f32())
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let tok_path = dir.join(data::tokenizer::TOKENIZER_FILE);
        // Generative QA on SQuAD is byte-level and writes no tokenizer file.
        let qa = config.data.dataset == "squad" && config.model_kind()? == "encdec";
        let tokenizer = match qa && !tok_path.exists() {
            true => Tokenizer::Bytes,
            false => Tokenizer::load(&tok_path)
                .with_context(|| format!("loading {}", tok_path.display()))?,
        };
        Ok(Run {
            dir,
            config,
            params,
            stored,
            tokenizer,
        })
    }

    /// The run's GPT config, or an error naming the model it holds.
    pub fn gpt(&self, run: &Path) -> Result<GptConfig> {
        let kind = self.config.model_kind()?;
        if kind != "gpt" {
            bail!(
                "`rxla generate --prompt` samples GPT models; {} holds a `{kind}` model",
                run.display()
            );
        }
        self.config.model_config()
    }

    pub fn encode(&self, text: &str, what: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            bail!("{what} is empty: give the text to continue");
        }
        self.tokenizer
            .encode(text)
            .with_context(|| format!("encoding {what}"))
    }
}

/// Writes decoded text as tokens arrive; holds back a trailing U+FFFD (a character whose
/// bytes have not all arrived yet).
pub struct TextStream<'a, W: Write> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    printed: usize,
    out: W,
}

impl<'a, W: Write> TextStream<'a, W> {
    pub fn new(tok: &'a Tokenizer, out: W) -> Self {
        TextStream {
            tok,
            ids: Vec::new(),
            printed: 0,
            out,
        }
    }

    pub fn push(&mut self, id: u32) -> Result<()> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids)?;
        let ready = text.trim_end_matches(char::REPLACEMENT_CHARACTER);
        if ready.len() > self.printed && text.is_char_boundary(self.printed) {
            write!(self.out, "{}", printable(&ready[self.printed..]))?;
            self.out.flush()?;
            self.printed = ready.len();
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        let text = self.tok.decode(&self.ids)?;
        if text.len() > self.printed && text.is_char_boundary(self.printed) {
            write!(self.out, "{}", printable(&text[self.printed..]))?;
        }
        writeln!(self.out)?;
        self.out.flush()?;
        Ok(())
    }
}

/// How `rxla generate` decodes.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompts: Vec<String>,
    pub sample: SampleOptions,
    /// Beam search with this many hypotheses instead of sampling.
    pub beam: Option<usize>,
    pub length_penalty: f64,
}

impl GenerateRequest {
    pub fn validate(&self) -> Result<()> {
        self.sample.validate()?;
        if let Some(beam) = self.beam {
            self.beam_options(beam).validate()?;
            if self.prompts.len() != 1 {
                bail!("--beam searches from one --prompt at a time; give one");
            }
        }
        Ok(())
    }

    fn beam_options(&self, beam: usize) -> BeamOptions {
        BeamOptions {
            beam,
            length_penalty: self.length_penalty,
            max_tokens: self.sample.max_tokens,
            eos: self.sample.eos,
        }
    }
}

/// `rxla generate` on a GPT run: one prompt streams its continuation to stdout as it is
/// produced; several are decoded as one batch and printed one per paragraph. Returns the
/// timings.
pub fn generate_gpt(client: &Client, run: &Path, req: &GenerateRequest) -> Result<Generation> {
    req.validate()?;
    let r = Run::load(run)?;
    let cfg = r.gpt(run)?;
    let prompts: Vec<Vec<u32>> = req
        .prompts
        .iter()
        .map(|p| r.encode(p, "--prompt"))
        .collect::<Result<_>>()?;
    let params = program::DeviceParams::upload_stored(client, &r.stored)?;
    let stdout = std::io::stdout();
    if let Some(beam) = req.beam {
        let mut dec = gpt::CachedGpt::new(client, &cfg, params, beam)?;
        let t = std::time::Instant::now();
        let hyps = beam_search(&mut dec, &prompts[0], &req.beam_options(beam))?;
        let best = hyps.first().map(|h| h.tokens.clone()).unwrap_or_default();
        let text = r.tokenizer.decode(&best)?;
        println!("{}{}", req.prompts[0], printable(&text));
        return Ok(Generation {
            tokens: vec![best],
            decode_s: t.elapsed().as_secs_f64(),
            decode_tokens: hyps.first().map_or(0, |h| h.tokens.len()) * beam,
            ..Default::default()
        });
    }
    let mut dec = gpt::CachedGpt::new(client, &cfg, params, prompts.len())?;
    if prompts.len() == 1 {
        let mut out = stdout.lock();
        write!(out, "{}", req.prompts[0])?;
        let mut stream = TextStream::new(&r.tokenizer, out);
        let mut err = None;
        let g = sample(&mut dec, &prompts, &req.sample, &mut |_, _, chosen| {
            if let Some(t) = chosen[0] {
                if let Err(e) = stream.push(t) {
                    err.get_or_insert(e);
                }
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        stream.finish()?;
        return Ok(g);
    }
    let g = sample(&mut dec, &prompts, &req.sample, &mut |_, _, _| {})?;
    for (p, toks) in req.prompts.iter().zip(&g.tokens) {
        println!("{p}{}\n", printable(&r.tokenizer.decode(toks)?));
    }
    Ok(g)
}

/// `rxla generate --input TEXT` on an encoder-decoder run: encodes the input once and
/// streams the decoder's output (at most `model.tgt_len` tokens) to stdout, or, with
/// `--beam K`, prints the best of the beam search's hypotheses.
pub fn generate_seq2seq(
    client: &Client,
    run: &Path,
    input: &str,
    req: &GenerateRequest,
) -> Result<Generation> {
    req.validate()?;
    let r = Run::load(run)?;
    let kind = r.config.model_kind()?;
    if kind != "encdec" {
        bail!(
            "--input is for encoder-decoder runs; {} holds a `{kind}` model: use --prompt",
            run.display()
        );
    }
    let cfg: models::encdec::EncDecConfig = r.config.model_config()?;
    let ids = encode_with_sentinels(&r, input)?;
    let params = program::DeviceParams::upload_stored(client, &r.stored)?;
    let opts = SampleOptions {
        max_tokens: req.sample.max_tokens.min(cfg.tgt_len),
        ..req.sample.clone()
    };
    if let Some(beam) = req.beam {
        let mut dec = encdec::CachedEncDec::new(client, &cfg, params, beam)?;
        let t = std::time::Instant::now();
        let bopts = BeamOptions {
            max_tokens: opts.max_tokens,
            ..req.beam_options(beam)
        };
        let hyps = beam_search(&mut dec, &ids, &bopts)?;
        let best = hyps.first().map(|h| h.tokens.clone()).unwrap_or_default();
        println!("{}", printable(&r.tokenizer.decode(&best)?));
        return Ok(Generation {
            tokens: vec![best],
            decode_s: t.elapsed().as_secs_f64(),
            decode_tokens: hyps.first().map_or(0, |h| h.tokens.len()) * beam,
            ..Default::default()
        });
    }
    let mut dec = encdec::CachedEncDec::new(client, &cfg, params, 1)?;
    let mut stream = TextStream::new(&r.tokenizer, std::io::stdout().lock());
    let mut err = None;
    let g = sample(&mut dec, &[ids], &opts, &mut |_, _, chosen| {
        if let Some(t) = chosen[0] {
            if let Err(e) = stream.push(t) {
                err.get_or_insert(e);
            }
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    stream.finish()?;
    Ok(g)
}

/// SQuAD v1.1 dev EM and F1 (percent) of an encoder-decoder QA run (`data.dataset =
/// "squad"`): greedy answers, ended by EOS, to the first `data.max_eval_windows` dev
/// questions, each read from the start of its context; batches of 16 through the KV cache.
pub fn squad_scores(
    client: &Client,
    run: &Path,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    use data::tasks::qa_seq2seq::{source, EOS};
    let r = Run::load(run)?;
    let cfg: models::encdec::EncDecConfig = r.config.model_config()?;
    let dev = crate::registry::qa_dev_questions(&r.config)?;
    let params = program::DeviceParams::upload_stored(client, &r.stored)?;
    let batch = dev.len().clamp(1, 16);
    let mut dec = encdec::CachedEncDec::new(client, &cfg, params, batch)?;
    let opts = SampleOptions {
        eos: Some(EOS),
        ..SampleOptions::greedy(cfg.tgt_len)
    };
    let t = std::time::Instant::now();
    let mut pairs = Vec::with_capacity(dev.len());
    for chunk in dev.chunks(batch) {
        let mut srcs: Vec<Vec<u32>> = chunk
            .iter()
            .map(|q| {
                source(q, cfg.src_len, 0)
                    .iter()
                    .map(|&t| t as u32)
                    .collect()
            })
            .collect();
        srcs.resize(batch, srcs[0].clone()); // the last batch repeats its first question
        let g = sample(&mut dec, &srcs, &opts, &mut |_, _, _| {})?;
        for (q, toks) in chunk.iter().zip(&g.tokens) {
            let bytes: Vec<u8> = toks.iter().map(|&t| t as u8).collect();
            let golds = q.answers.iter().map(|a| a.0.clone()).collect();
            pairs.push((String::from_utf8_lossy(&bytes).into_owned(), golds));
        }
    }
    let (em, f1) = data::tasks::metrics::squad_em_f1(&pairs);
    let mut out = serde_json::Map::new();
    out.insert("dev_questions".into(), pairs.len().into());
    out.insert("dev_exact_match".into(), em.into());
    out.insert("dev_f1".into(), f1.into());
    out.insert("dev_answer_s".into(), t.elapsed().as_secs_f64().into());
    Ok(out)
}

/// `text` as tokens, with each `<extra_id_K>` (T5's spelling) as the span-corruption sentinel
/// byte `0xFF - K` (see `data::denoise`).
fn encode_with_sentinels(r: &Run, text: &str) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("<extra_id_") {
        let tail = &rest[at + "<extra_id_".len()..];
        let Some(end) = tail.find('>') else { break };
        let Ok(k) = tail[..end].parse::<usize>() else {
            break;
        };
        if k >= data::denoise::MAX_SPANS {
            bail!(
                "--input: <extra_id_{k}>: the sentinels are <extra_id_0> to <extra_id_{}>",
                data::denoise::MAX_SPANS
            );
        }
        if at > 0 {
            ids.extend(r.encode(&rest[..at], "--input")?);
        }
        ids.push(255 - k as u32);
        rest = &tail[end + 1..];
    }
    if !rest.is_empty() {
        ids.extend(r.encode(rest, "--input")?);
    }
    if ids.is_empty() {
        bail!("--input is empty: give the text to transform");
    }
    Ok(ids)
}

/// Loads the newest checkpoint of a GPT run and continues `prompt` (the sample after
/// training); returns the text and decode tokens/s.
pub fn from_run(
    client: &Client,
    run: &Path,
    prompt: &str,
    opts: &SampleOptions,
) -> Result<(String, f64)> {
    opts.validate()?;
    let r = Run::load(run)?;
    let cfg = r.gpt(run)?;
    let ids = r.encode(prompt, "--prompt")?;
    let params = program::DeviceParams::upload_stored(client, &r.stored)?;
    let mut dec = gpt::CachedGpt::new(client, &cfg, params, 1)?;
    let g = sample(&mut dec, &[ids], opts, &mut |_, _, _| {})?;
    Ok((r.tokenizer.decode(&g.tokens[0])?, g.tokens_per_s()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_printable_and_streamed_whole_characters() {
        let bytes = Tokenizer::Bytes
            .decode(&[0x6f, 0xff, 0x1b, 0x5b, 0x32, 0x4a, 0x0a])
            .unwrap();
        assert_eq!(printable(&bytes), "o\u{FFFD}\u{FFFD}[2J\n");
        // "é" is two bytes: nothing is printed after the first, the whole char after both.
        let tok = Tokenizer::Bytes;
        let mut buf = Vec::new();
        {
            let mut s = TextStream::new(&tok, &mut buf);
            s.push(b'a' as u32).unwrap();
            s.push(0xc3).unwrap();
            s.push(0xa9).unwrap();
            s.finish().unwrap();
        }
        assert_eq!(String::from_utf8(buf).unwrap(), "a\u{e9}\n");
    }
}
