//! Custom VJP (JAX's `custom_vjp`): a sub-computation whose gradient is a
//! backward graph the model supplies instead of the derivative of its
//! forward graph. For numerically stable or cheaper gradients, straight-
//! through estimators, reversible layers that rebuild their inputs from
//! their outputs.
//!
//! The op holds two graphs and produces a tuple. `forward` takes the
//! operands and returns the results. `backward` takes
//! `[operands.., results.., cotangents of the results..]` and returns the
//! cotangents of the operands that have one (`has_ct`). Interpreter and
//! lowering run `forward`; autodiff inlines `backward`, so the backward
//! nodes are ordinary ops (differentiable again for second order).

use super::common::Cts;
use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::rewrite::inline;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomVjpParams {
    /// The model's name for it (errors, sub-graph names).
    pub name: String,
    pub forward: Graph,
    pub backward: Graph,
    /// Per operand, whether `backward` returns its cotangent (in operand
    /// order); the others get none.
    pub has_ct: Vec<bool>,
}

fn check_args(what: &str, g: &Graph, want: &[&TensorType]) -> Result<(), String> {
    let args = g.args();
    if args.len() != want.len() {
        return Err(format!(
            "{what} takes {} arguments, expected {}",
            args.len(),
            want.len()
        ));
    }
    for (i, (&a, &w)) in args.iter().zip(want).enumerate() {
        let got = g.ty(a).map_err(|e| e.to_string())?;
        if got != w {
            return Err(format!("{what} argument {i} is {got}, expected {w}"));
        }
    }
    Ok(())
}

pub(crate) fn infer_custom_vjp(
    p: &CustomVjpParams,
    ins: &[&TensorType],
) -> Result<Vec<TensorType>, String> {
    let name = &p.name;
    check_args(&format!("forward of `{name}`"), &p.forward, ins)?;
    let outs: Vec<TensorType> = p
        .forward
        .outputs
        .iter()
        .map(|&o| p.forward.ty(o).cloned())
        .collect::<Result<_>>()
        .map_err(|e| format!("forward of `{name}`: {e}"))?;
    if outs.is_empty() {
        return Err(format!("forward of `{name}` returns nothing"));
    }
    let mut bw_args = ins.to_vec();
    bw_args.extend(outs.iter());
    bw_args.extend(outs.iter());
    check_args(&format!("backward of `{name}`"), &p.backward, &bw_args)?;
    if p.has_ct.len() != ins.len() {
        return Err(format!(
            "`{name}` marks cotangents of {} operands but has {}",
            p.has_ct.len(),
            ins.len()
        ));
    }
    let with_ct: Vec<usize> = (0..ins.len()).filter(|&i| p.has_ct[i]).collect();
    if p.backward.outputs.len() != with_ct.len() {
        return Err(format!(
            "backward of `{name}` returns {} values for {} operand cotangents",
            p.backward.outputs.len(),
            with_ct.len()
        ));
    }
    for (&o, &i) in p.backward.outputs.iter().zip(&with_ct) {
        let t = p.backward.ty(o).map_err(|e| e.to_string())?;
        if t != ins[i] || !t.dtype.is_float() {
            return Err(format!(
                "backward of `{name}` returns {t} as the cotangent of operand {i} ({}); \
                 it must be the operand's float type",
                ins[i]
            ));
        }
    }
    Ok(outs)
}

