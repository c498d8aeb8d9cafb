//! Scan as `stablehlo.while`, and optimization_barrier.
//!
//! The while state is `(i, consts.., carries.., xs.., ys accumulators..)`,
//! everything passed explicitly (as JAX does) rather than captured. Each
//! iteration slices `xs[t]`, inlines the body, and writes `ys[t]` with
//! dynamic_update_slice; `t = i`, or `length - 1 - i` when reversed.

use super::shape::reshape_to;
use super::{lower_body, Ctx};
use crate::emit::{i64_array, Emitter, Op};
use crate::Result;
use graph::{DType, ScanParams, TensorType};

fn scalar_op(e: &mut Emitter, name: &str, a: &str, b: &str, t: &TensorType) -> String {
    let ins = [t.clone(), t.clone()];
    let outs = [t.clone()];
    e.op(Op::new(name, vec![a.into(), b.into()], &ins, &outs))
        .remove(0)
}

pub(crate) fn lower_scan(
    e: &mut Emitter,
    c: &Ctx,
    p: &ScanParams,
    out_tys: &[TensorType],
) -> Result<Vec<String>> {
    let (nc, nh) = (p.num_consts, p.num_carry);
    let nx = c.ins.len() - nc - nh;
    let ys_types = &out_tys[nh..];
    if p.length == 0 {
        // The body never runs (and could not even slice xs).
        let mut r: Vec<String> = c.ins[nc..nc + nh].to_vec();
        for t in ys_types {
            r.push(e.splat(t, 0.0));
        }
        return Ok(r);
    }
    let i64s = TensorType::scalar(DType::I64);
    let mut operands = vec![e.splat(&i64s, 0.0)];
    operands.extend(c.ins.iter().cloned());
    for t in ys_types {
        operands.push(e.splat(t, 0.0));
    }
    let mut state = vec![i64s.clone()];
    state.extend(c.in_types.iter().cloned());
    state.extend(ys_types.iter().cloned());
    let op = Op::new("stablehlo.while", operands, &state, &state)
        .at(&c.node.loc, c.node.name.as_deref());
    let r = e.op_with_regions(op, |e| {
        let a = e.begin_region(true, &state);
        let lim = e.splat(&i64s, p.length as f64);
        let b = TensorType::scalar(DType::Bool);
        let ins = [i64s.clone(), i64s.clone()];
        let outs = [b.clone()];
        let lt = e
            .op(
                Op::new("stablehlo.compare", vec![a[0].clone(), lim], &ins, &outs)
                    .attr("comparison_direction = #stablehlo<comparison_direction LT>")
                    .attr("compare_type = #stablehlo<comparison_type SIGNED>"),
            )
            .remove(0);
        e.end_region(&[lt], &[b]);

        let a = e.begin_region(false, &state);
        let i = a[0].clone();
        let t = if p.reverse {
            let last = e.splat(&i64s, (p.length - 1) as f64);
            scalar_op(e, "stablehlo.subtract", &last, &i, &i64s)
        } else {
            i.clone()
        };
        let zero = e.splat(&i64s, 0.0);
        let mut body_args: Vec<String> = a[1..1 + nc + nh].to_vec();
        for k in 0..nx {
            let xt = &c.in_types[nc + nh + k];
            let mut sizes = xt.dims().to_vec();
            sizes[0] = 1;
            let mut idx = vec![a[1 + nc + nh + k].clone(), t.clone()];
            idx.extend((1..xt.rank()).map(|_| zero.clone()));
            let mut ins = vec![xt.clone()];
            ins.extend((0..xt.rank()).map(|_| i64s.clone()));
            let one_t = TensorType::new(xt.dtype, sizes.clone());
            let outs = [one_t.clone()];
            let s = e
                .op(Op::new("stablehlo.dynamic_slice", idx, &ins, &outs)
                    .attr(format!("slice_sizes = {}", i64_array(&sizes))))
                .remove(0);
            let slice_t = TensorType::new(xt.dtype, xt.dims()[1..].to_vec());
            body_args.push(reshape_to(e, &s, &one_t, &slice_t));
        }
        let outs = lower_body(e, &p.body, &body_args)?;
        let one = e.splat(&i64s, 1.0);
        let mut ret = vec![scalar_op(e, "stablehlo.add", &i, &one, &i64s)];
        ret.extend(a[1..1 + nc].iter().cloned());
        ret.extend(outs[..nh].iter().cloned());
        ret.extend(a[1 + nc + nh..1 + nc + nh + nx].iter().cloned());
        for (k, yt) in ys_types.iter().enumerate() {
            let acc = a[1 + nc + nh + nx + k].clone();
            let slice_t = TensorType::new(yt.dtype, yt.dims()[1..].to_vec());
            let mut one = yt.dims().to_vec();
            one[0] = 1;
            let one_t = TensorType::new(yt.dtype, one);
            let y = reshape_to(e, &outs[nh + k], &slice_t, &one_t);
            let mut ops = vec![acc, y, t.clone()];
            ops.extend((1..yt.rank()).map(|_| zero.clone()));
            let mut ins = vec![yt.clone(), one_t];
            ins.extend((0..yt.rank()).map(|_| i64s.clone()));
            let outs = [yt.clone()];
            ret.push(
                e.op(Op::new("stablehlo.dynamic_update_slice", ops, &ins, &outs))
                    .remove(0),
            );
        }
        e.end_region(&ret, &state);
        Ok(())
    })?;
    let mut res: Vec<String> = r[1 + nc..1 + nc + nh].to_vec();
    res.extend(r[1 + nc + nh + nx..].iter().cloned());
    Ok(res)
}

pub(crate) fn lower_optimization_barrier(
    e: &mut Emitter,
    c: &Ctx,
    tys: &[TensorType],
) -> Result<Vec<String>> {
    Ok(e.op(c.op("stablehlo.optimization_barrier", tys)))
}
