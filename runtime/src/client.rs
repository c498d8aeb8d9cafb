//! A PJRT client: the plugin's view of a set of devices.

use std::ffi::c_char;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ffi;
use crate::plugin::{str_from, NamedValue, Plugin};

/// Options passed to `PJRT_Client_Create` (e.g. `cpu_device_count` for the CPU plugin).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub options: Vec<(String, NamedValue)>,
    /// The job's key-value store, for a client of a multi-process job.
    pub kv_store: Option<crate::kv::KvStoreOption>,
}

impl CreateOptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(mut self, name: impl Into<String>, value: NamedValue) -> Self {
        self.options.push((name.into(), value));
        self
    }

    /// Hands the plugin a job-wide key-value store (keys get `prefix`, e.g. `"cuda:"`).
    pub fn key_value_store(
        mut self,
        prefix: impl Into<String>,
        store: std::sync::Arc<dyn crate::kv::KeyValueStore>,
    ) -> Self {
        self.kv_store = Some(crate::kv::KvStoreOption {
            prefix: prefix.into(),
            store,
        });
        self
    }

    /// Number of virtual CPU devices (CPU plugin only).
    pub fn cpu_device_count(self, n: usize) -> Self {
        self.set("cpu_device_count", NamedValue::Int64(n as i64))
    }
}

/// One device as the client reports it.
#[derive(Debug, Clone)]
pub struct Device {
    pub(crate) raw: *mut ffi::PJRT_Device,
    pub id: i32,
    pub kind: String,
    pub process_index: i32,
    pub addressable: bool,
}

/// A device's memory: `bytes_in_use` always, the rest where the plugin sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemoryStats {
    pub bytes_in_use: i64,
    pub peak_bytes_in_use: Option<i64>,
    pub num_allocs: Option<i64>,
    pub largest_alloc_size: Option<i64>,
    /// What the allocator may hand out (e.g. `memory_fraction` of a GPU's HBM).
    pub bytes_limit: Option<i64>,
    pub bytes_reserved: Option<i64>,
    pub pool_bytes: Option<i64>,
}

// SAFETY: a device handle is an immutable pointer owned by the client, valid while it lives.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

pub(crate) struct ClientInner {
    pub(crate) plugin: Arc<Plugin>,
    pub(crate) raw: *mut ffi::PJRT_Client,
    pub(crate) platform_name: String,
    pub(crate) platform_version: String,
    pub(crate) process_index: i32,
    pub(crate) devices: Vec<Device>,
    /// Indices into `devices` of the addressable ones, in the client's order.
    pub(crate) addressable: Vec<usize>,
    /// The key-value store the plugin's callbacks reach; freed after the client (Drop order).
    pub(crate) _kv: Option<Box<crate::kv::KvTarget>>,
}

// SAFETY: PJRT clients are thread-safe by contract.
unsafe impl Send for ClientInner {}
unsafe impl Sync for ClientInner {}

impl Drop for ClientInner {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Client_Destroy_Args::new();
        args.client = self.raw;
        let _ = self.plugin.call(&mut args);
    }
}

/// A PJRT client. Cheap to clone; buffers and executables keep it alive.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

