//! Reverse-mode autodiff as a pass over the graph.
//!
//! Walks the forward nodes backwards from the seeds, calling each op's VJP
//! rule (in `ops/`) and adding up cotangents of values used several times.
//! Only float values get cotangents; backward nodes carry the location of
//! the forward node they differentiate.

use crate::error::{GraphError, Result};
use crate::ir::{Graph, NodeId};
use crate::op::{vjp_node, Op};
use crate::ops::common::accumulate;
use crate::ops::control::{add_element_ct, save_carries, vjp_optimization_barrier, vjp_scan};
use crate::ops::custom::vjp_custom_vjp;
use crate::ops::sort::{save_indices, vjp_sort};
use crate::passes::region::NodeTag;
use std::collections::HashMap;

/// Returns a copy of `g` extended with the backward pass, and the gradient
/// of the scalar float `loss` with respect to each of `wrt` (zeros for
/// values the loss does not depend on). Typical use:
///
/// ```ignore
/// let (mut g2, grads) = graph::autodiff::grad(&g, loss, &params)?;
/// g2.set_outputs(&[&[loss][..], &grads].concat())?;
/// ```
pub fn grad(g: &Graph, loss: NodeId, wrt: &[NodeId]) -> Result<(Graph, Vec<NodeId>)> {
    let t = g.ty(loss)?;
    if t.rank() != 0 || !t.dtype.is_float() {
        return Err(GraphError::Invalid(format!(
            "grad needs a scalar float loss, {loss} is {t}"
        )));
    }
    let mut out = g.clone();
    let loc = g.node(loss)?.loc.clone();
    let one = out.with_location(loc, |g| g.full_like(loss, 1.0))?;
    let grads = vjp_unchecked(&mut out, &[(loss, one)], wrt)?;
    out.regions
        .fill(g.len()..out.len(), NodeTag::Backward(None));
    Ok((crate::passes::checked("grad", g, out)?, grads))
}

/// In-place reverse mode: appends to `g` the cotangents of `wrt` given the
/// cotangent `ct` of each seed value `(value, ct)`. Scans and sorts on the
/// path are rewritten in place to also return what the backward pass needs
/// (carries, indices). Verifies the result like every pass.
pub fn vjp(g: &mut Graph, seeds: &[(NodeId, NodeId)], wrt: &[NodeId]) -> Result<Vec<NodeId>> {
    let grads = vjp_unchecked(g, seeds, wrt)?;
    crate::verify(g).map_err(|err| GraphError::PassOutput { pass: "vjp", err })?;
    Ok(grads)
}

