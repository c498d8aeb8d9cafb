//! dot_general and convolution, as naive loops.

use super::shape::generate;
use super::tensor::{for_each_index, wrap, HostTensor};
use crate::op::{ConvParams, DotDims};
use crate::ops::common::remaining;
use crate::types::TensorType;

pub fn dot_general(l: &HostTensor, r: &HostTensor, d: &DotDims, out: &TensorType) -> HostTensor {
    let lf = remaining(l.dims().len(), &[&d.lhs_batch, &d.lhs_contract]);
    let rf = remaining(r.dims().len(), &[&d.rhs_batch, &d.rhs_contract]);
    let csizes: Vec<i64> = d.lhs_contract.iter().map(|&i| l.dims()[i]).collect();
    let nb = d.lhs_batch.len();
    let mut li = vec![0i64; l.dims().len()];
    let mut ri = vec![0i64; r.dims().len()];
    generate(out, |idx| {
        for (k, (&a, &b)) in d.lhs_batch.iter().zip(&d.rhs_batch).enumerate() {
            li[a] = idx[k];
            ri[b] = idx[k];
        }
        for (k, &a) in lf.iter().enumerate() {
            li[a] = idx[nb + k];
        }
        for (k, &b) in rf.iter().enumerate() {
            ri[b] = idx[nb + lf.len() + k];
        }
        let mut acc = 0.0;
        for_each_index(&csizes, |c| {
            for (k, (&a, &b)) in d.lhs_contract.iter().zip(&d.rhs_contract).enumerate() {
                li[a] = c[k];
                ri[b] = c[k];
            }
            acc += l.at(&li) * r.at(&ri);
        });
        if csizes.is_empty() {
            acc = l.at(&li) * r.at(&ri);
        }
        // Integer dots wrap to the result width (i8 x i8 -> i32 never does).
        wrap(out.dtype, acc)
    })
}

pub fn conv(x: &HostTensor, k: &HostTensor, p: &ConvParams, out: &TensorType) -> HostTensor {
    let d = &p.dims;
    let n = d.input_spatial.len();
    let ksizes: Vec<i64> = d.kernel_spatial.iter().map(|&i| k.dims()[i]).collect();
    let cin = x.dims()[d.input_feature];
    let mut xi = vec![0i64; n + 2];
    let mut ki = vec![0i64; n + 2];
    generate(out, |o| {
        xi[d.input_batch] = o[d.output_batch];
        ki[d.kernel_output_feature] = o[d.output_feature];
        let mut acc = 0.0;
        for_each_index(&ksizes, |kw| {
            for i in 0..n {
                // Position in the dilated input, then back to a real row.
                let q = o[d.output_spatial[i]] * p.window_strides[i] + kw[i] * p.rhs_dilation[i]
                    - p.padding[i].0;
                let ld = p.lhs_dilation[i];
                let size = x.dims()[d.input_spatial[i]];
                if q < 0 || q % ld != 0 || q / ld >= size {
                    return;
                }
                xi[d.input_spatial[i]] = q / ld;
                ki[d.kernel_spatial[i]] = kw[i];
            }
            for c in 0..cin {
                xi[d.input_feature] = c;
                ki[d.kernel_input_feature] = c;
                acc += x.at(&xi) * k.at(&ki);
            }
        });
        acc
    })
}
