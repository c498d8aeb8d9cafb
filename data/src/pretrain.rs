//! BERT pretraining data: documents → sentences → `[CLS] a [SEP] b [SEP]` pairs with NSP
//! labels (half the second segments are the true continuation, half come from another
//! document) and MLM masking (15% of non-special tokens: 80% `[MASK]`, 10% random, 10% kept).
//! Every example is a function of (seed, step, row) only, so a resumed run sees the same data.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use unicode_segmentation::UnicodeSegmentation;

use crate::host::HostArray;
use crate::source::DataSource;
use crate::wordpiece::WordPiece;

/// MLM labels of positions that are not predicted (HF's `ignore_index`).
pub const IGNORE: i32 = -100;
/// Share of non-special tokens chosen for MLM.
pub const MASK_RATE: f64 = 0.15;

/// Sentences of `text` by Unicode's sentence boundaries (UAX #29), trimmed, empty ones
/// dropped. Abbreviations such as "Mr. Speaker" may still split; no period rule is ours.
pub fn sentences(text: &str) -> Vec<&str> {
    text.unicode_sentences()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The special token ids, and the vocabulary random replacements are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Specials {
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
    pub pad: u32,
    pub vocab_size: u32,
}

impl Specials {
    pub fn from_tokenizer(t: &WordPiece) -> Result<Specials> {
        Ok(Specials {
            cls: t.token_id("[CLS]")?,
            sep: t.token_id("[SEP]")?,
            mask: t.token_id("[MASK]")?,
            pad: t.token_id("[PAD]")?,
            vocab_size: t.vocab_size() as u32,
        })
    }

    fn is_special(&self, id: u32) -> bool {
        [self.cls, self.sep, self.mask, self.pad].contains(&id)
    }
}

/// A document: its sentences as token ids (no special tokens).
pub type Document = Vec<Vec<u32>>;

/// One example, `seq_len` long.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub tokens: Vec<i32>,
    pub segments: Vec<i32>,
    pub mask: Vec<i32>,
    pub mlm_labels: Vec<i32>,
    /// 1: the second segment is from another document.
    pub nsp_label: i32,
}

/// Draws pretraining examples from a set of documents.
pub struct PairSampler {
    docs: Vec<Document>,
    /// Documents with at least two sentences (where a true next segment exists).
    pairable: Vec<usize>,
    specials: Specials,
    seq_len: usize,
}

impl PairSampler {
    pub fn new(docs: Vec<Document>, specials: Specials, seq_len: usize) -> Result<PairSampler> {
        if seq_len < 5 {
            bail!("BERT pretraining needs seq_len ≥ 5, got {seq_len}");
        }
        let docs: Vec<Document> = docs
            .into_iter()
            .map(|d| {
                d.into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Document>()
            })
            .filter(|d| !d.is_empty())
            .collect();
        let pairable: Vec<usize> = (0..docs.len()).filter(|&i| docs[i].len() >= 2).collect();
        if pairable.is_empty() || docs.len() < 2 {
            bail!(
                "BERT pretraining needs at least 2 documents, one with 2+ sentences; got {}",
                docs.len()
            );
        }
        Ok(PairSampler {
            docs,
            pairable,
            specials,
            seq_len,
        })
    }

    pub fn num_tokens(&self) -> usize {
        self.docs.iter().flatten().map(Vec::len).sum()
    }

