//! The rewritten models of `train::adapt` and `train::distill`, checked on a tiny GPT with the
//! reference interpreter: a distilled loss equals the hand-computed mix of KL and hard loss,
//! a merged LoRA model computes what the adapter model does, a fake-quantized model what
//! the post-training int8 model does, and a factored model what `U·V` does.

use std::collections::HashMap;

use graph::interp::{eval, HostTensor};
use graph::{Graph, TensorType};
use models::gpt::{Gpt, GptConfig};
use nn::{AttentionConfig, Mode, Model, ParamSpec, Params};
use train::tensor::NamedTensor;

fn cfg(layers: usize, d: usize) -> GptConfig {
    GptConfig {
        vocab_size: 13,
        seq_len: 6,
        d_model: d,
        n_layers: layers,
        n_heads: 2,
        dropout: 0.0,
        tied_head: true,
        attention: AttentionConfig::Dense,
        reversible: false,
        ff_chunks: 1,
    }
}

const B: usize = 2;

fn tokens() -> (Vec<i32>, Vec<i32>) {
    let t: Vec<i32> = (0..(B * 6) as i32).map(|i| (i * 5 + 1) % 13).collect();
    let y: Vec<i32> = (0..(B * 6) as i32).map(|i| (i * 7 + 3) % 13).collect();
    (t, y)
}

/// Random-ish values for every parameter (zeros too would hide adapters), by name.
fn values(specs: &[ParamSpec], seed: u64) -> HashMap<String, Vec<f32>> {
    specs
        .iter()
        .map(|s| {
            let mut v = s.initial_values(seed);
            if v.iter().all(|&x| x == 0.0) {
                // LoRA's B starts at zero: give it values so the adapter matters.
                let probe = ParamSpec {
                    init: nn::Init::Normal { std: 0.05 },
                    ..s.clone()
                };
                v = probe.initial_values(seed + 1);
            }
            (s.name.clone(), v)
        })
        .collect()
}

/// Evaluates `g`'s outputs with parameters from `vals` by name and data by input name: a
/// GPT's tokens/targets, or a text classifier's tokens/segments/mask (the second row padded)
/// and labels.
fn run(g: &Graph, specs: &[ParamSpec], vals: &HashMap<String, Vec<f32>>) -> Vec<Vec<f32>> {
    let (t, y) = tokens();
    let seg: Vec<i32> = (0..B * 6).map(|i| i32::from(i % 6 >= 3)).collect();
    let mask: Vec<i32> = (0..B * 6).map(|i| i32::from(i < 6 || i % 6 < 4)).collect();
    let args: Vec<HostTensor> = g
        .args()
        .iter()
        .map(|&a| {
            let ty = g.ty(a).unwrap().clone();
            if let Some(s) = specs.iter().find(|s| s.node == a) {
                return HostTensor::f32(ty.dims(), &vals[&s.name]).unwrap();
            }
            let data: &[i32] = match g.node(a).unwrap().name.as_deref() {
                Some("tokens") => &t,
                Some("targets") => &y,
                Some("segments") => &seg,
                Some("mask") => &mask,
                Some("labels") => &[2, 0],
                other => panic!("unexpected input {other:?}"),
            };
            HostTensor::i32(ty.dims(), data).unwrap()
        })
        .collect();
    eval(g, &args).unwrap().iter().map(|h| h.to_f32()).collect()
}

/// (graph with outputs [loss, logits], specs)
fn build(model: &dyn Model, mode: Mode) -> (Graph, Vec<ParamSpec>) {
    let mut g = Graph::new("t");
    let mut p = Params::new();
    let (f, logits) = model.forward_logits(&mut g, &mut p, B, mode).unwrap();
    g.set_outputs(&[f.loss, logits.unwrap()]).unwrap();
    graph::verify(&g).unwrap();
    (g, p.specs)
}

fn log_softmax(x: &[f32], t: f64) -> Vec<f64> {
    let z: Vec<f64> = x.iter().map(|&v| v as f64 / t).collect();
    let m = z.iter().cloned().fold(f64::MIN, f64::max);
    let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    z.iter().map(|v| v - lse).collect()
}

