//! The seed's MNIST GAN: an MLP generator and a convolutional discriminator, Adam(2e-4,
//! beta_1 0.5), alternating updates through the `TrainStep` hook (two optimizers, one `fit`
//! loop). Writes a PNG grid of samples every N steps, then measures the samples: a CNN
//! classifier trained on MNIST labels 1,000 of them (mean max confidence, classes present).
//!
//! One addition to the seed: the discriminator sees, beside each image, its batch's per-pixel
//! standard deviation (ProGAN's minibatch-stddev feature, here as a second input channel).
//! Without it the seed's generator collapses to one digit within ~200 steps, as does a JAX
//! transcription of the same program; with it a batch of identical digits is easy to reject.
//! `cargo run --release --example gan_mnist [-- STEPS [BATCH]]`

use std::path::{Path, PathBuf};
use std::time::Instant;
use train::exec::ToDevice;

use ::data::HostArray;
use anyhow::{bail, Context, Result};
use graph::{DType, Graph, NodeId, TensorType};
use models::{Forward, Mode, Model, Params};
use rand::SeedableRng;
use rand_distr_free::normals;
use rxla::keras::*;
use train::optim::Optimizer;
use train::state::{compile_program, run_train_step_on, Compiled, TrainState};
use train::step::{train_step, Passes};

/// The judge is the CNN example's model.
#[path = "cnn_mnist.rs"]
mod cnn_mnist;

const NOISE: i64 = 100;
const SAMPLE_EVERY: usize = 250;
/// Decay of the generator's weight average (ProGAN/StyleGAN sample from such an average).
const EMA_DECAY: f32 = 0.999;

/// Standard normal noise on the host (Box-Muller; no extra crate).
mod rand_distr_free {
    use rand::Rng;
    pub fn normals(n: usize, rng: &mut impl Rng) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
                let u2: f64 = rng.gen();
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect()
    }
}

fn generator() -> Sequential {
    Sequential::new()
        .named("generator")
        .add(Dense::new(128).activation(Relu).input_shape([NOISE]))
        .add(Dense::new(784).activation(Tanh))
        .add(Reshape::new([28, 28, 1]))
}

fn discriminator() -> Sequential {
    Sequential::new()
        .named("discriminator")
        .add(
            Conv2D::new(64, (5, 5))
                .padding(Padding::Same)
                .activation(Relu)
                // The image and its batch's per-pixel standard deviation (`with_batch_std`).
                .input_shape([28, 28, 2]),
        )
        .add(MaxPooling2D::new((2, 2)))
        .add(
            Conv2D::new(128, (5, 5))
                .padding(Padding::Same)
                .activation(Relu),
        )
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(1).activation(Sigmoid))
}

/// `[n, 28, 28, 1]` images to `[n, 28, 28, 2]`: each image beside the per-pixel standard
/// deviation of its batch. A collapsed generator's batch has a dark second channel, which the
/// discriminator rejects, so the generator's gradient differs per sample and spreads them out.
fn with_batch_std(g: &mut Graph, x: NodeId) -> graph::Result<NodeId> {
    let n = g.ty(x)?.dims()[0];
    let mean = g.mean(x, &[0])?; // [28, 28, 1]
    let d = g.sub(x, mean)?;
    let d2 = g.mul(d, d)?;
    let var = g.mean(d2, &[0])?;
    let var = g.add_scalar(var, 1e-6)?; // finite gradient at zero spread
    let sd = g.sqrt(var)?;
    let sd = g.broadcast_to(sd, &[n, 28, 28, 1])?;
    g.concatenate(&[x, sd], 3)
}

/// Mean binary cross-entropy of the discriminator's output against a label.
fn bce(g: &mut Graph, out: Output, label: f64) -> graph::Result<(NodeId, NodeId)> {
    let ty = g.ty(out.y)?.clone();
    let t = g.full(label, ty)?;
    let per = Loss::BinaryCrossentropy.per_example(g, out, t)?;
    Ok((g.mean_all(per)?, per))
}

/// The generator applied with its weights fed as data (frozen), on in-graph noise.
fn frozen_fakes(
    cx: &mut Ctx,
    gen: &Sequential,
    batch: usize,
) -> graph::Result<(NodeId, Vec<NodeId>)> {
    cx.frozen = true;
    let seed = cx.seed()?;
    let noise =
        cx.g.rng_normal(seed, 0x6a1, [batch as i64, NOISE], DType::F32)?;
    let fake = gen.call(cx, noise)?.y;
    cx.frozen = false;
    let w = cx.frozen_weights.drain(..).map(|(_, n)| n).collect();
    Ok((fake, w))
}

