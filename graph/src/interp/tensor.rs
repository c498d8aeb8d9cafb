//! Host tensors for the reference interpreter and index helpers.

use crate::types::{DType, TensorType};

/// A host value. Every element is stored as f64: floats are computed in
/// f64 whatever their dtype (a reference for semantics, not rounding);
/// integers are exact and wrap to their width (i64 beyond 2^53 is not).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub ty: TensorType,
    pub data: Vec<f64>,
}

impl HostTensor {
    /// `None` if `data` does not have one value per element.
    pub fn new(ty: TensorType, data: Vec<f64>) -> Option<Self> {
        (data.len() as i64 == ty.shape.num_elements()).then_some(HostTensor { ty, data })
    }

    pub fn f32(dims: &[i64], data: &[f32]) -> Option<Self> {
        Self::new(
            TensorType::f32(dims.to_vec()),
            data.iter().map(|&v| v as f64).collect(),
        )
    }

    pub fn i32(dims: &[i64], data: &[i32]) -> Option<Self> {
        Self::new(
            TensorType::new(DType::I32, dims.to_vec()),
            data.iter().map(|&v| v as f64).collect(),
        )
    }

    pub fn scalar(dtype: DType, v: f64) -> Self {
        HostTensor {
            ty: TensorType::scalar(dtype),
            data: vec![wrap(dtype, v)],
        }
    }

    pub fn full(ty: TensorType, v: f64) -> Self {
        let n = ty.shape.num_elements().max(0) as usize;
        let v = wrap(ty.dtype, v);
        HostTensor {
            ty,
            data: vec![v; n],
        }
    }

    pub fn dims(&self) -> &[i64] {
        self.ty.dims()
    }

    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    /// Value at a multi-index.
    pub fn at(&self, idx: &[i64]) -> f64 {
        self.data[flat(self.dims(), idx)]
    }
}

/// Rounds a value into what `dtype` can hold: integers truncate and wrap,
/// bools become 0/1, floats are kept in f64.
pub fn wrap(dtype: DType, v: f64) -> f64 {
    if dtype.is_float() {
        return v;
    }
    if dtype == DType::Bool {
        return if v != 0.0 { 1.0 } else { 0.0 };
    }
    if v.is_nan() {
        return 0.0;
    }
    wrap_int(dtype, v.trunc() as i128)
}

/// Wraps an exact integer to `dtype`'s width (two's complement, as XLA's
/// integer arithmetic and int -> int converts do).
pub fn wrap_int(dtype: DType, v: i128) -> f64 {
    if dtype == DType::Bool {
        return (v != 0) as i32 as f64;
    }
    if !dtype.is_int() {
        return v as f64;
    }
    let bits = dtype.bits();
    let low = v & ((1i128 << bits) - 1);
    let signed = !dtype.is_unsigned() && low >= 1i128 << (bits - 1);
    (if signed { low - (1i128 << bits) } else { low }) as f64
}

/// One element converted from `from` to `to` the way XLA's `convert` does:
/// float -> int truncates toward zero and saturates to the target range,
/// NaN becomes 0; int -> int wraps; anything -> bool is `v != 0`; floats
/// stay f64 (see [`HostTensor`]).
pub fn convert_value(from: DType, to: DType, v: f64) -> f64 {
    match to.int_range() {
        Some(_) if to == DType::Bool => (v != 0.0) as i32 as f64,
        Some((lo, hi)) if from.is_float() => {
            if v.is_nan() {
                0.0
            } else {
                v.trunc().clamp(lo as f64, hi as f64)
            }
        }
        Some(_) => wrap_int(to, v as i128),
        None => v,
    }
}

/// Row-major strides.
pub fn strides(dims: &[i64]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1].max(0) as usize;
    }
    s
}

pub fn flat(dims: &[i64], idx: &[i64]) -> usize {
    strides(dims)
        .iter()
        .zip(idx)
        .map(|(s, &i)| s * i as usize)
        .sum()
}

/// Calls `f` with every multi-index of `dims` in row-major order.
pub fn for_each_index(dims: &[i64], mut f: impl FnMut(&[i64])) {
    if dims.iter().any(|&d| d <= 0) {
        return;
    }
    let mut idx = vec![0i64; dims.len()];
    loop {
        f(&idx);
        let mut k = dims.len();
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}
