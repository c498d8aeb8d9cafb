//! The few XLA protobuf messages rxla writes or reads, written by hand with prost.
//! Field numbers follow `xla/pjrt/proto/compile_options.proto`, `xla/xla_data.proto` and
//! `xla/service/hlo.proto`; fields we don't use are left out (prost skips unknown fields).

use prost::Message;

use crate::dtype::{ElementType, TensorSpec};

#[derive(Clone, PartialEq, Message)]
pub struct CompileOptionsProto {
    #[prost(message, optional, tag = "3")]
    pub executable_build_options: Option<ExecutableBuildOptionsProto>,
    // Ordered, so equal options encode to equal bytes (the compile cache's key).
    #[prost(btree_map = "string, message", tag = "7")]
    pub env_option_overrides: std::collections::BTreeMap<String, OptionOverrideProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ExecutableBuildOptionsProto {
    #[prost(int64, tag = "1")]
    pub device_ordinal: i64,
    #[prost(int64, tag = "4")]
    pub num_replicas: i64,
    #[prost(int64, tag = "5")]
    pub num_partitions: i64,
    #[prost(bool, tag = "6")]
    pub use_spmd_partitioning: bool,
    #[prost(message, optional, tag = "9")]
    pub device_assignment: Option<DeviceAssignmentProto>,
    #[prost(bool, tag = "19")]
    pub use_shardy_partitioner: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct DeviceAssignmentProto {
    #[prost(int32, tag = "1")]
    pub replica_count: i32,
    #[prost(int32, tag = "2")]
    pub computation_count: i32,
    #[prost(message, repeated, tag = "3")]
    pub computation_devices: Vec<ComputationDevice>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ComputationDevice {
    #[prost(int64, repeated, tag = "1")]
    pub replica_device_ids: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OptionOverrideProto {
    #[prost(oneof = "OptionOverrideValue", tags = "1, 2, 3, 4")]
    pub value: Option<OptionOverrideValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OptionOverrideValue {
    #[prost(string, tag = "1")]
    String(String),
    #[prost(bool, tag = "2")]
    Bool(bool),
    #[prost(int64, tag = "3")]
    Int(i64),
    #[prost(double, tag = "4")]
    Double(f64),
}

/// `HloModuleProtoWithConfig`, the format of `PJRT_Executable_OptimizedProgram`.
#[derive(Clone, PartialEq, Message)]
pub struct HloModuleProtoWithConfig {
    #[prost(message, optional, tag = "1")]
    pub hlo_module: Option<HloModuleProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct HloModuleProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "4")]
    pub host_program_shape: Option<ProgramShapeProto>,
    #[prost(message, optional, tag = "8")]
    pub input_output_alias: Option<HloInputOutputAliasProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProgramShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub parameters: Vec<ShapeProto>,
    #[prost(message, optional, tag = "2")]
    pub result: Option<ShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ShapeProto {
    #[prost(int32, tag = "2")]
    pub element_type: i32,
    #[prost(int64, repeated, tag = "3")]
    pub dimensions: Vec<i64>,
    #[prost(message, repeated, tag = "4")]
    pub tuple_shapes: Vec<ShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct HloInputOutputAliasProto {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<AliasEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AliasEntryProto {
    #[prost(int64, repeated, tag = "1")]
    pub output_shape_index: Vec<i64>,
    #[prost(int64, tag = "2")]
    pub parameter_number: i64,
}

/// XLA's `TUPLE` primitive type.
const TUPLE: i32 = 13;

impl ShapeProto {
    /// The array shapes of a (possibly tuple) shape, flattened in order. `None` for a type rxla
    /// doesn't know.
    pub fn flatten(&self) -> Option<Vec<TensorSpec>> {
        if self.element_type == TUPLE {
            let mut out = Vec::new();
            for s in &self.tuple_shapes {
                out.extend(s.flatten()?);
            }
            Some(out)
        } else {
            Some(vec![TensorSpec {
                element_type: ElementType::from_xla_primitive(self.element_type)?,
                dims: self.dimensions.clone(),
            }])
        }
    }
}

/// What rxla reads from a compiled program: per-device parameter types and donated parameters.
pub(crate) struct ProgramInfo {
    pub parameters: Vec<TensorSpec>,
    pub donated: Vec<usize>,
}

pub(crate) fn program_info(bytes: &[u8]) -> Option<ProgramInfo> {
    let with_config = HloModuleProtoWithConfig::decode(bytes).ok()?;
    let module = with_config.hlo_module?;
    let shape = module.host_program_shape?;
    let mut parameters = Vec::new();
    for p in &shape.parameters {
        let mut flat = p.flatten()?;
        if flat.len() != 1 {
            return None;
        }
        parameters.push(flat.remove(0));
    }
    let mut donated: Vec<usize> = module
        .input_output_alias
        .map(|a| {
            a.entries
                .iter()
                .map(|e| e.parameter_number as usize)
                .collect()
        })
        .unwrap_or_default();
    donated.sort_unstable();
    donated.dedup();
    Some(ProgramInfo {
        parameters,
        donated,
    })
}
