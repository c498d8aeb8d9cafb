//! `rxla export --run DIR --format hf --out DIR2`: a BERT run's newest checkpoint in HF layout
//! (`config.json`, `model.safetensors`, tokenizer files), which `transformers` loads as
//! `BertForPreTraining` (or `BertModel`) unchanged. The inverse of `pretrained::bert::hf_map`:
//! our `(in, out..)` linears become torch's `(out, in)`, per-head `(D, H, hd)` projections flat
//! `(D, D)`; the MLM decoder is left out (HF ties it to the word embeddings).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use models::bert::BertConfig;
use train::tensor::{NamedTensor, Tensor, TensorData};

/// The export formats `--format` takes.
pub const FORMATS: &[&str] = &["hf"];

/// What an export wrote.
#[derive(Debug)]
pub struct Exported {
    pub dir: PathBuf,
    pub step: usize,
    pub tensors: usize,
}

/// Our BERT parameter `name` `(dims)` as the HF tensor it is saved as: its name, and whether
/// it is transposed (read as rows = `dims[0]`, columns = the rest).
fn hf_name(name: &str, prefix: &str) -> Option<(String, bool)> {
    let emb = |s: &str| Some((format!("{prefix}embeddings.{s}"), false));
    let norm = |base: &str, leaf: &str| match leaf {
        "g" => Some((format!("{base}.weight"), false)),
        "b" => Some((format!("{base}.bias"), false)),
        _ => None,
    };
    let linear = |base: &str, leaf: &str| match leaf {
        "w" => Some((format!("{base}.weight"), true)),
        "b" => Some((format!("{base}.bias"), false)),
        _ => None,
    };
    match name {
        "wte" => return emb("word_embeddings.weight"),
        "wpe" => return emb("position_embeddings.weight"),
        "wtt" => return emb("token_type_embeddings.weight"),
        "mlm.bias" => return Some(("cls.predictions.bias".into(), false)),
        _ => {}
    }
    let (path, leaf) = name.rsplit_once('.')?;
    match path {
        "ln_e" => return norm(&format!("{prefix}embeddings.LayerNorm"), leaf),
        "pooler" => return linear(&format!("{prefix}pooler.dense"), leaf),
        "mlm.fc" => return linear("cls.predictions.transform.dense", leaf),
        "mlm.ln" => return norm("cls.predictions.transform.LayerNorm", leaf),
        "nsp" => return linear("cls.seq_relationship", leaf),
        _ => {}
    }
    let (layer, rest) = path.strip_prefix('h')?.split_once('.')?;
    let i: usize = layer.parse().ok()?;
    let l = format!("{prefix}encoder.layer.{i}");
    match rest {
        "attn.q" => linear(&format!("{l}.attention.self.query"), leaf),
        "attn.k" => linear(&format!("{l}.attention.self.key"), leaf),
        "attn.v" => linear(&format!("{l}.attention.self.value"), leaf),
        "attn.proj" => linear(&format!("{l}.attention.output.dense"), leaf),
        "ln1" => norm(&format!("{l}.attention.output.LayerNorm"), leaf),
        "mlp.fc" => linear(&format!("{l}.intermediate.dense"), leaf),
        "mlp.proj" => linear(&format!("{l}.output.dense"), leaf),
        "ln2" => norm(&format!("{l}.output.LayerNorm"), leaf),
        _ => None,
    }
}

