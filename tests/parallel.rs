//! Sharded training on 4 virtual CPU devices gives the single-device losses: data
//! parallelism, data x tensor (Megatron), fsdp; and shards parameters as planned.

use models::gpt::{Gpt, GptConfig};
use rxla::config::{OptimizerConfig, OptimizerKind, ScheduleConfig};
use rxla::exec::HostArray;
use rxla::optim::Optimizer;
use rxla::parallel::{ParallelConfig, Plan};
use rxla::step::Passes;
use rxla::train::{build_train_step, compile_program, run_train_step, TrainState};

const B: usize = 8;
const T: usize = 16;
const STEPS: usize = 20;

fn gpt() -> Gpt {
    Gpt(GptConfig {
        vocab_size: 64,
        seq_len: T,
        d_model: 32,
        n_layers: 2,
        n_heads: 4,
        dropout: 0.0,
        tied_head: true,
    })
}

fn optimizer() -> Optimizer {
    Optimizer {
        opt: OptimizerConfig {
            kind: OptimizerKind::Adamw,
            lr: 1e-2,
            weight_decay: 0.1,
            clip_norm: Some(1.0),
            ..Default::default()
        },
        schedule: ScheduleConfig::default(),
        total_steps: STEPS,
    }
}

/// Deterministic token batches (a different one per step).
fn batch(step: usize) -> Vec<HostArray> {
    let ids: Vec<i32> = (0..B * (T + 1))
        .map(|i| ((i * 7 + step * 13 + (i / 5) * 3) % 64) as i32)
        .collect();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for r in 0..B {
        let row = &ids[r * (T + 1)..(r + 1) * (T + 1)];
        x.extend_from_slice(&row[..T]);
        y.extend_from_slice(&row[1..]);
    }
    let dims = vec![B as i64, T as i64];
    vec![
        HostArray::I32 {
            data: x,
            dims: dims.clone(),
        },
        HostArray::I32 { data: y, dims },
    ]
}

/// Losses of STEPS steps under `parallel`, and the final state.
fn train(client: &runtime::Client, parallel: ParallelConfig) -> (Vec<f32>, TrainState) {
    let passes = Passes {
        parallel: Plan::from_config(&parallel).unwrap(),
        ..Default::default()
    };
    let (prog, _) = build_train_step(client, &gpt(), &optimizer(), B, &passes).unwrap();
    let c = compile_program(client, prog).unwrap();
    assert_eq!(c.exe.devices().len(), c.prog.num_devices());
    let mut st = TrainState::init(client, &c.prog, 3).unwrap();
    let losses = (0..STEPS)
        .map(|s| run_train_step(client, &c, &mut st, &batch(s)).unwrap().0)
        .collect();
    (losses, st)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len());
    for (s, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * w.abs(),
            "{what}, step {}: {g} vs single device {w}",
            s + 1
        );
    }
}

fn bytes_of(st: &TrainState, prog_params: &[String], name: &str) -> usize {
    let i = prog_params.iter().position(|n| n == name).unwrap();
    st.params[i].bytes_per_device()
}

#[test]
fn sharded_training_matches_one_device() {
    let client = runtime::provision::cpu_client(4).unwrap();
    let (one, st1) = train(&client, ParallelConfig::default());
    assert!(one[STEPS - 1] < one[0] - 0.3, "training learns: {one:?}");
    let names: Vec<String> = {
        let passes = Passes::default();
        let (p, _) = build_train_step(&client, &gpt(), &optimizer(), B, &passes).unwrap();
        p.params.iter().map(|p| p.name.clone()).collect()
    };
    let replicated = st1.param_bytes_per_device();

    let (data4, st) = train(
        &client,
        ParallelConfig {
            data: 4,
            ..Default::default()
        },
    );
    assert_close("data=4", &data4, &one, 1e-4);
    assert_eq!(st.param_bytes_per_device(), replicated);

    let (dt, st) = train(
        &client,
        ParallelConfig {
            data: 2,
            tensor: 2,
            ..Default::default()
        },
    );
    assert_close("data=2 x tensor=2", &dt, &one, 1e-4);
    // Heads, MLP hidden and vocabulary are split in two; norms and wpe stay whole.
    for name in [
        "h0.attn.qkv.w",
        "h0.attn.proj.w",
        "h1.mlp.fc.w",
        "h1.mlp.fc.b",
        "h1.mlp.proj.w",
        "wte",
    ] {
        assert_eq!(
            2 * bytes_of(&st, &names, name),
            bytes_of(&st1, &names, name),
            "{name} is halved by tensor=2"
        );
    }
    assert_eq!(
        bytes_of(&st, &names, "h0.ln1.g"),
        bytes_of(&st1, &names, "h0.ln1.g")
    );

    let (fsdp, st) = train(
        &client,
        ParallelConfig {
            data: 4,
            fsdp: true,
            ..Default::default()
        },
    );
    assert_close("fsdp over 4", &fsdp, &one, 1e-4);
    // Every parameter has an embed dim of 32, split in four.
    assert_eq!(4 * st.param_bytes_per_device(), replicated);
    assert_eq!(
        4 * st.state_bytes_per_device(),
        st1.state_bytes_per_device()
    );
    // Sharded state gathers to the same parameters as one device's.
    for (a, b) in st.params.iter().zip(&st1.params) {
        let (a, b) = (a.to_host::<f32>().unwrap(), b.to_host::<f32>().unwrap());
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-3 * scale.max(1e-3), "{diff} vs scale {scale}");
    }
}
