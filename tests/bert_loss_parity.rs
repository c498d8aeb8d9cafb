//! BERT's pretraining loss and gradients equal HF transformers' `BertForPreTraining` on the
//! same weights and batch. tests/fixtures/bert_pretraining/ holds rxla's own init of a small
//! BERT exported to HF layout (`config.json`, `model.safetensors`, written by the ignored test
//! below through `rxla::export::to_hf`), one batch (`batch.json`: padded rows, MLM targets,
//! both NSP labels) and `reference.json`: the MLM + NSP loss and the gradients of named tensors
//! that scripts/bert_pretraining_reference.py computed with transformers. This test needs no
//! Python:
//!
//!   cargo test --release --test bert_loss_parity -- --ignored write_inputs   # weights, batch
//!   /work/venv-ref/bin/python scripts/bert_pretraining_reference.py tests/fixtures/bert_pretraining

use std::path::{Path, PathBuf};

use graph::{Graph, NodeId};
use models::bert::{Bert, BertConfig, IGNORE};
use models::{Mode, Model, Params};
use serde_json::{json, Value};
use train::tensor::NamedTensor;

const B: usize = 4;
const T: usize = 16;
const SEED: u64 = 7;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert_pretraining")
}

fn config() -> BertConfig {
    BertConfig::from_hf_json(
        r#"{"vocab_size": 96, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 64,
            "max_position_embeddings": 24, "type_vocab_size": 2,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}"#,
        T,
    )
    .unwrap()
}

/// The model's graph in eval mode (no dropout) and its parameters.
fn forward() -> (Graph, Params, models::Forward) {
    let mut g = Graph::new("bert_pretraining");
    let mut p = Params::new();
    let f = Bert(config())
        .forward(&mut g, &mut p, B, Mode::Eval)
        .unwrap();
    (g, p, f)
}

/// Writes rxla's init (seed SEED) in HF layout and the batch. Run once to (re)make the
/// fixture, then run the Python script on the directory.
#[test]
#[ignore = "writes the fixture's inputs (see the module docs)"]
fn write_inputs() {
    let (_, p, _) = forward();
    let params: Vec<NamedTensor> = p
        .specs
        .iter()
        .map(|s| NamedTensor {
            name: s.name.clone(),
            dims: s.ty.dims().to_vec(),
            data: s.initial_values(SEED),
        })
        .collect();
    let d = dir();
    std::fs::create_dir_all(&d).unwrap();
    train::tensor::write(
        &d.join("model.safetensors"),
        &rxla::export::to_hf(&params).unwrap(),
    )
    .unwrap();
    files::write_json_atomic(
        &d.join("config.json"),
        &rxla::export::hf_config(&config(), true).unwrap(),
    )
    .unwrap();
    // Row r has T - 3r real tokens ([CLS] a [SEP] b [SEP]); about every 5th non-special
    // token is an MLM target (its input replaced by [MASK] = 3 mostly, kept or random else).
    let (mut tok, mut seg, mut mask, mut mlm) = (vec![], vec![], vec![], vec![]);
    let v = config().vocab_size;
    for r in 0..B {
        let real = T - 3 * r;
        let sep1 = real / 2;
        let (mut rt, mut rs, mut rm, mut rl) = (vec![], vec![], vec![], vec![]);
        for t in 0..T {
            let special = t == 0 || t == sep1 || t + 1 == real;
            let id = if t >= real {
                0
            } else if t == 0 {
                1
            } else if special {
                2
            } else {
                (5 + (r * 37 + t * 11) % (v - 5)) as i32
            };
            let target = t < real && !special && (r * 3 + t * 7) % 5 == 0;
            let input = match (target, (r + t) % 10) {
                (true, 0) => id,
                (true, 1) => (5 + (id as usize * 13) % (v - 5)) as i32,
                (true, _) => 3,
                (false, _) => id,
            };
            rt.push(input);
            rs.push(i32::from(t < real && t > sep1));
            rm.push(i32::from(t < real));
            rl.push(if target { id } else { IGNORE });
        }
        tok.push(rt);
        seg.push(rs);
        mask.push(rm);
        mlm.push(rl);
    }
    let nsp: Vec<i32> = (0..B).map(|r| (r % 2) as i32).collect();
    let batch = json!({
        "input_ids": tok, "token_type_ids": seg, "attention_mask": mask,
        "labels": mlm, "next_sentence_label": nsp,
    });
    files::write_json_atomic(&d.join("batch.json"), &batch).unwrap();
}

fn read(name: &str) -> Value {
    let p = dir().join(name);
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (see tests/bert_loss_parity.rs)", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn ints(v: &Value) -> Vec<i32> {
    match v {
        Value::Array(a) => a.iter().flat_map(ints).collect(),
        x => vec![x.as_i64().unwrap() as i32],
    }
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(floats).collect(),
        x => vec![x.as_f64().unwrap() as f32],
    }
}

