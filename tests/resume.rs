//! Checkpoints resume exactly: a run stopped at step 10 and resumed to 20 logs the same
//! losses as a run straight to 20. Bad checkpoints are refused.

mod common;
use common::{err, metric_rows, ok, rxla, tmp_dir, train};
use std::path::Path;

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
steps = 20
log_every = 1
eval_every = 10
checkpoint_every = 5
keep_checkpoints = 2
[optimizer]
kind = "adamw"
lr = 0.01
weight_decay = 0.1
clip_norm = 1.0
[schedule]
kind = "warmup_cosine"
warmup_steps = 3
decay_steps = 20
"#;

/// (step, loss) of every logged step.
fn losses(dir: &Path) -> Vec<(u64, f64)> {
    metric_rows(dir)
        .iter()
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn stopped_and_resumed_run_matches_uninterrupted_run() {
    let root = tmp_dir("resume");
    let cfg = root.join("tiny.toml");
    std::fs::write(&cfg, TINY_GPT).unwrap();
    let (a, b) = (root.join("a"), root.join("b"));

    ok(&train(&cfg, &a, &[]));
    ok(&train(&cfg, &b, &["--set", "train.steps=10"]));
    // A checkpoint cut short by a crash is a temp directory: never picked.
    std::fs::create_dir_all(b.join("checkpoints/.tmp-step-00000015-999")).unwrap();
    std::fs::write(
        b.join("checkpoints/.tmp-step-00000015-999/params.safetensors"),
        b"partial",
    )
    .unwrap();
    ok(&train(&cfg, &b, &["--resume", "--set", "train.steps=20"]));

    let la = losses(&a);
    let lb = losses(&b);
    assert_eq!(la.len(), 20);
    assert_eq!(lb.len(), 20, "resumed metrics continue the file");
    for s in 10..20 {
        assert_eq!(la[s], lb[s], "step {}: uninterrupted vs resumed", s + 1);
    }
    // Only the newest two checkpoints are kept.
    let kept: Vec<String> = std::fs::read_dir(a.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(a.join("checkpoints/step-00000020/tokenizer.json").is_file());

    // The run samples text from its newest checkpoint.
    let generate = [
        "generate",
        "--run",
        a.to_str().unwrap(),
        "--prompt",
        "Call me",
        "--max-tokens",
        "24",
        "--seed",
        "3",
    ];
    let o = rxla(&generate);
    ok(&o);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.starts_with("Call me") && text.trim_end().len() > "Call me".len(),
        "{text}"
    );
    let again = rxla(&generate);
    assert_eq!(again.stdout, o.stdout, "same seed, same sample");
    let e = err(&rxla(&[
        "generate",
        "--run",
        root.join("nothing").to_str().unwrap(),
    ]));
    assert!(e.contains("no complete checkpoint"), "{e}");

    // A different model config is refused.
    let e = err(&train(
        &cfg,
        &a,
        &[
            "--resume",
            "--set",
            "model.d_model=32",
            "--set",
            "train.steps=30",
        ],
    ));
    assert!(e.contains("different `model` config"), "{e}");
    // A corrupted checkpoint is refused, naming the file.
    let p = a.join("checkpoints/step-00000020/optimizer.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    std::fs::write(&p, bytes).unwrap();
    let e = err(&train(&cfg, &a, &["--resume", "--set", "train.steps=30"]));
    assert!(
        e.contains("optimizer.safetensors") && e.contains("corrupted"),
        "{e}"
    );
    // Nothing to resume from.
    let e = err(&train(&cfg, &root.join("empty"), &["--resume"]));
    assert!(e.contains("no complete checkpoint"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}
