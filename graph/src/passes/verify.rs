//! Checks every IR invariant. Every pass runs it on its result; it lives
//! with the passes so that they can call it without a module cycle.

use crate::ir::{Graph, Location, NodeId};
use crate::op::{infer, Op};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum VerifyError {
    #[error("node {node} ({op} at {loc}): {msg}")]
    Node {
        node: NodeId,
        op: &'static str,
        loc: Location,
        msg: String,
    },
    #[error("output {index} is {node}: {msg}")]
    Output {
        index: usize,
        node: NodeId,
        msg: String,
    },
    /// In a sub-graph of node `node`; `what` names it ("body of scan").
    #[error("in the {what} {node}: {inner}")]
    Body {
        node: NodeId,
        what: String,
        inner: Box<VerifyError>,
    },
}

/// The graphs an op holds, each with how errors name it.
fn sub_graphs(op: &Op) -> Vec<(String, &Graph)> {
    match op {
        Op::Scan(p) => vec![("body of scan".into(), &p.body)],
        Op::CustomVjp(p) => vec![
            (format!("forward of custom_vjp `{}`", p.name), &p.forward),
            (format!("backward of custom_vjp `{}`", p.name), &p.backward),
        ],
        _ => vec![],
    }
}

/// Every operand exists and precedes its user, every stored type is what
/// the op's shape rule gives (which checks sub-graph signatures), outputs
/// are tensor nodes, sub-graphs (scan bodies, custom VJPs) verify.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    verify_nodes(g, 0..g.len())?;
    for (index, &node) in g.outputs.iter().enumerate() {
        match g.nodes.get(node.index()) {
            None => {
                return Err(VerifyError::Output {
                    index,
                    node,
                    msg: "no such node".into(),
                })
            }
            Some(n) if n.ty.as_tensor().is_none() => {
                return Err(VerifyError::Output {
                    index,
                    node,
                    msg: "a tuple cannot be an output".into(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The node checks of [`verify`] for the nodes in `range` (for passes that
/// append to a graph being built, like `vmap`).
pub(crate) fn verify_nodes(g: &Graph, range: std::ops::Range<usize>) -> Result<(), VerifyError> {
    for i in range {
        let node = &g.nodes[i];
        let id = NodeId(i as u32);
        let fail = |msg: String| VerifyError::Node {
            node: id,
            op: node.op.name(),
            loc: node.loc.clone(),
            msg,
        };
        for &x in &node.inputs {
            if x.index() >= i {
                return Err(fail(format!("operand {x} does not precede its user")));
            }
        }
        for (what, sub) in sub_graphs(&node.op) {
            verify(sub).map_err(|e| VerifyError::Body {
                node: id,
                what,
                inner: Box::new(e),
            })?;
        }
        let tys: Vec<_> = node.inputs.iter().map(|x| &g.nodes[x.index()].ty).collect();
        let want = infer(&node.op, &tys).map_err(|m| fail(format!("shape rule fails: {m}")))?;
        if want != node.ty {
            return Err(fail(format!(
                "stored type {} but the shape rule gives {want}",
                node.ty
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Graph, NodeId, TensorType};

    fn small() -> Graph {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([2, 3])).unwrap();
        let w = g.parameter("w", TensorType::f32([3, 4])).unwrap();
        let y = g.dot(x, w).unwrap();
        let y = g.tanh(y).unwrap();
        g.set_outputs(&[y]).unwrap();
        g
    }

    #[test]
    fn accepts_built_graphs() {
        verify(&small()).unwrap();
    }

    #[test]
    fn catches_forward_reference() {
        let mut g = small();
        g.nodes[2].inputs[0] = NodeId(3);
        let e = verify(&g).unwrap_err().to_string();
        assert!(e.contains("does not precede"), "{e}");
    }

    #[test]
    fn catches_wrong_stored_type() {
        let mut g = small();
        g.nodes[3].ty = crate::NodeType::Tensor(TensorType::f32([2, 5]));
        let e = verify(&g).unwrap_err().to_string();
        assert!(
            e.contains("stored type f32[2,5]") && e.contains("f32[2,4]"),
            "{e}"
        );
    }

    #[test]
    fn catches_bad_operand_and_output() {
        let mut g = small();
        g.nodes[2].inputs.swap(0, 1);
        let e = verify(&g).unwrap_err().to_string();
        assert!(
            e.contains("dot_general") && e.contains("contracting"),
            "{e}"
        );
        let mut g = small();
        g.outputs.push(NodeId(99));
        let e = verify(&g).unwrap_err().to_string();
        assert!(e.contains("output 1"), "{e}");
    }

    #[test]
    fn checks_scan_bodies() {
        let mut g = Graph::new("t");
        let h0 = g.input("h0", TensorType::f32([3])).unwrap();
        let out = g
            .scan(4, &[], &[h0], &[], false, |b, a| {
                let h = b.sin(a.carries[0])?;
                Ok((vec![h], vec![]))
            })
            .unwrap();
        g.set_outputs(&out.carries).unwrap();
        verify(&g).unwrap();
        if let crate::Op::Scan(p) = &mut g.nodes[1].op {
            p.body.nodes[1].ty = crate::NodeType::Tensor(TensorType::f32([4]));
        }
        let e = verify(&g).unwrap_err().to_string();
        assert!(e.starts_with("in the body of scan %1"), "{e}");
    }
}
