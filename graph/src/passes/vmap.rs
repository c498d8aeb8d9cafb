//! Batching (JAX's `vmap`) over nodes already built in a graph: copies them again with a
//! new leading dim on every value that depends on a batched input. The pipeline-parallel
//! code builds one transformer block as usual, then runs it on every stage at once by
//! batching it over the stacked stage states and the stacked stage weights, so model code
//! never branches on being staged.
//!
//! ```ignore
//! let start = g.len();
//! let y0 = block(g, &layer0, x0)?; // the template: one stage's block
//! let template: Vec<NodeId> = (start as u32..g.len() as u32).map(NodeId).collect();
//! let batched = HashMap::from([(x0, state), (layer0.w, stacked.w) /* .. */]);
//! let spec = VmapSpec { axis_name: Some("stage".into()) };
//! let v = g.region("pipe0.h0", |g| vmap(g, &template, &batched, stages, &spec))?;
//! let y = v.batched(g, y0)?; // (S, ..)
//! ```
//!
//! The batch dim is dim 0 of every batched value. Each op's rule is one arm of
//! `batch_node`; an op it cannot batch is an error naming the op and the model line that
//! built it.

use crate::error::{GraphError, Result};
use crate::ir::{Graph, Node, NodeId};
use crate::op::{DotDims, Op, Sharding, Window};
use crate::types::{DType, Shape, TensorType};
use std::collections::HashMap;

/// How [`vmap`] names the new dim.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmapSpec {
    /// Logical axis name given to the new dim in `Sharding::Logical` annotations
    /// (e.g. `"stage"`); `None` leaves it unconstrained.
    pub axis_name: Option<String>,
}

/// The copies [`vmap`] made, by template node.
#[derive(Clone, Debug)]
pub struct Vmapped {
    size: i64,
    copies: HashMap<NodeId, (NodeId, bool)>,
}

impl Vmapped {
    /// The size of the new leading dim.
    pub fn size(&self) -> i64 {
        self.size
    }

    /// The copy of template node `old` and whether it carries the leading dim.
    pub fn get(&self, old: NodeId) -> Option<(NodeId, bool)> {
        self.copies.get(&old).copied()
    }

    /// The copy of `old` with the leading dim, broadcasting an unbatched copy.
    pub fn batched(&self, g: &mut Graph, old: NodeId) -> Result<NodeId> {
        let (id, b) = self.get(old).ok_or_else(|| {
            GraphError::Invalid(format!("vmap: {old} is not a node of the template"))
        })?;
        if b {
            return Ok(id);
        }
        let loc = g.node(id)?.loc.clone();
        g.with_location(loc, |g| lift(g, self.size, (id, false)))
    }
}

/// Copies the nodes `template` (ids of `g`, ascending, e.g. the contiguous range a block
/// was built in) again at the end of `g`, with a new leading dim of size `size` on every
/// value that depends on a batched input. `batched` maps template-external or
/// template-internal nodes to replacements that carry the leading dim (a placeholder
/// input -> the stacked state, each layer parameter -> its stack over stages). Nodes
/// outside `template` and not in `batched` are used as they are (unbatched captures), as
/// are parameters and inputs inside it. Every other template node gets a fresh copy
/// (with its location and name, without region tags), so the result does not depend on
/// the template, which stays behind as dead code.
pub fn vmap(
    g: &mut Graph,
    template: &[NodeId],
    batched: &HashMap<NodeId, NodeId>,
    size: i64,
    spec: &VmapSpec,
) -> Result<Vmapped> {
    if size < 0 {
        return Err(GraphError::Invalid(format!("vmap: negative size {size}")));
    }
    for w in template.windows(2) {
        if w[0] >= w[1] {
            return Err(GraphError::Invalid(format!(
                "vmap: template ids must be ascending, got {} before {}",
                w[0], w[1]
            )));
        }
    }
    if let Some(&last) = template.last() {
        g.node(last)?;
    }
    for (&old, &new) in batched {
        let want = with_lead(size, g.ty(old)?);
        let got = g.ty(new)?;
        if *got != want {
            return Err(GraphError::Invalid(format!(
                "vmap: {old} is {} so its batched replacement must be {want}, but {new} is {got}",
                g.ty(old)?
            )));
        }
    }
    let start = g.len();
    let mut copies: HashMap<NodeId, (NodeId, bool)> = HashMap::with_capacity(template.len());
    for &old in template {
        if let Some(&b) = batched.get(&old) {
            copies.insert(old, (b, true));
            continue;
        }
        let node = g.node(old)?.clone();
        if matches!(node.op, Op::Parameter(_) | Op::Input(_)) {
            // Copying an argument would add one to the computation.
            copies.insert(old, (old, false));
            continue;
        }
        let ins: Vec<(NodeId, bool)> = node
            .inputs
            .iter()
            .map(|x| {
                copies
                    .get(x)
                    .copied()
                    .or_else(|| batched.get(x).map(|&b| (b, true)))
                    .unwrap_or((*x, false))
            })
            .collect();
        let copy = if ins.iter().any(|&(_, b)| b) {
            let id =
                g.with_location(node.loc.clone(), |g| batch_node(g, &node, &ins, size, spec))?;
            let want = with_lead(size, node_tensor(&node)?);
            if g.ty(id)? != &want {
                return Err(unsupported(
                    &node,
                    format!("internal: batched copy is {} instead of {want}", g.ty(id)?),
                ));
            }
            (id, true)
        } else {
            let inputs = ins.iter().map(|&(x, _)| x).collect();
            (
                g.add_node(node.op.clone(), inputs, node.loc.clone())?,
                false,
            )
        };
        if let Some(name) = &node.name {
            g.set_name(copy.0, name.clone())?;
        }
        copies.insert(old, copy);
    }
    // Like every pass, check what it built (only the new nodes: it runs inside model code).
    super::verify::verify_nodes(g, start..g.len())
        .map_err(|err| GraphError::PassOutput { pass: "vmap", err })?;
    Ok(Vmapped { size, copies })
}

