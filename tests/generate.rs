//! KV-cached generation against the recompute reference on the real CPU plugin: the same
//! greedy tokens, per-step logits within 1e-4, for a batch of prompts of different lengths;
//! beam search likewise; EOS; bad input.

use models::gpt::GptConfig;
use runtime::provision::cpu_client;
use runtime::Client;
use rxla::generate::bench::initial_params;
use rxla::generate::gpt::{CachedGpt, RecomputeGpt};
use rxla::generate::program::DeviceParams;
use rxla::generate::{beam_search, sample, BeamOptions, Decoder, SampleOptions};
use train::checkpoint::NamedTensor;

fn cfg() -> GptConfig {
    GptConfig {
        vocab_size: 37,
        seq_len: 24,
        d_model: 32,
        n_layers: 2,
        n_heads: 4,
        dropout: 0.0,
        tied_head: false,
        attention: Default::default(),
        reversible: false,
        ff_chunks: 1,
    }
}

/// Initial parameters with the weights scaled up, so the logits are far from ties.
fn params(c: &GptConfig) -> Vec<NamedTensor> {
    let mut p = initial_params(c, 3).unwrap();
    for t in &mut p {
        if t.dims.len() >= 2 {
            t.data.iter_mut().for_each(|x| *x *= 8.0);
        }
    }
    p
}

fn decoders(client: &Client, batch: usize) -> (CachedGpt, RecomputeGpt) {
    let c = cfg();
    let p = params(&c);
    let up = || DeviceParams::upload(client, &p).unwrap();
    (
        CachedGpt::new(client, &c, up(), batch).unwrap(),
        RecomputeGpt::new(client, &c, up(), batch).unwrap(),
    )
}

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![5, 1, 7],
        vec![2, 9, 30, 4, 4, 11, 0, 36, 8],
        vec![17],
        vec![3, 3, 12, 20, 6, 1],
    ]
}

/// Runs `opts` on a decoder, keeping each step's logits.
fn run(dec: &mut dyn Decoder, opts: &SampleOptions) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let mut steps = Vec::new();
    let g = sample(dec, &prompts(), opts, &mut |_, l, _| steps.push(l.to_vec())).unwrap();
    (g.tokens, steps)
}

#[test]
fn cached_greedy_equals_recompute_for_prompts_of_different_lengths() {
    let client = cpu_client(1).unwrap();
    let (mut cached, mut re) = decoders(&client, 4);
    // The longest prompt (9) plus 15 tokens fills the 24-token context exactly.
    let opts = SampleOptions::greedy(15);
    let (a, la) = run(&mut cached, &opts);
    let (b, lb) = run(&mut re, &opts);
    assert_eq!(a, b);
    assert!(a.iter().all(|t| t.len() == 15));
    // Rows differ (the padding did not leak between rows) and the model is not constant.
    assert_ne!(a[0], a[2]);
    assert!(a[1].iter().any(|&t| t != a[1][0]), "{a:?}");
    assert_eq!(la.len(), 15);
    let mut worst = 0f32;
    for (x, y) in la.iter().flatten().zip(lb.iter().flatten()) {
        worst = worst.max((x - y).abs());
    }
    assert!(worst < 1e-4, "per-step logits differ by {worst}");
    // A second generation on the same programs (caches overwritten) gives the same again.
    let (a2, _) = run(&mut cached, &opts);
    assert_eq!(a, a2);

    // EOS: row 0 stops before the first time it would produce its 5th greedy token.
    let eos = a[0][4];
    let (e, _) = run(
        &mut cached,
        &SampleOptions {
            eos: Some(eos),
            ..opts.clone()
        },
    );
    let cut =
        |row: &Vec<u32>| row[..row.iter().position(|&t| t == eos).unwrap_or(row.len())].to_vec();
    assert_eq!(e, a.iter().map(cut).collect::<Vec<_>>());
    assert_eq!(e[0].len(), a[0].iter().position(|&t| t == eos).unwrap());

    // Sampling with temperature, top-k and top-p draws the same tokens from both.
    let hot = SampleOptions {
        temperature: 0.9,
        top_k: Some(20),
        top_p: Some(0.95),
        seed: 11,
        ..opts.clone()
    };
    let (s1, _) = run(&mut cached, &hot);
    let (s2, _) = run(&mut re, &hot);
    assert_eq!(s1, s2);
    assert_ne!(
        s1, a,
        "temperature 0.9 should leave the greedy path somewhere"
    );
}

