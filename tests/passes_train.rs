//! The compiler passes on a real model's train step: gradient accumulation equals the
//! full batch, remat is exact and saves memory, a remat budget fits, bf16 tracks f32.

use data::HostArray;
use models::gpt::{Gpt, GptConfig};
use rxla::config::{OptimizerConfig, OptimizerKind, ScheduleConfig};
use train::optim::Optimizer;
use train::state::{build_train_step, compile_program, run_train_step, Compiled, TrainState};
use train::step::{Passes, Precision, Remat};

fn gpt() -> Gpt {
    Gpt(GptConfig {
        vocab_size: 64,
        seq_len: 32,
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        dropout: 0.0,
        tied_head: true,
        attention: Default::default(),
        reversible: false,
        ff_chunks: 1,
    })
}

fn optimizer(kind: OptimizerKind, lr: f64) -> Optimizer {
    Optimizer {
        opt: OptimizerConfig {
            kind,
            lr,
            ..Default::default()
        },
        schedule: ScheduleConfig::default(),
        total_steps: 100,
    }
}

/// Deterministic token batches (a different one per step).
fn batch(step: usize, b: usize, t: usize) -> Vec<HostArray> {
    let ids: Vec<i32> = (0..b * (t + 1))
        .map(|i| ((i * 7 + step * 13 + (i / 5) * 3) % 64) as i32)
        .collect();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for r in 0..b {
        let row = &ids[r * (t + 1)..(r + 1) * (t + 1)];
        x.extend_from_slice(&row[..t]);
        y.extend_from_slice(&row[1..]);
    }
    let dims = vec![b as i64, t as i64];
    vec![
        HostArray::I32 {
            data: x,
            dims: dims.clone(),
        },
        HostArray::I32 { data: y, dims },
    ]
}

fn compiled(client: &runtime::Client, opt: &Optimizer, b: usize, passes: &Passes) -> Compiled {
    let (prog, _) = build_train_step(client, &gpt(), opt, b, passes).unwrap();
    compile_program(client, prog).unwrap()
}

fn run(client: &runtime::Client, c: &Compiled, steps: usize, b: usize) -> (Vec<f32>, TrainState) {
    let mut st = TrainState::init(client, &c.prog, 7).unwrap();
    let losses = (0..steps)
        .map(|s| {
            run_train_step(client, c, &mut st, &batch(s, b, 32))
                .unwrap()
                .0
        })
        .collect();
    (losses, st)
}

fn params(st: &TrainState) -> Vec<Vec<f32>> {
    st.params
        .iter()
        .map(|p| p.to_host::<f32>().unwrap())
        .collect()
}

#[test]
fn gradient_accumulation_equals_the_full_batch() {
    let client = runtime::provision::cpu_client(1).unwrap();
    // SGD with lr 1: the update is the gradient itself.
    let opt = optimizer(OptimizerKind::Sgd, 1.0);
    let full = compiled(&client, &opt, 8, &Passes::default());
    let accum = compiled(
        &client,
        &opt,
        8,
        &Passes {
            grad_accum: 4,
            ..Default::default()
        },
    );
    let init = TrainState::init(&client, &full.prog, 7).unwrap();
    let p0 = params(&init);
    let (l1, s1) = run(&client, &full, 1, 8);
    let (l4, s4) = run(&client, &accum, 1, 8);
    assert!(
        (l1[0] - l4[0]).abs() <= 1e-5 * l1[0].abs(),
        "loss {} vs {}",
        l1[0],
        l4[0]
    );
    let (p1, p4) = (params(&s1), params(&s4));
    for (i, ((a, b), z)) in p1.iter().zip(&p4).zip(&p0).enumerate() {
        let g1: Vec<f32> = z.iter().zip(a).map(|(z, a)| z - a).collect();
        let g4: Vec<f32> = z.iter().zip(b).map(|(z, b)| z - b).collect();
        let scale = g1.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
        let diff = g1
            .iter()
            .zip(&g4)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff <= 1e-5 * scale,
            "param {i}: gradient differs by {diff} (scale {scale})"
        );
    }
    assert!(accum
        .prog
        .graph
        .nodes
        .iter()
        .any(|n| matches!(n.op, graph::Op::Scan(_))));
    let err = build_train_step(
        &client,
        &gpt(),
        &opt,
        6,
        &Passes {
            grad_accum: 4,
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("multiple of train.grad_accum"), "{err}");
}