fn unsupported(node: &Node, msg: impl Into<String>) -> GraphError {
    GraphError::Op {
        op: node.op.name(),
        loc: node.loc.clone(),
        msg: format!("vmap: {}", msg.into()),
    }
}

fn node_tensor(node: &Node) -> Result<&TensorType> {
    node.ty
        .as_tensor()
        .ok_or_else(|| unsupported(node, "a tuple value cannot be batched"))
}

fn with_lead(size: i64, t: &TensorType) -> TensorType {
    TensorType::new(t.dtype, lead(size, t.dims()))
}

fn lead<T: Clone>(first: T, rest: &[T]) -> Vec<T> {
    let mut v = Vec::with_capacity(rest.len() + 1);
    v.push(first);
    v.extend_from_slice(rest);
    v
}

/// Dims of the operand as seen past the new leading dim.
fn shift(ds: &[usize]) -> Vec<usize> {
    ds.iter().map(|d| d + 1).collect()
}

fn lead_window(w: &Window) -> Window {
    Window {
        dims: lead(1, &w.dims),
        strides: lead(1, &w.strides),
        padding: lead((0, 0), &w.padding),
    }
}

/// `x` with the leading dim: itself if batched, else broadcast along it.
fn lift(g: &mut Graph, size: i64, (x, b): (NodeId, bool)) -> Result<NodeId> {
    if b {
        return Ok(x);
    }
    let t = g.ty(x)?.clone();
    let dims: Vec<usize> = (1..=t.rank()).collect();
    g.broadcast_in_dim(x, lead(size, t.dims()), &dims)
}

/// Moves dim `pos` of `x` to the front.
fn to_front(g: &mut Graph, x: NodeId, pos: usize) -> Result<NodeId> {
    if pos == 0 {
        return Ok(x);
    }
    let r = g.rank(x)?;
    let perm: Vec<usize> = std::iter::once(pos)
        .chain((0..r).filter(|&d| d != pos))
        .collect();
    g.transpose(x, &perm)
}

/// The largest value of an integer dtype.
fn int_max(d: DType) -> i128 {
    let bits = d.bits();
    if d.is_unsigned() {
        (1i128 << bits) - 1
    } else {
        (1i128 << (bits - 1)) - 1
    }
}

/// `ids + s * v` for the ids of slice `s`: rows of a `[size, v, ..]` table flattened to
/// `[size * v, ..]`.
fn flat_ids(g: &mut Graph, node: &Node, size: i64, v: i64, ids: NodeId) -> Result<NodeId> {
    let it = g.ty(ids)?.clone();
    if i128::from(size) * i128::from(v) > int_max(it.dtype) {
        return Err(unsupported(
            node,
            format!("{size} x {v} rows do not fit {} ids", it.dtype),
        ));
    }
    let off = g.iota(it, 0)?;
    let off = g.mul_scalar(off, v as f64)?;
    g.add(ids, off)
}

