//! The persistent compile cache: serialized executables on disk, keyed by everything that
//! decides what XLA produces.
//!
//! Key: sha256 of (StableHLO text, `CompileOptionsProto` bytes, plugin build, plugin API
//! version and attributes, platform, device kinds). Entry: `<dir>/<key>.exe` holding a header
//! (magic, the key, the payload's sha256 and length) and the serialized executable. Entries
//! are written with `files::write_atomic` (temp + rename), so a reader never sees half of
//! one and processes compiling the same program at once each leave a whole entry (the last
//! rename wins). A truncated, bit-flipped or foreign entry fails the header or checksum check
//! before the plugin sees it: it is reported once, removed, and the program recompiled. The
//! directory is bounded by size: a hit refreshes an entry's mtime, and after each store the
//! least recently used entries go until the total fits.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::executable::{CompileOptions, Executable};
use crate::plugin::Plugin;

const MAGIC: &[u8] = b"RXLA-EXE 1\n";
const EXT: &str = "exe";
/// Default size bound of the cache directory.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

static DISABLED: AtomicBool = AtomicBool::new(false);
static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Turns the cache off for this process (`--no-compile-cache`).
pub fn disable() {
    DISABLED.store(true, Ordering::SeqCst);
}

/// Whether compiles go through the cache: not after [`disable`], nor with
/// `RXLA_COMPILE_CACHE=0` (or `off`, `false`).
pub fn enabled() -> bool {
    if DISABLED.load(Ordering::SeqCst) {
        return false;
    }
    !matches!(
        std::env::var("RXLA_COMPILE_CACHE")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str(),
        "0" | "off" | "false" | "no"
    )
}

/// What a compile through the cache did.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheOutcome {
    /// Loaded from the cache; nothing compiled.
    Hit,
    /// Loaded from an `rxla compile` directory; nothing compiled.
    Provided,
    /// Compiled and stored for next time.
    Stored,
    /// Compiled; storing failed (reason, already reported).
    NotStored(String),
    /// The cache is off.
    Disabled,
}

impl CacheOutcome {
    /// Nothing was compiled.
    pub fn is_hit(&self) -> bool {
        matches!(self, CacheOutcome::Hit | CacheOutcome::Provided)
    }
}

/// One entry, as `rxla cache ls` shows it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub last_used: SystemTime,
}

/// A cache directory and its size bound.
#[derive(Debug, Clone)]
pub struct CompileCache {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl CompileCache {
    /// `<cache dir>/compile`, bounded by `RXLA_COMPILE_CACHE_MAX` (bytes, or with a K/M/G
    /// suffix; default 2 GB).
    pub fn from_env() -> Result<CompileCache> {
        let max_bytes = match std::env::var("RXLA_COMPILE_CACHE_MAX") {
            Ok(s) if !s.trim().is_empty() => parse_size(&s).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "RXLA_COMPILE_CACHE_MAX = `{s}` is not a size: use bytes or e.g. 500M, 2G"
                ))
            })?,
            _ => DEFAULT_MAX_BYTES,
        };
        Ok(CompileCache {
            dir: files::fetch::cache_dir().join("compile"),
            max_bytes,
        })
    }

    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> CompileCache {
        CompileCache {
            dir: dir.into(),
            max_bytes,
        }
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.{EXT}"))
    }

    /// The entry's serialized executable, or `None` when there is none. A damaged or foreign
    /// entry is reported (once per process), removed, and treated as absent.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path_of(key);
        let mut bytes = Vec::new();
        match std::fs::File::open(&path) {
            Ok(mut f) => {
                if let Err(e) = f.read_to_end(&mut bytes) {
                    self.reject(&path, &format!("unreadable ({e})"));
                    return None;
                }
            }
            Err(_) => return None,
        }
        match decode(key, &bytes) {
            Ok(payload) => {
                touch(&path);
                Some(payload.to_vec())
            }
            Err(why) => {
                self.reject(&path, &why);
                None
            }
        }
    }

    /// Reports a bad entry once and removes it.
    pub fn reject(&self, path: &Path, why: &str) {
        let name = path.display().to_string();
        let first = {
            let mut w = WARNED.lock().unwrap_or_else(|e| e.into_inner());
            w.get_or_insert_with(HashSet::new).insert(name.clone())
        };
        if first {
            eprintln!("rxla: compile cache entry {name} is {why}; removed it, recompiling");
        }
        let _ = std::fs::remove_file(path);
    }

    /// Stores a serialized executable under `key`, then evicts down to the size bound.
    pub fn put(&self, key: &str, payload: &[u8]) -> Result<()> {
        files::write_atomic(&self.path_of(key), &encode(key, payload))?;
        self.evict(Some(key))?;
        Ok(())
    }

    /// Every entry, most recently used first.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&self.dir, e)),
        };
        for e in rd.flatten() {
            let p = e.path();
            let Some(key) = entry_key(&p) else { continue };
            let Ok(m) = e.metadata() else { continue };
            out.push(Entry {
                key,
                path: p,
                bytes: m.len(),
                last_used: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.last_used));
        Ok(out)
    }

    /// Removes every entry (and stale temp files); returns (entries, bytes) removed.
    pub fn clear(&self) -> Result<(usize, u64)> {
        let mut n = 0;
        let mut bytes = 0;
        for e in self.list()? {
            match std::fs::remove_file(&e.path) {
                Ok(()) => {
                    n += 1;
                    bytes += e.bytes;
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_err(&e.path, err)),
            }
        }
        self.remove_stale_temps(std::time::Duration::ZERO);
        Ok((n, bytes))
    }

    /// Least recently used entries out until the total is within `max_bytes` (`keep` stays).
    fn evict(&self, keep: Option<&str>) -> Result<()> {
        let entries = self.list()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        for e in entries.iter().rev() {
            if total <= self.max_bytes {
                break;
            }
            if Some(e.key.as_str()) == keep {
                continue;
            }
            match std::fs::remove_file(&e.path) {
                Ok(()) => total = total.saturating_sub(e.bytes),
                // Another process evicted it first.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    total = total.saturating_sub(e.bytes)
                }
                Err(err) => return Err(io_err(&e.path, err)),
            }
        }
        self.remove_stale_temps(std::time::Duration::from_secs(3600));
        Ok(())
    }

    /// Temp files of writers killed mid-write (older than `age`; a live writer's is young).
    fn remove_stale_temps(&self, age: std::time::Duration) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with('.') && name.contains(".tmp-")) {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() >= age)
                .unwrap_or(false);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        context: format!("compile cache {}", path.display()),
        source,
    }
}

