//! Identity ops that carry meaning for passes: stop_gradient and sharding.

use super::common::{arity, Cts, Vjp};
use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// How a value is laid out over the device mesh.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sharding {
    Replicated,
    /// Per tensor dim, the mesh axis it is split over (`None`: not split).
    Mesh(Vec<Option<String>>),
    /// A raw `mhlo.sharding` string, e.g. `{devices=[2,1]<=[2]}`.
    Raw(String),
}

pub(crate) fn infer_identity(ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 1)?;
    Ok(ins[0].clone())
}

pub(crate) fn infer_sharding(s: &Sharding, ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 1)?;
    let x = ins[0];
    if let Sharding::Mesh(axes) = s {
        if axes.len() != x.rank() {
            return Err(format!("{} mesh axes for operand {x}", axes.len()));
        }
    }
    Ok(x.clone())
}

impl Graph {
    /// `x`, with a zero gradient.
    #[track_caller]
    pub fn stop_gradient(&mut self, x: NodeId) -> Result<NodeId> {
        self.push(Op::StopGradient, &[x])
    }

    /// `x`, annotated with how to shard it.
    #[track_caller]
    pub fn shard(&mut self, x: NodeId, sharding: Sharding) -> Result<NodeId> {
        self.push(Op::Sharding(sharding), &[x])
    }
}

pub(crate) fn vjp_sharding(g: &mut Graph, s: &Sharding, v: &Vjp) -> Result<Cts> {
    // The cotangent lives where the value lives.
    Ok(vec![Some(g.shard(v.ct, s.clone())?)])
}

#[cfg(test)]
mod tests {
    use super::Sharding;
    use crate::{Graph, TensorType};

    #[test]
    fn sharding_checks_rank() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([8, 4])).unwrap();
        let s = g
            .shard(x, Sharding::Mesh(vec![Some("data".into()), None]))
            .unwrap();
        assert_eq!(g.dims(s).unwrap(), &[8, 4]);
        let e = g
            .shard(x, Sharding::Mesh(vec![None]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("sharding at") && e.contains("f32[8,4]"),
            "{e}"
        );
    }
}
