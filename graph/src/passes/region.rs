//! Regions: named groups of forward nodes (a transformer block, an MLP) that
//! passes treat as a unit, and the backward nodes autodiff builds for them.
//!
//! Model code marks a region in one line:
//!
//! ```ignore
//! let h = g.region("block3", |g| -> Result<_> { block(g, h, &w) })?;
//! ```
//!
//! Every node built inside gets [`NodeTag::Forward`]; autodiff tags the
//! nodes it builds [`NodeTag::Backward`] with the region of the forward node
//! they differentiate. Tags live in a side table ([`Graph::regions`]) indexed
//! by node, so graphs without regions serialize as before.

use crate::ir::{Graph, NodeId};
use crate::op::Op;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Index into [`Regions::names`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RegionId(pub u32);

/// What a node is with respect to regions. Nodes without a tag are forward
/// nodes outside every region (or nodes built after the backward pass, such
/// as the optimizer update).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeTag {
    /// Built by model code inside the region.
    Forward(RegionId),
    /// Built by autodiff (or a pass working on the backward pass) for a
    /// forward node of the region; `None` for forward nodes outside regions.
    Backward(Option<RegionId>),
}

/// The side table of region names and node tags of one graph.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Regions {
    /// Full names (`outer/inner` for nested regions); a [`RegionId`] indexes this.
    pub names: Vec<String>,
    /// Tag of node `i` at index `i`; nodes past the end are untagged.
    pub tags: Vec<Option<NodeTag>>,
    /// Names of the regions being built (innermost last).
    #[serde(skip)]
    open: Vec<String>,
}

impl Regions {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.tags.iter().all(Option::is_none)
    }

    /// The id of region `name`, created if new.
    pub fn intern(&mut self, name: &str) -> RegionId {
        match self.id(name) {
            Some(id) => id,
            None => {
                self.names.push(name.to_string());
                RegionId(self.names.len() as u32 - 1)
            }
        }
    }

    pub fn id(&self, name: &str) -> Option<RegionId> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| RegionId(i as u32))
    }

    pub fn name(&self, id: RegionId) -> &str {
        self.names.get(id.0 as usize).map_or("?", String::as_str)
    }

    pub fn ids(&self) -> impl Iterator<Item = RegionId> {
        (0..self.names.len() as u32).map(RegionId)
    }

    pub fn tag(&self, node: NodeId) -> Option<NodeTag> {
        self.tags.get(node.index()).copied().flatten()
    }

    pub fn set(&mut self, node: NodeId, tag: Option<NodeTag>) {
        let i = node.index();
        if self.tags.len() <= i {
            if tag.is_none() {
                return;
            }
            self.tags.resize(i + 1, None);
        }
        self.tags[i] = tag;
    }

    /// Tags the untagged nodes of `range` (inner regions and rules that
    /// tagged their own nodes keep their tags).
    pub fn fill(&mut self, range: Range<usize>, tag: NodeTag) {
        if range.is_empty() {
            return;
        }
        if self.tags.len() < range.end {
            self.tags.resize(range.end, None);
        }
        for t in &mut self.tags[range] {
            t.get_or_insert(tag);
        }
    }

    /// The region a node is a forward node of.
    pub fn forward_region(&self, node: NodeId) -> Option<RegionId> {
        match self.tag(node) {
            Some(NodeTag::Forward(r)) => Some(r),
            _ => None,
        }
    }

    /// The region of a forward node or of the forward node a backward
    /// node differentiates.
    pub fn region_of(&self, node: NodeId) -> Option<RegionId> {
        match self.tag(node) {
            Some(NodeTag::Forward(r)) => Some(r),
            Some(NodeTag::Backward(r)) => r,
            None => None,
        }
    }

    pub fn is_backward(&self, node: NodeId) -> bool {
        matches!(self.tag(node), Some(NodeTag::Backward(_)))
    }
}

impl Graph {
    /// Runs `f` with every node it builds tagged as a forward node of region
    /// `name` (nested inside the regions being built, as `outer/name`).
    /// Reusing a name adds nodes to the same region; give each block its own.
    pub fn region<R>(&mut self, name: &str, f: impl FnOnce(&mut Graph) -> R) -> R {
        let path = match self.regions.open.last() {
            Some(outer) => format!("{outer}/{name}"),
            None => name.to_string(),
        };
        let id = self.regions.intern(&path);
        self.regions.open.push(path);
        let start = self.len();
        let r = f(self);
        self.regions.open.pop();
        self.regions.fill(start..self.len(), NodeTag::Forward(id));
        r
    }

