//! Compiling StableHLO, executing on one or many devices, serializing executables.

use std::ffi::c_char;

use prost::Message;

use crate::buffer::Buffer;
use crate::client::Client;
use crate::dtype::{ElementType, TensorSpec};
use crate::error::{Error, Result};
use crate::ffi;
use crate::proto;

/// Options for compiling one program (encoded as XLA's `CompileOptionsProto`).
#[derive(Debug, Clone)]
pub struct CompileOptions {
    pub num_replicas: usize,
    pub num_partitions: usize,
    pub use_spmd_partitioning: bool,
    pub use_shardy_partitioner: bool,
    /// Device ids, `[replica][partition]`; `None` lets the plugin choose.
    pub device_assignment: Option<Vec<Vec<i64>>>,
    /// XLA debug options for this program only (`env_option_overrides`), e.g.
    /// `("xla_cpu_multi_thread_eigen", XlaOption::Bool(false))`.
    pub xla_options: Vec<(String, XlaOption)>,
}

/// The value of one XLA debug option override.
#[derive(Debug, Clone, PartialEq)]
pub enum XlaOption {
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            num_replicas: 1,
            num_partitions: 1,
            use_spmd_partitioning: false,
            use_shardy_partitioner: false,
            device_assignment: None,
            xla_options: Vec::new(),
        }
    }
}

impl CompileOptions {
    /// One replica, `n` SPMD partitions (GSPMD, `mhlo.sharding` annotations).
    pub fn spmd(n: usize) -> Self {
        CompileOptions {
            num_partitions: n,
            use_spmd_partitioning: n > 1,
            ..Default::default()
        }
    }

    /// The serialized `CompileOptionsProto`.
    pub fn to_proto_bytes(&self) -> Result<Vec<u8>> {
        let device_assignment = match &self.device_assignment {
            None => None,
            Some(rows) => {
                if rows.len() != self.num_replicas
                    || rows.iter().any(|r| r.len() != self.num_partitions)
                {
                    return Err(Error::InvalidArgument(format!(
                        "device assignment must be {} replica row(s) of {} partition(s), got {rows:?}",
                        self.num_replicas, self.num_partitions
                    )));
                }
                Some(proto::DeviceAssignmentProto {
                    replica_count: self.num_replicas as i32,
                    computation_count: self.num_partitions as i32,
                    computation_devices: (0..self.num_partitions)
                        .map(|p| proto::ComputationDevice {
                            replica_device_ids: rows.iter().map(|r| r[p]).collect(),
                        })
                        .collect(),
                })
            }
        };
        let msg = proto::CompileOptionsProto {
            executable_build_options: Some(proto::ExecutableBuildOptionsProto {
                device_ordinal: -1,
                num_replicas: self.num_replicas as i64,
                num_partitions: self.num_partitions as i64,
                use_spmd_partitioning: self.use_spmd_partitioning,
                device_assignment,
                use_shardy_partitioner: self.use_shardy_partitioner,
            }),
            env_option_overrides: self
                .xla_options
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        XlaOption::Bool(b) => proto::OptionOverrideValue::Bool(*b),
                        XlaOption::Int(i) => proto::OptionOverrideValue::Int(*i),
                        XlaOption::Double(d) => proto::OptionOverrideValue::Double(*d),
                        XlaOption::Str(s) => proto::OptionOverrideValue::String(s.clone()),
                    };
                    (k.clone(), proto::OptionOverrideProto { value: Some(value) })
                })
                .collect(),
        };
        Ok(msg.encode_to_vec())
    }
}

/// Compiled memory footprint of an executable, per device (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub generated_code_bytes: i64,
    pub argument_bytes: i64,
    pub output_bytes: i64,
    pub alias_bytes: i64,
    pub temp_bytes: i64,
}

/// A compiled, loaded program.
pub struct Executable {
    client: Client,
    loaded: *mut ffi::PJRT_LoadedExecutable,
    exe: *mut ffi::PJRT_Executable,
    name: String,
    /// Addressable device indices the program runs on, in execution order.
    devices: Vec<usize>,
    parameters: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    donated: Vec<usize>,
    num_replicas: usize,
    num_partitions: usize,
}

// SAFETY: PJRT executables are thread-safe by contract.
unsafe impl Send for Executable {}
unsafe impl Sync for Executable {}

impl Drop for Executable {
    fn drop(&mut self) {
        let plugin = self.client.plugin_ref();
        let mut e = ffi::PJRT_Executable_Destroy_Args::new();
        e.executable = self.exe;
        let _ = plugin.call(&mut e);
        let mut l = ffi::PJRT_LoadedExecutable_Destroy_Args::new();
        l.executable = self.loaded;
        let _ = plugin.call(&mut l);
    }
}

