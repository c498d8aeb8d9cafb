//! Finding (and for CPU, fetching) the PJRT plugin for a backend.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::client::{Client, CreateOptions};
use crate::error::{Error, Result};
use crate::plugin::Plugin;
use files::fetch::{ensure_package, PinnedPackage, Registry};

/// Which kind of device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda,
    Tpu,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Backend::Cpu),
            "cuda" | "gpu" => Ok(Backend::Cuda),
            "tpu" => Ok(Backend::Tpu),
            other => Err(Error::InvalidArgument(format!(
                "unknown backend `{other}`: use cpu, cuda or tpu"
            ))),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Tpu => "tpu",
        })
    }
}

/// The default CPU plugin: newest XLA (PJRT API 0.115), compile-only AOT support, and clean
/// errors for bad create options (see README).
pub const DEFAULT_CPU_PLUGIN: PinnedPackage = PinnedPackage {
    registry: Registry::PipWheel,
    name: "lammps-jax-pjrt-cpu",
    version: "0.11.2",
    sha256: "1319390d948b39f69f7dade496b7c385149d9ca6097a6b62114da113216d9ad1",
};
const DEFAULT_CPU_PLUGIN_FILE: &str = "lammps_jax_pjrt_cpu/pjrt_c_api_cpu_plugin.so";

/// The OpenXLA CPU plugin that ships `pjrt_c_api.h` 0.81, the header our layout follows.
pub const HEADER_PACKAGE: PinnedPackage = PinnedPackage {
    registry: Registry::PipWheel,
    name: "xla-cpu-pjrt",
    version: "0.0.1",
    sha256: "55837b6b7b47daa717f2d9a5a03563ea0ceaa338d06a81a1e2d3f060d960decc",
};

/// Path of `pjrt_c_api.h` inside [`HEADER_PACKAGE`], fetching it if needed.
pub fn pjrt_header() -> Result<PathBuf> {
    Ok(ensure_package(&HEADER_PACKAGE)?.join("xla_plugins/xla_cpu_pjrt/include/pjrt_c_api.h"))
}

/// libtpu, the TPU PJRT plugin; also a compile-only plugin on any x86-64 Linux machine
/// (ahead-of-time compilation for TPU topologies, `rxla compile`). The wheel is tagged for
/// CPython 3.11, so it is fetched for that tag whatever Python runs pip.
pub const LIBTPU: PinnedPackage = PinnedPackage {
    registry: Registry::PipWheelFor {
        python_version: "3.11",
        platform: "manylinux_2_31_x86_64",
    },
    name: "libtpu",
    version: "0.0.42.1",
    sha256: "4d9975c446f594b0b517510b3db2fc9df65acd9a08f253c638fff5eb6bce163e",
};
const LIBTPU_FILE: &str = "libtpu/libtpu.so";

/// The libtpu in the cache if it was fetched before (no fetch, no Python).
pub fn cached_libtpu() -> Option<PathBuf> {
    let dir = files::fetch::cache_dir()
        .join("packages")
        .join(format!("{}-{}", LIBTPU.name, LIBTPU.version));
    let so = dir.join(LIBTPU_FILE);
    (dir.join(".rxla-complete").is_file() && so.is_file()).then_some(so)
}

