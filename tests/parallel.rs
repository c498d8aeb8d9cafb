//! Sharded training on 4 virtual CPU devices gives the single-device losses: data
//! parallelism, data x tensor (Megatron), fsdp, pipeline x data (GPipe); and shards
//! parameters as planned.

mod common;
use common::{assert_close, bytes_of, metrics, rxla_err, rxla_ok, tmp_dir, train_ok};
use std::path::{Path, PathBuf};

use data::HostArray;
use models::gpt::{Gpt, GptConfig};
use train::optim::Optimizer;
use train::parallel::{ParallelConfig, Plan};
use train::state::{build_train_step, TrainState};
use train::step::Passes;

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
        attention: Default::default(),
        reversible: false,
        ff_chunks: 1,
    })
}

fn optimizer() -> Optimizer {
    common::sharding_optimizer(STEPS)
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

/// Losses of STEPS steps under `parallel`, the final state and the compiled program's
/// optimized HLO (proto bytes).
fn train(client: &runtime::Client, parallel: ParallelConfig) -> (Vec<f32>, TrainState, Vec<u8>) {
    let passes = Passes {
        parallel: Plan::from_config(&parallel).unwrap(),
        ..Default::default()
    };
    let (losses, st, c) = common::train_steps(client, &gpt(), B, &passes, 3, STEPS, batch);
    (losses, st, c.exe.optimized_program().unwrap())
}

#[test]
fn sharded_training_matches_one_device() {
    let client = runtime::provision::cpu_client(4).unwrap();
    let (one, st1, _) = train(&client, ParallelConfig::default());
    assert!(one[STEPS - 1] < one[0] - 0.3, "training learns: {one:?}");
    let names: Vec<String> = {
        let passes = Passes::default();
        let (p, _) = build_train_step(&client, &gpt(), &optimizer(), B, &passes).unwrap();
        p.params.iter().map(|p| p.name.clone()).collect()
    };
    let replicated = st1.param_bytes_per_device();

    let (data4, st, _) = train(
        &client,
        ParallelConfig {
            data: 4,
            ..Default::default()
        },
    );
    assert_close("data=4", &data4, &one, 1e-4);
    assert_eq!(st.param_bytes_per_device(), replicated);

    let (dt, st, _) = train(
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

    let (fsdp, st, _) = train(
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

    let (pp, st, hlo) = train(
        &client,
        ParallelConfig {
            pipeline: 2,
            data: 2,
            ..Default::default()
        },
    );
    assert_close("pipeline=2 x data=2", &pp, &one, 1e-4);
    // Stages hand their states on by collective-permute (XLA's SPMD partitioner turns the
    // rotation along the stage-split dim into one).
    let permutes = hlo
        .windows(b"collective-permute".len())
        .filter(|w| *w == b"collective-permute")
        .count();
    assert!(permutes > 0, "no collective-permute in the pipelined step");
    // Per-layer parameters are the checkpoint format, whole on every device.
    assert_eq!(st.param_bytes_per_device(), replicated);
}

const CLI_GPT: &str = r#"
seed = 2
[model]
kind = "gpt"
seq_len = 16
d_model = 32
n_layers = 2
n_heads = 4
dropout = 0.1
[data]
dataset = "moby-dick"
max_eval_windows = 32
[train]
batch_size = 8
steps = 20
log_every = 1
eval_every = 10
checkpoint_every = 10
peak_flops = 1e12
[optimizer]
kind = "adamw"
lr = 0.01
weight_decay = 0.1
clip_norm = 1.0
"#;

/// A fresh directory under the temp dir holding the CLI test config; returns (dir, config).
fn cli_dir(name: &str) -> (PathBuf, PathBuf) {
    let root = tmp_dir(name);
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, CLI_GPT).unwrap();
    (root, cfg)
}

/// The 20 losses of run `b` (first 10 steps on a mesh, then resumed on one device) against
/// the uninterrupted single-device run `a`.
fn assert_resumed_losses_match(a: &Path, b: &Path, what: &str) {
    let (la, lb) = (metrics(a, "loss"), metrics(b, "loss"));
    assert_eq!((la.len(), lb.len()), (20, 20));
    for s in 0..20 {
        let tol = if s < 10 { 1e-4 } else { 1e-5 };
        assert!(
            (la[s] - lb[s]).abs() <= tol * la[s].abs(),
            "step {}: one device {} vs {what} {}",
            s + 1,
            la[s],
            lb[s]
        );
    }
}

/// From the CLI: a run saved on 4 devices (data=2 x tensor=2, fsdp) resumes on one device
/// and continues as the uninterrupted single-device run; `rxla summary` prints the plan.
#[test]
fn saved_on_four_devices_resumes_on_one() {
    let (root, cfg) = cli_dir("parallel");
    let (a, b) = (root.join("one"), root.join("four"));
    train_ok(&cfg, &a, &[]);
    let four = [
        "--cpu-devices",
        "4",
        "--set",
        "parallel.data=2",
        "--set",
        "parallel.tensor=2",
        "--set",
        "parallel.fsdp=true",
    ];
    let mut args = four.to_vec();
    args.extend(["--set", "train.steps=10"]);
    let o = train_ok(&cfg, &b, &args);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("mesh data=2 x model=2 on 4 devices"), "{log}");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["devices"], 4);
    train_ok(&cfg, &b, &["--resume", "--set", "train.steps=20"]);
    assert_resumed_losses_match(&a, &b, "saved on four");
    let (ea, eb) = (metrics(&a, "eval_loss"), metrics(&b, "eval_loss"));
    assert_eq!(ea.len(), 2);
    assert!(
        (ea[0] - eb[0]).abs() <= 1e-4 * ea[0],
        "sharded eval {ea:?} vs {eb:?}"
    );

    let o = rxla_ok(&[
        "summary",
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        "parallel.data=4",
        "--set",
        "parallel.fsdp=true",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("Sharding plan: mesh data=4 (4 devices)"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("h0.mlp.fc.w")
            && l.contains("(embed, mlp)")
            && l.contains("(8, 128)")),
        "{text}"
    );

    // Bad plans are clear errors.
    let bad = root.join("bad");
    let err = |extra: &[&str]| common::err(&common::train(&cfg, &bad, extra));
    let e = err(&["--cpu-devices", "2", "--set", "parallel.data=4"]);
    assert!(
        e.contains("needs 4 devices") && e.contains("--cpu-devices 4"),
        "{e}"
    );
    let e = err(&["--set", "parallel.data=3"]);
    assert!(e.contains("multiple of parallel.data (3)"), "{e}");
    let e = err(&["--set", "parallel.fsdp=true"]);
    assert!(e.contains("`parallel.fsdp`"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// From the CLI: gpt with pipeline=2 x data=2 gives the single-device losses, its checkpoint
/// (per-layer tensors) resumes on one device, and `rxla summary` shows the stage placement.
#[test]
fn pipeline_from_the_cli_resumes_on_one_device() {
    let (root, cfg) = cli_dir("pipeline");
    let (a, b) = (root.join("one"), root.join("pipe"));
    // Dropout off: the pipeline draws its masks per stage-vectorized block.
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec!["--set", "model.dropout=0.0"];
        args.extend_from_slice(extra);
        train_ok(&cfg, out, &args)
    };
    run(&a, &[]);
    let o = run(
        &b,
        &[
            "--cpu-devices",
            "4",
            "--set",
            "parallel.pipeline=2",
            "--set",
            "parallel.data=2",
            "--set",
            "train.steps=10",
        ],
    );
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("mesh stage=2 x data=2 on 4 devices"), "{log}");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["pipeline"]["bubble_fraction"], 0.2);
    run(&b, &["--resume", "--set", "train.steps=20"]);
    assert_resumed_losses_match(&a, &b, "pipelined");

    let summary = |extra: &[&str]| {
        let mut args = vec!["summary", "--config", cfg.to_str().unwrap()];
        args.extend_from_slice(extra);
        String::from_utf8_lossy(&rxla_ok(&args).stdout).into_owned()
    };
    let text = summary(&[
        "--set",
        "parallel.pipeline=2",
        "--set",
        "parallel.data=2",
        "--set",
        "parallel.microbatches=2",
    ]);
    assert!(
        text.contains("Pipeline: GPipe, 2 stages x 2 microbatches, 3 iterations, bubble (S-1)/(M+S-1) = 0.333"),
        "{text}"
    );
    assert!(
        text.contains("stage 1 on devices [2, 3]: layers h1"),
        "{text}"
    );

    let e = rxla_err(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        root.join("bad").to_str().unwrap(),
        "--set",
        "parallel.pipeline=2",
        "--set",
        "parallel.microbatches=3",
    ]);
    assert!(e.contains("multiple of parallel.microbatches (3)"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// Tensor parallelism that cannot split what it should (3 ways over 4 heads, vocab 64, MLP
/// 128) is an error naming the dims, unless `parallel.allow_unsplit`; a size that divides
/// them all passes the check.
#[test]
fn tensor_size_that_divides_no_head_is_an_error() {
    let build = |tensor: usize, allow_unsplit: bool| {
        let passes = Passes {
            parallel: Plan::from_config(&ParallelConfig {
                tensor,
                allow_unsplit,
                ..Default::default()
            })
            .unwrap(),
            ..Default::default()
        };
        train::step::train_step(&gpt(), &optimizer(), B, &passes, None)
    };
    let e = format!("{:#}", build(3, false).unwrap_err());
    assert!(
        e.contains("parallel.tensor = 3 cannot split")
            && e.contains("`h0.attn.qkv.w` dim 2 (heads = 4)")
            && e.contains("`wte` dim 0 (vocab = 64)")
            && e.contains("parallel.allow_unsplit"),
        "{e}"
    );
    build(3, true).unwrap();
    build(2, false).unwrap();
}
