//! Helpers shared by the integration tests (`mod common;` in each): running the `rxla`
//! binary, reading its runs, and training in-process for the sharding tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `rxla` binary from the repository root (status unchecked).
pub fn rxla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rxla"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run rxla")
}

/// Asserts that a run succeeded, showing its stderr when not.
pub fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Asserts that a run failed with a message, not a panic; returns its stderr.
pub fn err(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "should have failed; stderr: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    e
}

/// Runs rxla with `args`, which must succeed.
pub fn rxla_ok(args: &[&str]) -> Output {
    let o = rxla(args);
    ok(&o);
    o
}

/// Runs rxla with `args`, which must fail with a message (not a panic); returns stderr.
pub fn rxla_err(args: &[&str]) -> String {
    err(&rxla(args))
}

/// `rxla train --config cfg --out out extra..` (status unchecked).
pub fn train(cfg: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    rxla(&args)
}

/// `train`, which must succeed.
pub fn train_ok(cfg: &Path, out: &Path, extra: &[&str]) -> Output {
    let o = train(cfg, out, extra);
    ok(&o);
    o
}

/// A fresh, empty directory under the temp dir, unique to this test process.
pub fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rxla-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The rows of a run's `metrics.jsonl`.
pub fn metric_rows(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `key` of every metrics row that has it, in order.
pub fn metrics(dir: &Path, key: &str) -> Vec<f64> {
    metric_rows(dir)
        .iter()
        .filter_map(|v| v[key].as_f64())
        .collect()
}

/// Per-step losses `got` within `rel` (relative) of the single-device run's `want`.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len());
    for (s, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * w.abs(),
            "{what}, step {}: {g} vs single device {w}",
            s + 1
        );
    }
}

/// Bytes of parameter `name` (in `names`, the program's parameter order) on one device.
pub fn bytes_of(st: &train::state::TrainState, names: &[String], name: &str) -> usize {
    let i = names.iter().position(|n| n == name).unwrap();
    st.params[i].bytes_per_device()
}

/// The AdamW (lr 1e-2, weight decay 0.1, clipping at 1, constant schedule) the
/// sharded-equals-single-device tests train with.
pub fn sharding_optimizer(total_steps: usize) -> train::optim::Optimizer {
    use rxla::config::{OptimizerConfig, OptimizerKind, ScheduleConfig};
    train::optim::Optimizer {
        opt: OptimizerConfig {
            kind: OptimizerKind::Adamw,
            lr: 1e-2,
            weight_decay: 0.1,
            clip_norm: Some(1.0),
            ..Default::default()
        },
        schedule: ScheduleConfig::default(),
        total_steps,
    }
}

/// `steps` train steps of `model` with [`sharding_optimizer`] (batch size `b`, init from
/// `seed`) on `batch(step)` under `passes`, on as many devices as the program is sharded
/// over: the losses, the final state and the compiled step (its parameter names, its
/// optimized HLO).
pub fn train_steps(
    client: &runtime::Client,
    model: &dyn models::Model,
    b: usize,
    passes: &train::step::Passes,
    seed: u64,
    steps: usize,
    batch: impl Fn(usize) -> Vec<data::HostArray>,
) -> (Vec<f32>, train::state::TrainState, train::state::Compiled) {
    use train::state::{build_train_step, compile_program, run_train_step, TrainState};
    let opt = sharding_optimizer(steps);
    let (prog, _) = build_train_step(client, model, &opt, b, passes).unwrap();
    let c = compile_program(client, prog).unwrap();
    assert_eq!(c.exe.devices().len(), c.prog.num_devices());
    let mut st = TrainState::init(client, &c.prog, seed).unwrap();
    let losses = (0..steps)
        .map(|s| run_train_step(client, &c, &mut st, &batch(s)).unwrap().0)
        .collect();
    (losses, st, c)
}

/// Runs graphs on the XLA CPU plugin, one device (compiled once per distinct program).
pub struct Xla {
    pub client: runtime::Client,
    cache: std::collections::HashMap<String, runtime::Executable>,
}

impl Xla {
    pub fn new() -> Xla {
        Xla {
            client: runtime::provision::cpu_client(1).unwrap(),
            cache: Default::default(),
        }
    }

    /// `g`'s outputs on `args`, lowered with the default options.
    pub fn eval(
        &mut self,
        g: &graph::Graph,
        args: &[graph::interp::HostTensor],
    ) -> Result<Vec<graph::interp::HostTensor>, String> {
        let mlir = lower::lower(g, &Default::default()).map_err(|e| e.to_string())?;
        if !self.cache.contains_key(&mlir) {
            let exe = self
                .client
                .compile(&mlir, &runtime::CompileOptions::default())
                .map_err(|e| e.to_string())?;
            self.cache.insert(mlir.clone(), exe);
        }
        let bufs: Vec<runtime::Buffer> = args
            .iter()
            .map(|a| train::exec::to_device(&self.client, a, 0))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let refs: Vec<&runtime::Buffer> = bufs.iter().collect();
        let out = self.cache[&mlir]
            .execute1(&refs)
            .map_err(|e| e.to_string())?;
        out.iter()
            .map(|b| train::exec::to_host(b).map_err(|e| e.to_string()))
            .collect()
    }
}