    /// Forward nodes of region `r`, in order.
    pub fn region_nodes(&self, r: RegionId) -> Vec<NodeId> {
        self.ids()
            .filter(|&id| self.regions.forward_region(id) == Some(r))
            .collect()
    }
}

/// Arguments, constants and iotas: values a pass never has to keep alive
/// for the backward pass (arguments live anyway, constants are literals).
pub(crate) fn is_free(op: &Op) -> bool {
    matches!(
        op,
        Op::Parameter(_) | Op::Input(_) | Op::Constant(_) | Op::Iota { .. }
    )
}

/// Constants, iotas and what is computed from them alone: XLA folds these,
/// so passes read them directly and never count them as kept.
pub(crate) fn constant_like(g: &Graph) -> Vec<bool> {
    let mut c = vec![false; g.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        c[i] = matches!(n.op, Op::Constant(_) | Op::Iota { .. })
            || (!n.inputs.is_empty() && !is_free(&n.op) && n.inputs.iter().all(|x| c[x.index()]));
    }
    c
}

/// The users of each node.
pub(crate) fn users(g: &Graph) -> Vec<Vec<NodeId>> {
    let mut u = vec![Vec::new(); g.len()];
    for id in g.ids() {
        for &x in &g.nodes[id.index()].inputs {
            if u[x.index()].last() != Some(&id) {
                u[x.index()].push(id);
            }
        }
    }
    u
}

/// Forward values the backward pass reads (its residuals): tensor nodes
/// that are not backward nodes, arguments or constants (see
/// [`constant_like`]) and have a backward user. Remat makes this list
/// shorter; their bytes are what the step keeps alive between forward and
/// backward.
pub fn residuals(g: &Graph) -> Vec<NodeId> {
    let users = users(g);
    let constant = constant_like(g);
    g.ids()
        .filter(|&id| {
            let n = &g.nodes[id.index()];
            !g.regions.is_backward(id)
                && !is_free(&n.op)
                && !constant[id.index()]
                && n.ty.as_tensor().is_some()
                && users[id.index()].iter().any(|&u| g.regions.is_backward(u))
        })
        .collect()
}

/// Bytes of a node's value (all elements of a tuple).
pub fn node_bytes(g: &Graph, id: NodeId) -> u64 {
    g.nodes[id.index()]
        .ty
        .elements()
        .iter()
        .map(|t| t.shape.num_elements().max(0) as u64 * t.dtype.size_bytes() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::grad;
    use crate::{verify, TensorType};

    #[test]
    fn nodes_built_inside_get_the_region_and_nesting_names_it() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([2, 3])).unwrap();
        let w = g.parameter("w", TensorType::f32([3, 3])).unwrap();
        let (y, inner) = g
            .region("block0", |g| -> crate::Result<_> {
                let h = g.dot(x, w)?;
                let t = g.region("act", |g| g.tanh(h))?;
                Ok((g.add(t, x)?, t))
            })
            .unwrap();
        let l = g.sum_all(y).unwrap();
        let b = g.regions.id("block0").unwrap();
        let a = g.regions.id("block0/act").unwrap();
        assert_eq!(g.regions.tag(x), None);
        assert_eq!(g.regions.tag(y), Some(NodeTag::Forward(b)));
        assert_eq!(g.regions.tag(inner), Some(NodeTag::Forward(a)));
        assert_eq!(g.regions.tag(l), None);
        assert_eq!(g.region_nodes(a), vec![inner]);

        // Autodiff keeps forward tags and tags what it builds as backward.
        let n = g.len();
        let (mut g2, grads) = grad(&g, l, &[w]).unwrap();
        g2.set_outputs(&grads).unwrap();
        verify(&g2).unwrap();
        assert_eq!(g2.regions.tag(y), Some(NodeTag::Forward(b)));
        for id in g2.ids().skip(n) {
            assert!(g2.regions.is_backward(id), "{id} untagged");
        }
        assert!(g2
            .ids()
            .any(|id| g2.regions.tag(id) == Some(NodeTag::Backward(Some(a)))));
        assert!(
            residuals(&g2).contains(&inner),
            "tanh's VJP reads its output"
        );
    }
}
