//! The `rxla` binary end to end: training on real MNIST, and bad input ending in clear errors.

mod common;
use common::{rxla, rxla_err, tmp_dir};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    tmp_dir(&format!("cli-{name}"))
}

const MLP: &str = r#"
seed = 1
[model]
kind = "mlp"
hidden = [128]
[data]
dataset = "mnist"
[train]
batch_size = 64
steps = 120
eval_every = 60
log_every = 20
eval_batch_size = 1000
[optimizer]
kind = "adam"
lr = 0.002
[schedule]
kind = "warmup_cosine"
warmup_steps = 10
"#;

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("cfg.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn trains_an_mlp_on_mnist_and_writes_metrics() {
    let dir = tmp("mlp");
    let cfg = write_config(&dir, MLP);
    let out = dir.join("run");
    let o = rxla(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let acc = summary["eval_accuracy"].as_f64().unwrap();
    // 120 Adam steps of a 1-hidden-layer MLP reach ~90% on the 10,000 test images.
    assert!(acc > 0.85 && acc <= 1.0, "eval_accuracy {acc}");
    assert_eq!(summary["steps"], 120);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "one line per 20 steps");
    for l in &lines {
        for k in ["step", "loss", "lr", "examples_per_s"] {
            assert!(l.get(k).is_some(), "{k} missing in {l}");
        }
    }
    assert!(lines[0]["loss"].as_f64().unwrap() > lines[5]["loss"].as_f64().unwrap());
    // Evaluated at 60 and 120 only.
    let evals: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("eval_accuracy").is_some())
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(evals, vec![60, 120]);
    // Warmup then cosine: lr rises for 10 steps, ends near 0.
    assert!(lines[5]["lr"].as_f64().unwrap() < 1e-5);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let err = rxla_err(args);
    for n in needles {
        assert!(err.contains(n), "{args:?}: `{n}` not in: {err}");
    }
}

