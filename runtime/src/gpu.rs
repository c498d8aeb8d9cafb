//! What the CUDA plugin needs that the CPU path never exercised: its create options
//! (`visible_devices`, `memory_fraction`, `preallocate`, `allocator`, as JAX passes them), NVIDIA's
//! pip-installed libraries made loadable for a process that is not Python, and errors that name
//! the pip package of a missing library.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::client::CreateOptions;
use crate::error::{Error, Result};
use crate::plugin::NamedValue;

/// XLA's GPU allocators (`allocator` create option).
pub const ALLOCATORS: &[&str] = &["default", "platform", "bfc", "cuda_async"];

/// CUDA client options; `None` leaves the plugin's default (BFC allocator preallocating 75%).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuOptions {
    /// Device ordinals this client uses (after `CUDA_VISIBLE_DEVICES`).
    pub visible_devices: Option<Vec<i64>>,
    /// Share of each GPU's memory the allocator may take, in (0, 1].
    pub memory_fraction: Option<f64>,
    /// Reserve `memory_fraction` up front (else grow on demand).
    pub preallocate: Option<bool>,
    /// One of [`ALLOCATORS`].
    pub allocator: Option<String>,
}

impl GpuOptions {
    pub fn is_empty(&self) -> bool {
        *self == GpuOptions::default()
    }

    /// Options from JAX's environment variables (`XLA_PYTHON_CLIENT_MEM_FRACTION`,
    /// `XLA_PYTHON_CLIENT_PREALLOCATE`, `XLA_PYTHON_CLIENT_ALLOCATOR`), under `self`'s.
    pub fn with_env(mut self) -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if self.memory_fraction.is_none() {
            if let Some(v) = var("XLA_PYTHON_CLIENT_MEM_FRACTION") {
                self.memory_fraction = Some(v.parse().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "XLA_PYTHON_CLIENT_MEM_FRACTION={v} is not a number"
                    ))
                })?);
            }
        }
        if self.preallocate.is_none() {
            if let Some(v) = var("XLA_PYTHON_CLIENT_PREALLOCATE") {
                self.preallocate = Some(parse_bool("XLA_PYTHON_CLIENT_PREALLOCATE", &v)?);
            }
        }
        if self.allocator.is_none() {
            self.allocator = var("XLA_PYTHON_CLIENT_ALLOCATOR");
        }
        Ok(self)
    }

    /// Checks the values and adds them to `opts` under the plugin's option names.
    pub fn apply(&self, mut opts: CreateOptions) -> Result<CreateOptions> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if let Some(d) = &self.visible_devices {
            let mut seen = d.clone();
            seen.sort_unstable();
            seen.dedup();
            if d.is_empty() || d.iter().any(|&x| x < 0) || seen.len() != d.len() {
                return bad(format!(
                    "--gpu-devices {d:?}: give distinct non-negative device ordinals, e.g. 0,1"
                ));
            }
            opts = opts.set("visible_devices", NamedValue::Int64List(d.clone()));
        }
        if let Some(a) = &self.allocator {
            if !ALLOCATORS.contains(&a.as_str()) {
                return bad(format!(
                    "GPU allocator `{a}` is unknown: use one of {}",
                    ALLOCATORS.join(", ")
                ));
            }
            let sized = self.memory_fraction.is_some() || self.preallocate.is_some();
            if a == "platform" && sized {
                return bad(
                    "the `platform` GPU allocator allocates on demand and takes no memory \
                     fraction or preallocation: drop those or use the bfc allocator"
                        .into(),
                );
            }
            opts = opts.set("allocator", NamedValue::String(a.clone()));
        }
        if let Some(f) = self.memory_fraction {
            if !(f > 0.0 && f <= 1.0) {
                return bad(format!(
                    "GPU memory fraction {f} must be in (0, 1] (e.g. 0.9 for 90%)"
                ));
            }
            opts = opts.set("memory_fraction", NamedValue::Float(f as f32));
        }
        if let Some(p) = self.preallocate {
            opts = opts.set("preallocate", NamedValue::Bool(p));
        }
        Ok(opts)
    }
}

fn parse_bool(what: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(Error::InvalidArgument(format!(
            "{what}={v}: use true or false"
        ))),
    }
}

/// NVIDIA's libraries the CUDA plugin loads, and the pip package (CUDA 13 / CUDA 12 names)
/// that ships each.
pub const CUDA_LIBRARIES: &[(&str, &str)] = &[
    ("libcudart", "nvidia-cuda-runtime"),
    ("libnvJitLink", "nvidia-nvjitlink"),
    ("libcublasLt", "nvidia-cublas"),
    ("libcublas", "nvidia-cublas"),
    ("libcufft", "nvidia-cufft"),
    ("libcusparse", "nvidia-cusparse"),
    ("libcusolver", "nvidia-cusolver"),
    ("libcudnn", "nvidia-cudnn"),
    ("libnccl", "nvidia-nccl"),
    ("libcupti", "nvidia-cuda-cupti"),
    ("libnvrtc", "nvidia-cuda-nvrtc"),
];