impl Graph {
    /// `forward(inputs)` as one op whose gradient is `backward(inputs,
    /// outputs, cotangents)` (one cotangent per output; `None` in the
    /// result means a zero cotangent, required for non-float inputs).
    /// Returns the outputs of `forward`.
    ///
    /// ```ignore
    /// // softplus with a stable forward and its analytic gradient
    /// let y = g.custom_vjp("softplus", &[x], |g, xs| {
    ///     let r = g.relu(xs[0])?;
    ///     let a = g.abs(xs[0])?;
    ///     let e = g.neg(a)?;
    ///     let e = g.exp(e)?;
    ///     let l = g.log1p(e)?;
    ///     Ok(vec![g.add(r, l)?])
    /// }, |g, xs, _ys, cts| {
    ///     let s = g.logistic(xs[0])?;
    ///     Ok(vec![Some(g.mul(cts[0], s)?)])
    /// })?[0];
    /// ```
    #[track_caller]
    pub fn custom_vjp(
        &mut self,
        name: &str,
        inputs: &[NodeId],
        forward: impl FnOnce(&mut Graph, &[NodeId]) -> Result<Vec<NodeId>>,
        backward: impl FnOnce(
            &mut Graph,
            &[NodeId],
            &[NodeId],
            &[NodeId],
        ) -> Result<Vec<Option<NodeId>>>,
    ) -> Result<Vec<NodeId>> {
        let loc = self.here();
        let in_tys: Vec<TensorType> = inputs
            .iter()
            .map(|&x| self.ty(x).cloned())
            .collect::<Result<_>>()?;
        let args = |g: &mut Graph, prefix: &str, tys: &[TensorType]| -> Result<Vec<NodeId>> {
            tys.iter()
                .enumerate()
                .map(|(i, t)| {
                    g.with_location(loc.clone(), |g| g.input(&format!("{prefix}{i}"), t.clone()))
                })
                .collect()
        };
        let mut fw = Graph::new(format!("{}_{name}_forward", self.name));
        let xs = args(&mut fw, "x", &in_tys)?;
        let ys = forward(&mut fw, &xs)?;
        fw.set_outputs(&ys)?;
        let out_tys: Vec<TensorType> = ys
            .iter()
            .map(|&y| fw.ty(y).cloned())
            .collect::<Result<_>>()?;

        let mut bw = Graph::new(format!("{}_{name}_backward", self.name));
        let xs = args(&mut bw, "x", &in_tys)?;
        let ys = args(&mut bw, "y", &out_tys)?;
        let cts = args(&mut bw, "ct", &out_tys)?;
        let in_cts = backward(&mut bw, &xs, &ys, &cts)?;
        if in_cts.len() != inputs.len() {
            return Err(self.err(
                "custom_vjp",
                format!(
                    "backward of `{name}` returns {} cotangents for {} inputs",
                    in_cts.len(),
                    inputs.len()
                ),
            ));
        }
        let has_ct: Vec<bool> = in_cts.iter().map(Option::is_some).collect();
        let outs: Vec<NodeId> = in_cts.into_iter().flatten().collect();
        bw.set_outputs(&outs)?;
        let p = CustomVjpParams {
            name: name.to_string(),
            forward: fw,
            backward: bw,
            has_ct,
        };
        let n = out_tys.len();
        let t = self.push(Op::CustomVjp(Box::new(p)), inputs)?;
        (0..n).map(|i| self.get_tuple_element(t, i)).collect()
    }
}