/// The batched copy of `node`, whose operands `ins` are `(copy, batched)` with at least one
/// batched. Runs with `node`'s location set.
fn batch_node(
    g: &mut Graph,
    node: &Node,
    ins: &[(NodeId, bool)],
    size: i64,
    spec: &VmapSpec,
) -> Result<NodeId> {
    let push =
        |g: &mut Graph, op: Op, inputs: Vec<NodeId>| g.add_node(op, inputs, node.loc.clone());
    let lift_all = |g: &mut Graph, ins: &[(NodeId, bool)]| -> Result<Vec<NodeId>> {
        ins.iter().map(|&x| lift(g, size, x)).collect()
    };
    let x = ins[0].0;
    match &node.op {
        Op::Parameter(_) | Op::Input(_) | Op::Constant(_) | Op::Iota { .. } => {
            Err(unsupported(node, "internal: a leaf has no batched operand"))
        }
        Op::Unary(_) | Op::Convert(_) | Op::StopGradient => push(g, node.op.clone(), vec![x]),
        Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Concatenate { .. } => {
            let xs = lift_all(g, ins)?;
            let op = match &node.op {
                Op::Concatenate { dim } => Op::Concatenate { dim: dim + 1 },
                op => op.clone(),
            };
            push(g, op, xs)
        }
        Op::BroadcastInDim { shape, dims } => {
            let op = Op::BroadcastInDim {
                shape: Shape::new(lead(size, &shape.dims)),
                dims: lead(0, &shift(dims)),
            };
            push(g, op, vec![x])
        }
        Op::Reshape(s) => push(g, Op::Reshape(Shape::new(lead(size, &s.dims))), vec![x]),
        Op::Transpose(p) => push(g, Op::Transpose(lead(0, &shift(p))), vec![x]),
        Op::Reverse(d) => push(g, Op::Reverse(shift(d)), vec![x]),
        Op::Slice {
            start,
            limit,
            stride,
        } => {
            let op = Op::Slice {
                start: lead(0, start),
                limit: lead(size, limit),
                stride: lead(1, stride),
            };
            push(g, op, vec![x])
        }
        Op::DynamicSlice { sizes } => {
            let starts = unbatched_starts(g, node, &ins[1..])?;
            let op = Op::DynamicSlice {
                sizes: lead(size, sizes),
            };
            push(g, op, [vec![x], starts].concat())
        }
        Op::DynamicUpdateSlice => {
            let starts = unbatched_starts(g, node, &ins[2..])?;
            let xs = lift_all(g, &ins[..2])?;
            push(g, Op::DynamicUpdateSlice, [xs, starts].concat())
        }
        Op::Pad {
            low,
            high,
            interior,
        } => {
            if ins[1].1 {
                return Err(unsupported(node, "the padding value must not be batched"));
            }
            let op = Op::Pad {
                low: lead(0, low),
                high: lead(0, high),
                interior: lead(0, interior),
            };
            push(g, op, vec![x, ins[1].0])
        }
        Op::Gather => batch_gather(g, node, ins, size),
        Op::ScatterAdd => batch_scatter_add(g, node, ins, size),
        Op::DotGeneral { dims, out_dtype } => {
            let (l, r) = (ins[0], ins[1]);
            let both = l.1 && r.1;
            // Both batched: the new dim is one more batch dim; else a free dim of its side.
            let side = |b: bool, batch: &[usize], contract: &[usize]| match (b, both) {
                (false, _) => (batch.to_vec(), contract.to_vec()),
                (true, false) => (shift(batch), shift(contract)),
                (true, true) => (lead(0, &shift(batch)), shift(contract)),
            };
            let (lhs_batch, lhs_contract) = side(l.1, &dims.lhs_batch, &dims.lhs_contract);
            let (rhs_batch, rhs_contract) = side(r.1, &dims.rhs_batch, &dims.rhs_contract);
            let op = Op::DotGeneral {
                dims: DotDims {
                    lhs_batch,
                    rhs_batch,
                    lhs_contract,
                    rhs_contract,
                },
                out_dtype: *out_dtype,
            };
            let y = push(g, op, vec![l.0, r.0])?;
            // The result is [batch.., lhs free.., rhs free..] and a free new dim comes
            // first among its side's free dims.
            let nb = dims.lhs_batch.len();
            let pos = match (l.1, r.1) {
                (true, true) => 0,
                (true, false) => nb,
                _ => g.rank(node.inputs[0])? - dims.lhs_contract.len(),
            };
            to_front(g, y, pos)
        }
        Op::Reduce { kind, dims } => push(
            g,
            Op::Reduce {
                kind: *kind,
                dims: shift(dims),
            },
            vec![x],
        ),
        Op::ArgMax { dim, index_dtype } => push(
            g,
            Op::ArgMax {
                dim: dim + 1,
                index_dtype: *index_dtype,
            },
            vec![x],
        ),
        Op::ReduceWindow { kind, window } => push(
            g,
            Op::ReduceWindow {
                kind: *kind,
                window: lead_window(window),
            },
            vec![x],
        ),
        Op::SelectAndScatterAdd { window } => {
            let xs = lift_all(g, ins)?;
            let op = Op::SelectAndScatterAdd {
                window: lead_window(window),
            };
            push(g, op, xs)
        }
        Op::Conv(p) => {
            if ins[1].1 {
                return Err(unsupported(
                    node,
                    "a batched kernel is not supported (it needs feature groups)",
                ));
            }
            // Fold the new dim into the input batch dim, then split it out again.
            let xd = g.dims(node.inputs[0])?.to_vec();
            let od = node_tensor(node)?.dims().to_vec();
            let (ib, ob) = (p.dims.input_batch, p.dims.output_batch);
            let order: Vec<usize> = (0..xd.len())
                .flat_map(|d| if d == ib { vec![0, d + 1] } else { vec![d + 1] })
                .collect();
            let xt = g.transpose(x, &order)?;
            let mut merged = xd.clone();
            merged[ib] *= size;
            let xm = g.reshape(xt, merged)?;
            let y = push(g, Op::Conv(p.clone()), vec![xm, ins[1].0])?;
            let mut split = od.clone();
            split.insert(ob, size);
            let y = g.reshape(y, split)?;
            to_front(g, y, ob)
        }
        Op::Sharding(s) => {
            let s = match s {
                Sharding::Replicated => Sharding::Replicated,
                Sharding::Mesh(axes) => Sharding::Mesh(lead(None, axes)),
                Sharding::Logical(axes) => Sharding::Logical(lead(spec.axis_name.clone(), axes)),
                Sharding::Raw(r) => {
                    return Err(unsupported(
                        node,
                        format!("a raw sharding {r} cannot be extended by a dim"),
                    ))
                }
            };
            push(g, Op::Sharding(s), vec![x])
        }
        Op::Sort { .. }
        | Op::Scan(_)
        | Op::CustomVjp(_)
        | Op::OptimizationBarrier
        | Op::GetTupleElement(_) => Err(unsupported(
            node,
            "tuple ops are not supported on batched operands",
        )),
    }
}

/// Start indices of a dynamic slice, with a zero index prepended for the new dim.
fn unbatched_starts(g: &mut Graph, node: &Node, idx: &[(NodeId, bool)]) -> Result<Vec<NodeId>> {
    if idx.iter().any(|&(_, b)| b) {
        return Err(unsupported(node, "batched start indices are not supported"));
    }
    let dt = match idx.first() {
        Some(&(i, _)) => g.dtype(i)?,
        None => DType::I32,
    };
    let zero = g.scalar(0.0, dt)?;
    Ok(std::iter::once(zero)
        .chain(idx.iter().map(|&(i, _)| i))
        .collect())
}

/// Gather `(table [V, rest..], ids [I..]) -> [I.., rest..]`.
fn batch_gather(g: &mut Graph, node: &Node, ins: &[(NodeId, bool)], size: i64) -> Result<NodeId> {
    let push =
        |g: &mut Graph, inputs: Vec<NodeId>| g.add_node(Op::Gather, inputs, node.loc.clone());
    let ((table, tb), (ids, ib)) = (ins[0], ins[1]);
    match (tb, ib) {
        // Rows of one table at batched ids are already [S, I.., rest..].
        (false, _) => push(g, vec![table, ids]),
        (true, false) => {
            // [V, S, rest..] rows at ids give [I.., S, rest..].
            let r = g.rank(table)?;
            let perm: Vec<usize> = [1, 0].into_iter().chain(2..r).collect();
            let t = g.transpose(table, &perm)?;
            let y = push(g, vec![t, ids])?;
            let ni = g.rank(ids)?;
            to_front(g, y, ni)
        }
        (true, true) => {
            // Slice s reads rows s * V.. of the flattened table; clamp first, as gather
            // clamps each slice's ids into its own table.
            let td = g.dims(table)?.to_vec();
            let v = td[1];
            let dt = g.dtype(ids)?;
            let lo = g.scalar(0.0, dt)?;
            let hi = g.scalar((v - 1).max(0) as f64, dt)?;
            let c = g.max(ids, lo)?;
            let c = g.min(c, hi)?;
            let f = flat_ids(g, node, size, v, c)?;
            let t = g.reshape(table, lead(size * v, &td[2..]))?;
            push(g, vec![t, f])
        }
    }
}

