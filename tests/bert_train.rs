//! `rxla train` on configs/bert-mlm-nsp.toml end to end (sotu, MiniLM's WordPiece): MLM and
//! NSP metrics on held-out documents in metrics.jsonl, and exact resume with dropout on.

mod common;
use common::{err, metric_rows, rxla_err, rxla_ok, tmp_dir, train, train_ok};

const CONFIG: &str = "configs/bert-mlm-nsp.toml";

/// 50 short steps (batch 8), evaluated and checkpointed every 25, on one fixed schedule.
const SETS: &[&str] = &[
    "--set",
    "train.batch_size=8",
    "--set",
    "train.log_every=1",
    "--set",
    "train.eval_every=25",
    "--set",
    "train.checkpoint_every=25",
    "--set",
    "train.eval_batch_size=32",
    "--set",
    "data.max_eval_windows=64",
    "--set",
    "schedule.warmup_steps=10",
    "--set",
    "schedule.decay_steps=50",
];

fn run(out: &std::path::Path, steps: usize, resume: bool) {
    let steps = format!("train.steps={steps}");
    let mut args: Vec<&str> = SETS.to_vec();
    args.extend(["--set", &steps]);
    if resume {
        args.push("--resume");
    }
    train_ok(CONFIG.as_ref(), out, &args);
}

fn losses(rows: &[serde_json::Value]) -> Vec<(u64, f64)> {
    rows.iter()
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn bert_pretrains_with_mlm_and_nsp_metrics_and_resumes_exactly() {
    let root = tmp_dir("bert-train");
    let (a, b) = (root.join("a"), root.join("b"));
    run(&a, 50, false);
    let rows = metric_rows(&a);
    assert_eq!(rows.len(), 50);
    let la = losses(&rows);
    assert!(la[49].1 < la[0].1 - 1.0, "MLM + NSP loss falls: {la:?}");
    for step in [25, 50] {
        let r = &rows[step - 1];
        for k in ["eval_mlm_loss", "eval_nsp_loss"] {
            let v = r[k].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "{k} at step {step}: {r}");
        }
        for k in ["eval_mlm_accuracy", "eval_nsp_accuracy"] {
            let v = r[k].as_f64().unwrap_or(f64::NAN);
            assert!((0.0..=1.0).contains(&v), "{k} at step {step}: {r}");
        }
    }
    // Held-out MLM loss falls from the uniform guess ln(30522) = 10.3.
    assert!(rows[49]["eval_mlm_loss"].as_f64().unwrap() < 9.0);
    assert!(a.join("checkpoints/step-00000050/tokenizer.json").is_file());
    export_and_embed(&a, &root);

    run(&b, 25, false);
    run(&b, 50, true);
    let lb = losses(&metric_rows(&b));
    assert_eq!(lb.len(), 50, "resumed metrics continue the file");
    for s in 25..50 {
        assert_eq!(la[s], lb[s], "step {}: uninterrupted vs resumed", s + 1);
    }
}

/// `rxla export --format hf` of the trained run, then `embed --run` (through the export) and
/// `embed --pretrained` of the exported directory (the HF loader) give the same embeddings;
/// a second export into the same directory and a GPT-less run are refused.
fn export_and_embed(run: &std::path::Path, root: &std::path::Path) {
    let hf = root.join("hf");
    let (r, h) = (run.to_str().unwrap(), hf.to_str().unwrap());
    rxla_ok(&["export", "--run", r, "--format", "hf", "--out", h]);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
    ] {
        assert!(hf.join(f).is_file(), "{f}");
    }
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "BertForPreTraining");
    assert_eq!(cfg["hidden_size"], 256);
    let texts = ["--text", "The Congress shall assemble.", "--text", "a b"];
    let from_run = rxla_ok(&[&["embed", "--run", r][..], &texts[..]].concat());
    let from_hf = rxla_ok(&[&["embed", "--pretrained", h][..], &texts[..]].concat());
    assert_eq!(from_run.stdout, from_hf.stdout);
    let lines = String::from_utf8_lossy(&from_run.stdout).lines().count();
    assert_eq!(lines, 2);
    let e = rxla_err(&["export", "--run", r, "--format", "hf", "--out", h]);
    assert!(e.contains("already exists"), "{e}");
    let e = rxla_err(&[
        "export",
        "--run",
        h,
        "--out",
        root.join("x").to_str().unwrap(),
    ]);
    assert!(e.contains("no complete checkpoint"), "{e}");
}

#[test]
fn bad_bert_data_configs_are_clear_errors() {
    let out = tmp_dir("bert-bad");
    let e = err(&train(
        CONFIG.as_ref(),
        &out.join("a"),
        &["--set", "model.vocab_size=1000"],
    ));
    assert!(
        e.contains("model.vocab_size") && e.contains("1000") && e.contains("30522"),
        "{e}"
    );
    let e = err(&train(
        CONFIG.as_ref(),
        &out.join("b"),
        &["--set", "data.dataset=mnist"],
    ));
    assert!(e.contains("text corpus") && e.contains("mnist"), "{e}");
    let e = err(&train(
        CONFIG.as_ref(),
        &out.join("c"),
        &[
            "--set",
            "data.tokenizer={ kind = \"bpe\", vocab_size = 512 }",
        ],
    ));
    assert!(e.contains("data.tokenizer"), "{e}");
}