    /// The example a ChaCha8 stream keyed by `key` gives.
    pub fn example(&self, key: [u8; 32]) -> Example {
        let mut rng = ChaCha8Rng::from_seed(key);
        let budget = self.seq_len - 3; // [CLS] a [SEP] b [SEP]
        let d = self.pairable[rng.gen_range(0..self.pairable.len())];
        let doc = &self.docs[d];
        // A: sentences from `start` up to about half the budget, leaving one for B.
        let start = rng.gen_range(0..doc.len() - 1);
        let mut end = start + 1;
        let mut a: Vec<u32> = doc[start].clone();
        while end < doc.len() - 1 && a.len() + doc[end].len() <= budget / 2 {
            a.extend_from_slice(&doc[end]);
            end += 1;
        }
        let random = rng.gen_bool(0.5);
        let (bdoc, bstart) = if random {
            let mut o = rng.gen_range(0..self.docs.len() - 1);
            if o >= d {
                o += 1; // any document but `d`
            }
            (&self.docs[o], rng.gen_range(0..self.docs[o].len()))
        } else {
            (doc, end)
        };
        let mut b: Vec<u32> = Vec::new();
        for s in &bdoc[bstart..] {
            if !b.is_empty() && a.len() + b.len() >= budget {
                break; // at least one sentence, trimmed below
            }
            b.extend_from_slice(s);
        }
        // Truncation: trim the longer segment from its end, as BERT's truncate_seq_pair.
        while a.len() + b.len() > budget {
            if a.len() > b.len() {
                a.pop();
            } else {
                b.pop();
            }
        }
        let sp = self.specials;
        let mut tokens = vec![sp.cls];
        tokens.extend_from_slice(&a);
        tokens.push(sp.sep);
        let second = tokens.len();
        tokens.extend_from_slice(&b);
        tokens.push(sp.sep);
        let real = tokens.len();
        let mut mlm_labels = vec![IGNORE; self.seq_len];
        // Each non-special token independently (as HF's collator): exactly 15% on average.
        for i in 0..real {
            if sp.is_special(tokens[i]) || !rng.gen_bool(MASK_RATE) {
                continue;
            }
            mlm_labels[i] = tokens[i] as i32;
            let r: f64 = rng.gen();
            if r < 0.8 {
                tokens[i] = sp.mask;
            } else if r < 0.9 {
                tokens[i] = loop {
                    let t = rng.gen_range(0..sp.vocab_size);
                    if !sp.is_special(t) {
                        break t;
                    }
                };
            }
        }
        tokens.resize(self.seq_len, sp.pad);
        Example {
            tokens: tokens.iter().map(|&t| t as i32).collect(),
            segments: (0..self.seq_len)
                .map(|i| i32::from(i >= second && i < real))
                .collect(),
            mask: (0..self.seq_len).map(|i| i32::from(i < real)).collect(),
            mlm_labels,
            nsp_label: i32::from(random),
        }
    }
}

/// MLM scores of a unigram model on held-out examples: the token frequencies of the training
/// documents (add-one smoothed over the non-special vocabulary, so unseen tokens keep a finite
/// loss), predicting the most frequent token everywhere. Averaged as the model's eval metrics
/// are: per example over its masked positions (0 with none), then over examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnigramBaseline {
    pub accuracy: f64,
    /// Mean cross-entropy (nats) of the masked tokens.
    pub loss: f64,
}

