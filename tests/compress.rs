//! Compression end to end through the binary: int8 quantization of a trained run (weights
//! within scale/2, i8 on disk, eval and generate of the quantized run), low-rank
//! factorization, and magnitude pruning
//! (masks survive save/resume exactly, pruned weights exactly zero, 2:4 groups).

mod common;
use common::{metric_rows, ok, rxla, rxla_err, rxla_ok, tmp_dir, train};
use std::path::Path;
use train::tensor::{Tensor, TensorData};

const TINY_GPT: &str = r#"
seed = 3
[model]
kind = "gpt"
seq_len = 16
d_model = 32
n_layers = 1
n_heads = 2
[data]
dataset = "moby-dick"
max_eval_windows = 32
[train]
batch_size = 4
steps = 12
log_every = 1
checkpoint_every = 4
keep_checkpoints = 5
[optimizer]
kind = "adamw"
lr = 0.01
weight_decay = 0.1
[schedule]
kind = "constant"
"#;

fn newest(run: &Path) -> std::path::PathBuf {
    train::checkpoint::latest(&run.join("checkpoints"))
        .unwrap()
        .unwrap()
}

fn params(dir: &Path) -> Vec<Tensor> {
    train::tensor::read(&dir.join("params.safetensors")).unwrap()
}

fn eval_json(run: &Path) -> serde_json::Value {
    let o = rxla_ok(&["compress", "eval", "--run", run.to_str().unwrap()]);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn int8_quantized_and_low_rank_runs_evaluate_and_generate() {
    let root = tmp_dir("compress-q");
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, TINY_GPT).unwrap();
    let (a, q) = (root.join("a"), root.join("q"));
    ok(&train(&cfg, &a, &["--set", "train.steps=8"]));
    rxla_ok(&[
        "compress",
        "quantize",
        "--run",
        a.to_str().unwrap(),
        "--out",
        q.to_str().unwrap(),
    ]);
    let src = params(&newest(&a));
    let dst = params(&newest(&q));
    let by_name = |n: &str| dst.iter().find(|t| t.name == n).unwrap();
    let mut quantized = 0;
    for w in &src {
        let TensorData::F32(x) = &w.data else {
            panic!("f32 source")
        };
        let stored = by_name(&w.name);
        match &stored.data {
            TensorData::F32(y) => assert_eq!(x, y, "{} kept f32 as it was", w.name),
            TensorData::I8(qv) => {
                quantized += 1;
                let s = by_name(&format!("{}.qscale", w.name));
                let TensorData::F32(sv) = &s.data else {
                    panic!("f32 scales")
                };
                let deq = train::compress::quantize::dequantize(
                    &train::compress::quantize::Quantized {
                        q: qv.clone(),
                        scales: sv.clone(),
                        scale_dims: s.dims.clone(),
                    },
                    &w.dims,
                );
                // One scale per output channel: fewer scales than values.
                assert!(sv.len() < x.len() && sv.len() > 1, "{}", w.name);
                let smax = sv.iter().cloned().fold(0f32, f32::max) as f64;
                for (i, (&a, &b)) in x.iter().zip(&deq).enumerate() {
                    let err = (a as f64 - b as f64).abs();
                    assert!(err <= smax / 2.0 + 1e-7, "{}[{i}]: {a} vs {b}", w.name);
                }
            }
            d => panic!("{}: unexpected dtype {:?}", w.name, d.dtype()),
        }
    }
    assert!(quantized >= 5, "kernels and the token table: {quantized}");
    let before = std::fs::metadata(newest(&a).join("params.safetensors"))
        .unwrap()
        .len();
    let after = std::fs::metadata(newest(&q).join("params.safetensors"))
        .unwrap()
        .len();
    assert!(before as f64 / after as f64 > 3.0, "{before} -> {after}");
    // Eval runs the dequantizing program; the quantized model is close to the f32 one.
    let (ea, eq) = (eval_json(&a), eval_json(&q));
    let (ba, bq) = (
        ea["metrics"]["eval_bits_per_byte"].as_f64().unwrap(),
        eq["metrics"]["eval_bits_per_byte"].as_f64().unwrap(),
    );
    assert!(ba.is_finite() && (ba - bq).abs() < 0.02, "{ba} vs {bq}");
    assert_ne!(ba, bq, "the quantized weights are not the f32 ones");
    assert!(
        eq["weight_bytes_on_device"].as_u64().unwrap()
            < ea["weight_bytes_on_device"].as_u64().unwrap()
    );
    // Generation samples from the quantized run.
    let o = rxla_ok(&[
        "generate",
        "--run",
        q.to_str().unwrap(),
        "--max-tokens",
        "8",
        "--prompt",
        "Call me",
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("Call me"));
    // Low-rank: the factored run evaluates (two matmuls per kernel) with fewer parameters.
    let lr = root.join("lr");
    rxla_ok(&[
        "compress",
        "lowrank",
        "--run",
        a.to_str().unwrap(),
        "--out",
        lr.to_str().unwrap(),
        "--rank",
        "8",
    ]);
    let f = params(&newest(&lr));
    let u = f.iter().find(|t| t.name == "h0.mlp.fc.w.u").unwrap();
    assert_eq!(u.dims, vec![32, 8]);
    let n = |ts: &[Tensor]| ts.iter().map(|t| t.data.len()).sum::<usize>();
    assert!(n(&f) < n(&src));
    let el = eval_json(&lr);
    let bl = el["metrics"]["eval_bits_per_byte"].as_f64().unwrap();
    assert!(bl.is_finite() && bl > ba - 0.01, "rank 8: {bl} vs f32 {ba}");
    rxla_ok(&[
        "generate",
        "--run",
        lr.to_str().unwrap(),
        "--max-tokens",
        "4",
    ]);
    let e = rxla_err(&[
        "compress",
        "lowrank",
        "--run",
        a.to_str().unwrap(),
        "--out",
        root.join("lr2").to_str().unwrap(),
        "--energy",
        "1.5",
    ]);
    assert!(e.contains("--energy 1.5"), "{e}");
    // Refusals: a non-empty --out, quantizing twice, resuming training from int8 weights.
    let e = rxla_err(&[
        "compress",
        "quantize",
        "--run",
        a.to_str().unwrap(),
        "--out",
        q.to_str().unwrap(),
    ]);
    assert!(e.contains("is not empty"), "{e}");
    let e = rxla_err(&[
        "compress",
        "quantize",
        "--run",
        q.to_str().unwrap(),
        "--out",
        root.join("qq").to_str().unwrap(),
    ]);
    assert!(
        e.contains("already compressed") && e.contains("is i8"),
        "{e}"
    );
}

/// (step, loss) of every logged step.
fn losses(dir: &Path) -> Vec<(u64, f64)> {
    metric_rows(dir)
        .iter()
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

const PRUNE: &[&str] = &[
    "--set",
    "train.prune.sparsity=0.5",
    "--set",
    "train.prune.start=2",
    "--set",
    "train.prune.end=8",
];

#[test]
fn pruning_masks_survive_resume_exactly_and_pruned_weights_are_zero() {
    let root = tmp_dir("compress-prune");
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, TINY_GPT).unwrap();
    let (a, b) = (root.join("a"), root.join("b"));
    ok(&train(&cfg, &a, PRUNE));
    let mut first = PRUNE.to_vec();
    first.extend(["--set", "train.steps=4"]);
    ok(&train(&cfg, &b, &first));
    let mut rest = PRUNE.to_vec();
    rest.push("--resume");
    ok(&train(&cfg, &b, &rest));
    assert_eq!(losses(&a), losses(&b), "resumed run = uninterrupted run");
    let (ca, cb) = (
        train::checkpoint::load(&newest(&a)).unwrap(),
        train::checkpoint::load(&newest(&b)).unwrap(),
    );
    assert_eq!(ca.state.step, 12);
    assert_eq!(ca.params, cb.params, "parameters bit for bit");
    assert_eq!(ca.optimizer, cb.optimizer, "masks and moments bit for bit");
    let mut pruned_tensors = 0;
    for p in &ca.params {
        let mask = ca
            .optimizer
            .iter()
            .find(|t| t.name == format!("{}.pruned", p.name))
            .unwrap();
        let n = p.data.len();
        let masked = mask.data.iter().filter(|&&m| m == 1.0).count();
        assert!(mask.data.iter().all(|&m| m == 0.0 || m == 1.0));
        for (i, (&w, &m)) in p.data.iter().zip(&mask.data).enumerate() {
            if m == 1.0 {
                assert_eq!(w.to_bits(), 0, "{}[{i}] pruned but {w}", p.name);
            }
        }
        if p.dims.len() >= 2 && n >= 1024 {
            pruned_tensors += 1;
            // Per layer: floor(0.5 n) smallest, fewer only on exact ties.
            let s = masked as f64 / n as f64;
            assert!(s > 0.45 && s <= 0.5, "{}: sparsity {s}", p.name);
        } else {
            assert_eq!(masked, 0, "{}: vectors and biases are never pruned", p.name);
        }
    }
    assert!(pruned_tensors >= 5);
    // Before `start` nothing is pruned: the step-4 checkpoint's ramp is partial (s(3) < 0.5).
    let early = train::checkpoint::load(&a.join("checkpoints/step-00000004")).unwrap();
    let w = early.params.iter().find(|t| t.name == "wte").unwrap();
    let z = w.data.iter().filter(|&&x| x == 0.0).count() as f64 / w.data.len() as f64;
    assert!(z > 0.0 && z < 0.45, "step 4 sparsity {z}");
    // The eval and summary commands report it per tensor.
    let e = eval_json(&a);
    assert!(e["sparsity"]["h0.mlp.fc.w"].as_f64().unwrap() > 0.45);
    let o = rxla_ok(&[
        "summary",
        "--config",
        cfg.to_str().unwrap(),
        "--run",
        a.to_str().unwrap(),
        "--json",
    ]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        s["sparsity"]["h0.mlp.fc.w"].as_f64(),
        e["sparsity"]["h0.mlp.fc.w"].as_f64()
    );
}

#[test]
fn two_four_pruning_keeps_two_of_every_four() {
    let root = tmp_dir("compress-24");
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, TINY_GPT).unwrap();
    let a = root.join("a");
    ok(&train(
        &cfg,
        &a,
        &[
            "--set",
            "train.prune.kind=\"2:4\"",
            "--set",
            "train.prune.start=2",
            "--set",
            "train.prune.end=6",
            "--set",
            "train.steps=8",
        ],
    ));
    let c = train::checkpoint::load(&newest(&a)).unwrap();
    for p in c
        .params
        .iter()
        .filter(|p| p.dims.len() >= 2 && p.data.len() >= 1024)
    {
        let rest: usize = p.dims[1..].iter().product::<i64>() as usize;
        let groups = p.dims[0] as usize / 4;
        for gi in 0..groups {
            for r in 0..rest {
                let zeros = (0..4)
                    .filter(|k| p.data[(gi * 4 + k) * rest + r] == 0.0)
                    .count();
                assert!(
                    zeros >= 2,
                    "{} group {gi} column {r}: {zeros} zeros",
                    p.name
                );
            }
        }
    }
    // A bad pattern is an error naming the key.
    let o = rxla(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        root.join("bad").to_str().unwrap(),
        "--set",
        "train.prune.kind=\"4:2\"",
        "--set",
        "train.prune.start=0",
        "--set",
        "train.prune.end=1",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("train.prune.kind"), "{e}");
}