/// libtpu for compiling without TPUs: `RXLA_PJRT_PLUGIN`, else `$TPU_LIBRARY_PATH`, else
/// the pinned [`LIBTPU`] (fetched into the cache on first use). Sets `TPU_SKIP_MDS_QUERY=1`
/// (unless set) so the plugin does not look for a metadata server this machine lacks, and
/// `ALLOW_MULTIPLE_LIBTPU_LOAD=1` so compiles in parallel processes don't lock each other out.
pub fn tpu_plugin_path() -> Result<PathBuf> {
    if std::env::var_os("TPU_SKIP_MDS_QUERY").is_none() {
        std::env::set_var("TPU_SKIP_MDS_QUERY", "1");
    }
    // Compiling holds no TPU chips, so several compiles may run at once; without this libtpu
    // refuses a second process ("multi-process lockfile").
    if std::env::var_os("ALLOW_MULTIPLE_LIBTPU_LOAD").is_none() {
        std::env::set_var("ALLOW_MULTIPLE_LIBTPU_LOAD", "1");
    }
    if let Some(p) = std::env::var_os("RXLA_PJRT_PLUGIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("TPU_LIBRARY_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    Ok(ensure_package(&LIBTPU)?.join(LIBTPU_FILE))
}

/// Backend from the argument, else `RXLA_BACKEND`, else CPU.
pub fn backend_from_env(arg: Option<Backend>) -> Result<Backend> {
    if let Some(b) = arg {
        return Ok(b);
    }
    match std::env::var("RXLA_BACKEND") {
        Ok(s) if !s.is_empty() => s.parse(),
        _ => Ok(Backend::Cpu),
    }
}

/// Where the plugin for `backend` is: `RXLA_PJRT_PLUGIN` wins; CPU is fetched if missing.
pub fn plugin_path(backend: Backend) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("RXLA_PJRT_PLUGIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let err = |reason: String| Error::Provision {
        backend: backend.to_string(),
        reason,
    };
    match backend {
        Backend::Cpu => Ok(ensure_package(&DEFAULT_CPU_PLUGIN)?.join(DEFAULT_CPU_PLUGIN_FILE)),
        Backend::Cuda => {
            let mut candidates: Vec<PathBuf> = Vec::new();
            if let Some(p) = std::env::var_os("PJRT_CUDA_PLUGIN") {
                candidates.push(p.into());
            }
            for dir in python_site_dirs() {
                for v in ["xla_cuda13", "xla_cuda12"] {
                    candidates.push(dir.join("jax_plugins").join(v).join("xla_cuda_plugin.so"));
                }
            }
            first_file(&candidates).ok_or_else(|| {
                err(
                    "no CUDA PJRT plugin found (looked for jax_plugins/xla_cuda12|13/\
                     xla_cuda_plugin.so in Python's site-packages and $PJRT_CUDA_PLUGIN); \
                     install one with `python3 -m pip install jax-cuda12-pjrt` (or \
                     jax-cuda13-pjrt), or set RXLA_PJRT_PLUGIN=/path/to/xla_cuda_plugin.so"
                        .into(),
                )
            })
        }
        Backend::Tpu => {
            let mut candidates: Vec<PathBuf> = Vec::new();
            if let Some(p) = std::env::var_os("TPU_LIBRARY_PATH") {
                candidates.push(p.into());
            }
            for dir in python_site_dirs() {
                candidates.push(dir.join("libtpu").join("libtpu.so"));
            }
            // Running needs a TPU VM's libtpu; the pinned one in the cache is for compiling
            // (`tpu_plugin_path`): a TPU client on a machine without TPUs waits for them.
            first_file(&candidates).ok_or_else(|| {
                err(
                    "no TPU PJRT plugin found (looked for libtpu/libtpu.so in Python's \
                     site-packages and $TPU_LIBRARY_PATH); on a TPU VM install it with `python3 \
                     -m pip install libtpu`, or set RXLA_PJRT_PLUGIN=/path/to/libtpu.so; to \
                     compile for TPUs from this machine use `rxla compile --target tpu:..`"
                        .into(),
                )
            })
        }
    }
}

fn first_file(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.is_file()).cloned()
}

fn python_site_dirs() -> Vec<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import site,sys;print('\\n'.join(site.getsitepackages()+[site.getusersitepackages()]+sys.path))",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => Vec::new(),
    }
}

static PLUGINS: Mutex<Vec<(PathBuf, Arc<Plugin>)>> = Mutex::new(Vec::new());

/// Loads a plugin once per process (a plugin must not be initialized twice).
pub fn load_plugin(path: &Path) -> Result<Arc<Plugin>> {
    let mut cache = PLUGINS.lock().unwrap_or_else(|e| e.into_inner());
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if let Some((_, p)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(p.clone());
    }
    let p = Plugin::load(&key)?;
    cache.push((key, p.clone()));
    Ok(p)
}

