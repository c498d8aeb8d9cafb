//! Errors of graph construction and passes.

use crate::ir::{Location, NodeId};
use crate::passes::verify::VerifyError;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum GraphError {
    /// A shape/dtype rule or builder rejected its operands. `op` is the
    /// StableHLO-style op name, `loc` the model code that built it.
    #[error("{op} at {loc}: {msg}")]
    Op {
        op: &'static str,
        loc: Location,
        msg: String,
    },
    #[error("unknown node {id} (graph has {len} nodes)")]
    UnknownNode { id: NodeId, len: usize },
    #[error("node {id} is a tuple; use get_tuple_element to read it")]
    TupleValue { id: NodeId },
    /// Autodiff reached an op without a VJP rule for this use.
    #[error("{op} at {loc}: no gradient rule: {msg}")]
    NoGradient {
        op: &'static str,
        loc: Location,
        msg: String,
    },
    /// A pass built a graph that does not verify: a bug in the pass.
    #[error("pass `{pass}` produced an invalid graph: {err}")]
    PassOutput {
        pass: &'static str,
        err: VerifyError,
    },
    /// A pass was handed a graph that does not verify.
    #[error("the input of pass `{pass}` does not verify: {err}")]
    PassInput {
        pass: &'static str,
        err: VerifyError,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = GraphError> = std::result::Result<T, E>;