/// Distillation, LoRA (+ merge) and QAT runs through the binary: the teacher is never
/// checkpointed with the student and a distilled run resumes exactly; LoRA trains only the
/// adapters (the base stays bit for bit) and the merged run evaluates as the adapter run;
/// a QAT run trains and quantizes.
#[test]
fn distill_lora_and_qat_runs_train_resume_and_merge() {
    let root = tmp_dir("compress-adapt");
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, TINY_GPT).unwrap();
    let p = |d: &Path| d.to_str().unwrap().to_string();
    let teacher = root.join("teacher");
    ok(&train(&cfg, &teacher, &["--set", "train.steps=8"]));
    // Distillation: uninterrupted vs stopped at 4 and resumed.
    let t = format!("distill.teacher={}", p(&teacher));
    let (d1, d2) = (root.join("d1"), root.join("d2"));
    ok(&train(
        &cfg,
        &d1,
        &["--set", &t, "--set", "distill.alpha=0.8"],
    ));
    ok(&train(
        &cfg,
        &d2,
        &[
            "--set",
            &t,
            "--set",
            "distill.alpha=0.8",
            "--set",
            "train.steps=4",
        ],
    ));
    ok(&train(
        &cfg,
        &d2,
        &["--set", &t, "--set", "distill.alpha=0.8", "--resume"],
    ));
    assert_eq!(
        losses(&d1),
        losses(&d2),
        "resumed distillation = uninterrupted"
    );
    let c = train::checkpoint::load(&newest(&d1)).unwrap();
    assert!(c.params.iter().all(|t| !t.name.starts_with("teacher")));
    assert!(c.optimizer.iter().all(|t| !t.name.starts_with("teacher")));
    let plain = root.join("plain");
    ok(&train(&cfg, &plain, &[]));
    assert_ne!(losses(&plain), losses(&d1), "the teacher changes the loss");
    let e = eval_json(&d1);
    assert!(e["metrics"]["eval_bits_per_byte"].as_f64().unwrap() > 0.0);

    // LoRA from the teacher's weights.
    let lora = root.join("lora");
    let from = format!("train.init_from={}", p(&teacher));
    ok(&train(
        &cfg,
        &lora,
        &[
            "--set",
            &from,
            "--set",
            "train.lora.rank=2",
            "--set",
            r#"train.lora.targets=["h\\d+\\.attn", "h\\d+\\.mlp\\.fc"]"#,
        ],
    ));
    let base = params(&newest(&teacher));
    let tuned = params(&newest(&lora));
    assert!(tuned.iter().any(|t| t.name == "h0.attn.qkv.w.lora_b"));
    for b in &base {
        let t = tuned.iter().find(|t| t.name == b.name).unwrap();
        assert_eq!(t.data, b.data, "{} is frozen", b.name);
    }
    let merged = root.join("merged");
    rxla_ok(&[
        "compress",
        "merge-lora",
        "--run",
        &p(&lora),
        "--out",
        &p(&merged),
    ]);
    let m = params(&newest(&merged));
    assert_eq!(m.len(), base.len(), "adapters folded away");
    let (el, em) = (eval_json(&lora), eval_json(&merged));
    let (a, b) = (
        el["metrics"]["eval_loss"].as_f64().unwrap(),
        em["metrics"]["eval_loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-5, "merged {b} vs adapters {a}");
    let base_loss = eval_json(&teacher)["metrics"]["eval_loss"]
        .as_f64()
        .unwrap();
    assert!((a - base_loss).abs() > 1e-6, "the adapters trained");
    let e = rxla_err(&[
        "compress",
        "quantize",
        "--run",
        &p(&lora),
        "--out",
        &p(&root.join("lq")),
    ]);
    assert!(e.contains("merge-lora"), "{e}");

    // QAT, then quantization of its weights.
    let qat = root.join("qat");
    ok(&train(
        &cfg,
        &qat,
        &["--set", "train.quantize=int8", "--set", "train.steps=4"],
    ));
    rxla_ok(&[
        "compress",
        "quantize",
        "--run",
        &p(&qat),
        "--out",
        &p(&root.join("qq")),
    ]);
    let e = rxla_err(&[
        "train",
        "--config",
        &p(&cfg),
        "--out",
        &p(&root.join("bad")),
        "--set",
        "train.quantize=int4",
    ]);
    assert!(e.contains("train.quantize"), "{e}");
}

/// LoRA on a fine-tuning task (all-MiniLM-L6-v2 → sentiment): the adapters and the new head
/// train (peft's `modules_to_save`), the pretrained encoder stays frozen, and `predict` (and
/// the test-split score) runs the adapters: the same probabilities as the merged run.
#[test]
fn lora_fine_tunes_a_pretrained_classifier_and_predicts_with_its_adapters() {
    let root = tmp_dir("compress-lora-cls");
    let p = |d: &Path| d.to_str().unwrap().to_string();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/finetune-sentiment.toml");
    let run = root.join("lora");
    ok(&train(
        &cfg,
        &run,
        &[
            "--set",
            "train.steps=3",
            "--set",
            "train.batch_size=4",
            "--set",
            "schedule.warmup_steps=0",
            "--set",
            "optimizer.lr=0.01",
            "--set",
            "data.task.max_train_examples=32",
            "--set",
            "data.task.max_eval_examples=8",
            "--set",
            "data.task.max_monitor_examples=8",
            "--set",
            r#"train.lora={rank=2, alpha=4, targets=["h\\d+\\.attn"], modules_to_save=["head"]}"#,
        ],
    ));
    let c = train::checkpoint::load(&newest(&run)).unwrap();
    let trained: Vec<&str> = c.optimizer.iter().map(|t| t.name.as_str()).collect();
    assert!(
        trained.iter().any(|n| n.starts_with("head.")),
        "{trained:?}"
    );
    assert!(
        trained.iter().any(|n| n.contains("h5.attn.q.w.lora_b")),
        "{trained:?}"
    );
    assert!(
        trained
            .iter()
            .all(|n| n.starts_with("head.") || n.contains(".lora_")),
        "only adapters and the head train: {trained:?}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["test_examples"], 8);
    let merged = root.join("merged");
    rxla_ok(&[
        "compress",
        "merge-lora",
        "--run",
        &p(&run),
        "--out",
        &p(&merged),
    ]);
    let m = params(&newest(&merged));
    let base: Vec<Tensor> = c.params.iter().cloned().map(Tensor::from).collect();
    let q = |ts: &[Tensor]| {
        ts.iter()
            .find(|t| t.name == "h0.attn.q.w")
            .unwrap()
            .data
            .clone()
    };
    assert_ne!(q(&m), q(&base), "the adapters trained");
    let probs = |r: &Path| -> Vec<f64> {
        let o = rxla_ok(&[
            "predict",
            "--run",
            &p(r),
            "--text",
            "a gorgeous, witty, seductive movie",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let probs = v["probabilities"]
            .as_object()
            .unwrap_or_else(|| panic!("{v}"));
        probs.values().map(|x| x.as_f64().unwrap()).collect()
    };
    let (a, b) = (probs(&run), probs(&merged));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "adapter run {a:?} vs merged {b:?}");
    }
    // The merged classifier quantized to int8 predicts from its i8 weights too.
    let q = root.join("q");
    rxla_ok(&[
        "compress",
        "quantize",
        "--run",
        &p(&merged),
        "--out",
        &p(&q),
    ]);
    let stored = params(&newest(&q));
    assert!(stored
        .iter()
        .any(|t| t.name == "h0.attn.q.w" && matches!(t.data, TensorData::I8(_))));
    let c = probs(&q);
    for (x, y) in c.iter().zip(&b) {
        assert!((x - y).abs() < 0.02, "int8 {c:?} vs f32 {b:?}");
    }
}
