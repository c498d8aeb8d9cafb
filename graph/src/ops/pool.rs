//! reduce_window (max / sum pooling) and select_and_scatter_add (the
//! gradient of max pooling).

use super::common::{arity, dims, Cts, Vjp};
use super::conv::{dilate, resolve_padding, window_out, Padding};
use super::reduce::ReduceKind;
use crate::error::{GraphError, Result};
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::types::{DType, TensorType};
use serde::{Deserialize, Serialize};

/// A window over every dim of the operand (1 for batch and channels).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    pub dims: Vec<i64>,
    pub strides: Vec<i64>,
    pub padding: Vec<(i64, i64)>,
}

pub(crate) fn window_output(w: &Window, x: &TensorType) -> Result<Vec<i64>, String> {
    let r = x.rank();
    if w.dims.len() != r || w.strides.len() != r || w.padding.len() != r {
        return Err(format!(
            "window {} strides {} need {r} entries for operand {x}",
            dims(&w.dims),
            dims(&w.strides)
        ));
    }
    if w.dims.iter().chain(&w.strides).any(|&v| v < 1)
        || w.padding.iter().any(|&(l, h)| l < 0 || h < 0)
    {
        return Err(format!(
            "bad window {} strides {} padding {:?}",
            dims(&w.dims),
            dims(&w.strides),
            w.padding
        ));
    }
    (0..r)
        .map(|i| {
            let padded = x.dims()[i] + w.padding[i].0 + w.padding[i].1;
            if w.dims[i] > padded {
                return Err(format!(
                    "dim {i}: window {} does not fit the padded operand {padded} (operand {x}): \
                     the input is too small for this layer",
                    w.dims[i]
                ));
            }
            Ok(window_out(padded, w.dims[i], w.strides[i]))
        })
        .collect()
}

pub(crate) fn infer_reduce_window(
    _kind: ReduceKind,
    w: &Window,
    ins: &[&TensorType],
) -> Result<TensorType, String> {
    arity(ins, 1)?;
    let x = ins[0];
    if x.dtype == DType::Bool {
        return Err(format!("unsupported element type: operand {x}"));
    }
    Ok(TensorType::new(x.dtype, window_output(w, x)?))
}

pub(crate) fn infer_select_and_scatter_add(
    w: &Window,
    ins: &[&TensorType],
) -> Result<TensorType, String> {
    arity(ins, 2)?;
    let (src, x) = (ins[0], ins[1]);
    let out = window_output(w, x)?;
    if src.dtype != x.dtype || src.dims() != out.as_slice() {
        return Err(format!(
            "source {src} does not match the windows of operand {x} ({})",
            dims(&out)
        ));
    }
    Ok(x.clone())
}

impl Graph {
    #[track_caller]
    pub fn reduce_window(&mut self, x: NodeId, kind: ReduceKind, window: Window) -> Result<NodeId> {
        self.push(Op::ReduceWindow { kind, window }, &[x])
    }

    #[track_caller]
    pub fn select_and_scatter_add(
        &mut self,
        source: NodeId,
        operand: NodeId,
        window: Window,
    ) -> Result<NodeId> {
        self.push(Op::SelectAndScatterAdd { window }, &[source, operand])
    }

    /// The NHWC window for 2-D pooling.
    #[track_caller]
    fn pool_window(
        &self,
        x: NodeId,
        size: [i64; 2],
        strides: [i64; 2],
        padding: &Padding,
    ) -> Result<Window> {
        let xd = self.dims(x)?.to_vec();
        if xd.len() != 4 {
            return Err(self.err(
                "reduce_window",
                format!("2-D pooling needs an NHWC input, got {}", dims(&xd)),
            ));
        }
        let p = resolve_padding(padding, &xd[1..3], &size, &strides, &[1, 1]);
        if p.len() != 2 {
            return Err(self.err("reduce_window", "2-D pooling needs 2 padding pairs"));
        }
        Ok(Window {
            dims: vec![1, size[0], size[1], 1],
            strides: vec![1, strides[0], strides[1], 1],
            padding: vec![(0, 0), p[0], p[1], (0, 0)],
        })
    }