impl UnigramBaseline {
    pub fn new(train: &[Document], specials: Specials, eval: &[Example]) -> UnigramBaseline {
        let v = specials.vocab_size as usize;
        let mut counts = vec![0u64; v];
        for &t in train.iter().flatten().flatten() {
            if (t as usize) < v {
                counts[t as usize] += 1;
            }
        }
        let candidates: Vec<usize> = (0..v).filter(|&t| !specials.is_special(t as u32)).collect();
        let total: u64 = candidates.iter().map(|&t| counts[t]).sum();
        let denom = (total + candidates.len() as u64) as f64;
        // Ties go to the lowest id, as argmax does.
        let top = candidates
            .iter()
            .copied()
            .max_by(|&a, &b| counts[a].cmp(&counts[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        let nll = |t: usize| -(((counts.get(t).copied().unwrap_or(0) + 1) as f64) / denom).ln();
        let (mut acc, mut loss) = (0.0, 0.0);
        for e in eval {
            let labels: Vec<usize> = e
                .mlm_labels
                .iter()
                .filter(|&&l| l != IGNORE)
                .map(|&l| l as usize)
                .collect();
            let n = labels.len().max(1) as f64;
            acc += labels.iter().filter(|&&l| l == top).count() as f64 / n;
            loss += labels.iter().map(|&l| nll(l)).sum::<f64>() / n;
        }
        let m = eval.len().max(1) as f64;
        UnigramBaseline {
            accuracy: acc / m,
            loss: loss / m,
        }
    }
}

/// Stream key of example `row` of `step` (`split` 0 train, 1 eval).
fn key(seed: u64, split: u64, step: u64, row: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&seed.to_le_bytes());
    k[8..16].copy_from_slice(&split.to_le_bytes());
    k[16..24].copy_from_slice(&step.to_le_bytes());
    k[24..].copy_from_slice(&row.to_le_bytes());
    k
}

/// Examples as the model's inputs: tokens, segments, mask, mlm_labels (B, T), nsp_labels (B,).
pub fn to_inputs(examples: &[Example], seq_len: usize) -> Vec<HostArray> {
    let bt = vec![examples.len() as i64, seq_len as i64];
    let cat = |f: fn(&Example) -> &Vec<i32>| HostArray::I32 {
        data: examples.iter().flat_map(|e| f(e).iter().copied()).collect(),
        dims: bt.clone(),
    };
    vec![
        cat(|e| &e.tokens),
        cat(|e| &e.segments),
        cat(|e| &e.mask),
        cat(|e| &e.mlm_labels),
        HostArray::I32 {
            data: examples.iter().map(|e| e.nsp_label).collect(),
            dims: vec![examples.len() as i64],
        },
    ]
}

/// Where BERT's WordPiece vocabulary comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum VocabSource {
    /// The `tokenizer.json` of a pretrained package (e.g. "all-minilm-l6-v2").
    Pretrained(String),
    /// Trained on the training documents (held-out ones excluded), `vocab_size` tokens.
    Train { vocab_size: usize },
}

/// What [`BertPretrainData::prepare`] reads.
#[derive(Debug, Clone)]
pub struct PretrainOptions {
    /// A corpus name (`sotu`) or `text:PATH[,PATH..]` ([`documents`]).
    pub corpus: String,
    pub vocab: VocabSource,
    pub val_fraction: f64,
    pub eval_examples: usize,
    pub seq_len: usize,
    pub batch: usize,
    pub seed: u64,
}

/// The prefix of corpora given by path.
pub const TEXT_PREFIX: &str = "text:";

/// The documents of `corpus`, in order: a named corpus's files (one document each), or
/// `text:PATH[,PATH..]` where each PATH is a UTF-8 text file (one document), a `.jsonl` file
/// (one document per line: an object with a string field `text`), or a directory (its
/// `*.txt` and `*.jsonl` files in name order).
pub fn documents(corpus: &str) -> Result<Vec<String>> {
    use anyhow::Context;
    let Some(paths) = corpus.strip_prefix(TEXT_PREFIX) else {
        let files = crate::text::corpus_files(corpus)?;
        return files
            .iter()
            .map(|f| crate::text::concat_files(std::slice::from_ref(f)))
            .collect();
    };
    let mut docs = Vec::new();
    for p in paths.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let path = std::path::Path::new(p);
        let files = if path.is_dir() {
            let mut f: Vec<std::path::PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("listing {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && matches!(
                            f.extension().and_then(|e| e.to_str()),
                            Some("txt" | "jsonl")
                        )
                })
                .collect();
            f.sort();
            if f.is_empty() {
                bail!("{} holds no *.txt or *.jsonl files", path.display());
            }
            f
        } else if path.is_file() {
            vec![path.to_path_buf()]
        } else {
            bail!("corpus path {} does not exist", path.display());
        };
        for f in files {
            let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
            let text = String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not UTF-8 text (byte {}): give text files or JSONL",
                    f.display(),
                    e.utf8_error().valid_up_to()
                )
            })?;
            if f.extension().and_then(|e| e.to_str()) == Some("jsonl") {
                for (i, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                        anyhow::anyhow!("{} line {}: not JSON: {e}", f.display(), i + 1)
                    })?;
                    let t = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| {
                        anyhow::anyhow!(
                            "{} line {}: no string field `text` (one document per line, \
                             {{\"text\": ...}})",
                            f.display(),
                            i + 1
                        )
                    })?;
                    docs.push(t.to_string());
                }
            } else {
                docs.push(text);
            }
        }
    }
    if docs.is_empty() {
        bail!("corpus `{corpus}` names no documents");
    }
    Ok(docs)
}

/// Train and held-out examples for BERT pretraining.
pub struct BertPretrainData {
    train: PairSampler,
    eval: PairSampler,
    batch: usize,
    seed: u64,
    eval_examples: usize,
}

impl BertPretrainData {
    /// `docs` tokenized by sentence; the last `val_docs` documents are held out for eval.
    pub fn new(
        mut docs: Vec<Document>,
        val_docs: usize,
        specials: Specials,
        seq_len: usize,
        batch: usize,
        seed: u64,
        eval_examples: usize,
    ) -> Result<BertPretrainData> {
        if val_docs < 2 || val_docs + 2 > docs.len() {
            bail!(
                "{} documents: need 2+ held out and 2+ for training (held out: {val_docs})",
                docs.len()
            );
        }
        let held = docs.split_off(docs.len() - val_docs);
        Ok(BertPretrainData {
            train: PairSampler::new(docs, specials, seq_len)?,
            eval: PairSampler::new(held, specials, seq_len)?,
            batch,
            seed,
            eval_examples,
        })
    }

