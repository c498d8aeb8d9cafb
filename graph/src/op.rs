//! The closed set of primitive ops. Each op's builder, shape rule and VJP
//! rule live together in `ops/<concept>.rs`; this file only dispatches.

use crate::ops::{self, common::tensors};
use crate::types::{DType, NodeType, Shape, TensorType};
use serde::{Deserialize, Serialize};

pub use crate::ops::annotate::Sharding;
pub use crate::ops::control::ScanParams;
pub use crate::ops::conv::{ConvDims, ConvParams};
pub use crate::ops::custom::CustomVjpParams;
pub use crate::ops::dot::DotDims;
pub use crate::ops::elementwise::{BinaryOp, CompareDir, UnaryOp};
pub use crate::ops::leaf::{Literal, LiteralData};
pub use crate::ops::pool::Window;
pub use crate::ops::reduce::ReduceKind;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Trainable argument.
    Parameter(TensorType),
    /// Data argument.
    Input(TensorType),
    Constant(Literal),
    /// Counts 0.. along `dim`, constant along the others.
    Iota {
        ty: TensorType,
        dim: usize,
    },
    Unary(UnaryOp),
    /// Same-typed operands; builders broadcast numpy-style first.
    Binary(BinaryOp),
    Compare(CompareDir),
    /// `(pred, on_true, on_false)`, all the same shape.
    Select,
    Convert(DType),
    /// Identity whose gradient is zero.
    StopGradient,
    /// `dims[i]` is the result dim of operand dim `i` (strictly increasing).
    BroadcastInDim {
        shape: Shape,
        dims: Vec<usize>,
    },
    Reshape(Shape),
    /// Result dim `i` is operand dim `perm[i]`.
    Transpose(Vec<usize>),
    Reverse(Vec<usize>),
    Slice {
        start: Vec<i64>,
        limit: Vec<i64>,
        stride: Vec<i64>,
    },
    /// `(operand, start indices...)`: scalar ints, clamped into range.
    DynamicSlice {
        sizes: Vec<i64>,
    },
    /// `(operand, update, start indices...)`.
    DynamicUpdateSlice,
    Concatenate {
        dim: usize,
    },
    /// `(operand, scalar padding value)`; negative low/high crop.
    Pad {
        low: Vec<i64>,
        high: Vec<i64>,
        interior: Vec<i64>,
    },
    /// `(table [V, rest..], ids [I..]) -> [I.., rest..]`: row lookup.
    Gather,
    /// `(operand [V, rest..], ids [I..], updates [I.., rest..])`: adds each
    /// update row into `operand[id]`; the transpose of `Gather`.
    ScatterAdd,
    DotGeneral {
        dims: DotDims,
        /// Result dtype when it differs from the operands' (bf16 -> f32).
        out_dtype: Option<DType>,
    },
    Reduce {
        kind: ReduceKind,
        dims: Vec<usize>,
    },
    ArgMax {
        dim: usize,
        index_dtype: DType,
    },
    ReduceWindow {
        kind: ReduceKind,
        window: Window,
    },
    /// `(source, operand)`: adds each source value at the position of its
    /// window's max in `operand` (the gradient of max pooling).
    SelectAndScatterAdd {
        window: Window,
    },
    Conv(ConvParams),
    /// `(keys, payloads..)` sorted by the keys along `dim`, stably; a tuple,
    /// with the i32 argsort last when `indices` (see `ops/sort.rs`).
    Sort {
        dim: usize,
        descending: bool,
        indices: bool,
    },
    /// A loop over a body graph; produces a tuple `(carries.., stacked ys..)`.
    Scan(Box<ScanParams>),
    /// A forward sub-graph differentiated by a backward sub-graph (see
    /// `ops/custom.rs`); produces the forward's results as a tuple.
    CustomVjp(Box<CustomVjpParams>),
    /// Identity on all operands that XLA may not move work across; a tuple.
    OptimizationBarrier,
    GetTupleElement(usize),
    /// Identity carrying a sharding annotation.
    Sharding(Sharding),
}

