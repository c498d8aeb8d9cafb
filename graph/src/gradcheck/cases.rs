//! One or more gradient-check cases per op, composite and loop form.

use super::{CaseBuilder, GradCase};
use crate::error::Result;
use crate::ir::NodeId;
use crate::op::{ConvDims, ConvParams, DotDims, ReduceKind, Sharding, Window};
use crate::ops::conv::Padding;
use crate::types::{DType, TensorType};

type Build = fn(&mut CaseBuilder) -> Result<NodeId>;

/// All cases; names are unique.
pub fn cases() -> Result<Vec<GradCase>> {
    let table: &[(&'static str, Build)] = &[
        // ---- unary ----
        ("neg", |b| {
            let x = b.x(&[2, 3])?;
            b.g.neg(x)
        }),
        ("exp", |b| {
            let x = b.x(&[2, 3])?;
            b.g.exp(x)
        }),
        ("sin", |b| {
            let x = b.x(&[2, 3])?;
            b.g.sin(x)
        }),
        ("log", |b| {
            let x = b.pos(&[2, 3])?;
            b.g.log(x)
        }),
        ("log1p", |b| {
            let x = b.pos(&[2, 3])?;
            b.g.log1p(x)
        }),
        ("tanh", |b| {
            let x = b.x(&[2, 3])?;
            b.g.tanh(x)
        }),
        ("logistic", |b| {
            let x = b.x(&[2, 3])?;
            b.g.logistic(x)
        }),
        ("sqrt", |b| {
            let x = b.pos(&[2, 3])?;
            b.g.sqrt(x)
        }),
        ("rsqrt", |b| {
            let x = b.pos(&[2, 3])?;
            b.g.rsqrt(x)
        }),
        ("abs", |b| {
            let x = b.x(&[2, 3])?;
            b.g.abs(x)
        }),
        ("cos", |b| {
            let x = b.x(&[2, 3])?;
            b.g.cos(x)
        }),
        ("erf", |b| {
            let x = b.x(&[2, 3])?;
            b.g.erf(x)
        }),
        ("sign", |b| {
            let x = b.x(&[2, 3])?;
            let s = b.g.sign(x)?;
            b.g.mul(s, x)
        }),
        // ---- binary ----
        ("add", |b| {
            let x = b.x(&[2, 3])?;
            let y = b.x(&[2, 3])?;
            b.g.add(x, y)
        }),
        ("sub", |b| {
            let x = b.x(&[2, 3])?;
            let y = b.x(&[2, 3])?;
            b.g.sub(x, y)
        }),
        ("mul", |b| {
            let x = b.x(&[2, 3])?;
            let y = b.x(&[2, 3])?;
            b.g.mul(x, y)
        }),
        ("div", |b| {
            let x = b.x(&[2, 3])?;
            let y = b.pos(&[2, 3])?;
            b.g.div(x, y)
        }),
        ("pow", |b| {
            let x = b.pos(&[2, 3])?;
            let y = b.x(&[2, 3])?;
            b.g.pow(x, y)
        }),
        ("max", |b| {
            let x = b.x(&[2, 3])?;
            let y = b.x(&[2, 3])?;
            b.g.max(x, y)
        }),
        ("min", |b| {
            let x = b.x(&[2, 3])?;
            let y = b.x(&[2, 3])?;
            b.g.min(x, y)
        }),
        ("rem", |b| {
            let x = b.input_in(DType::F32, &[2, 3], 2.1, 2.3)?;
            let y = b.input_in(DType::F32, &[2, 3], 0.8, 0.9)?;
            b.g.rem(x, y)
        }),
        ("add_broadcast", |b| {
            let x = b.x(&[2, 3])?;
            let y = b.x(&[3])?;
            b.g.add(x, y)
        }),
        ("mul_broadcast_size1", |b| {
            let x = b.x(&[2, 1])?;
            let y = b.x(&[1, 3])?;
            b.g.mul(x, y)
        }),
        ("compare_select", |b| {
            let x = b.x(&[2, 3])?;
            let y = b.x(&[2, 3])?;
            let p = b.g.gt(x, y)?;
            let x2 = b.g.mul(x, x)?;
            b.g.select(p, x2, y)
        }),
        ("convert", |b| {
            let x = b.x(&[2, 3])?;
            let d = b.g.convert(x, DType::F64)?;
            let d = b.g.mul(d, d)?;
            let h = b.g.convert(d, DType::F16)?;
            b.g.convert(h, DType::F32)
        }),
        // ---- shapes ----
        ("broadcast_in_dim", |b| {
            let x = b.x(&[2, 1])?;
            b.g.broadcast_in_dim(x, [2, 4, 3], &[0, 2])
        }),
        ("reshape", |b| {
            let x = b.x(&[2, 3])?;
            let r = b.g.reshape(x, [3, 2])?;
            b.g.mul(r, r)
        }),
        ("transpose", |b| {
            let x = b.x(&[2, 3, 4])?;
            b.g.transpose(x, &[2, 0, 1])
        }),
        ("reverse", |b| {
            let x = b.x(&[2, 3])?;
            b.g.reverse(x, &[1])
        }),
        ("slice", |b| {
            let x = b.x(&[5, 4])?;
            b.g.slice(x, &[1, 0], &[5, 3], &[2, 2])
        }),
        ("dynamic_slice", |b| {
            let x = b.x(&[5, 4])?;
            let i = b.ints(&[], &[2])?;
            let j = b.ints(&[], &[1])?;
            b.g.dynamic_slice(x, &[i, j], &[2, 2])
        }),
        ("dynamic_update_slice", |b| {
            let x = b.x(&[4, 3])?;
            let u = b.x(&[2, 3])?;
            let i = b.ints(&[], &[1])?;
            let j = b.ints(&[], &[0])?;
            let u2 = b.g.mul(u, u)?;
            b.g.dynamic_update_slice(x, u2, &[i, j])
        }),
        ("concatenate", |b| {
            let x = b.x(&[2, 3])?;
            let y = b.x(&[2, 1])?;
            let z = b.x(&[2, 2])?;
            b.g.concatenate(&[x, y, z], 1)
        }),
        ("pad", |b| {
            let x = b.x(&[3, 2])?;
            let v = b.x(&[])?;
            b.g.pad(x, v, &[-1, 1], &[2, 0], &[1, 1])
        }),
        ("gather", |b| {
            let t = b.x(&[4, 3])?;
            let ids = b.ints(&[2, 2], &[3, 0, 3, 1])?;
            b.g.gather(t, ids)
        }),
        ("scatter_add", |b| {
            let x = b.x(&[4, 2])?;
            let ids = b.ints(&[3], &[1, 1, 3])?;
            let u = b.x(&[3, 2])?;
            let u2 = b.g.mul(u, u)?;
            b.g.scatter_add(x, ids, u2)
        }),
        // ---- dots ----
        ("matmul", |b| {
            let x = b.x(&[2, 3])?;
            let w = b.x(&[3, 4])?;
            b.g.dot(x, w)
        }),
        ("dot_batched_matmul", |b| {
            let x = b.x(&[2, 2, 3])?;
            let w = b.x(&[2, 3, 2])?;
            b.g.matmul(x, w)
        }),
        ("dot_general_mixed_dims", |b| {
            let x = b.x(&[2, 3, 2, 2])?;
            let y = b.x(&[2, 2, 3, 3])?;
            let d = DotDims {
                lhs_batch: vec![0],
                rhs_batch: vec![1],
                lhs_contract: vec![1, 2],
                rhs_contract: vec![3, 0],
            };
            b.g.dot_general(x, y, d, None)
        }),
        ("dot_general_widened", |b| {
            let x = b.input_in(DType::F16, &[2, 3], -1.0, 1.0)?;
            let w = b.input_in(DType::F16, &[3, 2], -1.0, 1.0)?;
            b.g.dot_general(x, w, DotDims::contract(&[1], &[0]), Some(DType::F32))
        }),
        // ---- reductions ----
        ("reduce_sum", |b| {
            let x = b.x(&[2, 3, 2])?;
            b.g.reduce_sum(x, &[0, 2])
        }),
        ("reduce_max", |b| {
            let x = b.x(&[3, 4])?;
            b.g.reduce_max(x, &[1])
        }),
        ("reduce_min", |b| {
            let x = b.x(&[3, 4])?;
            b.g.reduce_min(x, &[0])
        }),
        ("argmax_one_hot", |b| {
            // The index has no gradient; the value it selects does.
            let x = b.x(&[3, 4])?;
            let a = b.g.argmax(x, 1)?;
            let oh = b.g.one_hot(a, 4, DType::F32)?;
            b.g.mul(oh, x)
        }),
        ("mean", |b| {
            let x = b.x(&[3, 4])?;
            b.g.mean(x, &[1])
        }),
        ("max_pool_same", |b| {
            let x = b.x(&[1, 5, 5, 2])?;
            b.g.max_pool2d(x, [3, 3], [2, 2], Padding::Same)
        }),
        ("max_pool_valid", |b| {
            let x = b.x(&[2, 4, 4, 1])?;
            b.g.max_pool2d(x, [2, 2], [2, 2], Padding::Valid)
        }),
        ("avg_pool_same", |b| {
            let x = b.x(&[1, 5, 4, 2])?;
            b.g.avg_pool2d(x, [3, 2], [2, 1], Padding::Same)
        }),
        ("reduce_window_sum_padded", |b| {
            let x = b.x(&[5, 3])?;
            let w = Window {
                dims: vec![2, 2],
                strides: vec![2, 1],
                padding: vec![(1, 1), (0, 1)],
            };
            b.g.reduce_window(x, ReduceKind::Sum, w)
        }),
        ("reduce_window_min", |b| {
            let x = b.x(&[6])?;
            let w = Window {
                dims: vec![3],
                strides: vec![1],
                padding: vec![(1, 1)],
            };
            b.g.reduce_window(x, ReduceKind::Min, w)
        }),
        // ---- convolutions ----
        ("conv_same", |b| {
            let x = b.x(&[1, 4, 4, 2])?;
            let k = b.x(&[3, 3, 2, 2])?;
            b.g.conv2d(x, k, [1, 1], Padding::Same, [1, 1])
        }),
        ("conv_stride2_valid", |b| {
            let x = b.x(&[2, 5, 5, 1])?;
            let k = b.x(&[2, 2, 1, 2])?;
            b.g.conv2d(x, k, [2, 2], Padding::Valid, [1, 1])
        }),
        ("conv_stride2_same_odd", |b| {
            let x = b.x(&[1, 5, 4, 2])?;
            let k = b.x(&[3, 2, 2, 1])?;
            b.g.conv2d(x, k, [2, 2], Padding::Same, [1, 1])
        }),
        ("conv_dilated", |b| {
            let x = b.x(&[1, 6, 5, 1])?;
            let k = b.x(&[2, 2, 1, 2])?;
            b.g.conv2d(x, k, [1, 1], Padding::Same, [2, 2])
        }),
        ("conv_general_nchw_lhs_dilation", |b| {
            // NCHW input, OIHW kernel, input dilation, uneven and negative padding.
            let x = b.x(&[1, 2, 3, 3])?;
            let k = b.x(&[2, 2, 2, 2])?;
            let dims = ConvDims {
                input_batch: 0,
                input_feature: 1,
                input_spatial: vec![2, 3],
                kernel_output_feature: 0,
                kernel_input_feature: 1,
                kernel_spatial: vec![2, 3],
                output_batch: 0,
                output_feature: 1,
                output_spatial: vec![2, 3],
            };
            let p = ConvParams {
                window_strides: vec![1, 2],
                padding: vec![(1, 0), (-1, 2)],
                lhs_dilation: vec![2, 1],
                rhs_dilation: vec![1, 2],
                dims,
                out_dtype: None,
            };
            b.g.conv(x, k, p)
        }),
        ("conv_widened", |b| {
            let x = b.input_in(DType::F16, &[1, 3, 3, 1], -1.0, 1.0)?;
            let k = b.input_in(DType::F16, &[2, 2, 1, 2], -1.0, 1.0)?;
            let p = ConvParams {
                window_strides: vec![1, 1],
                padding: vec![(0, 0); 2],
                lhs_dilation: vec![1, 1],
                rhs_dilation: vec![1, 1],
                dims: ConvDims::nhwc_hwio(),
                out_dtype: Some(DType::F32),
            };
            b.g.conv(x, k, p)
        }),
        // ---- sort ----
        ("sort_descending_dim1", |b| {
            // Keys far apart, so finite differences never swap them.
            let x = b.input_with(
                TensorType::f32([2, 4]),
                vec![0.3, -0.9, 1.2, -0.2, 0.6, 0.0, -1.1, 0.9],
            )?;
            b.g.sort(x, 1, true)
        }),
        ("sort_with_payload_dim0", |b| {
            let k = b.input_with(
                TensorType::f32([3, 2]),
                vec![0.5, -0.4, -0.7, 0.8, 0.1, 0.2],
            )?;
            let p = b.x(&[3, 2])?;
            let i = b.ints(&[3, 2], &[1, 2, 3, 4, 5, 6])?;
            let s = b.g.sort_with_payload(k, &[p, i], 0, false)?;
            let i = b.g.convert(s[2], DType::F32)?;
            let kp = b.g.mul(s[0], s[1])?;
            b.g.mul(kp, i)
        }),
        // ---- loops and annotations ----
        ("scan_rnn", |b| {
            let w = b.x(&[3, 3])?;
            let h0 = b.x(&[2, 3])?;
            let xs = b.x(&[4, 2, 3])?;
            let out = b.g.scan(4, &[w], &[h0], &[xs], false, |g, a| {
                let h = g.dot(a.carries[0], a.consts[0])?;
                let h = g.add(h, a.xs[0])?;
                let h = g.tanh(h)?;
                let y = g.mul(h, a.xs[0])?;
                Ok((vec![h], vec![y]))
            })?;
            let last = b.g.sum_all(out.carries[0])?;
            let ys = b.g.sum_all(out.ys[0])?;
            b.g.add(last, ys)
        }),
        ("scan_reverse_two_carries", |b| {
            let a0 = b.x(&[2])?;
            let c0 = b.pos(&[2])?;
            let xs = b.x(&[3, 2])?;
            let out = b.g.scan(3, &[], &[a0, c0], &[xs], true, |g, a| {
                let s = g.mul(a.carries[0], a.carries[1])?;
                let s = g.add(s, a.xs[0])?;
                let c = g.sin(a.carries[1])?;
                Ok((vec![s, c], vec![s]))
            })?;
            let ys = b.g.reduce_sum(out.ys[0], &[0])?;
            b.g.add(ys, out.carries[0])
        }),
        ("scan_int_counter_dynamic_slice", |b| {
            // An LSTM-style loop indexing a const by an integer carry.
            let table = b.x(&[4, 2])?;
            let h0 = b.x(&[2])?;
            let i0 = b.ints(&[], &[0])?;
            let out = b.g.scan(4, &[table], &[i0, h0], &[], false, |g, a| {
                let zero = g.scalar(0.0, DType::I32)?;
                let row = g.dynamic_slice(a.consts[0], &[a.carries[0], zero], &[1, 2])?;
                let row = g.reshape(row, [2])?;
                let h = g.mul(a.carries[1], row)?;
                let h = g.add(h, row)?;
                let one = g.scalar(1.0, DType::I32)?;
                let i = g.add(a.carries[0], one)?;
                Ok((vec![i, h], vec![]))
            })?;
            Ok(out.carries[1])
        }),
        ("scan_nested", |b| {
            let w = b.x(&[2])?;
            let h0 = b.x(&[2])?;
            let out = b.g.scan(2, &[w], &[h0], &[], false, |g, a| {
                let inner = g.scan(3, &[a.consts[0]], &[a.carries[0]], &[], false, |g, a| {
                    let h = g.mul(a.carries[0], a.consts[0])?;
                    let h = g.sin(h)?;
                    Ok((vec![h], vec![]))
                })?;
                let h = g.add(inner.carries[0], a.consts[0])?;
                Ok((vec![h], vec![]))
            })?;
            Ok(out.carries[0])
        }),
        ("optimization_barrier", |b| {
            let x = b.x(&[2, 3])?;
            let y = b.x(&[3])?;
            let o = b.g.optimization_barrier(&[x, y])?;
            let e = b.g.exp(o[0])?;
            b.g.mul(e, o[1])
        }),
        ("sharding", |b| {
            let x = b.x(&[4, 2])?;
            let s =
                b.g.shard(x, Sharding::Mesh(vec![Some("data".into()), None]))?;
            b.g.mul(s, x)
        }),
        // ---- custom VJP ----
        ("custom_vjp_softplus", |b| {
            // A stable forward and its analytic gradient, checked against
            // finite differences of that forward.
            let x = b.input_in(DType::F32, &[2, 3], -3.0, 3.0)?;
            let y = b.g.custom_vjp(
                "softplus",
                &[x],
                |g, xs| {
                    let r = g.relu(xs[0])?;
                    let a = g.abs(xs[0])?;
                    let e = g.neg(a)?;
                    let e = g.exp(e)?;
                    let l = g.log1p(e)?;
                    Ok(vec![g.add(r, l)?])
                },
                |g, xs, _, cts| {
                    let s = g.logistic(xs[0])?;
                    Ok(vec![Some(g.mul(cts[0], s)?)])
                },
            )?;
            Ok(y[0])
        }),
        ("custom_vjp_reversible_coupling", |b| {
            // (x1, x2) -> (x1 + tanh(w x2), x2); the backward rebuilds x2
            // from the outputs instead of reading the input.
            let x1 = b.x(&[2, 3])?;
            let x2 = b.x(&[2, 3])?;
            let w = b.x(&[3])?;
            let y = b.g.custom_vjp(
                "coupling",
                &[x1, x2, w],
                |g, xs| {
                    let h = g.mul(xs[1], xs[2])?;
                    let t = g.tanh(h)?;
                    Ok(vec![g.add(xs[0], t)?, xs[1]])
                },
                |g, xs, ys, cts| {
                    let x2 = ys[1];
                    let h = g.mul(x2, xs[2])?;
                    let t = g.tanh(h)?;
                    let t2 = g.mul(t, t)?;
                    let one = g.ones_like(t2)?;
                    let d = g.sub(one, t2)?;
                    let dh = g.mul(cts[0], d)?;
                    let w2 = g.mul(dh, xs[2])?;
                    let dx2 = g.add(cts[1], w2)?;
                    let dw = g.mul(dh, x2)?;
                    let dw = g.reduce_sum(dw, &[0])?;
                    Ok(vec![Some(cts[0]), Some(dx2), Some(dw)])
                },
            )?;
            let s = b.g.sin(y[1])?;
            b.g.mul(y[0], s)
        }),
        // ---- composites ----
        ("relu", |b| {
            let x = b.x(&[2, 3])?;
            b.g.relu(x)
        }),
        ("gelu", |b| {
            let x = b.x(&[2, 3])?;
            b.g.gelu(x)
        }),
        ("softmax", |b| {
            let x = b.x(&[3, 4])?;
            b.g.softmax(x, 0)
        }),
        ("log_softmax", |b| {
            let x = b.x(&[3, 4])?;
            b.g.log_softmax(x, 1)
        }),
        ("logsumexp", |b| {
            let x = b.x(&[3, 4])?;
            b.g.logsumexp(x, 1)
        }),
        ("cross_entropy", |b| {
            let x = b.x(&[2, 3, 5])?;
            let y = b.ints(&[2, 3], &[0, 4, 2, 2, 1, 3])?;
            b.g.cross_entropy(x, y)
        }),
        ("sigmoid_cross_entropy", |b| {
            let x = b.x(&[2, 3])?;
            let t = b.input_in(DType::F32, &[2, 3], 0.0, 1.0)?;
            b.g.sigmoid_cross_entropy(x, t)
        }),
        ("layer_norm", |b| {
            let x = b.x(&[2, 4])?;
            let gamma = b.pos(&[4])?;
            let beta = b.x(&[4])?;
            b.g.layer_norm(x, gamma, beta, 1e-5)
        }),
        ("dropout", |b| {
            let x = b.x(&[4, 4])?;
            let seed = b.ints(&[], &[11])?;
            b.g.dropout(x, 0.5, seed, 3)
        }),
        ("rng_normal_scale", |b| {
            let x = b.x(&[6])?;
            let seed = b.ints(&[], &[5])?;
            let n = b.g.rng_normal(seed, 0, [6], DType::F32)?;
            b.g.mul(x, n)
        }),
        ("mlp_fanout", |b| {
            // A value used several times: cotangents must add up.
            let x = b.x(&[2, 3])?;
            let w = b.x(&[3, 3])?;
            let h = b.g.dot(x, w)?;
            let h = b.g.gelu(h)?;
            let h2 = b.g.dot(h, w)?;
            let s = b.g.add(h2, x)?;
            let s = b.g.mul(s, h)?;
            b.g.softmax(s, 1)
        }),
    ];
    let mut out = Vec::with_capacity(table.len());
    for (i, (name, build)) in table.iter().enumerate() {
        let mut b = CaseBuilder::new(name, 100 + i as u64);
        let y = build(&mut b)?;
        out.push(b.finish(name, y)?);
    }
    Ok(out)
}