/// `reason` with a hint naming the pip package when it is about a missing CUDA library.
pub fn explain_missing_library(reason: &str) -> String {
    let missing = reason.contains("cannot open shared object")
        || reason.contains("Could not find")
        || reason.contains("Unable to load")
        || reason.contains("not found");
    let lib = CUDA_LIBRARIES
        .iter()
        .find(|(l, _)| reason.contains(&l[3..]) || reason.contains(l));
    match (missing, lib) {
        (true, Some((l, pkg))) => format!(
            "{reason}\nhint: {l} comes from the pip package `{pkg}-cu13` (`{pkg}-cu12` for \
             CUDA 12); `python3 -m pip install jax-cuda13-plugin[with-cuda]` installs all of \
             NVIDIA's libraries the plugin needs"
        ),
        _ => reason.to_string(),
    }
}

/// `lib` directories of NVIDIA's pip packages under `site` (`site/nvidia/*/lib`).
pub fn nvidia_lib_dirs(sites: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for s in sites {
        let Ok(entries) = std::fs::read_dir(s.join("nvidia")) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path().join("lib")))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        out.extend(dirs);
    }
    out
}

static PRELOADED: Mutex<Vec<libloading::os::unix::Library>> = Mutex::new(Vec::new());

/// Loads NVIDIA's pip-installed libraries process-wide (RTLD_GLOBAL), in dependency order,
/// so the plugin finds them without `LD_LIBRARY_PATH` (a Python process gets them from the
/// jax package; we are not one). Returns the files loaded; missing ones are left to the
/// plugin's own error.
pub fn preload_cuda_libraries(dirs: &[PathBuf]) -> Vec<PathBuf> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    let mut loaded = Vec::new();
    let mut keep = PRELOADED.lock().unwrap_or_else(|e| e.into_inner());
    for (stem, _) in CUDA_LIBRARIES {
        for d in dirs {
            let Some(file) = library_file(d, stem) else {
                continue;
            };
            // SAFETY: NVIDIA's own shared libraries; their initializers only set up CUDA
            // state, as when the plugin loads them itself.
            if let Ok(lib) = unsafe { Library::open(Some(&file), RTLD_NOW | RTLD_GLOBAL) } {
                keep.push(lib);
                loaded.push(file);
            }
            break;
        }
    }
    loaded
}

/// `dir/stem.so.N` (the versioned file the plugin asks for), if present.
fn library_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    let mut hits: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{stem}.so")))
        })
        .collect();
    hits.sort();
    hits.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_and_named_as_the_plugin_expects() {
        let o = GpuOptions {
            visible_devices: Some(vec![0, 1]),
            memory_fraction: Some(0.5),
            preallocate: Some(false),
            allocator: Some("bfc".into()),
        };
        let c = o.apply(CreateOptions::new()).unwrap();
        let names: Vec<&str> = c.options.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "visible_devices",
                "allocator",
                "memory_fraction",
                "preallocate"
            ]
        );
        for (bad, want) in [
            (
                GpuOptions {
                    memory_fraction: Some(1.5),
                    ..Default::default()
                },
                "(0, 1]",
            ),
            (
                GpuOptions {
                    memory_fraction: Some(f64::NAN),
                    ..Default::default()
                },
                "(0, 1]",
            ),
            (
                GpuOptions {
                    allocator: Some("arena".into()),
                    ..Default::default()
                },
                "bfc, cuda_async",
            ),
            (
                GpuOptions {
                    allocator: Some("platform".into()),
                    preallocate: Some(true),
                    ..Default::default()
                },
                "on demand",
            ),
            (
                GpuOptions {
                    visible_devices: Some(vec![0, 0]),
                    ..Default::default()
                },
                "distinct",
            ),
        ] {
            let e = bad.apply(CreateOptions::new()).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn missing_libraries_name_their_pip_package() {
        let e = explain_missing_library(
            "libcudnn.so.9: cannot open shared object file: No such file or directory",
        );
        assert!(e.contains("nvidia-cudnn-cu13"), "{e}");
        let e = explain_missing_library("libcublasLt.so.13: cannot open shared object file");
        assert!(e.contains("nvidia-cublas-cu13"), "{e}");
        // Other failures pass through unchanged.
        assert_eq!(explain_missing_library("out of memory"), "out of memory");
    }

    #[test]
    fn nvidia_dirs_are_found_and_missing_libraries_are_skipped() {
        let root = std::env::temp_dir().join(format!("rxla-nvidia-{}", std::process::id()));
        let lib = root.join("nvidia/cudnn/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(root.join("nvidia/empty")).unwrap();
        assert_eq!(
            nvidia_lib_dirs(std::slice::from_ref(&root)),
            vec![lib.clone()]
        );
        // A file that is not a shared object is not loaded (dlopen fails), nothing panics.
        std::fs::write(lib.join("libcudnn.so.9"), b"not an ELF").unwrap();
        assert_eq!(
            library_file(&lib, "libcudnn"),
            Some(lib.join("libcudnn.so.9"))
        );
        assert!(preload_cuda_libraries(&[lib]).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
