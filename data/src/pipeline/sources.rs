//! Inputs of the extract stage: loose HTML pages, MediaWiki dumps, document shards. Every
//! source yields its items in a fixed order, so shard `i` of `n` can take every n-th one.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::docs::Doc;
use super::shard::{Report, Source};

/// Pages larger than this are skipped as `too_large` (config `extract.max_page_bytes`).
pub const MAX_PAGE_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// An HTML page (bytes still to be checked and extracted).
    Html,
    /// A document whose text is already plain (a wiki article, a document shard's line).
    Text,
    /// A WARC archive (only as a source's file kind; its pages come out as `Html`).
    Warc,
    /// A record that gave nothing, and why (a damaged WARC record, a non-HTML response).
    Rejected(&'static str),
    /// Not a document at all (a wiki redirect, a WARC request record): only counted, under
    /// this name. An item, so that each shard counts only its own share.
    Counted(&'static str),
}

/// One item of a source.
pub struct Item {
    pub kind: SourceKind,
    pub id: String,
    pub url: Option<String>,
    pub bytes: Vec<u8>,
    pub doc: Option<Doc>,
    /// Input bytes this item stands for (page bytes, wikitext bytes, document text bytes).
    pub size: u64,
}

fn kind_of(p: &Path) -> Option<&'static str> {
    let n = p.file_name()?.to_string_lossy().to_ascii_lowercase();
    if n.ends_with(".html") || n.ends_with(".htm") {
        Some("html")
    } else if n.ends_with(".xml") || n.ends_with(".xml.bz2") || n.ends_with("-shortened.bz2") {
        Some("wiki")
    } else if n.ends_with(".jsonl") || n.ends_with(".jsonl.zst") {
        Some("docs")
    } else if n.ends_with(".warc") || n.ends_with(".warc.gz") {
        Some("warc")
    } else {
        None
    }
}

/// A safe output-file stem from a path's file name.
fn stem(p: &Path) -> String {
    let n = p.file_name().unwrap_or_default().to_string_lossy();
    n.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Sources from input paths (files, or directories searched recursively): all HTML pages
/// form one source `html`; each dump, shard or WARC is a source of its own.
pub fn sources_from_inputs(inputs: &[PathBuf]) -> Result<Vec<Source>> {
    let mut files = Vec::new();
    for p in inputs {
        collect(p, &mut files)?;
    }
    files.sort();
    files.dedup();
    let mut html = Vec::new();
    let mut out = Vec::new();
    for f in files {
        match kind_of(&f) {
            Some("html") => html.push(f),
            Some(_) => out.push(Source {
                name: stem(&f),
                files: vec![f],
            }),
            None => {}
        }
    }
    if !html.is_empty() {
        out.push(Source {
            name: "html".into(),
            files: html,
        });
    }
    if out.is_empty() {
        bail!(
            "no inputs found in {inputs:?}: extract reads *.html/*.htm pages, WARC archives \
             (*.warc, *.warc.gz), MediaWiki dumps (*.xml, *.xml.bz2) and document shards \
             (*.jsonl[.zst])"
        );
    }
    Ok(out)
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(p).with_context(|| format!("reading input {}", p.display()))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(p).with_context(|| format!("listing {}", p.display()))? {
            let e = e.with_context(|| format!("listing {}", p.display()))?;
            collect(&e.path(), out)?;
        }
    } else if kind_of(p).is_some() {
        out.push(p.to_path_buf());
    }
    Ok(())
}

/// Calls `each` on every item of `source` in order. A damaged container (a truncated dump)
/// is counted as a `damaged_input` reject after the items before the damage.
pub fn for_each_item(
    source: &Source,
    r: &mut Report,
    each: &mut dyn FnMut(Item, &mut Report) -> Result<()>,
) -> Result<()> {
    for f in &source.files {
        let kind = kind_of(f).unwrap_or("");
        match kind {
            "html" => {
                let file =
                    std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
                let len = file.metadata().map_or(0, |m| m.len()) as usize;
                let mut bytes = Vec::with_capacity(len.min(MAX_PAGE_BYTES * 4) + 1);
                file.take(MAX_PAGE_BYTES as u64 * 4)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("reading {}", f.display()))?;
                let name = f.file_name().unwrap_or_default().to_string_lossy();
                each(
                    Item {
                        kind: SourceKind::Html,
                        id: format!("html:{name}"),
                        url: None,
                        size: bytes.len() as u64,
                        bytes,
                        doc: None,
                    },
                    r,
                )?;
            }
            "wiki" => {
                let input = super::wiki::open_dump(f)?;
                let res = super::wiki::for_each_page(input, |p| {
                    if !super::wiki::is_article(&p) {
                        return each(counted("non_article_pages"), r);
                    }
                    let bytes = p.wikitext.len();
                    each(
                        Item {
                            kind: SourceKind::Text,
                            id: format!("wiki:{}", p.id),
                            url: None,
                            bytes: Vec::new(),
                            doc: Some(super::wiki::page_doc(&p)),
                            size: bytes as u64,
                        },
                        r,
                    )?;
                    Ok(())
                });
                if let Err(e) = res {
                    r.reject("damaged_input");
                    eprintln!(
                        "rxla data: {}: {e:#}; kept the pages before it",
                        f.display()
                    );
                }
            }
            "docs" => {
                for d in super::docs::read_docs(f)? {
                    match d {
                        Ok(d) => each(
                            Item {
                                kind: SourceKind::Text,
                                id: d.id.clone(),
                                url: d.url.clone(),
                                bytes: Vec::new(),
                                size: d.text.len() as u64,
                                doc: Some(d),
                            },
                            r,
                        )?,
                        Err(_) => r.reject("bad_line"),
                    }
                }
            }
            "warc" => warc_items(f, r, each)?,
            _ => bail!("{}: unknown input kind", f.display()),
        }
    }
    Ok(())
}

