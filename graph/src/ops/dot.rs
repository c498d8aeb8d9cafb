//! dot_general (batched, any contracting dims) plus `dot` and `matmul` helpers.

use super::common::{arity, check_dims, dims, invert_perm, remaining, Cts, Vjp};
use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::types::{DType, TensorType};
use serde::{Deserialize, Serialize};

/// Batch and contracting dims of both sides. The result is laid out as
/// `[batch.., lhs free.., rhs free..]` (free dims in operand order).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct DotDims {
    pub lhs_batch: Vec<usize>,
    pub rhs_batch: Vec<usize>,
    pub lhs_contract: Vec<usize>,
    pub rhs_contract: Vec<usize>,
}

impl DotDims {
    /// Contract `lhs_contract` with `rhs_contract`, no batch dims.
    pub fn contract(lhs: &[usize], rhs: &[usize]) -> Self {
        DotDims {
            lhs_contract: lhs.to_vec(),
            rhs_contract: rhs.to_vec(),
            ..Default::default()
        }
    }
}

pub(crate) fn infer_dot_general(
    d: &DotDims,
    out_dtype: Option<DType>,
    ins: &[&TensorType],
) -> Result<TensorType, String> {
    arity(ins, 2)?;
    let (l, r) = (ins[0], ins[1]);
    if l.dtype != r.dtype {
        return Err(format!("operand dtypes differ: lhs {l} vs rhs {r}"));
    }
    if l.dtype == DType::Bool {
        return Err(format!("unsupported element type: lhs {l}"));
    }
    let side = |what: &str, b: &[usize], c: &[usize], t: &TensorType| {
        let mut all = b.to_vec();
        all.extend_from_slice(c);
        check_dims(what, &all, t.rank()).map_err(|e| format!("{e} (operand {t})"))
    };
    side("lhs batch/contracting", &d.lhs_batch, &d.lhs_contract, l)?;
    side("rhs batch/contracting", &d.rhs_batch, &d.rhs_contract, r)?;
    let pairs = |what: &str, a: &[usize], b: &[usize]| -> Result<(), String> {
        if a.len() != b.len() {
            return Err(format!(
                "{what} dims count mismatch: lhs {a:?} vs rhs {b:?} (lhs {}, rhs {})",
                dims(l.dims()),
                dims(r.dims())
            ));
        }
        for (&i, &j) in a.iter().zip(b) {
            let (x, y) = (l.dims()[i], r.dims()[j]);
            if x != y {
                return Err(format!(
                    "{what} dims mismatch: lhs {} dim {i} = {x} vs rhs {} dim {j} = {y}",
                    dims(l.dims()),
                    dims(r.dims())
                ));
            }
        }
        Ok(())
    };
    pairs("batch", &d.lhs_batch, &d.rhs_batch)?;
    pairs("contracting", &d.lhs_contract, &d.rhs_contract)?;
    let mut out: Vec<i64> = d.lhs_batch.iter().map(|&i| l.dims()[i]).collect();
    for i in remaining(l.rank(), &[&d.lhs_batch, &d.lhs_contract]) {
        out.push(l.dims()[i]);
    }
    for j in remaining(r.rank(), &[&d.rhs_batch, &d.rhs_contract]) {
        out.push(r.dims()[j]);
    }
    Ok(TensorType::new(out_dtype.unwrap_or(l.dtype), out))
}

impl Graph {
    /// General dot; `out_dtype` asks for a wider result (bf16 x bf16 -> f32).
    #[track_caller]
    pub fn dot_general(
        &mut self,
        lhs: NodeId,
        rhs: NodeId,
        dims: DotDims,
        out_dtype: Option<DType>,
    ) -> Result<NodeId> {
        let out_dtype = match out_dtype {
            Some(d) if d == self.dtype(lhs)? => None,
            o => o,
        };
        self.push(Op::DotGeneral { dims, out_dtype }, &[lhs, rhs])
    }

    /// Contracts the last dim of `a` with the first of `b`: a matmul for
    /// 2-D operands, a dense layer for `[B, T, C] x [C, D]`.
    #[track_caller]
    pub fn dot(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        let ra = self.rank(a)?;
        let rb = self.rank(b)?;
        if ra == 0 || rb == 0 {
            return Err(self.err("dot_general", "dot of a scalar; use mul"));
        }
        self.dot_general(a, b, DotDims::contract(&[ra - 1], &[0]), None)
    }

    /// Batched matmul: `[.., M, K] x [.., K, N] -> [.., M, N]` with equal
    /// leading dims; a 2-D `b` is shared across the batch.
    #[track_caller]
    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        let ra = self.rank(a)?;
        let rb = self.rank(b)?;
        if rb == 2 || ra < 2 {
            return self.dot(a, b);
        }
        if ra != rb {
            return Err(self.err(
                "dot_general",
                format!(
                    "matmul needs equal ranks or a 2-D rhs: lhs {} vs rhs {}",
                    self.ty(a)?,
                    self.ty(b)?
                ),
            ));
        }
        let batch: Vec<usize> = (0..ra - 2).collect();
        let d = DotDims {
            lhs_batch: batch.clone(),
            rhs_batch: batch,
            lhs_contract: vec![ra - 1],
            rhs_contract: vec![rb - 2],
        };
        self.dot_general(a, b, d, None)
    }
}

