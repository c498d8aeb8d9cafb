//! The WARC reader on real archives (pywb's and Warcat's sample files, fetched pinned on first
//! use): record counts per type equal warcio 1.7's (run by hand; the numbers are below), broken
//! files are skipped and counted with a reason, and cut or bit-flipped files never panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use data::pipeline::warc::{read_file, sample_dir, ReadStats, Record, RecordType, WarcReader};

fn pywb(name: &str) -> PathBuf {
    sample_dir("pywb").unwrap().join(name)
}

fn warcat(name: &str) -> PathBuf {
    sample_dir("warcat").unwrap().join(name)
}

fn types(recs: &[Record]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in recs {
        *m.entry(r.record_type().as_str().to_string()).or_default() += 1;
    }
    m
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn read(p: &Path) -> (Vec<Record>, ReadStats) {
    read_file(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn record_counts_match_warcio() {
    // (file, warcio's record counts by type)
    let cases: &[(PathBuf, &[(&str, usize)])] = &[
        (
            pywb("iana.warc.gz"),
            &[
                ("warcinfo", 1),
                ("response", 48),
                ("request", 171),
                ("revisit", 123),
            ],
        ),
        (
            pywb("dupes.warc.gz"),
            &[
                ("warcinfo", 1),
                ("response", 3),
                ("request", 12),
                ("revisit", 9),
            ],
        ),
        (
            pywb("example.warc.gz"),
            &[
                ("warcinfo", 1),
                ("response", 2),
                ("request", 2),
                ("revisit", 1),
            ],
        ),
        (
            pywb("example-extra.warc"),
            &[("response", 2), ("request", 2), ("revisit", 2)],
        ),
        (
            pywb("example-wget-1-14.warc.gz"),
            &[
                ("warcinfo", 1),
                ("request", 1),
                ("response", 1),
                ("resource", 3),
            ],
        ),
        (
            pywb("example-wpull.warc.gz"),
            &[
                ("warcinfo", 1),
                ("request", 1),
                ("response", 1),
                ("resource", 1),
            ],
        ),
        (
            pywb("example2.warc.gz"),
            &[("warcinfo", 1), ("response", 1), ("request", 1)],
        ),
        (pywb("httpbin-resource.warc.gz"), &[("resource", 1)]),
        (
            pywb("post-test.warc.gz"),
            &[("response", 3), ("request", 3)],
        ),
        (pywb("missing-status-text.warc"), &[("response", 1)]),
        (
            warcat("at.warc"),
            &[
                ("warcinfo", 1),
                ("request", 2),
                ("response", 2),
                ("resource", 3),
            ],
        ),
        (
            warcat("at.warc.gz"),
            &[
                ("warcinfo", 1),
                ("request", 2),
                ("response", 2),
                ("resource", 3),
            ],
        ),
        (warcat("c1_warcinfo.warc"), &[("warcinfo", 1)]),
        (warcat("long_url.warc"), &[("response", 1)]),
        (warcat("bad_http_chunked_content.warc"), &[("response", 1)]),
        (warcat("not_utf8_http_header.warc"), &[("response", 1)]),
    ];
    for (path, want) in cases {
        let (recs, stats) = read(path);
        assert_eq!(types(&recs), counts(want), "{}", path.display());
        assert_eq!(
            stats.skipped_total(),
            0,
            "{}: {:?}",
            path.display(),
            stats.skips
        );
    }
}

#[test]
fn iana_html_pages_parse_as_http() {
    let (recs, _) = read(&pywb("iana.warc.gz"));
    let mut html = BTreeMap::new();
    for r in recs
        .iter()
        .filter(|r| r.record_type() == RecordType::Response)
    {
        let http = r.http().unwrap();
        if http.mime().as_deref() == Some("text/html") {
            html.insert(
                r.target_uri().unwrap().to_string(),
                (http.status, http.body.len()),
            );
        }
    }
    // Body lengths as warcio's content_stream() gives them.
    assert_eq!(html.len(), 20);
    assert_eq!(html["http://www.iana.org/"], (Some(200), 5678));
    assert_eq!(html["http://www.iana.org/protocols"], (Some(200), 655_705));
    assert_eq!(
        html["http://www.iana.org/domains/root/db"],
        (Some(200), 148_172)
    );
    assert_eq!(html["http://www.iana.org/dnssec"], (Some(302), 0));
}

#[test]
fn broken_files_are_skipped_with_a_reason() {
    // ARC files are not WARC: one `not_warc` skip each, no record, no panic.
    for name in ["bad.arc", "example.arc", "example.arc.gz"] {
        let (recs, stats) = read(&pywb(name));
        assert!(recs.is_empty(), "{name}");
        assert!(
            stats.skipped.get("not_warc").is_some_and(|&n| n >= 1),
            "{name}: {stats:?}"
        );
    }
    // A whole-file gzip stream (warcio stops after the first record): we read all of it.
    let (bad, stats) = read(&pywb("example-bad.warc.gz.bad"));
    let (good, good_stats) = read(&pywb("example.warc"));
    assert_eq!(types(&bad), types(&good));
    assert_eq!(stats.skipped_total(), 0, "{:?}", stats.skips);
    assert_eq!(good_stats.records, 6);
    // example.warc: one record's Content-Length is 3 bytes short (warcio warns at offset
    // 4764): the record is kept, its trailer counted missing, the stray bytes skipped.
    let (_, stats) = read(&pywb("example.warc"));
    assert_eq!(stats.missing_trailer, 1);
    assert_eq!(stats.skipped.get("not_warc"), Some(&1));
    assert_eq!(stats.skips[0].offset, 4764, "{:?}", stats.skips);
}

#[test]
fn warcat_oddities() {
    let (recs, _) = read(&warcat("bad_http_chunked_content.warc"));
    let http = recs[0].http().unwrap();
    assert!(
        http.bad_chunked,
        "chunks do not parse: the body is kept as stored"
    );
    let (recs, _) = read(&warcat("not_utf8_http_header.warc"));
    let http = recs[0].http().unwrap();
    assert!(http
        .headers
        .iter()
        .any(|(_, v)| std::str::from_utf8(v).is_err()));
    let (recs, _) = read(&warcat("long_url.warc"));
    assert!(recs[0].target_uri().unwrap().len() > 200);
}

#[test]
fn cut_and_flipped_iana_never_panics() {
    let bytes = std::fs::read(pywb("iana.warc.gz")).unwrap();
    let (full, _) = read(&pywb("iana.warc.gz"));
    // Cuts at 40 points: records before the cut survive, the cut one is counted.
    for k in 1..40 {
        let cut = bytes.len() * k / 40;
        let mut r = WarcReader::new(&bytes[..cut]);
        let n = (&mut r).filter(|x| x.as_ref().is_ok()).count();
        let whole = full.iter().filter(|x| x.offset < cut as u64).count();
        assert!(n == whole || n + 1 == whole, "cut {cut}: {n} of {whole}");
        assert!(n == whole || r.stats().skipped_total() >= 1);
    }
    // Flip a byte in 50 members: that member is lost, and at worst the next one (a flip can
    // make the deflate stream run on into it); every other record is read.
    let mut rng = 0x9e37_79b9_u64;
    for _ in 0..50 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let i = (rng >> 33) as usize % full.len();
        let start = full[i].offset as usize;
        let end = full.get(i + 1).map_or(bytes.len(), |r| r.offset as usize);
        let mut bad = bytes.clone();
        let at = start + 10 + (rng as usize % (end - start - 18).max(1));
        bad[at] ^= 0x40;
        let mut r = WarcReader::new(&bad[..]);
        let got: Vec<Record> = (&mut r).map(|x| x.unwrap()).collect();
        assert!(
            got.len() + 2 >= full.len(),
            "member {i}: {} of {}",
            got.len(),
            full.len()
        );
        let others = full
            .iter()
            .filter(|r| r.offset != start as u64 && r.offset != end as u64);
        for o in others {
            assert!(
                got.iter().any(|g| g == o),
                "member {i} broke record at {}",
                o.offset
            );
        }
    }
}
