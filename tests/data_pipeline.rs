//! `rxla data run` end to end on the Wikipedia dump: extract → filter → dedup → tokenize, as
//! 1 and as 2 worker processes; the final documents, tokenizer and per-document tokens are
//! the same (order aside), and a re-run skips every finished output.

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

// 4 pipeline runs with BPE training (~30 s on 2 cores).
#[test]
fn two_workers_give_the_same_shards_as_one() {
    let root = std::env::temp_dir().join(format!("rxla-data-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut works = Vec::new();
    for workers in [1, 2] {
        let work = root.join(format!("w{workers}"));
        let cfg = root.join(format!("w{workers}.toml"));
        std::fs::create_dir_all(&root).unwrap();
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
    let (a, b) = (final_docs(&works[0]), final_docs(&works[1]));
    // 106 articles in the dump, 94 pass the filter.
    assert!(a.len() > 80, "{} documents left", a.len());
    assert_eq!(a, b);
    assert_eq!(
        std::fs::read(works[0].join("tokens/tokenizer.json")).unwrap(),
        std::fs::read(works[1].join("tokens/tokenizer.json")).unwrap()
    );
    let (ta, tb) = (final_tokens(&works[0]), final_tokens(&works[1]));
    assert_eq!(ta.len(), a.len());
    assert_eq!(ta, tb);
    let _ = std::fs::remove_dir_all(&root);
}