/// Scatter-add `(operand [V, rest..], ids [I..], updates [I.., rest..])`.
fn batch_scatter_add(
    g: &mut Graph,
    node: &Node,
    ins: &[(NodeId, bool)],
    size: i64,
) -> Result<NodeId> {
    let push =
        |g: &mut Graph, inputs: Vec<NodeId>| g.add_node(Op::ScatterAdd, inputs, node.loc.clone());
    let x = lift(g, size, ins[0])?;
    let u = lift(g, size, ins[2])?;
    let (ids, ib) = ins[1];
    let xd = g.dims(x)?.to_vec();
    let r = xd.len();
    if !ib {
        // Scatter [I.., S, rest..] into [V, S, rest..].
        let ni = g.rank(ids)?;
        let perm: Vec<usize> = [1, 0].into_iter().chain(2..r).collect();
        let xt = g.transpose(x, &perm)?;
        let uperm: Vec<usize> = (1..=ni).chain([0]).chain(ni + 1..ni + r - 1).collect();
        let ut = g.transpose(u, &uperm)?;
        let y = push(g, vec![xt, ids, ut])?;
        return g.transpose(y, &perm);
    }
    // Slice s adds into rows s * V.. of the flattened operand; ids out of 0..V go past the
    // end, where scatter drops them as it drops each slice's own.
    let v = xd[1];
    let dt = g.dtype(ids)?;
    let lo = g.scalar(0.0, dt)?;
    let hi = g.scalar(v as f64, dt)?;
    let ge = g.ge(ids, lo)?;
    let lt = g.lt(ids, hi)?;
    let valid = g.and(ge, lt)?;
    let f = flat_ids(g, node, size, v, ids)?;
    let past = g.scalar((size * v) as f64, dt)?;
    let fi = g.select(valid, f, past)?;
    let xf = g.reshape(x, lead(size * v, &xd[2..]))?;
    let y = push(g, vec![xf, fi, u])?;
    g.reshape(y, xd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::grad;
    use crate::gradcheck::Lcg;
    use crate::interp::{eval, HostTensor};
    use crate::passes::{remat, RematPolicy};
    use crate::{verify, Padding, ReduceKind};
    use std::cell::Cell;

    const S: i64 = 3;

    /// An argument of a test function: its per-slice type, whether it is stacked over the
    /// `S` slices, and the range of its random values (integers round down).
    #[derive(Clone)]
    struct Arg {
        ty: TensorType,
        batched: bool,
        lo: f64,
        hi: f64,
    }

    fn xb(dims: &[i64]) -> Arg {
        Arg {
            ty: TensorType::f32(dims.to_vec()),
            batched: true,
            lo: -1.0,
            hi: 1.0,
        }
    }

    fn xu(dims: &[i64]) -> Arg {
        Arg {
            batched: false,
            ..xb(dims)
        }
    }

    fn ints(dtype: DType, dims: &[i64], batched: bool, lo: f64, hi: f64) -> Arg {
        Arg {
            ty: TensorType::new(dtype, dims.to_vec()),
            batched,
            lo,
            hi,
        }
    }

    /// Graph arguments for `args` (stacked `[S, ..]` where batched): float ones are
    /// parameters so that tests can differentiate them.
    fn declare(g: &mut Graph, args: &[Arg]) -> Vec<NodeId> {
        args.iter()
            .enumerate()
            .map(|(i, a)| {
                let ty = if a.batched {
                    with_lead(S, &a.ty)
                } else {
                    a.ty.clone()
                };
                let name = format!("a{i}");
                if ty.dtype.is_float() {
                    g.parameter(&name, ty).unwrap()
                } else {
                    g.input(&name, ty).unwrap()
                }
            })
            .collect()
    }

    fn values(args: &[Arg]) -> Vec<HostTensor> {
        let mut rng = Lcg::new(11);
        args.iter()
            .map(|a| {
                let ty = if a.batched {
                    with_lead(S, &a.ty)
                } else {
                    a.ty.clone()
                };
                let n = ty.shape.num_elements() as usize;
                let int = !ty.dtype.is_float();
                let data = (0..n)
                    .map(|_| {
                        let v = rng.next(a.lo, a.hi);
                        if int {
                            v.floor()
                        } else {
                            v
                        }
                    })
                    .collect();
                HostTensor::new(ty, data).unwrap()
            })
            .collect()
    }

    /// Slice `s` of each stacked argument, the others as they are.
    fn slice_args(g: &mut Graph, args: &[Arg], xs: &[NodeId], s: i64) -> Vec<NodeId> {
        args.iter()
            .zip(xs)
            .map(|(a, &x)| {
                if !a.batched {
                    return x;
                }
                let v = g.slice_dim(x, 0, s, s + 1).unwrap();
                g.reshape(v, a.ty.shape.clone()).unwrap()
            })
            .collect()
    }

    type Build<'a> = &'a dyn Fn(&mut Graph, &[NodeId]) -> Result<Vec<NodeId>>;

    /// `f` built once on slice 0 (the template), then vmapped over the stacked arguments
    /// inside a region; outputs are the batched copies of `f`'s outputs.
    fn vmapped(args: &[Arg], f: Build, spec: &VmapSpec) -> Result<Graph> {
        let mut g = Graph::new("vmapped");
        let xs = declare(&mut g, args);
        let bases = slice_args(&mut g, args, &xs, 0);
        let start = g.len() as u32;
        let outs = f(&mut g, &bases)?;
        let template: Vec<NodeId> = (start..g.len() as u32).map(NodeId).collect();
        let batched: HashMap<NodeId, NodeId> = args
            .iter()
            .zip(bases.iter().zip(&xs))
            .filter(|(a, _)| a.batched)
            .map(|(_, (&b, &x))| (b, x))
            .collect();
        let v = g.region("vmapped", |g| vmap(g, &template, &batched, S, spec))?;
        let outs = outs
            .iter()
            .map(|&o| v.batched(&mut g, o))
            .collect::<Result<Vec<_>>>()?;
        g.set_outputs(&outs)?;
        verify(&g).unwrap();
        Ok(g)
    }

    /// `f` built separately on each slice, its outputs stacked.
    fn per_slice(args: &[Arg], f: Build) -> Graph {
        let mut g = Graph::new("per_slice");
        let xs = declare(&mut g, args);
        let outs: Vec<Vec<NodeId>> = (0..S)
            .map(|s| {
                let a = slice_args(&mut g, args, &xs, s);
                f(&mut g, &a).unwrap()
            })
            .collect();
        let stacked = (0..outs[0].len())
            .map(|k| {
                let parts: Vec<NodeId> = outs
                    .iter()
                    .map(|o| {
                        let d = lead(1, g.dims(o[k]).unwrap());
                        g.reshape(o[k], d).unwrap()
                    })
                    .collect();
                g.concatenate(&parts, 0).unwrap()
            })
            .collect::<Vec<_>>();
        g.set_outputs(&stacked).unwrap();
        verify(&g).unwrap();
        g
    }

    fn assert_close(got: &[HostTensor], want: &[HostTensor], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (k, (a, b)) in got.iter().zip(want).enumerate() {
            assert_eq!(a.ty, b.ty, "{what}: output {k}");
            for (i, (x, y)) in a.data.iter().zip(&b.data).enumerate() {
                let tol = 1e-6 * (1.0 + y.abs());
                assert!(
                    (x - y).abs() <= tol || (x.is_nan() && y.is_nan()),
                    "{what}: output {k} element {i}: {x} vs {y}"
                );
            }
        }
    }

    /// vmap of `f` over `S` stacked arguments equals `f` on each slice, stacked.
    fn check_with(args: &[Arg], spec: &VmapSpec, f: Build) -> Graph {
        let g = vmapped(args, f, spec).unwrap();
        let r = per_slice(args, f);
        let vals = values(args);
        assert_close(&eval(&g, &vals).unwrap(), &eval(&r, &vals).unwrap(), "vmap");
        g
    }

    fn check(args: &[Arg], f: Build) -> Graph {
        check_with(args, &VmapSpec::default(), f)
    }

    #[test]
    fn elementwise_compare_select_convert() {
        check(&[xb(&[4, 5]), xu(&[5]), xb(&[4, 5])], &|g, x| {
            let e = g.exp(x[0])?;
            let t = g.tanh(x[2])?;
            let n = g.neg(t)?;
            let a = g.add(x[0], x[1])?; // unbatched operand broadcast inside the template
            let m = g.mul(x[0], x[2])?;
            let m = g.max(m, n)?;
            let d = g.div(e, x[1])?;
            let s = g.add_scalar(d, 3.0)?;
            let c = g.gt(x[0], x[1])?;
            let cf = g.convert(c, DType::F32)?;
            let sg = g.stop_gradient(cf)?;
            let sel = g.select(c, x[2], x[1])?;
            let w2 = g.mul(x[1], x[1])?; // depends on no batched value
            Ok(vec![a, m, s, sg, sel, c, w2])
        });
    }

    #[test]
    fn broadcast_reshape_transpose_reverse() {
        check(&[xb(&[2, 3, 4]), xu(&[3, 1])], &|g, x| {
            let b = g.broadcast_in_dim(x[0], [2, 5, 3, 4], &[0, 2, 3])?;
            let r = g.reshape(x[0], [6, 4])?;
            let t = g.transpose(x[0], &[2, 0, 1])?;
            let v = g.reverse(x[0], &[0, 2])?;
            let s = g.reduce_sum(x[0], &[0])?; // [3, 4]
            let a = g.add(s, x[1])?; // [3, 1] expanded against a batched [3, 4]
            Ok(vec![b, r, t, v, a])
        });
    }

    #[test]
    fn slices_dynamic_slices_concat_pad() {
        let idx = |b| ints(DType::I32, &[], b, -1.0, 6.0);
        check(
            &[
                xb(&[5, 6]),
                xu(&[2, 3]),
                idx(false),
                idx(false),
                xu(&[5, 6]),
            ],
            &|g, x| {
                let s = g.slice(x[0], &[1, 0], &[5, 6], &[2, 3])?;
                let d = g.dynamic_slice(x[0], &[x[2], x[3]], &[2, 3])?;
                let u = g.dynamic_update_slice(x[0], x[1], &[x[2], x[3]])?;
                let d2 = g.mul_scalar(d, 2.0)?;
                let u2 = g.dynamic_update_slice(x[4], d2, &[x[3], x[2]])?;
                let c0 = g.concatenate(&[x[0], x[4], x[0]], 0)?;
                let c1 = g.concatenate(&[x[4], x[0]], 1)?;
                let z = g.scalar(7.0, DType::F32)?;
                let p = g.pad(x[0], z, &[1, -1], &[0, 2], &[1, 0])?;
                Ok(vec![s, d, u, u2, c0, c1, p])
            },
        );
    }

    #[test]
    fn gather_and_scatter_add_in_every_combination() {
        // Ids in -2..8 for 6 rows: gather clamps and scatter drops per slice.
        let ids = |b| ints(DType::I32, &[2, 4], b, -2.0, 8.0);
        check(
            &[
                xb(&[6, 3]),
                xu(&[6, 3]),
                ids(true),
                ids(false),
                xb(&[2, 4, 3]),
                xu(&[2, 4, 3]),
            ],
            &|g, x| {
                let (tb, tu, ib, iu, ub, uu) = (x[0], x[1], x[2], x[3], x[4], x[5]);
                Ok(vec![
                    g.gather(tu, ib)?,
                    g.gather(tb, iu)?,
                    g.gather(tb, ib)?,
                    g.scatter_add(tb, iu, uu)?,
                    g.scatter_add(tu, iu, ub)?,
                    g.scatter_add(tu, ib, uu)?,
                    g.scatter_add(tb, ib, ub)?,
                ])
            },
        );
    }

    #[test]
    fn dot_general_both_and_one_batched() {
        let bd = DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![0],
            lhs_contract: vec![2],
            rhs_contract: vec![2],
        };
        // One side per form: both batched, lhs only, rhs only, with and without batch dims.
        let f = move |g: &mut Graph, x: &[NodeId]| -> Result<Vec<NodeId>> {
            let (q, k) = (x[0], x[1]);
            let att = g.dot_general(q, k, bd.clone(), None)?; // [2, 4, 5]
            let w = g.dot(x[2], x[3])?; // [4, 3] x [3, 5]
            let w2 = g.dot_general(x[3], x[2], DotDims::contract(&[0], &[1]), None)?;
            Ok(vec![att, w, w2])
        };
        for (qb, kb) in [(true, true), (true, false), (false, true)] {
            let arg = |b: bool, d: &[i64]| if b { xb(d) } else { xu(d) };
            check(
                &[
                    arg(qb, &[2, 4, 3]),
                    arg(kb, &[2, 5, 3]),
                    arg(qb, &[4, 3]),
                    arg(kb, &[3, 5]),
                ],
                &f,
            );
        }
    }

    #[test]
    fn reductions_pooling_and_conv() {
        check(&[xb(&[2, 3, 4])], &|g, x| {
            Ok(vec![
                g.reduce_sum(x[0], &[0, 2])?,
                g.reduce_max(x[0], &[1])?,
                g.reduce_min(x[0], &[2])?,
                g.mean(x[0], &[1, 2])?,
                g.sum_all(x[0])?,
                g.argmax(x[0], 1)?,
            ])
        });
        let w = Window {
            dims: vec![1, 2, 2, 1],
            strides: vec![1, 2, 2, 1],
            padding: vec![(0, 0), (0, 1), (0, 1), (0, 0)],
        };
        check(
            &[xb(&[2, 5, 5, 3]), xu(&[3, 3, 3, 4]), xu(&[2, 3, 3, 3])],
            &|g, x| {
                let m = g.max_pool2d(x[0], [2, 2], [2, 2], Padding::Same)?;
                let a = g.avg_pool2d(x[0], [3, 3], [2, 2], Padding::Same)?;
                let s = g.reduce_window(x[0], ReduceKind::Sum, w.clone())?;
                let b = g.select_and_scatter_add(m, x[0], w.clone())?;
                let bu = g.select_and_scatter_add(x[2], x[0], w.clone())?;
                let c = g.conv2d(x[0], x[1], [1, 1], Padding::Same, [1, 1])?;
                let c2 = g.conv2d(x[0], x[1], [2, 2], Padding::Valid, [1, 1])?;
                Ok(vec![m, a, s, b, bu, c, c2])
            },
        );
    }

    #[test]
    fn softmax_layer_norm_gelu_cross_entropy() {
        let labels = |b| ints(DType::I32, &[4], b, 0.0, 6.0);
        check(
            &[xb(&[4, 6]), xb(&[6]), xu(&[6]), labels(false), labels(true)],
            &|g, x| {
                let s = g.softmax(x[0], 1)?;
                let ls = g.log_softmax(x[0], 0)?;
                let n = g.layer_norm(x[0], x[1], x[2], 1e-5)?;
                let n2 = g.layer_norm(x[0], x[2], x[2], 1e-5)?;
                let ge = g.gelu(x[0])?;
                let ce = g.cross_entropy(x[0], x[3])?;
                let ce2 = g.cross_entropy(x[0], x[4])?;
                Ok(vec![s, ls, n, n2, ge, ce, ce2])
            },
        );
    }

    #[test]
    fn causal_mask_select() {
        check(&[xb(&[2, 4, 4])], &|g, x| {
            let rows = g.iota(TensorType::new(DType::I32, [4, 4]), 0)?;
            let cols = g.iota(TensorType::new(DType::I32, [4, 4]), 1)?;
            let visible = g.ge(rows, cols)?;
            let visible = g.broadcast_to(visible, &[2, 4, 4])?;
            let neg = g.full(-1e9, TensorType::f32([2, 4, 4]))?;
            let att = g.select(visible, x[0], neg)?;
            Ok(vec![g.softmax(att, 2)?])
        });
    }

    #[test]
    fn rng_and_dropout_with_unbatched_and_batched_seeds() {
        let seed = |b| ints(DType::U32, &[], b, 0.0, 1000.0);
        check(&[xb(&[4, 5]), seed(false), seed(true)], &|g, x| {
            let d = g.dropout(x[0], 0.3, x[1], 7)?; // one mask for every slice
            let bits = g.rng_bits(x[2], 3, [4, 5])?; // a mask per slice
            let n = g.rng_normal(x[2], 5, [3], DType::F32)?;
            let d2 = g.dropout(x[0], 0.5, x[2], 9)?;
            Ok(vec![d, bits, n, d2])
        });
    }

    #[test]
    fn sharding_gets_the_new_axis() {
        let spec = VmapSpec {
            axis_name: Some("stage".into()),
        };
        let g = check_with(&[xb(&[4, 5])], &spec, &|g, x| {
            let l = g.logical_axes(x[0], &[Some("batch"), None])?;
            let m = g.shard(l, Sharding::Mesh(vec![Some("data".into()), None]))?;
            let r = g.shard(m, Sharding::Replicated)?;
            Ok(vec![r])
        });
        let sh: Vec<&Sharding> = g
            .nodes
            .iter()
            .filter(|n| n.ty.as_tensor().is_some_and(|t| t.rank() == 3))
            .filter_map(|n| match &n.op {
                Op::Sharding(s) => Some(s),
                _ => None,
            })
            .collect();
        let s = |v: Option<&str>| v.map(String::from);
        assert_eq!(
            sh,
            [
                &Sharding::Logical(vec![s(Some("stage")), s(Some("batch")), None]),
                &Sharding::Mesh(vec![None, s(Some("data")), None]),
                &Sharding::Replicated,
            ]
        );
    }

    /// A GPT-2 style block on `x (B, T, D)`: pre-norm causal attention and a gelu MLP.
    /// `p`: ln1 (g, b), qkv (w (D, 3, H, hd), b), proj (w, b), ln2 (g, b), fc, mlp proj.
    fn gpt_block(g: &mut Graph, x: NodeId, p: &[NodeId], heads: i64) -> Result<NodeId> {
        let (b, t, d) = {
            let xd = g.dims(x)?;
            (xd[0], xd[1], xd[2])
        };
        let hd = d / heads;
        let linear = |g: &mut Graph, x: NodeId, w: NodeId, bias: NodeId| -> Result<NodeId> {
            let y = g.dot(x, w)?;
            g.add(y, bias)
        };
        let h = g.layer_norm(x, p[0], p[1], 1e-5)?;
        let qkv = linear(g, h, p[2], p[3])?; // (B, T, 3, H, hd)
        let head = |g: &mut Graph, i: i64| -> Result<NodeId> {
            let s = g.slice_dim(qkv, 2, i, i + 1)?;
            let s = g.reshape(s, [b, t, heads, hd])?;
            let s = g.transpose(s, &[0, 2, 1, 3])?; // (B, H, T, hd)
            g.logical_axes(s, &[Some("batch"), Some("heads"), None, None])
        };
        let (q, k, v) = (head(g, 0)?, head(g, 1)?, head(g, 2)?);
        let batch = |lc: usize, rc: usize| DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 1],
            lhs_contract: vec![lc],
            rhs_contract: vec![rc],
        };
        let att = g.dot_general(q, k, batch(3, 3), None)?; // (B, H, T, T)
        let att = g.mul_scalar(att, 1.0 / (hd as f64).sqrt())?;
        let rows = g.iota(TensorType::new(DType::I32, [t, t]), 0)?;
        let cols = g.iota(TensorType::new(DType::I32, [t, t]), 1)?;
        let visible = g.ge(rows, cols)?;
        let full = [b, heads, t, t];
        let visible = g.broadcast_to(visible, &full)?;
        let neg = g.full(-1e9, TensorType::f32(full))?;
        let att = g.select(visible, att, neg)?;
        let att = g.softmax(att, 3)?;
        let y = g.dot_general(att, v, batch(3, 2), None)?; // (B, H, T, hd)
        let y = g.transpose(y, &[0, 2, 1, 3])?;
        let y = g.reshape(y, [b, t, d])?;
        let a = linear(g, y, p[4], p[5])?;
        let x = g.add(x, a)?;
        let h = g.layer_norm(x, p[6], p[7], 1e-5)?;
        let m = linear(g, h, p[8], p[9])?;
        let m = g.gelu(m)?;
        let m = g.logical_axes(m, &[Some("batch"), None, Some("mlp")])?;
        let m = linear(g, m, p[10], p[11])?;
        let x = g.add(x, m)?;
        g.logical_axes(x, &[Some("batch"), None, Some("embed")])
    }

    /// The stacked state `x (S, B, T, D)` and `S` stacked parameter sets of one block.
    fn block_args() -> Vec<Arg> {
        let (d, h) = (8, 2);
        let around_one = |dims: &[i64]| Arg {
            lo: 0.5,
            hi: 1.5,
            ..xb(dims)
        };
        vec![
            xb(&[2, 4, d]),
            around_one(&[d]),
            xb(&[d]),
            xb(&[d, 3, h, d / h]),
            xb(&[3, h, d / h]),
            xb(&[d, d]),
            xb(&[d]),
            around_one(&[d]),
            xb(&[d]),
            xb(&[d, 4 * d]),
            xb(&[4 * d]),
            xb(&[4 * d, d]),
            xb(&[d]),
        ]
    }

    fn block_fn(g: &mut Graph, x: &[NodeId]) -> Result<Vec<NodeId>> {
        Ok(vec![gpt_block(g, x[0], &x[1..], 2)?])
    }

    #[test]
    fn gpt_block_matches_three_blocks() {
        let spec = VmapSpec {
            axis_name: Some("stage".into()),
        };
        let g = check_with(&block_args(), &spec, &block_fn);
        let last = g.outputs[0];
        assert_eq!(g.dims(last).unwrap(), &[S, 2, 4, 8]);
        assert_eq!(
            g.node(last).unwrap().op,
            Op::Sharding(Sharding::Logical(
                ["stage", "batch", "", "embed"]
                    .iter()
                    .map(|a| (!a.is_empty()).then(|| a.to_string()))
                    .collect()
            ))
        );
    }

    /// `sum(y * r)` for a fixed `r`, and the graph with its gradient for every parameter.
    fn loss_and_grads(mut g: Graph) -> Graph {
        let y = g.outputs[0];
        let ty = g.ty(y).unwrap().clone();
        let n = ty.shape.num_elements() as usize;
        let mut rng = Lcg::new(5);
        let r = (0..n).map(|_| rng.next(-1.0, 1.0) as f32).collect();
        let r = g.constant_f32(ty.shape.clone(), r).unwrap();
        let l = g.mul(y, r).unwrap();
        let loss = g.sum_all(l).unwrap();
        let params = g.parameters();
        let (mut g, grads) = grad(&g, loss, &params).unwrap();
        g.set_outputs(&[&[loss][..], &grads].concat()).unwrap();
        verify(&g).unwrap();
        g
    }

    #[test]
    fn grad_through_a_vmapped_block_matches_per_slice_grads() {
        let args = block_args();
        let spec = VmapSpec::default();
        let g = loss_and_grads(vmapped(&args, &block_fn, &spec).unwrap());
        let r = loss_and_grads(per_slice(&args, &block_fn));
        let vals = values(&args);
        let got = eval(&g, &vals).unwrap();
        assert_close(&got, &eval(&r, &vals).unwrap(), "grad");
        // The vmapped region is a unit remat can recompute.
        let (rm, report) = remat(&g, &RematPolicy::Full).unwrap();
        verify(&rm).unwrap();
        assert_eq!(report.rematerialized(), vec!["vmapped"]);
        assert_close(&eval(&rm, &vals).unwrap(), &got, "remat");
    }

    #[test]
    fn copies_are_fresh_and_arguments_stay() {
        let mut g = Graph::new("t");
        let stacked = g.input("stacked", TensorType::f32([S, 4])).unwrap();
        let start = g.len() as u32;
        let x = g.input("x", TensorType::f32([4])).unwrap(); // a placeholder in the template
        let w = g.parameter("w", TensorType::f32([4])).unwrap();
        let c = g.full(2.0, TensorType::f32([4])).unwrap();
        let wc = g.mul(w, c).unwrap();
        g.set_name(wc, "wc").unwrap();
        let y = g.add(x, wc).unwrap();
        let end = g.len() as u32;
        let template: Vec<NodeId> = (start..end).map(NodeId).collect();
        let batched = HashMap::from([(x, stacked)]);
        let v = vmap(&mut g, &template, &batched, S, &VmapSpec::default()).unwrap();
        assert_eq!(v.get(x), Some((stacked, true)));
        assert_eq!(v.get(w), Some((w, false)));
        let (wc2, b) = v.get(wc).unwrap();
        assert!(!b && wc2.0 >= end);
        assert_eq!(g.node(wc2).unwrap().name.as_deref(), Some("wc"));
        assert_eq!(g.node(wc2).unwrap().loc, g.node(wc).unwrap().loc);
        let (y2, b) = v.get(y).unwrap();
        assert!(
            b && y2.0 >= end
                && g.nodes[y2.index()]
                    .inputs
                    .iter()
                    .all(|i| i.0 >= end || *i == stacked)
        );
        let wb = v.batched(&mut g, wc).unwrap();
        assert_eq!(g.dims(wb).unwrap(), &[S, 4]);
        assert!(v.get(stacked).is_none());
        let e = v.batched(&mut g, stacked).unwrap_err().to_string();
        assert!(e.contains("not a node of the template"), "{e}");
        // A template serves any number of calls (one per pipeline iteration and layer).
        let other = g.input("other", TensorType::f32([S, 4])).unwrap();
        let batched = HashMap::from([(x, other)]);
        let v2 = vmap(&mut g, &template, &batched, S, &VmapSpec::default()).unwrap();
        let (y3, _) = v2.get(y).unwrap();
        assert!(y3 != y2 && g.nodes[y3.index()].inputs.contains(&other));
        verify(&g).unwrap();
    }

    #[test]
    fn unsupported_cases_name_the_op_and_model_line() {
        let line = Cell::new(0);
        let expect = |args: &[Arg], op: &str, msg: &str, f: Build| {
            let e = vmapped(args, f, &VmapSpec::default()).unwrap_err();
            let at = format!("{op} at {}:{}:", file!(), line.get());
            let e = e.to_string();
            assert!(e.starts_with(&at) && e.contains(msg), "{e}");
        };
        let kernel = "vmap: a batched kernel";
        expect(
            &[xu(&[2, 4, 4, 3]), xb(&[3, 3, 3, 2])],
            "convolution",
            kernel,
            &|g, x| {
                line.set(line!() + 1);
                Ok(vec![g.conv2d(x[0], x[1], [1, 1], Padding::Same, [1, 1])?])
            },
        );
        expect(&[xu(&[4]), xb(&[])], "pad", "padding value", &|g, x| {
            line.set(line!() + 1);
            Ok(vec![g.pad(x[0], x[1], &[1], &[1], &[0])?])
        });
        let i = ints(DType::I32, &[], true, 0.0, 3.0);
        expect(&[xu(&[4]), i], "dynamic_slice", "batched start", &|g, x| {
            line.set(line!() + 1);
            Ok(vec![g.dynamic_slice(x[0], &[x[1]], &[2])?])
        });
        let ids = ints(DType::U8, &[4], true, 0.0, 100.0);
        expect(
            &[xb(&[100, 2]), ids],
            "gather",
            "3 x 100 rows do not fit u8",
            &|g, x| {
                line.set(line!() + 1);
                Ok(vec![g.gather(x[0], x[1])?])
            },
        );
        expect(&[xb(&[4])], "sharding", "raw sharding", &|g, x| {
            line.set(line!() + 1);
            Ok(vec![g.shard(x[0], Sharding::Raw("{replicated}".into()))?])
        });
        expect(&[xb(&[4])], "optimization_barrier", "tuple ops", &|g, x| {
            line.set(line!() + 1);
            g.optimization_barrier(&[x[0]])
        });
        expect(&[xb(&[4])], "sort", "tuple ops", &|g, x| {
            line.set(line!() + 1);
            Ok(vec![g.sort(x[0], 0, false)?])
        });
        expect(&[xb(&[4])], "custom_vjp", "tuple ops", &|g, x| {
            line.set(line!() + 1);
            g.custom_vjp(
                "id",
                &[x[0]],
                |_, xs| Ok(xs.to_vec()),
                |_, _, _, cts| Ok(vec![Some(cts[0])]),
            )
        });
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([4])).unwrap();
        let y = g.exp(x).unwrap();
        let z = g.neg(y).unwrap();
        let wrong = g.input("s", TensorType::f32([4, S])).unwrap();
        let spec = VmapSpec::default();
        let e = vmap(&mut g, &[y, z], &HashMap::from([(x, wrong)]), S, &spec).unwrap_err();
        assert!(e.to_string().contains("must be f32[3,4]"), "{e}");
        let e = vmap(&mut g, &[z, y], &HashMap::new(), S, &spec).unwrap_err();
        assert!(e.to_string().contains("ascending"), "{e}");
        let e = vmap(&mut g, &[y, NodeId(99)], &HashMap::new(), S, &spec).unwrap_err();
        assert!(e.to_string().contains("unknown node"), "{e}");
    }
}