impl Client {
    pub fn new(plugin: Arc<Plugin>, options: &CreateOptions) -> Result<Client> {
        // Names and string values must outlive the create call.
        let names: Vec<Vec<u8>> = options
            .options
            .iter()
            .map(|(n, _)| n.as_bytes().to_vec())
            .collect();
        let raw_values: Vec<ffi::PJRT_NamedValue> = options
            .options
            .iter()
            .zip(&names)
            .map(|((_, v), name)| {
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
            .collect();
        let mut args = ffi::PJRT_Client_Create_Args::new();
        args.create_options = raw_values.as_ptr();
        args.num_options = raw_values.len();
        let kv = options.kv_store.as_ref().map(|o| {
            Box::new(crate::kv::KvTarget {
                prefix: o.prefix.clone(),
                store: o.store.clone(),
            })
        });
        if let Some(t) = &kv {
            crate::kv::install(&mut args, t);
        }
        plugin.call(&mut args)?;
        let raw = args.client;

        let mut name = ffi::PJRT_Client_PlatformName_Args::new();
        name.client = raw;
        let mut version = ffi::PJRT_Client_PlatformVersion_Args::new();
        version.client = raw;
        let mut pidx = ffi::PJRT_Client_ProcessIndex_Args::new();
        pidx.client = raw;
        let mut inner = ClientInner {
            plugin: plugin.clone(),
            raw,
            platform_name: String::new(),
            platform_version: String::new(),
            process_index: 0,
            devices: Vec::new(),
            addressable: Vec::new(),
            _kv: kv,
        };
        plugin.call(&mut name)?;
        plugin.call(&mut version)?;
        plugin.call(&mut pidx)?;
        // SAFETY: strings owned by the client, copied now.
        unsafe {
            inner.platform_name = str_from(name.platform_name, name.platform_name_size);
            inner.platform_version =
                str_from(version.platform_version, version.platform_version_size);
        }
        inner.process_index = pidx.process_index;

        let mut devs = ffi::PJRT_Client_Devices_Args::new();
        devs.client = raw;
        plugin.call(&mut devs)?;
        for i in 0..devs.num_devices {
            // SAFETY: the plugin returned `num_devices` device pointers owned by the client.
            let d = unsafe { *devs.devices.add(i) };
            inner.devices.push(describe_device(&plugin, d)?);
        }
        let mut addr = ffi::PJRT_Client_AddressableDevices_Args::new();
        addr.client = raw;
        plugin.call(&mut addr)?;
        for i in 0..addr.num_addressable_devices {
            // SAFETY: as above.
            let d = unsafe { *addr.addressable_devices.add(i) };
            let idx = inner
                .devices
                .iter()
                .position(|x| x.raw == d)
                .ok_or_else(|| {
                    Error::InvalidArgument("addressable device not among client devices".into())
                })?;
            inner.addressable.push(idx);
        }
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.inner.plugin
    }

    pub fn platform_name(&self) -> &str {
        &self.inner.platform_name
    }

    pub fn platform_version(&self) -> &str {
        &self.inner.platform_version
    }

    pub fn process_index(&self) -> i32 {
        self.inner.process_index
    }

    /// All devices, addressable or not.
    pub fn devices(&self) -> &[Device] {
        &self.inner.devices
    }

    /// The devices this process can use, in order; "device index" elsewhere means an index here.
    pub fn addressable_devices(&self) -> Vec<&Device> {
        self.inner
            .addressable
            .iter()
            .map(|&i| &self.inner.devices[i])
            .collect()
    }

    /// Memory of addressable device `index` as the plugin reports it (GPU/TPU allocators;
    /// CPU plugins may not implement it: an error then).
    pub fn device_memory_stats(&self, index: usize) -> Result<DeviceMemoryStats> {
        let d = self.device(index)?;
        let mut a = ffi::PJRT_Device_MemoryStats_Args::new();
        a.device = d.raw;
        self.inner.plugin.call(&mut a)?;
        let opt = |v: i64, set: bool| set.then_some(v);
        Ok(DeviceMemoryStats {
            bytes_in_use: a.bytes_in_use,
            peak_bytes_in_use: opt(a.peak_bytes_in_use, a.peak_bytes_in_use_is_set),
            num_allocs: opt(a.num_allocs, a.num_allocs_is_set),
            largest_alloc_size: opt(a.largest_alloc_size, a.largest_alloc_size_is_set),
            bytes_limit: opt(a.bytes_limit, a.bytes_limit_is_set),
            bytes_reserved: opt(a.bytes_reserved, a.bytes_reserved_is_set),
            pool_bytes: opt(a.pool_bytes, a.pool_bytes_is_set),
        })
    }

    pub(crate) fn device(&self, index: usize) -> Result<&Device> {
        let n = self.inner.addressable.len();
        self.inner
            .addressable
            .get(index)
            .map(|&i| &self.inner.devices[i])
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "device index {index} out of range: the client has {n} addressable device(s)"
                ))
            })
    }

    pub(crate) fn device_index_of(&self, raw: *mut ffi::PJRT_Device) -> Option<usize> {
        self.inner
            .addressable
            .iter()
            .position(|&i| self.inner.devices[i].raw == raw)
    }

    pub(crate) fn plugin_ref(&self) -> &Plugin {
        &self.inner.plugin
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("platform", &self.inner.platform_name)
            .field("devices", &self.inner.devices.len())
            .finish()
    }
}

fn describe_device(plugin: &Plugin, raw: *mut ffi::PJRT_Device) -> Result<Device> {
    let mut desc = ffi::PJRT_Device_GetDescription_Args::new();
    desc.device = raw;
    plugin.call(&mut desc)?;
    let mut id = ffi::PJRT_DeviceDescription_Id_Args::new();
    id.device_description = desc.device_description;
    plugin.call(&mut id)?;
    let mut kind = ffi::PJRT_DeviceDescription_Kind_Args::new();
    kind.device_description = desc.device_description;
    plugin.call(&mut kind)?;
    let mut pidx = ffi::PJRT_DeviceDescription_ProcessIndex_Args::new();
    pidx.device_description = desc.device_description;
    plugin.call(&mut pidx)?;
    let mut addr = ffi::PJRT_Device_IsAddressable_Args::new();
    addr.device = raw;
    plugin.call(&mut addr)?;
    Ok(Device {
        raw,
        id: id.id,
        // SAFETY: string owned by the device description.
        kind: unsafe { str_from(kind.device_kind, kind.device_kind_size) },
        process_index: pidx.process_index,
        addressable: addr.is_addressable,
    })
}
