//! Sort as `stablehlo.sort` with a comparator region and `is_stable`.

use super::Ctx;
use crate::emit::{compare_type, Emitter, Op};
use crate::Result;
use graph::{DType, TensorType};

fn compare(e: &mut Emitter, dir: &str, a: &str, b: &str, t: &TensorType) -> String {
    let ins = [t.clone(), t.clone()];
    let outs = [TensorType::scalar(DType::Bool)];
    e.op(
        Op::new("stablehlo.compare", vec![a.into(), b.into()], &ins, &outs)
            .attr(format!(
                "comparison_direction = #stablehlo<comparison_direction {dir}>"
            ))
            .attr(format!(
                "compare_type = #stablehlo<comparison_type {}>",
                compare_type(t.dtype)
            )),
    )
    .remove(0)
}

fn logical(e: &mut Emitter, name: &str, a: &str, b: &str) -> String {
    let p = TensorType::scalar(DType::Bool);
    let ins = [p.clone(), p.clone()];
    let outs = [p];
    e.op(Op::new(name, vec![a.into(), b.into()], &ins, &outs))
        .remove(0)
}

/// Whether key `a` goes before key `b`. Floats: `a < b`, or `b` is NaN and
/// `a` is not (NaN above +inf, as the interpreter orders them); descending
/// swaps the roles.
fn before(e: &mut Emitter, a: &str, b: &str, t: &TensorType, descending: bool) -> String {
    let (lo, hi) = if descending { (b, a) } else { (a, b) };
    let lt = compare(e, "LT", lo, hi, t);
    if !t.dtype.is_float() {
        return lt;
    }
    let hi_nan = compare(e, "NE", hi, hi, t);
    let lo_num = compare(e, "EQ", lo, lo, t);
    let nan_above = logical(e, "stablehlo.and", &hi_nan, &lo_num);
    logical(e, "stablehlo.or", &lt, &nan_above)
}

pub(crate) fn lower_sort(
    e: &mut Emitter,
    c: &Ctx,
    dim: usize,
    descending: bool,
    out_tys: &[TensorType],
) -> Result<Vec<String>> {
    let mut operands = c.ins.clone();
    let mut in_types = c.in_types.clone();
    if out_tys.len() > c.ins.len() {
        // The indices: an iota payload.
        let t = out_tys[c.ins.len()].clone();
        let outs = [t.clone()];
        let iota = e
            .op(Op::new("stablehlo.iota", vec![], &[], &outs)
                .attr(format!("iota_dimension = {dim} : i64")))
            .remove(0);
        operands.push(iota);
        in_types.push(t);
    }
    let scalars: Vec<TensorType> = in_types
        .iter()
        .flat_map(|t| {
            let s = TensorType::scalar(t.dtype);
            [s.clone(), s]
        })
        .collect();
    let op = Op::new("stablehlo.sort", operands, &in_types, out_tys)
        .at(&c.node.loc, c.node.name.as_deref())
        .attr(format!("dimension = {dim} : i64"))
        .attr("is_stable = true");
    e.op_with_regions(op, |e| {
        let a = e.begin_region(true, &scalars);
        let r = before(e, &a[0], &a[1], &scalars[0], descending);
        e.end_region(&[r], &[TensorType::scalar(DType::Bool)]);
        Ok(())
    })
}