    /// Max pooling over H and W of an NHWC input.
    #[track_caller]
    pub fn max_pool2d(
        &mut self,
        x: NodeId,
        size: [i64; 2],
        strides: [i64; 2],
        padding: Padding,
    ) -> Result<NodeId> {
        let w = self.pool_window(x, size, strides, &padding)?;
        self.reduce_window(x, ReduceKind::Max, w)
    }

    /// Average pooling; padded positions are not counted (as TF/Keras).
    #[track_caller]
    pub fn avg_pool2d(
        &mut self,
        x: NodeId,
        size: [i64; 2],
        strides: [i64; 2],
        padding: Padding,
    ) -> Result<NodeId> {
        let w = self.pool_window(x, size, strides, &padding)?;
        let xd = self.dims(x)?.to_vec();
        let sum = self.reduce_window(x, ReduceKind::Sum, w.clone())?;
        let ones = self.full(1.0, TensorType::new(self.dtype(x)?, [1, xd[1], xd[2], 1]))?;
        let count = self.reduce_window(ones, ReduceKind::Sum, w)?;
        self.div(sum, count)
    }
}

pub(crate) fn vjp_reduce_window(
    g: &mut Graph,
    kind: ReduceKind,
    w: &Window,
    v: &Vjp,
) -> Result<Cts> {
    let x = v.x(0);
    let d = match kind {
        ReduceKind::Max => g.select_and_scatter_add(v.ct, x, w.clone())?,
        ReduceKind::Min => {
            // min(x) = -max(-x): the selected positions are those of max(-x).
            let nx = g.neg(x)?;
            g.select_and_scatter_add(v.ct, nx, w.clone())?
        }
        ReduceKind::Sum => {
            // Each output received its window: spread the cotangent back by
            // dilating it with the strides and summing windows (JAX's rule).
            let xd = g.dims(x)?.to_vec();
            let od = g.dims(v.out)?.to_vec();
            let r = xd.len();
            let mut low = Vec::with_capacity(r);
            let mut high = Vec::with_capacity(r);
            for i in 0..r {
                let before = w.dims[i] - w.padding[i].0 - 1;
                let after = xd[i] + w.dims[i] - 1 - dilate(od[i], w.strides[i]) - before;
                low.push(before);
                high.push(after);
            }
            let interior: Vec<i64> = w.strides.iter().map(|s| s - 1).collect();
            let zero = g.scalar_like(v.ct, 0.0)?;
            let padded = g.pad(v.ct, zero, &low, &high, &interior)?;
            let back = Window {
                dims: w.dims.clone(),
                strides: vec![1; r],
                padding: vec![(0, 0); r],
            };
            g.reduce_window(padded, ReduceKind::Sum, back)?
        }
    };
    Ok(vec![Some(d)])
}

pub(crate) fn vjp_select_and_scatter_add(g: &Graph, id: NodeId) -> Result<Cts> {
    let n = g.node(id)?;
    Err(GraphError::NoGradient {
        op: n.op.name(),
        loc: n.loc.clone(),
        msg: "second derivative of max pooling is not supported".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::Padding;
    use crate::{Graph, TensorType};

    #[test]
    fn pooling_shapes() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([2, 7, 7, 3])).unwrap();
        let m = g.max_pool2d(x, [2, 2], [2, 2], Padding::Valid).unwrap();
        assert_eq!(g.dims(m).unwrap(), &[2, 3, 3, 3]);
        let a = g.avg_pool2d(x, [3, 3], [2, 2], Padding::Same).unwrap();
        assert_eq!(g.dims(a).unwrap(), &[2, 4, 4, 3]);
        let e = g.select_and_scatter_add(
            x,
            x,
            crate::Window {
                dims: vec![1, 2, 2, 1],
                strides: vec![1, 2, 2, 1],
                padding: vec![(0, 0); 4],
            },
        );
        let e = e.unwrap_err().to_string();
        assert!(
            e.starts_with("select_and_scatter_add at") && e.contains("[2,3,3,3]"),
            "{e}"
        );
    }
}
