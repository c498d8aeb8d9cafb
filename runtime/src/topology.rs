//! Ahead-of-time compilation: a plugin's description of a device topology (e.g. a TPU slice
//! that this machine does not have), compiling against it without a client, and the
//! compiled (not loaded) program: memory, FLOPs, serialized bytes for a client to load later.
//!
//! ```no_run
//! # use runtime::*;
//! let plugin = runtime::provision::load_plugin(&runtime::provision::tpu_plugin_path()?)?;
//! let topo = Topology::create(&plugin, "v5e:2x2", &CreateOptions::new())?;
//! let exe = topo.compile("module { .. }", &CompileOptions::spmd(4))?;
//! println!("{:?}", exe.memory_stats()?);
//! # Ok::<(), runtime::Error>(())
//! ```

use std::ffi::c_char;
use std::sync::Arc;

use crate::client::CreateOptions;
use crate::error::{Error, Result};
use crate::executable::{CompileOptions, MemoryStats};
use crate::ffi;
use crate::plugin::{read_named_value, str_from, NamedValue, Plugin};

/// One device of a topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyDevice {
    pub id: i32,
    pub kind: String,
    pub process_index: i32,
}

/// A topology description (`PJRT_TopologyDescription`), owned.
pub struct Topology {
    plugin: Arc<Plugin>,
    raw: *mut ffi::PJRT_TopologyDescription,
    name: String,
    platform_name: String,
    platform_version: String,
    devices: Vec<TopologyDevice>,
}

// SAFETY: topology descriptions are immutable after creation; the C API is thread-safe.
unsafe impl Send for Topology {}
unsafe impl Sync for Topology {}

impl Drop for Topology {
    fn drop(&mut self) {
        let mut a = ffi::PJRT_TopologyDescription_Destroy_Args::new();
        a.topology = self.raw;
        let _ = self.plugin.call(&mut a);
    }
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("name", &self.name)
            .field("platform", &self.platform_name)
            .field("devices", &self.devices.len())
            .finish()
    }
}

/// Named values laid out for the C API; `names` (and the strings in `options`) must outlive
/// the returned array's use.
fn raw_options(options: &[(String, NamedValue)]) -> Vec<ffi::PJRT_NamedValue> {
    options
        .iter()
        .map(|(name, v)| {
            let mut nv = ffi::PJRT_NamedValue::new();
            nv.name = name.as_ptr() as *const c_char;
            nv.name_size = name.len();
            match v {
                NamedValue::String(s) => {
                    nv.type_ = ffi::NAMED_STRING;
                    nv.value.string_value = s.as_ptr() as *const c_char;
                    nv.value_size = s.len();
                }
                NamedValue::Int64(i) => {
                    nv.type_ = ffi::NAMED_INT64;
                    nv.value.int64_value = *i;
                    nv.value_size = 1;
                }
                NamedValue::Int64List(l) => {
                    nv.type_ = ffi::NAMED_INT64_LIST;
                    nv.value.int64_array_value = l.as_ptr();
                    nv.value_size = l.len();
                }
                NamedValue::Float(f) => {
                    nv.type_ = ffi::NAMED_FLOAT;
                    nv.value.float_value = *f;
                    nv.value_size = 1;
                }
                NamedValue::Bool(b) => {
                    nv.type_ = ffi::NAMED_BOOL;
                    nv.value.bool_value = *b;
                    nv.value_size = 1;
                }
            }
            nv
        })
        .collect()
}