fn entry_key(p: &Path) -> Option<String> {
    let name = p.file_name()?.to_str()?;
    let key = name.strip_suffix(&format!(".{EXT}"))?;
    (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())).then(|| key.to_string())
}

fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Parses `123`, `500K`, `500M`, `2G` (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some((v * mult as f64) as u64)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of an entry: magic, key, payload sha256, payload length, payload.
pub fn encode(key: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 160);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(
        format!("{key}\n{}\n{}\n", sha256_hex(payload), payload.len()).as_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

/// The payload of an entry for `key`, or why it cannot be used.
pub fn decode<'a>(key: &str, bytes: &'a [u8]) -> std::result::Result<&'a [u8], String> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("not an rxla compile cache entry (bad magic)")?;
    let mut lines = rest.splitn(4, |&b| b == b'\n');
    let (Some(k), Some(sum), Some(len), Some(payload)) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return Err("truncated (header cut short)".into());
    };
    if k != key.as_bytes() {
        return Err(format!(
            "foreign (it holds key {}, not {key})",
            String::from_utf8_lossy(k)
        ));
    }
    let len: usize = std::str::from_utf8(len)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("damaged (bad length field)")?;
    if payload.len() != len {
        return Err(format!(
            "truncated or padded ({} payload bytes, header says {len})",
            payload.len()
        ));
    }
    if sha256_hex(payload).as_bytes() != sum {
        return Err("corrupt (payload checksum mismatch)".into());
    }
    Ok(payload)
}

/// What identifies a plugin build: sha256 of the plugin file's bytes. Hashing a large plugin
/// takes a while, so the digest is remembered per (path, size, mtime) in the process and in
/// `<cache>/compile/plugins/`.
pub fn plugin_build(plugin: &Plugin) -> Result<String> {
    static MEMO: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let path = plugin.path();
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let stamp = sha256_hex(format!("{}\n{}\n{mtime}", path.display(), meta.len()).as_bytes());
    let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, d)) = memo.iter().find(|(s, _)| *s == stamp) {
        return Ok(d.clone());
    }
    let side = files::fetch::cache_dir()
        .join("compile")
        .join("plugins")
        .join(&stamp);
    let digest = match std::fs::read_to_string(&side) {
        Ok(d) if d.trim().len() == 64 => d.trim().to_string(),
        _ => {
            let d = files::fetch::sha256_file(path)?;
            // Only a speed-up: a failed write just means hashing again next time.
            let _ = files::write_atomic(&side, d.as_bytes());
            d
        }
    };
    memo.push((stamp, digest.clone()));
    Ok(digest)
}

/// Everything besides the program that decides the compiled bytes, as text (hashed into keys).
pub fn target_identity(client: &Client) -> Result<String> {
    let plugin = client.plugin();
    let mut s = format!(
        "plugin build {}\napi {:?}\nplatform {} {}\n",
        plugin_build(plugin)?,
        plugin.api_version(),
        client.platform_name(),
        client.platform_version()
    );
    let mut attrs: Vec<String> = plugin
        .attributes()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    attrs.sort();
    for a in attrs {
        s.push_str(&format!("attribute {a}\n"));
    }
    for d in client.devices() {
        s.push_str(&format!(
            "device {} {} process {} addressable {}\n",
            d.id, d.kind, d.process_index, d.addressable
        ));
    }
    Ok(s)
}