/// Options for [`client`].
#[derive(Debug, Clone, Default)]
pub struct ClientRequest {
    pub backend: Option<Backend>,
    /// Number of virtual devices (CPU only).
    pub cpu_devices: Option<usize>,
    /// Show the plugin's own logs (unless `TF_CPP_MIN_LOG_LEVEL` is set by the user).
    pub verbose: bool,
    /// CUDA client options (cuda backend only; JAX's environment variables fill the rest).
    pub gpu: crate::gpu::GpuOptions,
}

/// The one-call way to a client: provision the plugin, load it, create the client.
pub fn client(req: &ClientRequest) -> Result<Client> {
    create(req, None)
}

/// A client for process `process_id` of a multi-process job: the plugin gets the job's
/// key-value store and the create options its backend takes for it (see
/// [`job_options`]).
pub fn client_in_job(req: &ClientRequest, job: &crate::kv::Job) -> Result<Client> {
    create(req, Some(job))
}

/// The create options and store a backend's plugin takes for a job: CPU plugins only
/// `process_id` (they reject `num_nodes`/`node_id` and have no cross-process collectives),
/// CUDA `node_id` and `num_nodes`, TPU nothing (libtpu finds its slice itself). Every backend
/// gets the store, its keys prefixed by platform as JAX does.
pub fn job_options(
    backend: Backend,
    job: &crate::kv::Job,
    opts: crate::CreateOptions,
) -> crate::CreateOptions {
    use crate::plugin::NamedValue;
    let opts = match backend {
        Backend::Cpu => opts.set("process_id", NamedValue::Int64(job.process_id as i64)),
        Backend::Cuda => opts
            .set("node_id", NamedValue::Int64(job.process_id as i64))
            .set("num_nodes", NamedValue::Int64(job.num_processes as i64)),
        Backend::Tpu => opts,
    };
    opts.key_value_store(format!("{backend}:"), job.store.clone())
}

fn create(req: &ClientRequest, job: Option<&crate::kv::Job>) -> Result<Client> {
    let backend = backend_from_env(req.backend)?;
    if req.verbose && std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
        std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "0");
    }
    let gpu = match backend {
        Backend::Cuda => req.gpu.clone().with_env()?,
        _ if !req.gpu.is_empty() => {
            return Err(Error::InvalidArgument(format!(
                "the --gpu-* options apply to the cuda backend, not {backend}"
            )))
        }
        _ => Default::default(),
    };
    let path = plugin_path(backend)?;
    if backend == Backend::Cuda {
        crate::gpu::preload_cuda_libraries(&crate::gpu::nvidia_lib_dirs(&python_site_dirs()));
    }
    let plugin = load_plugin(&path).map_err(|e| cuda_hint(backend, e))?;
    let mut opts = gpu.apply(CreateOptions::new())?;
    if let Some(n) = req.cpu_devices {
        if backend != Backend::Cpu {
            return Err(Error::InvalidArgument(format!(
                "--cpu-devices applies to the cpu backend, not {backend}"
            )));
        }
        if n == 0 {
            return Err(Error::InvalidArgument(
                "--cpu-devices must be at least 1".into(),
            ));
        }
        opts = opts.cpu_device_count(n);
    }
    if let Some(job) = job {
        opts = job_options(backend, job, opts);
    }
    Client::new(plugin, &opts).map_err(|e| cuda_hint(backend, e))
}

/// A CUDA failure about a missing NVIDIA library, with the pip package that ships it.
fn cuda_hint(backend: Backend, e: Error) -> Error {
    if backend != Backend::Cuda {
        return e;
    }
    match e {
        Error::PluginLoad { path, reason } => Error::PluginLoad {
            path,
            reason: crate::gpu::explain_missing_library(&reason),
        },
        Error::Pjrt {
            function,
            code,
            message,
        } => Error::Pjrt {
            function,
            code,
            message: crate::gpu::explain_missing_library(&message),
        },
        other => other,
    }
}

/// A CPU client with `n` devices (tests, benches).
pub fn cpu_client(n: usize) -> Result<Client> {
    client(&ClientRequest {
        backend: Some(Backend::Cpu),
        cpu_devices: Some(n),
        verbose: false,
        gpu: Default::default(),
    })
}
