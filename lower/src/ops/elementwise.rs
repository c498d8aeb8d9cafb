//! Constants, iota and elementwise ops.

use super::Ctx;
use crate::emit::{compare_type, elem, ty, Emitter};
use crate::Result;
use graph::{BinaryOp, CompareDir, Literal, LiteralData, UnaryOp};

pub(crate) fn lower_constant(e: &mut Emitter, c: &Ctx, lit: &Literal) -> Result<String> {
    let t = c.out;
    let value = match &lit.data {
        LiteralData::Splat(v) => elem(t.dtype, *v),
        LiteralData::F32(d) => nested(
            t.dims(),
            &d.iter()
                .map(|&v| elem(t.dtype, v as f64))
                .collect::<Vec<_>>(),
        ),
        LiteralData::I32(d) => nested(
            t.dims(),
            &d.iter()
                .map(|&v| elem(t.dtype, v as f64))
                .collect::<Vec<_>>(),
        ),
    };
    let attr = format!("value = dense<{value}> : {}", ty(t));
    let outs = [t.clone()];
    Ok(e.op(c.op("stablehlo.constant", &outs).attr(attr)).remove(0))
}

/// `[[a, b], [c, d]]` for row-major `flat` of shape `dims`.
fn nested(dims: &[i64], flat: &[String]) -> String {
    if dims.is_empty() {
        return flat.first().cloned().unwrap_or_default();
    }
    let n = dims[0].max(0) as usize;
    let chunk = flat.len().checked_div(n).unwrap_or(0);
    let parts: Vec<String> = (0..n)
        .map(|i| nested(&dims[1..], &flat[i * chunk..(i + 1) * chunk]))
        .collect();
    format!("[{}]", parts.join(", "))
}

pub(crate) fn lower_iota(e: &mut Emitter, c: &Ctx, dim: usize) -> Result<String> {
    let outs = [c.out.clone()];
    Ok(e.op(c
        .op("stablehlo.iota", &outs)
        .attr(format!("iota_dimension = {dim} : i64")))
        .remove(0))
}

pub(crate) fn lower_unary(e: &mut Emitter, c: &Ctx, u: UnaryOp) -> Result<String> {
    // StableHLO has no erf; CHLO's is legalized (to a polynomial) by the PJRT compiler.
    let dialect = if u == UnaryOp::Erf {
        "chlo"
    } else {
        "stablehlo"
    };
    let name = format!("{dialect}.{}", u.name());
    let outs = [c.out.clone()];
    Ok(e.op(c.op(&name, &outs)).remove(0))
}

pub(crate) fn lower_binary(e: &mut Emitter, c: &Ctx, b: BinaryOp) -> Result<String> {
    let name = format!("stablehlo.{}", b.name());
    let outs = [c.out.clone()];
    Ok(e.op(c.op(&name, &outs)).remove(0))
}

pub(crate) fn lower_compare(e: &mut Emitter, c: &Ctx, d: CompareDir) -> Result<String> {
    let outs = [c.out.clone()];
    let op = c
        .op("stablehlo.compare", &outs)
        .attr(format!(
            "comparison_direction = #stablehlo<comparison_direction {}>",
            d.mlir_name()
        ))
        .attr(format!(
            "compare_type = #stablehlo<comparison_type {}>",
            compare_type(c.in_types[0].dtype)
        ));
    Ok(e.op(op).remove(0))
}

pub(crate) fn lower_select(e: &mut Emitter, c: &Ctx) -> Result<String> {
    let outs = [c.out.clone()];
    Ok(e.op(c.op("stablehlo.select", &outs)).remove(0))
}

pub(crate) fn lower_convert(e: &mut Emitter, c: &Ctx) -> Result<String> {
    let outs = [c.out.clone()];
    Ok(e.op(c.op("stablehlo.convert", &outs)).remove(0))
}
