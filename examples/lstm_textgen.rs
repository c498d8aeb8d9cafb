//! The seed's character-level LSTM text generator on Moby Dick bytes:
//! Embedding(256, 256) -> LSTM(128) -> Dense(256, softmax), trained to predict every next
//! byte of 64-byte windows. Reports validation bits per byte against the unigram baseline and
//! prints text generated after "Call me Ishmael.".
//! `cargo run --release --example lstm_textgen [-- EPOCHS [STEPS_PER_EPOCH]]`

use std::time::Instant;

use ::data::text::{load_corpus, split_text};
use ::data::HostArray;
use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rxla::keras::*;

const VOCAB: usize = 256;
const SEQ: usize = 64;

/// Windows of `SEQ` bytes starting every `stride`: inputs and the bytes after each.
fn windows(bytes: &[u8], stride: usize) -> Result<Dataset> {
    let starts: Vec<usize> = (0..bytes.len().saturating_sub(SEQ + 1))
        .step_by(stride)
        .collect();
    let n = starts.len() as i64;
    let mut x = Vec::with_capacity(starts.len() * SEQ);
    let mut y = Vec::with_capacity(starts.len() * SEQ);
    for s in starts {
        x.extend(bytes[s..s + SEQ].iter().map(|&b| b as i32));
        y.extend(bytes[s + 1..s + SEQ + 1].iter().map(|&b| b as i32));
    }
    Dataset::new(
        HostArray::I32 {
            data: x,
            dims: vec![n, SEQ as i64],
        },
        HostArray::I32 {
            data: y,
            dims: vec![n, SEQ as i64],
        },
    )
}

/// Cross-entropy (bits per byte) of `val` under the byte frequencies of `train`
/// (add-one smoothed).
fn unigram_bits(train: &[u8], val: &[u8]) -> f64 {
    let mut count = [1f64; VOCAB];
    train.iter().for_each(|&b| count[b as usize] += 1.0);
    let total: f64 = count.iter().sum();
    val.iter()
        .map(|&b| -(count[b as usize] / total).log2())
        .sum::<f64>()
        / val.len() as f64
}

/// Samples `n` bytes after `prompt`: each step predicts on the last `SEQ` bytes
/// (right-padded; the LSTM is causal, so padding after the last real byte changes nothing).
fn generate(model: &mut Sequential, prompt: &[u8], n: usize, temperature: f64) -> Result<Vec<u8>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut text = prompt.to_vec();
    for _ in 0..n {
        let ctx = &text[text.len().saturating_sub(SEQ)..];
        let mut x = vec![b' ' as i32; SEQ];
        for (i, &b) in ctx.iter().enumerate() {
            x[i] = b as i32;
        }
        let p = model.predict(
            &HostArray::I32 {
                data: x,
                dims: vec![1, SEQ as i64],
            },
            1,
        )?;
        let HostArray::F32 { data, .. } = p else {
            anyhow::bail!("prediction is not f32");
        };
        let row = &data[(ctx.len() - 1) * VOCAB..ctx.len() * VOCAB];
        let w: Vec<f64> = row
            .iter()
            .map(|&q| (q.max(1e-12) as f64).powf(1.0 / temperature))
            .collect();
        let mut u = rng.gen::<f64>() * w.iter().sum::<f64>();
        let mut next = VOCAB - 1;
        for (i, &wi) in w.iter().enumerate() {
            if u < wi {
                next = i;
                break;
            }
            u -= wi;
        }
        text.push(next as u8);
    }
    Ok(text)
}

fn main() -> Result<()> {
    let t = Instant::now();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("arguments: EPOCHS [STEPS_PER_EPOCH]"))
        .collect::<Result<_>>()?;
    let epochs = args.first().copied().unwrap_or(5);
    let steps = args.get(1).copied();
    let text = load_corpus("moby-dick")?;
    let (train_text, val_text) = split_text(&text, 0.1)?;
    let (train_b, val_b) = (train_text.as_bytes(), val_text.as_bytes());
    let train = windows(train_b, SEQ)?;
    let val = windows(val_b, SEQ)?;
    eprintln!(
        "{} training windows, {} validation windows of {SEQ} bytes",
        train.len(),
        val.len()
    );

    let mut model = Sequential::new()
        .add(Embedding::new(VOCAB, 256).input_length(SEQ as i64))
        .add(LSTM::new(128).return_sequences(true))
        .add(Dense::new(VOCAB).activation(Softmax));
    println!("{}", model.summary()?);
    model.compile(
        Adam::new(5e-3),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    );
    let decay = LearningRateScheduler::new(|epoch, lr| if epoch == 0 { lr } else { lr * 0.5 });
    model.fit(
        &train,
        FitOptions {
            epochs,
            batch_size: 64,
            steps_per_epoch: steps,
            validation: Some(&val),
            callbacks: vec![Box::new(decay)],
            ..Default::default()
        },
    )?;
    let logs = model.evaluate(&val, 256)?;
    let bpb = logs.get("loss").context("loss")? / std::f64::consts::LN_2;
    let unigram = unigram_bits(train_b, val_b);
    let sample = generate(&mut model, b"Call me Ishmael.", 300, 0.7)?;
    println!("---\n{}\n---", String::from_utf8_lossy(&sample));
    println!(
        "validation {bpb:.3} bits per byte (unigram {unigram:.3}), accuracy {:.3}",
        logs.get("accuracy").unwrap_or(f64::NAN)
    );
    println!(
        "{}",
        serde_json::json!({
            "example": "lstm_textgen",
            "val_bits_per_byte": (bpb * 1000.0).round() / 1000.0,
            "unigram_bits_per_byte": (unigram * 1000.0).round() / 1000.0,
            "seconds": t.elapsed().as_secs_f64().round(),
        })
    );
    Ok(())
}
