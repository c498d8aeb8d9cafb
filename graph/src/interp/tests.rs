//! Value checks of the interpreter on hand-computed examples.

use super::{eval, HostTensor};
use crate::{ConvDims, ConvParams, DType, Graph, Padding, TensorType};

fn run(g: &mut Graph, out: crate::NodeId, args: &[HostTensor]) -> HostTensor {
    g.set_outputs(&[out]).unwrap();
    crate::verify(g).unwrap();
    eval(g, args).unwrap().remove(0)
}

fn f32s(dims: &[i64], v: &[f32]) -> HostTensor {
    HostTensor::f32(dims, v).unwrap()
}

#[test]
fn dot_and_broadcast() {
    let mut g = Graph::new("t");
    let x = g.input("x", TensorType::f32([2, 3])).unwrap();
    let w = g.input("w", TensorType::f32([3, 2])).unwrap();
    let b = g.input("b", TensorType::f32([2])).unwrap();
    let y = g.dot(x, w).unwrap();
    let y = g.add(y, b).unwrap();
    let r = run(
        &mut g,
        y,
        &[
            f32s(&[2, 3], &[1., 2., 3., 4., 5., 6.]),
            f32s(&[3, 2], &[1., 0., 0., 1., 1., 1.]),
            f32s(&[2], &[10., 20.]),
        ],
    );
    assert_eq!(r.data, vec![14., 25., 20., 31.]);
}

#[test]
fn slicing_padding_concat() {
    let mut g = Graph::new("t");
    let x = g.input("x", TensorType::f32([4])).unwrap();
    let s = g.slice(x, &[1], &[4], &[2]).unwrap();
    let z = g.scalar(9.0, DType::F32).unwrap();
    let p = g.pad(s, z, &[1], &[-1], &[1]).unwrap();
    let c = g.concatenate(&[p, x], 0).unwrap();
    let r = run(&mut g, c, &[f32s(&[4], &[0., 1., 2., 3.])]);
    // slice -> [1, 3]; pad: low 1, interior 1, crop 1 at the end -> [9, 1, 9]
    assert_eq!(r.data, vec![9., 1., 9., 0., 1., 2., 3.]);
}

#[test]
fn dynamic_slices_clamp() {
    let mut g = Graph::new("t");
    let x = g.input("x", TensorType::f32([5])).unwrap();
    let i = g.input("i", TensorType::scalar(DType::I32)).unwrap();
    let d = g.dynamic_slice(x, &[i], &[2]).unwrap();
    let u = g.dynamic_update_slice(x, d, &[i]).unwrap();
    let c = g.concatenate(&[d, u], 0).unwrap();
    let r = run(
        &mut g,
        c,
        &[
            f32s(&[5], &[0., 1., 2., 3., 4.]),
            HostTensor::scalar(DType::I32, 7.0),
        ],
    );
    assert_eq!(r.data, vec![3., 4., 0., 1., 2., 3., 4.]);
}

#[test]
fn gather_scatter() {
    let mut g = Graph::new("t");
    let t = g.input("t", TensorType::f32([3, 2])).unwrap();
    let ids = g.input("ids", TensorType::new(DType::I32, [3])).unwrap();
    let e = g.gather(t, ids).unwrap();
    let z = g.zeros_like(t).unwrap();
    let s = g.scatter_add(z, ids, e).unwrap();
    let table = f32s(&[3, 2], &[1., 2., 3., 4., 5., 6.]);
    let r = run(
        &mut g,
        s,
        &[table, HostTensor::i32(&[3], &[2, 0, 2]).unwrap()],
    );
    assert_eq!(r.data, vec![1., 2., 0., 0., 10., 12.]);
}