#[test]
fn pretraining_loss_and_gradients_match_transformers() {
    let reference = read("reference.json");
    let batch = read("batch.json");
    let (g, p, f) = forward();
    let loaded = rxla::pretrained::bert::load_weights(&dir(), &p.specs).unwrap();
    assert!(
        loaded.report.missing.is_empty() && loaded.report.unexpected.is_empty(),
        "{}",
        loaded.report
    );
    let nodes: Vec<NodeId> = p.specs.iter().map(|s| s.node).collect();
    let (mut g2, grads) = graph::autodiff::grad(&g, f.loss, &nodes).unwrap();
    let parts: Vec<NodeId> = f.per_example.iter().map(|(_, n)| *n).collect();
    g2.set_outputs(&[&[f.loss][..], &parts, &grads].concat())
        .unwrap();
    let client = runtime::provision::cpu_client(1).unwrap();
    let (_, exe) = train::exec::compile(
        &client,
        &g2,
        &Default::default(),
        &runtime::CompileOptions::default(),
    )
    .unwrap();
    let dims = [B as i64, T as i64];
    let data: Vec<runtime::Buffer> = [
        ("input_ids", &dims[..]),
        ("token_type_ids", &dims),
        ("attention_mask", &dims),
        ("labels", &dims),
        ("next_sentence_label", &dims[..1]),
    ]
    .iter()
    .map(|(k, d)| client.buffer_from_host(&ints(&batch[k]), d, 0).unwrap())
    .collect();
    let mut weights = Vec::new();
    for t in &loaded.tensors {
        let t = t.as_ref().unwrap();
        weights.push(
            client
                .buffer_from_host(&t.data.to_f32(), &t.dims, 0)
                .unwrap(),
        );
    }
    let args: Vec<&runtime::Buffer> = g2
        .args()
        .iter()
        .map(|a| match f.inputs.iter().position(|x| x == a) {
            Some(i) => &data[i],
            None => &weights[nodes.iter().position(|x| x == a).unwrap()],
        })
        .collect();
    let out = exe.execute1(&args).unwrap();
    let host = |i: usize| out[i].to_host::<f32>().unwrap();

    // The loss: MLM (mean over the batch's targets) + NSP (mean over rows).
    let loss = host(0)[0] as f64;
    let want = reference["loss"].as_f64().unwrap();
    let rel = (loss - want).abs() / want.abs();
    eprintln!("loss: rxla {loss:.7}, transformers {want:.7}, relative difference {rel:.1e}");
    assert!(
        rel <= 1e-5,
        "loss {loss} vs transformers {want}: {rel:e} relative"
    );
    // The NSP part alone: rxla's per-row NSP losses' mean.
    let nsp = host(1 + 2);
    let nsp = nsp.iter().map(|&x| x as f64).sum::<f64>() / nsp.len() as f64;
    let want_nsp = reference["nsp_loss"].as_f64().unwrap();
    assert!(
        (nsp - want_nsp).abs() <= 1e-5 * want_nsp,
        "NSP loss {nsp} vs transformers {want_nsp}"
    );
    let (mlm, want_mlm) = (loss - nsp, reference["mlm_loss"].as_f64().unwrap());
    assert!(
        (mlm - want_mlm).abs() <= 1e-5 * want_mlm,
        "MLM loss {mlm} vs transformers {want_mlm}"
    );

    // The gradients, in HF layout through the export's own name map and transposes.
    let named: Vec<NamedTensor> = p
        .specs
        .iter()
        .enumerate()
        .map(|(i, s)| NamedTensor {
            name: s.name.clone(),
            dims: s.ty.dims().to_vec(),
            data: host(1 + parts.len() + i),
        })
        .collect();
    let hf = rxla::export::to_hf(&named).unwrap();
    let want = reference["grads"].as_object().unwrap();
    assert!(want.len() >= 5, "the fixture names a few tensors");
    for (name, w) in want {
        let t = hf
            .iter()
            .find(|t| &t.name == name)
            .unwrap_or_else(|| panic!("rxla has no gradient for {name}"));
        let (got, w) = (t.data.to_f32(), floats(w));
        assert_eq!(got.len(), w.len(), "{name}: size");
        // Relative to the tensor's largest reference entry, element by element, and as a whole.
        let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = got
            .iter()
            .zip(&w)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let diff: f32 = got.iter().zip(&w).map(|(a, b)| (a - b).powi(2)).sum();
        let norm: f32 = w.iter().map(|b| b * b).sum();
        let rel_norm = (diff / norm).sqrt();
        eprintln!(
            "{name}: max |Δ| {worst:.1e} (largest |grad| {scale:.1e}), ‖Δ‖/‖grad‖ {rel_norm:.1e}"
        );
        assert!(scale > 0.0, "{name}: the reference gradient is zero");
        assert!(
            worst <= 1e-4 * scale,
            "{name}: max |Δ| {worst} vs scale {scale}"
        );
        assert!(rel_norm <= 1e-4, "{name}: ‖Δ‖/‖grad‖ {rel_norm}");
    }
}
