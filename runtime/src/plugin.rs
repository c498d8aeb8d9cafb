//! Loading a PJRT plugin (`.so` exporting `GetPjrtApi`) and calling through its function table.

use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, ErrorCode, Result};
use crate::ffi::{self, PJRT_Api, PJRT_Error, PjrtArgs};

/// A value of a plugin attribute or a client create option.
#[derive(Debug, Clone, PartialEq)]
pub enum NamedValue {
    String(String),
    Int64(i64),
    Int64List(Vec<i64>),
    Float(f32),
    Bool(bool),
}

impl std::fmt::Display for NamedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamedValue::String(s) => write!(f, "{s}"),
            NamedValue::Int64(v) => write!(f, "{v}"),
            NamedValue::Int64List(v) => write!(f, "{v:?}"),
            NamedValue::Float(v) => write!(f, "{v}"),
            NamedValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

/// A loaded PJRT plugin. Kept alive (behind `Arc`) by every client created from it.
pub struct Plugin {
    api: *const PJRT_Api,
    path: PathBuf,
    version: (i32, i32),
    attributes: Vec<(String, NamedValue)>,
    // Dropped last; the plugin is never unloaded while a pointer into it lives.
    _lib: libloading::Library,
}

// SAFETY: the PJRT C API is thread-safe; `api` points into the loaded library, which lives as
// long as `self`.
unsafe impl Send for Plugin {}
unsafe impl Sync for Plugin {}

static LOAD_LOCK: Mutex<()> = Mutex::new(());

const INSTALL_HINT: &str = "install a current plugin: for CPU remove RXLA_PJRT_PLUGIN to use the \
     pinned default (pip package lammps-jax-pjrt-cpu==0.11.2), for CUDA `pip install -U \
     jax-cuda12-pjrt`, for TPU `pip install -U libtpu`";

