//! The seed's MNIST GAN: an MLP generator and a convolutional discriminator, Adam(2e-4,
//! beta_1 0.5), alternating updates through the `TrainStep` hook (two optimizers, one `fit`
//! loop). Writes a PNG grid of samples every N steps, then measures the samples: a CNN
//! classifier trained on MNIST labels 1,000 of them (mean max confidence, classes present).
//! `cargo run --release --example gan_mnist [-- STEPS [BATCH]]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use graph::{DType, Graph, NodeId};
use models::{Forward, Mode, Model, Params};
use rand::SeedableRng;
use rand_distr_free::normals;
use rxla::exec::HostArray;
use rxla::keras::*;
use rxla::optim::Optimizer;
use rxla::step::{train_step, Passes};
use rxla::train::{compile_program, run_train_step_on, Compiled, TrainState};

const NOISE: i64 = 100;
const SAMPLE_EVERY: usize = 100;
/// Label noise of the discriminator's targets (real 1 - 0.05 u, fake 0.05 u).
const LABEL_NOISE: f64 = 0.05;

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
                .input_shape([28, 28, 1]),
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

/// Mean binary cross-entropy of the discriminator's output against a label, plus
/// `noise * U[0, 1)` per example when `noise > 0` (the Keras GAN example's "add random noise
/// to the labels" trick, which keeps the discriminator from overpowering the generator).
fn bce(
    g: &mut Graph,
    out: Output,
    label: f64,
    noise: Option<(NodeId, u32, f64)>,
) -> graph::Result<(NodeId, NodeId)> {
    let ty = g.ty(out.y)?.clone();
    let mut t = g.full(label, ty.clone())?;
    if let Some((seed, salt, k)) = noise {
        let u = g.rng_uniform(seed, salt, ty.shape.clone(), ty.dtype)?;
        let u = g.mul_scalar(u, k)?;
        t = g.add(t, u)?;
    }
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
        let real = self.disc.input(cx.g, batch)?;
        let (fake, gen_w) = frozen_fakes(&mut cx, self.gen, batch)?;
        let both = cx.g.concatenate(&[real, fake], 0)?;
        let out = self.disc.call(&mut cx, both)?;
        let rng_seed = cx.rng;
        let seed = rng_seed.expect("the fakes' noise seed");
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
            Some((seed, 0x1ab, -LABEL_NOISE)),
        )?;
        let (lf, per_f) = bce(
            g,
            Output {
                pre: pre_f,
                act: out.act,
                y: y_f,
            },
            0.0,
            Some((seed, 0x1ac, LABEL_NOISE)),
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
            stages: vec![],
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
        let out = self.disc.call(&mut cx, fake)?;
        let disc_w: Vec<NodeId> = cx.frozen_weights.drain(..).map(|(_, n)| n).collect();
        let rng_seed = cx.rng;
        let (loss, per) = bce(g, out, 1.0, None)?;
        Ok(Forward {
            inputs: disc_w,
            loss,
            per_example: vec![("loss".into(), per)],
            rng_seed,
            stages: vec![],
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
        self.gen.state = Some(TrainState::init(&client, &gc.prog, 2)?);
        self.steps = Some((dc, gc));
        Ok(())
    }

    fn train_step(&mut self, batch: &Dataset) -> Result<Logs> {
        let client = client()?;
        let (dc, gc) = self.steps.as_ref().context("begin() first")?;
        let gs = self.gen.state.as_mut().context("generator weights")?;
        let ds = self.disc.state.as_mut().context("discriminator weights")?;
        let real = batch.x.to_sharded(
            &client,
            &runtime::ShardLayout::replicated(batch.x.dims(), 1),
        )?;
        let mut data = vec![&real];
        data.extend(gs.params.iter());
        let (d_loss, _, _) = run_train_step_on(&client, dc, ds, &data)?;
        let data: Vec<_> = ds.params.iter().collect();
        let (g_loss, _, _) = run_train_step_on(&client, gc, gs, &data)?;
        self.step += 1;
        if self.step.is_multiple_of(SAMPLE_EVERY) {
            self.sample_grid(&self.out.join(format!("samples-{:05}.png", self.step)))?;
        }
        let mut logs = Logs::default();
        logs.insert("d_loss", d_loss as f64);
        logs.insert("g_loss", g_loss as f64);
        Ok(logs)
    }

    fn evaluate(&mut self, _: &Dataset, _: usize) -> Result<Logs> {
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

impl Gan {
    /// An 8x8 grid of samples from fixed noise, as a grayscale PNG.
    fn sample_grid(&mut self, path: &Path) -> Result<()> {
        let HostArray::F32 { data, .. } = self.gen.predict(&self.fixed_noise, 64)? else {
            bail!("generator output is not f32");
        };
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
        rxla::io::write_atomic(path, &bytes)
    }
}

fn main() -> Result<()> {
    let t = Instant::now();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("arguments: STEPS [BATCH]"))
        .collect::<Result<_>>()?;
    let steps = args.first().copied().unwrap_or(500);
    let batch = args.get(1).copied().unwrap_or(32);
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
    };
    println!("{}\n{}", gan.gen.summary()?, gan.disc.summary()?);
    let per_epoch = scaled.len() / batch;
    let h = fit_loop(
        &mut gan,
        &scaled,
        FitOptions {
            epochs: steps.div_ceil(per_epoch),
            steps_per_epoch: Some(per_epoch.min(steps)),
            batch_size: batch,
            ..Default::default()
        },
    )?;
    gan.sample_grid(&out.join("samples-final.png"))?;
    let gan_s = t.elapsed().as_secs_f64();
    eprintln!(
        "GAN: {} steps in {gan_s:.0}s; samples in {}",
        h.steps,
        out.display()
    );

    // The judge: the seed's CNN trained on real MNIST labels.
    let mut judge = Sequential::new()
        .add(
            Conv2D::new(32, (3, 3))
                .activation(Relu)
                .input_shape([28, 28, 1]),
        )
        .add(MaxPooling2D::new((2, 2)))
        .add(Conv2D::new(64, (3, 3)).activation(Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Conv2D::new(64, (3, 3)).activation(Relu))
        .add(Flatten::new())
        .add(Dense::new(64).activation(Relu))
        .add(Dense::new(10).activation(Softmax));
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
            steps_per_epoch: Some(600),
            ..Default::default()
        },
    )?;
    let test_acc = judge
        .evaluate(&Dataset::mnist("test")?, 500)?
        .get("accuracy")
        .unwrap_or(f64::NAN);

    let noise = HostArray::F32 {
        data: normals(1000 * NOISE as usize, &mut rng),
        dims: vec![1000, NOISE],
    };
    let HostArray::F32 { data: fakes, .. } = gan.gen.predict(&noise, 100)? else {
        bail!("samples")
    };
    let fakes = HostArray::F32 {
        data: fakes.iter().map(|v| (v + 1.0) / 2.0).collect(),
        dims: vec![1000, 28, 28, 1],
    };
    let HostArray::F32 { data: probs, .. } = judge.predict(&fakes, 100)? else {
        bail!("probs")
    };
    let mut hist = [0usize; 10];
    let mut conf = 0.0;
    for row in probs.chunks(10) {
        let (k, p) = row
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |a, (i, &p)| if p > a.1 { (i, p) } else { a });
        hist[k] += 1;
        conf += p as f64;
    }
    let mean_conf = conf / 1000.0;
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
