//! Low-rank factorization inside the program: a kernel argument `W (in, out..)` becomes two
//! arguments `U (in, r)` and `V (r, out..)`, and every `x · W` becomes `(x · U) · V`: two
//! smaller matmuls, `r·(in + out)` weights instead of `in·out`.

use crate::error::{GraphError, Result};
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::ops::dot::DotDims;
use crate::types::TensorType;

/// One argument to factor: its index in [`Graph::args`] and the rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Factor {
    pub arg: usize,
    pub rank: i64,
}

/// Where an argument of the rewritten graph comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorArg {
    Same(usize),
    /// `U (in, r)` of source argument `i`.
    U(usize),
    /// `V (r, out..)` of source argument `i`.
    V(usize),
}

/// Whether every use of `w` is a `dot_general` with `w` as the right operand, contracting its
/// axis 0 alone, no batch axes: a kernel `(in, out..)` that [`factor_args`] can split.
pub fn factorable(g: &Graph, w: NodeId) -> Result<bool> {
    let mut used = false;
    for id in g.ids() {
        let n = g.node(id)?;
        if !n.inputs.contains(&w) {
            continue;
        }
        used = true;
        match &n.op {
            Op::DotGeneral { dims, .. }
                if n.inputs[1] == w
                    && n.inputs[0] != w
                    && dims.rhs_contract == [0]
                    && dims.rhs_batch.is_empty() => {}
            _ => return Ok(false),
        }
    }
    Ok(used && g.rank(w)? >= 2)
}