#[test]
fn distilled_loss_is_alpha_t2_kl_plus_hard_loss() {
    let (temp, alpha) = (2.0, 0.7);
    let d = train::distill::Distill {
        student: Box::new(Gpt(cfg(1, 8))),
        teacher: Box::new(Gpt(cfg(2, 16))),
        temperature: temp,
        alpha,
    };
    let (g, specs) = build(&d, Mode::Train);
    // The teacher's parameters sit under `teacher.` and are frozen by the groups.
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"teacher.h1.attn.qkv.w"), "{names:?}");
    let r = train::groups::ParamGroups::default()
        .resolve(&names)
        .unwrap();
    for (n, t) in names.iter().zip(&r.trainable) {
        assert_eq!(*t, !n.starts_with("teacher."), "{n}");
    }
    let vals = values(&specs, 5);
    let got = run(&g, &specs, &vals)[0][0] as f64;
    // The two models alone, on the same values.
    let (sg, ss) = build(&Gpt(cfg(1, 8)), Mode::Train);
    let (tg, ts) = build(&Gpt(cfg(2, 16)), Mode::Train);
    let t_vals: HashMap<String, Vec<f32>> = ts
        .iter()
        .map(|s| (s.name.clone(), vals[&format!("teacher.{}", s.name)].clone()))
        .collect();
    let s_out = run(&sg, &ss, &vals);
    let t_out = run(&tg, &ts, &t_vals);
    let (_, y) = tokens();
    let v = 13;
    let (mut kl, mut ce) = (0.0, 0.0);
    for pos in 0..B * 6 {
        let s = &s_out[1][pos * v..(pos + 1) * v];
        let t = &t_out[1][pos * v..(pos + 1) * v];
        let (ls, lt) = (log_softmax(s, temp), log_softmax(t, temp));
        kl += lt
            .iter()
            .zip(&ls)
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
        ce -= log_softmax(s, 1.0)[y[pos] as usize];
    }
    let n = (B * 6) as f64;
    let want = alpha * temp * temp * kl / n + (1.0 - alpha) * ce / n;
    assert!(kl / n > 1e-4, "the models differ: KL {}", kl / n);
    assert!(
        (ce / n - s_out[0][0] as f64).abs() < 1e-4,
        "hard loss is the student's"
    );
    assert!(
        (got - want).abs() < 1e-4,
        "distilled loss {got} vs hand-computed {want}"
    );
    // Evaluation runs the student alone.
    let (eg, es) = build(&d, Mode::Eval);
    assert!(es.iter().all(|s| !s.name.starts_with("teacher.")));
    let e = run(&eg, &es, &vals);
    assert_eq!(e[0], s_out[0]);
}

fn lora_cfg(rank: usize, targets: &[&str]) -> train::adapt::LoraConfig {
    train::adapt::LoraConfig {
        rank,
        alpha: 8.0,
        targets: targets.iter().map(|s| s.to_string()).collect(),
        modules_to_save: Vec::new(),
    }
}

#[test]
fn merged_lora_model_computes_the_adapter_model() {
    let lora = train::adapt::Lora {
        inner: Box::new(Gpt(cfg(2, 8))),
        cfg: lora_cfg(2, &[r"h\d+\.attn", r"h\d+\.mlp\.fc"]),
    };
    let (g, specs) = build(&lora, Mode::Eval);
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for n in [
        "h0.attn.qkv.w.lora_a",
        "h1.attn.proj.w.lora_b",
        "h1.mlp.fc.w.lora_a",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("h0.mlp.proj.w.lora")));
    let vals = values(&specs, 9);
    let adapted = run(&g, &specs, &vals);
    let tensors: Vec<NamedTensor> = specs
        .iter()
        .map(|s| NamedTensor {
            name: s.name.clone(),
            dims: s.ty.dims().to_vec(),
            data: vals[&s.name].clone(),
        })
        .collect();
    let (merged, n) = train::adapt::merge_lora(&tensors, lora.cfg.scale()).unwrap();
    assert_eq!(n, 6, "qkv, proj and fc of two blocks");
    let merged: HashMap<String, Vec<f32>> = merged.into_iter().map(|t| (t.name, t.data)).collect();
    let (pg, ps) = build(&Gpt(cfg(2, 8)), Mode::Eval);
    assert_eq!(merged.len(), ps.len());
    let plain = run(&pg, &ps, &merged);
    let base = run(&pg, &ps, &vals);
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(max_diff(&plain[1], &adapted[1]) < 1e-5, "merged = adapted");
    assert!(
        max_diff(&base[1], &adapted[1]) > 1e-3,
        "the adapters matter"
    );
}

