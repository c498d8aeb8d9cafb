//! Stable sort along one dim, with payloads and optional indices.

use super::tensor::{flat, for_each_index, HostTensor};
use crate::types::{DType, TensorType};
use std::cmp::Ordering;

/// Ascending key order: NaN above everything (NaNs equal), -0.0 == 0.0.
fn key_order(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// `xs[0]` are the keys; returns every operand permuted, then the i32
/// source positions when `indices`.
pub fn sort(xs: &[&HostTensor], dim: usize, descending: bool, indices: bool) -> Vec<HostTensor> {
    let keys = xs[0];
    let dims = keys.dims().to_vec();
    let n = dims[dim];
    let mut out: Vec<HostTensor> = xs.iter().map(|t| (*t).clone()).collect();
    let mut idx_out = HostTensor::full(TensorType::new(DType::I32, dims.clone()), 0.0);
    let mut lines = dims.clone();
    lines[dim] = 1;
    let mut perm: Vec<i64> = Vec::with_capacity(n.max(0) as usize);
    let mut at = vec![0i64; dims.len()];
    for_each_index(&lines, |base| {
        at.copy_from_slice(base);
        let pos = |at: &mut [i64], i: i64| {
            at[dim] = i;
            flat(&dims, at)
        };
        perm.clear();
        perm.extend(0..n);
        let key: Vec<f64> = (0..n).map(|i| keys.data[pos(&mut at, i)]).collect();
        // `sort_by` is stable: ties keep their input order either way.
        perm.sort_by(|&i, &j| {
            let (a, b) = (key[i as usize], key[j as usize]);
            if descending {
                key_order(b, a)
            } else {
                key_order(a, b)
            }
        });
        for (j, &src) in perm.iter().enumerate() {
            let (d, s) = (pos(&mut at, j as i64), pos(&mut at, src));
            for (o, x) in out.iter_mut().zip(xs) {
                o.data[d] = x.data[s];
            }
            idx_out.data[d] = src as f64;
        }
    });
    if indices {
        out.push(idx_out);
    }
    out
}
