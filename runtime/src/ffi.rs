//! Hand-written `#[repr(C)]` mirror of the subset of `pjrt_c_api.h` (API 0.81) that rxla calls.
//!
//! Every struct is declared through `pjrt_struct!`, which also records its size and field
//! offsets so that a test can compare them with what a C compiler computes from the header.
//! Newer plugins accept these (smaller or equal) struct sizes: the C API only appends fields.
#![allow(non_camel_case_types, non_snake_case, dead_code)]

use std::ffi::{c_char, c_int, c_void};
use std::mem::{offset_of, size_of};

pub const PJRT_API_MAJOR: i32 = 0;
pub const PJRT_API_MINOR: i32 = 81;

/// Size and field offsets of one bound struct, as Rust lays it out.
#[derive(Debug, Clone)]
pub struct StructLayout {
    pub name: &'static str,
    pub size: usize,
    /// (C field name, offset)
    pub fields: Vec<(&'static str, usize)>,
}

macro_rules! pjrt_struct {
    ($(
        $name:ident {
            $( $(#[c = $cname:literal])? $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {
        $(
            #[repr(C)]
            #[derive(Clone, Copy)]
            pub struct $name {
                $( pub $field: $ty ),*
            }
            #[allow(clippy::new_without_default)]
            impl $name {
                /// A zeroed struct with `struct_size` set, as the C API requires.
                #[allow(clippy::field_reassign_with_default)]
                pub fn new() -> Self {
                    // SAFETY: every field is an integer, float, bool, raw pointer, Option<fn> or
                    // a union of those: all-zero is a valid value for each.
                    let mut s: Self = unsafe { std::mem::zeroed() };
                    s.struct_size = size_of::<Self>();
                    s
                }
                fn layout() -> StructLayout {
                    StructLayout {
                        name: stringify!($name),
                        size: size_of::<Self>(),
                        fields: vec![$( (pjrt_struct!(@cname $field $($cname)?), offset_of!($name, $field)) ),*],
                    }
                }
            }
        )*
        /// Layouts of every bound struct (for the header layout test).
        pub fn layouts() -> Vec<StructLayout> {
            vec![$( $name::layout() ),*, PJRT_Api::layout()]
        }
    };
    (@cname $field:ident $cname:literal) => { $cname };
    (@cname $field:ident) => { stringify!($field) };
}

// Opaque handles.
pub enum PJRT_Error {}
pub enum PJRT_Client {}
pub enum PJRT_Device {}
pub enum PJRT_DeviceDescription {}
pub enum PJRT_Memory {}
pub enum PJRT_Executable {}
pub enum PJRT_LoadedExecutable {}
pub enum PJRT_Buffer {}
pub enum PJRT_Event {}
pub enum PJRT_SerializedExecutable {}
pub enum PJRT_Extension_Base {}
pub enum PJRT_ExecuteContext {}
pub enum PJRT_Buffer_MemoryLayout {}
pub enum PJRT_TopologyDescription {}
pub enum PJRT_SerializedTopology {}

pub type PJRT_Error_Code = c_int;
pub type PJRT_NamedValue_Type = c_int;
pub const NAMED_STRING: PJRT_NamedValue_Type = 0;
pub const NAMED_INT64: PJRT_NamedValue_Type = 1;
pub const NAMED_INT64_LIST: PJRT_NamedValue_Type = 2;
pub const NAMED_FLOAT: PJRT_NamedValue_Type = 3;
pub const NAMED_BOOL: PJRT_NamedValue_Type = 4;

pub type PJRT_Buffer_Type = c_int;
pub type PJRT_HostBufferSemantics = c_int;
pub const HOST_BUFFER_IMMUTABLE_ONLY_DURING_CALL: PJRT_HostBufferSemantics = 0;

pub type KvCallback = Option<unsafe extern "C" fn(*mut c_void) -> *mut PJRT_Error>;
pub type SerializedDeleter = Option<unsafe extern "C" fn(*mut PJRT_SerializedExecutable)>;
pub type SerializedTopologyDeleter = Option<unsafe extern "C" fn(*mut PJRT_SerializedTopology)>;

#[repr(C)]
#[derive(Clone, Copy)]
pub union PJRT_NamedValue_Value {
    pub string_value: *const c_char,
    pub int64_value: i64,
    pub int64_array_value: *const i64,
    pub float_value: f32,
    pub bool_value: bool,
}

pjrt_struct! {
    PJRT_Api_Version {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        major_version: c_int,
        minor_version: c_int,
    }
    PJRT_Error_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        error: *mut PJRT_Error,
    }
    PJRT_Error_Message_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        error: *const PJRT_Error,
        message: *const c_char,
        message_size: usize,
    }
    PJRT_Error_GetCode_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        error: *const PJRT_Error,
        code: PJRT_Error_Code,
    }
    PJRT_NamedValue {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        name: *const c_char,
        name_size: usize,
        #[c = "type"]
        type_: PJRT_NamedValue_Type,
        #[c = "string_value"]
        value: PJRT_NamedValue_Value,
        value_size: usize,
    }
    PJRT_Plugin_Initialize_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
    }
    PJRT_Plugin_Attributes_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        attributes: *const PJRT_NamedValue,
        num_attributes: usize,
    }
    PJRT_Event_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        event: *mut PJRT_Event,
    }
    PJRT_Event_Await_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        event: *mut PJRT_Event,
    }
    PJRT_Client_Create_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        create_options: *const PJRT_NamedValue,
        num_options: usize,
        kv_get_callback: KvCallback,
        kv_get_user_arg: *mut c_void,
        kv_put_callback: KvCallback,
        kv_put_user_arg: *mut c_void,
        client: *mut PJRT_Client,
        kv_try_get_callback: KvCallback,
        kv_try_get_user_arg: *mut c_void,
    }
    PJRT_Client_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
    }
    PJRT_Client_PlatformName_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        platform_name: *const c_char,
        platform_name_size: usize,
    }
    PJRT_Client_ProcessIndex_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        process_index: c_int,
    }
    PJRT_Client_PlatformVersion_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        platform_version: *const c_char,
        platform_version_size: usize,
    }
    PJRT_Client_Devices_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        devices: *const *mut PJRT_Device,
        num_devices: usize,
    }
    PJRT_Client_AddressableDevices_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        addressable_devices: *const *mut PJRT_Device,
        num_addressable_devices: usize,
    }
    PJRT_Program {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        code: *mut c_char,
        code_size: usize,
        format: *const c_char,
        format_size: usize,
    }
    PJRT_Client_Compile_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        program: *const PJRT_Program,
        compile_options: *const c_char,
        compile_options_size: usize,
        executable: *mut PJRT_LoadedExecutable,
    }
    PJRT_Client_BufferFromHostBuffer_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        data: *const c_void,
        #[c = "type"]
        type_: PJRT_Buffer_Type,
        dims: *const i64,
        num_dims: usize,
        byte_strides: *const i64,
        num_byte_strides: usize,
        host_buffer_semantics: PJRT_HostBufferSemantics,
        device: *mut PJRT_Device,
        memory: *mut PJRT_Memory,
        device_layout: *mut PJRT_Buffer_MemoryLayout,
        done_with_host_buffer: *mut PJRT_Event,
        buffer: *mut PJRT_Buffer,
    }
    PJRT_DeviceDescription_Id_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        device_description: *mut PJRT_DeviceDescription,
        id: c_int,
    }
    PJRT_DeviceDescription_ProcessIndex_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        device_description: *mut PJRT_DeviceDescription,
        process_index: c_int,
    }
    PJRT_DeviceDescription_Kind_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        device_description: *mut PJRT_DeviceDescription,
        device_kind: *const c_char,
        device_kind_size: usize,
    }
    PJRT_Device_GetDescription_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        device: *mut PJRT_Device,
        device_description: *mut PJRT_DeviceDescription,
    }
    PJRT_Device_MemoryStats_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        device: *mut PJRT_Device,
        bytes_in_use: i64,
        peak_bytes_in_use: i64,
        peak_bytes_in_use_is_set: bool,
        num_allocs: i64,
        num_allocs_is_set: bool,
        largest_alloc_size: i64,
        largest_alloc_size_is_set: bool,
        bytes_limit: i64,
        bytes_limit_is_set: bool,
        bytes_reserved: i64,
        bytes_reserved_is_set: bool,
        peak_bytes_reserved: i64,
        peak_bytes_reserved_is_set: bool,
        bytes_reservable_limit: i64,
        bytes_reservable_limit_is_set: bool,
        largest_free_block_bytes: i64,
        largest_free_block_bytes_is_set: bool,
        pool_bytes: i64,
        pool_bytes_is_set: bool,
        peak_pool_bytes: i64,
        peak_pool_bytes_is_set: bool,
    }
    PJRT_Device_IsAddressable_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        device: *mut PJRT_Device,
        is_addressable: bool,
    }
    PJRT_Executable_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
    }
    PJRT_LoadedExecutable_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_LoadedExecutable,
    }
    PJRT_LoadedExecutable_GetExecutable_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        loaded_executable: *mut PJRT_LoadedExecutable,
        executable: *mut PJRT_Executable,
    }
    PJRT_Executable_Name_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        executable_name: *const c_char,
        executable_name_size: usize,
    }
    PJRT_Executable_NumReplicas_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        num_replicas: usize,
    }
    PJRT_Executable_NumPartitions_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        num_partitions: usize,
    }
    PJRT_LoadedExecutable_AddressableDevices_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_LoadedExecutable,
        addressable_devices: *const *mut PJRT_Device,
        num_addressable_devices: usize,
    }
    PJRT_Executable_OptimizedProgram_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        program: *mut PJRT_Program,
    }
    PJRT_ExecuteOptions {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        send_callbacks: *mut *mut c_void,
        recv_callbacks: *mut *mut c_void,
        num_send_ops: usize,
        num_recv_ops: usize,
        launch_id: c_int,
        non_donatable_input_indices: *const i64,
        num_non_donatable_input_indices: usize,
        context: *mut PJRT_ExecuteContext,
        call_location: *const c_char,
        num_tasks: usize,
        task_ids: *mut c_int,
        incarnation_ids: *mut i64,
    }
    PJRT_LoadedExecutable_Execute_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_LoadedExecutable,
        options: *mut PJRT_ExecuteOptions,
        argument_lists: *const *const *mut PJRT_Buffer,
        num_devices: usize,
        num_args: usize,
        output_lists: *const *mut *mut PJRT_Buffer,
        device_complete_events: *mut *mut PJRT_Event,
        execute_device: *mut PJRT_Device,
    }
    PJRT_Executable_NumOutputs_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        num_outputs: usize,
    }
    PJRT_Executable_GetCostAnalysis_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        num_properties: usize,
        properties: *const PJRT_NamedValue,
    }
    PJRT_Executable_GetCompiledMemoryStats_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        generated_code_size_in_bytes: i64,
        argument_size_in_bytes: i64,
        output_size_in_bytes: i64,
        alias_size_in_bytes: i64,
        temp_size_in_bytes: i64,
        host_generated_code_size_in_bytes: i64,
        host_argument_size_in_bytes: i64,
        host_output_size_in_bytes: i64,
        host_alias_size_in_bytes: i64,
        host_temp_size_in_bytes: i64,
        peak_memory_in_bytes: i64,
    }
    PJRT_Executable_OutputElementTypes_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        output_types: *mut PJRT_Buffer_Type,
        num_output_types: usize,
    }
    PJRT_Executable_OutputDimensions_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *mut PJRT_Executable,
        num_outputs: usize,
        dims: *const i64,
        dim_sizes: *const usize,
    }
    PJRT_Executable_Serialize_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        executable: *const PJRT_Executable,
        serialized_bytes: *const c_char,
        serialized_bytes_size: usize,
        serialized_executable: *mut PJRT_SerializedExecutable,
        serialized_executable_deleter: SerializedDeleter,
    }
    PJRT_Executable_DeserializeAndLoad_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        client: *mut PJRT_Client,
        serialized_executable: *const c_char,
        serialized_executable_size: usize,
        loaded_executable: *mut PJRT_LoadedExecutable,
        overridden_serialized_compile_options: *const c_char,
        overridden_serialized_compile_options_size: usize,
    }
    PJRT_Buffer_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
    }
    PJRT_Buffer_ElementType_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
        #[c = "type"]
        type_: PJRT_Buffer_Type,
    }
    PJRT_Buffer_Dimensions_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
        dims: *const i64,
        num_dims: usize,
    }
    PJRT_Buffer_ToHostBuffer_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        src: *mut PJRT_Buffer,
        host_layout: *mut PJRT_Buffer_MemoryLayout,
        dst: *mut c_void,
        dst_size: usize,
        event: *mut PJRT_Event,
    }
    PJRT_Buffer_OnDeviceSizeInBytes_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
        on_device_size_in_bytes: usize,
    }
    PJRT_Buffer_Delete_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
    }
    PJRT_Buffer_IsDeleted_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
        is_deleted: bool,
    }
    PJRT_Buffer_CopyToDevice_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
        dst_device: *mut PJRT_Device,
        dst_buffer: *mut PJRT_Buffer,
    }
    PJRT_Buffer_Device_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
        device: *mut PJRT_Device,
    }
    PJRT_Buffer_ReadyEvent_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        buffer: *mut PJRT_Buffer,
        event: *mut PJRT_Event,
    }
    PJRT_TopologyDescription_Create_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        topology_name: *const c_char,
        topology_name_size: usize,
        create_options: *const PJRT_NamedValue,
        num_options: usize,
        topology: *mut PJRT_TopologyDescription,
    }
    PJRT_TopologyDescription_Destroy_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        topology: *mut PJRT_TopologyDescription,
    }
    PJRT_TopologyDescription_PlatformVersion_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        topology: *mut PJRT_TopologyDescription,
        platform_version: *const c_char,
        platform_version_size: usize,
    }
    PJRT_TopologyDescription_PlatformName_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        topology: *const PJRT_TopologyDescription,
        platform_name: *const c_char,
        platform_name_size: usize,
    }
    PJRT_TopologyDescription_GetDeviceDescriptions_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        topology: *const PJRT_TopologyDescription,
        descriptions: *const *mut PJRT_DeviceDescription,
        num_descriptions: usize,
    }
    PJRT_TopologyDescription_Serialize_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        topology: *mut PJRT_TopologyDescription,
        serialized_bytes: *const c_char,
        serialized_bytes_size: usize,
        serialized_topology: *mut PJRT_SerializedTopology,
        serialized_topology_deleter: SerializedTopologyDeleter,
    }
    PJRT_Compile_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        topology: *const PJRT_TopologyDescription,
        program: *const PJRT_Program,
        compile_options: *const c_char,
        compile_options_size: usize,
        client: *mut PJRT_Client,
        executable: *mut PJRT_Executable,
    }
    // The key-value store callbacks a multi-process client is created with (runtime/src/kv.rs).
    PJRT_KeyValueGetCallback_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        key: *const c_char,
        key_size: usize,
        timeout_in_ms: c_int,
        callback_error: CallbackError,
        user_arg: *mut c_void,
        value: *mut c_char,
        value_size: usize,
        value_deleter_callback: ValueDeleter,
    }
    PJRT_KeyValueTryGetCallback_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        key: *const c_char,
        key_size: usize,
        callback_error: CallbackError,
        user_arg: *mut c_void,
        value: *mut c_char,
        value_size: usize,
        value_deleter_callback: ValueDeleter,
    }
    PJRT_KeyValuePutCallback_Args {
        struct_size: usize,
        extension_start: *mut PJRT_Extension_Base,
        key: *const c_char,
        key_size: usize,
        value: *const c_char,
        value_size: usize,
        callback_error: CallbackError,
        user_arg: *mut c_void,
    }
}

