//! dot_general and convolution.

use super::Ctx;
use crate::emit::{i64_array, list, padding_attr, Emitter};
use crate::Result;
use graph::{ConvParams, DotDims};

pub(crate) fn lower_dot_general(e: &mut Emitter, c: &Ctx, d: &DotDims) -> Result<String> {
    let fields: Vec<String> = [
        ("lhs_batching_dimensions", &d.lhs_batch),
        ("rhs_batching_dimensions", &d.rhs_batch),
        ("lhs_contracting_dimensions", &d.lhs_contract),
        ("rhs_contracting_dimensions", &d.rhs_contract),
    ]
    .iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(n, v)| format!("{n} = {}", list(v)))
    .collect();
    let outs = [c.out.clone()];
    let op = c.op("stablehlo.dot_general", &outs).attr(format!(
        "dot_dimension_numbers = #stablehlo.dot<{}>",
        fields.join(", ")
    ));
    Ok(e.op(op).remove(0))
}

/// `[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]`: each operand's dims labelled.
fn conv_layout(p: &ConvParams) -> String {
    let d = &p.dims;
    let n = d.input_spatial.len();
    let label = |a: usize, la: &str, b: usize, lb: &str, s: &[usize]| {
        let mut v = vec![String::new(); n + 2];
        v[a] = la.into();
        v[b] = lb.into();
        for (i, &sd) in s.iter().enumerate() {
            v[sd] = i.to_string();
        }
        format!("[{}]", v.join(", "))
    };
    format!(
        "{}x{}->{}",
        label(d.input_batch, "b", d.input_feature, "f", &d.input_spatial),
        label(
            d.kernel_output_feature,
            "o",
            d.kernel_input_feature,
            "i",
            &d.kernel_spatial
        ),
        label(
            d.output_batch,
            "b",
            d.output_feature,
            "f",
            &d.output_spatial
        )
    )
}

pub(crate) fn lower_convolution(e: &mut Emitter, c: &Ctx, p: &ConvParams) -> Result<String> {
    let outs = [c.out.clone()];
    let op = c
        .op("stablehlo.convolution", &outs)
        .attr(format!(
            "dimension_numbers = #stablehlo.conv<{}>",
            conv_layout(p)
        ))
        .attr(format!("window_strides = {}", i64_array(&p.window_strides)))
        .attr(format!("padding = {}", padding_attr(&p.padding)))
        .attr(format!("lhs_dilation = {}", i64_array(&p.lhs_dilation)))
        .attr(format!("rhs_dilation = {}", i64_array(&p.rhs_dilation)))
        .attr("feature_group_count = 1 : i64")
        .attr("batch_group_count = 1 : i64");
    Ok(e.op(op).remove(0))
}