/// Discriminator update: real images labelled 1, generated ones 0.
struct DStep<'a> {
    gen: &'a Sequential,
    disc: &'a Sequential,
}

impl Model for DStep<'_> {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward> {
        let mut cx = Ctx::new(g, p, mode);
        let real =
            cx.g.input("x", TensorType::f32([batch as i64, 28, 28, 1]))?;
        let (fake, gen_w) = frozen_fakes(&mut cx, self.gen, batch)?;
        // Each batch gets its own spread channel: real with real, fake with fake.
        let real_s = with_batch_std(cx.g, real)?;
        let fake_s = with_batch_std(cx.g, fake)?;
        let both = cx.g.concatenate(&[real_s, fake_s], 0)?;
        let out = self.disc.call(&mut cx, both)?;
        let rng_seed = cx.rng;
        let pre_r = g.slice_dim(out.pre, 0, 0, batch as i64)?;
        let pre_f = g.slice_dim(out.pre, 0, batch as i64, 2 * batch as i64)?;
        let y_r = g.slice_dim(out.y, 0, 0, batch as i64)?;
        let y_f = g.slice_dim(out.y, 0, batch as i64, 2 * batch as i64)?;
        let (lr, per_r) = bce(
            g,
            Output {
                pre: pre_r,
                act: out.act,
                y: y_r,
            },
            1.0,
        )?;
        let (lf, per_f) = bce(
            g,
            Output {
                pre: pre_f,
                act: out.act,
                y: y_f,
            },
            0.0,
        )?;
        let loss = g.add(lr, lf)?;
        let per = g.add(per_r, per_f)?;
        let mut inputs = vec![real];
        inputs.extend(gen_w);
        Ok(Forward {
            inputs,
            loss,
            per_example: vec![("loss".into(), per)],
            rng_seed,
            updates: vec![],
        })
    }
}

/// Generator update: make the (frozen) discriminator say 1.
struct GStep<'a> {
    gen: &'a Sequential,
    disc: &'a Sequential,
}

impl Model for GStep<'_> {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward> {
        let mut cx = Ctx::new(g, p, mode);
        let seed = cx.seed()?;
        let noise =
            cx.g.rng_normal(seed, 0x6a2, [batch as i64, NOISE], DType::F32)?;
        let fake = self.gen.call(&mut cx, noise)?.y;
        cx.frozen = true;
        let fake = with_batch_std(cx.g, fake)?;
        let out = self.disc.call(&mut cx, fake)?;
        let disc_w: Vec<NodeId> = cx.frozen_weights.drain(..).map(|(_, n)| n).collect();
        let rng_seed = cx.rng;
        let (loss, per) = bce(g, out, 1.0)?;
        Ok(Forward {
            inputs: disc_w,
            loss,
            per_example: vec![("loss".into(), per)],
            rng_seed,
            updates: vec![],
        })
    }
}

/// The GAN as a `fit`-able model: each step updates D, then G.
struct Gan {
    gen: Sequential,
    disc: Sequential,
    opt: Optimizer,
    steps: Option<(Compiled, Compiled)>,
    out: PathBuf,
    fixed_noise: HostArray,
    step: usize,
    /// Exponential moving average of the generator's weights (host copies, in the order of
    /// its train state's parameters): the generator that is sampled and judged.
    ema: Vec<Vec<f32>>,
    /// The classifier that measures samples, and the noise it measures them on.
    judge: Sequential,
    judge_noise: HostArray,
}

/// The frozen data inputs of `c` (after its first `skip`) must be `other`'s weights, in order.
fn check_frozen(c: &Compiled, skip: usize, other: &Compiled) -> Result<()> {
    let got: Vec<&[i64]> = c.prog.data_types[skip..].iter().map(|t| t.dims()).collect();
    let want: Vec<&[i64]> = other.prog.params.iter().map(|p| p.ty.dims()).collect();
    if got != want {
        bail!("frozen weights {got:?} do not line up with the other model's {want:?}");
    }
    Ok(())
}

impl TrainStep for Gan {
    fn begin(&mut self, batch: usize) -> Result<()> {
        let client = client()?;
        let d = DStep {
            gen: &self.gen,
            disc: &self.disc,
        };
        let g = GStep {
            gen: &self.gen,
            disc: &self.disc,
        };
        let dc = compile_program(
            &client,
            train_step(&d, &self.opt, batch, &Passes::default(), None)?.0,
        )?;
        let gc = compile_program(
            &client,
            train_step(&g, &self.opt, batch, &Passes::default(), None)?.0,
        )?;
        check_frozen(&dc, 1, &gc)?;
        check_frozen(&gc, 0, &dc)?;
        self.disc.state = Some(TrainState::init(&client, &dc.prog, 1)?);
        let gs = TrainState::init(&client, &gc.prog, 2)?;
        self.ema = gs
            .params
            .iter()
            .map(|p| p.to_host::<f32>())
            .collect::<Result<_, _>>()?;
        self.gen.state = Some(gs);
        self.steps = Some((dc, gc));
        Ok(())
    }

