//! Helpers shared by shape and VJP rules.

use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::types::{DimsDisplay, NodeType, TensorType};

/// Per-input cotangents a VJP rule returns; `None` means zero.
pub(crate) type Cts = Vec<Option<NodeId>>;

/// What a VJP rule sees of its forward node.
pub(crate) struct Vjp<'a> {
    /// The forward node (its value is the primal output).
    pub out: NodeId,
    pub inputs: &'a [NodeId],
    /// Cotangent of the output, same type as the output.
    pub ct: NodeId,
}

impl Vjp<'_> {
    pub fn x(&self, i: usize) -> NodeId {
        self.inputs[i]
    }
}

/// All operands must be tensors (only get_tuple_element reads a tuple).
pub(crate) fn tensors<'a>(ins: &[&'a NodeType]) -> Result<Vec<&'a TensorType>, String> {
    ins.iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_tensor().ok_or_else(|| {
                format!("operand {i} is a tuple {t}; read it with get_tuple_element")
            })
        })
        .collect()
}

pub(crate) fn arity(ins: &[&TensorType], n: usize) -> Result<(), String> {
    if ins.len() == n {
        Ok(())
    } else {
        Err(format!("expects {n} operands, got {}", ins.len()))
    }
}

pub(crate) fn dims(d: &[i64]) -> DimsDisplay<'_> {
    DimsDisplay(d)
}

/// Each of `ds` is a distinct dim of a rank-`rank` value.
pub(crate) fn check_dims(what: &str, ds: &[usize], rank: usize) -> Result<(), String> {
    let mut seen = vec![false; rank];
    for &d in ds {
        if d >= rank {
            return Err(format!("{what} dim {d} out of range for rank {rank}"));
        }
        if seen[d] {
            return Err(format!("{what} dim {d} repeated"));
        }
        seen[d] = true;
    }
    Ok(())
}

/// `perm` is a permutation of `0..rank`.
pub(crate) fn check_perm(perm: &[usize], rank: usize) -> Result<(), String> {
    if perm.len() != rank {
        return Err(format!(
            "permutation {perm:?} has {} entries for rank {rank}",
            perm.len()
        ));
    }
    check_dims("permutation", perm, rank)
}

/// Dims `0..rank` not in `used`, in order.
pub(crate) fn remaining(rank: usize, used: &[&[usize]]) -> Vec<usize> {
    (0..rank)
        .filter(|d| !used.iter().any(|u| u.contains(d)))
        .collect()
}

/// Inverse of a permutation.
pub(crate) fn invert_perm(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

/// Numpy broadcasting of two shapes (trailing dims aligned).
pub(crate) fn broadcast_shapes(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Adds `b` to an optional accumulated cotangent.
pub(crate) fn accumulate(g: &mut Graph, acc: Option<NodeId>, b: NodeId) -> Result<NodeId> {
    match acc {
        None => Ok(b),
        Some(a) => g.binary(crate::op::BinaryOp::Add, a, b),
    }
}
