//! Dedup on real documents: the Wikipedia dump's articles plus near-copies made with
//! measured word-edit rates. Precision and recall of near-duplicate detection at Jaccard
//! >= 0.8, and exact dedup removing exact copies only.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use data::pipeline::dedup::{jaccard, read_pairs, read_removed, shingles};
use data::pipeline::docs::write_docs;
use data::pipeline::shard::{Report, Shard};
use data::pipeline::stages::{run_stage, PipelineConfig};
use data::pipeline::{wiki, Doc};
use rand::{Rng, SeedableRng};

fn articles(n: usize, min_words: usize) -> Vec<Doc> {
    let dump = data::pipeline::packages::fetch("wiki").unwrap();
    let mut out = Vec::new();
    wiki::for_each_page(wiki::open_dump(&dump).unwrap(), |p| {
        if wiki::is_article(&p) && out.len() < n {
            let d = wiki::page_doc(&p);
            if d.text.split_whitespace().count() >= min_words {
                out.push(d);
            }
        }
        Ok(())
    })
    .unwrap();
    out
}

/// Replaces, deletes or inserts each word with probability `rate` (a third each).
fn edit(text: &str, rate: f64, rng: &mut impl Rng) -> String {
    let mut out = Vec::new();
    for w in text.split_whitespace() {
        if rng.gen_bool(rate) {
            match rng.gen_range(0..3) {
                0 => out.push(format!("x{}", rng.gen::<u32>())),
                1 => {}
                _ => {
                    out.push(w.to_string());
                    out.push(format!("y{}", rng.gen::<u32>()));
                }
            }
        } else {
            out.push(w.to_string());
        }
    }
    out.join(" ")
}

fn put_filtered(cfg: &PipelineConfig, docs: &[Doc]) {
    let dir = cfg.dir("filter");
    let _ = std::fs::remove_dir_all(&cfg.work_dir);
    for (k, chunk) in docs.chunks(docs.len().div_ceil(3)).enumerate() {
        let p = dir.join(format!("part{k}.jsonl.zst"));
        write_docs(&p, chunk).unwrap();
        let side = format!("{}.report.json", p.display());
        std::fs::write(side, serde_json::to_string(&Report::new("filter")).unwrap()).unwrap();
    }
}

fn dedup(cfg: &PipelineConfig, shards: usize) -> HashMap<String, String> {
    for stage in [
        "dedup-signatures",
        "dedup-buckets",
        "dedup-clusters",
        "dedup-filter",
    ] {
        for i in 0..shards {
            run_stage(cfg, stage, Shard::new(i, shards).unwrap()).unwrap();
        }
    }
    read_removed(&cfg.dir("dedup-clusters").join("removed.txt")).unwrap()
}

fn work(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rxla-dedup-{name}-{}", std::process::id()))
}

