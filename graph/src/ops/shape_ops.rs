//! broadcast_in_dim, reshape, transpose, reverse.

use super::common::{arity, check_dims, check_perm, dims, invert_perm, Cts, Vjp};
use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::types::{Shape, TensorType};

pub(crate) fn infer_broadcast_in_dim(
    shape: &Shape,
    bdims: &[usize],
    ins: &[&TensorType],
) -> Result<TensorType, String> {
    arity(ins, 1)?;
    let x = ins[0];
    if bdims.len() != x.rank() {
        return Err(format!(
            "operand {x} has rank {} but {} broadcast dims {bdims:?}",
            x.rank(),
            bdims.len()
        ));
    }
    if bdims.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "broadcast dims {bdims:?} must be strictly increasing"
        ));
    }
    for (i, &d) in bdims.iter().enumerate() {
        let Some(&out) = shape.dims.get(d) else {
            return Err(format!("broadcast dim {d} out of range for result {shape}"));
        };
        let xd = x.dims()[i];
        if xd != 1 && xd != out {
            return Err(format!(
                "operand {x} dim {i} = {xd} cannot broadcast to result {shape} dim {d} = {out}"
            ));
        }
    }
    if shape.dims.iter().any(|&d| d < 0) {
        return Err(format!("negative dimension in result {shape}"));
    }
    Ok(TensorType::new(x.dtype, shape.clone()))
}

pub(crate) fn infer_reshape(shape: &Shape, ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 1)?;
    let x = ins[0];
    if shape.dims.iter().any(|&d| d < 0) || shape.num_elements() != x.shape.num_elements() {
        return Err(format!("cannot reshape {x} to {shape}"));
    }
    Ok(TensorType::new(x.dtype, shape.clone()))
}

pub(crate) fn infer_transpose(perm: &[usize], ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 1)?;
    let x = ins[0];
    check_perm(perm, x.rank()).map_err(|e| format!("{e} (operand {x})"))?;
    let d: Vec<i64> = perm.iter().map(|&p| x.dims()[p]).collect();
    Ok(TensorType::new(x.dtype, d))
}

pub(crate) fn infer_reverse(rdims: &[usize], ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 1)?;
    let x = ins[0];
    check_dims("reverse", rdims, x.rank()).map_err(|e| format!("{e} (operand {x})"))?;
    Ok(x.clone())
}

impl Graph {
    /// Operand dim `i` becomes result dim `dims[i]`; size-1 dims expand.
    #[track_caller]
    pub fn broadcast_in_dim(
        &mut self,
        x: NodeId,
        shape: impl Into<Shape>,
        dims: &[usize],
    ) -> Result<NodeId> {
        let op = Op::BroadcastInDim {
            shape: shape.into(),
            dims: dims.to_vec(),
        };
        self.push(op, &[x])
    }

    /// Numpy-style broadcast to `to` (trailing dims aligned); `x` itself if
    /// it already has that shape.
    #[track_caller]
    pub fn broadcast_to(&mut self, x: NodeId, to: &[i64]) -> Result<NodeId> {
        let xd = self.dims(x)?.to_vec();
        if xd == to {
            return Ok(x);
        }
        if xd.len() > to.len() {
            return Err(self.err(
                "broadcast_in_dim",
                format!("cannot broadcast {} to lower rank {}", dims(&xd), dims(to)),
            ));
        }
        let off = to.len() - xd.len();
        let bdims: Vec<usize> = (off..to.len()).collect();
        self.broadcast_in_dim(x, to.to_vec(), &bdims)
    }

    #[track_caller]
    pub fn reshape(&mut self, x: NodeId, shape: impl Into<Shape>) -> Result<NodeId> {
        let shape = shape.into();
        if self.shape(x)? == &shape {
            return Ok(x);
        }
        self.push(Op::Reshape(shape), &[x])
    }

    /// Result dim `i` is operand dim `perm[i]`.
    #[track_caller]
    pub fn transpose(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        self.push(Op::Transpose(perm.to_vec()), &[x])
    }

    #[track_caller]
    pub fn reverse(&mut self, x: NodeId, dims: &[usize]) -> Result<NodeId> {
        self.push(Op::Reverse(dims.to_vec()), &[x])
    }
}

pub(crate) fn vjp_broadcast_in_dim(g: &mut Graph, bdims: &[usize], v: &Vjp) -> Result<Cts> {
    let x_shape = g.shape(v.x(0))?.clone();
    let out = g.dims(v.out)?.to_vec();
    // Sum over new dims and over size-1 dims that were expanded.
    let sum_dims: Vec<usize> = (0..out.len())
        .filter(|d| match bdims.iter().position(|b| b == d) {
            None => true,
            Some(i) => x_shape.dims[i] == 1 && out[*d] != 1,
        })
        .collect();
    let s = g.reduce_sum(v.ct, &sum_dims)?;
    Ok(vec![Some(g.reshape(s, x_shape)?)])
}

pub(crate) fn vjp_reshape(g: &mut Graph, v: &Vjp) -> Result<Cts> {
    let s = g.shape(v.x(0))?.clone();
    Ok(vec![Some(g.reshape(v.ct, s)?)])
}

pub(crate) fn vjp_transpose(g: &mut Graph, perm: &[usize], v: &Vjp) -> Result<Cts> {
    Ok(vec![Some(g.transpose(v.ct, &invert_perm(perm))?)])
}

pub(crate) fn vjp_reverse(g: &mut Graph, rdims: &[usize], v: &Vjp) -> Result<Cts> {
    Ok(vec![Some(g.reverse(v.ct, rdims)?)])
}

#[cfg(test)]
mod tests {
    use crate::{Graph, TensorType};

    #[test]
    fn shape_rules() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([2, 3])).unwrap();
        let b = g.broadcast_in_dim(x, [4, 2, 3], &[1, 2]).unwrap();
        assert_eq!(g.dims(b).unwrap(), &[4, 2, 3]);
        let t = g.transpose(x, &[1, 0]).unwrap();
        assert_eq!(g.dims(t).unwrap(), &[3, 2]);
        let r = g.reshape(x, [6]).unwrap();
        assert_eq!(g.dims(r).unwrap(), &[6]);
        let e = g.reshape(x, [5]).unwrap_err().to_string();
        assert!(
            e.starts_with("reshape at") && e.contains("f32[2,3]") && e.contains("[5]"),
            "{e}"
        );
        let e = g
            .broadcast_in_dim(x, [2, 4], &[0, 1])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("broadcast_in_dim") && e.contains("dim 1 = 3"),
            "{e}"
        );
        let e = g.transpose(x, &[0, 0]).unwrap_err().to_string();
        assert!(e.contains("transpose") && e.contains("repeated"), "{e}");
    }
}