    /// The documents of `opts.corpus` ([`documents`]) with a WordPiece vocabulary, saved as
    /// `dir/tokenizer.json`: a pretrained package's, or one trained on the training
    /// documents. The last `val_fraction` of the documents (at least 2) are held out.
    pub fn prepare(opts: &PretrainOptions, dir: &std::path::Path) -> Result<BertPretrainData> {
        use anyhow::Context;
        let texts = documents(&opts.corpus)?;
        let val = ((texts.len() as f64 * opts.val_fraction).round() as usize).max(2);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dst = dir.join(crate::tokenizer::TOKENIZER_FILE);
        let tok = match &opts.vocab {
            VocabSource::Pretrained(name) => {
                let model = crate::datasets::fetch_pretrained(name)?;
                let src = model.join(crate::tokenizer::TOKENIZER_FILE);
                let tok = WordPiece::load(&src)?;
                std::fs::copy(&src, &dst)
                    .with_context(|| format!("copying {} into {}", src.display(), dir.display()))?;
                tok
            }
            // WordPiece training breaks ties between equal counts in hash order, so the same
            // texts can give another vocabulary: a resumed run reuses the one it started with.
            &VocabSource::Train { vocab_size } if dst.exists() => {
                let tok = WordPiece::load(&dst).with_context(|| {
                    format!(
                        "{} is damaged: delete it and it is trained again from the corpus (or \
                         copy the one in the newest checkpoint)",
                        dst.display()
                    )
                })?;
                // Fewer is a corpus too small for the budget (training stops early).
                if tok.vocab_size() > vocab_size {
                    bail!(
                        "{} holds a WordPiece vocabulary of {} tokens, but the config asks for \
                         {vocab_size}; use a new run directory or delete that file",
                        dst.display(),
                        tok.vocab_size()
                    );
                }
                tok
            }
            &VocabSource::Train { vocab_size } => {
                let train = &texts[..texts.len().saturating_sub(val)];
                let tok = WordPiece::train(train, vocab_size)
                    .with_context(|| format!("corpus `{}`", opts.corpus))?;
                tok.save(&dst)?;
                tok
            }
        };
        let docs = Self::tokenize(&texts, &tok)?;
        Self::new(
            docs,
            val,
            Specials::from_tokenizer(&tok)?,
            opts.seq_len,
            opts.batch,
            opts.seed,
            opts.eval_examples,
        )
        .with_context(|| format!("corpus `{}`", opts.corpus))
    }

    pub fn vocab_size(&self) -> usize {
        self.train.specials.vocab_size as usize
    }

    /// Documents (texts) split into sentences and tokenized.
    pub fn tokenize(texts: &[String], tok: &WordPiece) -> Result<Vec<Document>> {
        texts
            .iter()
            .map(|t| sentences(t).into_iter().map(|s| tok.ids(s)).collect())
            .collect()
    }

    pub fn seq_len(&self) -> usize {
        self.train.seq_len
    }

    /// The held-out examples every evaluation scores.
    pub fn eval_examples(&self) -> Vec<Example> {
        (0..self.eval_examples)
            .map(|r| self.eval.example(key(0, 1, 0, r as u64)))
            .collect()
    }

    /// The unigram MLM baseline on [`Self::eval_examples`].
    pub fn unigram_baseline(&self) -> UnigramBaseline {
        UnigramBaseline::new(&self.train.docs, self.train.specials, &self.eval_examples())
    }

    pub fn train_examples(&self, step: usize) -> Vec<Example> {
        (0..self.batch)
            .map(|r| self.train.example(key(self.seed, 0, step as u64, r as u64)))
            .collect()
    }
}

impl DataSource for BertPretrainData {
    fn batch_size(&self) -> usize {
        self.batch
    }

    /// About one pass over the training tokens.
    fn steps_per_epoch(&self) -> usize {
        (self.train.num_tokens() / (self.batch * self.train.seq_len)).max(1)
    }

    fn train_batch(&mut self, step: usize) -> Result<Vec<HostArray>> {
        Ok(to_inputs(&self.train_examples(step), self.seq_len()))
    }

