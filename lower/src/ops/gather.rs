//! Row gather and scatter-add as `stablehlo.gather` / `stablehlo.scatter`.

use super::Ctx;
use crate::emit::{i64_array, list, Emitter, Op};
use crate::Result;
use graph::TensorType;

/// `[a, b, ..]` field of a `#stablehlo.*<...>` attribute, left out when empty.
fn field(name: &str, v: &[usize]) -> Option<String> {
    (!v.is_empty()).then(|| format!("{name} = {}", list(v)))
}

pub(crate) fn lower_gather(e: &mut Emitter, c: &Ctx) -> Result<String> {
    let (table, ids) = (&c.in_types[0], &c.in_types[1]);
    let k = ids.rank();
    let offset: Vec<usize> = (k..k + table.rank() - 1).collect();
    let mut dn: Vec<String> = Vec::new();
    dn.extend(field("offset_dims", &offset));
    dn.extend(field("collapsed_slice_dims", &[0]));
    dn.extend(field("start_index_map", &[0]));
    dn.push(format!("index_vector_dim = {k}"));
    let mut sizes = vec![1];
    sizes.extend_from_slice(&table.dims()[1..]);
    let outs = [c.out.clone()];
    let op = c
        .op("stablehlo.gather", &outs)
        .attr(format!(
            "dimension_numbers = #stablehlo.gather<{}>",
            dn.join(", ")
        ))
        .attr(format!("slice_sizes = {}", i64_array(&sizes)))
        .attr("indices_are_sorted = false");
    Ok(e.op(op).remove(0))
}

pub(crate) fn lower_scatter_add(e: &mut Emitter, c: &Ctx) -> Result<String> {
    let (x, ids) = (&c.in_types[0], &c.in_types[1]);
    let k = ids.rank();
    let window: Vec<usize> = (k..k + x.rank() - 1).collect();
    let mut dn: Vec<String> = Vec::new();
    dn.extend(field("update_window_dims", &window));
    dn.extend(field("inserted_window_dims", &[0]));
    dn.extend(field("scatter_dims_to_operand_dims", &[0]));
    dn.push(format!("index_vector_dim = {k}"));
    let outs = [c.out.clone()];
    let op = c
        .op("stablehlo.scatter", &outs)
        .attr(format!(
            "scatter_dimension_numbers = #stablehlo.scatter<{}>",
            dn.join(", ")
        ))
        .attr("indices_are_sorted = false")
        .attr("unique_indices = false");
    let s = TensorType::scalar(x.dtype);
    e.op_with_regions(op, |e| {
        let a = e.begin_region(true, &[s.clone(), s.clone()]);
        let sum = scalar_binary(e, "stablehlo.add", &a[0], &a[1], &s);
        e.end_region(&[sum], std::slice::from_ref(&s));
        Ok(())
    })
    .map(|mut r| r.remove(0))
}

/// `name(a, b)` on scalars of type `s` (region bodies).
pub(crate) fn scalar_binary(
    e: &mut Emitter,
    name: &str,
    a: &str,
    b: &str,
    s: &TensorType,
) -> String {
    let ins = [s.clone(), s.clone()];
    let outs = [s.clone()];
    e.op(Op::new(
        name,
        vec![a.to_string(), b.to_string()],
        &ins,
        &outs,
    ))
    .remove(0)
}
