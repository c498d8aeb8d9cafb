//! Row gather (embedding lookup) and its transpose, scatter-add.
//! Out-of-range ids follow XLA: gather clamps them, scatter drops them.

use super::common::{arity, Cts, Vjp};
use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::types::TensorType;

fn check_ids(ids: &TensorType) -> Result<(), String> {
    if !ids.dtype.is_int() {
        return Err(format!("ids must be integers, got {ids}"));
    }
    Ok(())
}

/// `[I..] ++ table dims after the first`.
fn gathered_dims(table: &TensorType, ids: &TensorType) -> Vec<i64> {
    let mut out = ids.dims().to_vec();
    out.extend_from_slice(&table.dims()[1..]);
    out
}

pub(crate) fn infer_gather(ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 2)?;
    let (table, ids) = (ins[0], ins[1]);
    check_ids(ids)?;
    if table.rank() == 0 {
        return Err(format!("table must have rank >= 1, got {table}"));
    }
    Ok(TensorType::new(table.dtype, gathered_dims(table, ids)))
}

pub(crate) fn infer_scatter_add(ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 3)?;
    let (x, ids, upd) = (ins[0], ins[1], ins[2]);
    check_ids(ids)?;
    if x.rank() == 0 {
        return Err(format!("operand must have rank >= 1, got {x}"));
    }
    if upd.dtype != x.dtype || upd.dims() != gathered_dims(x, ids).as_slice() {
        return Err(format!(
            "updates {upd} do not match operand {x} rows at ids {ids}"
        ));
    }
    Ok(x.clone())
}

impl Graph {
    /// `table[ids]`: `[V, D..]` rows at integer `ids: [I..]` -> `[I.., D..]`.
    #[track_caller]
    pub fn gather(&mut self, table: NodeId, ids: NodeId) -> Result<NodeId> {
        self.push(Op::Gather, &[table, ids])
    }

    /// `operand` with each row of `updates` added at its id (repeats add up).
    #[track_caller]
    pub fn scatter_add(&mut self, operand: NodeId, ids: NodeId, updates: NodeId) -> Result<NodeId> {
        self.push(Op::ScatterAdd, &[operand, ids, updates])
    }
}

pub(crate) fn vjp_gather(g: &mut Graph, v: &Vjp) -> Result<Cts> {
    let zeros = g.zeros_like(v.x(0))?;
    Ok(vec![Some(g.scatter_add(zeros, v.x(1), v.ct)?), None])
}

pub(crate) fn vjp_scatter_add(g: &mut Graph, v: &Vjp) -> Result<Cts> {
    Ok(vec![Some(v.ct), None, Some(g.gather(v.ct, v.x(1))?)])
}

#[cfg(test)]
mod tests {
    use crate::{DType, Graph, TensorType};

    #[test]
    fn embedding_shapes() {
        let mut g = Graph::new("t");
        let table = g.parameter("wte", TensorType::f32([100, 16])).unwrap();
        let ids = g.input("ids", TensorType::new(DType::I32, [4, 8])).unwrap();
        let e = g.gather(table, ids).unwrap();
        assert_eq!(g.dims(e).unwrap(), &[4, 8, 16]);
        let s = g.scatter_add(table, ids, e).unwrap();
        assert_eq!(g.dims(s).unwrap(), &[100, 16]);
        let err = g.gather(table, table).unwrap_err().to_string();
        assert!(
            err.starts_with("gather at") && err.contains("f32[100,16]"),
            "{err}"
        );
    }
}
