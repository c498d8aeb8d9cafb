//! HF BERT weights into our BERT: MiniLM (no MLM/NSP heads) fills the whole pretraining model
//! with the heads left at init and said so; broken checkpoints are clear errors naming the
//! tensor or file.

mod common;

use std::path::{Path, PathBuf};

use models::bert::Bert;
use models::{Mode, Model, Params};
use rxla::pretrained::bert::{config, load_weights, model_dir};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;

fn minilm() -> PathBuf {
    model_dir("all-minilm-l6-v2").unwrap()
}

fn pretraining_params(dir: &Path) -> Params {
    let mut g = graph::Graph::new("bert");
    let mut p = Params::new();
    Bert(config(dir, 16).unwrap())
        .forward(&mut g, &mut p, 2, Mode::Train)
        .unwrap();
    p
}

/// A tensor as written: name, dtype, shape, bytes.
type Raw = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// A copy of MiniLM's directory (90 MB; removed by the caller) whose weights went through
/// `edit`.
fn edited(name: &str, edit: impl Fn(&mut Vec<Raw>)) -> PathBuf {
    let src = minilm();
    let dir = common::tmp_dir(&format!("bert-weights-{name}"));
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut ts: Vec<Raw> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut ts);
    let views: Vec<(String, TensorView)> = ts
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.join("model.safetensors")).unwrap();
    dir
}

#[test]
fn minilm_fills_the_encoder_and_leaves_the_missing_heads_at_init_said_so() {
    let dir = minilm();
    let p = pretraining_params(&dir);
    let loaded = load_weights(&dir, &p.specs).unwrap();
    let r = &loaded.report;
    assert_eq!(r.loaded.len(), 103, "{r}");
    let heads = [
        "mlm.fc.w", "mlm.fc.b", "mlm.ln.g", "mlm.ln.b", "mlm.bias", "nsp.w", "nsp.b",
    ];
    assert_eq!(r.left_at_init, heads, "{r}");
    assert_eq!(r.missing, heads, "{r}");
    assert!(r.unexpected.is_empty(), "{r}");
    assert_eq!(r.dropped, ["embeddings.position_ids"], "{r}");
    let text = r.to_string();
    assert!(text.contains("`mlm.fc.w` (left at init)"), "{text}");
    // The heads' tensors are None (the caller keeps their init); the rest are the file's.
    for (s, t) in p.specs.iter().zip(&loaded.tensors) {
        assert_eq!(t.is_none(), heads.contains(&s.name.as_str()), "{}", s.name);
    }
    // Query weight: torch (out, in) -> ours (in, H, hd): ours[i][h][j] = file[h*32 + j][i].
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let q = st
        .tensor("encoder.layer.2.attention.self.query.weight")
        .unwrap();
    let file: Vec<f32> = q
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let i = p
        .specs
        .iter()
        .position(|s| s.name == "h2.attn.q.w")
        .unwrap();
    let ours = loaded.tensors[i].as_ref().unwrap().data.to_f32();
    for (inp, h, j) in [(0, 0, 0), (5, 3, 7), (383, 11, 31)] {
        assert_eq!(ours[inp * 384 + h * 32 + j], file[(h * 32 + j) * 384 + inp]);
    }
}

#[test]
fn broken_checkpoints_are_clear_errors() {
    let p = pretraining_params(&minilm());
    let err = |dir: &Path| format!("{:#}", load_weights(dir, &p.specs).unwrap_err());

    let dir = edited("shape", |ts| {
        let t = ts
            .iter_mut()
            .find(|t| t.0 == "encoder.layer.1.intermediate.dense.weight")
            .unwrap();
        t.2 = vec![384, 1536]; // transposed on disk: same count, wrong shape
    });
    let e = err(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        e.contains("encoder.layer.1.intermediate.dense.weight") && e.contains("h1.mlp.fc.w"),
        "{e}"
    );

    let dir = edited("missing", |ts| {
        ts.retain(|t| t.0 != "encoder.layer.3.output.dense.weight")
    });
    let e = err(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(e.contains("h3.mlp.proj.w") && e.contains("missing"), "{e}");

    let dir = edited("junk", |ts| ts.truncate(1));
    std::fs::write(dir.join("model.safetensors"), b"not a safetensors file").unwrap();
    let e = err(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(e.contains("model.safetensors"), "{e}");

    // A tokenizer that does not match config.json's vocabulary.
    let dir = edited("vocab", |ts| ts.truncate(1));
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), cfg.replace("30522", "30000")).unwrap();
    let e = common::rxla_err(&[
        "embed",
        "--pretrained",
        dir.to_str().unwrap(),
        "--text",
        "hi",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        e.contains("tokenizer.json") && e.contains("30522") && e.contains("30000"),
        "{e}"
    );
}