impl std::fmt::Debug for Executable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executable")
            .field("name", &self.name)
            .field("devices", &self.devices)
            .field("parameters", &self.parameters)
            .field("outputs", &self.outputs)
            .finish()
    }
}

impl Client {
    /// Compiles a StableHLO (MLIR text or bytecode) module.
    pub fn compile(&self, mlir: &str, options: &CompileOptions) -> Result<Executable> {
        let opts = options.to_proto_bytes()?;
        let mut code = mlir.as_bytes().to_vec();
        let format = b"mlir";
        let mut program = ffi::PJRT_Program::new();
        program.code = code.as_mut_ptr() as *mut c_char;
        program.code_size = code.len();
        program.format = format.as_ptr() as *const c_char;
        program.format_size = format.len();
        let mut args = ffi::PJRT_Client_Compile_Args::new();
        args.client = self.inner.raw;
        args.program = &program;
        args.compile_options = opts.as_ptr() as *const c_char;
        args.compile_options_size = opts.len();
        self.plugin_ref().call(&mut args)?;
        Executable::wrap(self.clone(), args.executable)
    }

    /// Loads an executable produced by [`Executable::serialize`] with the same plugin build.
    pub fn deserialize_executable(&self, bytes: &[u8]) -> Result<Executable> {
        let mut args = ffi::PJRT_Executable_DeserializeAndLoad_Args::new();
        args.client = self.inner.raw;
        args.serialized_executable = bytes.as_ptr() as *const c_char;
        args.serialized_executable_size = bytes.len();
        self.plugin_ref().call(&mut args)?;
        Executable::wrap(self.clone(), args.loaded_executable)
    }
}

impl Executable {
    fn wrap(client: Client, loaded: *mut ffi::PJRT_LoadedExecutable) -> Result<Executable> {
        let plugin = client.plugin_ref();
        let mut get = ffi::PJRT_LoadedExecutable_GetExecutable_Args::new();
        get.loaded_executable = loaded;
        if let Err(e) = plugin.call(&mut get) {
            let mut l = ffi::PJRT_LoadedExecutable_Destroy_Args::new();
            l.executable = loaded;
            let _ = plugin.call(&mut l);
            return Err(e);
        }
        // From here on `Drop` frees both handles.
        let mut exe = Executable {
            client: client.clone(),
            loaded,
            exe: get.executable,
            name: String::new(),
            devices: Vec::new(),
            parameters: Vec::new(),
            outputs: Vec::new(),
            donated: Vec::new(),
            num_replicas: 1,
            num_partitions: 1,
        };
        let mut name = ffi::PJRT_Executable_Name_Args::new();
        name.executable = exe.exe;
        plugin.call(&mut name)?;
        // SAFETY: string owned by the executable.
        exe.name =
            unsafe { crate::plugin::str_from(name.executable_name, name.executable_name_size) };
        let mut nr = ffi::PJRT_Executable_NumReplicas_Args::new();
        nr.executable = exe.exe;
        plugin.call(&mut nr)?;
        let mut np = ffi::PJRT_Executable_NumPartitions_Args::new();
        np.executable = exe.exe;
        plugin.call(&mut np)?;
        exe.num_replicas = nr.num_replicas;
        exe.num_partitions = np.num_partitions;

        let mut devs = ffi::PJRT_LoadedExecutable_AddressableDevices_Args::new();
        devs.executable = loaded;
        plugin.call(&mut devs)?;
        for i in 0..devs.num_addressable_devices {
            // SAFETY: `num_addressable_devices` pointers owned by the executable.
            let d = unsafe { *devs.addressable_devices.add(i) };
            exe.devices.push(client.device_index_of(d).ok_or_else(|| {
                Error::InvalidArgument("executable device is not addressable".into())
            })?);
        }
        exe.outputs = exe.read_outputs()?;
        let info = exe.optimized_program().and_then(|b| {
            proto::program_info(&b).ok_or_else(|| {
                Error::InvalidArgument("cannot read the compiled program's signature".into())
            })
        })?;
        exe.parameters = info.parameters;
        exe.donated = info.donated;
        Ok(exe)
    }

