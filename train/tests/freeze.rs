//! `train.freeze` and `train.lr_multipliers` on a real compiled train step: frozen weights
//! come back bit-identical, get no optimizer state and no gradient; a multiplier scales the
//! update exactly.

use data::HostArray;
use models::mlp::{Mlp, MlpConfig};
use train::groups::ParamGroups;
use train::optim::Optimizer;
use train::optim::{OptimizerConfig, OptimizerKind, ScheduleConfig};
use train::state::{build_train_step, compile_program, run_train_step, Compiled, TrainState};
use train::step::{Feed, Passes};

fn mlp() -> Mlp {
    Mlp(MlpConfig {
        hidden: vec![16],
        input_shape: vec![6],
        classes: 3,
    })
}

fn optimizer(kind: OptimizerKind) -> Optimizer {
    Optimizer {
        opt: OptimizerConfig {
            kind,
            lr: 0.05,
            ..Default::default()
        },
        schedule: ScheduleConfig::default(),
        total_steps: 10,
    }
}

fn batch(step: usize) -> Vec<HostArray> {
    let x: Vec<f32> = (0..8 * 6)
        .map(|i| (((i * 37 + step * 11) % 17) as f32 - 8.0) / 8.0)
        .collect();
    let y: Vec<i32> = (0..8).map(|i| ((i + step) % 3) as i32).collect();
    vec![
        HostArray::F32 {
            data: x,
            dims: vec![8, 6],
        },
        HostArray::I32 {
            data: y,
            dims: vec![8],
        },
    ]
}

fn compiled(client: &runtime::Client, opt: &Optimizer, groups: ParamGroups) -> Compiled {
    let passes = Passes {
        groups,
        ..Default::default()
    };
    let (prog, _) = build_train_step(client, &mlp(), opt, 8, &passes).unwrap();
    compile_program(client, prog).unwrap()
}

fn host(st: &TrainState) -> Vec<Vec<u32>> {
    st.params
        .iter()
        .map(|p| {
            p.to_host::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect()
}

fn dots(c: &Compiled) -> usize {
    c.prog
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, graph::Op::DotGeneral { .. }))
        .count()
}

#[test]
fn frozen_parameters_are_bit_identical_and_have_no_state_or_gradient() {
    let client = runtime::provision::cpu_client(1).unwrap();
    let opt = optimizer(OptimizerKind::Adam);
    let full = compiled(&client, &opt, ParamGroups::default());
    let frozen = compiled(
        &client,
        &opt,
        ParamGroups {
            freeze: vec!["dense0".into()],
            ..Default::default()
        },
    );
    let names: Vec<&str> = frozen.prog.params.iter().map(|p| p.name.as_str()).collect();
    let is_frozen: Vec<bool> = names.iter().map(|n| n.starts_with("dense0")).collect();
    assert_eq!(is_frozen.iter().filter(|&&f| f).count(), 2, "{names:?}");
    assert_eq!(
        frozen.prog.trainable,
        is_frozen.iter().map(|f| !f).collect::<Vec<_>>()
    );
    // No optimizer-state arguments for the frozen parameters.
    for f in &frozen.prog.feeds {
        if let Feed::State(i, _) = f {
            assert!(!is_frozen[*i], "state fed for frozen `{}`", names[*i]);
        }
    }
    // No gradient computation for them: the step graph loses the frozen weight's gradient
    // dot and the backward dot that only fed it (6 dot_generals -> 4).
    assert_eq!((dots(&full), dots(&frozen)), (6, 4));

    let mut st = TrainState::init(&client, &frozen.prog, 3).unwrap();
    let full_st = TrainState::init(&client, &full.prog, 3).unwrap();
    // Adam's two slots for the 2 trainable parameters only (4 of the 8 in a full run).
    assert_eq!(full_st.state.len(), 8);
    assert_eq!(st.state.len(), 4);
    assert!(st.state_bytes_per_device() < full_st.state_bytes_per_device());
    let before = host(&st);
    for s in 0..5 {
        let (loss, _, _) = run_train_step(&client, &frozen, &mut st, &batch(s)).unwrap();
        assert!(loss.is_finite());
    }
    let after = host(&st);
    for (i, n) in names.iter().enumerate() {
        if is_frozen[i] {
            assert_eq!(before[i], after[i], "frozen `{n}` changed");
        } else {
            assert_ne!(before[i], after[i], "trainable `{n}` did not train");
        }
    }
    // Checkpoint tensors name only the trainable parameters' slots, and read back.
    let (params, optim) = st.to_host(&frozen.prog).unwrap();
    assert_eq!(params.len(), 4);
    let slot_names: Vec<&str> = optim.iter().map(|t| t.name.as_str()).collect();
    assert!(
        slot_names.iter().all(|n| n.starts_with("out.")),
        "{slot_names:?}"
    );
    assert_eq!(slot_names.len(), 4);
}

#[test]
fn lr_multipliers_scale_each_parameters_update() {
    let client = runtime::provision::cpu_client(1).unwrap();
    let opt = optimizer(OptimizerKind::Sgd);
    let one = compiled(&client, &opt, ParamGroups::default());
    let half = compiled(
        &client,
        &opt,
        ParamGroups {
            lr_multipliers: vec![("out".into(), 0.5), ("dense0".into(), 0.0)],
            ..Default::default()
        },
    );
    let run = |c: &Compiled| {
        let mut st = TrainState::init(&client, &c.prog, 3).unwrap();
        let p0: Vec<Vec<f32>> = st.params.iter().map(|p| p.to_host().unwrap()).collect();
        run_train_step(&client, c, &mut st, &batch(0)).unwrap();
        let p1: Vec<Vec<f32>> = st.params.iter().map(|p| p.to_host().unwrap()).collect();
        (p0, p1)
    };
    let (a0, a1) = run(&one);
    let (b0, b1) = run(&half);
    assert_eq!(a0, b0);
    for (i, p) in half.prog.params.iter().enumerate() {
        for j in 0..a0[i].len() {
            let d1 = a1[i][j] - a0[i][j];
            let dm = b1[i][j] - b0[i][j];
            let want = if p.name.starts_with("out") {
                0.5 * d1
            } else {
                0.0
            };
            assert!(
                (dm - want).abs() <= 1e-6 * (1.0 + d1.abs()),
                "{} [{j}]: {dm} vs {want}",
                p.name
            );
        }
    }
    assert!(a1[0] != a0[0], "the 1x run did not move");
}
