//! Deduplication as four shardable passes, after datatrove's MinHash dedup:
//! 1. `signatures` (per input shard): per document its normalised-text hash (exact), URL
//!    hash, word 5-gram shingle set and MinHash signature;
//! 2. `buckets` (per unit: exact, url, and each LSH band): documents sharing a key become
//!    pairs; band candidates are kept only when their shingle sets' Jaccard reaches the
//!    threshold;
//! 3. `clusters` (one task): union-find over all pairs, keep the smallest id per cluster;
//! 4. `filter` (per input shard): drop the removed ids.
//!
//! Decisions depend on document ids only, never on the shard layout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::docs::{read_docs, DocWriter};
use super::shard::{Report, Task};

/// Config `[dedup]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupConfig {
    pub exact: bool,
    pub url: bool,
    pub near: bool,
    /// Words per shingle.
    pub ngram: usize,
    /// LSH bands × rows per band = MinHash permutations.
    pub bands: usize,
    pub rows: usize,
    /// Jaccard similarity at and above which two documents are near-duplicates.
    pub threshold: f64,
    pub seed: u64,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            exact: true,
            url: true,
            near: true,
            ngram: 5,
            // P(candidate | J = 0.8) = 1 - (1 - 0.8^5)^20 > 0.9995.
            bands: 20,
            rows: 5,
            threshold: 0.8,
            seed: 42,
        }
    }
}

/// Lower-cased words with surrounding punctuation removed.
fn norm_words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The normalised text's hash: case, punctuation around words and whitespace ignored.
pub fn exact_hash(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(norm_words(text).join(" ").as_bytes())
}

/// Sorted, distinct hashes of a text's word `n`-grams (the whole text when shorter).
pub fn shingles(text: &str, n: usize) -> Vec<u64> {
    let w = norm_words(text);
    let mut out: Vec<u64> = if w.len() < n {
        vec![xxhash_rust::xxh3::xxh3_64(w.join(" ").as_bytes())]
    } else {
        w.windows(n)
            .map(|g| xxhash_rust::xxh3::xxh3_64(g.join(" ").as_bytes()))
            .collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// Jaccard similarity of two sorted, distinct sets.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// SplitMix64's finalizer: a cheap, well-mixed 64-bit hash.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// MinHash: hash function `j` is `mix64(x ^ key_j)`, keys drawn from `seed`.
pub fn minhash(shingles: &[u64], perms: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let keys: Vec<u64> = (0..perms).map(|_| rng.gen()).collect();
    keys.iter()
        .map(|&key| {
            shingles
                .iter()
                .map(|&x| (mix64(x ^ key) >> 32) as u32)
                .min()
                .unwrap_or(u32::MAX)
        })
        .collect()
}

/// One document's signature record.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub id: String,
    pub exact: u64,
    /// 0 when the document has no URL.
    pub url: u64,
    pub minhash: Vec<u32>,
    pub shingles: Vec<u64>,
}

fn write_sig(w: &mut impl Write, s: &Signature) -> std::io::Result<()> {
    w.write_all(&(s.id.len() as u32).to_le_bytes())?;
    w.write_all(s.id.as_bytes())?;
    w.write_all(&s.exact.to_le_bytes())?;
    w.write_all(&s.url.to_le_bytes())?;
    w.write_all(&(s.minhash.len() as u32).to_le_bytes())?;
    for h in &s.minhash {
        w.write_all(&h.to_le_bytes())?;
    }
    w.write_all(&(s.shingles.len() as u32).to_le_bytes())?;
    for h in &s.shingles {
        w.write_all(&h.to_le_bytes())?;
    }
    Ok(())
}

fn read_sigs(path: &Path) -> Result<Vec<Signature>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = BufReader::new(zstd::Decoder::new(f)?);
    let mut out = Vec::new();
    let mut u32b = [0u8; 4];
    let mut u64b = [0u8; 8];
    let ctx = || {
        format!(
            "{} is damaged: delete it and run `dedup signatures` again",
            path.display()
        )
    };
    loop {
        match r.read_exact(&mut u32b) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(out),
            Err(e) => return Err(e).with_context(ctx),
        }
        let mut id = vec![0u8; u32::from_le_bytes(u32b) as usize];
        r.read_exact(&mut id).with_context(ctx)?;
        r.read_exact(&mut u64b).with_context(ctx)?;
        let exact = u64::from_le_bytes(u64b);
        r.read_exact(&mut u64b).with_context(ctx)?;
        let url = u64::from_le_bytes(u64b);
        r.read_exact(&mut u32b).with_context(ctx)?;
        let mut minhash = Vec::new();
        for _ in 0..u32::from_le_bytes(u32b) {
            r.read_exact(&mut u32b).with_context(ctx)?;
            minhash.push(u32::from_le_bytes(u32b));
        }
        r.read_exact(&mut u32b).with_context(ctx)?;
        let mut shingles = Vec::new();
        for _ in 0..u32::from_le_bytes(u32b) {
            r.read_exact(&mut u64b).with_context(ctx)?;
            shingles.push(u64::from_le_bytes(u64b));
        }
        out.push(Signature {
            id: String::from_utf8(id).with_context(ctx)?,
            exact,
            url,
            minhash,
            shingles,
        });
    }
}