/// [`vjp`] without the final verify (for [`grad`], and for scan bodies,
/// verified with the graph holding them).
pub(crate) fn vjp_unchecked(
    g: &mut Graph,
    seeds: &[(NodeId, NodeId)],
    wrt: &[NodeId],
) -> Result<Vec<NodeId>> {
    let n = g.len();
    for &(v, c) in seeds {
        let (tv, tc) = (g.ty(v)?, g.ty(c)?);
        if tv != tc || !tv.dtype.is_float() {
            return Err(GraphError::Invalid(format!(
                "seed {v} is {tv} but its cotangent {c} is {tc} (both must be the same float type)"
            )));
        }
    }
    for &w in wrt {
        let t = g.ty(w)?;
        if !t.dtype.is_float() {
            return Err(GraphError::Invalid(format!(
                "only float values get gradients: {w} is {t}"
            )));
        }
    }

    // Active nodes: depend on some `wrt` and feed some seed.
    let mut depends = vec![false; n];
    for &w in wrt {
        depends[w.index()] = true;
    }
    for i in 0..n {
        if !depends[i] && g.nodes[i].inputs.iter().any(|x| depends[x.index()]) {
            depends[i] = true;
        }
    }
    let mut needed = vec![false; n];
    for &(v, _) in seeds {
        needed[v.index()] = true;
    }
    for i in (0..n).rev() {
        if needed[i] && depends[i] {
            for x in g.nodes[i].inputs.clone() {
                needed[x.index()] = true;
            }
        }
    }
    let active = |i: usize| depends[i] && needed[i];

    // Residuals of tuple ops, saved by rewriting them in place.
    let mut saved = HashMap::new();
    let mut perms = HashMap::new();
    for i in 0..n {
        let id = NodeId(i as u32);
        match g.nodes[i].op {
            Op::Scan(_) if active(i) => {
                saved.insert(id, save_carries(g, id)?);
            }
            Op::Sort { .. } if active(i) => {
                perms.insert(id, save_indices(g, id)?);
            }
            _ => {}
        }
    }

    // Cotangent of each element of each node (one element for tensors).
    let mut cts: HashMap<NodeId, Vec<Option<NodeId>>> = HashMap::new();
    for &(v, c) in seeds {
        let slot = cts.entry(v).or_insert_with(|| vec![None]);
        slot[0] = Some(accumulate(g, slot[0], c)?);
    }
    let mut found: HashMap<NodeId, NodeId> = HashMap::new();
    for i in (0..n).rev() {
        let id = NodeId(i as u32);
        if !active(i) {
            continue;
        }
        let Some(node_cts) = cts.remove(&id) else {
            continue;
        };
        let node = g.nodes[i].clone();
        let start = g.len();
        if wrt.contains(&id) {
            if let Some(c) = node_cts[0] {
                found.insert(id, c);
            }
        }
        let in_cts = g.with_location(node.loc.clone(), |g| -> Result<Vec<Option<NodeId>>> {
            match &node.op {
                Op::GetTupleElement(k) => {
                    let t = node.inputs[0];
                    let len = g.node_type(t)?.elements().len();
                    let slot = cts.entry(t).or_insert_with(|| vec![None; len]);
                    if let (Some(c), Some(s)) = (node_cts[0], slot.get_mut(*k)) {
                        add_element_ct(g, s, c)?;
                    }
                    Ok(vec![None])
                }
                Op::OptimizationBarrier => Ok(vjp_optimization_barrier(&node_cts)),
                Op::CustomVjp(p) => vjp_custom_vjp(g, p, id, &node.inputs, &node_cts),
                Op::Sort { dim, .. } => {
                    let perm = perms.get(&id).ok_or_else(|| {
                        GraphError::Invalid(format!("sort {id} has no saved indices"))
                    })?;
                    vjp_sort(g, *dim, &node.inputs, &node_cts, *perm)
                }
                Op::Scan(_) => {
                    let (orig, hs) = saved.get(&id).ok_or_else(|| {
                        GraphError::Invalid(format!("scan {id} has no saved carries"))
                    })?;
                    vjp_scan(g, orig, &node.inputs, &node_cts, hs, &node.loc)
                }
                _ => match node_cts[0] {
                    Some(c) => vjp_node(g, id, c),
                    None => Ok(vec![None; node.inputs.len()]),
                },
            }
        })?;
        for (&x, c) in node.inputs.iter().zip(in_cts) {
            let Some(c) = c else { continue };
            if !active(x.index())
                || matches!(g.nodes[x.index()].ty.as_tensor(), Some(t) if !t.dtype.is_float())
            {
                continue;
            }
            if g.node_type(c)? != g.node_type(x)? {
                return Err(GraphError::Invalid(format!(
                    "internal: VJP of {} at {} gave {} for operand {x} of type {}",
                    node.op.name(),
                    node.loc,
                    g.node_type(c)?,
                    g.node_type(x)?
                )));
            }
            let slot = cts.entry(x).or_insert_with(|| vec![None]);
            slot[0] = Some(g.with_location(node.loc.clone(), |g| accumulate(g, slot[0], c))?);
        }
        let region = g.regions.region_of(id);
        g.regions.fill(start..g.len(), NodeTag::Backward(region));
    }
    let grads = wrt
        .iter()
        .map(|&w| match found.get(&w) {
            Some(&c) => Ok(c),
            None => {
                let loc = g.node(w)?.loc.clone();
                g.with_location(loc, |g| g.zeros_like(w))
            }
        })
        .collect();
    g.regions.fill(n..g.len(), NodeTag::Backward(None));
    grads
}

#[cfg(test)]
mod tests {
    use super::grad;
    use crate::gradcheck::{check, interp_evaluator, GradCase, Tolerance};
    use crate::interp::{eval, HostTensor};
    use crate::{verify, DType, Graph, GraphError, Op, Padding, TensorType};

