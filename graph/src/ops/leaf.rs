//! Ops without operands: parameters, inputs, constants, iota.

use super::common::arity;
use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::types::{DType, Shape, TensorType};
use serde::{Deserialize, Serialize};

/// A constant's value: a splat of one number, or dense data in row-major order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Literal {
    pub ty: TensorType,
    pub data: LiteralData,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LiteralData {
    /// Every element equals this value (converted to the dtype).
    Splat(f64),
    /// Dense data for a float dtype.
    F32(Vec<f32>),
    /// Dense data for an integer dtype.
    I32(Vec<i32>),
}

fn check_dims_nonneg(ty: &TensorType) -> Result<(), String> {
    if ty.dims().iter().any(|&d| d < 0) {
        return Err(format!("negative dimension in {ty}"));
    }
    Ok(())
}

pub(crate) fn infer_arg(ty: &TensorType, ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 0)?;
    check_dims_nonneg(ty)?;
    Ok(ty.clone())
}

pub(crate) fn infer_constant(lit: &Literal, ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 0)?;
    check_dims_nonneg(&lit.ty)?;
    let n = lit.ty.shape.num_elements() as usize;
    let (len, ok) = match &lit.data {
        LiteralData::Splat(_) => (n, true),
        LiteralData::F32(v) => (v.len(), lit.ty.dtype.is_float()),
        LiteralData::I32(v) => (v.len(), lit.ty.dtype.is_int()),
    };
    if !ok {
        return Err(format!("data kind does not fit element type of {}", lit.ty));
    }
    if len != n {
        return Err(format!("{len} values for {} ({n} elements)", lit.ty));
    }
    Ok(lit.ty.clone())
}

pub(crate) fn infer_iota(
    ty: &TensorType,
    dim: usize,
    ins: &[&TensorType],
) -> Result<TensorType, String> {
    arity(ins, 0)?;
    check_dims_nonneg(ty)?;
    if dim >= ty.rank() {
        return Err(format!("dim {dim} out of range for {ty}"));
    }
    if ty.dtype == DType::Bool {
        return Err(format!("unsupported element type {ty}"));
    }
    Ok(ty.clone())
}

impl Graph {
    /// A trainable argument.
    #[track_caller]
    pub fn parameter(&mut self, name: &str, ty: TensorType) -> Result<NodeId> {
        self.arg(Op::Parameter(ty), name)
    }

    /// A data argument (batch, labels, seeds, learning rate...).
    #[track_caller]
    pub fn input(&mut self, name: &str, ty: TensorType) -> Result<NodeId> {
        self.arg(Op::Input(ty), name)
    }

    #[track_caller]
    fn arg(&mut self, op: Op, name: &str) -> Result<NodeId> {
        if self
            .args()
            .iter()
            .any(|&a| self.nodes[a.index()].name.as_deref() == Some(name))
        {
            return Err(self.err(op.name(), format!("argument name {name:?} already used")));
        }
        let id = self.push(op, &[])?;
        self.set_name(id, name)?;
        Ok(id)
    }

    #[track_caller]
    pub fn constant(&mut self, lit: Literal) -> Result<NodeId> {
        self.push(Op::Constant(lit), &[])
    }

    /// A scalar constant.
    #[track_caller]
    pub fn scalar(&mut self, v: f64, dtype: DType) -> Result<NodeId> {
        self.full(v, TensorType::scalar(dtype))
    }

    /// A scalar constant of `x`'s dtype.
    #[track_caller]
    pub fn scalar_like(&mut self, x: NodeId, v: f64) -> Result<NodeId> {
        let d = self.dtype(x)?;
        self.scalar(v, d)
    }

    /// A constant filled with `v`.
    #[track_caller]
    pub fn full(&mut self, v: f64, ty: TensorType) -> Result<NodeId> {
        self.constant(Literal {
            ty,
            data: LiteralData::Splat(v),
        })
    }

    /// A constant of `x`'s type filled with `v`.
    #[track_caller]
    pub fn full_like(&mut self, x: NodeId, v: f64) -> Result<NodeId> {
        let ty = self.ty(x)?.clone();
        self.full(v, ty)
    }

    #[track_caller]
    pub fn zeros_like(&mut self, x: NodeId) -> Result<NodeId> {
        self.full_like(x, 0.0)
    }

    #[track_caller]
    pub fn ones_like(&mut self, x: NodeId) -> Result<NodeId> {
        self.full_like(x, 1.0)
    }

    /// A dense f32 constant.
    #[track_caller]
    pub fn constant_f32(&mut self, shape: impl Into<Shape>, data: Vec<f32>) -> Result<NodeId> {
        self.constant(Literal {
            ty: TensorType::new(DType::F32, shape),
            data: LiteralData::F32(data),
        })
    }

    /// A dense i32 constant.
    #[track_caller]
    pub fn constant_i32(&mut self, shape: impl Into<Shape>, data: Vec<i32>) -> Result<NodeId> {
        self.constant(Literal {
            ty: TensorType::new(DType::I32, shape),
            data: LiteralData::I32(data),
        })
    }

    /// Counts 0.. along `dim` of `ty`.
    #[track_caller]
    pub fn iota(&mut self, ty: TensorType, dim: usize) -> Result<NodeId> {
        self.push(Op::Iota { ty, dim }, &[])
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Graph, TensorType};

    #[test]
    fn args_are_named_and_ordered() {
        let mut g = Graph::new("t");
        let w = g.parameter("w", TensorType::f32([2, 2])).unwrap();
        let x = g.input("x", TensorType::f32([2])).unwrap();
        assert_eq!(g.args(), vec![w, x]);
        assert_eq!(g.parameters(), vec![w]);
        assert_eq!(g.find("x"), Some(x));
        let e = g.input("w", TensorType::f32([1])).unwrap_err().to_string();
        assert!(e.contains("already used"), "{e}");
        let e = g.input("n", TensorType::f32([-1])).unwrap_err().to_string();
        assert!(e.contains("negative"), "{e}");
    }

    #[test]
    fn constants_check_their_data() {
        let mut g = Graph::new("t");
        assert!(g.constant_f32([2], vec![1.0, 2.0]).is_ok());
        let e = g.constant_f32([3], vec![1.0]).unwrap_err().to_string();
        assert!(
            e.starts_with("constant at") && e.contains("1 values"),
            "{e}"
        );
        let e = g
            .iota(TensorType::new(DType::I32, [3]), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("iota") && e.contains("i32[3]"), "{e}");
    }
}