/// Cotangent of the lhs of `dot_general(x, y, d)` (JAX's transpose rule).
/// With `swap_ans` the product's free dims are `[y free.., x free..]`.
fn transpose_lhs(
    g: &mut Graph,
    ct: NodeId,
    y: NodeId,
    x_rank: usize,
    d: &DotDims,
    swap_ans: bool,
    out_dtype: Option<DType>,
) -> Result<NodeId> {
    let y_rank = g.rank(y)?;
    let x_kept = remaining(x_rank, &[&d.lhs_contract, &d.lhs_batch]);
    let y_kept = remaining(y_rank, &[&d.rhs_contract, &d.rhs_batch]);
    let nb = d.lhs_batch.len();
    let ans_batch: Vec<usize> = (0..nb).collect();
    let y_at = if swap_ans { nb } else { nb + x_kept.len() };
    let ans_y: Vec<usize> = (y_at..y_at + y_kept.len()).collect();
    let dims2 = DotDims {
        lhs_batch: ans_batch,
        rhs_batch: d.rhs_batch.clone(),
        lhs_contract: ans_y,
        rhs_contract: y_kept,
    };
    let mut order: Vec<usize> = (0..d.rhs_contract.len()).collect();
    order.sort_by_key(|&i| d.rhs_contract[i]);
    let mut pre = d.lhs_batch.clone();
    pre.extend(&x_kept);
    pre.extend(order.iter().map(|&i| d.lhs_contract[i]));
    let r = g.dot_general(ct, y, dims2, out_dtype)?;
    g.transpose(r, &invert_perm(&pre))
}

pub(crate) fn vjp_dot_general(g: &mut Graph, d: &DotDims, v: &Vjp) -> Result<Cts> {
    let (x, y) = (v.x(0), v.x(1));
    let in_dtype = g.dtype(x)?;
    // A widened result: run the backward dots on narrow inputs with wide
    // accumulation too, and hand back cotangents in the operand dtype.
    let (ct, acc) = if g.dtype(v.ct)? != in_dtype {
        (g.convert(v.ct, in_dtype)?, Some(g.dtype(v.ct)?))
    } else {
        (v.ct, None)
    };
    let dx = transpose_lhs(g, ct, y, g.rank(x)?, d, false, acc)?;
    let swapped = DotDims {
        lhs_batch: d.rhs_batch.clone(),
        rhs_batch: d.lhs_batch.clone(),
        lhs_contract: d.rhs_contract.clone(),
        rhs_contract: d.lhs_contract.clone(),
    };
    let dy = transpose_lhs(g, ct, x, g.rank(y)?, &swapped, true, acc)?;
    Ok(vec![
        Some(g.convert(dx, in_dtype)?),
        Some(g.convert(dy, in_dtype)?),
    ])
}

#[cfg(test)]
mod tests {
    use crate::{DType, DotDims, Graph, TensorType};

    #[test]
    fn contracting_mismatch_message() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([32, 784])).unwrap();
        let w = g.parameter("w", TensorType::f32([512, 10])).unwrap();
        let line = line!() + 1;
        let e = g.dot(x, w).unwrap_err().to_string();
        let want = format!("dot_general at {}:{line}:", file!());
        assert!(e.starts_with(&want), "{e}");
        assert!(
            e.ends_with(
                "contracting dims mismatch: lhs [32,784] dim 1 = 784 vs rhs [512,10] dim 0 = 512"
            ),
            "{e}"
        );
    }

    #[test]
    fn batched_and_widened() {
        let mut g = Graph::new("t");
        let q = g
            .input("q", TensorType::new(DType::BF16, [2, 4, 8, 16]))
            .unwrap();
        let k = g
            .input("k", TensorType::new(DType::BF16, [2, 4, 8, 16]))
            .unwrap();
        let d = DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 1],
            lhs_contract: vec![3],
            rhs_contract: vec![3],
        };
        let s = g.dot_general(q, k, d, Some(DType::F32)).unwrap();
        assert_eq!(g.ty(s).unwrap(), &TensorType::f32([2, 4, 8, 8]));
        let x = g.input("x", TensorType::f32([2, 3, 5])).unwrap();
        let w = g.input("w", TensorType::f32([5, 7])).unwrap();
        let y = g.matmul(x, w).unwrap();
        assert_eq!(g.dims(y).unwrap(), &[2, 3, 7]);
        let e = g
            .dot_general(q, x, DotDims::contract(&[3], &[2]), None)
            .unwrap_err();
        assert!(e.to_string().contains("dtypes differ"), "{e}");
    }
}
