//! Sharded BERT training on 4 virtual CPU devices gives the single-device losses (as
//! tests/parallel.rs does for GPT): data parallelism, data x tensor, fsdp; and remat is exact,
//! bf16 close, for BERT too. Batches have padded rows, a few MLM positions and both NSP labels,
//! so every part of the loss is in.

mod common;
use common::{assert_close, bytes_of};
use data::HostArray;
use models::bert::{Bert, BertConfig, IGNORE};
use train::parallel::{ParallelConfig, Plan};
use train::state::TrainState;
use train::step::{Passes, Precision, Remat};

const B: usize = 8;
const T: usize = 16;
const V: usize = 64;
const STEPS: usize = 5;

fn bert() -> Bert {
    let c = BertConfig::from_hf_json(
        r#"{"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 64,
            "max_position_embeddings": 16}"#,
        T,
    )
    .unwrap();
    Bert(c)
}

/// Step `step`'s batch: row r has 16 - r real tokens (segment 1 from the middle), every
/// fifth real position an MLM target, NSP label alternating.
fn batch(step: usize) -> Vec<HostArray> {
    let (mut tok, mut seg, mut mask, mut mlm) = (vec![], vec![], vec![], vec![]);
    for r in 0..B {
        let real = T - r;
        for t in 0..T {
            let id = ((r * 31 + t * 7 + step * 13) % (V - 4) + 4) as i32;
            let is_real = t < real;
            tok.push(if is_real { id } else { 0 });
            seg.push(i32::from(is_real && t >= real / 2));
            mask.push(i32::from(is_real));
            mlm.push(if is_real && (t + r + step).is_multiple_of(5) {
                (id + 1) % V as i32
            } else {
                IGNORE
            });
        }
    }
    let nsp: Vec<i32> = (0..B).map(|r| ((r + step) % 2) as i32).collect();
    let bt = vec![B as i64, T as i64];
    let i32s = |data: Vec<i32>, dims: &Vec<i64>| HostArray::I32 {
        data,
        dims: dims.clone(),
    };
    vec![
        i32s(tok, &bt),
        i32s(seg, &bt),
        i32s(mask, &bt),
        i32s(mlm, &bt),
        i32s(nsp, &vec![B as i64]),
    ]
}

/// Losses of STEPS steps under `parallel`, the final state and the parameter names.
fn train(
    client: &runtime::Client,
    parallel: ParallelConfig,
) -> (Vec<f32>, TrainState, Vec<String>) {
    let passes = Passes {
        parallel: Plan::from_config(&parallel).unwrap(),
        ..Default::default()
    };
    train_with(client, &passes)
}

fn train_with(client: &runtime::Client, passes: &Passes) -> (Vec<f32>, TrainState, Vec<String>) {
    let (losses, st, c) = common::train_steps(client, &bert(), B, passes, 5, STEPS, batch);
    let names = c.prog.params.iter().map(|p| p.name.clone()).collect();
    (losses, st, names)
}

#[test]
fn sharded_bert_training_matches_one_device() {
    let client = runtime::provision::cpu_client(4).unwrap();
    let (one, st1, names) = train(&client, ParallelConfig::default());
    assert!(one[STEPS - 1] < one[0], "training learns: {one:?}");
    let replicated = st1.param_bytes_per_device();

    let data4 = ParallelConfig {
        data: 4,
        ..Default::default()
    };
    let (got, st, _) = train(&client, data4);
    assert_close("data=4", &got, &one, 1e-4);
    assert_eq!(st.param_bytes_per_device(), replicated);

    let dt = ParallelConfig {
        data: 2,
        tensor: 2,
        ..Default::default()
    };
    let (got, st, _) = train(&client, dt);
    assert_close("data=2 x tensor=2", &got, &one, 1e-4);
    // Heads, the MLP hidden dim and the vocabulary are split in two; norms stay whole.
    for name in [
        "h0.attn.q.w",
        "h1.attn.proj.w",
        "h1.mlp.fc.w",
        "h0.mlp.proj.w",
        "wte",
    ] {
        assert_eq!(
            2 * bytes_of(&st, &names, name),
            bytes_of(&st1, &names, name),
            "{name} is halved by tensor=2"
        );
    }
    assert_eq!(
        bytes_of(&st, &names, "h0.ln1.g"),
        bytes_of(&st1, &names, "h0.ln1.g")
    );

    let fsdp = ParallelConfig {
        data: 4,
        fsdp: true,
        ..Default::default()
    };
    let (got, st, _) = train(&client, fsdp);
    assert_close("fsdp over 4", &got, &one, 1e-4);
    // Everything with an embed dim (all but mlm.bias and nsp.b) is split in four.
    assert!(4 * st.param_bytes_per_device() < replicated + 4 * (V + 2) * 4);
    assert_eq!(
        4 * bytes_of(&st, &names, "wte"),
        bytes_of(&st1, &names, "wte")
    );
    // Sharded state gathers to the same parameters as one device's.
    for (a, b) in st.params.iter().zip(&st1.params) {
        let (a, b) = (a.to_host::<f32>().unwrap(), b.to_host::<f32>().unwrap());
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-3 * scale.max(1e-3), "{diff} vs scale {scale}");
    }
}

#[test]
fn remat_is_exact_and_bf16_is_close_for_bert() {
    let client = runtime::provision::cpu_client(1).unwrap();
    let (none, _, _) = train_with(&client, &Passes::default());
    for remat in [Remat::Full, Remat::SaveDots] {
        let passes = Passes {
            remat,
            ..Default::default()
        };
        let (got, _, _) = train_with(&client, &passes);
        assert_close(&format!("{remat:?}"), &got, &none, 1e-6);
    }
    let bf16 = Passes {
        precision: Precision::Bf16,
        ..Default::default()
    };
    let (got, _, _) = train_with(&client, &bf16);
    assert_close("bf16", &got, &none, 0.02);
}