impl Op {
    /// The StableHLO-style name used in errors and lowering.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Parameter(_) => "parameter",
            Op::Input(_) => "input",
            Op::Constant(_) => "constant",
            Op::Iota { .. } => "iota",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Compare(_) => "compare",
            Op::Select => "select",
            Op::Convert(_) => "convert",
            Op::StopGradient => "stop_gradient",
            Op::BroadcastInDim { .. } => "broadcast_in_dim",
            Op::Reshape(_) => "reshape",
            Op::Transpose(_) => "transpose",
            Op::Reverse(_) => "reverse",
            Op::Slice { .. } => "slice",
            Op::DynamicSlice { .. } => "dynamic_slice",
            Op::DynamicUpdateSlice => "dynamic_update_slice",
            Op::Concatenate { .. } => "concatenate",
            Op::Pad { .. } => "pad",
            Op::Gather => "gather",
            Op::ScatterAdd => "scatter_add",
            Op::DotGeneral { .. } => "dot_general",
            Op::Reduce { .. } => "reduce",
            Op::ArgMax { .. } => "argmax",
            Op::ReduceWindow { .. } => "reduce_window",
            Op::SelectAndScatterAdd { .. } => "select_and_scatter_add",
            Op::Conv(_) => "convolution",
            Op::Sort { .. } => "sort",
            Op::Scan(_) => "scan",
            Op::CustomVjp(_) => "custom_vjp",
            Op::OptimizationBarrier => "optimization_barrier",
            Op::GetTupleElement(_) => "get_tuple_element",
            Op::Sharding(_) => "sharding",
        }
    }
}

/// The shape/dtype rule of every op: the type a node with these operand
/// types gets, or a message naming the offending shapes.
pub(crate) fn infer(op: &Op, ins: &[&NodeType]) -> Result<NodeType, String> {
    if let Op::GetTupleElement(i) = op {
        return ops::control::infer_get_tuple_element(*i, ins).map(NodeType::Tensor);
    }
    let ins = tensors(ins)?;
    let t = match op {
        Op::Parameter(ty) | Op::Input(ty) => ops::leaf::infer_arg(ty, &ins)?,
        Op::Constant(lit) => ops::leaf::infer_constant(lit, &ins)?,
        Op::Iota { ty, dim } => ops::leaf::infer_iota(ty, *dim, &ins)?,
        Op::Unary(u) => ops::elementwise::infer_unary(*u, &ins)?,
        Op::Binary(b) => ops::elementwise::infer_binary(*b, &ins)?,
        Op::Compare(_) => ops::elementwise::infer_compare(&ins)?,
        Op::Select => ops::elementwise::infer_select(&ins)?,
        Op::Convert(d) => ops::elementwise::infer_convert(*d, &ins)?,
        Op::StopGradient => ops::annotate::infer_identity(&ins)?,
        Op::Sharding(s) => ops::annotate::infer_sharding(s, &ins)?,
        Op::BroadcastInDim { shape, dims } => {
            ops::shape_ops::infer_broadcast_in_dim(shape, dims, &ins)?
        }
        Op::Reshape(s) => ops::shape_ops::infer_reshape(s, &ins)?,
        Op::Transpose(p) => ops::shape_ops::infer_transpose(p, &ins)?,
        Op::Reverse(d) => ops::shape_ops::infer_reverse(d, &ins)?,
        Op::Slice {
            start,
            limit,
            stride,
        } => ops::slicing::infer_slice(start, limit, stride, &ins)?,
        Op::DynamicSlice { sizes } => ops::slicing::infer_dynamic_slice(sizes, &ins)?,
        Op::DynamicUpdateSlice => ops::slicing::infer_dynamic_update_slice(&ins)?,
        Op::Concatenate { dim } => ops::slicing::infer_concatenate(*dim, &ins)?,
        Op::Pad {
            low,
            high,
            interior,
        } => ops::slicing::infer_pad(low, high, interior, &ins)?,
        Op::Gather => ops::gather::infer_gather(&ins)?,
        Op::ScatterAdd => ops::gather::infer_scatter_add(&ins)?,
        Op::DotGeneral { dims, out_dtype } => ops::dot::infer_dot_general(dims, *out_dtype, &ins)?,
        Op::Reduce { kind, dims } => ops::reduce::infer_reduce(*kind, dims, &ins)?,
        Op::ArgMax { dim, index_dtype } => ops::reduce::infer_argmax(*dim, *index_dtype, &ins)?,
        Op::ReduceWindow { kind, window } => ops::pool::infer_reduce_window(*kind, window, &ins)?,
        Op::SelectAndScatterAdd { window } => {
            ops::pool::infer_select_and_scatter_add(window, &ins)?
        }
        Op::Conv(p) => ops::conv::infer_conv(p, &ins)?,
        Op::Sort { dim, indices, .. } => {
            return ops::sort::infer_sort(*dim, *indices, &ins).map(NodeType::Tuple)
        }
        Op::Scan(p) => return ops::control::infer_scan(p, &ins).map(NodeType::Tuple),
        Op::CustomVjp(p) => return ops::custom::infer_custom_vjp(p, &ins).map(NodeType::Tuple),
        Op::OptimizationBarrier => {
            return Ok(NodeType::Tuple(ins.iter().map(|t| (*t).clone()).collect()))
        }
        Op::GetTupleElement(_) => return Err("operand must be a tuple".into()),
    };
    Ok(NodeType::Tensor(t))
}

