//! Weight-only int8 quantization inside the compiled program: chosen f32 arguments become an
//! i8 argument plus an f32 scale argument, dequantized in the graph (`convert(q) · scale`),
//! so the weights travel and sit on device as i8 and every consumer sees f32 as before.
//!
//! Scales are per output channel: [`output_channel_axes`] reads them off the graph (the axes
//! no dot contracts), and a scale argument keeps the weight's rank with size 1 on the other
//! axes (`(1, out)` for a `(in, out)` kernel, `(V, 1)` for an embedding table).

use crate::error::{GraphError, Result};
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::types::{DType, TensorType};

/// One argument to dequantize: its index in [`Graph::args`] and its scale's shape (the
/// weight's dims, 1 on the axes one scale covers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dequantize {
    pub arg: usize,
    pub scale_dims: Vec<i64>,
}

/// Where an argument of the rewritten graph comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantArg {
    /// The source graph's argument `i`, unchanged.
    Same(usize),
    /// The i8 values of source argument `i`.
    Int8(usize),
    /// The f32 scales of source argument `i`.
    Scale(usize),
}

/// Axes of parameter `p` that are output channels: those that no `dot_general` using `p`
/// (directly or through converts) contracts or batches. A parameter used by no dot (an
/// embedding looked up by row, a position table) has its rows as channels: axis 0.
pub fn output_channel_axes(g: &Graph, p: NodeId) -> Result<Vec<usize>> {
    let rank = g.rank(p)?;
    let mut reduced = vec![false; rank];
    let mut any_dot = false;
    let mut frontier = vec![p];
    while let Some(x) = frontier.pop() {
        for id in g.ids() {
            let n = g.node(id)?;
            if !n.inputs.contains(&x) {
                continue;
            }
            match &n.op {
                Op::Convert(_) => frontier.push(id),
                Op::DotGeneral { dims, .. } => {
                    any_dot = true;
                    for (side, &inp) in n.inputs.iter().enumerate() {
                        if inp != x {
                            continue;
                        }
                        let (c, b) = if side == 0 {
                            (&dims.lhs_contract, &dims.lhs_batch)
                        } else {
                            (&dims.rhs_contract, &dims.rhs_batch)
                        };
                        for &a in c.iter().chain(b) {
                            reduced[a] = true;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if !any_dot {
        return Ok(if rank == 0 { vec![] } else { vec![0] });
    }
    Ok((0..rank).filter(|&a| !reduced[a]).collect())
}

/// The scale shape of a weight of `dims` with one scale per index of `channel_axes`.
pub fn scale_dims(dims: &[i64], channel_axes: &[usize]) -> Vec<i64> {
    dims.iter()
        .enumerate()
        .map(|(a, &d)| if channel_axes.contains(&a) { d } else { 1 })
        .collect()
}

/// `g` with each argument of `specs` replaced by an i8 argument (same name and kind) and an
/// f32 `<name>.qscale` argument right after it, dequantized before first use. Returns the new
/// graph and where each of its arguments comes from.
pub fn dequantize_args(g: &Graph, specs: &[Dequantize]) -> Result<(Graph, Vec<QuantArg>)> {
    let args = g.args();
    let mut out = Graph::new(g.name.clone());
    let mut new_args = Vec::with_capacity(args.len());
    let mut sources = Vec::with_capacity(args.len() + specs.len());
    for (i, &a) in args.iter().enumerate() {
        let node = g.node(a)?;
        let ty = g.ty(a)?.clone();
        let name = node.name.clone().unwrap_or_else(|| format!("arg{i}"));
        let trainable = matches!(node.op, Op::Parameter(_));
        let mk = |out: &mut Graph, name: &str, ty: TensorType| {
            if trainable {
                out.parameter(name, ty)
            } else {
                out.input(name, ty)
            }
        };
        let Some(spec) = specs.iter().find(|s| s.arg == i) else {
            new_args.push(mk(&mut out, &name, ty)?);
            sources.push(QuantArg::Same(i));
            continue;
        };
        if ty.dtype != DType::F32 {
            return Err(GraphError::Invalid(format!(
                "quantizing argument `{name}`: it is {ty}, only f32 weights are quantized"
            )));
        }
        let dims = ty.dims().to_vec();
        let ok_scale = spec.scale_dims.len() == dims.len()
            && spec
                .scale_dims
                .iter()
                .zip(&dims)
                .all(|(&s, &d)| s == d || s == 1);
        if !ok_scale {
            return Err(GraphError::Invalid(format!(
                "quantizing argument `{name}` {ty}: scale dims {:?} must equal its dims or be 1",
                spec.scale_dims
            )));
        }
        let q = mk(&mut out, &name, TensorType::new(DType::I8, dims.clone()))?;
        let s = mk(
            &mut out,
            &format!("{name}.qscale"),
            TensorType::new(DType::F32, spec.scale_dims.clone()),
        )?;
        sources.push(QuantArg::Int8(i));
        sources.push(QuantArg::Scale(i));
        // Scales of shape (1, out) broadcast along the size-1 axes.
        let kept: Vec<usize> = (0..dims.len())
            .filter(|&a| spec.scale_dims[a] != 1)
            .collect();
        let flat: Vec<i64> = kept.iter().map(|&a| dims[a]).collect();
        let s = out.reshape(s, flat)?;
        let s = out.broadcast_in_dim(s, dims, &kept)?;
        let qf = out.convert(q, DType::F32)?;
        new_args.push(out.mul(qf, s)?);
    }
    // Dequantized values stand in for the old arguments; everything else is copied.
    let map = crate::rewrite::inline(&mut out, g, &new_args)?;
    let outs: Vec<NodeId> = g.outputs.iter().map(|o| map[o.index()]).collect();
    out.set_outputs(&outs)?;
    let out = super::checked("dequantize_args", g, out)?;
    Ok((out, sources))
}

/// The largest int8 magnitude of symmetric quantization.
pub const QMAX: f64 = 127.0;

/// The symmetric int8 scale of `x` over its `reduced` axes, `max|x| / 127` (shaped as the
/// other axes), with 1 where that is 0 (an all-zero row or channel, so dividing is safe), and
/// whether it was 0.
pub fn symmetric_scale(g: &mut Graph, x: NodeId, reduced: &[usize]) -> Result<(NodeId, NodeId)> {
    use crate::ops::elementwise::CompareDir;
    let ax = g.abs(x)?;
    let amax = g.reduce_max(ax, reduced)?;
    let s = g.mul_scalar(amax, 1.0 / QMAX)?;
    let zero = g.zeros_like(s)?;
    let is_zero = g.compare(CompareDir::Eq, s, zero)?;
    let one = g.ones_like(s)?;
    Ok((g.select(is_zero, one, s)?, is_zero))
}

/// `sign(v)·trunc(|v| + 0.5)`: rounding half away from zero, as `f64::round` and the host
/// quantizer do.
pub fn round_half_away(g: &mut Graph, v: NodeId) -> Result<NodeId> {
    let av = g.abs(v)?;
    let av = g.add_scalar(av, 0.5)?;
    let t = g.convert(av, DType::I32)?;
    let t = g.convert(t, DType::F32)?;
    let sg = g.sign(v)?;
    g.mul(sg, t)
}

/// A dequantized weight of [`dequantize_args`]: `convert(q) · broadcast(reshape(s))`.
struct Dequantized {
    /// The i8 values and the flat scales `(channels..)` in the rewritten graph.
    q: NodeId,
    s: NodeId,
    /// The weight's axes one scale each covers (the others have size 1 in the scale).
    kept: Vec<usize>,
}

/// `(q, s_flat, kept)` when node `m` of `g` is a weight dequantized by [`dequantize_args`].
fn dequantized(g: &Graph, m: NodeId) -> Result<Option<(NodeId, NodeId, Vec<usize>)>> {
    let n = g.node(m)?;
    if !matches!(n.op, Op::Binary(crate::ops::elementwise::BinaryOp::Mul)) {
        return Ok(None);
    }
    let (c, b) = (g.node(n.inputs[0])?, g.node(n.inputs[1])?);
    let (Op::Convert(DType::F32), Op::BroadcastInDim { dims: kept, .. }) = (&c.op, &b.op) else {
        return Ok(None);
    };
    let q = c.inputs[0];
    let r = g.node(b.inputs[0])?;
    if g.ty(q)?.dtype != DType::I8 || !matches!(r.op, Op::Reshape(_)) {
        return Ok(None);
    }
    let is_arg = |x: NodeId| -> Result<bool> {
        Ok(matches!(g.node(x)?.op, Op::Parameter(_) | Op::Input(_)))
    };
    if !is_arg(q)? || !is_arg(r.inputs[0])? {
        return Ok(None);
    }
    Ok(Some((q, b.inputs[0], kept.clone())))
}

/// `g` (a graph from [`dequantize_args`]) with every `x · W` whose right operand is a
/// dequantized i8 weight turned into an int8 dot: `x` is quantized per row on the fly
/// (symmetric, one scale per index of its free axes: `max |x| / 127`), the dot runs i8 × i8
/// with i32 accumulation, and the result is rescaled by both scales. Dots that do not fit
/// (batch axes, a scale on a contracted axis, a weight used through a reshape) keep the
/// dequantized weight. Returns the graph and how many dots became int8.
pub fn int8_dots(g: &Graph) -> Result<(Graph, usize)> {
    use crate::ops::dot::DotDims;
    let mut rb = super::Rebuild::new(g);
    let mut deq: Vec<Option<Dequantized>> = (0..g.len()).map(|_| None).collect();
    let mut count = 0;
    for (i, node) in g.nodes.iter().enumerate() {
        let ins: Vec<NodeId> = node.inputs.iter().map(|x| rb.map[x.index()]).collect();
        let rhs = match &node.op {
            Op::DotGeneral { dims, .. } if dims.lhs_batch.is_empty() => deq[node.inputs[1].index()]
                .as_ref()
                .filter(|d| d.kept.iter().all(|a| !dims.rhs_contract.contains(a))),
            _ => None,
        };
        match (rhs, &node.op) {
            (Some(d), Op::DotGeneral { dims, .. }) => {
                let out = &mut rb.out;
                let x = ins[0];
                let xdims = out.dims(x)?.to_vec();
                let free: Vec<usize> = (0..xdims.len())
                    .filter(|a| !dims.lhs_contract.contains(a))
                    .collect();
                // Per-row scale of x over its contracted axes, rounded as the weights were.
                let (sx, _) = symmetric_scale(out, x, &dims.lhs_contract)?; // (x free..)
                let sxb = out.broadcast_in_dim(sx, xdims.clone(), &free)?;
                let xs = out.div(x, sxb)?;
                let xr = round_half_away(out, xs)?;
                let xq = out.convert(xr, DType::I8)?;
                let y = out.add_node(
                    Op::DotGeneral {
                        dims: DotDims {
                            lhs_batch: vec![],
                            rhs_batch: vec![],
                            lhs_contract: dims.lhs_contract.clone(),
                            rhs_contract: dims.rhs_contract.clone(),
                        },
                        out_dtype: Some(DType::I32),
                    },
                    vec![xq, d.q],
                    node.loc.clone(),
                )?;
                let y = out.convert(y, DType::F32)?;
                let ydims = out.dims(y)?.to_vec();
                let nl = free.len();
                let sxo = out.broadcast_in_dim(sx, ydims.clone(), &(0..nl).collect::<Vec<_>>())?;
                let y = out.mul(y, sxo)?;
                // The weight's free axes follow x's in the result, in order.
                let wfree: Vec<usize> = (0..out.rank(d.q)?)
                    .filter(|a| !dims.rhs_contract.contains(a))
                    .collect();
                let at: Vec<usize> = d
                    .kept
                    .iter()
                    .map(|k| {
                        nl + wfree
                            .iter()
                            .position(|w| w == k)
                            .expect("kept axes are free")
                    })
                    .collect();
                let swo = out.broadcast_in_dim(d.s, ydims, &at)?;
                let y = out.mul(y, swo)?;
                let y = match g.ty(NodeId(i as u32))?.dtype {
                    DType::F32 => y,
                    t => out.convert(y, t)?,
                };
                out.nodes[y.index()].name.clone_from(&node.name);
                rb.map.push(y);
                count += 1;
            }
            _ => {
                rb.copy_as(node.op.clone(), ins)?;
            }
        }
        if let Some((q, s, kept)) = dequantized(g, NodeId(i as u32))? {
            deq[i] = Some(Dequantized {
                q: rb.map[q.index()],
                s: rb.map[s.index()],
                kept,
            });
        }
    }
    let (out, _) = rb.finish()?;
    let out = super::checked("int8_dots", g, out)?;
    Ok((out, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{eval, HostTensor};
    use crate::ops::dot::DotDims;

    /// `x (2, 3) · w (3, 4)` with `w` dequantized: the program computes x·(q·s) exactly as the
    /// host does, and the kernel's output axis is its channel.
    #[test]
    #[allow(clippy::needless_range_loop)] // row-major indices, as the math reads
    fn dequantized_weight_feeds_the_dot() {
        let mut g = Graph::new("lin");
        let x = g.input("x", TensorType::f32([2, 3])).unwrap();
        let w = g.parameter("w", TensorType::f32([3, 4])).unwrap();
        let y = g
            .dot_general(x, w, DotDims::contract(&[1], &[0]), None)
            .unwrap();
        g.set_outputs(&[y]).unwrap();
        assert_eq!(output_channel_axes(&g, w).unwrap(), vec![1]);
        assert_eq!(output_channel_axes(&g, x).unwrap(), vec![0]);
        let spec = Dequantize {
            arg: 1,
            scale_dims: scale_dims(&[3, 4], &[1]),
        };
        let (q, src) = dequantize_args(&g, &[spec]).unwrap();
        assert_eq!(
            src,
            vec![QuantArg::Same(0), QuantArg::Int8(1), QuantArg::Scale(1)]
        );
        let xs: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        let qs: Vec<f64> = (0..12).map(|i| (i * 37 % 255) as f64 - 127.0).collect();
        let ss = [0.5f32, 0.25, 2.0, 0.125];
        let args = [
            HostTensor::f32(&[2, 3], &xs).unwrap(),
            HostTensor::new(TensorType::new(DType::I8, [3, 4]), qs.clone()).unwrap(),
            HostTensor::f32(&[1, 4], &ss).unwrap(),
        ];
        let got = eval(&q, &args).unwrap()[0].to_f32();
        for r in 0..2 {
            for c in 0..4 {
                let want: f64 = (0..3)
                    .map(|k| xs[r * 3 + k] as f64 * qs[k * 4 + c] * ss[c] as f64)
                    .sum();
                assert!((got[r * 4 + c] as f64 - want).abs() < 1e-5, "{r},{c}");
            }
        }
        // A wrong scale shape or a non-f32 argument is refused by name.
        let bad = Dequantize {
            arg: 1,
            scale_dims: vec![3, 2],
        };
        let e = dequantize_args(&g, &[bad]).unwrap_err().to_string();
        assert!(e.contains("`w`") && e.contains("scale dims"), "{e}");
    }

    /// Round half away from zero, as the passes do.
    fn round(v: f64) -> f64 {
        v.signum() * (v.abs() + 0.5).trunc()
    }

    /// The int8 dot of `x (2, 3)` and a dequantized `w`, for a kernel `(3, 4)` contracted on
    /// axis 0 and a tied table `(4, 3)` contracted on axis 1 (scales `(4, 1)`): each equals
    /// the host's W8A8 product (x quantized per row, integer sums, both scales), and differs
    /// from the f32 dot by no more than x's rounding allows.
    #[test]
    #[allow(clippy::needless_range_loop)]
    fn int8_dots_compute_the_w8a8_product() {
        let xs: Vec<f64> = vec![0.3, -1.2, 0.05, 0.0, 0.0, 0.0];
        let qs: Vec<f64> = (0..12).map(|i| (i * 37 % 255) as f64 - 127.0).collect();
        let ss = [0.5f32, 0.25, 2.0, 0.125];
        for tied in [false, true] {
            let mut g = Graph::new("lin");
            let x = g.input("x", TensorType::f32([2, 3])).unwrap();
            let (wdims, contract, sdims) = match tied {
                false => ([3, 4], 0, vec![1, 4]),
                true => ([4, 3], 1, vec![4, 1]),
            };
            let w = g.parameter("w", TensorType::f32(wdims)).unwrap();
            let y = g
                .dot_general(x, w, DotDims::contract(&[1], &[contract]), None)
                .unwrap();
            g.set_outputs(&[y]).unwrap();
            let spec = Dequantize {
                arg: 1,
                scale_dims: sdims.clone(),
            };
            let (dq, _) = dequantize_args(&g, &[spec]).unwrap();
            let (q8, n) = int8_dots(&dq).unwrap();
            assert_eq!(n, 1, "tied {tied}");
            assert!(q8.nodes.iter().any(|n| matches!(
                n.op,
                Op::DotGeneral {
                    out_dtype: Some(DType::I32),
                    ..
                }
            )));
            let args = [
                HostTensor::new(TensorType::f32([2, 3]), xs.clone()).unwrap(),
                HostTensor::new(TensorType::new(DType::I8, wdims), qs.clone()).unwrap(),
                HostTensor::f32(&sdims, &ss).unwrap(),
            ];
            let got = eval(&q8, &args).unwrap()[0].to_f32();
            let exact = eval(&dq, &args).unwrap()[0].to_f32();
            // (k, c) of the weight, whichever its layout.
            let wq = |k: usize, c: usize| if tied { qs[c * 3 + k] } else { qs[k * 4 + c] };
            for r in 0..2 {
                let row = &xs[r * 3..r * 3 + 3];
                let amax = row.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let sx = if amax == 0.0 {
                    1.0
                } else {
                    amax as f32 as f64 / 127.0
                };
                for c in 0..4 {
                    let acc: f64 = (0..3)
                        .map(|k| round(row[k] as f32 as f64 / sx) * wq(k, c))
                        .sum();
                    let want = acc * sx * ss[c] as f64;
                    let g = got[r * 4 + c] as f64;
                    assert!(
                        (g - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{tied} {r},{c}: {g} vs {want}"
                    );
                    // x's rounding: at most half a step per element.
                    let bound: f64 = (0..3)
                        .map(|k| 0.5 * sx * (wq(k, c) * ss[c] as f64).abs())
                        .sum();
                    assert!(
                        (g - exact[r * 4 + c] as f64).abs() <= bound + 1e-5,
                        "{tied} {r},{c}"
                    );
                }
            }
            // The zero row stays exactly zero.
            assert!(got[4..].iter().all(|&v| v == 0.0));
        }
    }

    /// A tied embedding (looked up by row and contracted on D by the head) has rows as channels.
    #[test]
    fn tied_embedding_channels_are_rows() {
        let mut g = Graph::new("tied");
        let ids = g.input("ids", TensorType::new(DType::I32, [2])).unwrap();
        let wte = g.parameter("wte", TensorType::f32([5, 3])).unwrap();
        let h = g.gather(wte, ids).unwrap(); // (2, 3)
        let logits = g
            .dot_general(h, wte, DotDims::contract(&[1], &[1]), None)
            .unwrap();
        g.set_outputs(&[logits]).unwrap();
        assert_eq!(output_channel_axes(&g, wte).unwrap(), vec![0]);
    }
}