#[test]
fn conv_matches_direct_sum() {
    // 1x3x3x1 input, 2x2 kernel of ones, VALID: sums of 2x2 blocks.
    let mut g = Graph::new("t");
    let x = g.input("x", TensorType::f32([1, 3, 3, 1])).unwrap();
    let k = g.full(1.0, TensorType::f32([2, 2, 1, 1])).unwrap();
    let y = g.conv2d(x, k, [1, 1], Padding::Valid, [1, 1]).unwrap();
    let r = run(
        &mut g,
        y,
        &[f32s(&[1, 3, 3, 1], &[1., 2., 3., 4., 5., 6., 7., 8., 9.])],
    );
    assert_eq!(r.data, vec![12., 16., 24., 28.]);
    // lhs dilation 2 (a transposed conv) with a 1x1 kernel spreads values.
    let mut g = Graph::new("t");
    let x = g.input("x", TensorType::f32([1, 2, 1, 1])).unwrap();
    let k = g.full(2.0, TensorType::f32([1, 1, 1, 1])).unwrap();
    let p = ConvParams {
        window_strides: vec![1, 1],
        padding: vec![(0, 0), (0, 0)],
        lhs_dilation: vec![2, 1],
        rhs_dilation: vec![1, 1],
        dims: ConvDims::nhwc_hwio(),
        out_dtype: None,
    };
    let y = g.conv(x, k, p).unwrap();
    let r = run(&mut g, y, &[f32s(&[1, 2, 1, 1], &[3., 5.])]);
    assert_eq!(r.data, vec![6., 0., 10.]);
}

#[test]
fn pooling_and_argmax() {
    let mut g = Graph::new("t");
    let x = g.input("x", TensorType::f32([1, 2, 2, 1])).unwrap();
    let m = g.max_pool2d(x, [2, 2], [1, 1], Padding::Same).unwrap();
    let a = g.avg_pool2d(x, [2, 2], [1, 1], Padding::Same).unwrap();
    let c = g.concatenate(&[m, a], 3).unwrap();
    let r = run(&mut g, c, &[f32s(&[1, 2, 2, 1], &[1., 4., 3., 2.])]);
    assert_eq!(r.data, vec![4., 2.5, 4., 3., 3., 2.5, 2., 2.]);
    let mut g = Graph::new("t");
    let x = g.input("x", TensorType::f32([2, 3])).unwrap();
    let a = g.argmax(x, 1).unwrap();
    let r = run(&mut g, a, &[f32s(&[2, 3], &[1., 5., 5., 7., 0., 1.])]);
    assert_eq!(r.data, vec![1., 0.]);
}

#[test]
fn scan_cumsum_forward_and_reverse() {
    for reverse in [false, true] {
        let mut g = Graph::new("t");
        let xs = g.input("xs", TensorType::f32([4, 2])).unwrap();
        let h0 = g.full(0.0, TensorType::f32([2])).unwrap();
        let out = g
            .scan(4, &[], &[h0], &[xs], reverse, |b, a| {
                let h = b.add(a.carries[0], a.xs[0])?;
                Ok((vec![h], vec![h]))
            })
            .unwrap();
        let r = run(
            &mut g,
            out.ys[0],
            &[f32s(&[4, 2], &[1., 1., 2., 2., 3., 3., 4., 4.])],
        );
        let want = if reverse {
            vec![10., 10., 9., 9., 7., 7., 4., 4.]
        } else {
            vec![1., 1., 3., 3., 6., 6., 10., 10.]
        };
        assert_eq!(r.data, want);
    }
}

fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846ca68b);
    x ^= x >> 16;
    x
}

#[test]
fn rng_matches_reference_hash() {
    let mut g = Graph::new("t");
    let seed = g.input("seed", TensorType::scalar(DType::U32)).unwrap();
    let bits = g.rng_bits(seed, 7, [2, 3]).unwrap();
    let r = run(&mut g, bits, &[HostTensor::scalar(DType::U32, 42.0)]);
    let key = lowbias32(42u32.wrapping_mul(0x9E3779B9).wrapping_add(7));
    let want: Vec<f64> = (0..6u32)
        .map(|i| lowbias32(lowbias32(i.wrapping_add(key)) ^ key) as f64)
        .collect();
    assert_eq!(r.data, want);
}

#[test]
fn uniform_and_dropout_statistics() {
    let mut g = Graph::new("t");
    let seed = g.input("seed", TensorType::scalar(DType::I32)).unwrap();
    let u = g.rng_uniform(seed, 0, [4000], DType::F32).unwrap();
    let r = run(&mut g, u, &[HostTensor::scalar(DType::I32, 3.0)]);
    let mean = r.data.iter().sum::<f64>() / 4000.0;
    assert!(r.data.iter().all(|&v| (0.0..1.0).contains(&v)));
    assert!((mean - 0.5).abs() < 0.03, "{mean}");
    let mut g = Graph::new("t");
    let seed = g.input("seed", TensorType::scalar(DType::I32)).unwrap();
    let x = g.full(1.0, TensorType::f32([4000])).unwrap();
    let d = g.dropout(x, 0.25, seed, 1).unwrap();
    let r = run(&mut g, d, &[HostTensor::scalar(DType::I32, 3.0)]);
    let kept = r.data.iter().filter(|&&v| v != 0.0).count() as f64 / 4000.0;
    assert!((kept - 0.75).abs() < 0.03, "{kept}");
    assert!(r
        .data
        .iter()
        .all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-12));
}