/// `PJRT_CallbackError`: makes the plugin's error object for a callback's failure.
pub type CallbackError =
    Option<unsafe extern "C" fn(PJRT_Error_Code, *const c_char, usize) -> *mut PJRT_Error>;
/// Frees a value a get callback returned.
pub type ValueDeleter = Option<unsafe extern "C" fn(*mut c_char)>;

/// Every PJRT function takes a pointer to its args struct and returns an error or null.
pub type PjrtFn = Option<unsafe extern "C" fn(*mut c_void) -> *mut PJRT_Error>;

/// Binds an args struct to the `PJRT_Api` field of the function that takes it, so that
/// `Api::call` can only pass the right struct to the right function.
pub trait PjrtArgs {
    const NAME: &'static str;
    fn func(api: &PJRT_Api) -> PjrtFn;
    /// Byte offset of the function pointer inside `PJRT_Api` (to check a plugin's table is long
    /// enough).
    fn offset() -> usize;
}

macro_rules! pjrt_api {
    ( $( $field:ident $(=> $args:ident)? ),* $(,)? ) => {
        #[repr(C)]
        pub struct PJRT_Api {
            pub struct_size: usize,
            pub extension_start: *mut PJRT_Extension_Base,
            pub pjrt_api_version: PJRT_Api_Version,
            $( pub $field: PjrtFn ),*
        }
        impl PJRT_Api {
            fn layout() -> StructLayout {
                StructLayout {
                    name: "PJRT_Api",
                    size: size_of::<Self>(),
                    fields: vec![
                        ("struct_size", offset_of!(PJRT_Api, struct_size)),
                        ("extension_start", offset_of!(PJRT_Api, extension_start)),
                        ("pjrt_api_version", offset_of!(PJRT_Api, pjrt_api_version)),
                        $( (stringify!($field), offset_of!(PJRT_Api, $field)) ),*
                    ],
                }
            }
        }
        $( $(
            impl PjrtArgs for $args {
                const NAME: &'static str = stringify!($field);
                fn func(api: &PJRT_Api) -> PjrtFn { api.$field }
                fn offset() -> usize { offset_of!(PJRT_Api, $field) }
            }
        )? )*
        /// (name, offset) of every function rxla calls: a plugin must provide all of them
        /// but the [`OPTIONAL_FUNCTIONS`].
        pub fn required_functions() -> Vec<(&'static str, usize)> {
            let mut v = Vec::new();
            $( $( let _ = stringify!($args); v.push((stringify!($field), offset_of!(PJRT_Api, $field))); )? )*
            v.retain(|(n, _)| !OPTIONAL_FUNCTIONS.contains(n));
            v
        }
    };
}

