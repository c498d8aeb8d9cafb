//! `rxla data run` end to end on the Wikipedia dump: extract → filter → dedup → tokenize, as
//! 1 and as 2 worker processes and as scheduler array jobs (Slurm, Kubernetes); the final
//! documents, tokenizer and per-document tokens are the same (order aside), and a re-run
//! skips every finished output.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use data::pipeline::docs::shard_files;
use data::pipeline::read_docs;
use data::pipeline::tokenize::read_shard_docs;

fn run(config: &Path, workers: usize) {
    let out = Command::new(env!("CARGO_BIN_EXE_rxla"))
        .args(["data", "run", "--config"])
        .arg(config)
        .args(["--workers", &workers.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn final_docs(work: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for f in shard_files(&work.join("dedup")).unwrap() {
        for d in read_docs(&f).unwrap() {
            let d = d.unwrap();
            assert!(m.insert(d.id, d.text).is_none(), "a document written twice");
        }
    }
    m
}

fn final_tokens(work: &Path) -> BTreeMap<String, Vec<u32>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(work.join("tokens")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "u16") {
            m.extend(read_shard_docs(&p, false).unwrap());
        }
    }
    m
}

fn config(root: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let work = root.join(name);
    let cfg = root.join(format!("{name}.toml"));
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "work_dir = {:?}\n[extract]\ninputs = [\"package:wiki\"]\n[filter]\n\
             min_words = 30\nmin_punct_lines = 0.1\nreject_curly_braces = false\n\
             [tokenize]\nvocab_size = 512\n",
            work.display().to_string()
        ),
    )
    .unwrap();
    (cfg, work)
}

/// The README's scheduler recipe: each stage as an array of `n` processes (1 for the
/// single-task stages) that know their shard only from the scheduler's variable (`var`:
/// `SLURM_ARRAY_TASK_ID` for `sbatch --array`, `JOB_COMPLETION_INDEX` for a Kubernetes
/// Indexed Job) and `RXLA_NUM_SHARDS`, one stage after the other.
fn array_job(config: &Path, n: usize, var: &str) {
    for (stage, single) in data::pipeline::stages::STAGES {
        let n = if *single { 1 } else { n };
        let children: Vec<_> = (0..n)
            .map(|i| {
                Command::new(env!("CARGO_BIN_EXE_rxla"))
                    .args(["data", stage, "--config"])
                    .arg(config)
                    .env(var, i.to_string())
                    .env("RXLA_NUM_SHARDS", n.to_string())
                    .env_remove(if var == "SLURM_ARRAY_TASK_ID" {
                        "JOB_COMPLETION_INDEX"
                    } else {
                        "SLURM_ARRAY_TASK_ID"
                    })
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{stage}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

// 5 pipeline runs with BPE training (~40 s on 2 cores): 1 worker, 2 workers (each run
// twice: the second finds everything finished), a Slurm array of 3, an Indexed Job of 2.
#[test]
fn two_workers_and_array_jobs_give_the_same_shards_as_one() {
    let root = std::env::temp_dir().join(format!("rxla-data-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut works = Vec::new();
    for workers in [1, 2] {
        let (cfg, work) = config(&root, &format!("w{workers}"));
        run(&cfg, workers);
        // A second run finds everything finished.
        run(&cfg, workers);
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                work.join(format!("filter/_reports/filter.shard-0-of-{workers}.json")),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (r["tasks_run"].as_u64(), r["tasks_skipped"].as_u64()),
            (Some(0), Some(1))
        );
        works.push(work);
    }
    for (name, n, var) in [
        ("slurm", 3, "SLURM_ARRAY_TASK_ID"),
        ("k8s", 2, "JOB_COMPLETION_INDEX"),
    ] {
        let (cfg, work) = config(&root, name);
        array_job(&cfg, n, var);
        assert!(work
            .join(format!(
                "extract/_reports/extract.shard-{}-of-{n}.json",
                n - 1
            ))
            .exists());
        works.push(work);
    }
    let a = final_docs(&works[0]);
    // 106 articles in the dump, 94 pass the filter.
    assert!(a.len() > 80, "{} documents left", a.len());
    let ta = final_tokens(&works[0]);
    assert_eq!(ta.len(), a.len());
    for w in &works[1..] {
        assert_eq!(final_docs(w), a, "{}", w.display());
        assert_eq!(
            std::fs::read(works[0].join("tokens/tokenizer.json")).unwrap(),
            std::fs::read(w.join("tokens/tokenizer.json")).unwrap()
        );
        assert_eq!(final_tokens(w), ta, "{}", w.display());
    }
    let _ = std::fs::remove_dir_all(&root);
}
