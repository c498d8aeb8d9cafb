//! Decoding strategies over any [`Decoder`] (a model that turns a batch of prompts into
//! next-token logits and then takes one token per row at a time): sampling (greedy,
//! temperature, top-k, top-p) with EOS and max tokens, and beam search.

use std::time::Instant;

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};

/// A batch of rows that each extend by one token per step.
pub trait Decoder {
    /// Rows per call (the compiled batch).
    fn batch(&self) -> usize;
    fn vocab(&self) -> usize;
    /// Starts every row from its prompt; returns each row's next-token logits (`B × V`).
    fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<f32>>;
    /// Appends `tokens[b]` to row `b`; returns the next-token logits (`B × V`).
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
    /// Row `b` becomes a copy of row `parents[b]` (beam search).
    fn reorder(&mut self, parents: &[usize]) -> Result<()>;
    /// [`GREEDY_CHUNK`] greedy steps in one call, where the decoder can: appends
    /// `tokens[b]` to row `b`, then repeatedly takes the argmax of the next-token logits as
    /// the next token. `None`: not here (then the caller steps one token at a time).
    fn greedy_steps(&mut self, _tokens: &[u32]) -> Result<Option<GreedyChunk>> {
        Ok(None)
    }
}

/// Greedy tokens per [`Decoder::greedy_steps`] call.
pub const GREEDY_CHUNK: usize = 8;

/// What [`Decoder::greedy_steps`] made: step `k`'s logits (`K × B × V`) and its argmax
/// (`K × B`, the token fed to step `k + 1`).
pub struct GreedyChunk {
    pub logits: Vec<f32>,
    pub chosen: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    pub top_k: Option<usize>,
    /// Nucleus sampling: the smallest set of most likely tokens whose probability reaches p.
    pub top_p: Option<f64>,
    pub seed: u64,
    /// A row stops when it produces this token (not included in its output).
    pub eos: Option<u32>,
}

impl SampleOptions {
    pub fn greedy(max_tokens: usize) -> SampleOptions {
        SampleOptions {
            max_tokens,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
            eos: None,
        }
    }

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
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                bail!("--top-p {p}: use a probability in (0, 1] (1 keeps every token)");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct BeamOptions {
    pub beam: usize,
    /// Hypotheses are ranked by log-probability / length^length_penalty (0: no
    /// normalisation; > 0 favours longer ones).
    pub length_penalty: f64,
    pub max_tokens: usize,
    pub eos: Option<u32>,
}

impl BeamOptions {
    pub fn validate(&self) -> Result<()> {
        if self.beam == 0 {
            bail!("--beam 0 keeps no hypothesis: use 1 or more (1 = greedy)");
        }
        if !self.length_penalty.is_finite() {
            bail!(
                "--length-penalty {}: use a finite number (1 = average log-probability)",
                self.length_penalty
            );
        }
        Ok(())
    }
}

/// What a generation produced, with its timings.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    /// New tokens per row (without the prompt and the EOS).
    pub tokens: Vec<Vec<u32>>,
    /// Prefill plus the first token's choice.
    pub time_to_first_token_s: f64,
    /// Time of the decode steps after the first token, and how many tokens they made
    /// (every row counts, finished ones included, since the batch computes them).
    pub decode_s: f64,
    pub decode_tokens: usize,
}

impl Generation {
    pub fn tokens_per_s(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_s.max(1e-9)
    }
}

/// Sees each step: its index, logits (`B × V`) and choices (`None`: a finished row).
pub type OnStep<'a> = dyn FnMut(usize, &[f32], &[Option<u32>]) + 'a;