    fn eval_baselines(&self) -> Vec<(String, f64)> {
        let u = self.unigram_baseline();
        vec![
            ("eval_mlm_unigram_accuracy".into(), u.accuracy),
            ("eval_mlm_unigram_loss".into(), u.loss),
        ]
    }

    /// Every example is its own (seed, step, row) stream: build only these rows.
    fn train_rows(&mut self, step: usize, rows: std::ops::Range<usize>) -> Result<Vec<HostArray>> {
        if rows.end > self.batch {
            anyhow::bail!("rows {rows:?} of a batch of {}", self.batch);
        }
        let ex: Vec<Example> = rows
            .map(|r| self.train.example(key(self.seed, 0, step as u64, r as u64)))
            .collect();
        Ok(to_inputs(&ex, self.seq_len()))
    }

    /// A fixed set of held-out examples (seed-independent, so runs compare).
    fn eval_batches(&self, batch: usize) -> Result<Vec<(Vec<HostArray>, usize)>> {
        let all = self.eval_examples();
        Ok(all
            .chunks(batch)
            .map(|c| {
                let mut c = c.to_vec();
                let real = c.len();
                c.resize(batch, all[0].clone());
                (to_inputs(&c, self.seq_len()), real)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: Specials = Specials {
        cls: 1,
        sep: 2,
        mask: 3,
        pad: 0,
        vocab_size: 1000,
    };

    /// Document d's sentence s holds ids d*100 + s*10 + (0..len), all ≥ 10: which document
    /// and sentence a token came from can be read back.
    fn docs(n: usize) -> Vec<Document> {
        (0..n)
            .map(|d| {
                (0..6)
                    .map(|s| {
                        (0..3 + s)
                            .map(|k| (10 + d * 100 + s * 10 + k) as u32)
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn sentences_follow_unicode_boundaries() {
        let s = sentences("It was cold. Was it? Yes!  \"Quite so.\" The end");
        assert_eq!(
            s,
            [
                "It was cold.",
                "Was it?",
                "Yes!",
                "\"Quite so.\"",
                "The end"
            ]
        );
        // Not split-on-period: a decimal stays whole.
        assert_eq!(
            sentences("It rose 3.5 percent. Then fell."),
            ["It rose 3.5 percent.", "Then fell."]
        );
    }

    #[test]
    fn examples_are_functions_of_seed_and_step() {
        let data = BertPretrainData::new(docs(8), 2, SP, 32, 4, 7, 16).unwrap();
        assert_eq!(data.train_examples(3), data.train_examples(3));
        assert_ne!(data.train_examples(3), data.train_examples(4));
        let other = BertPretrainData::new(docs(8), 2, SP, 32, 4, 8, 16).unwrap();
        assert_ne!(data.train_examples(3), other.train_examples(3));
        assert_eq!(data.eval_batches(5).unwrap(), data.eval_batches(5).unwrap());
        let e = data.eval_batches(5).unwrap();
        assert_eq!(e.iter().map(|(_, n)| n).sum::<usize>(), 16);
        // Held-out documents (6 and 7) only in eval; never in training.
        let doc_of = |t: i32| (t as usize - 10) / 100;
        for s in 0..50 {
            for ex in data.train_examples(s) {
                assert!(ex.tokens.iter().zip(&ex.mlm_labels).all(|(&t, &l)| {
                    let orig = if l == IGNORE { t } else { l };
                    orig < 10 || doc_of(orig) < 6
                }));
            }
        }
    }

    #[test]
    fn pairs_have_layout_nsp_labels_and_mask_proportions() {
        let s = PairSampler::new(docs(10), SP, 24).unwrap();
        let (mut n, mut random, mut cand, mut chosen) = (0, 0, 0, 0);
        let (mut masked, mut replaced, mut kept) = (0, 0, 0);
        for i in 0..4000u64 {
            let e = s.example(key(1, 0, i, 0));
            let real = e.mask.iter().filter(|&&m| m == 1).count();
            assert_eq!(e.tokens.len(), 24);
            assert!(e.mask[..real].iter().all(|&m| m == 1), "mask is a prefix");
            assert!(
                e.tokens[real..].iter().all(|&t| t == 0),
                "padded with [PAD]"
            );
            assert_eq!(e.tokens[0], 1);
            assert_eq!(e.tokens[real - 1], 2);
            let seps: Vec<usize> = (0..real).filter(|&i| e.tokens[i] == 2).collect();
            assert_eq!(seps.len(), 2, "{e:?}");
            for (i, &seg) in e.segments.iter().enumerate() {
                assert_eq!(seg, i32::from(i > seps[0] && i < real), "segment of {i}");
            }
            // Unmasked originals: A's last and B's first token tell true next from random.
            let orig: Vec<i32> = (0..real)
                .map(|i| {
                    if e.mlm_labels[i] == IGNORE {
                        e.tokens[i]
                    } else {
                        e.mlm_labels[i]
                    }
                })
                .collect();
            let (a, b) = (orig[seps[0] - 1], orig[seps[0] + 1]);
            let same_doc = (a - 10) / 100 == (b - 10) / 100;
            let next_sentence = (b - 10) % 100 / 10 == (a - 10) % 100 / 10 + 1;
            assert_eq!(
                e.nsp_label == 0,
                same_doc && next_sentence && (b - 10) % 10 == 0
            );
            random += e.nsp_label as usize;
            n += 1;
            // Special tokens are never MLM targets.
            for i in 0..24 {
                let special = i == 0 || seps.contains(&i) || i >= real;
                if special {
                    assert_eq!(e.mlm_labels[i], IGNORE, "special position {i} labelled");
                }
                if e.mlm_labels[i] != IGNORE {
                    chosen += 1;
                    match e.tokens[i] {
                        3 => masked += 1,
                        t if t == e.mlm_labels[i] => kept += 1,
                        _ => replaced += 1,
                    }
                }
            }
            cand += real - 3;
        }
        let share = |k: usize, of: usize| k as f64 / of as f64;
        assert!(
            (share(random, n) - 0.5).abs() < 0.03,
            "NSP random {random}/{n}"
        );
        assert!(
            (share(chosen, cand) - 0.15).abs() < 0.01,
            "chosen {chosen}/{cand}"
        );
        assert!(
            (share(masked, chosen) - 0.8).abs() < 0.02,
            "[MASK] {masked}/{chosen}"
        );
        // A random replacement can hit the same id (1/996): within the tolerance.
        assert!(
            (share(replaced, chosen) - 0.1).abs() < 0.015,
            "random {replaced}/{chosen}"
        );
        assert!(
            (share(kept, chosen) - 0.1).abs() < 0.015,
            "kept {kept}/{chosen}"
        );
    }

    #[test]
    fn unigram_baseline_counts_training_tokens_and_averages_like_eval() {
        let sp = Specials {
            vocab_size: 8,
            ..SP
        };
        // Counts over the non-special ids 4..8: 4 ×3, 5 ×1, 6 and 7 never (smoothed to 1).
        // The special ids 1 and 2 in the documents are not counted.
        let train: Vec<Document> = vec![vec![vec![4, 4, 1], vec![4]], vec![vec![5, 2]]];
        let ex = |labels: &[i32]| {
            let mut l = vec![IGNORE; 4];
            l[..labels.len()].copy_from_slice(labels);
            Example {
                tokens: vec![3; 4],
                segments: vec![0; 4],
                mask: vec![1; 4],
                mlm_labels: l,
                nsp_label: 0,
            }
        };
        let eval = [ex(&[4, 5]), ex(&[6]), ex(&[])];
        let u = UnigramBaseline::new(&train, sp, &eval);
        // p = (count + 1) / (4 + 4): p(4) = 1/2, p(5) = 1/4, p(6) = 1/8; the guess is 4.
        assert!((u.accuracy - 0.5 / 3.0).abs() < 1e-12, "{u:?}");
        let ln2 = std::f64::consts::LN_2;
        let want = ((ln2 + 2.0 * ln2) / 2.0 + 3.0 * ln2 + 0.0) / 3.0;
        assert!((u.loss - want).abs() < 1e-12, "{u:?}");
        // No held-out examples: zeros, not NaN.
        let none = UnigramBaseline::new(&train, sp, &[]);
        assert_eq!((none.accuracy, none.loss), (0.0, 0.0));
    }

    #[test]
    fn text_corpora_read_files_jsonl_and_directories_and_name_bad_paths() {
        let d = std::env::temp_dir().join(format!("rxla-pretrain-text-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("dir")).unwrap();
        std::fs::create_dir_all(d.join("empty")).unwrap();
        std::fs::write(d.join("a.txt"), "First doc. Two sentences.").unwrap();
        std::fs::write(d.join("dir/b.txt"), "Second doc.").unwrap();
        std::fs::write(
            d.join("dir/c.jsonl"),
            "{\"text\": \"Third.\"}\n\n{\"text\": \"Fourth.\", \"id\": 4}\n",
        )
        .unwrap();
        std::fs::write(d.join("dir/ignored.md"), "not read").unwrap();
        let p = |f: &str| d.join(f).display().to_string();
        let got = documents(&format!("text:{}, {}", p("a.txt"), p("dir"))).unwrap();
        assert_eq!(
            got,
            [
                "First doc. Two sentences.",
                "Second doc.",
                "Third.",
                "Fourth."
            ]
        );

        let e = |spec: String| format!("{:#}", documents(&spec).unwrap_err());
        let missing = e(format!("text:{}", p("nope.txt")));
        assert!(
            missing.contains("nope.txt") && missing.contains("does not exist"),
            "{missing}"
        );
        let empty = e(format!("text:{}", p("empty")));
        assert!(empty.contains("holds no *.txt or *.jsonl"), "{empty}");
        assert!(e("text:".into()).contains("names no documents"));
        std::fs::write(d.join("bin.txt"), [b'o', b'k', 0xff, 0xfe]).unwrap();
        let bin = e(format!("text:{}", p("bin.txt")));
        assert!(
            bin.contains("bin.txt") && bin.contains("not UTF-8 text (byte 2)"),
            "{bin}"
        );
        std::fs::write(d.join("bad.jsonl"), "{\"text\": \"ok\"}\n{oops\n").unwrap();
        let bad = e(format!("text:{}", p("bad.jsonl")));
        assert!(bad.contains("bad.jsonl line 2: not JSON"), "{bad}");
        std::fs::write(d.join("field.jsonl"), "{\"body\": \"x\"}\n").unwrap();
        let field = e(format!("text:{}", p("field.jsonl")));
        assert!(field.contains("line 1: no string field `text`"), "{field}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_trained_vocabulary_is_reused_by_a_resumed_run_and_checked() {
        let d = std::env::temp_dir().join(format!("rxla-pretrain-vocab-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("corpus")).unwrap();
        for i in 0..6 {
            let text: String = (0..40)
                .map(|j| format!("Speech {i} says thing {} of {}. ", (i * 7 + j) % 13, j))
                .collect();
            std::fs::write(d.join(format!("corpus/{i}.txt")), text).unwrap();
        }
        let mut opts = PretrainOptions {
            corpus: format!("text:{}", d.join("corpus").display()),
            vocab: VocabSource::Train { vocab_size: 120 },
            val_fraction: 0.3,
            eval_examples: 8,
            seq_len: 32,
            batch: 4,
            seed: 3,
        };
        let run = d.join("run");
        let first = BertPretrainData::prepare(&opts, &run).unwrap();
        let saved = std::fs::read(run.join("tokenizer.json")).unwrap();
        let again = BertPretrainData::prepare(&opts, &run).unwrap();
        assert_eq!(std::fs::read(run.join("tokenizer.json")).unwrap(), saved);
        assert_eq!(first.train_examples(5), again.train_examples(5));
        // This corpus runs out of merges below the budget.
        let n = first.vocab_size();
        assert!((60..=120).contains(&n), "{n}");
        opts.vocab = VocabSource::Train { vocab_size: 50 };
        let e = format!(
            "{:#}",
            BertPretrainData::prepare(&opts, &run).err().unwrap()
        );
        assert!(
            e.contains(&format!("{n} tokens")) && e.contains("asks for 50"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn long_segments_are_truncated_to_seq_len() {
        let long: Vec<Document> = (0..3)
            .map(|d| {
                (0..3)
                    .map(|s| vec![(10 + d * 100 + s) as u32; 40])
                    .collect()
            })
            .collect();
        let s = PairSampler::new(long, SP, 16).unwrap();
        for i in 0..100 {
            let e = s.example(key(0, 0, i, 0));
            assert_eq!(
                e.mask.iter().sum::<i32>(),
                16,
                "filled to seq_len, no overflow"
            );
            assert_eq!(e.tokens.len(), 16);
        }
        assert!(PairSampler::new(vec![vec![vec![5]]], SP, 16)
            .err()
            .unwrap()
            .to_string()
            .contains("at least 2 documents"));
    }
}