/// BERT parameters (our names) as HF tensors. With the pretraining heads present the names
/// take `BertForPreTraining`'s `bert.` prefix; without, `BertModel`'s bare ones.
pub fn to_hf(params: &[NamedTensor]) -> Result<Vec<Tensor>> {
    let heads = params.iter().any(|p| p.name.starts_with("mlm."));
    let prefix = if heads { "bert." } else { "" };
    params
        .iter()
        .map(|p| {
            let (name, transpose) = hf_name(&p.name, prefix).ok_or_else(|| {
                anyhow!(
                    "parameter `{}` has no place in HF's BERT layout: is this a BERT run?",
                    p.name
                )
            })?;
            let rows = *p.dims.first().unwrap_or(&1);
            let cols: i64 = p.dims.iter().skip(1).product();
            let (dims, data) = if transpose {
                let d = TensorData::F32(p.data.clone()).permute(&[rows, cols], &[1, 0]);
                (vec![cols, rows], d)
            } else if name.ends_with(".bias") {
                // Per-head biases (H, hd) are flat in HF.
                (
                    vec![p.dims.iter().product()],
                    TensorData::F32(p.data.clone()),
                )
            } else {
                (p.dims.clone(), TensorData::F32(p.data.clone()))
            };
            Tensor::new(name, dims, data)
        })
        .collect()
}

/// HF's `config.json` for `cfg` (ours has HF's keys, plus `seq_len`, which HF does not have).
pub fn hf_config(cfg: &BertConfig, heads: bool) -> Result<serde_json::Value> {
    if cfg.reversible {
        bail!(
            "model.reversible = true has pre-LayerNorm two-stream blocks, which HF's BERT \
             cannot run: export a model trained with reversible = false"
        );
    }
    let mut v = serde_json::to_value(cfg)?;
    let o = v
        .as_object_mut()
        .ok_or_else(|| anyhow!("BERT config is not an object"))?;
    o.remove("seq_len");
    let arch = if heads {
        "BertForPreTraining"
    } else {
        "BertModel"
    };
    o.insert("architectures".into(), serde_json::json!([arch]));
    o.insert("model_type".into(), "bert".into());
    o.insert("pad_token_id".into(), 0.into());
    o.insert("position_embedding_type".into(), "absolute".into());
    Ok(v)
}

/// `vocab.txt` (one token per line, in id order) from a WordPiece `tokenizer.json`.
fn vocab_txt(tokenizer_json: &[u8], path: &Path) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(tokenizer_json)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let vocab = v["model"]["vocab"]
        .as_object()
        .ok_or_else(|| anyhow!("{} has no model.vocab", path.display()))?;
    let mut tokens = vec![None; vocab.len()];
    for (tok, id) in vocab {
        let i = id
            .as_u64()
            .map(|i| i as usize)
            .filter(|&i| i < tokens.len());
        let i = i.ok_or_else(|| anyhow!("{}: bad id for `{tok}`", path.display()))?;
        tokens[i] = Some(tok.as_str());
    }
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        let t = t.ok_or_else(|| anyhow!("{}: no token with id {i}", path.display()))?;
        out.push_str(t);
        out.push('\n');
    }
    Ok(out)
}

