//! General convolution (StableHLO `convolution`, feature_group_count = 1).
//! General enough that its VJP is two more convolutions (JAX's rules).

use super::common::{arity, check_perm, dims, Cts, Vjp};
use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::types::{DType, TensorType};
use serde::{Deserialize, Serialize};

/// Which operand dims are batch, feature and spatial.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvDims {
    pub input_batch: usize,
    pub input_feature: usize,
    pub input_spatial: Vec<usize>,
    pub kernel_input_feature: usize,
    pub kernel_output_feature: usize,
    pub kernel_spatial: Vec<usize>,
    pub output_batch: usize,
    pub output_feature: usize,
    pub output_spatial: Vec<usize>,
}

impl ConvDims {
    /// NHWC input, HWIO kernel, NHWC output (Keras/TF layout).
    pub fn nhwc_hwio() -> Self {
        ConvDims {
            input_batch: 0,
            input_feature: 3,
            input_spatial: vec![1, 2],
            kernel_input_feature: 2,
            kernel_output_feature: 3,
            kernel_spatial: vec![0, 1],
            output_batch: 0,
            output_feature: 3,
            output_spatial: vec![1, 2],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvParams {
    pub window_strides: Vec<i64>,
    /// (low, high) per spatial dim; may be negative.
    pub padding: Vec<(i64, i64)>,
    /// Input dilation (transposed convolution / input gradient).
    pub lhs_dilation: Vec<i64>,
    /// Kernel dilation (atrous convolution).
    pub rhs_dilation: Vec<i64>,
    pub dims: ConvDims,
    /// Result dtype when wider than the operands' (bf16 -> f32).
    pub out_dtype: Option<DType>,
}

/// How builders pick padding for convolutions and pooling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Output size `ceil(in / stride)`, extra padding at the end (TF/Keras).
    Same,
    Valid,
    Explicit(Vec<(i64, i64)>),
}

pub(crate) fn dilate(n: i64, d: i64) -> i64 {
    if n == 0 {
        0
    } else {
        1 + d * (n - 1)
    }
}

/// Output size of a window of `window` (already dilated) sliding over a
/// padded extent of `padded` with `stride`.
pub(crate) fn window_out(padded: i64, window: i64, stride: i64) -> i64 {
    if padded < window {
        0
    } else {
        (padded - window) / stride + 1
    }
}

/// Explicit per-dim padding for `p` (SAME as TF computes it).
pub(crate) fn resolve_padding(
    p: &Padding,
    input: &[i64],
    window: &[i64],
    strides: &[i64],
    dilation: &[i64],
) -> Vec<(i64, i64)> {
    match p {
        Padding::Valid => vec![(0, 0); input.len()],
        Padding::Explicit(v) => v.clone(),
        Padding::Same => (0..input.len())
            .map(|i| {
                let out = (input[i] + strides[i] - 1) / strides[i];
                let need = (out - 1) * strides[i] + dilate(window[i], dilation[i]) - input[i];
                let total = need.max(0);
                (total / 2, total - total / 2)
            })
            .collect(),
    }
}

pub(crate) fn infer_conv(p: &ConvParams, ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 2)?;
    let (x, k) = (ins[0], ins[1]);
    let d = &p.dims;
    let n = d.input_spatial.len();
    if x.dtype != k.dtype || x.dtype == DType::Bool {
        return Err(format!("bad element types: input {x} vs kernel {k}"));
    }
    if d.kernel_spatial.len() != n || d.output_spatial.len() != n {
        return Err("dimension numbers disagree on the number of spatial dims".into());
    }
    if x.rank() != n + 2 || k.rank() != n + 2 {
        return Err(format!("input {x} and kernel {k} must have rank {}", n + 2));
    }
    let perm = |a: usize, b: usize, s: &[usize]| {
        let mut v = vec![a, b];
        v.extend_from_slice(s);
        check_perm(&v, n + 2)
    };
    perm(d.input_batch, d.input_feature, &d.input_spatial)
        .map_err(|e| format!("input dims: {e}"))?;
    perm(
        d.kernel_input_feature,
        d.kernel_output_feature,
        &d.kernel_spatial,
    )
    .map_err(|e| format!("kernel dims: {e}"))?;
    perm(d.output_batch, d.output_feature, &d.output_spatial)
        .map_err(|e| format!("output dims: {e}"))?;
    let lens_ok = p.window_strides.len() == n
        && p.padding.len() == n
        && p.lhs_dilation.len() == n
        && p.rhs_dilation.len() == n;
    if !lens_ok {
        return Err(format!(
            "strides, padding and dilations need {n} entries each"
        ));
    }
    if p.window_strides
        .iter()
        .chain(&p.lhs_dilation)
        .chain(&p.rhs_dilation)
        .any(|&s| s < 1)
    {
        return Err("strides and dilations must be >= 1".into());
    }
    let (xf, kf) = (x.dims()[d.input_feature], k.dims()[d.kernel_input_feature]);
    if xf != kf {
        return Err(format!(
            "feature mismatch: input {} dim {} = {xf} vs kernel {} dim {} = {kf}",
            dims(x.dims()),
            d.input_feature,
            dims(k.dims()),
            d.kernel_input_feature
        ));
    }
    let mut out = vec![0; n + 2];
    out[d.output_batch] = x.dims()[d.input_batch];
    out[d.output_feature] = k.dims()[d.kernel_output_feature];
    for i in 0..n {
        let (lo, hi) = p.padding[i];
        let padded = dilate(x.dims()[d.input_spatial[i]], p.lhs_dilation[i]) + lo + hi;
        let win = dilate(k.dims()[d.kernel_spatial[i]], p.rhs_dilation[i]);
        if win > padded || win < 1 {
            return Err(format!(
                "spatial dim {i}: window {win} does not fit the padded input {padded} \
                 (input {}, kernel {}): the input is too small for this layer",
                dims(x.dims()),
                dims(k.dims())
            ));
        }
        out[d.output_spatial[i]] = window_out(padded, win, p.window_strides[i]);
    }
    Ok(TensorType::new(p.out_dtype.unwrap_or(x.dtype), out))
}

impl Graph {
    #[track_caller]
    pub fn conv(&mut self, x: NodeId, kernel: NodeId, p: ConvParams) -> Result<NodeId> {
        self.push(Op::Conv(p), &[x, kernel])
    }