/// The cache key of compiling `mlir` with `options` (proto bytes) for `target`
/// ([`target_identity`]).
pub fn key(mlir: &str, options: &[u8], target: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"rxla compile cache v1\n");
    for part in [mlir.as_bytes(), options, target.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex(&h.finalize())
}

/// The program fingerprint: sha256 of the StableHLO text and the compile options (what
/// `rxla compile` writes into a manifest, independent of the machine).
pub fn program_fingerprint(mlir: &str, options: &[u8]) -> String {
    key(mlir, options, "")
}

static PROVIDED: Mutex<Vec<(String, Vec<u8>)>> = Mutex::new(Vec::new());

/// Serialized executables to use instead of compiling, by [`program_fingerprint`]
/// (`rxla train --compiled DIR`, after the caller checked the manifest against the client).
pub fn provide(fingerprint: String, serialized: Vec<u8>) {
    PROVIDED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((fingerprint, serialized));
}

impl Client {
    /// Compiles through the persistent cache (unless it is off): loads the executable when
    /// an intact entry exists (or one was [`provide`]d), else compiles and stores it.
    /// Returns what happened and the seconds spent.
    pub fn compile_cached(
        &self,
        mlir: &str,
        options: &CompileOptions,
    ) -> Result<(Executable, CacheOutcome, f64)> {
        let t = Instant::now();
        let fp = program_fingerprint(mlir, &options.to_proto_bytes()?);
        let provided = PROVIDED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(f, _)| *f == fp)
            .map(|(_, b)| b.clone());
        if let Some(bytes) = provided {
            let exe = self.deserialize_executable(&bytes)?;
            return Ok((exe, CacheOutcome::Provided, t.elapsed().as_secs_f64()));
        }
        if !enabled() {
            let exe = self.compile(mlir, options)?;
            return Ok((exe, CacheOutcome::Disabled, t.elapsed().as_secs_f64()));
        }
        let cache = CompileCache::from_env()?;
        let key = key(mlir, &options.to_proto_bytes()?, &target_identity(self)?);
        if let Some(bytes) = cache.get(&key) {
            match self.deserialize_executable(&bytes) {
                Ok(exe) => return Ok((exe, CacheOutcome::Hit, t.elapsed().as_secs_f64())),
                Err(e) => cache.reject(
                    &cache.path_of(&key),
                    &format!("not loadable by this plugin ({e})"),
                ),
            }
        }
        let exe = self.compile(mlir, options)?;
        let outcome = match exe.serialize().and_then(|b| cache.put(&key, &b)) {
            Ok(()) => CacheOutcome::Stored,
            Err(e) => {
                eprintln!(
                    "rxla: warning: could not store the compiled program in the compile cache: {e}"
                );
                CacheOutcome::NotStored(e.to_string())
            }
        };
        Ok((exe, outcome, t.elapsed().as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_caught() {
        let key = "a".repeat(64);
        let payload = b"serialized executable bytes".to_vec();
        let e = encode(&key, &payload);
        assert_eq!(decode(&key, &e).unwrap(), &payload[..]);
        // Truncated anywhere: header or payload.
        for cut in [5, MAGIC.len() + 10, e.len() - 1] {
            assert!(decode(&key, &e[..cut]).is_err(), "cut at {cut}");
        }
        // Every single bit flip in the payload fails the checksum.
        let start = e.len() - payload.len();
        for i in start..e.len() {
            for bit in 0..8 {
                let mut d = e.clone();
                d[i] ^= 1 << bit;
                assert!(decode(&key, &d).is_err(), "flip at {i}:{bit}");
            }
        }
        let other = "b".repeat(64);
        assert!(decode(&other, &e).unwrap_err().contains("foreign"));
    }

    #[test]
    fn key_changes_with_each_input() {
        let base = key("module {}", b"opts", "target");
        assert_eq!(base, key("module {}", b"opts", "target"));
        assert_ne!(base, key("module { }", b"opts", "target"));
        assert_ne!(base, key("module {}", b"opts2", "target"));
        assert_ne!(base, key("module {}", b"opts", "target2"));
        // Length-prefixed parts: moving bytes between parts changes the key.
        assert_ne!(key("ab", b"c", "t"), key("a", b"bc", "t"));
    }

    #[test]
    fn lru_bound_evicts_the_least_recently_used() {
        let dir = std::env::temp_dir().join(format!("rxla-cc-lru-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = CompileCache::new(&dir, 2500);
        let k = |i: u8| format!("{:064x}", i);
        for i in 0..2 {
            c.put(&k(i), &[i; 1000]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Using entry 0 makes entry 1 the least recently used.
        assert!(c.get(&k(0)).is_some());
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.put(&k(2), &[2; 1000]).unwrap();
        let keys: Vec<String> = c.list().unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec![k(2), k(0)]);
        assert_eq!(c.clear().unwrap().0, 2);
        assert!(c.list().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("1234"), Some(1234));
        assert_eq!(parse_size("lots"), None);
    }
}