#[test]
fn bad_configs_are_clear_errors() {
    let dir = tmp("bad");
    let cfg = write_config(&dir, MLP);
    let c = cfg.to_str().unwrap();
    let out = dir.join("o");
    let o = out.to_str().unwrap();
    fails_with(
        &[
            "train",
            "--config",
            c,
            "--out",
            o,
            "--set",
            "optimizer.lrr=1",
        ],
        &["optimizer", "lrr"],
    );
    fails_with(
        &[
            "train",
            "--config",
            c,
            "--out",
            o,
            "--set",
            "train.batch_size=\"big\"",
        ],
        &["`train.batch_size`", "invalid type"],
    );
    fails_with(
        &[
            "train",
            "--config",
            c,
            "--out",
            o,
            "--set",
            "data.dataset=imagenet",
        ],
        &["unknown dataset `imagenet`", "mnist"],
    );
    fails_with(
        &[
            "train",
            "--config",
            c,
            "--out",
            o,
            "--set",
            "model.kind=resnet",
        ],
        &["unknown model `resnet`", "model.kind"],
    );
    fails_with(
        &[
            "train",
            "--config",
            c,
            "--out",
            o,
            "--set",
            "optimizer.lr=-1",
        ],
        &["optimizer.lr"],
    );
    fails_with(
        &["train", "--config", "no/such/file.toml"],
        &["no/such/file.toml"],
    );
    std::fs::write(dir.join("broken.toml"), "seed = [").unwrap();
    fails_with(
        &[
            "train",
            "--config",
            dir.join("broken.toml").to_str().unwrap(),
        ],
        &["not valid TOML"],
    );
    // A model whose shapes don't fit: the error names the op and the model's source line.
    fails_with(
        &[
            "train",
            "--config",
            "configs/mnist-cnn.toml",
            "--out",
            o,
            "--set",
            "model.input_shape=[6,6,1]",
        ],
        &["convolution at models/src/cnn.rs:", "does not fit"],
    );
    // Data that does not fit the model.
    fails_with(
        &[
            "train",
            "--config",
            "configs/mnist-cnn.toml",
            "--out",
            o,
            "--set",
            "model.input_shape=[28,28,3]",
        ],
        &["data input 0", "f32[64,28,28,3]"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lower_prints_stablehlo_with_source_locations() {
    let o = rxla(&[
        "lower",
        "--config",
        "configs/mnist-cnn.toml",
        "--set",
        "train.batch_size=2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("module @train_step"));
    assert!(text.contains("stablehlo.convolution"));
    assert!(
        text.contains("tf.aliasing_output"),
        "parameters and state are donated"
    );
    assert!(
        text.contains("models/src/cnn.rs"),
        "locations point at model code"
    );
}

#[test]
fn devices_lists_four_cpu_devices() {
    let o = rxla(&["devices", "--cpu-devices", "4"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("device "))
            .count(),
        4
    );
    assert!(text.contains("PJRT API version:  0.115"));
    fails_with(&["devices", "--backend", "tpu"], &["pip install libtpu"]);
}

#[test]
fn summary_and_bench_report_the_cnn() {
    let o = rxla(&["summary", "--config", "configs/mnist-cnn.toml", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["total_parameters"], 93_322);
    assert!(s["compiled_memory"]["temp_bytes"].as_i64().unwrap() > 0);
    let o = rxla(&["summary", "--config", "configs/mnist-cnn.toml"]);
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(
        table.contains("conv1.kernel")
            && table.contains("(3, 3, 32, 64)")
            && table.contains("18432")
    );
    let o = rxla(&[
        "bench",
        "--config",
        "configs/mnist-cnn.toml",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--set",
        "train.batch_size=8",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "compile_s",
        "step_ms_median",
        "step_ms_min",
        "step_ms_max",
        "examples_per_s",
        "flops_per_step",
        "mfu",
    ] {
        assert!(b[k].as_f64().unwrap() > 0.0, "{k} in {b}");
    }
}

/// The CLI runs the same Learner as Keras, callbacks included: early stopping on the
/// evaluations ends the run early, and TensorBoard gets every logged record.
#[test]
fn early_stopping_and_tensorboard_from_the_config() {
    let dir = tmp("callbacks");
    // No evaluation improves by 1e9: patience 2 stops after the third one (step 60).
    let text = MLP.replace("eval_every = 60", "eval_every = 20");
    let text = text.replace(
        "eval_batch_size = 1000",
        "eval_batch_size = 1000\ntensorboard = true\nearly_stopping = { monitor = \"eval_loss\", patience = 2, min_delta = 1e9 }",
    );
    let cfg = write_config(&dir, &text);
    let out = dir.join("run");
    let o = rxla(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let steps = common::metrics(&out, "step");
    assert_eq!(steps.last(), Some(&60.0), "{steps:?}");
    let events: Vec<_> = std::fs::read_dir(out.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let ev = rxla::keras::tensorboard::read_events(&events[0]).unwrap();
    let tags: std::collections::BTreeSet<String> = ev
        .iter()
        .flat_map(|e| {
            e.summary
                .iter()
                .flat_map(|s| s.value.iter().map(|v| v.tag.clone()))
        })
        .collect();
    assert!(
        tags.contains("loss") && tags.contains("eval_loss"),
        "{tags:?}"
    );
    // A key the evaluations do not have is an error naming it.
    let bad = text.replace("monitor = \"eval_loss\"", "monitor = \"eval_los\"");
    let cfg = write_config(&dir, &bad);
    let e = rxla_err(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.join("bad").to_str().unwrap(),
    ]);
    assert!(e.contains("eval_los") && e.contains("eval_loss"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `kind = "bert"` is registered: the config's summary counts BERT's parameters (4 × 128,
/// a 4096-token vocabulary) and bench runs its MLM + NSP train step.
#[test]
fn summary_and_bench_report_bert() {
    let cfg = "configs/bert-mlm-nsp.toml";
    let o = rxla(&["summary", "--config", cfg, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // embeddings 541_184 + 4 blocks × 198_272 + pooler/MLM/NSP heads 37_634
    assert_eq!(s["total_parameters"], 1_371_906);
    let o = rxla(&["summary", "--config", cfg]);
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(
        table.contains("h3.attn.q.w")
            && table.contains("(128, 2, 64)")
            && table.contains("mlm.bias"),
        "{table}"
    );
    let o = rxla(&[
        "bench",
        "--config",
        cfg,
        "--steps",
        "2",
        "--warmup",
        "1",
        "--set",
        "train.batch_size=4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "compile_s",
        "step_ms_median",
        "examples_per_s",
        "flops_per_step",
    ] {
        assert!(b[k].as_f64().unwrap() > 0.0, "{k} in {b}");
    }
}