/// `g` with each argument of `specs` replaced by `<name>.u` and `<name>.v` arguments and its
/// dots by two dots. Returns the new graph and where each of its arguments comes from.
pub fn factor_args(g: &Graph, specs: &[Factor]) -> Result<(Graph, Vec<FactorArg>)> {
    let args = g.args();
    let mut out = Graph::new(g.name.clone());
    let mut map: Vec<Option<NodeId>> = vec![None; g.len()];
    // Factored argument -> (U, V) in `out`.
    let mut uv: Vec<Option<(NodeId, NodeId)>> = vec![None; g.len()];
    let mut sources = Vec::new();
    for (i, &a) in args.iter().enumerate() {
        let node = g.node(a)?;
        let name = node.name.clone().unwrap_or_else(|| format!("arg{i}"));
        let ty = g.ty(a)?.clone();
        let trainable = matches!(node.op, Op::Parameter(_));
        let mk = |out: &mut Graph, name: &str, ty: TensorType| {
            if trainable {
                out.parameter(name, ty)
            } else {
                out.input(name, ty)
            }
        };
        let Some(f) = specs.iter().find(|s| s.arg == i) else {
            map[a.index()] = Some(mk(&mut out, &name, ty)?);
            sources.push(FactorArg::Same(i));
            continue;
        };
        if !factorable(g, a)? {
            return Err(GraphError::Invalid(format!(
                "factoring `{name}`: it is not only the right operand of dots contracting its \
                 axis 0"
            )));
        }
        let dims = ty.dims();
        if f.rank < 1 || f.rank > dims[0] {
            return Err(GraphError::Invalid(format!(
                "factoring `{name}` {ty}: rank {} must be in 1..={}",
                f.rank, dims[0]
            )));
        }
        let u = mk(
            &mut out,
            &format!("{name}.u"),
            TensorType::new(ty.dtype, [dims[0], f.rank]),
        )?;
        let mut vd = vec![f.rank];
        vd.extend(&dims[1..]);
        let v = mk(
            &mut out,
            &format!("{name}.v"),
            TensorType::new(ty.dtype, vd),
        )?;
        uv[a.index()] = Some((u, v));
        sources.push(FactorArg::U(i));
        sources.push(FactorArg::V(i));
    }
    for (i, node) in g.nodes.iter().enumerate() {
        if matches!(node.op, Op::Parameter(_) | Op::Input(_)) {
            continue;
        }
        let rhs_uv = match &node.op {
            Op::DotGeneral { .. } => uv[node.inputs[1].index()],
            _ => None,
        };
        let id = match (rhs_uv, &node.op) {
            (Some((u, v)), Op::DotGeneral { dims, out_dtype }) => {
                let x = map[node.inputs[0].index()].expect("defined before use");
                // x · U over x's contracted axes: (x free.., r); then · V over r.
                let first = DotDims {
                    lhs_batch: vec![],
                    rhs_batch: vec![],
                    lhs_contract: dims.lhs_contract.clone(),
                    rhs_contract: vec![0],
                };
                let xu = out.add_node(
                    Op::DotGeneral {
                        dims: first,
                        out_dtype: *out_dtype,
                    },
                    vec![x, u],
                    node.loc.clone(),
                )?;
                let r_axis = out.rank(xu)? - 1;
                out.add_node(
                    Op::DotGeneral {
                        dims: DotDims::contract(&[r_axis], &[0]),
                        out_dtype: *out_dtype,
                    },
                    vec![xu, v],
                    node.loc.clone(),
                )?
            }
            _ => {
                let ins = node
                    .inputs
                    .iter()
                    .map(|x| {
                        map[x.index()].ok_or_else(|| {
                            GraphError::Invalid(format!("node %{i} uses {x} before it is defined"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                out.add_node(node.op.clone(), ins, node.loc.clone())?
            }
        };
        out.nodes[id.index()].name.clone_from(&node.name);
        map[i] = Some(id);
    }
    let outs: Vec<NodeId> = g
        .outputs
        .iter()
        .map(|o| map[o.index()].expect("outputs are defined"))
        .collect();
    out.set_outputs(&outs)?;
    let out = super::checked("factor_args", g, out)?;
    Ok((out, sources))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{eval, HostTensor};

    /// `x (2, 3) · W (3, 2, 2)` with W factored at rank 2 equals `x · (U · V)`.
    #[test]
    fn factored_kernel_is_two_dots() {
        let mut g = Graph::new("lin");
        let x = g.input("x", TensorType::f32([2, 3])).unwrap();
        let w = g.parameter("w", TensorType::f32([3, 2, 2])).unwrap();
        let y = g
            .dot_general(x, w, DotDims::contract(&[1], &[0]), None)
            .unwrap();
        let y = g.tanh(y).unwrap();
        g.set_outputs(&[y]).unwrap();
        assert!(factorable(&g, w).unwrap());
        assert!(!factorable(&g, x).unwrap());
        let (f, src) = factor_args(&g, &[Factor { arg: 1, rank: 2 }]).unwrap();
        assert_eq!(
            src,
            vec![FactorArg::Same(0), FactorArg::U(1), FactorArg::V(1)]
        );
        let dots = f
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::DotGeneral { .. }))
            .count();
        assert_eq!(dots, 2);
        let xs: Vec<f32> = (0..6).map(|i| i as f32 * 0.3 - 0.7).collect();
        let us: Vec<f32> = (0..6).map(|i| (i as f32 * 0.9).sin()).collect();
        let vs: Vec<f32> = (0..8).map(|i| (i as f32 * 0.4).cos()).collect();
        let got = eval(
            &f,
            &[
                HostTensor::f32(&[2, 3], &xs).unwrap(),
                HostTensor::f32(&[3, 2], &us).unwrap(),
                HostTensor::f32(&[2, 2, 2], &vs).unwrap(),
            ],
        )
        .unwrap()[0]
            .to_f32();
        // W = U · V, then the original program.
        let mut wv = vec![0f32; 12];
        for a in 0..3 {
            for o in 0..4 {
                wv[a * 4 + o] = (0..2).map(|r| us[a * 2 + r] * vs[r * 4 + o]).sum();
            }
        }
        let want = eval(
            &g,
            &[
                HostTensor::f32(&[2, 3], &xs).unwrap(),
                HostTensor::f32(&[3, 2, 2], &wv).unwrap(),
            ],
        )
        .unwrap()[0]
            .to_f32();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let e = factor_args(&g, &[Factor { arg: 1, rank: 4 }])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 4"), "{e}");
    }
}
