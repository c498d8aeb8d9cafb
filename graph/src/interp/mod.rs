//! A reference interpreter: evaluates a graph on the host with naive loops.
//! Slow and simple on purpose; it defines what the ops mean for tests
//! (finite-difference gradient checks, comparisons against XLA).

mod elementwise;
mod linalg;
mod reduce;
mod shape;
mod sort;
mod tensor;

pub use tensor::{convert_value, flat, for_each_index, strides, wrap, wrap_int, HostTensor};

use crate::ir::{Graph, Location, NodeId};
use crate::op::{LiteralData, Op};
use crate::types::TensorType;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum EvalError {
    #[error("argument {index} ({name}): expected {want}, got {got}")]
    Arg {
        index: usize,
        name: String,
        want: TensorType,
        got: String,
    },
    #[error("node {node} ({op} at {loc}): {msg}")]
    Node {
        node: NodeId,
        op: &'static str,
        loc: Location,
        msg: String,
    },
}

/// The value of a node: a tensor, or the elements of a tuple.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Tensor(HostTensor),
    Tuple(Vec<HostTensor>),
}

/// Evaluates `g` on `args` (in `g.args()` order) and returns its outputs.
pub fn eval(g: &Graph, args: &[HostTensor]) -> Result<Vec<HostTensor>, EvalError> {
    let vals = eval_all(g, args)?;
    g.outputs
        .iter()
        .map(|&o| match vals.get(o.index()) {
            Some(Value::Tensor(t)) => Ok(t.clone()),
            _ => Err(node_err(g, o, "output is not a tensor node")),
        })
        .collect()
}

fn node_err(g: &Graph, id: NodeId, msg: &str) -> EvalError {
    let (op, loc) = match g.nodes.get(id.index()) {
        Some(n) => (n.op.name(), n.loc.clone()),
        None => ("?", Location::unknown()),
    };
    EvalError::Node {
        node: id,
        op,
        loc,
        msg: msg.into(),
    }
}

/// Evaluates every node; the value of node `i` is at index `i`.
pub fn eval_all(g: &Graph, args: &[HostTensor]) -> Result<Vec<Value>, EvalError> {
    let arg_ids = g.args();
    if arg_ids.len() != args.len() {
        return Err(EvalError::Arg {
            index: args.len().min(arg_ids.len()),
            name: "-".into(),
            want: TensorType::scalar(crate::DType::F32),
            got: format!(
                "{} arguments for {} parameters/inputs",
                args.len(),
                arg_ids.len()
            ),
        });
    }
    let mut next_arg = 0;
    let mut vals: Vec<Value> = Vec::with_capacity(g.len());
    for (i, node) in g.nodes.iter().enumerate() {
        let id = NodeId(i as u32);
        let mut ins = Vec::with_capacity(node.inputs.len());
        for &x in &node.inputs {
            match vals.get(x.index()) {
                Some(Value::Tensor(t)) => ins.push(t),
                Some(Value::Tuple(_)) if matches!(node.op, Op::GetTupleElement(_)) => {}
                _ => return Err(node_err(g, id, "operand missing or a tuple (run verify)")),
            }
        }
        let Some(out) = node.ty.as_tensor() else {
            let v = eval_tuple(g, id, &ins)?;
            vals.push(v);
            continue;
        };
        let v = match &node.op {
            Op::Parameter(t) | Op::Input(t) => {
                let a = &args[next_arg];
                if &a.ty != t || a.data.len() as i64 != t.shape.num_elements() {
                    return Err(EvalError::Arg {
                        index: next_arg,
                        name: node.name.clone().unwrap_or_default(),
                        want: t.clone(),
                        got: format!("{} with {} values", a.ty, a.data.len()),
                    });
                }
                next_arg += 1;
                a.clone()
            }
            Op::GetTupleElement(k) => match &vals[node.inputs[0].index()] {
                Value::Tuple(ts) => ts[*k].clone(),
                Value::Tensor(_) => return Err(node_err(g, id, "operand is not a tuple")),
            },
            op => eval_op(op, &ins, out).map_err(|m| node_err(g, id, &m))?,
        };
        vals.push(Value::Tensor(v));
    }
    Ok(vals)
}