    fn read_outputs(&self) -> Result<Vec<TensorSpec>> {
        let plugin = self.client.plugin_ref();
        let mut types = ffi::PJRT_Executable_OutputElementTypes_Args::new();
        types.executable = self.exe;
        plugin.call(&mut types)?;
        let mut dims = ffi::PJRT_Executable_OutputDimensions_Args::new();
        dims.executable = self.exe;
        plugin.call(&mut dims)?;
        let n = types.num_output_types;
        if dims.num_outputs != n {
            return Err(Error::InvalidArgument(format!(
                "plugin reports {n} output types but {} output shapes",
                dims.num_outputs
            )));
        }
        let mut out = Vec::with_capacity(n);
        let mut offset = 0usize;
        for i in 0..n {
            // SAFETY: arrays of `n` entries (and sum(dim_sizes) dims) owned by the executable.
            let (raw_ty, rank) = unsafe { (*types.output_types.add(i), *dims.dim_sizes.add(i)) };
            let d = if rank == 0 {
                Vec::new()
            } else {
                unsafe { std::slice::from_raw_parts(dims.dims.add(offset), rank).to_vec() }
            };
            offset += rank;
            let element_type = ElementType::from_raw(raw_ty).ok_or_else(|| {
                Error::InvalidArgument(format!("output {i} has unsupported element type {raw_ty}"))
            })?;
            out.push(TensorSpec {
                element_type,
                dims: d,
            });
        }
        Ok(out)
    }

