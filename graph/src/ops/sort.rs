//! Sort along one dim: keys, with payloads permuted alongside.
//!
//! `Op::Sort { dim, descending, indices }` takes `[keys, payloads..]`, all of
//! the same dims, and returns the tuple `(keys, payloads.., [indices])`
//! sorted by the keys along `dim`. With `indices`, the last element holds
//! the i32 position each sorted element had along `dim` (the argsort).
//! The sort is stable: equal keys keep their input order. Float keys are
//! ordered with NaN above +inf (NaNs go last ascending, first descending)
//! and -0.0 equal to 0.0.
//!
//! The VJP sends each cotangent back to the position its element came
//! from: sorting `(indices, ct)` pairs by the indices is the inverse
//! permutation, so the VJP is itself a sort.

use super::common::Cts;
use crate::error::{GraphError, Result};
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::types::{DType, NodeType, TensorType};

pub(crate) fn infer_sort(
    dim: usize,
    indices: bool,
    ins: &[&TensorType],
) -> Result<Vec<TensorType>, String> {
    let Some(keys) = ins.first() else {
        return Err("needs the keys operand".into());
    };
    if dim >= keys.rank() {
        return Err(format!("dim {dim} out of range for keys {keys}"));
    }
    for (i, t) in ins.iter().enumerate().skip(1) {
        if t.dims() != keys.dims() {
            return Err(format!(
                "payload {} is {t} but the keys are {keys} (dims must match)",
                i - 1
            ));
        }
    }
    if indices && keys.dims()[dim] > i32::MAX as i64 {
        return Err(format!("dim {dim} of {keys} is too long for i32 indices"));
    }
    let mut out: Vec<TensorType> = ins.iter().map(|t| (*t).clone()).collect();
    if indices {
        out.push(keys.with_dtype(DType::I32));
    }
    Ok(out)
}

impl Graph {
    /// `x` sorted along `dim` (stable; see the module doc for NaN).
    #[track_caller]
    pub fn sort(&mut self, x: NodeId, dim: usize, descending: bool) -> Result<NodeId> {
        Ok(self.sort_op(&[x], dim, descending, false)?[0])
    }

    /// The i32 positions that sort `x` along `dim`: `sort(x)` equals `x`
    /// gathered at them along `dim`. Ties keep their input order.
    #[track_caller]
    pub fn argsort(&mut self, x: NodeId, dim: usize, descending: bool) -> Result<NodeId> {
        Ok(self.sort_op(&[x], dim, descending, true)?[1])
    }

    /// `keys` sorted along `dim`, each payload permuted the same way;
    /// returns `[sorted keys, sorted payloads..]`.
    #[track_caller]
    pub fn sort_with_payload(
        &mut self,
        keys: NodeId,
        payloads: &[NodeId],
        dim: usize,
        descending: bool,
    ) -> Result<Vec<NodeId>> {
        let mut ops = vec![keys];
        ops.extend_from_slice(payloads);
        self.sort_op(&ops, dim, descending, false)
    }

    /// The sort node's elements: `operands` sorted, then the indices if asked for.
    #[track_caller]
    fn sort_op(
        &mut self,
        operands: &[NodeId],
        dim: usize,
        descending: bool,
        indices: bool,
    ) -> Result<Vec<NodeId>> {
        let op = Op::Sort {
            dim,
            descending,
            indices,
        };
        let s = self.push(op, operands)?;
        let n = self.node_type(s)?.elements().len();
        (0..n).map(|i| self.get_tuple_element(s, i)).collect()
    }
}

/// Makes sort `id` also return its indices (rewritten in place, existing
/// tuple indices keep their meaning) and returns the node reading them.
pub(crate) fn save_indices(g: &mut Graph, id: NodeId) -> Result<NodeId> {
    let node = g.node(id)?.clone();
    let Op::Sort {
        dim,
        descending,
        indices,
    } = node.op
    else {
        return Err(GraphError::Invalid(format!("{id} is not a sort")));
    };
    if !indices {
        let op = Op::Sort {
            dim,
            descending,
            indices: true,
        };
        let tys: Vec<&NodeType> = node
            .inputs
            .iter()
            .map(|&i| g.node_type(i))
            .collect::<Result<_>>()?;
        let ty = crate::op::infer(&op, &tys).map_err(|msg| GraphError::Op {
            op: "sort",
            loc: node.loc.clone(),
            msg,
        })?;
        g.nodes[id.index()].op = op;
        g.nodes[id.index()].ty = ty;
    }
    let k = node.inputs.len();
    g.with_location(node.loc, |g| g.get_tuple_element(id, k))
}