/// Samples `opts.max_tokens` tokens (fewer where EOS comes first) for every prompt;
/// `on_step(step, logits, chosen)` sees each step's logits (`B × V`) and choices (`None`
/// for a finished row), e.g. to stream the text as it is produced.
pub fn sample(
    dec: &mut dyn Decoder,
    prompts: &[Vec<u32>],
    opts: &SampleOptions,
    on_step: &mut OnStep,
) -> Result<Generation> {
    opts.validate()?;
    let (b, v) = (dec.batch(), dec.vocab());
    if prompts.len() != b {
        bail!("internal: {} prompts for a batch of {b}", prompts.len());
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let t0 = Instant::now();
    let mut out = Generation {
        tokens: vec![Vec::new(); b],
        ..Default::default()
    };
    if opts.max_tokens == 0 {
        return Ok(out);
    }
    let mut logits = dec.prefill(prompts)?;
    let mut done = vec![false; b];
    let mut last: Vec<u32> = prompts.iter().map(|p| *p.last().unwrap_or(&0)).collect();
    let mut t1 = t0;
    // Greedy steps the decoder already made in one call: (logits, its argmax) per step.
    let mut ahead: std::collections::VecDeque<(Vec<f32>, Vec<u32>)> = Default::default();
    let mut device_pick: Option<Vec<u32>> = None;
    for step in 0..opts.max_tokens {
        let chosen: Vec<Option<u32>> = (0..b)
            .map(|r| {
                if done[r] {
                    return None;
                }
                let t = match &device_pick {
                    Some(d) => d[r],
                    None => pick(&logits[r * v..(r + 1) * v], opts, &mut rng) as u32,
                };
                if Some(t) == opts.eos {
                    done[r] = true;
                    return None;
                }
                out.tokens[r].push(t);
                last[r] = t;
                Some(t)
            })
            .collect();
        on_step(step, &logits, &chosen);
        if step == 0 {
            t1 = Instant::now();
            out.time_to_first_token_s = (t1 - t0).as_secs_f64();
        } else {
            out.decode_tokens += b;
        }
        if step + 1 == opts.max_tokens || done.iter().all(|&d| d) {
            break;
        }
        if let Some((l, d)) = ahead.pop_front() {
            (logits, device_pick) = (l, Some(d));
            continue;
        }
        device_pick = None;
        if opts.temperature <= 0.0 && opts.max_tokens - step > GREEDY_CHUNK {
            if let Some(c) = dec.greedy_steps(&last)? {
                for k in 0..GREEDY_CHUNK {
                    ahead.push_back((
                        c.logits[k * b * v..(k + 1) * b * v].to_vec(),
                        c.chosen[k * b..(k + 1) * b].to_vec(),
                    ));
                }
                let (l, d) = ahead.pop_front().expect("a chunk has steps");
                (logits, device_pick) = (l, Some(d));
                continue;
            }
        }
        logits = dec.step(&last)?;
    }
    out.decode_s = t1.elapsed().as_secs_f64();
    Ok(out)
}

/// Samples an index from logits with temperature, top-k and top-p (greedy at
/// temperature 0).
pub fn pick(logits: &[f32], opts: &SampleOptions, rng: &mut impl Rng) -> usize {
    if opts.temperature <= 0.0 {
        return argmax(logits);
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if let Some(k) = opts.top_k {
        idx.truncate(k.max(1));
    }
    let m = logits[idx[0]] as f64;
    let mut w: Vec<f64> = idx
        .iter()
        .map(|&i| ((logits[i] as f64 - m) / opts.temperature).exp())
        .collect();
    if let Some(p) = opts.top_p {
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        let keep = w
            .iter()
            .position(|&wi| {
                acc += wi / total;
                acc >= p
            })
            .map_or(w.len(), |i| i + 1);
        w.truncate(keep);
    }
    let total: f64 = w.iter().sum();
    let mut r = rng.gen::<f64>() * total;
    for (k, &wi) in w.iter().enumerate() {
        r -= wi;
        if r <= 0.0 {
            return idx[k];
        }
    }
    idx[w.len() - 1]
}

/// The first index of the largest logit.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in logits.iter().enumerate() {
        if *x > logits[best] {
            best = i;
        }
    }
    best
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
    let lse = m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// A finished beam-search hypothesis.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// New tokens (without the EOS).
    pub tokens: Vec<u32>,
    /// Sum of the tokens' log-probabilities (the EOS's included).
    pub log_prob: f64,
    /// `log_prob / length^length_penalty`, what hypotheses are ranked by.
    pub score: f64,
}