/// Diagnostics rxla calls when present (a plugin without them still loads).
/// Topologies and compiling without a client are for ahead-of-time compilation only.
pub const OPTIONAL_FUNCTIONS: &[&str] = &[
    "PJRT_Device_MemoryStats",
    "PJRT_TopologyDescription_Create",
    "PJRT_TopologyDescription_Destroy",
    "PJRT_TopologyDescription_PlatformName",
    "PJRT_TopologyDescription_PlatformVersion",
    "PJRT_TopologyDescription_GetDeviceDescriptions",
    "PJRT_TopologyDescription_Serialize",
    "PJRT_Compile",
];

pjrt_api! {
    PJRT_Error_Destroy => PJRT_Error_Destroy_Args,
    PJRT_Error_Message => PJRT_Error_Message_Args,
    PJRT_Error_GetCode => PJRT_Error_GetCode_Args,
    PJRT_Plugin_Initialize => PJRT_Plugin_Initialize_Args,
    PJRT_Plugin_Attributes => PJRT_Plugin_Attributes_Args,
    PJRT_Event_Destroy => PJRT_Event_Destroy_Args,
    PJRT_Event_IsReady,
    PJRT_Event_Error,
    PJRT_Event_Await => PJRT_Event_Await_Args,
    PJRT_Event_OnReady,
    PJRT_Client_Create => PJRT_Client_Create_Args,
    PJRT_Client_Destroy => PJRT_Client_Destroy_Args,
    PJRT_Client_PlatformName => PJRT_Client_PlatformName_Args,
    PJRT_Client_ProcessIndex => PJRT_Client_ProcessIndex_Args,
    PJRT_Client_PlatformVersion => PJRT_Client_PlatformVersion_Args,
    PJRT_Client_Devices => PJRT_Client_Devices_Args,
    PJRT_Client_AddressableDevices => PJRT_Client_AddressableDevices_Args,
    PJRT_Client_LookupDevice,
    PJRT_Client_LookupAddressableDevice,
    PJRT_Client_AddressableMemories,
    PJRT_Client_Compile => PJRT_Client_Compile_Args,
    PJRT_Client_DefaultDeviceAssignment,
    PJRT_Client_BufferFromHostBuffer => PJRT_Client_BufferFromHostBuffer_Args,
    PJRT_DeviceDescription_Id => PJRT_DeviceDescription_Id_Args,
    PJRT_DeviceDescription_ProcessIndex => PJRT_DeviceDescription_ProcessIndex_Args,
    PJRT_DeviceDescription_Attributes,
    PJRT_DeviceDescription_Kind => PJRT_DeviceDescription_Kind_Args,
    PJRT_DeviceDescription_DebugString,
    PJRT_DeviceDescription_ToString,
    PJRT_Device_GetDescription => PJRT_Device_GetDescription_Args,
    PJRT_Device_IsAddressable => PJRT_Device_IsAddressable_Args,
    PJRT_Device_LocalHardwareId,
    PJRT_Device_AddressableMemories,
    PJRT_Device_DefaultMemory,
    PJRT_Device_MemoryStats => PJRT_Device_MemoryStats_Args,
    PJRT_Memory_Id,
    PJRT_Memory_Kind,
    PJRT_Memory_DebugString,
    PJRT_Memory_ToString,
    PJRT_Memory_AddressableByDevices,
    PJRT_Executable_Destroy => PJRT_Executable_Destroy_Args,
    PJRT_Executable_Name => PJRT_Executable_Name_Args,
    PJRT_Executable_NumReplicas => PJRT_Executable_NumReplicas_Args,
    PJRT_Executable_NumPartitions => PJRT_Executable_NumPartitions_Args,
    PJRT_Executable_NumOutputs => PJRT_Executable_NumOutputs_Args,
    PJRT_Executable_SizeOfGeneratedCodeInBytes,
    PJRT_Executable_GetCostAnalysis => PJRT_Executable_GetCostAnalysis_Args,
    PJRT_Executable_OutputMemoryKinds,
    PJRT_Executable_OptimizedProgram => PJRT_Executable_OptimizedProgram_Args,
    PJRT_Executable_Serialize => PJRT_Executable_Serialize_Args,
    PJRT_LoadedExecutable_Destroy => PJRT_LoadedExecutable_Destroy_Args,
    PJRT_LoadedExecutable_GetExecutable => PJRT_LoadedExecutable_GetExecutable_Args,
    PJRT_LoadedExecutable_AddressableDevices => PJRT_LoadedExecutable_AddressableDevices_Args,
    PJRT_LoadedExecutable_Delete,
    PJRT_LoadedExecutable_IsDeleted,
    PJRT_LoadedExecutable_Execute => PJRT_LoadedExecutable_Execute_Args,
    PJRT_Executable_DeserializeAndLoad => PJRT_Executable_DeserializeAndLoad_Args,
    PJRT_LoadedExecutable_Fingerprint,
    PJRT_Buffer_Destroy => PJRT_Buffer_Destroy_Args,
    PJRT_Buffer_ElementType => PJRT_Buffer_ElementType_Args,
    PJRT_Buffer_Dimensions => PJRT_Buffer_Dimensions_Args,
    PJRT_Buffer_UnpaddedDimensions,
    PJRT_Buffer_DynamicDimensionIndices,
    PJRT_Buffer_GetMemoryLayout,
    PJRT_Buffer_OnDeviceSizeInBytes => PJRT_Buffer_OnDeviceSizeInBytes_Args,
    PJRT_Buffer_Device => PJRT_Buffer_Device_Args,
    PJRT_Buffer_Memory,
    PJRT_Buffer_Delete => PJRT_Buffer_Delete_Args,
    PJRT_Buffer_IsDeleted => PJRT_Buffer_IsDeleted_Args,
    PJRT_Buffer_CopyToDevice => PJRT_Buffer_CopyToDevice_Args,
    PJRT_Buffer_ToHostBuffer => PJRT_Buffer_ToHostBuffer_Args,
    PJRT_Buffer_IsOnCpu,
    PJRT_Buffer_ReadyEvent => PJRT_Buffer_ReadyEvent_Args,
    PJRT_Buffer_UnsafePointer,
    PJRT_Buffer_IncreaseExternalReferenceCount,
    PJRT_Buffer_DecreaseExternalReferenceCount,
    PJRT_Buffer_OpaqueDeviceMemoryDataPointer,
    PJRT_CopyToDeviceStream_Destroy,
    PJRT_CopyToDeviceStream_AddChunk,
    PJRT_CopyToDeviceStream_TotalBytes,
    PJRT_CopyToDeviceStream_GranuleSize,
    PJRT_CopyToDeviceStream_CurrentBytes,
    PJRT_TopologyDescription_Create => PJRT_TopologyDescription_Create_Args,
    PJRT_TopologyDescription_Destroy => PJRT_TopologyDescription_Destroy_Args,
    PJRT_TopologyDescription_PlatformName => PJRT_TopologyDescription_PlatformName_Args,
    PJRT_TopologyDescription_PlatformVersion => PJRT_TopologyDescription_PlatformVersion_Args,
    PJRT_TopologyDescription_GetDeviceDescriptions => PJRT_TopologyDescription_GetDeviceDescriptions_Args,
    PJRT_TopologyDescription_Serialize => PJRT_TopologyDescription_Serialize_Args,
    PJRT_TopologyDescription_Attributes,
    PJRT_Compile => PJRT_Compile_Args,
    PJRT_Executable_OutputElementTypes => PJRT_Executable_OutputElementTypes_Args,
    PJRT_Executable_OutputDimensions => PJRT_Executable_OutputDimensions_Args,
    PJRT_Buffer_CopyToMemory,
    PJRT_Client_CreateViewOfDeviceBuffer,
    PJRT_Executable_Fingerprint,
    PJRT_Client_TopologyDescription,
    PJRT_Executable_GetCompiledMemoryStats => PJRT_Executable_GetCompiledMemoryStats_Args,
    PJRT_Memory_Kind_Id,
    PJRT_ExecuteContext_Create,
    PJRT_ExecuteContext_Destroy,
    PJRT_Buffer_CopyRawToHost,
    PJRT_AsyncHostToDeviceTransferManager_Destroy,
    PJRT_AsyncHostToDeviceTransferManager_TransferData,
    PJRT_Client_CreateBuffersForAsyncHostToDevice,
    PJRT_AsyncHostToDeviceTransferManager_RetrieveBuffer,
    PJRT_AsyncHostToDeviceTransferManager_Device,
    PJRT_AsyncHostToDeviceTransferManager_BufferCount,
    PJRT_AsyncHostToDeviceTransferManager_BufferSize,
    PJRT_AsyncHostToDeviceTransferManager_SetBufferError,
    PJRT_AsyncHostToDeviceTransferManager_AddMetadata,
    PJRT_Client_DmaMap,
    PJRT_Client_DmaUnmap,
    PJRT_Client_CreateUninitializedBuffer,
    PJRT_Client_UpdateGlobalProcessInfo,
    PJRT_TopologyDescription_Deserialize,
    PJRT_Client_CreateAliasBuffer,
    PJRT_Client_FulfillAliasBuffer,
    PJRT_LoadedExecutable_GetDeviceAssignment,
}
