//! Reductions, argmax, windows.

use super::shape::generate;
use super::tensor::{flat, for_each_index, HostTensor};
use crate::op::{ReduceKind, Window};
use crate::types::TensorType;

fn init(kind: ReduceKind) -> f64 {
    match kind {
        ReduceKind::Sum => 0.0,
        ReduceKind::Max => f64::NEG_INFINITY,
        ReduceKind::Min => f64::INFINITY,
    }
}

fn combine(kind: ReduceKind, a: f64, b: f64) -> f64 {
    match kind {
        ReduceKind::Sum => a + b,
        ReduceKind::Max if a.is_nan() || b.is_nan() => f64::NAN,
        ReduceKind::Max => a.max(b),
        ReduceKind::Min if a.is_nan() || b.is_nan() => f64::NAN,
        ReduceKind::Min => a.min(b),
    }
}

pub fn reduce(x: &HostTensor, kind: ReduceKind, rdims: &[usize], out: &TensorType) -> HostTensor {
    let kept: Vec<usize> = (0..x.dims().len()).filter(|d| !rdims.contains(d)).collect();
    let mut r = HostTensor::full(out.clone(), 0.0);
    r.data.iter_mut().for_each(|v| *v = init(kind));
    let mut oi = vec![0i64; kept.len()];
    for_each_index(x.dims(), |idx| {
        for (k, &d) in kept.iter().enumerate() {
            oi[k] = idx[d];
        }
        let f = flat(out.dims(), &oi);
        r.data[f] = combine(kind, r.data[f], x.at(idx));
    });
    let d = out.dtype;
    r.data
        .iter_mut()
        .for_each(|v| *v = super::tensor::wrap(d, *v));
    r
}

pub fn argmax(x: &HostTensor, dim: usize, out: &TensorType) -> HostTensor {
    let mut src = vec![0i64; x.dims().len()];
    generate(out, |idx| {
        let mut k = 0;
        for (d, s) in src.iter_mut().enumerate() {
            if d != dim {
                *s = idx[k];
                k += 1;
            }
        }
        let (mut best, mut at) = (f64::NEG_INFINITY, 0);
        for i in 0..x.dims()[dim] {
            src[dim] = i;
            let v = x.at(&src);
            if v > best || (i == 0 && v.is_nan()) {
                best = v;
                at = i;
            }
        }
        at as f64
    })
}

/// Calls `f` with each in-bounds operand index of output window `o`.
fn window_positions(x_dims: &[i64], w: &Window, o: &[i64], mut f: impl FnMut(&[i64])) {
    let mut xi = vec![0i64; x_dims.len()];
    for_each_index(&w.dims, |k| {
        for i in 0..x_dims.len() {
            xi[i] = o[i] * w.strides[i] + k[i] - w.padding[i].0;
            if xi[i] < 0 || xi[i] >= x_dims[i] {
                return;
            }
        }
        f(&xi);
    });
}

pub fn reduce_window(x: &HostTensor, kind: ReduceKind, w: &Window, out: &TensorType) -> HostTensor {
    generate(out, |o| {
        let mut acc = init(kind);
        window_positions(x.dims(), w, o, |xi| acc = combine(kind, acc, x.at(xi)));
        acc
    })
}

/// Each source value goes to the first maximum of its window.
pub fn select_and_scatter_add(src: &HostTensor, x: &HostTensor, w: &Window) -> HostTensor {
    let mut r = HostTensor::full(x.ty.clone(), 0.0);
    for_each_index(src.dims(), |o| {
        let mut best: Option<(f64, usize)> = None;
        window_positions(x.dims(), w, o, |xi| {
            let v = x.at(xi);
            // XLA's select is `current >= candidate`: keep the first maximum.
            let keep = matches!(best, Some((b, _)) if b >= v);
            if !keep {
                best = Some((v, flat(x.dims(), xi)));
            }
        });
        if let Some((_, at)) = best {
            r.data[at] += src.at(o);
        }
    });
    r
}