fn eval_op(op: &Op, x: &[&HostTensor], out: &TensorType) -> Result<HostTensor, String> {
    Ok(match op {
        Op::Constant(lit) => match &lit.data {
            LiteralData::Splat(v) => HostTensor::full(out.clone(), *v),
            LiteralData::F32(d) => HostTensor {
                ty: out.clone(),
                data: d.iter().map(|&v| v as f64).collect(),
            },
            LiteralData::I32(d) => HostTensor {
                ty: out.clone(),
                data: d.iter().map(|&v| wrap(out.dtype, v as f64)).collect(),
            },
        },
        Op::Iota { dim, .. } => shape::iota(out, *dim),
        Op::Unary(u) => elementwise::unary(*u, x[0]),
        Op::Binary(b) => elementwise::binary(*b, x[0], x[1]),
        Op::Compare(d) => elementwise::compare(*d, x[0], x[1]),
        Op::Select => elementwise::select(x[0], x[1], x[2]),
        Op::Convert(_) => elementwise::convert(x[0], out),
        Op::StopGradient | Op::Sharding(_) => x[0].clone(),
        Op::BroadcastInDim { dims, .. } => shape::broadcast_in_dim(x[0], out, dims),
        Op::Reshape(_) => HostTensor {
            ty: out.clone(),
            data: x[0].data.clone(),
        },
        Op::Transpose(p) => shape::transpose(x[0], out, p),
        Op::Reverse(d) => shape::reverse(x[0], d),
        Op::Slice { start, stride, .. } => shape::slice(x[0], out, start, stride),
        Op::DynamicSlice { .. } => {
            let starts: Vec<f64> = x[1..].iter().map(|t| t.data[0]).collect();
            shape::dynamic_slice(x[0], out, &starts)
        }
        Op::DynamicUpdateSlice => {
            let starts: Vec<f64> = x[2..].iter().map(|t| t.data[0]).collect();
            shape::dynamic_update_slice(x[0], x[1], &starts)
        }
        Op::Concatenate { dim } => shape::concatenate(x, out, *dim),
        Op::Pad { low, interior, .. } => shape::pad(x[0], x[1].data[0], out, low, interior),
        Op::Gather => shape::gather(x[0], x[1], out),
        Op::ScatterAdd => shape::scatter_add(x[0], x[1], x[2]),
        Op::DotGeneral { dims, .. } => linalg::dot_general(x[0], x[1], dims, out),
        Op::Conv(p) => linalg::conv(x[0], x[1], p, out),
        Op::Reduce { kind, dims } => reduce::reduce(x[0], *kind, dims, out),
        Op::ArgMax { dim, .. } => reduce::argmax(x[0], *dim, out),
        Op::ReduceWindow { kind, window } => reduce::reduce_window(x[0], *kind, window, out),
        Op::SelectAndScatterAdd { window } => reduce::select_and_scatter_add(x[0], x[1], window),
        Op::Parameter(_)
        | Op::Input(_)
        | Op::GetTupleElement(_)
        | Op::Sort { .. }
        | Op::CustomVjp(_)
        | Op::Scan(_)
        | Op::OptimizationBarrier => return Err("not a single-tensor op".into()),
    })
}

fn eval_tuple(g: &Graph, id: NodeId, x: &[&HostTensor]) -> Result<Value, EvalError> {
    let node = &g.nodes[id.index()];
    match &node.op {
        Op::OptimizationBarrier => Ok(Value::Tuple(x.iter().map(|t| (*t).clone()).collect())),
        Op::CustomVjp(p) => {
            let args: Vec<HostTensor> = x.iter().map(|t| (*t).clone()).collect();
            let outs = eval(&p.forward, &args)
                .map_err(|e| node_err(g, id, &format!("in the forward of `{}`: {e}", p.name)))?;
            Ok(Value::Tuple(outs))
        }
        Op::Sort {
            dim,
            descending,
            indices,
        } => Ok(Value::Tuple(sort::sort(x, *dim, *descending, *indices))),
        Op::Scan(p) => {
            let (nc, nh) = (p.num_consts, p.num_carry);
            let mut carries: Vec<HostTensor> =
                x[nc..nc + nh].iter().map(|t| (*t).clone()).collect();
            let xs = &x[nc + nh..];
            let ny = p.body.outputs.len() - nh;
            let mut ys: Vec<Vec<f64>> = vec![Vec::new(); ny];
            let mut y_slices: Vec<Vec<Vec<f64>>> =
                vec![vec![Vec::new(); p.length.max(0) as usize]; ny];
            let steps: Vec<i64> = if p.reverse {
                (0..p.length).rev().collect()
            } else {
                (0..p.length).collect()
            };
            for t in steps {
                let mut args: Vec<HostTensor> = x[..nc].iter().map(|t| (*t).clone()).collect();
                args.extend(carries.iter().cloned());
                for xt in xs {
                    let n = (xt.data.len() as i64 / p.length.max(1)) as usize;
                    let s = t as usize * n;
                    args.push(HostTensor {
                        ty: TensorType::new(xt.dtype(), xt.dims()[1..].to_vec()),
                        data: xt.data[s..s + n].to_vec(),
                    });
                }
                let outs =
                    eval(&p.body, &args).map_err(|e| node_err(g, id, &format!("in body: {e}")))?;
                let (c, y) = outs.split_at(nh);
                carries = c.to_vec();
                for (k, yv) in y.iter().enumerate() {
                    y_slices[k][t as usize] = yv.data.clone();
                }
            }
            let tys = node.ty.elements();
            let mut res = carries;
            for k in 0..ny {
                ys[k] = y_slices[k].concat();
                res.push(HostTensor {
                    ty: tys[nh + k].clone(),
                    data: std::mem::take(&mut ys[k]),
                });
            }
            Ok(Value::Tuple(res))
        }
        _ => Err(node_err(g, id, "not a tuple op")),
    }
}

#[cfg(test)]
mod tests;
