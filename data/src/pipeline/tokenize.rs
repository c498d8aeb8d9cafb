//! Tokenize: train a byte-level BPE on every kept document (in id order, so the vocabulary
//! does not depend on the shard layout), then encode each document shard into a token
//! shard: little-endian u16 ids (u32 past 65,536 tokens), each document followed by the
//! ids of a blank line, plus `<shard>.idx.json` with each document's id and id range.
//! `rxla train --set data.dataset=path:DIR` reads DIR's tokenizer and shards.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::docs::read_docs;
use super::shard::{Report, Task};
use crate::tokenizer::{Tokenizer, TokenizerSpec, TOKENIZER_FILE};

/// Config `[tokenize]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizeConfig {
    pub vocab_size: usize,
    /// Train on at most this many bytes of text (documents in id order).
    pub max_train_bytes: usize,
}

impl Default for TokenizeConfig {
    fn default() -> Self {
        TokenizeConfig {
            vocab_size: 4096,
            max_train_bytes: 256 << 20,
        }
    }
}

/// Separator appended to every document before encoding.
pub const DOC_SEPARATOR: &str = "\n\n";

/// Trains the tokenizer on every document of the task's files; writes `task.output`.
pub fn train(task: &Task, r: &mut Report, c: &TokenizeConfig) -> Result<()> {
    let mut docs = Vec::new();
    for f in &task.source.files {
        for d in read_docs(f)? {
            match d {
                Ok(d) => docs.push((d.id, d.text)),
                Err(_) => r.reject("bad_line"),
            }
        }
    }
    docs.sort();
    let mut text = String::new();
    for (_, t) in &docs {
        if text.len() + t.len() > c.max_train_bytes {
            break;
        }
        text.push_str(t);
        text.push_str(DOC_SEPARATOR);
    }
    r.docs_in = docs.len() as u64;
    r.bytes_in = text.len() as u64;
    let tok = Tokenizer::train(
        TokenizerSpec::Bpe {
            vocab_size: c.vocab_size,
        },
        &text,
    )?;
    r.count("vocab_size", tok.vocab_size() as u64);
    files::write_atomic(&task.output, tok.to_json()?.as_bytes())?;
    Ok(())
}

/// One document's place in a token shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub id: String,
    pub start: u64,
    pub len: u64,
}

fn index_path(tokens: &Path) -> PathBuf {
    let mut s = tokens.as_os_str().to_owned();
    s.push(".idx.json");
    PathBuf::from(s)
}

/// Encodes the task's documents into `task.output` (and its index beside it).
pub fn encode(task: &Task, r: &mut Report, tok: &Tokenizer) -> Result<()> {
    let wide = tok.vocab_size() > 1 << 16;
    let mut bytes = Vec::new();
    let mut index = Vec::new();
    let mut n = 0u64;
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
            let ids = tok.encode(&format!("{}{DOC_SEPARATOR}", d.text))?;
            for id in &ids {
                if wide {
                    bytes.write_all(&id.to_le_bytes())?;
                } else {
                    bytes.write_all(&(*id as u16).to_le_bytes())?;
                }
            }
            index.push(IndexEntry {
                id: d.id,
                start: n,
                len: ids.len() as u64,
            });
            n += ids.len() as u64;
            r.docs_out += 1;
        }
    }
    r.count("tokens", n);
    r.bytes_out = bytes.len() as u64;
    files::write_json_atomic(&index_path(&task.output), &serde_json::to_value(&index)?)?;
    files::write_atomic(&task.output, &bytes)?;
    Ok(())
}

/// The extension of token shards for a vocabulary.
pub fn token_ext(vocab: usize) -> &'static str {
    if vocab > 1 << 16 {
        ".u32"
    } else {
        ".u16"
    }
}

/// A token directory's tokenizer and its finished shards (sorted by name).
pub fn open_token_dir(dir: &Path) -> Result<(Tokenizer, Vec<PathBuf>)> {
    let tp = dir.join(TOKENIZER_FILE);
    let tok = Tokenizer::load(&tp).with_context(|| {
        format!(
            "{} has no readable {TOKENIZER_FILE}: make it with `rxla data tokenize`",
            dir.display()
        )
    })?;
    let ext = token_ext(tok.vocab_size());
    let mut shards = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !name.starts_with('.') && name.ends_with(ext) && super::shard::finished(&p).is_some() {
            shards.push(p);
        }
    }
    shards.sort();
    if shards.is_empty() {
        bail!("{} holds no finished token shards (*{ext})", dir.display());
    }
    Ok((tok, shards))
}

/// All token ids of a token directory, shards in name order.
pub fn read_token_dir(dir: &Path) -> Result<(Tokenizer, Vec<u32>)> {
    let (tok, shards) = open_token_dir(dir)?;
    let wide = tok.vocab_size() > 1 << 16;
    let mut ids = Vec::new();
    for s in shards {
        let b = std::fs::read(&s).with_context(|| format!("reading {}", s.display()))?;
        if wide {
            ids.extend(
                b.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        } else {
            ids.extend(
                b.chunks_exact(2)
                    .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]]))),
            );
        }
    }
    Ok((tok, ids))
}

/// Each document's token ids in a token shard, by id.
pub fn read_shard_docs(path: &Path, wide: bool) -> Result<Vec<(String, Vec<u32>)>> {
    let ip = index_path(path);
    let index: Vec<IndexEntry> = serde_json::from_str(
        &std::fs::read_to_string(&ip).with_context(|| format!("reading {}", ip.display()))?,
    )?;
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let w = if wide { 4 } else { 2 };
    Ok(index
        .into_iter()
        .map(|e| {
            let s = &b[e.start as usize * w..(e.start + e.len) as usize * w];
            let ids = if wide {
                s.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                s.chunks_exact(2)
                    .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                    .collect()
            };
            (e.id, ids)
        })
        .collect())
}