/// Beam search from one prompt with `dec.batch()` = `opts.beam` rows, one hypothesis per
/// row; returns up to `beam` hypotheses, best first. Stops when `beam` hypotheses ended in
/// EOS or after `max_tokens`.
pub fn beam_search(
    dec: &mut dyn Decoder,
    prompt: &[u32],
    opts: &BeamOptions,
) -> Result<Vec<Hypothesis>> {
    opts.validate()?;
    let (k, v) = (opts.beam, dec.vocab());
    if dec.batch() != k {
        bail!("internal: beam {k} on a decoder of batch {}", dec.batch());
    }
    let norm = |h_len: usize, lp: f64| lp / (h_len.max(1) as f64).powf(opts.length_penalty);
    let mut finished: Vec<Hypothesis> = Vec::new();
    if opts.max_tokens == 0 {
        return Ok(finished);
    }
    let mut logits = dec.prefill(&vec![prompt.to_vec(); k])?;
    // Live hypotheses, one per row; at first every row holds the same prompt, so only row 0's
    // continuations are candidates.
    let mut live: Vec<(Vec<u32>, f64)> = vec![(Vec::new(), 0.0)];
    for step in 0..opts.max_tokens {
        let mut cand: Vec<(f64, usize, u32)> = Vec::new();
        for (r, (_, lp)) in live.iter().enumerate() {
            let row = log_softmax(&logits[r * v..(r + 1) * v]);
            for (t, l) in row.into_iter().enumerate() {
                cand.push((lp + l, r, t as u32));
            }
        }
        cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut next: Vec<(Vec<u32>, f64)> = Vec::new();
        let mut parents = Vec::new();
        for (lp, r, t) in cand {
            if next.len() == k {
                break;
            }
            if Some(t) == opts.eos {
                // The EOS counts in the length, as it was predicted.
                let toks = live[r].0.clone();
                let score = norm(toks.len() + 1, lp);
                finished.push(Hypothesis {
                    tokens: toks,
                    log_prob: lp,
                    score,
                });
                continue;
            }
            let mut toks = live[r].0.clone();
            toks.push(t);
            next.push((toks, lp));
            parents.push(r);
        }
        live = next;
        if finished.len() >= k || step + 1 == opts.max_tokens || live.is_empty() {
            break;
        }
        // Rows past the live ones (fewer candidates than the beam) repeat row 0.
        let mut rows = parents.clone();
        rows.resize(k, parents[0]);
        let mut toks: Vec<u32> = live.iter().map(|(t, _)| *t.last().unwrap()).collect();
        toks.resize(k, toks[0]);
        dec.reorder(&rows)?;
        logits = dec.step(&toks)?;
    }
    for (toks, lp) in live {
        let score = norm(toks.len(), lp);
        finished.push(Hypothesis {
            tokens: toks,
            log_prob: lp,
            score,
        });
    }
    finished.sort_by(|a, b| b.score.total_cmp(&a.score));
    finished.truncate(k);
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_respects_greedy_top_k_and_top_p() {
        let logits = [0.0f32, 5.0, 1.0, 4.9];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let greedy = SampleOptions::greedy(1);
        assert_eq!(pick(&logits, &greedy, &mut rng), 1);
        let top2 = SampleOptions {
            temperature: 1.0,
            top_k: Some(2),
            ..greedy.clone()
        };
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[pick(&logits, &top2, &mut rng)] += 1;
        }
        assert!(
            seen[0] == 0 && seen[2] == 0 && seen[1] > 100 && seen[3] > 100,
            "{seen:?}"
        );
        // p(1) = 0.51 here, so top-p 0.5 keeps token 1 alone, 0.9 keeps 1 and 3.
        let top_p = |p| SampleOptions {
            temperature: 1.0,
            top_p: Some(p),
            ..greedy.clone()
        };
        for _ in 0..100 {
            assert_eq!(pick(&logits, &top_p(0.5), &mut rng), 1);
        }
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[pick(&logits, &top_p(0.9), &mut rng)] += 1;
        }
        assert!(seen[0] == 0 && seen[2] == 0 && seen[3] > 100, "{seen:?}");
    }

    #[test]
    fn bad_options_are_named() {
        let o = SampleOptions {
            temperature: f64::NAN,
            ..SampleOptions::greedy(1)
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
        let ok = SampleOptions {
            temperature: 1.0,
            ..o.clone()
        };
        let e = SampleOptions {
            top_k: Some(0),
            ..ok.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--top-k 0"), "{e}");
        for p in [0.0, -0.1, 1.5, f64::NAN] {
            let e = SampleOptions {
                top_p: Some(p),
                ..ok.clone()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(e.contains("--top-p") && e.contains("(0, 1]"), "{e}");
        }
        let beam = BeamOptions {
            beam: 0,
            length_penalty: 1.0,
            max_tokens: 4,
            eos: None,
        };
        let e = beam.validate().unwrap_err().to_string();
        assert!(e.contains("--beam 0"), "{e}");
    }

    /// A fixed table of next-token distributions keyed by the last token: beam search must
    /// find the sequence greedy misses.
    struct Table {
        rows: Vec<u32>,
        batch: usize,
    }

    impl Table {
        fn logits(last: u32) -> Vec<f32> {
            // After 0: 1 (0.6) or 2 (0.4). After 1: 3 or 4 evenly (0.5 each). After 2:
            // 3 almost surely (0.95). So greedy goes 0→1→·, p = 0.3; beam finds 0→2→3, p = 0.38.
            let p: [f32; 5] = match last {
                0 => [0.0, 0.6, 0.4, 0.0, 0.0],
                1 => [0.0, 0.0, 0.0, 0.5, 0.5],
                2 => [0.0, 0.0, 0.0, 0.95, 0.05],
                _ => [0.2, 0.2, 0.2, 0.2, 0.2],
            };
            p.iter().map(|&x| (x.max(1e-9)).ln()).collect()
        }
        fn all(&self) -> Vec<f32> {
            self.rows.iter().flat_map(|&t| Self::logits(t)).collect()
        }
    }

    impl Decoder for Table {
        fn batch(&self) -> usize {
            self.batch
        }
        fn vocab(&self) -> usize {
            5
        }
        fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<f32>> {
            self.rows = prompts.iter().map(|p| *p.last().unwrap()).collect();
            Ok(self.all())
        }
        fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
            self.rows = tokens.to_vec();
            Ok(self.all())
        }
        fn reorder(&mut self, parents: &[usize]) -> Result<()> {
            self.rows = parents.iter().map(|&p| self.rows[p]).collect();
            Ok(())
        }
    }

    #[test]
    fn beam_search_beats_greedy_on_a_known_table() {
        let mut t = Table {
            rows: vec![],
            batch: 1,
        };
        let g = sample(
            &mut t,
            &[vec![0]],
            &SampleOptions::greedy(2),
            &mut |_, _, _| {},
        )
        .unwrap();
        assert_eq!(g.tokens, vec![vec![1, 3]]);
        let mut t = Table {
            rows: vec![],
            batch: 2,
        };
        let opts = BeamOptions {
            beam: 2,
            length_penalty: 0.0,
            max_tokens: 2,
            eos: None,
        };
        let h = beam_search(&mut t, &[0], &opts).unwrap();
        assert_eq!(h[0].tokens, vec![2, 3]);
        assert!((h[0].log_prob - (0.4f64 * 0.95).ln()).abs() < 1e-6, "{h:?}");
        assert_eq!(h[1].tokens, vec![1, 3]); // 0.30 (ties with [1, 4] broken by token id)
                                             // EOS = 3 ends both hypotheses at length 2.
        let h = beam_search(
            &mut t,
            &[0],
            &BeamOptions {
                eos: Some(3),
                max_tokens: 5,
                ..opts
            },
        )
        .unwrap();
        assert_eq!(h[0].tokens, vec![2]);
    }
}
