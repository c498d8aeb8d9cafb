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
    /// Per tensor dim, a logical axis name (`batch`, `embed`, `heads`, ..); the lowering
    /// maps names to mesh axes by its axis rules, and drops the constraint without a mesh.
    Logical(Vec<Option<String>>),
}

pub(crate) fn infer_identity(ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 1)?;
    Ok(ins[0].clone())
}

pub(crate) fn infer_sharding(s: &Sharding, ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 1)?;
    let x = ins[0];
    match s {
        Sharding::Mesh(axes) if axes.len() != x.rank() => {
            return Err(format!("{} mesh axes for operand {x}", axes.len()));
        }
        Sharding::Logical(axes) if axes.len() != x.rank() => {
            return Err(format!("{} logical axes for operand {x}", axes.len()));
        }
        _ => {}
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

    /// `x`, annotated with a logical axis name per dim (`None`: any layout).
    #[track_caller]
    pub fn logical_axes(&mut self, x: NodeId, axes: &[Option<&str>]) -> Result<NodeId> {
        let axes = axes.iter().map(|a| a.map(String::from)).collect();
        self.push(Op::Sharding(Sharding::Logical(axes)), &[x])
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
        let e = g.logical_axes(x, &[Some("batch")]).unwrap_err().to_string();
        assert!(e.contains("1 logical axes"), "{e}");
        let l = g.logical_axes(x, &[Some("batch"), None]).unwrap();
        assert_eq!(g.dims(l).unwrap(), &[8, 4]);
    }
}
