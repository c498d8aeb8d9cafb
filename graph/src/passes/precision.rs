//! Mixed precision: every dot_general and convolution of the step (forward
//! and backward) reads its operands in a narrow dtype and accumulates in
//! f32. Results stay f32, so everything else (softmax, layer norm, losses,
//! reductions, the optimizer) runs in f32 unchanged; parameters and
//! optimizer state stay f32 arguments. A value cast once is shared by all
//! its dots, so a backward dot reading a forward activation reads the bf16
//! copy the forward dot made: the value kept for the backward is half size.

use super::{NodeTag, Rebuild};
use crate::error::Result;
use crate::ir::{Location, NodeId};
use crate::op::{DotDims, Op};
use crate::types::DType;
use crate::Graph;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecisionPolicy {
    /// Operand dtype of dot_general and convolution.
    pub compute: DType,
    /// Their result and accumulation dtype; only ops whose operands are of
    /// this dtype are rewritten.
    pub accumulate: DType,
}

impl PrecisionPolicy {
    /// No change.
    pub fn f32() -> Self {
        PrecisionPolicy {
            compute: DType::F32,
            accumulate: DType::F32,
        }
    }

    /// bf16 operands, f32 accumulation (the fast path on XLA CPU with avx512_bf16).
    pub fn bf16() -> Self {
        PrecisionPolicy {
            compute: DType::BF16,
            accumulate: DType::F32,
        }
    }

    /// f16 operands, f32 accumulation. Small gradients underflow in f16:
    /// scale the loss (and unscale the gradients) with this one.
    pub fn f16() -> Self {
        PrecisionPolicy {
            compute: DType::F16,
            accumulate: DType::F32,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecisionReport {
    /// dot_general nodes rewritten to narrow operands.
    pub dots: usize,
    pub convs: usize,
    /// Dots left wide because XLA CPU has no narrow kernel for their layout.
    pub kept_wide: usize,
    /// Convert nodes inserted (each value is cast once).
    pub casts: usize,
    /// Operands that were already narrow values widened by a convert, read
    /// directly instead of being cast back.
    pub casts_avoided: usize,
    /// New id of each node of the input graph.
    pub map: Vec<NodeId>,
}

/// Rewrites every dot_general and convolution of `g` per `policy`.
///
/// XLA CPU cannot run bf16 x bf16 -> f32 dots whose lhs is contracted over a
/// non-trailing dim ("Unsupported element type for DotThunk::Execute"): those stay
/// wide (see `supported_narrow_layout`).
pub fn mixed_precision(g: &Graph, policy: &PrecisionPolicy) -> Result<(Graph, PrecisionReport)> {
    let (narrow, wide) = (policy.compute, policy.accumulate);
    if !narrow.is_float() || !wide.is_float() {
        return Err(crate::GraphError::Invalid(format!(
            "mixed precision needs float dtypes, got compute {narrow} and accumulate {wide}"
        )));
    }
    let mut rb = Rebuild::new(g);
    let mut report = PrecisionReport {
        dots: 0,
        convs: 0,
        kept_wide: 0,
        casts: 0,
        casts_avoided: 0,
        map: Vec::new(),
    };
    let mut cache: HashMap<NodeId, NodeId> = HashMap::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let id = NodeId(i as u32);
        let ins: Vec<NodeId> = node.inputs.iter().map(|x| rb.map[x.index()]).collect();
        let wide_operands =
            ins.len() == 2 && ins.iter().all(|&x| rb.out.dtype(x).ok() == Some(wide));
        let op = match &node.op {
            Op::DotGeneral { dims, out_dtype }
                if narrow != wide
                    && wide_operands
                    && out_dtype.unwrap_or(wide) == wide
                    && !supported_narrow_layout(dims, &rb, &ins)? =>
            {
                report.kept_wide += 1;
                None
            }
            Op::DotGeneral { dims, out_dtype }
                if narrow != wide && wide_operands && out_dtype.unwrap_or(wide) == wide =>
            {
                report.dots += 1;
                Some(Op::DotGeneral {
                    dims: dims.clone(),
                    out_dtype: Some(wide),
                })
            }
            Op::Conv(p)
                if narrow != wide && wide_operands && p.out_dtype.unwrap_or(wide) == wide =>
            {
                report.convs += 1;
                let mut p = p.clone();
                p.out_dtype = Some(wide);
                Some(Op::Conv(p))
            }
            _ => None,
        };
        match op {
            Some(op) => {
                let tag = g.regions.tag(id);
                let mut cast_ins = Vec::with_capacity(2);
                for x in ins {
                    cast_ins.push(cast(
                        &mut rb,
                        &mut cache,
                        &mut report,
                        x,
                        narrow,
                        &node.loc,
                        tag,
                    )?);
                }
                rb.copy_as(op, cast_ins)?;
            }
            None => {
                rb.copy_as(node.op.clone(), ins)?;
            }
        }
    }
    let (out, map) = rb.finish()?;
    report.map = map;
    Ok((super::checked("mixed_precision", g, out)?, report))
}

/// `x` (a node of the new graph) in dtype `to`, cast at most once.
fn cast(
    rb: &mut Rebuild,
    cache: &mut HashMap<NodeId, NodeId>,
    report: &mut PrecisionReport,
    x: NodeId,
    to: DType,
    loc: &Location,
    tag: Option<NodeTag>,
) -> Result<NodeId> {
    if let Some(&c) = cache.get(&x) {
        return Ok(c);
    }
    let n = rb.out.node(x)?;
    let c = match (&n.op, n.inputs.first()) {
        (Op::Convert(_), Some(&src)) if rb.out.dtype(src)? == to => {
            report.casts_avoided += 1;
            src
        }
        _ => {
            report.casts += 1;
            rb.add(Op::Convert(to), vec![x], loc.clone(), tag)?
        }
    };
    cache.insert(x, c);
    Ok(c)
}

/// Whether XLA CPU runs this dot with narrow (bf16) operands: the lhs contracted over its
/// trailing dims, the rhs over its leading or trailing dims (after batch dims). Other dots,
/// e.g. weight gradients that contract over the leading (batch, time) dims, fail there
/// ("Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32") whatever transposes
/// are inserted first, since XLA's layout assignment folds them back; they stay wide.
fn supported_narrow_layout(d: &DotDims, rb: &Rebuild, ins: &[NodeId]) -> Result<bool> {
    let (lr, rr) = (rb.out.rank(ins[0])?, rb.out.rank(ins[1])?);
    let nb = d.lhs_batch.len();
    let nc = d.lhs_contract.len();
    let seq = |v: &[usize], start: usize| v.iter().enumerate().all(|(i, &x)| x == start + i);
    let batch_leading = seq(&d.lhs_batch, 0) && seq(&d.rhs_batch, 0);
    let lhs_trailing = seq(&d.lhs_contract, lr - nc);
    let rhs_ok = seq(&d.rhs_contract, nb) || seq(&d.rhs_contract, rr - nc);
    Ok(batch_leading && lhs_trailing && rhs_ok)
}