/// The VJP rule of every single-output op: cotangents of its operands given
/// the cotangent `ct` of node `id` (tuple ops are handled by autodiff).
pub(crate) fn vjp_node(
    g: &mut crate::ir::Graph,
    id: crate::ir::NodeId,
    ct: crate::ir::NodeId,
) -> crate::error::Result<ops::common::Cts> {
    use ops::*;
    let node = g.node(id)?;
    let (op, inputs) = (node.op.clone(), node.inputs.clone());
    let v = common::Vjp {
        out: id,
        inputs: &inputs,
        ct,
    };
    match &op {
        Op::Parameter(_) | Op::Input(_) | Op::Constant(_) | Op::Iota { .. } => Ok(vec![]),
        Op::Unary(u) => elementwise::vjp_unary(g, *u, &v),
        Op::Binary(b) => elementwise::vjp_binary(g, *b, &v),
        Op::Compare(_) => Ok(vec![None, None]),
        Op::Select => elementwise::vjp_select(g, &v),
        Op::Convert(_) => elementwise::vjp_convert(g, &v),
        Op::StopGradient => Ok(vec![None]),
        Op::Sharding(s) => annotate::vjp_sharding(g, s, &v),
        Op::BroadcastInDim { dims, .. } => shape_ops::vjp_broadcast_in_dim(g, dims, &v),
        Op::Reshape(_) => shape_ops::vjp_reshape(g, &v),
        Op::Transpose(p) => shape_ops::vjp_transpose(g, p, &v),
        Op::Reverse(d) => shape_ops::vjp_reverse(g, d, &v),
        Op::Slice { start, stride, .. } => slicing::vjp_slice(g, start, stride, &v),
        Op::DynamicSlice { .. } => slicing::vjp_dynamic_slice(g, &v),
        Op::DynamicUpdateSlice => slicing::vjp_dynamic_update_slice(g, &v),
        Op::Concatenate { dim } => slicing::vjp_concatenate(g, *dim, &v),
        Op::Pad {
            low,
            high,
            interior,
        } => slicing::vjp_pad(g, low, high, interior, &v),
        Op::Gather => gather::vjp_gather(g, &v),
        Op::ScatterAdd => gather::vjp_scatter_add(g, &v),
        Op::DotGeneral { dims, .. } => dot::vjp_dot_general(g, dims, &v),
        Op::Reduce { kind, dims } => reduce::vjp_reduce(g, *kind, dims, &v),
        Op::ArgMax { .. } => Ok(vec![None]),
        Op::ReduceWindow { kind, window } => pool::vjp_reduce_window(g, *kind, window, &v),
        Op::SelectAndScatterAdd { .. } => pool::vjp_select_and_scatter_add(g, id),
        Op::Conv(p) => conv::vjp_conv(g, p, &v),
        Op::Sort { .. }
        | Op::Scan(_)
        | Op::CustomVjp(_)
        | Op::OptimizationBarrier
        | Op::GetTupleElement(_) => Err(crate::error::GraphError::Invalid(format!(
            "internal: {} is a tuple op",
            op.name()
        ))),
    }
}
