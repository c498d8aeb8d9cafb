//! Tuple-producing ops: the scan loop, optimization_barrier and
//! get_tuple_element.
//!
//! `Scan` runs a body graph `length` times. Operands are
//! `[consts.., init carries.., xs..]`; the body's arguments (its
//! parameter/input nodes in order) are `[consts.., carries.., x slices..]`
//! where each x slice is `xs[t]`; the body returns `[new carries.., ys..]`.
//! The scan produces `(final carries.., ys stacked along a new dim 0..)`.
//! With `reverse`, t runs from `length - 1` down to 0 (ys still land at t).
//! Bodies cannot see outer nodes: pass what they need as consts.

use super::common::{accumulate, Cts};
use crate::autodiff;
use crate::error::{GraphError, Result};
use crate::ir::{Graph, Location, NodeId};
use crate::op::Op;
use crate::rewrite::inline;
use crate::types::{NodeType, TensorType};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScanParams {
    pub body: Graph,
    pub length: i64,
    pub num_consts: usize,
    pub num_carry: usize,
    pub reverse: bool,
}

/// What the scan builder's closure gets: the body's argument nodes.
#[derive(Clone, Debug)]
pub struct ScanArgs {
    pub consts: Vec<NodeId>,
    pub carries: Vec<NodeId>,
    pub xs: Vec<NodeId>,
}

/// The scan's results as ordinary nodes of the outer graph.
#[derive(Clone, Debug)]
pub struct ScanOutputs {
    pub carries: Vec<NodeId>,
    pub ys: Vec<NodeId>,
}

fn stacked(length: i64, t: &TensorType) -> TensorType {
    let mut d = vec![length];
    d.extend_from_slice(t.dims());
    TensorType::new(t.dtype, d)
}

pub(crate) fn infer_scan(p: &ScanParams, ins: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    let (nc, nh) = (p.num_consts, p.num_carry);
    if ins.len() < nc + nh {
        return Err(format!(
            "{} operands for {nc} consts and {nh} carries",
            ins.len()
        ));
    }
    if p.length < 0 {
        return Err(format!("negative length {}", p.length));
    }
    let args = p.body.args();
    if args.len() != ins.len() {
        return Err(format!(
            "body takes {} arguments but scan has {} operands",
            args.len(),
            ins.len()
        ));
    }
    for (i, (&a, &t)) in args.iter().zip(ins).enumerate() {
        let want = if i < nc + nh {
            t.clone()
        } else {
            if t.rank() == 0 || t.dims()[0] != p.length {
                return Err(format!("xs operand {t} must have leading dim {}", p.length));
            }
            TensorType::new(t.dtype, t.dims()[1..].to_vec())
        };
        let got = p.body.ty(a).map_err(|e| e.to_string())?;
        if *got != want {
            return Err(format!(
                "body argument {i} is {got} but the scan passes {want}"
            ));
        }
    }
    if p.body.outputs.len() < nh {
        return Err(format!(
            "body returns {} values for {nh} carries",
            p.body.outputs.len()
        ));
    }
    let mut out = Vec::with_capacity(p.body.outputs.len());
    for (i, &o) in p.body.outputs.iter().enumerate() {
        let t = p.body.ty(o).map_err(|e| format!("body output {i}: {e}"))?;
        if i < nh {
            if t != ins[nc + i] {
                return Err(format!(
                    "body returns carry {i} as {t} but it enters as {}",
                    ins[nc + i]
                ));
            }
            out.push(t.clone());
        } else {
            out.push(stacked(p.length, t));
        }
    }
    Ok(out)
}

pub(crate) fn infer_get_tuple_element(i: usize, ins: &[&NodeType]) -> Result<TensorType, String> {
    match ins {
        [NodeType::Tuple(ts)] => ts
            .get(i)
            .cloned()
            .ok_or_else(|| format!("index {i} out of range for a tuple of {}", ts.len())),
        [t] => Err(format!("operand {t} is not a tuple")),
        _ => Err(format!("expects 1 operand, got {}", ins.len())),
    }
}