/// Exports the newest checkpoint of BERT run `run` to `out` in HF layout (written to a temp
/// directory, then renamed into place; `out` must not exist yet).
pub fn export_hf(run: &Path, out: &Path) -> Result<Exported> {
    if out.exists() {
        bail!(
            "{} already exists: give a new --out directory (nothing was written)",
            out.display()
        );
    }
    let dir = train::checkpoint::newest(run)?;
    let ckpt = train::checkpoint::load(&dir)
        .with_context(|| format!("loading checkpoint {}", dir.display()))?;
    let cfg: crate::config::TrainConfig = serde_json::from_value(ckpt.state.config.clone())
        .with_context(|| format!("reading the config stored in {}", dir.display()))?;
    if cfg.model_kind()? != "bert" {
        bail!(
            "`rxla export --format hf` writes BERT models; {} holds a `{}` model",
            run.display(),
            cfg.model_kind()?
        );
    }
    let bert: BertConfig = cfg.model_config()?;
    let tensors = to_hf(&ckpt.params)?;
    let heads = ckpt.params.iter().any(|p| p.name.starts_with("mlm."));
    let tok_path = dir.join(data::tokenizer::TOKENIZER_FILE);
    let tok = std::fs::read(&tok_path).with_context(|| {
        format!(
            "reading {}: the checkpoint has no tokenizer to export",
            tok_path.display()
        )
    })?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = out
        .file_name()
        .ok_or_else(|| anyhow!("--out {} names no directory", out.display()))?;
    let tmp = parent.join(format!(
        ".tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let written = (|| -> Result<()> {
        train::tensor::write(&tmp.join("model.safetensors"), &tensors)?;
        files::write_json_atomic(&tmp.join("config.json"), &hf_config(&bert, heads)?)?;
        files::write_atomic(&tmp.join("tokenizer.json"), &tok)?;
        files::write_atomic(
            &tmp.join("vocab.txt"),
            vocab_txt(&tok, &tok_path)?.as_bytes(),
        )?;
        let tc = serde_json::json!({
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": true,
            "model_max_length": bert.max_position_embeddings,
        });
        files::write_json_atomic(&tmp.join("tokenizer_config.json"), &tc)?;
        std::fs::rename(&tmp, out)
            .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written?;
    Ok(Exported {
        dir: out.to_path_buf(),
        step: ckpt.state.step,
        tensors: tensors.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::Graph;
    use models::{Mode, Model, Params};

    /// Every parameter of a BERT with heads maps to a distinct HF name, and loading the
    /// export back through `hf_map` gives every parameter bit for bit.
    #[test]
    fn export_then_load_is_the_identity() {
        let cfg = BertConfig::from_hf_json(
            r#"{"vocab_size": 13, "hidden_size": 8, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 16,
                "max_position_embeddings": 6, "type_vocab_size": 2}"#,
            4,
        )
        .unwrap();
        let mut g = Graph::new("bert");
        let mut p = Params::new();
        models::bert::Bert(cfg.clone())
            .forward(&mut g, &mut p, 3, Mode::Train)
            .unwrap();
        let params: Vec<NamedTensor> = p
            .specs
            .iter()
            .enumerate()
            .map(|(i, s)| NamedTensor {
                name: s.name.clone(),
                dims: s.ty.dims().to_vec(),
                // Distinct values, so a transposition or a swap shows.
                data: (0..s.ty.shape.num_elements() as usize)
                    .map(|j| (i * 1000 + j) as f32)
                    .collect(),
            })
            .collect();
        let hf = to_hf(&params).unwrap();
        let mut names: Vec<&str> = hf.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), params.len());
        assert!(names.contains(&"bert.encoder.layer.1.attention.self.query.weight"));
        assert!(names.contains(&"cls.seq_relationship.weight"));
        let q = hf
            .iter()
            .find(|t| t.name == "bert.encoder.layer.0.attention.self.query.weight")
            .unwrap();
        assert_eq!(q.dims, vec![8, 8]);
        let dir = std::env::temp_dir().join(format!("rxla-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        train::tensor::write(&dir.join("model.safetensors"), &hf).unwrap();
        let loaded = crate::pretrained::bert::load_weights(&dir, &p.specs).unwrap();
        for (spec, (t, want)) in p.specs.iter().zip(loaded.tensors.iter().zip(&params)) {
            let t = t
                .as_ref()
                .unwrap_or_else(|| panic!("{} not loaded", spec.name));
            assert_eq!(t.dims, want.dims, "{}", spec.name);
            assert_eq!(t.data.to_f32(), want.data, "{}", spec.name);
        }
        let c = hf_config(&cfg, true).unwrap();
        assert_eq!(c["architectures"][0], "BertForPreTraining");
        assert!(c.get("seq_len").is_none());
        assert!(c.get("reversible").is_none());
        let back = BertConfig::from_hf_json(&c.to_string(), 4).unwrap();
        assert_eq!(back, cfg);
        // A reversible BERT has blocks HF cannot run: refused, naming the key.
        let mut rev = cfg.clone();
        rev.reversible = true;
        let e = hf_config(&rev, true).unwrap_err().to_string();
        assert!(e.contains("model.reversible"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        // A parameter that is not BERT's is named.
        let bad = NamedTensor {
            name: "h0.attn.qkv.w".into(),
            dims: vec![2],
            data: vec![0.0; 2],
        };
        let e = to_hf(&[bad]).unwrap_err().to_string();
        assert!(e.contains("h0.attn.qkv.w"), "{e}");
    }
}