    /// The optimized HLO module (`HloModuleProtoWithConfig` bytes).
    pub fn optimized_program(&self) -> Result<Vec<u8>> {
        let plugin = self.client.plugin_ref();
        let mut program = ffi::PJRT_Program::new();
        let mut args = ffi::PJRT_Executable_OptimizedProgram_Args::new();
        args.executable = self.exe;
        args.program = &mut program;
        plugin.call(&mut args)?;
        let mut code = vec![0u8; program.code_size];
        program.code = code.as_mut_ptr() as *mut c_char;
        args.program = &mut program;
        plugin.call(&mut args)?;
        Ok(code)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn num_replicas(&self) -> usize {
        self.num_replicas
    }

    pub fn num_partitions(&self) -> usize {
        self.num_partitions
    }

    /// Addressable device indices the program runs on, in the order `execute` expects.
    pub fn devices(&self) -> &[usize] {
        &self.devices
    }

    /// Per-device parameter types.
    pub fn parameters(&self) -> &[TensorSpec] {
        &self.parameters
    }

    /// Per-device output types.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// Parameters whose buffers the program takes over (donation).
    pub fn donated_parameters(&self) -> &[usize] {
        &self.donated
    }

    pub fn memory_stats(&self) -> Result<MemoryStats> {
        memory_stats_of(self.client.plugin_ref(), self.exe)
    }

    /// XLA's cost analysis of the compiled program (e.g. `flops`, `bytes accessed`).
    pub fn cost_analysis(&self) -> Result<Vec<(String, crate::NamedValue)>> {
        let mut args = ffi::PJRT_Executable_GetCostAnalysis_Args::new();
        args.executable = self.exe;
        self.client.plugin_ref().call(&mut args)?;
        Ok((0..args.num_properties)
            // SAFETY: `num_properties` values owned by the executable, copied now.
            .map(|i| unsafe { crate::plugin::read_named_value(&*args.properties.add(i)) })
            .collect())
    }

    /// The `flops` entry of the cost analysis, if the plugin reports it.
    pub fn flops(&self) -> Option<f64> {
        flops_of(self.cost_analysis().ok()?)
    }

    /// Plugin-specific bytes; they load only into the same plugin build.
    pub fn serialize(&self) -> Result<Vec<u8>> {
        serialize_of(self.client.plugin_ref(), self.exe)
    }

    /// Runs on a single device.
    pub fn execute1(&self, args: &[&Buffer]) -> Result<Vec<Buffer>> {
        let mut out = self.execute(&[args.to_vec()])?;
        Ok(out.remove(0))
    }

    /// Runs on every device of the program: `args[d]` are the arguments for `devices()[d]`;
    /// returns the outputs per device. Arguments are checked against the compiled signature
    /// first, since the plugin would reinterpret a same-size buffer of another type.
    pub fn execute(&self, args: &[Vec<&Buffer>]) -> Result<Vec<Vec<Buffer>>> {
        if args.len() != self.devices.len() {
            return Err(Error::InvalidArgument(format!(
                "executable `{}` runs on {} device(s) but arguments for {} were given",
                self.name,
                self.devices.len(),
                args.len()
            )));
        }
        for (d, dev_args) in args.iter().enumerate() {
            self.check_args(d, dev_args)?;
        }
        let arg_ptrs: Vec<Vec<*mut ffi::PJRT_Buffer>> = args
            .iter()
            .map(|a| a.iter().map(|b| b.raw).collect())
            .collect();
        let arg_lists: Vec<*const *mut ffi::PJRT_Buffer> =
            arg_ptrs.iter().map(|a| a.as_ptr()).collect();
        let n_out = self.outputs.len();
        let mut out_ptrs: Vec<Vec<*mut ffi::PJRT_Buffer>> =
            vec![vec![std::ptr::null_mut(); n_out]; args.len()];
        let out_lists: Vec<*mut *mut ffi::PJRT_Buffer> =
            out_ptrs.iter_mut().map(|o| o.as_mut_ptr()).collect();
        let mut events: Vec<*mut ffi::PJRT_Event> = vec![std::ptr::null_mut(); args.len()];
        let mut options = ffi::PJRT_ExecuteOptions::new();
        let mut exec = ffi::PJRT_LoadedExecutable_Execute_Args::new();
        exec.executable = self.loaded;
        exec.options = &mut options;
        exec.argument_lists = arg_lists.as_ptr();
        exec.num_devices = args.len();
        exec.num_args = self.parameters.len();
        exec.output_lists = out_lists.as_ptr();
        exec.device_complete_events = events.as_mut_ptr();
        let result = self.client.plugin_ref().call(&mut exec);
        // Wrap outputs first so they are freed on every path.
        let mut outputs = Vec::with_capacity(args.len());
        let mut wrap_err = None;
        for per_dev in &out_ptrs {
            let mut v = Vec::with_capacity(n_out);
            for &raw in per_dev {
                if raw.is_null() {
                    continue;
                }
                match Buffer::from_plugin(self.client.clone(), raw) {
                    Ok(b) => v.push(b),
                    Err(e) => wrap_err = Some(e),
                }
            }
            outputs.push(v);
        }
        result?;
        for &d in &self.donated {
            for dev_args in args {
                dev_args[d].mark_donated();
            }
        }
        let mut first_err = wrap_err;
        for ev in events {
            if let Err(e) = self.client.await_event(ev) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(outputs),
        }
    }

    fn check_args(&self, d: usize, args: &[&Buffer]) -> Result<()> {
        let want = &self.parameters;
        if args.len() != want.len() {
            return Err(Error::InvalidArgument(format!(
                "executable `{}` takes {} argument(s) but {} were given",
                self.name,
                want.len(),
                args.len()
            )));
        }
        for (i, (b, spec)) in args.iter().zip(want).enumerate() {
            b.check_live().map_err(|e| {
                Error::InvalidArgument(format!("argument {i} of `{}`: {e}", self.name))
            })?;
            if b.spec() != spec {
                return Err(Error::InvalidArgument(format!(
                    "argument {i} of `{}` is {} but the program expects {spec}",
                    self.name,
                    b.spec()
                )));
            }
            let on = b.device()?;
            if on != self.devices[d] {
                return Err(Error::InvalidArgument(format!(
                    "argument {i} of `{}` for device {} lives on device {on}",
                    self.name, self.devices[d]
                )));
            }
        }
        Ok(())
    }
}

pub(crate) fn memory_stats_of(
    plugin: &crate::plugin::Plugin,
    exe: *mut ffi::PJRT_Executable,
) -> Result<MemoryStats> {
    let mut args = ffi::PJRT_Executable_GetCompiledMemoryStats_Args::new();
    args.executable = exe;
    plugin.call(&mut args)?;
    Ok(MemoryStats {
        generated_code_bytes: args.generated_code_size_in_bytes,
        argument_bytes: args.argument_size_in_bytes,
        output_bytes: args.output_size_in_bytes,
        alias_bytes: args.alias_size_in_bytes,
        temp_bytes: args.temp_size_in_bytes,
    })
}

pub(crate) fn flops_of(costs: Vec<(String, crate::NamedValue)>) -> Option<f64> {
    costs.into_iter().find_map(|(k, v)| match (k.as_str(), v) {
        ("flops", crate::NamedValue::Float(f)) => Some(f as f64),
        ("flops", crate::NamedValue::Int64(i)) => Some(i as f64),
        _ => None,
    })
}

pub(crate) fn serialize_of(
    plugin: &crate::plugin::Plugin,
    exe: *mut ffi::PJRT_Executable,
) -> Result<Vec<u8>> {
    let mut args = ffi::PJRT_Executable_Serialize_Args::new();
    args.executable = exe;
    plugin.call(&mut args)?;
    // SAFETY: bytes live until the deleter runs, right after the copy.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            args.serialized_bytes as *const u8,
            args.serialized_bytes_size,
        )
        .to_vec()
    };
    if let Some(deleter) = args.serialized_executable_deleter {
        // SAFETY: called exactly once on the object the plugin gave us.
        unsafe { deleter(args.serialized_executable) };
    }
    Ok(bytes)
}