impl Graph {
    /// A loop whose body is built by `body` (see the module doc):
    ///
    /// ```ignore
    /// let out = g.scan(t, &[w], &[h0], &[xs], false, |b, a| {
    ///     let h = b.dot(a.carries[0], a.consts[0])?;
    ///     let h = b.add(h, a.xs[0])?;
    ///     Ok((vec![h], vec![h]))
    /// })?;
    /// ```
    #[track_caller]
    pub fn scan(
        &mut self,
        length: i64,
        consts: &[NodeId],
        init: &[NodeId],
        xs: &[NodeId],
        reverse: bool,
        body: impl FnOnce(&mut Graph, &ScanArgs) -> Result<(Vec<NodeId>, Vec<NodeId>)>,
    ) -> Result<ScanOutputs> {
        let loc = self.here();
        let mut b = Graph::new(format!("{}_scan_body", self.name));
        let mut args = ScanArgs {
            consts: Vec::new(),
            carries: Vec::new(),
            xs: Vec::new(),
        };
        for (i, &c) in consts.iter().enumerate() {
            let t = self.ty(c)?.clone();
            args.consts
                .push(b.with_location(loc.clone(), |b| b.input(&format!("const{i}"), t))?);
        }
        for (i, &c) in init.iter().enumerate() {
            let t = self.ty(c)?.clone();
            args.carries
                .push(b.with_location(loc.clone(), |b| b.input(&format!("carry{i}"), t))?);
        }
        for (i, &x) in xs.iter().enumerate() {
            let t = self.ty(x)?.clone();
            if t.rank() == 0 {
                return Err(self.err("scan", format!("xs operand {i} is a scalar {t}")));
            }
            let s = TensorType::new(t.dtype, t.dims()[1..].to_vec());
            args.xs
                .push(b.with_location(loc.clone(), |b| b.input(&format!("x{i}"), s))?);
        }
        let (new_carries, ys) = body(&mut b, &args)?;
        let mut outs = new_carries;
        outs.extend(ys);
        b.set_outputs(&outs)?;
        self.scan_with_body(b, length, consts, init, xs, reverse)
    }

    /// A scan over an already built body (for passes).
    #[track_caller]
    pub fn scan_with_body(
        &mut self,
        body: Graph,
        length: i64,
        consts: &[NodeId],
        init: &[NodeId],
        xs: &[NodeId],
        reverse: bool,
    ) -> Result<ScanOutputs> {
        let num_out = body.outputs.len();
        let p = ScanParams {
            body,
            length,
            num_consts: consts.len(),
            num_carry: init.len(),
            reverse,
        };
        let mut ins = consts.to_vec();
        ins.extend_from_slice(init);
        ins.extend_from_slice(xs);
        let s = self.push(Op::Scan(Box::new(p)), &ins)?;
        let elems = self.tuple_elements(s, num_out)?;
        let (carries, ys) = elems.split_at(init.len().min(elems.len()));
        Ok(ScanOutputs {
            carries: carries.to_vec(),
            ys: ys.to_vec(),
        })
    }

    /// Identity on `xs` that XLA will not move computation across.
    #[track_caller]
    pub fn optimization_barrier(&mut self, xs: &[NodeId]) -> Result<Vec<NodeId>> {
        let t = self.push(Op::OptimizationBarrier, xs)?;
        self.tuple_elements(t, xs.len())
    }

    #[track_caller]
    pub fn get_tuple_element(&mut self, t: NodeId, i: usize) -> Result<NodeId> {
        self.push(Op::GetTupleElement(i), &[t])
    }

    #[track_caller]
    fn tuple_elements(&mut self, t: NodeId, n: usize) -> Result<Vec<NodeId>> {
        (0..n).map(|i| self.get_tuple_element(t, i)).collect()
    }
}

pub(crate) fn vjp_optimization_barrier(cts: &[Option<NodeId>]) -> Cts {
    cts.to_vec()
}

/// Makes scan `id` also return the carry entering each iteration, stacked
/// (the residuals its VJP needs). Rewrites the node in place: existing
/// tuple indices keep their meaning. Returns the original params and the
/// nodes holding the stacked carries.
pub(crate) fn save_carries(g: &mut Graph, id: NodeId) -> Result<(ScanParams, Vec<NodeId>)> {
    let node = g.node(id)?.clone();
    let Op::Scan(p) = &node.op else {
        return Err(GraphError::Invalid(format!("{id} is not a scan")));
    };
    let orig = (**p).clone();
    let mut aug = orig.clone();
    let carry_args: Vec<NodeId> =
        aug.body.args()[orig.num_consts..orig.num_consts + orig.num_carry].to_vec();
    let first = aug.body.outputs.len();
    aug.body.outputs.extend(carry_args);
    let tys: Vec<&NodeType> = node
        .inputs
        .iter()
        .map(|&i| g.node_type(i))
        .collect::<Result<_>>()?;
    let op = Op::Scan(Box::new(aug));
    let ty = crate::op::infer(&op, &tys).map_err(|msg| GraphError::Op {
        op: "scan",
        loc: node.loc.clone(),
        msg,
    })?;
    g.nodes[id.index()].op = op;
    g.nodes[id.index()].ty = ty;
    let saved = g.with_location(node.loc.clone(), |g| {
        (0..orig.num_carry)
            .map(|i| g.get_tuple_element(id, first + i))
            .collect::<Result<Vec<_>>>()
    })?;
    Ok((orig, saved))
}

