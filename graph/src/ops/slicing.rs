//! slice, dynamic_slice, dynamic_update_slice, concatenate, pad.

use super::common::{dims, Cts, Vjp};
use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::types::TensorType;

fn check_len(what: &str, v: &[i64], x: &TensorType) -> Result<(), String> {
    if v.len() != x.rank() {
        return Err(format!(
            "{what} {} has {} entries for operand {x}",
            dims(v),
            v.len()
        ));
    }
    Ok(())
}

pub(crate) fn infer_slice(
    start: &[i64],
    limit: &[i64],
    stride: &[i64],
    ins: &[&TensorType],
) -> Result<TensorType, String> {
    super::common::arity(ins, 1)?;
    let x = ins[0];
    check_len("start", start, x)?;
    check_len("limit", limit, x)?;
    check_len("stride", stride, x)?;
    let mut out = Vec::with_capacity(x.rank());
    for i in 0..x.rank() {
        let (s, l, st, d) = (start[i], limit[i], stride[i], x.dims()[i]);
        if s < 0 || s > l || l > d || st < 1 {
            return Err(format!(
                "bad bounds in dim {i}: start {} limit {} stride {} for operand {x}",
                dims(start),
                dims(limit),
                dims(stride)
            ));
        }
        out.push((l - s + st - 1) / st);
    }
    Ok(TensorType::new(x.dtype, out))
}

fn check_indices(idx: &[&TensorType], rank: usize) -> Result<(), String> {
    if idx.len() != rank {
        return Err(format!("{} start indices for rank {rank}", idx.len()));
    }
    for (i, t) in idx.iter().enumerate() {
        if t.rank() != 0 || !t.dtype.is_int() || t.dtype != idx[0].dtype {
            return Err(format!(
                "start index {i} must be a scalar integer like the others, got {t}"
            ));
        }
    }
    Ok(())
}

pub(crate) fn infer_dynamic_slice(
    sizes: &[i64],
    ins: &[&TensorType],
) -> Result<TensorType, String> {
    let Some((x, idx)) = ins.split_first() else {
        return Err("expects an operand and start indices".into());
    };
    check_indices(idx, x.rank())?;
    check_len("sizes", sizes, x)?;
    if sizes.iter().zip(x.dims()).any(|(&s, &d)| s < 0 || s > d) {
        return Err(format!("sizes {} do not fit operand {x}", dims(sizes)));
    }
    Ok(TensorType::new(x.dtype, sizes.to_vec()))
}

pub(crate) fn infer_dynamic_update_slice(ins: &[&TensorType]) -> Result<TensorType, String> {
    if ins.len() < 2 {
        return Err("expects an operand, an update and start indices".into());
    }
    let (x, u) = (ins[0], ins[1]);
    check_indices(&ins[2..], x.rank())?;
    if u.dtype != x.dtype
        || u.rank() != x.rank()
        || u.dims().iter().zip(x.dims()).any(|(a, b)| a > b)
    {
        return Err(format!("update {u} does not fit operand {x}"));
    }
    Ok(x.clone())
}

pub(crate) fn infer_concatenate(dim: usize, ins: &[&TensorType]) -> Result<TensorType, String> {
    let Some(first) = ins.first() else {
        return Err("expects at least one operand".into());
    };
    if dim >= first.rank() {
        return Err(format!("dim {dim} out of range for operand {first}"));
    }
    let mut out = first.dims().to_vec();
    out[dim] = 0;
    for (i, t) in ins.iter().enumerate() {
        let same_rest = t.rank() == first.rank()
            && (0..t.rank()).all(|d| d == dim || t.dims()[d] == first.dims()[d]);
        if t.dtype != first.dtype || !same_rest {
            return Err(format!(
                "operand {i} {t} does not match operand 0 {first} outside dim {dim}"
            ));
        }
        out[dim] += t.dims()[dim];
    }
    Ok(TensorType::new(first.dtype, out))
}

