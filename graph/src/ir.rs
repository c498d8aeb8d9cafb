//! The arena IR: `Graph { nodes }` indexed by `NodeId`, Cranelift style.

use crate::error::{GraphError, Result};
use crate::op::{infer, Op};
use crate::passes::region::Regions;
use crate::types::{DType, NodeType, Shape, TensorType};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// Index of a node in its graph. Ids of one graph mean nothing in another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// Source location of the model code that built a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    pub file: Cow<'static, str>,
    pub line: u32,
    pub col: u32,
}

impl Location {
    #[track_caller]
    pub fn caller() -> Self {
        let l = std::panic::Location::caller();
        Location {
            file: Cow::Borrowed(l.file()),
            line: l.line(),
            col: l.column(),
        }
    }

    pub fn unknown() -> Self {
        Location {
            file: Cow::Borrowed("<unknown>"),
            line: 0,
            col: 0,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub ty: NodeType,
    pub loc: Location,
    pub name: Option<String>,
}

/// A computation: nodes in topological order (inputs precede users).
/// Arguments are the `Parameter` and `Input` nodes in creation order;
/// `outputs` are what the computation returns.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub outputs: Vec<NodeId>,
    /// Region tags of nodes (see [`Graph::region`]); empty unless model code marks regions.
    #[serde(default, skip_serializing_if = "Regions::is_empty")]
    pub regions: Regions,
    /// When set, new nodes take this location instead of their caller's
    /// (autodiff gives backward nodes the location of their forward node).
    #[serde(skip)]
    loc_override: Option<Location>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, id: NodeId) -> Result<&Node> {
        self.nodes.get(id.index()).ok_or(GraphError::UnknownNode {
            id,
            len: self.nodes.len(),
        })
    }

    pub fn node_type(&self, id: NodeId) -> Result<&NodeType> {
        Ok(&self.node(id)?.ty)
    }

    /// The tensor type of `id`; an error for tuple-valued nodes.
    pub fn ty(&self, id: NodeId) -> Result<&TensorType> {
        self.node(id)?
            .ty
            .as_tensor()
            .ok_or(GraphError::TupleValue { id })
    }

    pub fn shape(&self, id: NodeId) -> Result<&Shape> {
        Ok(&self.ty(id)?.shape)
    }

    pub fn dims(&self, id: NodeId) -> Result<&[i64]> {
        Ok(&self.ty(id)?.shape.dims)
    }

    pub fn dtype(&self, id: NodeId) -> Result<DType> {
        Ok(self.ty(id)?.dtype)
    }

    pub fn rank(&self, id: NodeId) -> Result<usize> {
        Ok(self.ty(id)?.rank())
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    /// Parameter and input nodes in creation order: the computation's arguments.
    pub fn args(&self) -> Vec<NodeId> {
        self.ids()
            .filter(|&id| matches!(self.nodes[id.index()].op, Op::Parameter(_) | Op::Input(_)))
            .collect()
    }

    /// Trainable parameters in creation order.
    pub fn parameters(&self) -> Vec<NodeId> {
        self.ids()
            .filter(|&id| matches!(self.nodes[id.index()].op, Op::Parameter(_)))
            .collect()
    }

    /// Data inputs in creation order.
    pub fn inputs(&self) -> Vec<NodeId> {
        self.ids()
            .filter(|&id| matches!(self.nodes[id.index()].op, Op::Input(_)))
            .collect()
    }

    /// Sets the returned values; each must be a tensor node of this graph.
    pub fn set_outputs(&mut self, outputs: &[NodeId]) -> Result<()> {
        for &id in outputs {
            self.ty(id)?;
        }
        self.outputs = outputs.to_vec();
        Ok(())
    }

    pub fn set_name(&mut self, id: NodeId, name: impl Into<String>) -> Result<()> {
        let len = self.nodes.len();
        let node = self
            .nodes
            .get_mut(id.index())
            .ok_or(GraphError::UnknownNode { id, len })?;
        node.name = Some(name.into());
        Ok(())
    }

    /// Finds a node by name (parameters and inputs are always named).
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.ids()
            .find(|id| self.nodes[id.index()].name.as_deref() == Some(name))
    }

    /// Runs `f` with every new node located at `loc` (for passes that build
    /// nodes on behalf of existing ones).
    pub fn with_location<R>(&mut self, loc: Location, f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = self.loc_override.replace(loc);
        let r = f(self);
        self.loc_override = saved;
        r
    }

    /// The location a node built now gets: the override, else the caller.
    #[track_caller]
    pub(crate) fn here(&self) -> Location {
        match &self.loc_override {
            Some(loc) => loc.clone(),
            None => Location::caller(),
        }
    }

    /// An error of op `op` located like a node built now.
    #[track_caller]
    pub(crate) fn err(&self, op: &'static str, msg: impl Into<String>) -> GraphError {
        GraphError::Op {
            op,
            loc: self.here(),
            msg: msg.into(),
        }
    }

    /// Appends a node built by model code, located at the caller.
    #[track_caller]
    pub(crate) fn push(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let loc = self.here();
        self.add_node(op, inputs.to_vec(), loc)
    }

    /// Appends a node after checking its operands with the op's shape rule.
    pub fn add_node(&mut self, op: Op, inputs: Vec<NodeId>, loc: Location) -> Result<NodeId> {
        let mut tys = Vec::with_capacity(inputs.len());
        for &i in &inputs {
            match self.nodes.get(i.index()) {
                Some(n) => tys.push(&n.ty),
                None => {
                    return Err(GraphError::Op {
                        op: op.name(),
                        loc,
                        msg: format!(
                            "operand {i} does not exist (graph has {} nodes)",
                            self.nodes.len()
                        ),
                    })
                }
            }
        }
        let ty = infer(&op, &tys).map_err(|msg| GraphError::Op {
            op: op.name(),
            loc: loc.clone(),
            msg,
        })?;
        let id = u32::try_from(self.nodes.len())
            .map_err(|_| GraphError::Invalid("graph has too many nodes".into()))?;
        self.nodes.push(Node {
            op,
            inputs,
            ty,
            loc,
            name: None,
        });
        Ok(NodeId(id))
    }
}
