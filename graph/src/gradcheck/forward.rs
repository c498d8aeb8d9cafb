//! Forward-only cases (no gradient): integer outputs, edge semantics, and the bf16 dot layouts
//! transformer code emits. Evaluators compare them against the interpreter.

use crate::interp::HostTensor;
use crate::types::{DType, TensorType};
use crate::Graph;

/// Forward-only graphs with integer outputs or edge semantics.
pub fn forward_cases() -> Vec<(&'static str, Graph, Vec<HostTensor>)> {
    let f = |d: &[i64], v: &[f32]| HostTensor::f32(d, v).unwrap();
    let mut out = Vec::new();

    let mut g = Graph::new("argmax_ties");
    let x = g.input("x", TensorType::f32([2, 3])).unwrap();
    let a = g.argmax(x, 1).unwrap();
    g.set_outputs(&[a]).unwrap();
    out.push((
        "argmax_ties",
        g,
        vec![f(&[2, 3], &[1., 5., 5., 7., 0., 7.])],
    ));

    let mut g = Graph::new("rng_bits");
    let s = g.input("seed", TensorType::scalar(DType::U32)).unwrap();
    let b = g.rng_bits(s, 9, [3, 4]).unwrap();
    g.set_outputs(&[b]).unwrap();
    out.push(("rng_bits", g, vec![HostTensor::scalar(DType::U32, 1234.0)]));

    let mut g = Graph::new("int_ops");
    let x = g.input("x", TensorType::new(DType::I32, [4])).unwrap();
    let y = g.input("y", TensorType::new(DType::I32, [4])).unwrap();
    let q = g.div(x, y).unwrap();
    let r = g.rem(x, y).unwrap();
    let big = g.scalar(2_000_000_000.0, DType::I32).unwrap();
    let w = g.add(x, big).unwrap();
    let w = g.add(w, big).unwrap();
    let c = g.concatenate(&[q, r, w], 0).unwrap();
    g.set_outputs(&[c]).unwrap();
    let ints = |v: &[i32]| HostTensor::i32(&[4], v).unwrap();
    out.push((
        "int_ops",
        g,
        vec![ints(&[7, -7, 9, -9]), ints(&[2, 2, -4, -4])],
    ));

    let mut g = Graph::new("clamping");
    let t = g.input("t", TensorType::f32([3, 2])).unwrap();
    let ids = g.input("ids", TensorType::new(DType::I32, [2])).unwrap();
    let i = g.input("i", TensorType::scalar(DType::I32)).unwrap();
    let ga = g.gather(t, ids).unwrap();
    let z = g.scalar(0.0, DType::I32).unwrap();
    let ds = g.dynamic_slice(t, &[i, z], &[2, 2]).unwrap();
    let c = g.concatenate(&[ga, ds], 0).unwrap();
    g.set_outputs(&[c]).unwrap();
    out.push((
        "clamping",
        g,
        vec![
            f(&[3, 2], &[1., 2., 3., 4., 5., 6.]),
            HostTensor::i32(&[2], &[-1, 7]).unwrap(),
            HostTensor::scalar(DType::I32, 5.0),
        ],
    ));

    // bf16 x bf16 -> f32 dots in the layouts transformer code emits.
    for (name, ld, rd, dims) in [
        (
            "bf16_dot_matmul",
            vec![4, 8],
            vec![8, 3],
            crate::DotDims::contract(&[1], &[0]),
        ),
        (
            "bf16_dot_nt",
            vec![4, 8],
            vec![3, 8],
            crate::DotDims::contract(&[1], &[1]),
        ),
        (
            "bf16_dot_tn",
            vec![8, 4],
            vec![8, 3],
            crate::DotDims::contract(&[0], &[0]),
        ),
        (
            "bf16_dot_attention_scores",
            vec![2, 3, 4, 8],
            vec![2, 3, 5, 8],
            crate::DotDims {
                lhs_batch: vec![0, 1],
                rhs_batch: vec![0, 1],
                lhs_contract: vec![3],
                rhs_contract: vec![3],
            },
        ),
        (
            "bf16_dot_attention_values",
            vec![2, 3, 4, 5],
            vec![2, 3, 5, 8],
            crate::DotDims {
                lhs_batch: vec![0, 1],
                rhs_batch: vec![0, 1],
                lhs_contract: vec![3],
                rhs_contract: vec![2],
            },
        ),
        (
            "bf16_dot_batch_not_leading",
            vec![4, 2, 5],
            vec![5, 2, 3],
            crate::DotDims {
                lhs_batch: vec![1],
                rhs_batch: vec![1],
                lhs_contract: vec![2],
                rhs_contract: vec![0],
            },
        ),
    ] {
        let mut g = Graph::new(name);
        let a = g
            .input("a", TensorType::new(DType::BF16, ld.clone()))
            .unwrap();
        let b = g
            .input("b", TensorType::new(DType::BF16, rd.clone()))
            .unwrap();
        let y = g.dot_general(a, b, dims, Some(DType::F32)).unwrap();
        g.set_outputs(&[y]).unwrap();
        // Small integers are exact in bf16.
        let fill = |d: &[i64], k: i64| {
            let n: i64 = d.iter().product();
            let v = (0..n).map(|i| ((i * k) % 7 - 3) as f64).collect();
            HostTensor::new(TensorType::new(DType::BF16, d.to_vec()), v).unwrap()
        };
        out.push((name, g, vec![fill(&ld, 3), fill(&rd, 5)]));
    }
    out
}