#[test]
fn lora_trains_under_five_percent_of_gpt_tiny() {
    // configs/gpt-tiny.toml's shape.
    let c = GptConfig {
        vocab_size: 256,
        seq_len: 128,
        d_model: 128,
        n_layers: 2,
        n_heads: 4,
        ..cfg(2, 8)
    };
    let lora = train::adapt::Lora {
        inner: Box::new(Gpt(c)),
        cfg: lora_cfg(4, &[r"h\d+\.attn", r"h\d+\.mlp\.fc"]),
    };
    let mut g = Graph::new("t");
    let mut p = Params::new();
    lora.forward(&mut g, &mut p, 1, Mode::Eval).unwrap();
    let names: Vec<&str> = p.specs.iter().map(|s| s.name.as_str()).collect();
    let groups = train::groups::ParamGroups {
        train_only: vec![train::adapt::ADAPTER_PATTERN.into()],
        ..Default::default()
    };
    let r = groups.resolve(&names).unwrap();
    let total: usize = p.specs.iter().map(|s| s.count()).sum();
    let trained: usize = p
        .specs
        .iter()
        .zip(&r.trainable)
        .filter(|(_, &t)| t)
        .map(|(s, _)| s.count())
        .sum();
    assert!(r
        .trainable
        .iter()
        .zip(&names)
        .all(|(&t, n)| t == n.contains(".lora_")));
    let share = trained as f64 / total as f64;
    assert!(share < 0.05 && share > 0.01, "trainable share {share}");
}

#[test]
fn fake_quantized_model_computes_the_int8_model_and_passes_gradients_straight() {
    let qat = train::adapt::Qat(Box::new(Gpt(cfg(1, 32))));
    let (g, specs) = build(&qat, Mode::Eval);
    let vals = values(&specs, 3);
    let fake = run(&g, &specs, &vals);
    // Post-training quantization of the same values on the host, run as f32.
    let (pg, ps) = build(&Gpt(cfg(1, 32)), Mode::Eval);
    let mut quantized = 0;
    let deq: HashMap<String, Vec<f32>> = ps
        .iter()
        .map(|s| {
            let v = vals[&s.name].clone();
            if !train::compress::quantize::is_quantizable(s) {
                return (s.name.clone(), v);
            }
            quantized += 1;
            let axes = graph::passes::quantize::output_channel_axes(&pg, s.node).unwrap();
            let q = train::compress::quantize::quantize(&v, s.ty.dims(), &axes);
            let d = train::compress::quantize::dequantize(&q, s.ty.dims());
            (s.name.clone(), d)
        })
        .collect();
    assert!(quantized >= 4, "{quantized}");
    let ptq = run(&pg, &ps, &deq);
    let f32_out = run(&pg, &ps, &vals);
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(
        max_diff(&fake[1], &ptq[1]) < 1e-5,
        "fake-quant = int8 model"
    );
    assert!(
        max_diff(&f32_out[1], &ptq[1]) > 1e-5,
        "quantization changes something"
    );

    // Straight through: d/dw sum(c · fq(w)) = c.
    let mut g = Graph::new("ste");
    let w = g.parameter("w", TensorType::f32([3, 4])).unwrap();
    let c = g.input("c", TensorType::f32([3, 4])).unwrap();
    let fq = train::adapt::fake_quant_ste(&mut g, w, &[1]).unwrap();
    let prod = g.mul(fq, c).unwrap();
    let l = g.reduce_sum(prod, &[0, 1]).unwrap();
    let (mut gg, grads) = graph::autodiff::grad(&g, l, &[w]).unwrap();
    gg.set_outputs(&[fq, grads[0]]).unwrap();
    let wv: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
    let cv: Vec<f32> = (0..12).map(|i| i as f32 - 4.5).collect();
    let out = eval(
        &gg,
        &[
            HostTensor::f32(&[3, 4], &wv).unwrap(),
            HostTensor::f32(&[3, 4], &cv).unwrap(),
        ],
    )
    .unwrap();
    assert_eq!(out[1].to_f32(), cv, "the gradient passes straight through");
    let q = train::compress::quantize::quantize(&wv, &[3, 4], &[1]);
    let want = train::compress::quantize::dequantize(&q, &[3, 4]);
    assert!(max_diff(&out[0].to_f32(), &want) < 1e-6);
}

#[test]
fn factored_model_computes_u_times_v_and_trains_the_factors() {
    let names = ["h0.attn.qkv.w".to_string(), "h0.mlp.fc.w".to_string()];
    let fac = train::adapt::Factored {
        inner: Box::new(Gpt(cfg(1, 8))),
        ranks: names.iter().map(|n| (n.clone(), 3)).collect(),
    };
    let (g, specs) = build(&fac, Mode::Train);
    let have: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert!(have.contains(&"h0.attn.qkv.w.u") && have.contains(&"h0.mlp.fc.w.v"));
    assert!(!have.contains(&"h0.attn.qkv.w"));
    let vals = values(&specs, 4);
    let got = run(&g, &specs, &vals);
    let (pg, ps) = build(&Gpt(cfg(1, 8)), Mode::Train);
    let full: HashMap<String, Vec<f32>> = ps
        .iter()
        .map(|s| {
            if !names.contains(&s.name) {
                return (s.name.clone(), vals[&s.name].clone());
            }
            let (rows, cols) = (s.ty.dims()[0] as usize, s.count() / s.ty.dims()[0] as usize);
            let u = &vals[&format!("{}.u", s.name)];
            let v = &vals[&format!("{}.v", s.name)];
            let w = (0..rows * cols)
                .map(|k| {
                    (0..3)
                        .map(|r| u[k / cols * 3 + r] * v[r * cols + k % cols])
                        .sum()
                })
                .collect();
            (s.name.clone(), w)
        })
        .collect();
    let want = run(&pg, &ps, &full);
    for (a, b) in got[1].iter().zip(&want[1]) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    assert!((got[0][0] - want[0][0]).abs() < 1e-5);
}

