//! Reductions over dims (sum, max, min; mean as a composite) and argmax.

use super::common::{arity, check_dims, Cts, Vjp};
use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::types::{DType, TensorType};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReduceKind {
    Sum,
    Max,
    Min,
}

pub(crate) fn infer_reduce(
    kind: ReduceKind,
    rdims: &[usize],
    ins: &[&TensorType],
) -> Result<TensorType, String> {
    arity(ins, 1)?;
    let x = ins[0];
    if x.dtype == DType::Bool {
        return Err(format!(
            "unsupported element type for {kind:?}: operand {x}"
        ));
    }
    check_dims("reduce", rdims, x.rank()).map_err(|e| format!("{e} (operand {x})"))?;
    let out: Vec<i64> = (0..x.rank())
        .filter(|d| !rdims.contains(d))
        .map(|d| x.dims()[d])
        .collect();
    Ok(TensorType::new(x.dtype, out))
}

pub(crate) fn infer_argmax(
    dim: usize,
    index_dtype: DType,
    ins: &[&TensorType],
) -> Result<TensorType, String> {
    arity(ins, 1)?;
    let x = ins[0];
    if dim >= x.rank() || x.dims()[dim] == 0 {
        return Err(format!("dim {dim} out of range or empty for operand {x}"));
    }
    if !index_dtype.is_int() || x.dtype == DType::Bool {
        return Err(format!("bad types: operand {x}, index type {index_dtype}"));
    }
    let out: Vec<i64> = (0..x.rank())
        .filter(|&d| d != dim)
        .map(|d| x.dims()[d])
        .collect();
    Ok(TensorType::new(index_dtype, out))
}

impl Graph {
    #[track_caller]
    pub fn reduce(&mut self, x: NodeId, kind: ReduceKind, dims: &[usize]) -> Result<NodeId> {
        if dims.is_empty() {
            return Ok(x);
        }
        self.push(
            Op::Reduce {
                kind,
                dims: dims.to_vec(),
            },
            &[x],
        )
    }

    #[track_caller]
    pub fn reduce_sum(&mut self, x: NodeId, dims: &[usize]) -> Result<NodeId> {
        self.reduce(x, ReduceKind::Sum, dims)
    }

    #[track_caller]
    pub fn reduce_max(&mut self, x: NodeId, dims: &[usize]) -> Result<NodeId> {
        self.reduce(x, ReduceKind::Max, dims)
    }

    #[track_caller]
    pub fn reduce_min(&mut self, x: NodeId, dims: &[usize]) -> Result<NodeId> {
        self.reduce(x, ReduceKind::Min, dims)
    }

    /// Sum of all elements, a scalar.
    #[track_caller]
    pub fn sum_all(&mut self, x: NodeId) -> Result<NodeId> {
        let all: Vec<usize> = (0..self.rank(x)?).collect();
        self.reduce_sum(x, &all)
    }

    /// Mean over `dims` (a composite: sum times 1/count).
    #[track_caller]
    pub fn mean(&mut self, x: NodeId, dims: &[usize]) -> Result<NodeId> {
        let xd = self.dims(x)?.to_vec();
        let s = self.reduce_sum(x, dims)?;
        let n: i64 = dims.iter().filter_map(|&d| xd.get(d)).product();
        self.mul_scalar(s, 1.0 / n.max(1) as f64)
    }

    /// Mean of all elements, a scalar.
    #[track_caller]
    pub fn mean_all(&mut self, x: NodeId) -> Result<NodeId> {
        let all: Vec<usize> = (0..self.rank(x)?).collect();
        self.mean(x, &all)
    }

    /// Index of the (first) maximum along `dim`, as i32.
    #[track_caller]
    pub fn argmax(&mut self, x: NodeId, dim: usize) -> Result<NodeId> {
        self.push(
            Op::ArgMax {
                dim,
                index_dtype: DType::I32,
            },
            &[x],
        )
    }
}

pub(crate) fn vjp_reduce(g: &mut Graph, kind: ReduceKind, rdims: &[usize], v: &Vjp) -> Result<Cts> {
    let x = v.x(0);
    let xd = g.dims(x)?.to_vec();
    let kept: Vec<usize> = (0..xd.len()).filter(|d| !rdims.contains(d)).collect();
    let ct = g.broadcast_in_dim(v.ct, xd.clone(), &kept)?;
    if kind == ReduceKind::Sum {
        return Ok(vec![Some(ct)]);
    }
    // Max/min: split the gradient evenly among the elements equal to the result.
    let out = g.broadcast_in_dim(v.out, xd, &kept)?;
    let hit = g.eq(x, out)?;
    let hit = g.convert(hit, g.dtype(x)?)?;
    let count = g.reduce_sum(hit, rdims)?;
    let share = g.div(v.ct, count)?;
    let share = g.broadcast_in_dim(share, g.dims(x)?.to_vec(), &kept)?;
    Ok(vec![Some(g.mul(share, hit)?)])
}

#[cfg(test)]
mod tests {
    use crate::{DType, Graph, TensorType};

    #[test]
    fn shape_rules() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([2, 3, 4])).unwrap();
        let s = g.reduce_sum(x, &[0, 2]).unwrap();
        assert_eq!(g.dims(s).unwrap(), &[3]);
        let m = g.mean(x, &[2]).unwrap();
        assert_eq!(g.dims(m).unwrap(), &[2, 3]);
        let a = g.argmax(x, 1).unwrap();
        assert_eq!(g.ty(a).unwrap(), &TensorType::new(DType::I32, [2, 4]));
        let e = g.reduce_max(x, &[3]).unwrap_err().to_string();
        assert!(
            e.starts_with("reduce at") && e.contains("f32[2,3,4]"),
            "{e}"
        );
    }
}
