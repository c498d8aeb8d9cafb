//! Element types, static shapes and the types nodes carry.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Element type of a tensor. `Bool` is StableHLO's `i1` (XLA's PRED).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    BF16,
    F16,
    F64,
    I32,
    I64,
    I8,
    /// 4-bit integers: device-side only (quantized weights); no host buffer type.
    I4,
    U4,
    U8,
    U32,
    Bool,
}

impl DType {
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::BF16 | DType::F16 | DType::F64)
    }

    /// Signed or unsigned integer (not bool).
    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::I32 | DType::I64 | DType::I8 | DType::I4 | DType::U4 | DType::U8 | DType::U32
        )
    }

    pub fn is_unsigned(self) -> bool {
        matches!(self, DType::U4 | DType::U8 | DType::U32)
    }

    /// Bytes of one element in memory. 4-bit types take a byte each: XLA
    /// CPU stores them unpacked.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::I8 | DType::I4 | DType::U4 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Bits of the value (bool counts as 1, 4-bit types as 4).
    pub fn bits(self) -> u32 {
        match self {
            DType::Bool => 1,
            DType::I4 | DType::U4 => 4,
            other => other.size_bytes() as u32 * 8,
        }
    }

    /// The smallest and largest value of an integer or bool type; `None` for floats.
    pub fn int_range(self) -> Option<(i128, i128)> {
        if self == DType::Bool {
            return Some((0, 1));
        }
        if !self.is_int() {
            return None;
        }
        let b = self.bits();
        Some(if self.is_unsigned() {
            (0, (1i128 << b) - 1)
        } else {
            (-(1i128 << (b - 1)), (1i128 << (b - 1)) - 1)
        })
    }

    /// The MLIR element type spelling (`f32`, `ui32`, `i1`, ...).
    pub fn mlir_name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::I8 => "i8",
            DType::I4 => "i4",
            DType::U4 => "ui4",
            DType::U8 => "ui8",
            DType::U32 => "ui32",
            DType::Bool => "i1",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::I8 => "i8",
            DType::I4 => "i4",
            DType::U4 => "u4",
            DType::U8 => "u8",
            DType::U32 => "u32",
            DType::Bool => "bool",
        };
        f.write_str(s)
    }
}

/// A static shape; `dims` is empty for a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Shape {
    pub dims: Vec<i64>,
}

impl Shape {
    pub fn new(dims: impl Into<Vec<i64>>) -> Self {
        Shape { dims: dims.into() }
    }

    pub fn scalar() -> Self {
        Shape { dims: Vec::new() }
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    pub fn num_elements(&self) -> i64 {
        self.dims.iter().product()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", DimsDisplay(&self.dims))
    }
}

impl From<Vec<i64>> for Shape {
    fn from(dims: Vec<i64>) -> Self {
        Shape { dims }
    }
}

impl From<&[i64]> for Shape {
    fn from(dims: &[i64]) -> Self {
        Shape {
            dims: dims.to_vec(),
        }
    }
}

impl<const N: usize> From<[i64; N]> for Shape {
    fn from(dims: [i64; N]) -> Self {
        Shape {
            dims: dims.to_vec(),
        }
    }
}

/// Formats dims as `[32,784]`, the form used in error messages.
pub struct DimsDisplay<'a>(pub &'a [i64]);

impl fmt::Display for DimsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Element type plus shape of one tensor value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: impl Into<Shape>) -> Self {
        TensorType {
            dtype,
            shape: shape.into(),
        }
    }

    pub fn f32(dims: impl Into<Shape>) -> Self {
        Self::new(DType::F32, dims)
    }

    pub fn scalar(dtype: DType) -> Self {
        Self::new(dtype, Shape::scalar())
    }

    pub fn dims(&self) -> &[i64] {
        &self.shape.dims
    }

    pub fn rank(&self) -> usize {
        self.shape.rank()
    }

    pub fn with_dtype(&self, dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: self.shape.clone(),
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

/// What a node produces: one tensor, or several (scan, optimization barrier).
/// Tuple elements are read with `Op::GetTupleElement`; no other op takes a tuple.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeType {
    Tensor(TensorType),
    Tuple(Vec<TensorType>),
}

impl NodeType {
    pub fn as_tensor(&self) -> Option<&TensorType> {
        match self {
            NodeType::Tensor(t) => Some(t),
            NodeType::Tuple(_) => None,
        }
    }

    /// The element types: one for a tensor, all of a tuple.
    pub fn elements(&self) -> &[TensorType] {
        match self {
            NodeType::Tensor(t) => std::slice::from_ref(t),
            NodeType::Tuple(ts) => ts,
        }
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeType::Tensor(t) => write!(f, "{t}"),
            NodeType::Tuple(ts) => {
                f.write_str("(")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                f.write_str(")")
            }
        }
    }
}
