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

    // Sort: NaN above +inf, -0.0 == 0.0, ties stable, both directions, both dims.
    let mut g = Graph::new("sort_nan_ties");
    let x = g.input("x", TensorType::f32([2, 5])).unwrap();
    let mut outs = Vec::new();
    for desc in [false, true] {
        outs.push(g.sort(x, 1, desc).unwrap());
        outs.push(g.argsort(x, 1, desc).unwrap());
        outs.push(g.argsort(x, 0, desc).unwrap());
    }
    g.set_outputs(&outs).unwrap();
    let nan = f32::NAN;
    out.push((
        "sort_nan_ties",
        g,
        vec![f(
            &[2, 5],
            &[3., nan, -0.0, 1., 0., 2., 2., -1., nan, f32::NEG_INFINITY],
        )],
    ));

    // Integer keys (signed, and unsigned through u8) with ties, payloads of both kinds.
    let mut g = Graph::new("sort_int_keys");
    let k = g.input("k", TensorType::new(DType::I32, [7])).unwrap();
    let p = g.input("p", TensorType::f32([7])).unwrap();
    let s = g.sort_with_payload(k, &[p, k], 0, true).unwrap();
    let u = g.convert(k, DType::U8).unwrap();
    let su = g.sort_with_payload(u, &[p], 0, false).unwrap();
    let su0 = g.convert(su[0], DType::I32).unwrap();
    g.set_outputs(&[s[0], s[1], s[2], su0, su[1]]).unwrap();
    out.push((
        "sort_int_keys",
        g,
        vec![
            HostTensor::i32(&[7], &[5, -3, 5, 200, -3, 0, 7]).unwrap(),
            f(&[7], &[0., 1., 2., 3., 4., 5., 6.]),
        ],
    ));

    // Converts: float -> int truncates and saturates (NaN -> 0), int -> int wraps.
    let mut g = Graph::new("convert_narrow_ints");
    let x = g.input("x", TensorType::f32([9])).unwrap();
    let i = g.input("i", TensorType::new(DType::I32, [5])).unwrap();
    let mut outs = Vec::new();
    for d in [DType::I8, DType::I4, DType::U4, DType::U8] {
        let q = g.convert(x, d).unwrap();
        outs.push(g.convert(q, DType::F32).unwrap());
        let w = g.convert(i, d).unwrap();
        outs.push(g.convert(w, DType::I32).unwrap());
    }
    // i8 arithmetic wraps too.
    let a = g.convert(i, DType::I8).unwrap();
    let a = g.add(a, a).unwrap();
    outs.push(g.convert(a, DType::I32).unwrap());
    g.set_outputs(&outs).unwrap();
    out.push((
        "convert_narrow_ints",
        g,
        vec![
            f(&[9], &[0.4, -0.6, 1.5, -1.5, 7.9, -8.7, 127.9, 300.0, nan]),
            HostTensor::i32(&[5], &[7, -9, 100, 200, -300]).unwrap(),
        ],
    ));

    // i8 x i8 -> i32: products and sums past the i8 (and i16) range; i8 across the host boundary.
    let mut g = Graph::new("i8_dot_i32");
    let a = g.input("a", TensorType::new(DType::I8, [4, 8])).unwrap();
    let b = g.input("b", TensorType::new(DType::I8, [8, 3])).unwrap();
    let y = g
        .dot_general(a, b, crate::DotDims::contract(&[1], &[0]), Some(DType::I32))
        .unwrap();
    let twice = g.add(a, a).unwrap();
    g.set_outputs(&[y, twice]).unwrap();
    let i8s = |d: &[i64], k: i64| {
        let n: i64 = d.iter().product();
        let v = (0..n).map(|i| ((i * k) % 255 - 127) as f64).collect();
        HostTensor::new(TensorType::new(DType::I8, d.to_vec()), v).unwrap()
    };
    out.push(("i8_dot_i32", g, vec![i8s(&[4, 8], 37), i8s(&[8, 3], 101)]));

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
