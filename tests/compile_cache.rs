//! The persistent compile cache through the real CPU plugin: hits load what was stored,
//! damaged or foreign entries are recompiled (never executed), and processes compiling the
//! same programs at once all succeed and leave only whole entries.

use std::path::{Path, PathBuf};
use std::process::Command;

use runtime::cache::{self, CacheOutcome, CompileCache};
use runtime::provision::{self, Backend};
use runtime::{Client, CompileOptions};

const PROGRAM: &str = r#"
module @twice_plus_dot {
  func.func public @main(%a: tensor<2x2xf32>) -> tensor<2x2xf32> {
    %s = stablehlo.add %a, %a : tensor<2x2xf32>
    %d = stablehlo.dot_general %s, %a, contracting_dims = [1] x [0] : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
    return %d : tensor<2x2xf32>
  }
}
"#;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rxla-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs PROGRAM on [[1, 2], [3, 4]]: 2a·a = [[14, 20], [30, 44]].
fn run(c: &Client, exe: &runtime::Executable) -> Vec<f32> {
    let a = c
        .buffer_from_host(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2], 0)
        .unwrap();
    exe.execute1(&[&a]).unwrap()[0].to_host::<f32>().unwrap()
}

fn the_entry(dir: &Path) -> PathBuf {
    let entries = CompileCache::new(dir, u64::MAX).list().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].path.clone()
}

#[test]
fn hits_load_and_damaged_or_foreign_entries_are_recompiled() {
    // The real plugin, but a private cache directory (the env is this test binary's own).
    let plugin = provision::plugin_path(Backend::Cpu).unwrap();
    let dir = temp_dir("compile-cache");
    std::env::set_var("RXLA_PJRT_PLUGIN", &plugin);
    std::env::set_var("RXLA_CACHE_DIR", &dir);
    let c = provision::cpu_client(1).unwrap();
    let want = vec![14.0f32, 20.0, 30.0, 44.0];
    let opts = CompileOptions::default();
    let compile = || c.compile_cached(PROGRAM, &opts).unwrap();

    let (exe, outcome, _) = compile();
    assert_eq!(outcome, CacheOutcome::Stored);
    assert_eq!(run(&c, &exe), want);
    let cache_dir = dir.join("compile");
    let entry = the_entry(&cache_dir);
    let good = std::fs::read(&entry).unwrap();

    let (exe, outcome, _) = compile();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(run(&c, &exe), want);

    // Truncated, bit-flipped (in the serialized executable), foreign (another key's entry
    // under this name): each is removed and recompiled, and the result is right.
    let key = entry.file_stem().unwrap().to_str().unwrap().to_string();
    let payload = cache::decode(&key, &good).unwrap().to_vec();
    let mut flipped = good.clone();
    let mid = good.len() - payload.len() / 2;
    flipped[mid] ^= 0x10;
    let foreign = cache::encode(&"0".repeat(64), &payload);
    for (what, bytes) in [
        ("truncated", good[..good.len() - 100].to_vec()),
        ("bit-flipped", flipped),
        ("foreign", foreign),
        ("empty", Vec::new()),
    ] {
        std::fs::write(&entry, &bytes).unwrap();
        let (exe, outcome, _) = compile();
        assert_eq!(outcome, CacheOutcome::Stored, "{what} entry was used");
        assert_eq!(run(&c, &exe), want, "{what}");
        // Replaced by a whole entry (serialization is not byte-stable across compiles).
        let now = std::fs::read(the_entry(&cache_dir)).unwrap();
        cache::decode(&key, &now).unwrap_or_else(|e| panic!("{what}: {e}"));
        let (_, outcome, _) = compile();
        assert_eq!(outcome, CacheOutcome::Hit, "{what}");
    }

    // The key covers the devices: a 2-device client of the same plugin misses.
    let two = provision::cpu_client(2).unwrap();
    let t1 = cache::target_identity(&c).unwrap();
    let t2 = cache::target_identity(&two).unwrap();
    assert_ne!(cache::key(PROGRAM, &[], &t1), cache::key(PROGRAM, &[], &t2));
    let spmd = CompileOptions::spmd(2).to_proto_bytes().unwrap();
    assert_ne!(
        cache::key(PROGRAM, &opts.to_proto_bytes().unwrap(), &t1),
        cache::key(PROGRAM, &spmd, &t1)
    );

    std::env::set_var("RXLA_COMPILE_CACHE", "0");
    let (exe, outcome, _) = compile();
    std::env::remove_var("RXLA_COMPILE_CACHE");
    assert_eq!(outcome, CacheOutcome::Disabled);
    assert_eq!(run(&c, &exe), want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn processes_compiling_the_same_programs_at_once_all_succeed() {
    let plugin = provision::plugin_path(Backend::Cpu).unwrap();
    let dir = temp_dir("compile-cache-race");
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_rxla"))
            .args([
                "bench",
                "--config",
                "configs/mnist-cnn.toml",
                "--steps",
                "1",
            ])
            .args(["--warmup", "0", "--peak-flops", "1e12"])
            .env("RXLA_PJRT_PLUGIN", &plugin)
            .env("RXLA_CACHE_DIR", &dir)
            .env_remove("RXLA_COMPILE_CACHE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<_> = (0..3).map(|_| start()).collect();
    for ch in children {
        let out = ch.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cache_dir = dir.join("compile");
    let entries = CompileCache::new(&cache_dir, u64::MAX).list().unwrap();
    assert!(!entries.is_empty());
    for e in &entries {
        let bytes = std::fs::read(&e.path).unwrap();
        cache::decode(&e.key, &bytes).expect("a whole entry");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