#[test]
fn integer_ops_wrap() {
    let mut g = Graph::new("t");
    let x = g.input("x", TensorType::scalar(DType::U32)).unwrap();
    let m = g.scalar(0x7feb352d as f64, DType::U32).unwrap();
    let y = g.mul(x, m).unwrap();
    let r = run(
        &mut g,
        y,
        &[HostTensor::scalar(DType::U32, 0xdeadbeefu32 as f64)],
    );
    assert_eq!(r.data[0], 0xdeadbeefu32.wrapping_mul(0x7feb352d) as f64);
}

#[test]
fn bad_args_are_errors() {
    let mut g = Graph::new("t");
    let x = g.input("x", TensorType::f32([2])).unwrap();
    g.set_outputs(&[x]).unwrap();
    let e = eval(&g, &[f32s(&[3], &[1., 2., 3.])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("argument 0 (x)") && e.contains("f32[2]"), "{e}");
    assert!(eval(&g, &[]).is_err());
}

#[test]
fn narrow_int_converts_saturate_from_floats_and_wrap_from_ints() {
    let x = f32s(&[6], &[0.9, -1.9, 7.5, -8.5, 300.0, f32::NAN]);
    let i = HostTensor::i32(&[4], &[7, 9, -9, 200]).unwrap();
    let want: [(DType, [f64; 6], [f64; 4]); 4] = [
        (DType::I8, [0., -1., 7., -8., 127., 0.], [7., 9., -9., -56.]),
        (DType::I4, [0., -1., 7., -8., 7., 0.], [7., -7., 7., -8.]),
        (DType::U4, [0., 0., 7., 0., 15., 0.], [7., 9., 7., 8.]),
        (DType::U8, [0., 0., 7., 0., 255., 0.], [7., 9., 247., 200.]),
    ];
    for (d, from_f, from_i) in want {
        let mut g = Graph::new("t");
        let a = g.input("x", x.ty.clone()).unwrap();
        let b = g.input("i", i.ty.clone()).unwrap();
        let qa = g.convert(a, d).unwrap();
        let qb = g.convert(b, d).unwrap();
        g.set_outputs(&[qa, qb]).unwrap();
        let r = eval(&g, &[x.clone(), i.clone()]).unwrap();
        assert_eq!(r[0].data, from_f, "f32 -> {d}");
        assert_eq!(r[1].data, from_i, "i32 -> {d}");
    }
    assert_eq!(DType::I4.int_range(), Some((-8, 7)));
    assert_eq!(DType::U4.int_range(), Some((0, 15)));
    assert_eq!(DType::I8.int_range(), Some((-128, 127)));
    assert_eq!((DType::I4.bits(), DType::I4.size_bytes()), (4, 1));
    let names: Vec<&str> = [DType::I8, DType::I4, DType::U4]
        .iter()
        .map(|d| d.mlir_name())
        .collect();
    assert_eq!(names, ["i8", "i4", "ui4"]);
}

#[test]
fn i8_dot_accumulates_in_i32() {
    let mut g = Graph::new("t");
    let a = g.input("a", TensorType::new(DType::I8, [1, 3])).unwrap();
    let b = g.input("b", TensorType::new(DType::I8, [3, 1])).unwrap();
    let y = g
        .dot_general(a, b, crate::DotDims::contract(&[1], &[0]), Some(DType::I32))
        .unwrap();
    let i8s = |d: &[i64], v: &[f64]| {
        HostTensor::new(TensorType::new(DType::I8, d.to_vec()), v.to_vec()).unwrap()
    };
    let r = run(
        &mut g,
        y,
        &[
            i8s(&[1, 3], &[127., -128., 100.]),
            i8s(&[3, 1], &[127., -128., 100.]),
        ],
    );
    assert_eq!(r.ty, TensorType::new(DType::I32, [1, 1]));
    assert_eq!(r.data, [127. * 127. + 128. * 128. + 100. * 100.]);
}
