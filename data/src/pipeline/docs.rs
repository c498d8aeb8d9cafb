//! Documents and their shard files: one JSON object per line, zstd-compressed.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

/// One document: `id` is unique and stable (derived from its source, never from the shard
/// layout), so dedup decisions do not depend on how many workers ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub text: String,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Doc {
    pub fn new(id: impl Into<String>, text: impl Into<String>) -> Doc {
        Doc {
            id: id.into(),
            url: None,
            text: text.into(),
            metadata: Default::default(),
        }
    }
}

/// A line of a shard that did not parse as a document: counted by the caller, never fatal.
#[derive(Debug)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

/// The documents of a `.jsonl.zst` (or plain `.jsonl`) file, in order. A line that is not a
/// document comes back as `Err(BadLine)`; a damaged compressed stream ends the iteration with
/// one `BadLine` naming it.
pub fn read_docs(path: &Path) -> Result<impl Iterator<Item = std::result::Result<Doc, BadLine>>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "zst") {
        let dec = zstd::Decoder::new(file)
            .with_context(|| format!("opening zstd stream {}", path.display()))?;
        Box::new(BufReader::with_capacity(1 << 16, dec))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    let mut lines = reader.split(b'\n').enumerate();
    let mut done = false;
    Ok(std::iter::from_fn(move || loop {
        if done {
            return None;
        }
        let (i, line) = lines.next()?;
        match line {
            Err(e) => {
                done = true;
                return Some(Err(BadLine {
                    line: i + 1,
                    reason: format!("read error: {e}"),
                }));
            }
            Ok(l) if l.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(l) => {
                return Some(serde_json::from_slice::<Doc>(&l).map_err(|e| BadLine {
                    line: i + 1,
                    reason: format!("not a document: {e}"),
                }))
            }
        }
    }))
}

/// Writes documents to a temp file beside `path`; [`DocWriter::finish`] renames it into
/// place, so a reader (or a re-run) never sees a half-written shard under its final name.
pub struct DocWriter {
    path: PathBuf,
    tmp: PathBuf,
    enc: Option<zstd::Encoder<'static, BufWriter<File>>>,
    pub docs: u64,
    pub bytes: u64,
}

impl DocWriter {
    pub fn create(path: &Path) -> Result<DocWriter> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let enc = zstd::Encoder::new(BufWriter::with_capacity(1 << 16, file), 3)
            .with_context(|| format!("starting zstd stream {}", tmp.display()))?;
        Ok(DocWriter {
            path: path.to_path_buf(),
            tmp,
            enc: Some(enc),
            docs: 0,
            bytes: 0,
        })
    }

    pub fn write(&mut self, doc: &Doc) -> Result<()> {
        let mut line = serde_json::to_vec(doc)?;
        line.push(b'\n');
        let enc = self
            .enc
            .as_mut()
            .ok_or_else(|| anyhow!("writer finished"))?;
        enc.write_all(&line)
            .with_context(|| format!("writing {}", self.tmp.display()))?;
        self.docs += 1;
        self.bytes += doc.text.len() as u64;
        Ok(())
    }

    /// Flushes, syncs and renames the shard into place.
    pub fn finish(mut self) -> Result<()> {
        let enc = self.enc.take().ok_or_else(|| anyhow!("writer finished"))?;
        let buf = enc
            .finish()
            .with_context(|| format!("finishing {}", self.tmp.display()))?;
        let file = buf
            .into_inner()
            .map_err(|e| anyhow!("writing {}: {}", self.tmp.display(), e.error()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("renaming into {}", self.path.display()))
    }
}

impl Drop for DocWriter {
    fn drop(&mut self) {
        if self.enc.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `docs` as a finished shard at `path` (tests and small outputs).
pub fn write_docs<'a>(path: &Path, docs: impl IntoIterator<Item = &'a Doc>) -> Result<()> {
    let mut w = DocWriter::create(path)?;
    for d in docs {
        w.write(d)?;
    }
    w.finish()
}

/// The `.jsonl.zst` / `.jsonl` shards in `dir`, sorted by name (hidden temp files skipped).
pub fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if !name.starts_with('.')
            && (name.ends_with(".jsonl.zst") || name.ends_with(".jsonl"))
            && p.is_file()
        {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_bad_lines() {
        let d = std::env::temp_dir().join(format!("rxla-docs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut a = Doc::new("a", "héllo\nworld");
        a.url = Some("http://x/".into());
        a.metadata.insert("lang".into(), "en".into());
        let b = Doc::new("b", "");
        let p = d.join("s.jsonl.zst");
        write_docs(&p, [&a, &b]).unwrap();
        let back: Vec<Doc> = read_docs(&p).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(back, vec![a.clone(), b]);
        assert_eq!(shard_files(&d).unwrap(), vec![p.clone()]);
        // A plain file with a broken line: the good ones still come through.
        let q = d.join("t.jsonl");
        std::fs::write(&q, b"{\"id\":\"x\",\"text\":\"t\"}\n{oops\n\n\xff\xfe\n").unwrap();
        let r: Vec<_> = read_docs(&q).unwrap().collect();
        assert_eq!(r.len(), 3);
        assert!(r[0].is_ok() && r[1].is_err() && r[2].is_err());
        // A truncated zstd stream yields an error, not a panic.
        let bytes = std::fs::read(&p).unwrap();
        let z = d.join("cut.jsonl.zst");
        std::fs::write(&z, &bytes[..bytes.len() / 2]).unwrap();
        let r: Vec<_> = read_docs(&z).unwrap().collect();
        assert!(r.iter().any(|x| x.is_err()), "{r:?}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