impl Topology {
    /// `PJRT_TopologyDescription_Create` with a plugin-specific name (libtpu: `v5e:2x2`,
    /// `v5p:2x2x2`, ...) and create options (libtpu: `chips_per_host_bounds`, `num_slices`).
    pub fn create(plugin: &Arc<Plugin>, name: &str, options: &CreateOptions) -> Result<Topology> {
        let raw_opts = raw_options(&options.options);
        let mut a = ffi::PJRT_TopologyDescription_Create_Args::new();
        a.topology_name = name.as_ptr() as *const c_char;
        a.topology_name_size = name.len();
        a.create_options = raw_opts.as_ptr();
        a.num_options = raw_opts.len();
        plugin.call(&mut a)?;
        if a.topology.is_null() {
            return Err(Error::InvalidArgument(format!(
                "the plugin returned no topology for `{name}`"
            )));
        }
        let mut t = Topology {
            plugin: plugin.clone(),
            raw: a.topology,
            name: name.to_string(),
            platform_name: String::new(),
            platform_version: String::new(),
            devices: Vec::new(),
        };
        let mut pn = ffi::PJRT_TopologyDescription_PlatformName_Args::new();
        pn.topology = t.raw;
        plugin.call(&mut pn)?;
        let mut pv = ffi::PJRT_TopologyDescription_PlatformVersion_Args::new();
        pv.topology = t.raw;
        plugin.call(&mut pv)?;
        // SAFETY: strings owned by the topology, copied now.
        unsafe {
            t.platform_name = str_from(pn.platform_name, pn.platform_name_size);
            t.platform_version = str_from(pv.platform_version, pv.platform_version_size);
        }
        let mut d = ffi::PJRT_TopologyDescription_GetDeviceDescriptions_Args::new();
        d.topology = t.raw;
        plugin.call(&mut d)?;
        for i in 0..d.num_descriptions {
            // SAFETY: `num_descriptions` pointers owned by the topology.
            let desc = unsafe { *d.descriptions.add(i) };
            let mut id = ffi::PJRT_DeviceDescription_Id_Args::new();
            id.device_description = desc;
            plugin.call(&mut id)?;
            let mut kind = ffi::PJRT_DeviceDescription_Kind_Args::new();
            kind.device_description = desc;
            plugin.call(&mut kind)?;
            let mut pidx = ffi::PJRT_DeviceDescription_ProcessIndex_Args::new();
            pidx.device_description = desc;
            plugin.call(&mut pidx)?;
            t.devices.push(TopologyDevice {
                id: id.id,
                // SAFETY: owned by the description.
                kind: unsafe { str_from(kind.device_kind, kind.device_kind_size) },
                process_index: pidx.process_index,
            });
        }
        Ok(t)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn platform_name(&self) -> &str {
        &self.platform_name
    }

    pub fn platform_version(&self) -> &str {
        &self.platform_version
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Every device of the topology, in the plugin's order.
    pub fn devices(&self) -> &[TopologyDevice] {
        &self.devices
    }

    /// Number of hosts (distinct process indices).
    pub fn num_processes(&self) -> usize {
        let mut p: Vec<i32> = self.devices.iter().map(|d| d.process_index).collect();
        p.sort();
        p.dedup();
        p.len()
    }

    /// The plugin's serialized form (stable within a plugin build: fit for cache keys).
    pub fn serialize(&self) -> Result<Vec<u8>> {
        let mut a = ffi::PJRT_TopologyDescription_Serialize_Args::new();
        a.topology = self.raw;
        self.plugin.call(&mut a)?;
        // SAFETY: bytes live until the deleter runs, right after the copy.
        let bytes = unsafe {
            std::slice::from_raw_parts(a.serialized_bytes as *const u8, a.serialized_bytes_size)
                .to_vec()
        };
        if let Some(deleter) = a.serialized_topology_deleter {
            // SAFETY: called once on the object the plugin gave us.
            unsafe { deleter(a.serialized_topology) };
        }
        Ok(bytes)
    }

    /// `PJRT_Compile`: compiles StableHLO for this topology with no client and no devices.
    pub fn compile(&self, mlir: &str, options: &CompileOptions) -> Result<CompiledProgram> {
        let opts = options.to_proto_bytes()?;
        let mut code = mlir.as_bytes().to_vec();
        let format = b"mlir";
        let mut program = ffi::PJRT_Program::new();
        program.code = code.as_mut_ptr() as *mut c_char;
        program.code_size = code.len();
        program.format = format.as_ptr() as *const c_char;
        program.format_size = format.len();
        let mut a = ffi::PJRT_Compile_Args::new();
        a.topology = self.raw;
        a.program = &program;
        a.compile_options = opts.as_ptr() as *const c_char;
        a.compile_options_size = opts.len();
        self.plugin.call(&mut a)?;
        if a.executable.is_null() {
            return Err(Error::InvalidArgument(
                "PJRT_Compile returned no executable".into(),
            ));
        }
        Ok(CompiledProgram {
            plugin: self.plugin.clone(),
            exe: a.executable,
        })
    }
}

/// A program compiled for a topology: not loaded on any device. Serialize it for a client
/// of the same plugin build to load ([`crate::Client::deserialize_executable`]).
pub struct CompiledProgram {
    plugin: Arc<Plugin>,
    exe: *mut ffi::PJRT_Executable,
}

// SAFETY: PJRT executables are thread-safe by contract.
unsafe impl Send for CompiledProgram {}
unsafe impl Sync for CompiledProgram {}

impl Drop for CompiledProgram {
    fn drop(&mut self) {
        let mut e = ffi::PJRT_Executable_Destroy_Args::new();
        e.executable = self.exe;
        let _ = self.plugin.call(&mut e);
    }
}

impl CompiledProgram {
    /// Compiled memory per device.
    pub fn memory_stats(&self) -> Result<MemoryStats> {
        crate::executable::memory_stats_of(&self.plugin, self.exe)
    }

    /// XLA's cost analysis (`flops`, `bytes accessed`, ...).
    pub fn cost_analysis(&self) -> Result<Vec<(String, NamedValue)>> {
        let mut args = ffi::PJRT_Executable_GetCostAnalysis_Args::new();
        args.executable = self.exe;
        self.plugin.call(&mut args)?;
        Ok((0..args.num_properties)
            // SAFETY: `num_properties` values owned by the executable, copied now.
            .map(|i| unsafe { read_named_value(&*args.properties.add(i)) })
            .collect())
    }

    /// The `flops` entry of the cost analysis, if reported.
    pub fn flops(&self) -> Option<f64> {
        crate::executable::flops_of(self.cost_analysis().ok()?)
    }

    /// Plugin-specific bytes (load with the same plugin build).
    pub fn serialize(&self) -> Result<Vec<u8>> {
        crate::executable::serialize_of(&self.plugin, self.exe)
    }
}
