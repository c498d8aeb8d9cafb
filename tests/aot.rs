//! `rxla compile --target cpu` + `rxla train --compiled DIR`: the loaded executables train
//! exactly like a normal run's, and a manifest of another plugin build or another config is
//! refused naming what differs. TPU targets: `tests/aot_tpu.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SMALL: &[&str] = &[
    "--set",
    "train.steps=4",
    "--set",
    "train.log_every=1",
    "--set",
    "model.n_layers=1",
    "--set",
    "model.d_model=64",
    "--set",
    "train.eval_batch_size=8",
    "--set",
    "data.max_eval_windows=8",
];

fn rxla(args: &[&str], extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rxla"))
        .args(args)
        .args(["--config", "configs/gpt-tiny.toml"])
        .args(SMALL)
        .args(extra)
        .output()
        .unwrap()
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rxla-aot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "{err}\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    err
}

#[test]
fn compile_for_cpu_then_train_compiled_matches_a_normal_run() {
    let aot = temp("dir");
    let (a, b) = (temp("normal"), temp("compiled"));
    let out = rxla(
        &["compile", "--target", "cpu", "--out", aot.to_str().unwrap()],
        &[],
    );
    ok(&out);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("train") && table.contains("fits"), "{table}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(aot.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["topology"]["devices"], 1);
    assert!(aot.join("train.exe").is_file() && aot.join("eval.exe").is_file());

    ok(&rxla(
        &["train", "--out", a.to_str().unwrap(), "--no-compile-cache"],
        &[],
    ));
    let err = ok(&rxla(
        &["train", "--out", b.to_str().unwrap()],
        &["--compiled", aot.to_str().unwrap(), "--no-compile-cache"],
    ));
    assert!(err.contains("using the executables in"), "{err}");
    assert!(err.contains("compile: cached"), "{err}");
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 4);
    assert_eq!(la, lb, "the loaded executables train differently");

    // Another config: refused, naming the key.
    let c = temp("other-config");
    let out = rxla(
        &["train", "--out", c.to_str().unwrap()],
        &[
            "--compiled",
            aot.to_str().unwrap(),
            "--set",
            "model.n_heads=2",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("differs") && err.contains("model.n_heads") && err.contains("rxla compile"),
        "{err}"
    );

    // Another plugin build: refused before anything is loaded.
    let mut m2 = m.clone();
    m2["plugin"]["build"] = serde_json::json!("0".repeat(64));
    std::fs::write(
        aot.join("manifest.json"),
        serde_json::to_string(&m2).unwrap(),
    )
    .unwrap();
    let out = rxla(
        &["train", "--out", c.to_str().unwrap()],
        &["--compiled", aot.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("another plugin build"), "{err}");
    for d in [aot, a, b, c] {
        let _ = std::fs::remove_dir_all(d);
    }
}
