//! The Keras-style API end to end through the CPU plugin: summary of the seed CNN, LSTM/GRU
//! gradients against finite differences, fit/evaluate/predict/weights, each callback's effect.

use std::path::PathBuf;
use train::exec::ToDevice;

use ::data::HostArray;
use graph::gradcheck::{check, interp_evaluator, GradCase, Lcg, Tolerance};
use graph::interp::HostTensor;
use graph::Graph;
use models::{Mode, Params};
use rxla::keras::tensorboard::read_events;
use rxla::keras::*;

mod common;

fn tmp(name: &str) -> PathBuf {
    common::tmp_dir(&format!("keras-{name}"))
}

/// The example's model, so the summary checked here is the one it trains.
#[path = "../examples/cnn_mnist.rs"]
mod cnn_mnist;

#[test]
fn seed_cnn_summary_matches_keras() {
    let s = cnn_mnist::seed_cnn().summary().unwrap();
    let got: Vec<(&str, Vec<i64>, usize)> = s
        .rows
        .iter()
        .map(|r| (r.name.as_str(), r.output_shape.clone(), r.params))
        .collect();
    // Keras's model.summary() for the seed's program.
    let want: Vec<(&str, Vec<i64>, usize)> = vec![
        ("conv2d", vec![26, 26, 32], 320),
        ("max_pooling2d", vec![13, 13, 32], 0),
        ("conv2d_1", vec![11, 11, 64], 18496),
        ("max_pooling2d_1", vec![5, 5, 64], 0),
        ("conv2d_2", vec![3, 3, 64], 36928),
        ("flatten", vec![576], 0),
        ("dense", vec![64], 36928),
        ("dense_1", vec![10], 650),
    ];
    assert_eq!(got, want);
    assert_eq!((s.total, s.trainable, s.non_trainable), (93_322, 93_322, 0));
    let text = s.to_string();
    assert!(text.contains("conv2d_1 (Conv2D)") && text.contains("(None, 11, 11, 64)"));
    assert!(text.contains("Total params: 93,322"), "{text}");
}

#[test]
fn recurrent_and_norm_summaries_count_like_keras() {
    let m = Sequential::new()
        .add(Embedding::new(256, 16).input_length(10))
        .add(LSTM::new(8).return_sequences(true))
        .add(GRU::new(4))
        .add(BatchNormalization::new())
        .add(LayerNormalization::new())
        .add(Dense::new(3));
    let s = m.summary().unwrap();
    let counts: Vec<usize> = s.rows.iter().map(|r| r.params).collect();
    // LSTM 4(16*8 + 8*8 + 8); GRU (reset_after) 3(8*4 + 4*4 + 2*4); BN 4*4 (2*4 non-trainable).
    assert_eq!(counts, vec![4096, 800, 168, 16, 8, 15]);
    assert_eq!(s.rows[1].output_shape, vec![10, 8]);
    assert_eq!(s.rows[2].output_shape, vec![4]);
    assert_eq!(s.non_trainable, 8);
}

/// The layer on `[2, 3, 4]` inputs as a gradcheck case (every argument random).
fn rnn_case(name: &'static str, layer: impl Layer) -> GradCase {
    let mut g = Graph::new(name);
    let mut p = Params::new();
    let mut cx = Ctx::new(&mut g, &mut p, Mode::Train);
    let x = cx.g.input("x", graph::TensorType::f32([2, 3, 4])).unwrap();
    let y = cx.scope("rnn", |cx| layer.call(cx, x)).unwrap();
    g.set_outputs(&[y]).unwrap();
    let mut rng = Lcg::new(11);
    let args = g
        .args()
        .iter()
        .map(|&a| {
            let ty = g.ty(a).unwrap().clone();
            let n = ty.shape.num_elements() as usize;
            HostTensor::new(ty, (0..n).map(|_| rng.next(-0.8, 0.8)).collect()).unwrap()
        })
        .collect();
    GradCase {
        name,
        graph: g,
        args,
    }
}

