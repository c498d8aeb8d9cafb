//! rxla's own binding to the PJRT C API: plugins, clients, devices, buffers, executables,
//! and provisioning of plugins.
//!
//! ```no_run
//! let client = runtime::provision::cpu_client(1)?;
//! let x = client.buffer_from_host(&[1.0f32, 2.0], &[2], 0)?;
//! # Ok::<(), runtime::Error>(())
//! ```

mod buffer;
pub mod cache;
mod client;
mod dtype;
mod error;
mod executable;
pub mod ffi;
mod global;
pub mod gpu;
pub mod kv;
mod plugin;
mod proto;
pub mod provision;
mod sharded;
mod topology;

pub use buffer::Buffer;
pub use client::{Client, CreateOptions, Device, DeviceMemoryStats};
pub use dtype::{ElementType, NativeType, TensorSpec};
pub use error::{Error, ErrorCode, Result};
pub use executable::{CompileOptions, Executable, MemoryStats, XlaOption};
pub use global::{GlobalDevices, MeshDevice};
pub use half::{bf16, f16};
pub use kv::{KeyValueStore, KvError};
pub use plugin::{NamedValue, Plugin};
pub use sharded::{ShardLayout, ShardedArray};
pub use topology::{CompiledProgram, Topology, TopologyDevice};
