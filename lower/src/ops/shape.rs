//! broadcast_in_dim, reshape, transpose, reverse, slicing, padding, sharding.

use super::Ctx;
use crate::emit::{i64_array, quote, usize_array, Emitter, Op};
use crate::sharding::hlo_sharding;
use crate::Result;
use graph::{Sharding, TensorType};

pub(crate) fn lower_broadcast_in_dim(e: &mut Emitter, c: &Ctx, dims: &[usize]) -> Result<String> {
    let outs = [c.out.clone()];
    let op = c
        .op("stablehlo.broadcast_in_dim", &outs)
        .attr(format!("broadcast_dimensions = {}", usize_array(dims)));
    Ok(e.op(op).remove(0))
}

pub(crate) fn lower_reshape(e: &mut Emitter, c: &Ctx) -> Result<String> {
    let outs = [c.out.clone()];
    Ok(e.op(c.op("stablehlo.reshape", &outs)).remove(0))
}

pub(crate) fn lower_transpose(e: &mut Emitter, c: &Ctx, perm: &[usize]) -> Result<String> {
    let outs = [c.out.clone()];
    let op = c
        .op("stablehlo.transpose", &outs)
        .attr(format!("permutation = {}", usize_array(perm)));
    Ok(e.op(op).remove(0))
}

pub(crate) fn lower_reverse(e: &mut Emitter, c: &Ctx, dims: &[usize]) -> Result<String> {
    let outs = [c.out.clone()];
    let op = c
        .op("stablehlo.reverse", &outs)
        .attr(format!("dimensions = {}", usize_array(dims)));
    Ok(e.op(op).remove(0))
}

pub(crate) fn lower_slice(
    e: &mut Emitter,
    c: &Ctx,
    start: &[i64],
    limit: &[i64],
    stride: &[i64],
) -> Result<String> {
    let outs = [c.out.clone()];
    let op = c
        .op("stablehlo.slice", &outs)
        .attr(format!("start_indices = {}", i64_array(start)))
        .attr(format!("limit_indices = {}", i64_array(limit)))
        .attr(format!("strides = {}", i64_array(stride)));
    Ok(e.op(op).remove(0))
}

pub(crate) fn lower_dynamic_slice(e: &mut Emitter, c: &Ctx, sizes: &[i64]) -> Result<String> {
    let outs = [c.out.clone()];
    let op = c
        .op("stablehlo.dynamic_slice", &outs)
        .attr(format!("slice_sizes = {}", i64_array(sizes)));
    Ok(e.op(op).remove(0))
}

pub(crate) fn lower_dynamic_update_slice(e: &mut Emitter, c: &Ctx) -> Result<String> {
    let outs = [c.out.clone()];
    Ok(e.op(c.op("stablehlo.dynamic_update_slice", &outs))
        .remove(0))
}

pub(crate) fn lower_concatenate(e: &mut Emitter, c: &Ctx, dim: usize) -> Result<String> {
    let outs = [c.out.clone()];
    let op = c
        .op("stablehlo.concatenate", &outs)
        .attr(format!("dimension = {dim} : i64"));
    Ok(e.op(op).remove(0))
}

pub(crate) fn lower_pad(
    e: &mut Emitter,
    c: &Ctx,
    low: &[i64],
    high: &[i64],
    interior: &[i64],
) -> Result<String> {
    let outs = [c.out.clone()];
    let op = c
        .op("stablehlo.pad", &outs)
        .attr(format!("edge_padding_low = {}", i64_array(low)))
        .attr(format!("edge_padding_high = {}", i64_array(high)))
        .attr(format!("interior_padding = {}", i64_array(interior)));
    Ok(e.op(op).remove(0))
}

/// A sharding constraint, as XLA spells it: `custom_call @Sharding`.
pub(crate) fn lower_sharding(e: &mut Emitter, c: &Ctx, s: &Sharding) -> Result<String> {
    let resolved;
    let s = match (s, e.opts.mesh.as_ref()) {
        // A logical layout hint means nothing on one device.
        (Sharding::Logical(_), None) => return Ok(c.ins[0].clone()),
        (Sharding::Logical(names), Some(mesh)) => {
            resolved = Sharding::Mesh(crate::resolve_logical(
                names,
                c.out.dims(),
                &e.opts.axis_rules,
                mesh,
            ));
            &resolved
        }
        _ => s,
    };
    let hs = hlo_sharding(s, c.out.rank(), e.opts.mesh.as_ref())
        .map_err(|err| c.err(err.to_string()))?;
    let outs = [c.out.clone()];
    let op = c
        .op("stablehlo.custom_call", &outs)
        .attr("call_target_name = \"Sharding\"")
        .attr(format!("mhlo.sharding = {}", quote(&hs)));
    Ok(e.op(op).remove(0))
}

/// `x` reshaped to `to` (a helper for other lowerings).
pub(crate) fn reshape_to(e: &mut Emitter, x: &str, from: &TensorType, to: &TensorType) -> String {
    let ins = [from.clone()];
    let outs = [to.clone()];
    e.op(Op::new(
        "stablehlo.reshape",
        vec![x.to_string()],
        &ins,
        &outs,
    ))
    .remove(0)
}