#[test]
fn lstm_and_gru_gradients_match_finite_differences() {
    let mut eval = interp_evaluator();
    let cases = [
        rnn_case("lstm_sequences", LSTM::new(3).return_sequences(true)),
        rnn_case("lstm_last", LSTM::new(3)),
        rnn_case("gru_sequences", GRU::new(3).return_sequences(true)),
    ];
    for c in &cases {
        // Inputs, kernel, recurrent kernel and bias are all differentiated.
        assert_eq!(c.args.len(), 4, "{}", c.name);
        check(c, &mut eval, Tolerance::F64).unwrap();
    }
}

/// 512 points in 4-d, class 1 where x0 + x1 > 0.
fn toy(n: usize, seed: u64) -> Dataset {
    let mut rng = Lcg::new(seed);
    let x: Vec<f32> = (0..n * 4).map(|_| rng.next(-1.0, 1.0) as f32).collect();
    let y: Vec<i32> = (0..n)
        .map(|i| (x[4 * i] + x[4 * i + 1] > 0.0) as i32)
        .collect();
    Dataset::new(
        HostArray::F32 {
            data: x,
            dims: vec![n as i64, 4],
        },
        HostArray::I32 {
            data: y,
            dims: vec![n as i64],
        },
    )
    .unwrap()
}

fn toy_model() -> Sequential {
    let mut m = Sequential::new()
        .add(Dense::new(16).activation(Relu).input_shape([4]))
        .add(Dense::new(2).activation(Softmax));
    m.compile(
        Adam::new(0.02),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    );
    m
}

fn quiet<'a>(
    epochs: usize,
    val: Option<&'a Dataset>,
    cbs: Vec<Box<dyn Callback + 'a>>,
) -> FitOptions<'a> {
    FitOptions {
        epochs,
        batch_size: 32,
        validation: val,
        callbacks: cbs,
        verbose: false,
        ..Default::default()
    }
}