fn bert_classifier(layers: usize, d: usize) -> models::heads::Classifier<models::bert::Bert> {
    let json = format!(
        r#"{{"vocab_size": 13, "hidden_size": {d}, "num_hidden_layers": {layers},
            "num_attention_heads": 2, "intermediate_size": {}, "max_position_embeddings": 6,
            "type_vocab_size": 2, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0}}"#,
        2 * d
    );
    models::heads::Classifier {
        encoder: models::bert::Bert(models::bert::BertConfig::from_hf_json(&json, 6).unwrap()),
        classes: 3,
        pooling: models::heads::Pooling::Pooled,
        dropout: 0.0,
    }
}

#[test]
fn distilled_bert_classifier_loss_is_the_hand_computed_mix() {
    let (temp, alpha) = (3.0, 0.4);
    let d = train::distill::Distill {
        student: Box::new(bert_classifier(1, 8)),
        teacher: Box::new(bert_classifier(2, 16)),
        temperature: temp,
        alpha,
    };
    let (g, specs) = build(&d, Mode::Train);
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.iter().any(|n| n.starts_with("teacher.head.")),
        "{names:?}"
    );
    let vals = values(&specs, 7);
    let got = run(&g, &specs, &vals)[0][0] as f64;
    let (sg, ss) = build(&bert_classifier(1, 8), Mode::Train);
    let (tg, ts) = build(&bert_classifier(2, 16), Mode::Train);
    let t_vals: HashMap<String, Vec<f32>> = ts
        .iter()
        .map(|s| (s.name.clone(), vals[&format!("teacher.{}", s.name)].clone()))
        .collect();
    let s_out = run(&sg, &ss, &vals);
    let t_out = run(&tg, &ts, &t_vals);
    let labels = [2usize, 0];
    let (mut kl, mut ce) = (0.0, 0.0);
    for (row, &label) in labels.iter().enumerate() {
        let s = &s_out[1][row * 3..(row + 1) * 3];
        let t = &t_out[1][row * 3..(row + 1) * 3];
        let (ls, lt) = (log_softmax(s, temp), log_softmax(t, temp));
        kl += lt
            .iter()
            .zip(&ls)
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
        ce -= log_softmax(s, 1.0)[label];
    }
    let n = B as f64;
    let want = alpha * temp * temp * kl / n + (1.0 - alpha) * ce / n;
    assert!(kl / n > 1e-6, "the models differ: KL {}", kl / n);
    assert!((ce / n - s_out[0][0] as f64).abs() < 1e-4);
    assert!(
        (got - want).abs() < 1e-4,
        "distilled loss {got} vs hand-computed {want}"
    );
}

#[test]
fn lora_on_a_bert_classifier_trains_the_adapters_and_the_head() {
    let lora = train::adapt::Lora {
        inner: Box::new(bert_classifier(2, 8)),
        cfg: train::adapt::LoraConfig {
            modules_to_save: vec!["head".into()],
            ..lora_cfg(2, &[r"h\d+\.attn"])
        },
    };
    let mut g = Graph::new("t");
    let mut p = Params::new();
    lora.forward(&mut g, &mut p, 1, Mode::Eval).unwrap();
    let names: Vec<&str> = p.specs.iter().map(|s| s.name.as_str()).collect();
    let groups = train::groups::ParamGroups {
        train_only: lora.cfg.train_only(),
        ..Default::default()
    };
    let r = groups.resolve(&names).unwrap();
    assert!(names.iter().any(|n| n.starts_with("head.")), "{names:?}");
    assert!(names
        .iter()
        .any(|n| n.starts_with("h1.attn") && n.ends_with(".lora_b")));
    for (&t, n) in r.trainable.iter().zip(&names) {
        assert_eq!(t, n.contains(".lora_") || n.starts_with("head."), "{n}");
    }
    // A pattern that matches nothing is an error, not a silently frozen head.
    let typo = train::groups::ParamGroups {
        train_only: vec![train::adapt::ADAPTER_PATTERN.into(), "heads".into()],
        ..Default::default()
    };
    let e = typo.resolve(&names).unwrap_err().to_string();
    assert!(e.contains("`heads` matches no parameter"), "{e}");
}
