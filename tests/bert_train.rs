//! `rxla train` on configs/bert-mlm-nsp.toml end to end (sotu, a WordPiece vocabulary trained
//! on the training speeches): MLM and NSP metrics on held-out documents in metrics.jsonl, the
//! unigram baseline in summary.json, and exact resume with dropout on.

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
    "--set",
    "model.hidden_dropout_prob=0.1",
    "--set",
    "model.attention_probs_dropout_prob=0.1",
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
    // Held-out MLM loss falls from the uniform guess ln(4096) = 8.3.
    assert!(rows[49]["eval_mlm_loss"].as_f64().unwrap() < 7.5);
    // The unigram baseline on the same held-out positions, next to the model's metrics.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("summary.json")).unwrap()).unwrap();
    let (acc, loss) = (
        summary["eval_mlm_unigram_accuracy"].as_f64().unwrap(),
        summary["eval_mlm_unigram_loss"].as_f64().unwrap(),
    );
    // The most frequent piece ("the") is a few percent of the masked tokens; a unigram model
    // is well below the uniform guess.
    assert!((0.01..0.2).contains(&acc), "unigram accuracy {acc}");
    assert!(
        loss > 4.0 && loss < (4096f64).ln() - 0.5,
        "unigram loss {loss}"
    );
    assert_eq!(summary["eval_mlm_accuracy"], rows[49]["eval_mlm_accuracy"]);
    let tok = data::wordpiece::WordPiece::load(&a.join("tokenizer.json")).unwrap();
    assert_eq!(
        tok.vocab_size(),
        4096,
        "the trained vocabulary has the configured size"
    );
    assert!(a.join("checkpoints/step-00000050/tokenizer.json").is_file());
    export_and_embed(&a, &root);

    // WordPiece training breaks ties in hash order: two fresh runs may get different
    // vocabularies, so b starts from a's (a run reuses the tokenizer.json in its directory).
    std::fs::create_dir_all(&b).unwrap();
    std::fs::copy(a.join("tokenizer.json"), b.join("tokenizer.json")).unwrap();
    run(&b, 25, false);
    run(&b, 50, true);
    let lb = losses(&metric_rows(&b));
    assert_eq!(lb.len(), 50, "resumed metrics continue the file");
    for s in 0..50 {
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
    assert_eq!(cfg["hidden_size"], 128);
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
        e.contains("model.vocab_size") && e.contains("1000") && e.contains("4096"),
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

/// `rxla batches` (hidden): the batches of steps 0..N and the held-out examples as
/// safetensors, and the step-0 weights in HF layout, which rxla's HF loader takes back.
#[test]
fn batches_writes_steps_eval_examples_and_the_init_in_hf_layout() {
    let root = tmp_dir("bert-batches");
    let out = root.join("b");
    let o = out.to_str().unwrap();
    let sets = [
        "--set",
        "train.batch_size=4",
        "--set",
        "data.max_eval_windows=10",
    ];
    let args = [
        &["batches", "--config", CONFIG, "--steps", "3", "--out", o][..],
        &sets,
    ]
    .concat();
    rxla_ok(&args);
    let bytes = std::fs::read(out.join("batches.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = |n: &str| -> (Vec<usize>, Vec<i32>) {
        let t = st.tensor(n).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::I32, "{n}");
        let v = t
            .data()
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (t.shape().to_vec(), v)
    };
    for k in ["tokens", "segments", "mask", "mlm_labels"] {
        assert_eq!(ints(&format!("train.{k}")).0, [3, 4, 128], "{k}");
        assert_eq!(ints(&format!("eval.{k}")).0, [10, 128], "{k}");
    }
    assert_eq!(ints("train.nsp_labels").0, [3, 4]);
    let (_, nsp) = ints("eval.nsp_labels");
    assert!(nsp.iter().all(|&l| l == 0 || l == 1), "{nsp:?}");
    // MLM targets only where the mask is on, the rest ignored (-100).
    let (_, labels) = ints("train.mlm_labels");
    let (_, mask) = ints("train.mask");
    let (_, tokens) = ints("train.tokens");
    let targets = labels.iter().filter(|&&l| l != -100).count();
    assert!(targets > 3 * 4 * 5, "{targets} MLM targets in 12 rows");
    assert!(labels.iter().zip(&mask).all(|(&l, &m)| l == -100 || m == 1));
    assert!(tokens.iter().all(|&t| (0..4096).contains(&t)));
    // Different steps, different batches.
    assert_ne!(tokens[..512], tokens[512..1024]);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("rxla_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["train"]["steps"], 500);
    assert_eq!(cfg["model"]["vocab_size"], 4096);
    let init = out.join("init");
    let hf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(init.join("config.json")).unwrap()).unwrap();
    assert_eq!(hf["architectures"][0], "BertForPreTraining");
    let e = rxla_ok(&[
        "embed",
        "--pretrained",
        init.to_str().unwrap(),
        "--text",
        "The Union is strong.",
    ]);
    assert_eq!(String::from_utf8_lossy(&e.stdout).lines().count(), 1);
    let again = rxla_err(&args);
    assert!(again.contains("already exists"), "{again}");
    let gpt = rxla_err(&[
        "batches",
        "--config",
        "configs/gpt-tiny.toml",
        "--steps",
        "1",
        "--out",
        root.join("g").to_str().unwrap(),
    ]);
    assert!(gpt.contains("BERT") && gpt.contains("gpt"), "{gpt}");
}
