//! Graph-to-graph helpers shared by passes.

use crate::error::{GraphError, Result};
use crate::ir::{Graph, NodeId};
use crate::op::Op;

/// Copies every node of `src` into `dst`, with `src`'s arguments replaced by
/// `args` (same order and types). Returns the new id of each `src` node.
pub fn inline(dst: &mut Graph, src: &Graph, args: &[NodeId]) -> Result<Vec<NodeId>> {
    let src_args = src.args();
    if src_args.len() != args.len() {
        return Err(GraphError::Invalid(format!(
            "inlining {} needs {} arguments, got {}",
            src.name,
            src_args.len(),
            args.len()
        )));
    }
    let mut map: Vec<NodeId> = Vec::with_capacity(src.len());
    let mut next_arg = 0;
    for (i, node) in src.nodes.iter().enumerate() {
        if let Op::Parameter(t) | Op::Input(t) = &node.op {
            let a = args[next_arg];
            next_arg += 1;
            if dst.ty(a)? != t {
                return Err(GraphError::Invalid(format!(
                    "inlining {}: argument {} is {} but {a} is {}",
                    src.name,
                    next_arg - 1,
                    t,
                    dst.ty(a)?
                )));
            }
            map.push(a);
            continue;
        }
        let mut ins = Vec::with_capacity(node.inputs.len());
        for &x in &node.inputs {
            match map.get(x.index()) {
                Some(&m) if x.index() < i => ins.push(m),
                _ => {
                    return Err(GraphError::Invalid(format!(
                        "inlining {}: node %{i} uses {x} before it is defined",
                        src.name
                    )))
                }
            }
        }
        let id = dst.add_node(node.op.clone(), ins, node.loc.clone())?;
        dst.nodes[id.index()].name.clone_from(&node.name);
        map.push(id);
    }
    Ok(map)
}