/// Reverse-mode rule of scan: a scan running the other way whose body
/// recomputes one forward iteration from its saved carry and backpropagates
/// through it. Its carries are the carry cotangents plus accumulated const
/// cotangents; its ys are the xs cotangents.
pub(crate) fn vjp_scan(
    g: &mut Graph,
    p: &ScanParams,
    inputs: &[NodeId],
    cts: &[Option<NodeId>],
    saved: &[NodeId],
    loc: &Location,
) -> Result<Cts> {
    let (nc, nh) = (p.num_consts, p.num_carry);
    let nx = inputs.len() - nc - nh;
    let is_float = |g: &Graph, id: NodeId| g.dtype(id).map(|d| d.is_float());
    let consts = &inputs[..nc];
    let init = &inputs[nc..nc + nh];
    let xs = &inputs[nc + nh..];
    let fc: Vec<usize> = (0..nc)
        .filter(|&i| is_float(g, consts[i]).unwrap_or(false))
        .collect();
    let fh: Vec<usize> = (0..nh)
        .filter(|&i| is_float(g, init[i]).unwrap_or(false))
        .collect();
    let fx: Vec<usize> = (0..nx)
        .filter(|&i| is_float(g, xs[i]).unwrap_or(false))
        .collect();
    let ny = p.body.outputs.len() - nh;
    let ys_types: Vec<TensorType> = (0..ny)
        .map(|i| p.body.ty(p.body.outputs[nh + i]).cloned())
        .collect::<Result<_>>()?;
    let fy: Vec<usize> = (0..ny).filter(|&i| ys_types[i].dtype.is_float()).collect();

    // Body of the backward scan.
    let mut bb = Graph::new(format!("{}_vjp", p.body.name));
    let arg = |bb: &mut Graph, name: String, t: TensorType| {
        bb.with_location(loc.clone(), |b| b.input(&name, t))
    };
    let ty_of = |id: NodeId| g.ty(id).cloned();
    let slice_ty = |t: TensorType| TensorType::new(t.dtype, t.dims()[1..].to_vec());
    let mut c_args = Vec::new();
    for (i, &c) in consts.iter().enumerate() {
        c_args.push(arg(&mut bb, format!("const{i}"), ty_of(c)?)?);
    }
    let mut ct_h_args = Vec::new();
    for &i in &fh {
        ct_h_args.push(arg(&mut bb, format!("ct_carry{i}"), ty_of(init[i])?)?);
    }
    let mut acc_args = Vec::new();
    for &i in &fc {
        acc_args.push(arg(&mut bb, format!("ct_const{i}"), ty_of(consts[i])?)?);
    }
    let mut h_args = Vec::new();
    for (i, &h) in init.iter().enumerate() {
        h_args.push(arg(&mut bb, format!("carry{i}"), ty_of(h)?)?);
    }
    let mut x_args = Vec::new();
    for (i, &x) in xs.iter().enumerate() {
        x_args.push(arg(&mut bb, format!("x{i}"), slice_ty(ty_of(x)?))?);
    }
    let mut ct_y_args = Vec::new();
    for &i in &fy {
        ct_y_args.push(arg(&mut bb, format!("ct_y{i}"), ys_types[i].clone())?);
    }
    let mut fwd_args = c_args.clone();
    fwd_args.extend(&h_args);
    fwd_args.extend(&x_args);
    let map = inline(&mut bb, &p.body, &fwd_args)?;
    let body_out = |i: usize| map[p.body.outputs[i].index()];
    let mut seeds = Vec::new();
    for (k, &i) in fh.iter().enumerate() {
        seeds.push((body_out(i), ct_h_args[k]));
    }
    for (k, &i) in fy.iter().enumerate() {
        seeds.push((body_out(nh + i), ct_y_args[k]));
    }
    let mut wrt: Vec<NodeId> = fc.iter().map(|&i| c_args[i]).collect();
    wrt.extend(fh.iter().map(|&i| h_args[i]));
    wrt.extend(fx.iter().map(|&i| x_args[i]));
    let grads = autodiff::vjp_unchecked(&mut bb, &seeds, &wrt)?;
    let (g_c, rest) = grads.split_at(fc.len());
    let (g_h, g_x) = rest.split_at(fh.len());
    let mut outs = g_h.to_vec();
    for (k, &gc) in g_c.iter().enumerate() {
        outs.push(bb.with_location(loc.clone(), |b| b.add(acc_args[k], gc))?);
    }
    outs.extend_from_slice(g_x);
    bb.set_outputs(&outs)?;

    // The backward scan itself, in the outer graph.
    g.with_location(loc.clone(), |g| {
        let mut init_b = Vec::new();
        for &i in &fh {
            init_b.push(match cts[i] {
                Some(c) => c,
                None => g.zeros_like(init[i])?,
            });
        }
        for &i in &fc {
            init_b.push(g.zeros_like(consts[i])?);
        }
        let mut xs_b = saved.to_vec();
        xs_b.extend_from_slice(xs);
        for &i in &fy {
            xs_b.push(match cts[nh + i] {
                Some(c) => c,
                None => g.full(0.0, stacked(p.length, &ys_types[i]))?,
            });
        }
        let r = g.scan_with_body(bb, p.length, consts, &init_b, &xs_b, !p.reverse)?;
        let mut res: Cts = vec![None; inputs.len()];
        for (k, &i) in fh.iter().enumerate() {
            res[nc + i] = Some(r.carries[k]);
        }
        for (k, &i) in fc.iter().enumerate() {
            res[i] = Some(r.carries[fh.len() + k]);
        }
        for (k, &i) in fx.iter().enumerate() {
            res[nc + nh + i] = Some(r.ys[k]);
        }
        Ok(res)
    })
}