/// A decoder that only steps one token per call (the trait's default `greedy_steps`).
struct OneStep<'a>(&'a mut CachedGpt);

impl Decoder for OneStep<'_> {
    fn batch(&self) -> usize {
        self.0.batch()
    }
    fn vocab(&self) -> usize {
        self.0.vocab()
    }
    fn prefill(&mut self, prompts: &[Vec<u32>]) -> anyhow::Result<Vec<f32>> {
        self.0.prefill(prompts)
    }
    fn step(&mut self, tokens: &[u32]) -> anyhow::Result<Vec<f32>> {
        self.0.step(tokens)
    }
    fn reorder(&mut self, parents: &[usize]) -> anyhow::Result<()> {
        self.0.reorder(parents)
    }
}

#[test]
fn generation_runs_past_the_context_and_beam_search_matches_recompute() {
    let client = cpu_client(1).unwrap();
    // Past the context: the cache restarts from the last half window; 40 tokens > 24.
    let (mut cached, _) = decoders(&client, 4);
    let (a, la) = run(&mut cached, &SampleOptions::greedy(40));
    assert!(a.iter().all(|t| t.len() == 40));
    // The same decoder one token per call (no multi-token greedy program): the same tokens
    // and logits, through chunks, single steps and the restarts.
    let (mut single, _) = decoders(&client, 4);
    let (b, lb) = run(&mut OneStep(&mut single), &SampleOptions::greedy(40));
    assert_eq!(a, b);
    let worst = la
        .iter()
        .flatten()
        .zip(lb.iter().flatten())
        .fold(0f32, |w, (x, y)| w.max((x - y).abs()));
    assert!(worst < 1e-4, "chunked vs one-step logits differ by {worst}");

    let (mut cached, mut re) = decoders(&client, 3);
    let prompt = vec![4, 8, 15, 16, 23];
    let opts = BeamOptions {
        beam: 3,
        length_penalty: 1.0,
        max_tokens: 12,
        eos: Some(0),
    };
    let h1 = beam_search(&mut cached, &prompt, &opts).unwrap();
    let h2 = beam_search(&mut re, &prompt, &opts).unwrap();
    assert_eq!(h1.len(), 3);
    for (x, y) in h1.iter().zip(&h2) {
        assert_eq!(x.tokens, y.tokens);
        assert!((x.score - y.score).abs() < 1e-4, "{x:?} vs {y:?}");
    }
    // Beam 1 is greedy.
    let (mut one, _) = decoders(&client, 1);
    let g = sample(
        &mut one,
        std::slice::from_ref(&prompt),
        &SampleOptions::greedy(12),
        &mut |_, _, _| {},
    )
    .unwrap();
    let h = beam_search(
        &mut one,
        &prompt,
        &BeamOptions {
            beam: 1,
            eos: None,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(h[0].tokens, g.tokens[0]);
}

#[test]
fn bad_generation_input_is_named() {
    let client = cpu_client(1).unwrap();
    let (mut cached, _) = decoders(&client, 1);
    let long = vec![1u32; 25];
    let e = cached.prefill(&[long]).unwrap_err().to_string();
    assert!(
        e.contains("25 tokens") && e.contains("model.seq_len"),
        "{e}"
    );
    let e = cached.prefill(&[vec![40]]).unwrap_err().to_string();
    assert!(e.contains("token 40") && e.contains("vocabulary"), "{e}");
    let e = beam_search(
        &mut cached,
        &[1],
        &BeamOptions {
            beam: 0,
            length_penalty: 1.0,
            max_tokens: 3,
            eos: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--beam 0"), "{e}");
    let e = match rxla::generate::Run::load(std::path::Path::new("/nonexistent/run")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded a run that does not exist"),
    };
    assert!(e.contains("no such run directory"), "{e}");
}
