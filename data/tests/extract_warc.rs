//! `extract` over real WARC archives (pywb's sample files, fetched pinned on first use): each
//! 2xx HTML response becomes one document with its URL; every other response and every
//! damaged record is a counted reject, never a crash; 2 shards give the 1-shard documents.

use std::collections::BTreeMap;
use std::path::Path;

use data::pipeline::docs::shard_files;
use data::pipeline::read_docs;
use data::pipeline::shard::{Report, Shard};
use data::pipeline::stages::{run_stage, PipelineConfig};
use data::pipeline::warc::{read_file, sample_dir, RecordType};

fn extract(inputs: &[&Path], work: &Path, shards: usize) -> (BTreeMap<String, String>, Report) {
    let _ = std::fs::remove_dir_all(work);
    let mut cfg = PipelineConfig {
        work_dir: work.to_path_buf(),
        ..Default::default()
    };
    cfg.extract.inputs = inputs.iter().map(|p| p.display().to_string()).collect();
    let mut total = Report::new("extract");
    for i in 0..shards {
        let r = run_stage(&cfg, "extract", Shard::new(i, shards).unwrap()).unwrap();
        total.merge(&r);
    }
    let mut docs = BTreeMap::new();
    for f in shard_files(&work.join("extract")).unwrap() {
        for d in read_docs(&f).unwrap() {
            let d = d.unwrap();
            let url = d.url.clone().expect("WARC documents keep their URL");
            assert!(docs
                .insert(d.id.clone(), format!("{url}\n{}", d.text))
                .is_none());
        }
    }
    (docs, total)
}

#[test]
fn warc_responses_become_documents_and_damage_is_counted() {
    let dir = sample_dir("pywb").unwrap();
    let iana = dir.join("iana.warc.gz");
    // What the archive holds, by an independent count over the reader's records.
    let (recs, _) = read_file(&iana).unwrap();
    let responses = recs
        .iter()
        .filter(|r| r.record_type() == RecordType::Response)
        .count();
    assert_eq!(responses, 48);

    let tmp = std::env::temp_dir().join(format!("rxla-extract-warc-{}", std::process::id()));
    let (docs, r) = extract(&[&iana], &tmp.join("one"), 1);
    // Every response is either a document or a reject with a reason.
    assert_eq!(r.docs_in, 48, "{r:?}");
    assert_eq!(
        r.docs_out + r.rejects.values().sum::<u64>(),
        48,
        "{:?}",
        r.rejects
    );
    assert_eq!(r.docs_out as usize, docs.len());
    // The archive's HTML pages (the crawler test replays the same 19): most have main text.
    assert!(
        docs.len() >= 10,
        "{} documents: {:?}",
        docs.len(),
        r.rejects
    );
    assert!(
        r.rejects.get("not_html").copied().unwrap_or(0) > 0,
        "{:?}",
        r.rejects
    );
    let home = docs
        .values()
        .find(|t| t.starts_with("http://www.iana.org/\n"))
        .expect("the IANA home page");
    assert!(home.contains("Internet Assigned Numbers Authority") || home.contains("IANA"));
    assert_eq!(r.counts["warc_other_records"], 1 + 171 + 123);

    // Two shards: the same documents, each reject counted once.
    let (docs2, r2) = extract(&[&iana], &tmp.join("two"), 2);
    assert_eq!(docs, docs2);
    assert_eq!((&r.rejects, &r.counts), (&r2.rejects, &r2.counts));

    // A damaged archive (pywb's bad file) and a cut copy of iana: records before the damage
    // are kept, the damage is counted, nothing panics.
    let bytes = std::fs::read(&iana).unwrap();
    let cut = tmp.join("cut.warc.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let bad = dir.join("example-bad.warc.gz.bad");
    let bad_copy = tmp.join("example-bad.warc.gz");
    std::fs::copy(&bad, &bad_copy).unwrap();
    let (docs3, r3) = extract(&[&cut, &bad_copy], &tmp.join("damaged"), 1);
    assert!(
        !docs3.is_empty() && docs3.len() < docs.len() + 2,
        "{}",
        docs3.len()
    );
    let damage: u64 = [
        "truncated",
        "corrupt_gzip",
        "bad_header",
        "damaged_input",
        "not_warc",
    ]
    .iter()
    .map(|k| r3.rejects.get(*k).copied().unwrap_or(0))
    .sum();
    assert!(damage > 0, "{:?}", r3.rejects);
    eprintln!(
        "iana: {} documents, rejects {:?}; damaged: {} documents, rejects {:?}",
        docs.len(),
        r.rejects,
        docs3.len(),
        r3.rejects
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
