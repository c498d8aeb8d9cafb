//! Element types that cross the host/device boundary.

use half::{bf16, f16};

use crate::ffi::PJRT_Buffer_Type;

/// Element type of a device buffer (a subset of `PJRT_Buffer_Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    Pred,
    S8,
    S16,
    S32,
    S64,
    U8,
    U16,
    U32,
    U64,
    F16,
    F32,
    F64,
    BF16,
}

impl ElementType {
    pub fn size_in_bytes(self) -> usize {
        use ElementType::*;
        match self {
            Pred | S8 | U8 => 1,
            S16 | U16 | F16 | BF16 => 2,
            S32 | U32 | F32 => 4,
            S64 | U64 | F64 => 8,
        }
    }

    pub(crate) fn to_raw(self) -> PJRT_Buffer_Type {
        use ElementType::*;
        match self {
            Pred => 1,
            S8 => 2,
            S16 => 3,
            S32 => 4,
            S64 => 5,
            U8 => 6,
            U16 => 7,
            U32 => 8,
            U64 => 9,
            F16 => 10,
            F32 => 11,
            F64 => 12,
            BF16 => 13,
        }
    }

    pub(crate) fn from_raw(raw: PJRT_Buffer_Type) -> Option<Self> {
        use ElementType::*;
        Some(match raw {
            1 => Pred,
            2 => S8,
            3 => S16,
            4 => S32,
            5 => S64,
            6 => U8,
            7 => U16,
            8 => U32,
            9 => U64,
            10 => F16,
            11 => F32,
            12 => F64,
            13 => BF16,
            _ => return None,
        })
    }

    /// From XLA's `PrimitiveType` enum (xla_data.proto), as found in HLO module protos.
    pub(crate) fn from_xla_primitive(p: i32) -> Option<Self> {
        use ElementType::*;
        Some(match p {
            1 => Pred,
            2 => S8,
            3 => S16,
            4 => S32,
            5 => S64,
            6 => U8,
            7 => U16,
            8 => U32,
            9 => U64,
            10 => F16,
            11 => F32,
            12 => F64,
            16 => BF16,
            _ => return None,
        })
    }

    /// The MLIR spelling (`f32`, `bf16`, `i1`, `ui8`, ...).
    pub fn mlir_name(self) -> &'static str {
        use ElementType::*;
        match self {
            Pred => "i1",
            S8 => "i8",
            S16 => "i16",
            S32 => "i32",
            S64 => "i64",
            U8 => "ui8",
            U16 => "ui16",
            U32 => "ui32",
            U64 => "ui64",
            F16 => "f16",
            F32 => "f32",
            F64 => "f64",
            BF16 => "bf16",
        }
    }
}

impl std::fmt::Display for ElementType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.mlir_name())
    }
}

/// A host scalar type with a device element type. Implemented only for plain-old-data types
/// whose every bit pattern the device may produce is a valid value (`bool` is checked on read).
pub trait NativeType: Copy + Send + Sync + 'static {
    const TYPE: ElementType;
}

macro_rules! native {
    ($($t:ty => $e:ident),*) => { $( impl NativeType for $t { const TYPE: ElementType = ElementType::$e; } )* };
}
native!(f32 => F32, f64 => F64, bf16 => BF16, f16 => F16, i8 => S8, i16 => S16, i32 => S32,
        i64 => S64, u8 => U8, u16 => U16, u32 => U32, u64 => U64, bool => Pred);

/// The shape and element type of an executable's parameter or output (per device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub element_type: ElementType,
    pub dims: Vec<i64>,
}

impl std::fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tensor<")?;
        for d in &self.dims {
            write!(f, "{d}x")?;
        }
        write!(f, "{}>", self.element_type)
    }
}
