//! Reductions, argmax, reduce_window and select_and_scatter.

use super::gather::scalar_binary;
use super::Ctx;
use crate::emit::{
    compare_type, highest, i64_array, lowest, padding_attr, usize_array, Emitter, Op,
};
use crate::Result;
use graph::{DType, ReduceKind, TensorType, Window};

fn init_value(kind: ReduceKind, d: DType) -> f64 {
    match kind {
        ReduceKind::Sum => 0.0,
        ReduceKind::Max => lowest(d),
        ReduceKind::Min => highest(d),
    }
}

fn combiner(kind: ReduceKind) -> &'static str {
    match kind {
        ReduceKind::Sum => "stablehlo.add",
        ReduceKind::Max => "stablehlo.maximum",
        ReduceKind::Min => "stablehlo.minimum",
    }
}

/// A region `(a, b) -> combine(a, b)` on scalars of `d`.
fn combine_region(e: &mut Emitter, kind: ReduceKind, d: DType, first: bool) {
    let s = TensorType::scalar(d);
    let a = e.begin_region(first, &[s.clone(), s.clone()]);
    let r = scalar_binary(e, combiner(kind), &a[0], &a[1], &s);
    e.end_region(&[r], &[s]);
}

pub(crate) fn lower_reduce(
    e: &mut Emitter,
    c: &Ctx,
    kind: ReduceKind,
    dims: &[usize],
) -> Result<String> {
    let d = c.in_types[0].dtype;
    let s = TensorType::scalar(d);
    let init = e.splat(&s, init_value(kind, d));
    let ins = [c.in_types[0].clone(), s];
    let outs = [c.out.clone()];
    let op = Op::new(
        "stablehlo.reduce",
        vec![c.ins[0].clone(), init],
        &ins,
        &outs,
    )
    .at(&c.node.loc, c.node.name.as_deref())
    .attr(format!("dimensions = {}", usize_array(dims)));
    e.op_with_regions(op, |e| {
        combine_region(e, kind, d, true);
        Ok(())
    })
    .map(|mut r| r.remove(0))
}

/// A variadic reduce over (value, index) pairs keeping the first maximum.
pub(crate) fn lower_argmax(e: &mut Emitter, c: &Ctx, dim: usize) -> Result<String> {
    let x = &c.in_types[0];
    let (vd, id) = (x.dtype, c.out.dtype);
    let idx_t = x.with_dtype(id);
    let iota = {
        let outs = [idx_t.clone()];
        e.op(Op::new("stablehlo.iota", vec![], &[], &outs)
            .attr(format!("iota_dimension = {dim} : i64")))
            .remove(0)
    };
    let (sv, si) = (TensorType::scalar(vd), TensorType::scalar(id));
    let init_v = e.splat(&sv, lowest(vd));
    let init_i = e.splat(&si, 0.0);
    let ins = [x.clone(), idx_t, sv.clone(), si.clone()];
    let outs = [c.out.with_dtype(vd), c.out.clone()];
    let op = Op::new(
        "stablehlo.reduce",
        vec![c.ins[0].clone(), iota, init_v, init_i],
        &ins,
        &outs,
    )
    .at(&c.node.loc, c.node.name.as_deref())
    .attr(format!("dimensions = {}", usize_array(&[dim])));
    let r = e.op_with_regions(op, |e| {
        let a = e.begin_region(true, &[sv.clone(), si.clone(), sv.clone(), si.clone()]);
        let b = TensorType::scalar(DType::Bool);
        let cmp = |e: &mut Emitter, dir: &str, x: &str, y: &str, t: &TensorType| {
            let ins = [t.clone(), t.clone()];
            let outs = [b.clone()];
            e.op(
                Op::new("stablehlo.compare", vec![x.into(), y.into()], &ins, &outs)
                    .attr(format!(
                        "comparison_direction = #stablehlo<comparison_direction {dir}>"
                    ))
                    .attr(format!(
                        "compare_type = #stablehlo<comparison_type {}>",
                        compare_type(t.dtype)
                    )),
            )
            .remove(0)
        };
        // Take the accumulator when it is larger, or equal with a smaller index.
        let gt = cmp(e, "GT", &a[0], &a[2], &sv);
        let eq = cmp(e, "EQ", &a[0], &a[2], &sv);
        let lt = cmp(e, "LT", &a[1], &a[3], &si);
        let tie = scalar_binary(e, "stablehlo.and", &eq, &lt, &b);
        let take = scalar_binary(e, "stablehlo.or", &gt, &tie, &b);
        let sel = |e: &mut Emitter, x: &str, y: &str, t: &TensorType| {
            let ins = [b.clone(), t.clone(), t.clone()];
            let outs = [t.clone()];
            e.op(Op::new(
                "stablehlo.select",
                vec![take.clone(), x.into(), y.into()],
                &ins,
                &outs,
            ))
            .remove(0)
        };
        let v = sel(e, &a[0], &a[2], &sv);
        let i = sel(e, &a[1], &a[3], &si);
        e.end_region(&[v, i], &[sv.clone(), si.clone()]);
        Ok(())
    })?;
    Ok(r[1].clone())
}