/// Writes `bytes` zstd-compressed via temp + rename.
fn write_zst(path: &Path, bytes: &[u8]) -> Result<()> {
    let z = zstd::encode_all(bytes, 3)?;
    files::write_atomic(path, &z)?;
    Ok(())
}

/// Pass 1 on one task: the signatures of its documents.
pub fn signatures(task: &Task, r: &mut Report, c: &DedupConfig) -> Result<()> {
    let mut buf = Vec::new();
    let mut k = 0;
    for f in &task.source.files {
        for d in read_docs(f)? {
            let mine = task.keeps(k);
            k += 1;
            if !mine {
                continue;
            }
            let Ok(d) = d else {
                r.reject("bad_line");
                continue;
            };
            r.docs_in += 1;
            r.bytes_in += d.text.len() as u64;
            let sh = shingles(&d.text, c.ngram);
            let sig = Signature {
                exact: exact_hash(&d.text),
                url: d
                    .url
                    .as_deref()
                    .map(|u| xxhash_rust::xxh3::xxh3_64(normalise_url(u).as_bytes()).max(1))
                    .unwrap_or(0),
                minhash: if c.near {
                    minhash(&sh, c.bands * c.rows, c.seed)
                } else {
                    Vec::new()
                },
                shingles: if c.near { sh } else { Vec::new() },
                id: d.id,
            };
            write_sig(&mut buf, &sig)?;
            r.docs_out += 1;
        }
    }
    write_zst(&task.output, &buf)
}

/// Scheme and host lower-cased, fragment and trailing slash dropped.
pub fn normalise_url(u: &str) -> String {
    let u = u.trim();
    let u = u.split('#').next().unwrap_or(u);
    let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.trim_end_matches('/');
    format!(
        "{}://{}/{path}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    )
}

/// The units pass 2 splits into: 0 exact, 1 url, 2.. one per band.
pub fn bucket_units(c: &DedupConfig) -> Vec<usize> {
    let mut u = Vec::new();
    if c.exact {
        u.push(0);
    }
    if c.url {
        u.push(1);
    }
    if c.near {
        u.extend(2..2 + c.bands);
    }
    u
}

/// Pass 2 on one unit (the task's source name is `unit-<u>`, its files every signature
/// file): the duplicate pairs it finds, as `reason\tid\tid` lines.
pub fn buckets(task: &Task, r: &mut Report, c: &DedupConfig) -> Result<()> {
    let unit: usize = task
        .source
        .name
        .strip_prefix("unit-")
        .and_then(|u| u.parse().ok())
        .context("bucket task source must be named unit-<n>")?;
    let mut sigs = Vec::new();
    for f in &task.source.files {
        sigs.extend(read_sigs(f)?);
    }
    r.docs_in = sigs.len() as u64;
    let mut groups: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, s) in sigs.iter().enumerate() {
        let key = match unit {
            0 => s.exact,
            1 if s.url == 0 => continue,
            1 => s.url,
            b => {
                let b = b - 2;
                let band = &s.minhash[b * c.rows..(b + 1) * c.rows];
                let bytes: Vec<u8> = band.iter().flat_map(|h| h.to_le_bytes()).collect();
                xxhash_rust::xxh3::xxh3_64(&bytes)
            }
        };
        groups.entry(key).or_default().push(i);
    }
    let reason = match unit {
        0 => "exact",
        1 => "url",
        _ => "near",
    };
    let mut pairs = BTreeSet::new();
    for (_, mut g) in groups {
        if g.len() < 2 {
            continue;
        }
        g.sort_by(|&a, &b| sigs[a].id.cmp(&sigs[b].id));
        if unit < 2 {
            for &j in &g[1..] {
                pairs.insert((sigs[g[0]].id.clone(), sigs[j].id.clone()));
            }
            continue;
        }
        for x in 0..g.len() {
            for y in x + 1..g.len() {
                r.count("candidates", 1);
                let (a, b) = (&sigs[g[x]], &sigs[g[y]]);
                if jaccard(&a.shingles, &b.shingles) >= c.threshold {
                    pairs.insert((a.id.clone(), b.id.clone()));
                }
            }
        }
    }
    let mut text = String::new();
    for (a, b) in &pairs {
        text.push_str(&format!("{reason}\t{a}\t{b}\n"));
    }
    r.count(&format!("{reason}_pairs"), pairs.len() as u64);
    r.docs_out = pairs.len() as u64;
    files::write_atomic(&task.output, text.as_bytes())?;
    Ok(())
}