/// Cotangents of the sort's operands from those of its sorted elements:
/// one ascending sort keyed by `perm` (the saved indices) carries them all
/// back to their input positions.
pub(crate) fn vjp_sort(
    g: &mut Graph,
    dim: usize,
    inputs: &[NodeId],
    cts: &[Option<NodeId>],
    perm: NodeId,
) -> Result<Cts> {
    let mut which = Vec::new();
    let mut payloads = Vec::new();
    for (i, &x) in inputs.iter().enumerate() {
        if let (Some(c), true) = (cts.get(i).copied().flatten(), g.dtype(x)?.is_float()) {
            which.push(i);
            payloads.push(c);
        }
    }
    let mut res: Cts = vec![None; inputs.len()];
    if which.is_empty() {
        return Ok(res);
    }
    let back = g.sort_with_payload(perm, &payloads, dim, false)?;
    for (k, &i) in which.iter().enumerate() {
        res[i] = Some(back[1 + k]);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use crate::interp::{eval, HostTensor};
    use crate::{DType, Graph, TensorType};

    #[test]
    fn shapes_and_errors() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([2, 5])).unwrap();
        let p = g.input("p", TensorType::new(DType::I32, [2, 5])).unwrap();
        let q = g.input("q", TensorType::f32([5, 2])).unwrap();
        let a = g.argsort(x, 1, false).unwrap();
        assert_eq!(g.ty(a).unwrap(), &TensorType::new(DType::I32, [2, 5]));
        let s = g.sort_with_payload(x, &[p], 0, true).unwrap();
        assert_eq!(g.ty(s[1]).unwrap(), &TensorType::new(DType::I32, [2, 5]));
        let e = g.sort(x, 2, false).unwrap_err().to_string();
        assert!(e.starts_with("sort at") && e.contains("dim 2"), "{e}");
        let e = g.sort_with_payload(x, &[q], 1, false).unwrap_err();
        assert!(e.to_string().contains("payload 0 is f32[5,2]"), "{e}");
    }

    #[test]
    fn stable_with_nans_and_both_directions() {
        let nan = f32::NAN;
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([2, 5])).unwrap();
        let up = g.sort(x, 1, false).unwrap();
        let iu = g.argsort(x, 1, false).unwrap();
        let down = g.sort(x, 1, true).unwrap();
        let id = g.argsort(x, 1, true).unwrap();
        let cols = g.argsort(x, 0, false).unwrap();
        g.set_outputs(&[up, iu, down, id, cols]).unwrap();
        let data = [3., nan, -0.0, 1., 0., 2., 2., -1., nan, 2.];
        let r = eval(&g, &[HostTensor::f32(&[2, 5], &data).unwrap()]).unwrap();
        let show = |v: &[f64]| format!("{v:?}");
        assert_eq!(
            show(&r[0].data),
            "[-0.0, 0.0, 1.0, 3.0, NaN, -1.0, 2.0, 2.0, 2.0, NaN]"
        );
        assert_eq!(r[1].data, [2., 4., 3., 0., 1., 2., 0., 1., 4., 3.]);
        assert_eq!(
            show(&r[2].data),
            "[NaN, 3.0, 1.0, -0.0, 0.0, NaN, 2.0, 2.0, 2.0, -1.0]"
        );
        assert_eq!(r[3].data, [1., 0., 3., 2., 4., 3., 0., 1., 4., 2.]);
        // Along dim 0: NaN last in its column.
        assert_eq!(r[4].data, [1., 1., 1., 0., 0., 0., 0., 0., 1., 1.]);
    }
}