fn window_attrs<'a>(op: Op<'a>, w: &Window) -> Op<'a> {
    op.attr(format!("window_dimensions = {}", i64_array(&w.dims)))
        .attr(format!("window_strides = {}", i64_array(&w.strides)))
        .attr(format!("padding = {}", padding_attr(&w.padding)))
}

pub(crate) fn lower_reduce_window(
    e: &mut Emitter,
    c: &Ctx,
    kind: ReduceKind,
    w: &Window,
) -> Result<String> {
    let d = c.in_types[0].dtype;
    let s = TensorType::scalar(d);
    let init = e.splat(&s, init_value(kind, d));
    let ins = [c.in_types[0].clone(), s];
    let outs = [c.out.clone()];
    let op = Op::new(
        "stablehlo.reduce_window",
        vec![c.ins[0].clone(), init],
        &ins,
        &outs,
    )
    .at(&c.node.loc, c.node.name.as_deref());
    e.op_with_regions(window_attrs(op, w), |e| {
        combine_region(e, kind, d, true);
        Ok(())
    })
    .map(|mut r| r.remove(0))
}

/// Our operands are (source, operand); StableHLO takes (operand, source, init).
pub(crate) fn lower_select_and_scatter_add(e: &mut Emitter, c: &Ctx, w: &Window) -> Result<String> {
    let d = c.out.dtype;
    let s = TensorType::scalar(d);
    let init = e.splat(&s, 0.0);
    let ins = [c.in_types[1].clone(), c.in_types[0].clone(), s.clone()];
    let outs = [c.out.clone()];
    let op = Op::new(
        "stablehlo.select_and_scatter",
        vec![c.ins[1].clone(), c.ins[0].clone(), init],
        &ins,
        &outs,
    )
    .at(&c.node.loc, c.node.name.as_deref());
    e.op_with_regions(window_attrs(op, w), |e| {
        // Select: keep the current element while it is >= the candidate.
        let a = e.begin_region(true, &[s.clone(), s.clone()]);
        let b = TensorType::scalar(DType::Bool);
        let ins = [s.clone(), s.clone()];
        let outs = [b.clone()];
        let ge = e
            .op(Op::new(
                "stablehlo.compare",
                vec![a[0].clone(), a[1].clone()],
                &ins,
                &outs,
            )
            .attr("comparison_direction = #stablehlo<comparison_direction GE>")
            .attr(format!(
                "compare_type = #stablehlo<comparison_type {}>",
                compare_type(d)
            )))
            .remove(0);
        e.end_region(&[ge], &[b]);
        combine_region(e, ReduceKind::Sum, d, false);
        Ok(())
    })
    .map(|mut r| r.remove(0))
}