/// Accumulates a tuple element's cotangent (get_tuple_element's VJP).
pub(crate) fn add_element_ct(g: &mut Graph, slot: &mut Option<NodeId>, ct: NodeId) -> Result<()> {
    *slot = Some(accumulate(g, *slot, ct)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{Graph, TensorType};

    #[test]
    fn scan_shapes_and_errors() {
        let mut g = Graph::new("t");
        let w = g.parameter("w", TensorType::f32([3, 3])).unwrap();
        let h0 = g.input("h0", TensorType::f32([2, 3])).unwrap();
        let xs = g.input("xs", TensorType::f32([5, 2, 3])).unwrap();
        let out = g
            .scan(5, &[w], &[h0], &[xs], false, |b, a| {
                let h = b.dot(a.carries[0], a.consts[0])?;
                let h = b.add(h, a.xs[0])?;
                let h = b.tanh(h)?;
                Ok((vec![h], vec![h]))
            })
            .unwrap();
        assert_eq!(g.dims(out.carries[0]).unwrap(), &[2, 3]);
        assert_eq!(g.dims(out.ys[0]).unwrap(), &[5, 2, 3]);
        let e = g
            .scan(4, &[], &[h0], &[xs], false, |_, a| {
                Ok((vec![a.carries[0]], vec![]))
            })
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("scan at") && e.contains("leading dim 4"),
            "{e}"
        );
        let e = g
            .scan(5, &[], &[h0], &[], false, |b, a| {
                let s = b.sum_all(a.carries[0])?;
                Ok((vec![s], vec![]))
            })
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("carry 0 as f32[]") && e.contains("f32[2,3]"),
            "{e}"
        );
    }

    #[test]
    fn barrier_is_identity_on_types() {
        let mut g = Graph::new("t");
        let a = g.input("a", TensorType::f32([2])).unwrap();
        let b = g.input("b", TensorType::f32([3])).unwrap();
        let o = g.optimization_barrier(&[a, b]).unwrap();
        assert_eq!(g.dims(o[1]).unwrap(), &[3]);
        let t = g.nodes[o[0].index()].inputs[0];
        let e = g.exp(t).unwrap_err().to_string();
        assert!(e.contains("tuple"), "{e}");
    }
}