    fn train_step(&mut self, batch: &[HostArray]) -> Result<Logs> {
        let x = batch.first().context("a batch of images")?;
        let client = client()?;
        let (dc, gc) = self.steps.as_ref().context("begin() first")?;
        let gs = self.gen.state.as_mut().context("generator weights")?;
        let ds = self.disc.state.as_mut().context("discriminator weights")?;
        let real = x.to_sharded(&client, &runtime::ShardLayout::replicated(x.dims(), 1))?;
        let mut data = vec![&real];
        data.extend(gs.params.iter());
        let (d_loss, _, _) = run_train_step_on(&client, dc, ds, &data)?;
        let data: Vec<_> = ds.params.iter().collect();
        let (g_loss, _, _) = run_train_step_on(&client, gc, gs, &data)?;
        self.step += 1;
        // EMA decay warmed up as in TF's ExponentialMovingAverage(num_updates).
        let t = self.step as f32;
        let beta = EMA_DECAY.min((1.0 + t) / (10.0 + t));
        for (avg, p) in self.ema.iter_mut().zip(&gs.params) {
            for (a, w) in avg.iter_mut().zip(p.to_host::<f32>()?) {
                *a = beta * *a + (1.0 - beta) * w;
            }
        }
        if self.step.is_multiple_of(SAMPLE_EVERY) {
            self.sample_grid(&self.out.join(format!("samples-{:05}.png", self.step)))?;
            let m = self.measure()?;
            eprintln!(
                "step {}: mean max confidence {:.3}, classes {:?}",
                self.step, m.mean_conf, m.hist
            );
        }
        let mut logs = Logs::default();
        logs.insert("d_loss", d_loss as f64);
        logs.insert("g_loss", g_loss as f64);
        Ok(logs)
    }

    fn evaluate(&mut self, _: &[(Vec<HostArray>, usize)]) -> Result<Logs> {
        Ok(Logs::default())
    }
    fn learning_rate(&self) -> f64 {
        self.opt.opt.lr
    }
    fn set_learning_rate(&mut self, _: f64) -> Result<()> {
        bail!("the GAN keeps Adam(2e-4) fixed")
    }
    fn save_weights(&mut self, path: &Path) -> Result<()> {
        self.gen.save_weights(path)
    }
}

/// What the judge says about 1,000 samples.
struct Judged {
    mean_conf: f64,
    hist: [usize; 10],
}

impl Gan {
    /// The EMA generator's images for `noise` (the live weights are put back after).
    fn sample(&mut self, noise: &HostArray) -> Result<HostArray> {
        let client = client()?;
        let st = self.gen.state.as_mut().context("generator weights")?;
        let avg = self
            .ema
            .iter()
            .zip(&st.params)
            .map(|(a, p)| runtime::ShardedArray::from_host(&client, a, &p.layout, &[0]))
            .collect::<Result<Vec<_>, _>>()?;
        let live = std::mem::replace(&mut st.params, avg);
        let out = self.gen.predict(noise, 100);
        self.gen.state.as_mut().context("generator weights")?.params = live;
        out
    }

    /// Judges 1,000 samples of the EMA generator: each sample's most likely digit and the
    /// judge's confidence in it.
    fn measure(&mut self) -> Result<Judged> {
        let noise = self.judge_noise.clone();
        let HostArray::F32 { data: fakes, .. } = self.sample(&noise)? else {
            bail!("samples")
        };
        let fakes = HostArray::F32 {
            data: fakes.iter().map(|v| (v + 1.0) / 2.0).collect(),
            dims: vec![1000, 28, 28, 1],
        };
        let HostArray::F32 { data: probs, .. } = self.judge.predict(&fakes, 100)? else {
            bail!("probs")
        };
        let mut hist = [0usize; 10];
        let mut conf = 0.0;
        for row in probs.chunks(10) {
            let (k, p) =
                row.iter()
                    .enumerate()
                    .fold((0, f32::MIN), |a, (i, &p)| if p > a.1 { (i, p) } else { a });
            hist[k] += 1;
            conf += p as f64;
        }
        Ok(Judged {
            mean_conf: conf / 1000.0,
            hist,
        })
    }