    #[test]
    fn unused_params_get_zeros_and_graph_verifies() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([2])).unwrap();
        let w = g.parameter("w", TensorType::f32([2])).unwrap();
        let u = g.parameter("unused", TensorType::f32([3])).unwrap();
        let y = g.mul(x, w).unwrap();
        let l = g.sum_all(y).unwrap();
        let (mut g2, grads) = grad(&g, l, &[w, u]).unwrap();
        verify(&g2).unwrap();
        assert!(matches!(g2.nodes[grads[1].index()].op, Op::Constant(_)));
        assert_eq!(g2.ty(grads[1]).unwrap(), &TensorType::f32([3]));
        g2.set_outputs(&[l, grads[0], grads[1]]).unwrap();
        let args = [
            HostTensor::f32(&[2], &[3.0, 4.0]).unwrap(),
            HostTensor::f32(&[2], &[1.0, 1.0]).unwrap(),
            HostTensor::f32(&[3], &[1.0, 1.0, 1.0]).unwrap(),
        ];
        let r = eval(&g2, &args).unwrap();
        assert_eq!(r[1].data, vec![3.0, 4.0]);
        assert_eq!(r[2].data, vec![0.0; 3]);
    }

    #[test]
    fn fan_out_accumulates_and_backward_nodes_point_at_model_code() {
        let mut g = Graph::new("t");
        let x = g.parameter("x", TensorType::f32([2])).unwrap();
        let sq = g.mul(x, x).unwrap();
        let y = g.add(sq, x).unwrap();
        let l = g.sum_all(y).unwrap();
        let n = g.len();
        let (mut g2, grads) = grad(&g, l, &[x]).unwrap();
        for node in &g2.nodes[n..] {
            assert_eq!(node.loc.file, file!(), "{:?}", node.op);
        }
        g2.set_outputs(&grads).unwrap();
        let r = eval(&g2, &[HostTensor::f32(&[2], &[1.0, -2.0]).unwrap()]).unwrap();
        assert_eq!(r[0].data, vec![3.0, -3.0]);
    }

    #[test]
    fn rejects_bad_requests() {
        let mut g = Graph::new("t");
        let x = g.parameter("x", TensorType::f32([2])).unwrap();
        let i = g.input("i", TensorType::new(DType::I32, [2])).unwrap();
        let l = g.sum_all(x).unwrap();
        let e = grad(&g, x, &[x]).unwrap_err().to_string();
        assert!(e.contains("scalar float loss"), "{e}");
        let e = grad(&g, l, &[i]).unwrap_err().to_string();
        assert!(e.contains("only float values"), "{e}");
    }

    #[test]
    fn stop_gradient_and_integer_paths() {
        let mut g = Graph::new("t");
        let x = g.parameter("x", TensorType::f32([3])).unwrap();
        let s = g.stop_gradient(x).unwrap();
        let y = g.mul(x, s).unwrap();
        let a = g.argmax(x, 0).unwrap();
        let oh = g.one_hot(a, 3, DType::F32).unwrap();
        let y = g.mul(y, oh).unwrap();
        let l = g.sum_all(y).unwrap();
        let (mut g2, grads) = grad(&g, l, &[x]).unwrap();
        g2.set_outputs(&grads).unwrap();
        let r = eval(&g2, &[HostTensor::f32(&[3], &[1.0, 5.0, 2.0]).unwrap()]).unwrap();
        assert_eq!(r[0].data, vec![0.0, 5.0, 0.0]);
    }

    #[test]
    fn scan_rewrite_keeps_forward_values() {
        let mut g = Graph::new("t");
        let w = g.parameter("w", TensorType::f32([2])).unwrap();
        let h0 = g.input("h0", TensorType::f32([2])).unwrap();
        let out = g
            .scan(3, &[w], &[h0], &[], false, |b, a| {
                let h = b.mul(a.carries[0], a.consts[0])?;
                let h = b.sin(h)?;
                Ok((vec![h], vec![h]))
            })
            .unwrap();
        let l = g.sum_all(out.ys[0]).unwrap();
        g.set_outputs(&[out.carries[0], out.ys[0]]).unwrap();
        let args = [
            HostTensor::f32(&[2], &[0.5, 1.5]).unwrap(),
            HostTensor::f32(&[2], &[1.0, -1.0]).unwrap(),
        ];
        let before = eval(&g, &args).unwrap();
        let (g2, _) = grad(&g, l, &[w]).unwrap();
        verify(&g2).unwrap();
        let scan = g2
            .nodes
            .iter()
            .find(|n| matches!(n.op, Op::Scan(_)))
            .unwrap();
        assert_eq!(scan.ty.elements().len(), 3, "carry, ys, saved carries");
        assert_eq!(eval(&g2, &args).unwrap(), before);
    }

    #[test]
    fn max_pool_second_derivative_is_an_error() {
        let mut g = Graph::new("t");
        let x = g.parameter("x", TensorType::f32([1, 2, 2, 1])).unwrap();
        let m = g.max_pool2d(x, [2, 2], [1, 1], Padding::Same).unwrap();
        let l = g.sum_all(m).unwrap();
        let (mut g2, gr) = grad(&g, l, &[x]).unwrap();
        let s = g2.mul(gr[0], gr[0]).unwrap();
        let l2 = g2.sum_all(s).unwrap();
        let e = grad(&g2, l2, &[x]).unwrap_err();
        assert!(
            matches!(
                e,
                GraphError::NoGradient {
                    op: "select_and_scatter_add",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn second_order_matches_finite_differences() {
        // d/dx sum(g(x)) where g = d/dx sum(tanh(x) * x^2), through a scan.
        let mut g = Graph::new("second_order");
        let x = g.input("x", TensorType::f32([3])).unwrap();
        let out = g
            .scan(2, &[], &[x], &[], false, |b, a| {
                let t = b.tanh(a.carries[0])?;
                let sq = b.mul(a.carries[0], a.carries[0])?;
                Ok((vec![b.mul(t, sq)?], vec![]))
            })
            .unwrap();
        let l = g.sum_all(out.carries[0]).unwrap();
        let (mut g1, grads) = grad(&g, l, &[x]).unwrap();
        g1.set_outputs(&grads).unwrap();
        let case = GradCase {
            name: "second_order",
            graph: g1,
            args: vec![HostTensor::f32(&[3], &[0.3, -0.7, 1.1]).unwrap()],
        };
        check(&case, &mut interp_evaluator(), Tolerance::F64).unwrap();
    }
}
