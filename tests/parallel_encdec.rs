//! The encoder–decoder's sharded training on 4 virtual CPU devices gives the single-device
//! losses and parameters (the tolerances tests/parallel.rs uses for GPT): data parallelism
//! and data x tensor (heads of self- and cross-attention, MLP hidden and vocabulary split);
//! padded sources and targets, dropout off.

mod common;
use common::{assert_close, bytes_of};

use data::HostArray;
use models::encdec::{EncDec, EncDecConfig, Positions};
use train::parallel::{ParallelConfig, Plan};
use train::state::TrainState;
use train::step::Passes;

const B: usize = 8;
const S: usize = 12;
const T: usize = 8;
const V: usize = 64;
const STEPS: usize = 20;

fn model() -> EncDec {
    EncDec(EncDecConfig {
        vocab_size: V,
        src_len: S,
        tgt_len: T,
        d_model: 32,
        n_heads: 4,
        enc_layers: 2,
        dec_layers: 2,
        d_ff: 0,
        dropout: 0.0,
        shared_embeddings: true,
        tied_head: true,
        post_ln: false,
        positions: Positions::Learned,
        label_smoothing: 0.1,
        pad_id: 0,
        attention: Default::default(),
    })
}

/// A learnable task with padding on both sides: row r's source is `len` tokens (the rest
/// padding), its target the source's first `len - 2` tokens reversed, then padding.
fn batch(step: usize) -> Vec<HostArray> {
    let (mut src, mut tgt_in, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..B {
        let len = 4 + (r * 3 + step) % (S - 3);
        let row: Vec<i32> = (0..S)
            .map(|i| match i < len {
                true => 1 + ((i * 7 + r * 5 + step * 11) % (V - 1)) as i32,
                false => 0,
            })
            .collect();
        let mut y: Vec<i32> = row[..(len - 2).min(T)].iter().rev().copied().collect();
        y.resize(T, 0);
        let mut x = vec![0];
        x.extend_from_slice(&y[..T - 1]);
        src.extend(row);
        tgt_in.extend(x);
        targets.extend(y);
    }
    let i32s = |data: Vec<i32>, cols: usize| HostArray::I32 {
        data,
        dims: vec![B as i64, cols as i64],
    };
    vec![i32s(src, S), i32s(tgt_in, T), i32s(targets, T)]
}

/// The losses, final state and parameter names of training under `parallel`.
fn train(
    client: &runtime::Client,
    parallel: ParallelConfig,
) -> (Vec<f32>, TrainState, Vec<String>) {
    let passes = Passes {
        parallel: Plan::from_config(&parallel).unwrap(),
        ..Default::default()
    };
    let (losses, st, c) = common::train_steps(client, &model(), B, &passes, 3, STEPS, batch);
    let names = c.prog.params.iter().map(|p| p.name.clone()).collect();
    (losses, st, names)
}

/// Every parameter within 1e-3 of its largest single-device value. A key bias is left out:
/// softmax ignores it (it adds the same q·b to every key's score), so its gradient is rounding
/// noise that Adam scales up to steps of random sign; it must only stay near zero.
fn assert_same_params(what: &str, names: &[String], st: &TrainState, one: &TrainState) {
    for ((name, a), b) in names.iter().zip(&st.params).zip(&one.params) {
        let (a, b) = (a.to_host::<f32>().unwrap(), b.to_host::<f32>().unwrap());
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        if name.ends_with(".k.b") {
            assert!(scale < 1e-3, "{what}: {name} moved to {scale}");
            continue;
        }
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff <= 1e-3 * scale.max(1e-3),
            "{what}: {name} differs by {diff} (scale {scale})"
        );
    }
}

#[test]
fn sharded_encdec_training_matches_one_device() {
    let client = runtime::provision::cpu_client(4).unwrap();
    let (one, st1, names) = train(&client, ParallelConfig::default());
    assert!(one[STEPS - 1] < one[0] - 0.3, "training learns: {one:?}");
    let replicated = st1.param_bytes_per_device();

    let (data4, st, _) = train(
        &client,
        ParallelConfig {
            data: 4,
            ..Default::default()
        },
    );
    assert_close("data=4", &data4, &one, 1e-4);
    assert_same_params("data=4", &names, &st, &st1);
    assert_eq!(st.param_bytes_per_device(), replicated);

    let (dt, st, _) = train(
        &client,
        ParallelConfig {
            data: 2,
            tensor: 2,
            ..Default::default()
        },
    );
    assert_close("data=2 x tensor=2", &dt, &one, 1e-4);
    assert_same_params("data=2 x tensor=2", &names, &st, &st1);
    // Heads (self- and cross-attention), MLP hidden and vocabulary are split in two;
    // norms and positions stay whole.
    for name in [
        "enc0.attn.qkv.w",
        "enc1.attn.proj.w",
        "dec0.attn.qkv.w",
        "dec0.cross.q.w",
        "dec1.cross.k.w",
        "dec1.cross.v.b",
        "dec1.cross.proj.w",
        "dec0.mlp.fc.w",
        "enc1.mlp.proj.w",
        "embed",
    ] {
        assert_eq!(
            2 * bytes_of(&st, &names, name),
            bytes_of(&st1, &names, name),
            "{name} is halved by tensor=2"
        );
    }
    for name in ["dec0.ln2.g", "tgt_pos", "enc_ln.g"] {
        assert_eq!(
            bytes_of(&st, &names, name),
            bytes_of(&st1, &names, name),
            "{name} stays whole"
        );
    }
}