#[test]
fn remat_is_exact_saves_memory_and_meets_a_budget() {
    let client = runtime::provision::cpu_client(1).unwrap();
    let opt = optimizer(OptimizerKind::Adamw, 3e-3);
    let b = 16;
    let none = compiled(&client, &opt, b, &Passes::default());
    let full = compiled(
        &client,
        &opt,
        b,
        &Passes {
            remat: Remat::Full,
            ..Default::default()
        },
    );
    let dots = compiled(
        &client,
        &opt,
        b,
        &Passes {
            remat: Remat::SaveDots,
            ..Default::default()
        },
    );
    let t_none = none.exe.memory_stats().unwrap().temp_bytes;
    let t_full = full.exe.memory_stats().unwrap().temp_bytes;
    let t_dots = dots.exe.memory_stats().unwrap().temp_bytes;
    assert!(
        t_full * 4 <= t_none * 3,
        "full remat temp {t_full} vs none {t_none}"
    );
    assert!(t_dots < t_none, "save_dots temp {t_dots} vs none {t_none}");
    let (ln, _) = run(&client, &none, 8, b);
    let (lf, _) = run(&client, &full, 8, b);
    let (ld, _) = run(&client, &dots, 8, b);
    for s in 0..8 {
        for (what, l) in [("full", lf[s]), ("save_dots", ld[s])] {
            assert!(
                (l - ln[s]).abs() <= 1e-5 * ln[s].abs(),
                "step {s} {what}: {l} vs {}",
                ln[s]
            );
        }
    }
    // A budget between the two is met, checked with compiled memory stats.
    let budget = ((t_none + t_full) / 2) as u64;
    let (prog, report) = build_train_step(
        &client,
        &gpt(),
        &opt,
        b,
        &Passes {
            remat: Remat::Budget(budget),
            ..Default::default()
        },
    )
    .unwrap();
    let c = compile_program(&client, prog).unwrap();
    let t = c.exe.memory_stats().unwrap().temp_bytes as u64;
    assert!(t <= budget, "budget {budget}: compiled temp {t}");
    assert_eq!(report.measured_temp_bytes, Some(t));
    // An impossible budget is a clear error.
    let err = build_train_step(
        &client,
        &gpt(),
        &opt,
        b,
        &Passes {
            remat: Remat::Budget(1000),
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("cannot be met"), "{err}");
}

#[test]
fn bf16_tracks_f32_and_runs_dots_in_bf16() {
    let client = runtime::provision::cpu_client(1).unwrap();
    let opt = optimizer(OptimizerKind::Adamw, 3e-3);
    let f32c = compiled(&client, &opt, 8, &Passes::default());
    let (prog, report) = build_train_step(
        &client,
        &gpt(),
        &opt,
        8,
        &Passes {
            precision: Precision::Bf16,
            ..Default::default()
        },
    )
    .unwrap();
    let p = report.precision.expect("precision report");
    assert!(p.dots >= 10, "{} dots in bf16", p.dots);
    let mlir = lower::lower(&prog.graph, &prog.lower_options()).unwrap();
    assert!(mlir.contains("bf16"));
    let bf = compile_program(&client, prog).unwrap();
    let (lf, _) = run(&client, &f32c, 30, 8);
    let (lb, _) = run(&client, &bf, 30, 8);
    assert!(lf[29] < lf[0] * 0.9, "f32 learns: {} -> {}", lf[0], lf[29]);
    for s in [0, 10, 29] {
        assert!(
            (lb[s] - lf[s]).abs() <= 0.02 * lf[s],
            "step {s}: bf16 {} vs f32 {}",
            lb[s],
            lf[s]
        );
    }
}

/// The acceptance point on gpt-small-bench (compile only): full remat needs at most half
/// the temp memory of none.
#[test]
fn full_remat_halves_gpt_small_bench_temp_memory() {
    let client = runtime::provision::cpu_client(1).unwrap();
    let cfg =
        rxla::config::TrainConfig::load(std::path::Path::new("configs/gpt-small-bench.toml"), &[])
            .unwrap();
    let model = Gpt(cfg.model_config().unwrap());
    let opt = optimizer(OptimizerKind::Adamw, 1e-3);
    let temp = |remat: Remat| {
        let (prog, _) = build_train_step(
            &client,
            &model,
            &opt,
            cfg.train.batch_size,
            &Passes {
                remat,
                ..Default::default()
            },
        )
        .unwrap();
        compile_program(&client, prog)
            .unwrap()
            .exe
            .memory_stats()
            .unwrap()
            .temp_bytes
    };
    let (none, full) = (temp(Remat::None), temp(Remat::Full));
    assert!(full * 2 <= none, "full {full} vs none {none}");
}

/// `Passes::skip_nonfinite`: a batch that makes the loss NaN leaves parameters and optimizer
/// state exactly as they were, and the next clean batch trains on; without it the NaN
/// reaches the weights.
#[test]
fn skip_nonfinite_drops_the_update_of_a_nan_batch() {
    use models::mlp::{Mlp, MlpConfig};
    let client = runtime::provision::cpu_client(1).unwrap();
    let model = Mlp(MlpConfig {
        hidden: vec![8],
        input_shape: vec![4],
        classes: 3,
    });
    let opt = optimizer(OptimizerKind::Adam, 0.01);
    let batch = |step: usize, poison: bool| {
        let mut x: Vec<f32> = (0..16)
            .map(|i| ((i * 7 + step * 3) % 11) as f32 / 11.0)
            .collect();
        if poison {
            x[5] = f32::NAN;
        }
        vec![
            HostArray::F32 {
                data: x,
                dims: vec![4, 4],
            },
            HostArray::I32 {
                data: vec![0, 1, 2, (step % 3) as i32],
                dims: vec![4],
            },
        ]
    };
    let host = |st: &TrainState| -> Vec<Vec<f32>> {
        st.params
            .iter()
            .chain(&st.state)
            .map(|p| p.to_host::<f32>().unwrap())
            .collect()
    };
    for skip in [true, false] {
        let passes = Passes {
            skip_nonfinite: skip,
            ..Default::default()
        };
        let (prog, _) = build_train_step(&client, &model, &opt, 4, &passes).unwrap();
        let c = compile_program(&client, prog).unwrap();
        let mut st = TrainState::init(&client, &c.prog, 3).unwrap();
        let (l0, ..) = run_train_step(&client, &c, &mut st, &batch(0, false)).unwrap();
        assert!(l0.is_finite());
        let before = host(&st);
        let (l1, _, gnorm) = run_train_step(&client, &c, &mut st, &batch(1, true)).unwrap();
        assert!(
            l1.is_nan() && gnorm.is_nan(),
            "loss {l1}, grad norm {gnorm}"
        );
        let after = host(&st);
        if !skip {
            assert!(
                after.iter().flatten().any(|v| v.is_nan()),
                "NaN reached no weight"
            );
            continue;
        }
        let same = before
            .iter()
            .flatten()
            .zip(after.iter().flatten())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "the NaN step changed parameters or optimizer state");
        let (l2, ..) = run_train_step(&client, &c, &mut st, &batch(2, false)).unwrap();
        assert!(l2.is_finite());
        assert_ne!(host(&st), after, "a clean step after the skip trains");
    }
}