/// Reverse-mode rule: the backward graph, inlined, on the operands, the
/// results (read from node `id`) and their cotangents (zeros where none).
pub(crate) fn vjp_custom_vjp(
    g: &mut Graph,
    p: &CustomVjpParams,
    id: NodeId,
    inputs: &[NodeId],
    cts: &[Option<NodeId>],
) -> Result<Cts> {
    let n = p.forward.outputs.len();
    let mut args = inputs.to_vec();
    let ys: Vec<NodeId> = (0..n)
        .map(|k| g.get_tuple_element(id, k))
        .collect::<Result<_>>()?;
    args.extend(&ys);
    for (k, &y) in ys.iter().enumerate() {
        args.push(match cts.get(k).copied().flatten() {
            Some(c) => c,
            None => g.zeros_like(y)?,
        });
    }
    let map = inline(g, &p.backward, &args)?;
    let mut outs = p.backward.outputs.iter();
    Ok(p.has_ct
        .iter()
        .map(|&has| match has {
            true => outs.next().map(|o| map[o.index()]),
            false => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::autodiff::grad;
    use crate::interp::{eval, HostTensor};
    use crate::{verify, DType, Graph, Op, TensorType};

    /// Fake quantization to an i8 grid of step 1/4: `convert` to an
    /// integer has no gradient, so plain autodiff gives zeros.
    fn fake_quant(g: &mut Graph, x: crate::NodeId) -> crate::Result<crate::NodeId> {
        let s = g.mul_scalar(x, 4.0)?;
        let q = g.convert(s, DType::I8)?;
        let f = g.convert(q, DType::F32)?;
        g.mul_scalar(f, 0.25)
    }

    #[test]
    fn straight_through_estimator_uses_the_custom_backward() {
        let mut g = Graph::new("ste");
        let x = g.parameter("x", TensorType::f32([4])).unwrap();
        let ste = g
            .custom_vjp(
                "ste",
                &[x],
                |g, xs| Ok(vec![fake_quant(g, xs[0])?]),
                |_, _, _, cts| Ok(vec![Some(cts[0])]),
            )
            .unwrap()[0];
        let plain = fake_quant(&mut g, x).unwrap();
        let w = g.constant_f32([4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let mut run = |y| {
            let l = g.mul(y, w).unwrap();
            let l = g.sum_all(l).unwrap();
            let (mut g2, gr) = grad(&g, l, &[x]).unwrap();
            verify(&g2).unwrap();
            g2.set_outputs(&[y, gr[0]]).unwrap();
            let arg = HostTensor::f32(&[4], &[0.3, -0.6, 40.0, 1.1]).unwrap();
            eval(&g2, &[arg]).unwrap()
        };
        let (r_ste, r_plain) = (run(ste), run(plain));
        // Same forward: 1.2 -> 1, -2.4 -> -2, 160 saturates to 127, 4.4 -> 4.
        assert_eq!(r_ste[0].data, [0.25, -0.5, 31.75, 1.0]);
        assert_eq!(r_ste[0], r_plain[0]);
        assert_eq!(r_ste[1].data, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(r_plain[1].data, [0.0; 4]);
    }

    #[test]
    fn missing_cotangents_are_zero_and_results_are_tuple_elements() {
        let mut g = Graph::new("t");
        let a = g.parameter("a", TensorType::f32([2])).unwrap();
        let b = g.parameter("b", TensorType::f32([2])).unwrap();
        let n = g.input("n", TensorType::new(DType::I32, [2])).unwrap();
        let ys = g
            .custom_vjp(
                "pair",
                &[a, b, n],
                |g, xs| {
                    let s = g.add(xs[0], xs[1])?;
                    let m = g.convert(xs[2], DType::F32)?;
                    Ok(vec![g.mul(s, m)?, xs[2]])
                },
                // Only `a` gets a gradient: ct0 * n * 10 (deliberately not the derivative).
                |g, xs, ys, cts| {
                    assert_eq!(ys.len(), 2);
                    let m = g.convert(xs[2], DType::F32)?;
                    let d = g.mul(cts[0], m)?;
                    Ok(vec![Some(g.mul_scalar(d, 10.0)?), None, None])
                },
            )
            .unwrap();
        assert_eq!(g.ty(ys[1]).unwrap(), &TensorType::new(DType::I32, [2]));
        let l = g.sum_all(ys[0]).unwrap();
        let (mut g2, gr) = grad(&g, l, &[a, b]).unwrap();
        g2.set_outputs(&[ys[0], gr[0], gr[1]]).unwrap();
        let r = eval(
            &g2,
            &[
                HostTensor::f32(&[2], &[1.0, 2.0]).unwrap(),
                HostTensor::f32(&[2], &[0.5, 0.5]).unwrap(),
                HostTensor::i32(&[2], &[3, -1]).unwrap(),
            ],
        )
        .unwrap();
        assert_eq!(r[0].data, [4.5, -2.5]);
        assert_eq!(r[1].data, [30.0, -10.0]);
        assert_eq!(r[2].data, [0.0, 0.0]);
    }

    #[test]
    fn bad_backwards_are_errors_and_verify_checks_both_graphs() {
        let mut g = Graph::new("t");
        let x = g.parameter("x", TensorType::f32([3])).unwrap();
        let i = g.input("i", TensorType::new(DType::I32, [3])).unwrap();
        let id = |g: &mut Graph, xs: &[crate::NodeId]| Ok(vec![g.sin(xs[0])?]);
        let e = g
            .custom_vjp("short", &[x], id, |_, _, _, _| Ok(vec![]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("custom_vjp at") && e.contains("0 cotangents for 1"),
            "{e}"
        );
        let e = g
            .custom_vjp("wide", &[x], id, |g, _, _, cts| {
                Ok(vec![Some(g.convert(cts[0], DType::F64)?)])
            })
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("returns f64[3] as the cotangent of operand 0"),
            "{e}"
        );
        let e = g
            .custom_vjp(
                "int",
                &[i],
                |g, xs| Ok(vec![g.convert(xs[0], DType::F32)?]),
                |g, xs, _, _| Ok(vec![Some(g.full_like(xs[0], 1.0)?)]),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("the operand's float type"), "{e}");

        let y = g
            .custom_vjp("ok", &[x], id, |g, xs, _, cts| {
                let c = g.cos(xs[0])?;
                Ok(vec![Some(g.mul(cts[0], c)?)])
            })
            .unwrap()[0];
        g.set_outputs(&[y]).unwrap();
        verify(&g).unwrap();
        let node = g
            .nodes
            .iter()
            .position(|n| matches!(n.op, Op::CustomVjp(_)))
            .unwrap();
        let mut bad = g.clone();
        if let Op::CustomVjp(p) = &mut bad.nodes[node].op {
            p.backward.nodes[3].ty = crate::NodeType::Tensor(TensorType::f32([4]));
        }
        let e = verify(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("in the backward of custom_vjp `ok` %{node}")),
            "{e}"
        );
        let mut bad = g.clone();
        if let Op::CustomVjp(p) = &mut bad.nodes[node].op {
            p.has_ct = vec![false];
        }
        let e = verify(&bad).unwrap_err().to_string();
        assert!(
            e.contains("returns 1 values for 0 operand cotangents"),
            "{e}"
        );
    }
}