pub(crate) fn infer_pad(
    low: &[i64],
    high: &[i64],
    interior: &[i64],
    ins: &[&TensorType],
) -> Result<TensorType, String> {
    super::common::arity(ins, 2)?;
    let (x, pv) = (ins[0], ins[1]);
    if pv.rank() != 0 || pv.dtype != x.dtype {
        return Err(format!(
            "padding value must be a scalar {}, got {pv}",
            x.dtype
        ));
    }
    check_len("low", low, x)?;
    check_len("high", high, x)?;
    check_len("interior", interior, x)?;
    let mut out = Vec::with_capacity(x.rank());
    for i in 0..x.rank() {
        let d = x.dims()[i];
        let n = low[i] + high[i] + d + (d - 1).max(0) * interior[i];
        if interior[i] < 0 || n < 0 {
            return Err(format!(
                "bad padding in dim {i}: low {} high {} interior {} for operand {x}",
                dims(low),
                dims(high),
                dims(interior)
            ));
        }
        out.push(n);
    }
    Ok(TensorType::new(x.dtype, out))
}

impl Graph {
    #[track_caller]
    pub fn slice(
        &mut self,
        x: NodeId,
        start: &[i64],
        limit: &[i64],
        stride: &[i64],
    ) -> Result<NodeId> {
        let op = Op::Slice {
            start: start.to_vec(),
            limit: limit.to_vec(),
            stride: stride.to_vec(),
        };
        self.push(op, &[x])
    }

    /// `x[.., start..limit, ..]` along one dim.
    #[track_caller]
    pub fn slice_dim(&mut self, x: NodeId, dim: usize, start: i64, limit: i64) -> Result<NodeId> {
        let d = self.dims(x)?.to_vec();
        if dim >= d.len() {
            return Err(self.err("slice", format!("dim {dim} out of range for {}", dims(&d))));
        }
        let mut s = vec![0; d.len()];
        let mut l = d.clone();
        s[dim] = start;
        l[dim] = limit;
        self.slice(x, &s, &l, &vec![1; d.len()])
    }

    /// A `sizes` window at runtime `starts` (scalar ints, clamped into range).
    #[track_caller]
    pub fn dynamic_slice(&mut self, x: NodeId, starts: &[NodeId], sizes: &[i64]) -> Result<NodeId> {
        let mut ins = vec![x];
        ins.extend_from_slice(starts);
        self.push(
            Op::DynamicSlice {
                sizes: sizes.to_vec(),
            },
            &ins,
        )
    }

    #[track_caller]
    pub fn dynamic_update_slice(
        &mut self,
        x: NodeId,
        update: NodeId,
        starts: &[NodeId],
    ) -> Result<NodeId> {
        let mut ins = vec![x, update];
        ins.extend_from_slice(starts);
        self.push(Op::DynamicUpdateSlice, &ins)
    }

    #[track_caller]
    pub fn concatenate(&mut self, xs: &[NodeId], dim: usize) -> Result<NodeId> {
        self.push(Op::Concatenate { dim }, xs)
    }

    /// Pads with the scalar `value`; negative low/high crop.
    #[track_caller]
    pub fn pad(
        &mut self,
        x: NodeId,
        value: NodeId,
        low: &[i64],
        high: &[i64],
        interior: &[i64],
    ) -> Result<NodeId> {
        let op = Op::Pad {
            low: low.to_vec(),
            high: high.to_vec(),
            interior: interior.to_vec(),
        };
        self.push(op, &[x, value])
    }
}

pub(crate) fn vjp_slice(g: &mut Graph, start: &[i64], stride: &[i64], v: &Vjp) -> Result<Cts> {
    let x = g.ty(v.x(0))?.clone();
    let out = g.dims(v.out)?.to_vec();
    if out.contains(&0) {
        return Ok(vec![Some(g.full(0.0, x)?)]);
    }
    // Scatter the cotangent back with interior padding for the stride.
    let high: Vec<i64> = (0..out.len())
        .map(|i| x.dims()[i] - (start[i] + (out[i] - 1) * stride[i] + 1))
        .collect();
    let interior: Vec<i64> = stride.iter().map(|s| s - 1).collect();
    let zero = g.scalar(0.0, x.dtype)?;
    Ok(vec![Some(g.pad(v.ct, zero, start, &high, &interior)?)])
}

pub(crate) fn vjp_dynamic_slice(g: &mut Graph, v: &Vjp) -> Result<Cts> {
    let zeros = g.zeros_like(v.x(0))?;
    let d = g.dynamic_update_slice(zeros, v.ct, &v.inputs[1..])?;
    let mut cts = vec![Some(d)];
    cts.extend(v.inputs[1..].iter().map(|_| None));
    Ok(cts)
}