#[test]
fn near_duplicates_precision_recall_on_wikipedia() {
    let originals = articles(40, 300);
    assert!(originals.len() >= 30, "{}", originals.len());
    let rates = [0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut docs = Vec::new();
    let mut group = BTreeMap::new();
    for (g, o) in originals.iter().enumerate() {
        docs.push(o.clone());
        group.insert(o.id.clone(), g);
        for r in rates {
            let id = format!("{}~{r:.3}", o.id);
            docs.push(Doc::new(&id, edit(&o.text, r, &mut rng)));
            group.insert(id, g);
        }
    }
    let mut cfg = PipelineConfig {
        work_dir: work("near"),
        ..Default::default()
    };
    cfg.dedup.exact = false;
    cfg.dedup.url = false;
    put_filtered(&cfg, &docs);
    let removed = dedup(&cfg, 2);
    let sh: HashMap<&str, Vec<u64>> = docs
        .iter()
        .map(|d| (d.id.as_str(), shingles(&d.text, 5)))
        .collect();
    // Truth: pairs within a group at J >= 0.8 (different articles are far apart).
    let mut truth = std::collections::BTreeSet::new();
    let mut measured = Vec::new();
    for a in &docs {
        for b in &docs {
            if a.id < b.id && group[&a.id] == group[&b.id] {
                let j = jaccard(&sh[a.id.as_str()], &sh[b.id.as_str()]);
                if a.id == originals[group[&a.id]].id {
                    measured.push(j);
                }
                if j >= 0.8 {
                    truth.insert((a.id.clone(), b.id.clone()));
                }
            }
        }
    }
    let pair_files: Vec<_> = std::fs::read_dir(cfg.dir("dedup-buckets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pairs"))
        .collect();
    let found: std::collections::BTreeSet<(String, String)> = read_pairs(&pair_files)
        .unwrap()
        .into_iter()
        .map(|(_, a, b)| (a, b))
        .collect();
    let tp = found.intersection(&truth).count() as f64;
    let precision = tp / found.len().max(1) as f64;
    let recall = tp / truth.len().max(1) as f64;
    // Documents: a document is a true duplicate when it has J >= 0.8 with a smaller id.
    let dup_truth: std::collections::BTreeSet<&str> =
        truth.iter().map(|(_, b)| b.as_str()).collect();
    let removed_ok = removed
        .keys()
        .filter(|id| dup_truth.contains(id.as_str()))
        .count() as f64;
    let doc_precision = removed_ok / removed.len().max(1) as f64;
    let doc_recall = removed_ok / dup_truth.len().max(1) as f64;
    eprintln!(
        "near-dup on {} docs ({} articles × {} edit rates): J(orig, copy) ranges {:.3}..{:.3}; \
         {} true pairs, {} found; pair precision {precision:.4} recall {recall:.4}; \
         removed {} docs, precision {doc_precision:.4} recall {doc_recall:.4}",
        docs.len(),
        originals.len(),
        rates.len(),
        measured.iter().cloned().fold(1.0, f64::min),
        measured.iter().cloned().fold(0.0, f64::max),
        truth.len(),
        found.len(),
        removed.len()
    );
    assert!(truth.len() > 100 && measured.iter().any(|&j| j < 0.8));
    assert!(precision >= 0.95 && recall >= 0.95, "{precision} {recall}");
    assert!(
        doc_precision >= 0.95 && doc_recall >= 0.95,
        "{doc_precision} {doc_recall}"
    );
    // One worker decides exactly the same.
    let cfg1 = PipelineConfig {
        work_dir: work("near1"),
        ..cfg.clone()
    };
    put_filtered(&cfg1, &docs);
    assert_eq!(dedup(&cfg1, 1), removed);
    let _ = std::fs::remove_dir_all(&cfg.work_dir);
    let _ = std::fs::remove_dir_all(&cfg1.work_dir);
}

#[test]
fn exact_dedup_removes_exact_copies_only() {
    let originals = articles(20, 100);
    let mut docs = Vec::new();
    for o in &originals {
        docs.push(o.clone());
        // The same text with other whitespace and case: an exact copy after normalisation.
        let copy = o
            .text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join("  \n")
            .to_ascii_uppercase();
        docs.push(Doc::new(format!("{}~copy", o.id), copy));
        // One word changed: not an exact copy.
        let mut w: Vec<&str> = o.text.split_whitespace().collect();
        let mid = w.len() / 2;
        w[mid] = "zzzchanged";
        docs.push(Doc::new(format!("{}~edit", o.id), w.join(" ")));
    }
    let mut cfg = PipelineConfig {
        work_dir: work("exact"),
        ..Default::default()
    };
    cfg.dedup.near = false;
    put_filtered(&cfg, &docs);
    let removed = dedup(&cfg, 1);
    let want: std::collections::HashSet<String> =
        originals.iter().map(|o| format!("{}~copy", o.id)).collect();
    let got: std::collections::HashSet<String> = removed.keys().cloned().collect();
    assert_eq!(got, want);
    assert!(removed.values().all(|r| r == "exact"));
    // The filter pass wrote everything else.
    let kept: usize = data::pipeline::docs::shard_files(&cfg.dir("dedup"))
        .unwrap()
        .iter()
        .map(|f| data::pipeline::read_docs(f).unwrap().count())
        .sum();
    assert_eq!(kept, docs.len() - want.len());
    let _ = Path::new("");
    let _ = std::fs::remove_dir_all(&cfg.work_dir);
}