/// Reads `reason\tid\tid` pair files.
pub fn read_pairs(files: &[PathBuf]) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for f in files {
        let file = std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
        for line in BufReader::new(file).lines() {
            let line = line.with_context(|| format!("reading {}", f.display()))?;
            let mut it = line.splitn(3, '\t');
            match (it.next(), it.next(), it.next()) {
                (Some(r), Some(a), Some(b)) => out.push((r.into(), a.into(), b.into())),
                _ if line.is_empty() => {}
                _ => bail!("{}: bad pair line {line:?}", f.display()),
            }
        }
    }
    Ok(out)
}

/// Union-find over pairs: every id in a cluster but its smallest, with the reason of the
/// pair that first joined it.
pub fn clusters(pairs: &[(String, String, String)]) -> BTreeMap<String, String> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut names: Vec<&str> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    for (_, a, b) in pairs {
        for s in [a.as_str(), b.as_str()] {
            if !index.contains_key(s) {
                index.insert(s, names.len());
                names.push(s);
                parent.push(names.len() - 1);
            }
        }
    }
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let mut reason_of: HashMap<usize, &str> = HashMap::new();
    for (r, a, b) in pairs {
        let (ia, ib) = (index[a.as_str()], index[b.as_str()]);
        reason_of.entry(ia).or_insert(r);
        reason_of.entry(ib).or_insert(r);
        let (ra, rb) = (find(&mut parent, ia), find(&mut parent, ib));
        if ra != rb {
            // The root is always the smaller id, so the root is the one kept.
            if names[ra] < names[rb] {
                parent[rb] = ra;
            } else {
                parent[ra] = rb;
            }
        }
    }
    let mut removed = BTreeMap::new();
    for i in 0..names.len() {
        if find(&mut parent, i) != i {
            removed.insert(names[i].to_string(), reason_of[&i].to_string());
        }
    }
    removed
}

/// Pass 3: the ids to remove (`id\treason` lines) from every pair file.
pub fn cluster_task(task: &Task, r: &mut Report) -> Result<()> {
    let pairs = read_pairs(&task.source.files)?;
    r.docs_in = pairs.len() as u64;
    let removed = clusters(&pairs);
    let mut text = String::new();
    for (id, why) in &removed {
        text.push_str(&format!("{id}\t{why}\n"));
        r.count(&format!("removed_{why}"), 1);
    }
    r.docs_out = removed.len() as u64;
    files::write_atomic(&task.output, text.as_bytes())?;
    Ok(())
}

/// The removed ids of a `cluster_task` output.
pub fn read_removed(path: &Path) -> Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect())
}

/// Pass 4 on one task: its documents less the removed ones.
pub fn filter(task: &Task, r: &mut Report, removed: &HashMap<String, String>) -> Result<()> {
    let mut w = DocWriter::create(&task.output)?;
    let mut k = 0;
    for f in &task.source.files {
        for d in read_docs(f)? {
            let mine = task.keeps(k);
            k += 1;
            if !mine {
                continue;
            }
            let Ok(d) = d else {
                r.reject("bad_line");
                continue;
            };
            r.docs_in += 1;
            r.bytes_in += d.text.len() as u64;
            if let Some(why) = removed.get(&d.id) {
                r.duplicates_removed += 1;
                r.reject(&format!("duplicate_{why}"));
                continue;
            }
            r.docs_out += 1;
            r.bytes_out += d.text.len() as u64;
            w.write(&d)?;
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shingles_and_jaccard() {
        let a = shingles("One two three four five six.", 5);
        let b = shingles("one TWO three, four five six seven", 5);
        // {12345, 23456} vs {12345, 23456, 34567}
        assert_eq!((a.len(), b.len()), (2, 3));
        assert!((jaccard(&a, &b) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(exact_hash("A  b\nc."), exact_hash("a b c"));
        assert_ne!(exact_hash("a b c"), exact_hash("a b d"));
        // MinHash agreement estimates Jaccard.
        let x: Vec<u64> = (0..1000).collect();
        let y: Vec<u64> = (200..1200).collect(); // J = 800/1200
        let (mx, my) = (minhash(&x, 512, 1), minhash(&y, 512, 1));
        let agree = mx.iter().zip(&my).filter(|(a, b)| a == b).count() as f64 / 512.0;
        assert!((agree - 2.0 / 3.0).abs() < 0.07, "{agree}");
        assert_eq!(
            normalise_url("HTTP://Example.org/a/#x"),
            normalise_url("http://example.org/a")
        );
    }

    #[test]
    fn clusters_keep_smallest_id() {
        let p = |a: &str, b: &str| ("near".to_string(), a.to_string(), b.to_string());
        let removed = clusters(&[p("c", "b"), p("d", "e"), p("b", "a")]);
        let ids: Vec<&str> = removed.keys().map(|s| s.as_str()).collect();
        assert_eq!(ids, vec!["b", "c", "e"]);
    }
}