#[test]
fn fit_learns_and_weights_round_trip() {
    let (train, val) = (toy(512, 1), toy(200, 2));
    let mut m = toy_model();
    let h = m.fit(&train, quiet(4, Some(&val), vec![])).unwrap();
    assert_eq!(h.steps, 4 * 16);
    let loss = h.values("loss");
    assert!(loss[3] < loss[0], "{loss:?}");
    let logs = m.evaluate(&val, 64).unwrap();
    assert!(logs.get("accuracy").unwrap() > 0.9, "{logs:?}");
    // The last validation in fit is the same evaluation (other batch size, same numbers).
    let v = h.values("val_accuracy");
    assert!((v[3] - logs.get("accuracy").unwrap()).abs() < 1e-9);
    let p = m.predict(&val.x, 64).unwrap();
    assert_eq!(p.dims(), &[200, 2]);
    let HostArray::F32 { data, .. } = &p else {
        panic!()
    };
    assert!(data.chunks(2).all(|r| (r[0] + r[1] - 1.0).abs() < 1e-5));
    let dir = tmp("weights");
    let path = dir.join("w.safetensors");
    m.save_weights(&path).unwrap();
    let mut fresh = toy_model().seed(99);
    assert_ne!(fresh.predict(&val.x, 64).unwrap(), p);
    fresh.load_weights(&path).unwrap();
    assert_eq!(fresh.predict(&val.x, 64).unwrap(), p);
    // A model of other layers refuses the file.
    let mut other = Sequential::new().add(Dense::new(3).input_shape([4]));
    let e = format!("{:#}", other.load_weights(&path).unwrap_err());
    assert!(
        e.contains("another model") && e.contains("w.safetensors"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Keras' `layer.trainable = False`: the frozen layer comes out of fit bit for bit, the
/// others train, summary() counts it as non-trainable, and unfreezing trains it again.
#[test]
fn a_frozen_layer_keeps_its_weights_and_the_rest_trains() {
    let train = toy(256, 3);
    let mut m = toy_model();
    let before = m.get_weights().unwrap();
    let e = format!("{:#}", m.set_trainable("dense_7", false).unwrap_err());
    assert!(e.contains("dense_7") && e.contains("dense_1"), "{e}");
    m.set_trainable("dense", false).unwrap();
    assert!(!m.is_trainable("dense") && m.is_trainable("dense_1"));
    let s = m.summary().unwrap();
    assert_eq!((s.trainable, s.non_trainable), (34, 80));
    let h = m.fit(&train, quiet(2, None, vec![])).unwrap();
    let loss = h.values("loss");
    assert!(loss[1] < loss[0], "the head still trains: {loss:?}");
    let after = m.get_weights().unwrap();
    for (b, a) in before.iter().zip(&after) {
        if b.name.starts_with("dense.") {
            assert_eq!(b.data, a.data, "{} changed while frozen", b.name);
        } else {
            assert_ne!(b.data, a.data, "{} did not train", b.name);
        }
    }
    m.set_trainable("dense", true).unwrap();
    m.fit(&train, quiet(1, None, vec![])).unwrap();
    let again = m.get_weights().unwrap();
    assert!(after
        .iter()
        .zip(&again)
        .all(|(a, b)| a.data != b.data || !a.name.starts_with("dense.")));
}

#[test]
fn early_stopping_stops() {
    let train = toy(256, 3);
    let mut m = toy_model();
    // No epoch can improve by 1e9: stop after `patience` epochs past the first.
    let es = EarlyStopping::new("loss", 2).min_delta(1e9);
    let h = m.fit(&train, quiet(10, None, vec![Box::new(es)])).unwrap();
    assert_eq!(h.epochs.len(), 3);
    // An improving run with a small delta goes on to the end.
    let mut m = toy_model();
    let es = EarlyStopping::new("loss", 2);
    let h = m.fit(&train, quiet(4, None, vec![Box::new(es)])).unwrap();
    assert_eq!(h.epochs.len(), 4);
}

#[test]
fn checkpoint_files_appear_and_load() {
    let (train, val) = (toy(256, 4), toy(64, 5));
    let dir = tmp("ckpt");
    let pattern = dir.join("w-{epoch}.safetensors");
    let mut m = toy_model();
    let cb = ModelCheckpoint::new(pattern.to_string_lossy());
    m.fit(&train, quiet(3, Some(&val), vec![Box::new(cb)]))
        .unwrap();
    for e in ["01", "02", "03"] {
        assert!(dir.join(format!("w-{e}.safetensors")).exists(), "epoch {e}");
    }
    let mut again = toy_model().seed(5);
    again.load_weights(&dir.join("w-03.safetensors")).unwrap();
    assert_eq!(
        again.predict(&val.x, 64).unwrap(),
        m.predict(&val.x, 64).unwrap()
    );
    // save_best_only on a metric the logs lack is a clear error.
    let mut m = toy_model();
    let cb = ModelCheckpoint::new(pattern.to_string_lossy()).save_best_only(true);
    let e = m
        .fit(&train, quiet(1, None, vec![Box::new(cb)]))
        .unwrap_err();
    assert!(e.to_string().contains("val_loss"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_rows_and_tensorboard_events_match_the_history() {
    let (train, val) = (toy(256, 6), toy(64, 7));
    let dir = tmp("logs");
    let csv = dir.join("log.csv");
    let tb = dir.join("tb");
    let mut m = toy_model();
    let cbs: Vec<Box<dyn Callback>> = vec![
        Box::new(CsvLogger::new(&csv)),
        Box::new(TensorBoard::new(&tb)),
    ];
    let h = m.fit(&train, quiet(3, Some(&val), cbs)).unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), "epoch,loss,val_loss,val_accuracy,lr");
    for (e, line) in lines.enumerate() {
        let v: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        let logs = &h.epochs[e];
        assert_eq!(v[0], e as f64);
        let want: Vec<f64> = logs.0.iter().map(|(_, x)| *x).collect();
        assert_eq!(v[1..], want[..]);
    }
    let files: Vec<_> = std::fs::read_dir(&tb)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(files[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("events.out.tfevents."));
    let events = read_events(&files[0]).unwrap();
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    let losses: Vec<(i64, f32)> = events[1..]
        .iter()
        .map(|ev| {
            let s = ev.summary.as_ref().unwrap();
            let v = s.value.iter().find(|v| v.tag == "epoch_val_loss").unwrap();
            (ev.step, v.simple_value.unwrap())
        })
        .collect();
    let want: Vec<(i64, f32)> = h
        .values("val_loss")
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as i64, v as f32))
        .collect();
    assert_eq!(losses, want);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn terminate_on_nan_stops_at_the_first_bad_batch() {
    let mut train = toy(256, 8);
    if let HostArray::F32 { data, .. } = &mut train.x {
        data.iter_mut().for_each(|v| *v = f32::NAN);
    }
    let mut m = toy_model();
    let h = m
        .fit(
            &train,
            quiet(3, None, vec![Box::new(TerminateOnNaN::new())]),
        )
        .unwrap();
    assert_eq!((h.steps, h.epochs.len()), (1, 1));
}

#[test]
fn learning_rate_scheduler_sets_the_rate_per_epoch() {
    let train = toy(128, 9);
    let mut m = toy_model();
    let before = m.get_weights().unwrap();
    // Rate 0 in epoch 0: the weights must not move; then 0.01.
    let sched = LearningRateScheduler::new(|e, _| if e == 0 { 0.0 } else { 0.01 });
    let opts = FitOptions {
        steps_per_epoch: Some(2),
        ..quiet(1, None, vec![Box::new(sched)])
    };
    let h = m.fit(&train, opts).unwrap();
    assert_eq!(h.values("lr"), vec![0.0]);
    assert_eq!(m.get_weights().unwrap(), before);
    let sched = LearningRateScheduler::new(|e, _| if e == 0 { 0.0 } else { 0.01 });
    let h = m
        .fit(&train, quiet(2, None, vec![Box::new(sched)]))
        .unwrap();
    assert_eq!(h.values("lr"), vec![0.0, 0.01]);
    assert_ne!(m.get_weights().unwrap(), before);
}

#[test]
fn batch_norm_tracks_moving_statistics() {
    // Inputs with mean 3 per feature: the moving mean moves from 0 toward 3.
    let mut train = toy(256, 10);
    if let HostArray::F32 { data, .. } = &mut train.x {
        data.iter_mut().for_each(|v| *v += 3.0);
    }
    let mut m = Sequential::new()
        .add(BatchNormalization::new().input_shape([4]))
        .add(Dense::new(2).activation(Softmax));
    m.compile(Adam::new(0.01), Loss::SparseCategoricalCrossentropy, &[]);
    m.fit(&train, quiet(2, None, vec![])).unwrap();
    let w = m.get_weights().unwrap();
    let mm = w
        .iter()
        .find(|t| t.name == "batch_normalization.moving_mean")
        .unwrap();
    // 16 updates with momentum 0.99: 3 * (1 - 0.99^16) ~ 0.45.
    for &v in &mm.data {
        assert!((0.3..0.6).contains(&v), "{:?}", mm.data);
    }
    let logs = m.evaluate(&train, 64).unwrap();
    assert!(logs.get("loss").unwrap().is_finite());
}

/// Student trained to match a frozen teacher whose weights enter the step as data (the GAN's
/// mechanism): the teacher's buffers stay as they are, the student's loss falls.
struct Distill<'a> {
    teacher: &'a Sequential,
    student: &'a Sequential,
}

impl models::Model for Distill<'_> {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<models::Forward> {
        let mut cx = Ctx::new(g, p, mode);
        let x = self.student.input(cx.g, batch)?;
        let s = self.student.call(&mut cx, x)?.y;
        cx.frozen = true;
        let t = self.teacher.call(&mut cx, x)?.y;
        let mut inputs = vec![x];
        inputs.extend(cx.frozen_weights.drain(..).map(|(_, n)| n));
        let t = Output {
            pre: t,
            act: Linear,
            y: t,
        };
        let per = Loss::MeanSquaredError.per_example(
            g,
            Output {
                pre: s,
                act: Linear,
                y: s,
            },
            t.y,
        )?;
        Ok(models::Forward {
            inputs,
            loss: g.mean_all(per)?,
            per_example: vec![("loss".into(), per)],
            rng_seed: None,
            updates: vec![],
        })
    }
}

#[test]
fn a_frozen_model_feeds_another_models_step() {
    let client = client().unwrap();
    let mk = || Sequential::new().add(Dense::new(3).activation(Tanh).input_shape([4]));
    let mut teacher = mk().seed(1);
    let student = mk().seed(2);
    let before = teacher.get_weights().unwrap();
    let opt: train::optim::Optimizer = Adam::new(0.05).into();
    let prog = train::step::train_step(
        &Distill {
            teacher: &teacher,
            student: &student,
        },
        &opt,
        32,
        &train::step::Passes::default(),
        None,
    )
    .unwrap()
    .0;
    // x, then the teacher's kernel and bias as they are (not batch-shaped).
    let dims: Vec<Vec<i64>> = prog.data_types.iter().map(|t| t.dims().to_vec()).collect();
    assert_eq!(dims, vec![vec![32, 4], vec![4, 3], vec![3]]);
    let c = train::state::compile_program(&client, prog).unwrap();
    let mut st = train::state::TrainState::init(&client, &c.prog, 2).unwrap();
    let xh = toy(32, 12).x;
    let x = xh
        .to_sharded(&client, &runtime::ShardLayout::replicated(xh.dims(), 1))
        .unwrap();
    let tw = &teacher.state.as_ref().unwrap().params;
    let mut data = vec![&x];
    data.extend(tw.iter());
    let first = train::state::run_train_step_on(&client, &c, &mut st, &data)
        .unwrap()
        .0;
    let mut last = first;
    for _ in 0..50 {
        last = train::state::run_train_step_on(&client, &c, &mut st, &data)
            .unwrap()
            .0;
    }
    assert!(last < 0.2 * first, "{first} -> {last}");
    assert_eq!(teacher.get_weights().unwrap(), before);
}

/// `fit` through the trainer's Learner gets checkpoints and exact resume: 1 epoch, then a
/// fresh process-like model resumed to 3 epochs, equals 3 uninterrupted epochs bit for bit.
#[test]
fn fit_resumes_from_a_checkpoint_exactly() {
    let train = toy(256, 7);
    let dir = tmp("resume");
    let opts = |epochs: usize, ckpt: &std::path::Path, resume: bool| FitOptions {
        epochs,
        batch_size: 32,
        verbose: false,
        seed: 5,
        checkpoint_dir: Some(ckpt.to_path_buf()),
        resume,
        ..Default::default()
    };
    let mut whole = toy_model();
    let h = whole.fit(&train, opts(3, &dir.join("a"), false)).unwrap();
    assert_eq!(h.steps, 3 * 8);
    assert!(dir.join("a/step-00000024").is_dir());
    let mut first = toy_model();
    first.fit(&train, opts(1, &dir.join("b"), false)).unwrap();
    let mut rest = toy_model().seed(42); // other init: everything must come from the checkpoint
    let hr = rest.fit(&train, opts(3, &dir.join("b"), true)).unwrap();
    assert_eq!(hr.steps, 2 * 8, "resumed at step 8");
    assert_eq!(hr.values("loss"), h.values("loss")[1..].to_vec());
    assert_eq!(rest.get_weights().unwrap(), whole.get_weights().unwrap());
    // Another batch size is another run.
    let mut other = toy_model();
    let mut o = opts(3, &dir.join("b"), true);
    o.batch_size = 16;
    let e = format!("{:#}", other.fit(&train, o).unwrap_err());
    assert!(e.contains("batch_size"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
