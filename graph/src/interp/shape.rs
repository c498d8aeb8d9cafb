//! Data movement kernels: broadcast, transpose, slicing, padding, gather.

use super::tensor::{flat, for_each_index, HostTensor};
use crate::types::TensorType;

/// Builds a tensor of `out` by computing each element from its multi-index.
pub fn generate(out: &TensorType, mut f: impl FnMut(&[i64]) -> f64) -> HostTensor {
    let mut data = Vec::with_capacity(out.shape.num_elements().max(0) as usize);
    for_each_index(out.dims(), |idx| data.push(f(idx)));
    HostTensor {
        ty: out.clone(),
        data,
    }
}

pub fn broadcast_in_dim(x: &HostTensor, out: &TensorType, bdims: &[usize]) -> HostTensor {
    let mut src = vec![0i64; x.dims().len()];
    generate(out, |idx| {
        for (i, &d) in bdims.iter().enumerate() {
            src[i] = if x.dims()[i] == 1 { 0 } else { idx[d] };
        }
        x.at(&src)
    })
}

pub fn transpose(x: &HostTensor, out: &TensorType, perm: &[usize]) -> HostTensor {
    let mut src = vec![0i64; perm.len()];
    generate(out, |idx| {
        for (i, &p) in perm.iter().enumerate() {
            src[p] = idx[i];
        }
        x.at(&src)
    })
}

pub fn reverse(x: &HostTensor, rdims: &[usize]) -> HostTensor {
    let mut src = vec![0i64; x.dims().len()];
    generate(&x.ty, |idx| {
        src.copy_from_slice(idx);
        for &d in rdims {
            src[d] = x.dims()[d] - 1 - idx[d];
        }
        x.at(&src)
    })
}

pub fn slice(x: &HostTensor, out: &TensorType, start: &[i64], stride: &[i64]) -> HostTensor {
    let mut src = vec![0i64; start.len()];
    generate(out, |idx| {
        for i in 0..idx.len() {
            src[i] = start[i] + idx[i] * stride[i];
        }
        x.at(&src)
    })
}

/// Start indices clamped so a window of `sizes` fits (XLA semantics).
fn clamp_starts(dims: &[i64], sizes: &[i64], starts: &[f64]) -> Vec<i64> {
    (0..dims.len())
        .map(|i| (starts[i] as i64).clamp(0, (dims[i] - sizes[i]).max(0)))
        .collect()
}

pub fn dynamic_slice(x: &HostTensor, out: &TensorType, starts: &[f64]) -> HostTensor {
    let s = clamp_starts(x.dims(), out.dims(), starts);
    let ones = vec![1; s.len()];
    slice(x, out, &s, &ones)
}

pub fn dynamic_update_slice(x: &HostTensor, u: &HostTensor, starts: &[f64]) -> HostTensor {
    let s = clamp_starts(x.dims(), u.dims(), starts);
    let mut r = x.clone();
    let mut dst = vec![0i64; s.len()];
    for_each_index(u.dims(), |idx| {
        for i in 0..idx.len() {
            dst[i] = s[i] + idx[i];
        }
        r.data[flat(x.dims(), &dst)] = u.at(idx);
    });
    r
}

pub fn concatenate(xs: &[&HostTensor], out: &TensorType, dim: usize) -> HostTensor {
    let mut src = vec![0i64; out.rank()];
    generate(out, |idx| {
        src.copy_from_slice(idx);
        let mut at = idx[dim];
        for x in xs {
            if at < x.dims()[dim] {
                src[dim] = at;
                return x.at(&src);
            }
            at -= x.dims()[dim];
        }
        f64::NAN
    })
}

pub fn pad(x: &HostTensor, pv: f64, out: &TensorType, low: &[i64], interior: &[i64]) -> HostTensor {
    let mut r = HostTensor::full(out.clone(), pv);
    let mut dst = vec![0i64; low.len()];
    for_each_index(x.dims(), |idx| {
        for i in 0..idx.len() {
            dst[i] = low[i] + idx[i] * (interior[i] + 1);
        }
        if dst.iter().zip(out.dims()).all(|(&p, &d)| p >= 0 && p < d) {
            r.data[flat(out.dims(), &dst)] = x.at(idx);
        }
    });
    r
}

/// Rows of `table` at `ids` (clamped into range).
pub fn gather(table: &HostTensor, ids: &HostTensor, out: &TensorType) -> HostTensor {
    let k = ids.dims().len();
    let v = table.dims()[0];
    let mut src = vec![0i64; table.dims().len()];
    generate(out, |idx| {
        let id = ids.at(&idx[..k]) as i64;
        src[0] = id.clamp(0, (v - 1).max(0));
        src[1..].copy_from_slice(&idx[k..]);
        table.at(&src)
    })
}

/// `x` plus each update row at its id (out-of-range rows dropped).
pub fn scatter_add(x: &HostTensor, ids: &HostTensor, upd: &HostTensor) -> HostTensor {
    let k = ids.dims().len();
    let v = x.dims()[0];
    let mut r = x.clone();
    let mut dst = vec![0i64; x.dims().len()];
    for_each_index(upd.dims(), |idx| {
        let id = ids.at(&idx[..k]) as i64;
        if id < 0 || id >= v {
            return;
        }
        dst[0] = id;
        dst[1..].copy_from_slice(&idx[k..]);
        r.data[flat(x.dims(), &dst)] += upd.at(idx);
    });
    r
}

pub fn iota(out: &TensorType, dim: usize) -> HostTensor {
    generate(out, |idx| idx[dim] as f64)
}
