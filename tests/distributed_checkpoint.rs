//! A checkpoint written by 4 processes (each its own tiles, barriers through the coordination
//! service on loopback) restores into one process, which continues with the losses of a run
//! that never stopped.

mod common;
use common::{metric_rows, ok, tmp_dir, train};
use std::path::Path;
use std::time::Duration;

use train::checkpoint::sharded::{cut_tile, owned_tiles, save, Group, SaveJob, Tile};

const TINY_GPT: &str = r#"
seed = 5
[model]
kind = "gpt"
seq_len = 16
d_model = 16
n_layers = 1
n_heads = 2
dropout = 0.1
[data]
dataset = "moby-dick"
max_eval_windows = 64
[train]
batch_size = 4
steps = 10
log_every = 1
eval_every = 10
checkpoint_every = 5
keep_checkpoints = 2
[optimizer]
kind = "adamw"
lr = 0.01
weight_decay = 0.1
[schedule]
kind = "warmup_cosine"
warmup_steps = 3
decay_steps = 10
"#;

fn losses(dir: &Path) -> Vec<(u64, f64)> {
    metric_rows(dir)
        .iter()
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

/// 8 devices, 2 per process; a tensor whose first dim 4 divides is split into 4 tiles, tile
/// `d / 2` on device `d` (each tile on both devices of its process: written once); the rest is
/// replicated on all 8 (written by process 0 only).
fn layout(dims: &[i64]) -> runtime::ShardLayout {
    if !dims.is_empty() && dims[0] % 4 == 0 {
        let mut tiles = vec![1; dims.len()];
        tiles[0] = 4;
        runtime::ShardLayout {
            dims: dims.to_vec(),
            tiles,
            device_tiles: (0..8)
                .map(|d| {
                    let mut i = vec![0; dims.len()];
                    i[0] = d / 2;
                    i
                })
                .collect(),
        }
    } else {
        runtime::ShardLayout::replicated(dims, 8)
    }
}

#[test]
fn four_process_checkpoint_resumes_in_one_process_exactly() {
    let root = tmp_dir("dist-ckpt");
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, TINY_GPT).unwrap();
    let (a, b) = (root.join("a"), root.join("b"));
    ok(&train(&cfg, &a, &[]));
    ok(&train(&cfg, &b, &["--set", "train.steps=5"]));

    // Replace b's single-process checkpoint of step 5 by one written by 4 processes.
    let ckpts = b.join("checkpoints");
    let one = train::checkpoint::load(&ckpts.join("step-00000005")).unwrap();
    let tok = root.join("tokenizer.json");
    std::fs::copy(one.dir.join("tokenizer.json"), &tok).unwrap();
    std::fs::remove_dir_all(&one.dir).unwrap();
    let coordinator =
        dist::Coordinator::start("127.0.0.1:0".parse().unwrap(), 4, dist::Timeouts::default())
            .unwrap();
    let addr = coordinator.local_addr().to_string();
    let device_process: Vec<u32> = (0..8).map(|d| d / 2).collect();
    let names = |ts: &[train::checkpoint::NamedTensor]| {
        ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>()
    };
    let (pn, on) = (names(&one.params), names(&one.optimizer));
    let written: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u32)
            .map(|p| {
                let (one, addr, dp, pn, on, ckpts, tok) =
                    (&one, &addr, &device_process, &pn, &on, &ckpts, &tok);
                s.spawn(move || {
                    let client =
                        dist::Client::connect(addr, p, 4, dist::ClientOptions::default()).unwrap();
                    let mut tiles = Vec::new();
                    for (group, ts) in [
                        (Group::Params, &one.params),
                        (Group::Optimizer, &one.optimizer),
                    ] {
                        for t in ts {
                            let l = layout(&t.dims);
                            for idx in owned_tiles(&l, dp, p) {
                                tiles.push(Tile {
                                    group,
                                    name: t.name.clone(),
                                    dims: t.dims.clone(),
                                    tiles: l.tiles.clone(),
                                    data: cut_tile(&t.data, &t.dims, &l.tiles, &idx),
                                    index: idx,
                                });
                            }
                        }
                    }
                    let extra = [("tokenizer.json", tok.as_path())];
                    let job = SaveJob {
                        root: ckpts,
                        state: &one.state,
                        params: pn,
                        optimizer: on,
                        extra_files: &extra,
                        keep: 2,
                        process: p,
                        num_processes: 4,
                    };
                    save(&job, &tiles, &mut |name| {
                        client.barrier(name, Duration::from_secs(30))?;
                        Ok(())
                    })
                    .unwrap();
                    client.goodbye().unwrap();
                    tiles.len()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        written.iter().all(|&n| n > 0),
        "every process wrote tiles: {written:?}"
    );
    assert!(
        written[0] > written[1],
        "process 0 also wrote the replicated tensors: {written:?}"
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ckpts.join("step-00000005/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["format"], 3);

    ok(&train(&cfg, &b, &["--resume"]));
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 10);
    assert_eq!(la, lb, "resumed from the 4-process checkpoint");
    std::fs::remove_dir_all(&root).unwrap();
}

fn launch(n: u32, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rxla"))
        .args(["launch", "--local", &n.to_string(), "--grace", "20", "--"])
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .unwrap()
}

fn evals(dir: &Path) -> Vec<(u64, f64)> {
    metric_rows(dir)
        .iter()
        .filter_map(|v| Some((v["step"].as_u64()?, v.get("eval_loss")?.as_f64()?)))
        .collect()
}

/// `rxla train` as a job (`rxla launch --local 1`: bootstrap, the PJRT client on the job's
/// store, heartbeats, evaluation summed over the job's processes) trains exactly as one
/// process does, and writes the job's checkpoint format, which one process resumes exactly.
#[test]
fn a_job_trains_like_one_process_and_one_process_resumes_its_checkpoint() {
    let root = tmp_dir("job-train");
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, TINY_GPT).unwrap();
    let (a, b) = (root.join("a"), root.join("b"));
    ok(&train(&cfg, &a, &[]));
    let (cfg_s, b_s) = (cfg.to_str().unwrap(), b.to_str().unwrap());
    let o = launch(
        1,
        &[
            "train",
            "--config",
            cfg_s,
            "--out",
            b_s,
            "--set",
            "train.steps=5",
            "--set",
            "train.eval_every=5",
        ],
    );
    ok(&o);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(b.join("checkpoints/step-00000005/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["format"], 3, "the job's checkpoint format");
    assert!(b
        .join("checkpoints/step-00000005/shards-p0.safetensors")
        .is_file());
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la[..5], lb[..], "the job's steps");
    ok(&train(&cfg, &b, &["--resume"]));
    assert_eq!(losses(&a), losses(&b), "resumed in one process");
    let (ea, eb) = (evals(&a), evals(&b));
    assert_eq!(ea.last(), eb.last(), "final evaluation");
    assert!(!eb.is_empty());
    std::fs::remove_dir_all(&root).unwrap();
}

/// The CPU plugins have no cross-process collectives: a job of two CPU processes is refused
/// by both, saying why and what to do, instead of training two unrelated models.
#[test]
fn a_job_of_cpu_processes_is_refused_naming_why() {
    let root = tmp_dir("job-cpu");
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, TINY_GPT).unwrap();
    let out = root.join("run");
    let o = launch(
        2,
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no cross-process support"), "{err}");
    assert!(err.contains("--cpu-devices"), "{err}");
    assert!(!out.join("checkpoints").exists(), "nothing trained");
    std::fs::remove_dir_all(&root).unwrap();
}
