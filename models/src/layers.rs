//! Small layer functions shared by models (Keras semantics: glorot-uniform kernels, zero biases).

use graph::{DType, Graph, NodeId, Padding, TensorType};

use crate::param::{Init, Params};

/// `x [.., in] @ w [in, out] + b` under parameter scope `name`.
#[track_caller]
pub fn dense(
    g: &mut Graph,
    p: &mut Params,
    name: &str,
    x: NodeId,
    units: usize,
) -> graph::Result<NodeId> {
    let d_in = *g.dims(x)?.last().unwrap_or(&1) as usize;
    let dtype = DType::F32;
    let (w, b) = p.scope(name, |p| -> graph::Result<_> {
        let w = p.declare(
            g,
            "kernel",
            TensorType::new(dtype, [d_in as i64, units as i64]),
            Init::GlorotUniform {
                fan_in: d_in,
                fan_out: units,
            },
        )?;
        let b = p.declare(
            g,
            "bias",
            TensorType::new(dtype, [units as i64]),
            Init::Zeros,
        )?;
        Ok((w, b))
    })?;
    let y = g.matmul(x, w)?;
    g.add(y, b)
}

/// 2-D convolution (NHWC, HWIO kernel) with bias, stride 1, under scope `name`.
#[track_caller]
pub fn conv2d(
    g: &mut Graph,
    p: &mut Params,
    name: &str,
    x: NodeId,
    filters: usize,
    kernel: [usize; 2],
    padding: Padding,
) -> graph::Result<NodeId> {
    let c_in = g.dims(x)?[3] as usize;
    let (kh, kw) = (kernel[0], kernel[1]);
    let (k, b) = p.scope(name, |p| -> graph::Result<_> {
        let k = p.declare(
            g,
            "kernel",
            TensorType::f32([kh as i64, kw as i64, c_in as i64, filters as i64]),
            Init::GlorotUniform {
                fan_in: kh * kw * c_in,
                fan_out: kh * kw * filters,
            },
        )?;
        let b = p.declare(g, "bias", TensorType::f32([filters as i64]), Init::Zeros)?;
        Ok((k, b))
    })?;
    let y = g.conv2d(x, k, [1, 1], padding, [1, 1])?;
    g.add(y, b)
}

/// Flattens all but the leading (batch) dim.
#[track_caller]
pub fn flatten(g: &mut Graph, x: NodeId) -> graph::Result<NodeId> {
    let d = g.dims(x)?.to_vec();
    let rest: i64 = d[1..].iter().product();
    g.reshape(x, [d[0], rest])
}