    /// An 8x8 grid of samples from fixed noise, as a grayscale PNG.
    fn sample_grid(&mut self, path: &Path) -> Result<()> {
        let noise = self.fixed_noise.clone();
        let HostArray::F32 { data, .. } = self.sample(&noise)? else {
            bail!("generator output is not f32");
        };
        // Spread: per-pixel standard deviation across the 64 samples, averaged (real MNIST
        // batches: ~0.36 on this [-1, 1] scale; a collapsed generator: < 0.05).
        let spread = (0..784)
            .map(|i| {
                let col = (0..64).map(|k| data[k * 784 + i] as f64);
                let m = col.clone().sum::<f64>() / 64.0;
                (col.map(|v| (v - m) * (v - m)).sum::<f64>() / 64.0).sqrt()
            })
            .sum::<f64>()
            / 784.0;
        eprintln!("step {}: sample spread {spread:.3}", self.step);
        let mut img = image::GrayImage::new(8 * 28, 8 * 28);
        for k in 0..64 {
            for i in 0..28 {
                for j in 0..28 {
                    let v = data[k * 784 + i * 28 + j];
                    let px = ((v + 1.0) * 127.5).clamp(0.0, 255.0) as u8;
                    img.put_pixel(
                        ((k % 8) * 28 + j) as u32,
                        ((k / 8) * 28 + i) as u32,
                        image::Luma([px]),
                    );
                }
            }
        }
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )?;
        Ok(files::write_atomic(path, &bytes)?)
    }
}

fn main() -> Result<()> {
    let t = Instant::now();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("arguments: STEPS [BATCH]"))
        .collect::<Result<_>>()?;
    let steps = args.first().copied().unwrap_or(5500);
    let batch = args.get(1).copied().unwrap_or(16);
    if steps == 0 || !(2..=60_000).contains(&batch) {
        bail!("arguments: STEPS [BATCH] need STEPS >= 1 and BATCH in 2..=60000 (the spread channel needs 2 images), got {steps} and {batch}");
    }
    let out = PathBuf::from("runs/gan_mnist");
    std::fs::create_dir_all(&out)?;
    let mnist = Dataset::mnist("train")?;
    // Images to [-1, 1], the generator's tanh range.
    let HostArray::F32 { data, dims } = &mnist.x else {
        bail!("images")
    };
    let scaled = Dataset::unlabeled(HostArray::F32 {
        data: data.iter().map(|v| v * 2.0 - 1.0).collect(),
        dims: dims.clone(),
    });

    // The judge: the seed's CNN trained on real MNIST labels.
    let mut judge = cnn_mnist::seed_cnn();
    judge.compile(
        Adam::new(1e-3),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    );
    judge.fit(
        &mnist,
        FitOptions {
            epochs: 1,
            batch_size: 64,
            ..Default::default()
        },
    )?;
    let test_acc = judge
        .evaluate(&Dataset::mnist("test")?, 500)?
        .get("accuracy")
        .unwrap_or(f64::NAN);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut gan = Gan {
        gen: generator(),
        disc: discriminator(),
        opt: Adam::new(2e-4).beta_1(0.5).into(),
        steps: None,
        out: out.clone(),
        fixed_noise: HostArray::F32 {
            data: normals(64 * NOISE as usize, &mut rng),
            dims: vec![64, NOISE],
        },
        step: 0,
        ema: Vec::new(),
        judge,
        judge_noise: HostArray::F32 {
            data: normals(1000 * NOISE as usize, &mut rng),
            dims: vec![1000, NOISE],
        },
    };
    println!("{}\n{}", gan.gen.summary()?, gan.disc.summary()?);
    // `steps` in whole epochs of at most one pass over the data each.
    let epochs = steps.div_ceil(scaled.len() / batch);
    let h = fit_loop(
        &mut gan,
        &scaled,
        FitOptions {
            epochs,
            steps_per_epoch: Some(steps.div_ceil(epochs)),
            batch_size: batch,
            ..Default::default()
        },
    )?;
    gan.sample_grid(&out.join("samples-final.png"))?;
    eprintln!(
        "GAN: {} steps in {:.0}s; samples in {}",
        h.steps,
        t.elapsed().as_secs_f64(),
        out.display()
    );
    let Judged { mean_conf, hist } = gan.measure()?;
    println!("judge test accuracy {test_acc:.4}; class histogram of 1,000 samples {hist:?}; mean max confidence {mean_conf:.3}");
    println!(
        "{}",
        serde_json::json!({
            "example": "gan_mnist",
            "mean_max_confidence": (mean_conf * 1000.0).round() / 1000.0,
            "classes_present": hist.iter().filter(|&&c| c > 0).count(),
            "class_histogram": hist,
            "gan_steps": h.steps,
            "seconds": t.elapsed().as_secs_f64().round(),
        })
    );
    Ok(())
}