impl Plugin {
    /// Loads the plugin at `path`, checks its API version and function table, and initializes it.
    pub fn load(path: impl AsRef<Path>) -> Result<Arc<Plugin>> {
        let path = path.as_ref().to_path_buf();
        let _guard = LOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // The plugin reads this when loaded; silence its logs unless the user chose a level.
        if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
            std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "2");
        }
        let load_err = |reason: String| Error::PluginLoad {
            path: path.clone(),
            reason,
        };
        if !path.is_file() {
            return Err(load_err("no such file".into()));
        }
        // SAFETY: loading a shared library runs its initializers; that is what a plugin is for.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| {
            load_err(format!(
                "not a loadable shared library ({e}); point RXLA_PJRT_PLUGIN at a PJRT plugin .so"
            ))
        })?;
        // SAFETY: `GetPjrtApi` has signature `const PJRT_Api* GetPjrtApi()` in every plugin.
        let get_api: libloading::Symbol<unsafe extern "C" fn() -> *const PJRT_Api> = unsafe {
            lib.get(b"GetPjrtApi\0")
        }
        .map_err(|_| {
            load_err("the library does not export GetPjrtApi, so it is not a PJRT plugin".into())
        })?;
        let api = unsafe { get_api() };
        if api.is_null() {
            return Err(load_err("GetPjrtApi returned null".into()));
        }
        // SAFETY: non-null pointer to the plugin's static table; we only read the header first.
        let (struct_size, major, minor) = unsafe {
            (
                (*api).struct_size,
                (*api).pjrt_api_version.major_version,
                (*api).pjrt_api_version.minor_version,
            )
        };
        if major != ffi::PJRT_API_MAJOR {
            return Err(Error::PluginVersion {
                path,
                major,
                minor,
                want_major: ffi::PJRT_API_MAJOR,
                want_minor: ffi::PJRT_API_MINOR,
                hint: INSTALL_HINT.into(),
            });
        }
        for (name, offset) in ffi::required_functions() {
            let present = offset + std::mem::size_of::<ffi::PjrtFn>() <= struct_size
                // SAFETY: the offset lies inside the plugin's table (checked just above).
                && unsafe { *((api as *const u8).add(offset) as *const ffi::PjrtFn) }.is_some();
            if !present {
                return Err(Error::PluginMissingFunction {
                    path,
                    function: name,
                    major,
                    minor,
                    hint: INSTALL_HINT.into(),
                });
            }
        }
        let mut plugin = Plugin {
            api,
            path,
            version: (major, minor),
            attributes: Vec::new(),
            _lib: lib,
        };
        let mut init = ffi::PJRT_Plugin_Initialize_Args::new();
        plugin.call(&mut init)?;
        let mut attrs = ffi::PJRT_Plugin_Attributes_Args::new();
        plugin.call(&mut attrs)?;
        plugin.attributes = (0..attrs.num_attributes)
            // SAFETY: the plugin returned `num_attributes` values that live for the process.
            .map(|i| unsafe { read_named_value(&*attrs.attributes.add(i)) })
            .collect();
        Ok(Arc::new(plugin))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// PJRT C API version (major, minor) the plugin implements.
    pub fn api_version(&self) -> (i32, i32) {
        self.version
    }

    /// Attributes the plugin reports (e.g. `xla_version`, `stablehlo_current_version`).
    pub fn attributes(&self) -> &[(String, NamedValue)] {
        &self.attributes
    }

    pub(crate) fn api(&self) -> &PJRT_Api {
        // SAFETY: valid for the library's lifetime, which is ours.
        unsafe { &*self.api }
    }

    /// Calls the PJRT function that takes `A`, turning a returned error into `Error::Pjrt`.
    pub(crate) fn call<A: PjrtArgs>(&self, args: &mut A) -> Result<()> {
        let f = A::func(self.api())
            .ok_or_else(|| Error::InvalidArgument(format!("plugin lacks {}", A::NAME)))?;
        // SAFETY: `A` is the args struct of exactly this function (bound by `pjrt_api!`), with
        // `struct_size` set, and its pointers are valid for the call (caller's duty).
        let err = unsafe { f(args as *mut A as *mut std::ffi::c_void) };
        self.check(err, A::NAME)
    }

    /// Converts (and frees) a PJRT error pointer.
    pub(crate) fn check(&self, err: *mut PJRT_Error, function: &'static str) -> Result<()> {
        if err.is_null() {
            return Ok(());
        }
        let mut msg = ffi::PJRT_Error_Message_Args::new();
        msg.error = err;
        let mut code = ffi::PJRT_Error_GetCode_Args::new();
        code.error = err;
        let api = self.api();
        // SAFETY: `err` is a live error from this plugin; these two calls cannot fail.
        let message = unsafe {
            if let Some(f) = api.PJRT_Error_Message {
                f(&mut msg as *mut _ as *mut _);
            }
            if let Some(f) = api.PJRT_Error_GetCode {
                f(&mut code as *mut _ as *mut _);
            }
            str_from(msg.message, msg.message_size)
        };
        let mut destroy = ffi::PJRT_Error_Destroy_Args::new();
        destroy.error = err;
        if let Some(f) = api.PJRT_Error_Destroy {
            // SAFETY: destroys the error we own; freed exactly once.
            unsafe { f(&mut destroy as *mut _ as *mut _) };
        }
        Err(Error::Pjrt {
            function,
            code: ErrorCode::from_raw(code.code),
            message,
        })
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish()
    }
}

/// Copies a (pointer, length) string from the plugin.
pub(crate) unsafe fn str_from(ptr: *const c_char, len: usize) -> String {
    if ptr.is_null() {
        return String::new();
    }
    let bytes = std::slice::from_raw_parts(ptr as *const u8, len);
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) unsafe fn read_named_value(v: &ffi::PJRT_NamedValue) -> (String, NamedValue) {
    let name = str_from(v.name, v.name_size);
    let value = match v.type_ {
        ffi::NAMED_STRING => NamedValue::String(str_from(v.value.string_value, v.value_size)),
        ffi::NAMED_INT64 => NamedValue::Int64(v.value.int64_value),
        ffi::NAMED_INT64_LIST => {
            let p = v.value.int64_array_value;
            NamedValue::Int64List(if p.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(p, v.value_size).to_vec()
            })
        }
        ffi::NAMED_FLOAT => NamedValue::Float(v.value.float_value),
        ffi::NAMED_BOOL => NamedValue::Bool(v.value.bool_value),
        t => NamedValue::String(format!("<unknown value type {t}>")),
    };
    (name, value)
}