pub(crate) fn vjp_dynamic_update_slice(g: &mut Graph, v: &Vjp) -> Result<Cts> {
    let idx = &v.inputs[2..];
    let u = v.x(1);
    let zeros = g.zeros_like(u)?;
    let dx = g.dynamic_update_slice(v.ct, zeros, idx)?;
    let sizes = g.dims(u)?.to_vec();
    let du = g.dynamic_slice(v.ct, idx, &sizes)?;
    let mut cts = vec![Some(dx), Some(du)];
    cts.extend(idx.iter().map(|_| None));
    Ok(cts)
}

pub(crate) fn vjp_concatenate(g: &mut Graph, dim: usize, v: &Vjp) -> Result<Cts> {
    let mut at = 0;
    let mut cts = Vec::with_capacity(v.inputs.len());
    for &x in v.inputs {
        let n = g.dims(x)?[dim];
        cts.push(Some(g.slice_dim(v.ct, dim, at, at + n)?));
        at += n;
    }
    Ok(cts)
}

pub(crate) fn vjp_pad(
    g: &mut Graph,
    low: &[i64],
    high: &[i64],
    interior: &[i64],
    v: &Vjp,
) -> Result<Cts> {
    let x = g.ty(v.x(0))?.clone();
    let r = x.rank();
    // Undo cropping by padding the cotangent with zeros, then take every
    // (interior+1)-th element starting at the (non-negative) low padding.
    let zero = g.scalar(0.0, x.dtype)?;
    let lo_neg: Vec<i64> = low.iter().map(|&l| (-l).max(0)).collect();
    let hi_neg: Vec<i64> = high.iter().map(|&h| (-h).max(0)).collect();
    let ct = if lo_neg.iter().chain(&hi_neg).any(|&p| p > 0) {
        g.pad(v.ct, zero, &lo_neg, &hi_neg, &vec![0; r])?
    } else {
        v.ct
    };
    let start: Vec<i64> = low.iter().map(|&l| l.max(0)).collect();
    let stride: Vec<i64> = interior.iter().map(|&i| i + 1).collect();
    let limit: Vec<i64> = (0..r)
        .map(|i| start[i] + (x.dims()[i] - 1).max(0) * stride[i] + x.dims()[i].min(1))
        .collect();
    let dx = g.slice(ct, &start, &limit, &stride)?;
    // The padding value received everything not sent to the operand.
    let all: Vec<usize> = (0..r).collect();
    let total = g.reduce_sum(v.ct, &all)?;
    let inner = g.reduce_sum(dx, &all)?;
    let dpv = g.sub(total, inner)?;
    Ok(vec![Some(dx), Some(dpv)])
}

#[cfg(test)]
mod tests {
    use crate::{DType, Graph, TensorType};

    #[test]
    fn shape_rules() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([5, 4])).unwrap();
        let s = g.slice(x, &[1, 0], &[5, 4], &[2, 3]).unwrap();
        assert_eq!(g.dims(s).unwrap(), &[2, 2]);
        let e = g
            .slice(x, &[0, 0], &[6, 4], &[1, 1])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("slice at") && e.contains("f32[5,4]") && e.contains("[6,4]"),
            "{e}"
        );
        let i = g.scalar(1.0, DType::I32).unwrap();
        let d = g.dynamic_slice(x, &[i, i], &[2, 2]).unwrap();
        assert_eq!(g.dims(d).unwrap(), &[2, 2]);
        let e = g.dynamic_slice(x, &[i], &[2, 2]).unwrap_err().to_string();
        assert!(
            e.contains("dynamic_slice") && e.contains("1 start indices"),
            "{e}"
        );
        let u = g.dynamic_update_slice(x, d, &[i, i]).unwrap();
        assert_eq!(g.dims(u).unwrap(), &[5, 4]);
        let c = g.concatenate(&[x, s], 0).unwrap_err().to_string();
        assert!(c.contains("concatenate") && c.contains("f32[2,2]"), "{c}");
        let c = g.concatenate(&[x, x], 1).unwrap();
        assert_eq!(g.dims(c).unwrap(), &[5, 8]);
        let z = g.scalar(0.0, DType::F32).unwrap();
        let p = g.pad(x, z, &[1, -1], &[0, 2], &[1, 0]).unwrap();
        assert_eq!(g.dims(p).unwrap(), &[10, 5]);
    }
}