    /// 2-D convolution, NHWC input and HWIO kernel.
    #[track_caller]
    pub fn conv2d(
        &mut self,
        x: NodeId,
        kernel: NodeId,
        strides: [i64; 2],
        padding: Padding,
        dilation: [i64; 2],
    ) -> Result<NodeId> {
        let (xd, kd) = (self.dims(x)?.to_vec(), self.dims(kernel)?.to_vec());
        if xd.len() != 4 || kd.len() != 4 {
            return Err(self.err(
                "convolution",
                format!(
                    "conv2d needs NHWC input and HWIO kernel: input {} kernel {}",
                    dims(&xd),
                    dims(&kd)
                ),
            ));
        }
        let padding = resolve_padding(&padding, &xd[1..3], &kd[0..2], &strides, &dilation);
        let p = ConvParams {
            window_strides: strides.to_vec(),
            padding,
            lhs_dilation: vec![1, 1],
            rhs_dilation: dilation.to_vec(),
            dims: ConvDims::nhwc_hwio(),
            out_dtype: None,
        };
        self.conv(x, kernel, p)
    }
}

pub(crate) fn vjp_conv(g: &mut Graph, p: &ConvParams, v: &Vjp) -> Result<Cts> {
    let (x, k) = (v.x(0), v.x(1));
    let (xt, kt) = (g.ty(x)?.clone(), g.ty(k)?.clone());
    let ot = g.ty(v.out)?.clone();
    let d = &p.dims;
    let n = d.input_spatial.len();
    let (ct, acc) = if ot.dtype != xt.dtype {
        (g.convert(v.ct, xt.dtype)?, Some(ot.dtype))
    } else {
        (v.ct, None)
    };
    let in_s: Vec<i64> = d.input_spatial.iter().map(|&i| xt.dims()[i]).collect();
    let k_s: Vec<i64> = d.kernel_spatial.iter().map(|&i| kt.dims()[i]).collect();
    let out_s: Vec<i64> = d.output_spatial.iter().map(|&i| ot.dims()[i]).collect();
    let (x_dil, k_dil, o_dil): (Vec<i64>, Vec<i64>, Vec<i64>) = (
        (0..n).map(|i| dilate(in_s[i], p.lhs_dilation[i])).collect(),
        (0..n).map(|i| dilate(k_s[i], p.rhs_dilation[i])).collect(),
        (0..n)
            .map(|i| dilate(out_s[i], p.window_strides[i]))
            .collect(),
    );

    // Input gradient: convolve the cotangent with the flipped kernel.
    let lhs_pad: Vec<(i64, i64)> = (0..n)
        .map(|i| {
            let before = k_dil[i] - p.padding[i].0 - 1;
            (before, x_dil[i] + k_dil[i] - 1 - o_dil[i] - before)
        })
        .collect();
    let flipped = g.reverse(k, &d.kernel_spatial)?;
    let lhs_params = ConvParams {
        window_strides: p.lhs_dilation.clone(),
        padding: lhs_pad,
        lhs_dilation: p.window_strides.clone(),
        rhs_dilation: p.rhs_dilation.clone(),
        dims: ConvDims {
            input_batch: d.output_batch,
            input_feature: d.output_feature,
            input_spatial: d.output_spatial.clone(),
            kernel_input_feature: d.kernel_output_feature,
            kernel_output_feature: d.kernel_input_feature,
            kernel_spatial: d.kernel_spatial.clone(),
            output_batch: d.input_batch,
            output_feature: d.input_feature,
            output_spatial: d.input_spatial.clone(),
        },
        out_dtype: acc,
    };
    let dx = g.conv(ct, flipped, lhs_params)?;

    // Kernel gradient: convolve the input with the cotangent, batch as feature.
    let rhs_pad: Vec<(i64, i64)> = (0..n)
        .map(|i| {
            let lo = p.padding[i].0;
            (lo, (o_dil[i] - x_dil[i]) + (k_dil[i] - lo - 1))
        })
        .collect();
    let rhs_params = ConvParams {
        window_strides: p.rhs_dilation.clone(),
        padding: rhs_pad,
        lhs_dilation: p.lhs_dilation.clone(),
        rhs_dilation: p.window_strides.clone(),
        dims: ConvDims {
            input_batch: d.input_feature,
            input_feature: d.input_batch,
            input_spatial: d.input_spatial.clone(),
            kernel_input_feature: d.output_batch,
            kernel_output_feature: d.output_feature,
            kernel_spatial: d.output_spatial.clone(),
            output_batch: d.kernel_input_feature,
            output_feature: d.kernel_output_feature,
            output_spatial: d.kernel_spatial.clone(),
        },
        out_dtype: acc,
    };
    let dk = g.conv(x, ct, rhs_params)?;
    Ok(vec![
        Some(g.convert(dx, xt.dtype)?),
        Some(g.convert(dk, kt.dtype)?),
    ])
}

#[cfg(test)]
mod tests {
    use super::Padding;
    use crate::{Graph, TensorType};

    #[test]
    fn conv2d_shapes() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([2, 28, 28, 3])).unwrap();
        let k = g.parameter("k", TensorType::f32([3, 3, 3, 8])).unwrap();
        let y = g.conv2d(x, k, [1, 1], Padding::Same, [1, 1]).unwrap();
        assert_eq!(g.dims(y).unwrap(), &[2, 28, 28, 8]);
        let y = g.conv2d(x, k, [2, 2], Padding::Same, [1, 1]).unwrap();
        assert_eq!(g.dims(y).unwrap(), &[2, 14, 14, 8]);
        let y = g.conv2d(x, k, [1, 1], Padding::Valid, [2, 2]).unwrap();
        assert_eq!(g.dims(y).unwrap(), &[2, 24, 24, 8]);
        let bad = g.parameter("bad", TensorType::f32([3, 3, 4, 8])).unwrap();
        let e = g
            .conv2d(x, bad, [1, 1], Padding::Same, [1, 1])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("convolution at") && e.contains("[2,28,28,3] dim 3 = 3"),
            "{e}"
        );
        assert!(e.contains("[3,3,4,8] dim 2 = 4"), "{e}");
    }
}