/// The pages of a WARC file: every `response` record's HTTP body, in file order, as an HTML
/// item (URL from `WARC-Target-URI`); a response that is not a 2xx HTML page, and every
/// record the reader had to skip (cut short, corrupt gzip, bad header), as a `Rejected` item
/// with its reason, so each is counted once over all shards. Other record types (request,
/// warcinfo, metadata, revisit) are counted, not items.
fn warc_items(
    f: &Path,
    r: &mut Report,
    each: &mut dyn FnMut(Item, &mut Report) -> Result<()>,
) -> Result<()> {
    use super::warc::{RecordType, WarcReader};
    let file = std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
    let mut reader = WarcReader::new(std::io::BufReader::new(file));
    let mut seen_skips: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let rejected = |why: &'static str, at: u64| Item {
        kind: SourceKind::Rejected(why),
        id: format!("warc:{}@{at}", f.display()),
        url: None,
        bytes: Vec::new(),
        doc: None,
        size: 0,
    };
    loop {
        let next = reader.next();
        // Records the reader skipped to get here, one rejected item each.
        for (&why, &n) in &reader.stats().skipped {
            let before = seen_skips.entry(why).or_default();
            for k in *before..n {
                each(rejected(why, k), r)?;
            }
            *before = n;
        }
        let rec = match next {
            None => break,
            Some(Ok(rec)) => rec,
            Some(Err(e)) => {
                eprintln!(
                    "rxla data: {}: {e}; kept the records before it",
                    f.display()
                );
                each(rejected("damaged_input", u64::MAX), r)?;
                break;
            }
        };
        if rec.record_type() != RecordType::Response {
            each(counted("warc_other_records"), r)?;
            continue;
        }
        let url = rec.target_uri().map(str::to_string);
        let id = match rec.record_id() {
            Some(i) => format!("warc:{}", i.trim_start_matches('<').trim_end_matches('>')),
            None => format!("warc:{}@{}", f.display(), rec.offset),
        };
        let size = rec.block.len() as u64;
        let page = match rec.http() {
            Err(_) => Err("bad_http"),
            Ok(h) if !h.status.is_some_and(|s| (200..300).contains(&s)) => Err("http_status"),
            Ok(h)
                if !h
                    .mime()
                    .is_none_or(|m| m == "text/html" || m == "application/xhtml+xml") =>
            {
                Err("not_html")
            }
            Ok(h) => decode_body(&h),
        };
        let item = match page {
            Ok(bytes) => Item {
                kind: SourceKind::Html,
                id,
                url,
                bytes,
                doc: None,
                size,
            },
            Err(why) => Item {
                size,
                url,
                ..rejected(why, rec.offset)
            },
        };
        each(item, r)?;
    }
    Ok(())
}

fn counted(name: &'static str) -> Item {
    Item {
        kind: SourceKind::Counted(name),
        id: String::new(),
        url: None,
        bytes: Vec::new(),
        doc: None,
        size: 0,
    }
}

/// A response body with its `Content-Encoding` (gzip, deflate) undone.
fn decode_body(h: &super::warc::HttpMessage) -> std::result::Result<Vec<u8>, &'static str> {
    let enc = h
        .header_str("Content-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut out = Vec::new();
    let limit = MAX_PAGE_BYTES as u64 * 4;
    let res = match enc.as_str() {
        "" | "identity" => return Ok(h.body.clone()),
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(&h.body[..])
            .take(limit)
            .read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(&h.body[..])
            .take(limit)
            .read_to_end(&mut out),
        _ => return Err("unsupported_encoding"),
    };
    res.map(|_| out).map_err(|_| "bad_encoding")
}
