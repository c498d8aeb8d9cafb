//! One lowering function per op, grouped like `graph/src/ops/`.

mod control;
mod elementwise;
mod gather;
mod linalg;
mod reduce;
mod shape;
mod sort;

use crate::emit::{Emitter, Op as E};
use crate::{LowerError, Result};
use graph::{Graph, Node, NodeType, Op, TensorType};

/// The SSA value(s) of a node: one name, or one per tuple element.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    T(String),
    Tuple(Vec<String>),
}

/// What a lowering function gets: the node, its operands' names and types,
/// and its result type.
pub(crate) struct Ctx<'a> {
    pub node: &'a Node,
    pub ins: Vec<String>,
    pub in_types: Vec<TensorType>,
    pub out: &'a TensorType,
}

impl<'a> Ctx<'a> {
    /// An op of this node with its location.
    pub fn op<'b>(&'b self, name: &'b str, outs: &'b [TensorType]) -> E<'b> {
        E::new(name, self.ins.clone(), &self.in_types, outs)
            .at(&self.node.loc, self.node.name.as_deref())
    }

    pub fn err(&self, msg: impl Into<String>) -> LowerError {
        LowerError::Op {
            op: self.node.op.name(),
            loc: self.node.loc.clone(),
            msg: msg.into(),
        }
    }
}

/// Emits the nodes of `g` with its arguments bound to `args`; returns the
/// names of its outputs.
pub(crate) fn lower_body(e: &mut Emitter, g: &Graph, args: &[String]) -> Result<Vec<String>> {
    let mut vals: Vec<Val> = Vec::with_capacity(g.len());
    let mut next_arg = 0;
    for node in &g.nodes {
        let v = match &node.op {
            Op::Parameter(_) | Op::Input(_) => {
                let a = args
                    .get(next_arg)
                    .ok_or_else(|| LowerError::Invalid("too few arguments for graph".into()))?;
                next_arg += 1;
                Val::T(a.clone())
            }
            Op::GetTupleElement(k) => match vals.get(node.inputs[0].index()) {
                Some(Val::Tuple(ts)) if *k < ts.len() => Val::T(ts[*k].clone()),
                _ => {
                    return Err(LowerError::Invalid(
                        "get_tuple_element of a non-tuple".into(),
                    ))
                }
            },
            _ => lower_node(e, g, node, &vals)?,
        };
        vals.push(v);
    }
    g.outputs
        .iter()
        .map(|&o| match vals.get(o.index()) {
            Some(Val::T(s)) => Ok(s.clone()),
            _ => Err(LowerError::Invalid(format!("output {o} is not a tensor"))),
        })
        .collect()
}

fn lower_node(e: &mut Emitter, g: &Graph, node: &Node, vals: &[Val]) -> Result<Val> {
    let mut ins = Vec::with_capacity(node.inputs.len());
    let mut in_types = Vec::with_capacity(node.inputs.len());
    for &x in &node.inputs {
        match (vals.get(x.index()), &g.nodes[x.index()].ty) {
            (Some(Val::T(s)), NodeType::Tensor(t)) => {
                ins.push(s.clone());
                in_types.push(t.clone());
            }
            _ => return Err(LowerError::Invalid(format!("operand {x} is not a tensor"))),
        }
    }
    let out = match &node.ty {
        NodeType::Tensor(t) => t.clone(),
        NodeType::Tuple(ts) => {
            let c = Ctx {
                node,
                ins,
                in_types,
                out: &TensorType::scalar(graph::DType::F32),
            };
            return match &node.op {
                Op::Scan(p) => control::lower_scan(e, &c, p, ts).map(Val::Tuple),
                // Inlined: the backward graph only matters to autodiff.
                Op::CustomVjp(p) => lower_body(e, &p.forward, &c.ins).map(Val::Tuple),
                Op::Sort {
                    dim, descending, ..
                } => sort::lower_sort(e, &c, *dim, *descending, ts).map(Val::Tuple),
                Op::OptimizationBarrier => {
                    control::lower_optimization_barrier(e, &c, ts).map(Val::Tuple)
                }
                _ => Err(c.err("unexpected tuple-valued op")),
            };
        }
    };
    let c = Ctx {
        node,
        ins,
        in_types,
        out: &out,
    };
    let r = match &node.op {
        Op::Constant(lit) => elementwise::lower_constant(e, &c, lit),
        Op::Iota { dim, .. } => elementwise::lower_iota(e, &c, *dim),
        Op::Unary(u) => elementwise::lower_unary(e, &c, *u),
        Op::Binary(b) => elementwise::lower_binary(e, &c, *b),
        Op::Compare(d) => elementwise::lower_compare(e, &c, *d),
        Op::Select => elementwise::lower_select(e, &c),
        Op::Convert(_) => elementwise::lower_convert(e, &c),
        // Identities: no op, the operand's value is reused.
        Op::StopGradient => Ok(c.ins[0].clone()),
        Op::Sharding(s) => shape::lower_sharding(e, &c, s),
        Op::BroadcastInDim { dims, .. } => shape::lower_broadcast_in_dim(e, &c, dims),
        Op::Reshape(_) => shape::lower_reshape(e, &c),
        Op::Transpose(p) => shape::lower_transpose(e, &c, p),
        Op::Reverse(d) => shape::lower_reverse(e, &c, d),
        Op::Slice {
            start,
            limit,
            stride,
        } => shape::lower_slice(e, &c, start, limit, stride),
        Op::DynamicSlice { sizes } => shape::lower_dynamic_slice(e, &c, sizes),
        Op::DynamicUpdateSlice => shape::lower_dynamic_update_slice(e, &c),
        Op::Concatenate { dim } => shape::lower_concatenate(e, &c, *dim),
        Op::Pad {
            low,
            high,
            interior,
        } => shape::lower_pad(e, &c, low, high, interior),
        Op::Gather => gather::lower_gather(e, &c),
        Op::ScatterAdd => gather::lower_scatter_add(e, &c),
        Op::DotGeneral { dims, .. } => linalg::lower_dot_general(e, &c, dims),
        Op::Conv(p) => linalg::lower_convolution(e, &c, p),
        Op::Reduce { kind, dims } => reduce::lower_reduce(e, &c, *kind, dims),
        Op::ArgMax { dim, .. } => reduce::lower_argmax(e, &c, *dim),
        Op::ReduceWindow { kind, window } => reduce::lower_reduce_window(e, &c, *kind, window),
        Op::SelectAndScatterAdd { window } => reduce::lower_select_and_scatter_add(e, &c, window),
        Op::Parameter(_)
        | Op::Input(_)
        | Op::GetTupleElement(_)
        | Op::Sort { .. }
        | Op::CustomVjp(_)
        | Op::Scan(_)
        | Op::OptimizationBarrier => Err(c.err("not a single-tensor op")),
    }?;
    Ok(Val::T(r))
}
