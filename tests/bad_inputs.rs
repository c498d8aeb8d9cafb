//! The bad-input corpus: every case in `tests/bad_inputs/*.toml` runs through the `rxla`
//! binary and must exit non-zero with a message holding each `expect` string (which name the
//! input and what to do) — no panic, no signal, and nothing changed in the good run
//! directory the cases without their own damaged copy point at.

mod common;
use common::{ok, rxla, tmp_dir, train};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Damage done to a private copy of the good run before the case.
    #[serde(default)]
    mutate: Vec<Mutation>,
    /// A private cache with one package copied and damaged.
    cache: Option<CacheDamage>,
    expect: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheDamage {
    package: String,
    mutate: Vec<Mutation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "op")]
enum Op {
    /// Keep the first `len` bytes.
    Truncate {
        len: usize,
    },
    /// XOR the byte at `at` with `xor` (default 0x55).
    Flip {
        at: usize,
        xor: Option<u8>,
    },
    Delete,
    Write {
        text: String,
    },
    Replace {
        from: String,
        to: String,
    },
    /// Replace the first occurrence of `from` in a (binary) file.
    ReplaceBytes {
        from: String,
        to: String,
    },
    /// Record the file's current sha256 in its checkpoint's `state.json`, as a foreign writer
    /// that produced a consistent but wrong checkpoint would.
    Rehash,
}

#[derive(Deserialize)]
struct Mutation {
    path: String,
    #[serde(flatten)]
    op: Op,
}

fn apply(root: &Path, m: &Mutation) {
    let p = root.join(&m.path);
    let bytes = || std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    match &m.op {
        Op::Truncate { len } => std::fs::write(&p, &bytes()[..*len]).unwrap(),
        Op::Flip { at, xor } => {
            let mut b = bytes();
            b[*at] ^= xor.unwrap_or(0x55);
            std::fs::write(&p, b).unwrap();
        }
        Op::Delete => std::fs::remove_file(&p).unwrap(),
        Op::Write { text } => std::fs::write(&p, text).unwrap(),
        Op::Replace { from, to } => {
            let text = String::from_utf8(bytes()).unwrap();
            assert!(text.contains(from.as_str()), "{}: no `{from}`", p.display());
            std::fs::write(&p, text.replace(from.as_str(), to)).unwrap();
        }
        Op::ReplaceBytes { from, to } => {
            let mut b = bytes();
            let (from, to) = (from.as_bytes(), to.as_bytes());
            let at = b
                .windows(from.len())
                .position(|w| w == from)
                .unwrap_or_else(|| panic!("{}: no `{}`", p.display(), m.path));
            b.splice(at..at + from.len(), to.iter().copied());
            std::fs::write(&p, b).unwrap();
        }
        Op::Rehash => {
            use sha2::{Digest, Sha256};
            let digest: String = Sha256::digest(bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let state = p.parent().unwrap().join("state.json");
            let mut v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            v["checksums"][file] = serde_json::Value::String(digest);
            std::fs::write(&state, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// A C file compiled into a shared object with gcc.
fn shared_object(dir: &Path, name: &str, src: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    let so = dir.join(format!("{name}.so"));
    std::fs::write(&c, src).unwrap();
    let st = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&c)
        .status()
        .expect("gcc");
    assert!(st.success());
    so
}

/// A private cache: links to every real package, except `damage.package`, which is copied
/// and damaged.
fn damaged_cache(packages: &Path, dir: &Path, damage: &CacheDamage) -> PathBuf {
    let root = dir.join("packages");
    std::fs::create_dir_all(&root).unwrap();
    for e in std::fs::read_dir(packages).unwrap().flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if name.to_string_lossy() == damage.package {
            copy_dir(&e.path(), &root.join(&name));
        } else {
            std::os::unix::fs::symlink(e.path(), root.join(&name)).unwrap();
        }
    }
    let pkg = root.join(&damage.package);
    assert!(pkg.is_dir(), "no package {} in the cache", damage.package);
    for m in &damage.mutate {
        apply(&pkg, m);
    }
    dir.to_path_buf()
}

#[test]
fn every_bad_input_is_a_clear_error() {
    let root = tmp_dir("bad-inputs");
    let inputs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs");
    let gpt = inputs.join("files/gpt.toml");
    let mlp = inputs.join("files/mlp.toml");
    // The good run the checkpoint and generate cases start from; it fetches what it needs.
    let good = root.join("good");
    ok(&train(&gpt, &good, &[]));
    let mnist = data::datasets::fetch("mnist").unwrap();
    data::datasets::fetch_pretrained("all-minilm-l6-v2").unwrap();
    let packages = mnist.parent().unwrap().to_path_buf();
    let before = snapshot(&good);
    let fake_nosym = shared_object(&root, "nosym", "int hello(void) { return 1; }\n");
    // The PJRT_Api header (struct_size, extension_start, then the version) with major 1.
    let fake_major1 = shared_object(
        &root,
        "major1",
        r#"#include <stddef.h>
static struct { size_t struct_size; void* ext; size_t vsize; void* vext; int major; int minor; void* fns[64]; } api;
const void* GetPjrtApi(void) { api.struct_size = 40; api.vsize = 24; api.major = 1; api.minor = 3; return &api; }
"#,
    );

    let mut files: Vec<PathBuf> = std::fs::read_dir(&inputs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for file in &files {
        let category = file.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let cases: CaseFile =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        counts.push((category.clone(), cases.case.len()));
        for (i, case) in cases.case.iter().enumerate() {
            let dir = root.join(format!("{category}-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let run = if case.mutate.is_empty() {
                good.clone()
            } else {
                let run = dir.join("run");
                copy_dir(&good, &run);
                for m in &case.mutate {
                    apply(&run, m);
                }
                run
            };
            let cache = case
                .cache
                .as_ref()
                .map(|c| damaged_cache(&packages, &dir.join("cache"), c));
            let subst = |s: &str| {
                s.replace("{inputs}", inputs.to_str().unwrap())
                    .replace("{mlp}", mlp.to_str().unwrap())
                    .replace("{gpt}", gpt.to_str().unwrap())
                    .replace("{out}", dir.join("out").to_str().unwrap())
                    .replace("{run}", run.to_str().unwrap())
                    .replace("{fake_nosym}", fake_nosym.to_str().unwrap())
                    .replace("{fake_major1}", fake_major1.to_str().unwrap())
            };
            let args: Vec<String> = case.args.iter().map(|a| subst(a)).collect();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_rxla"));
            cmd.args(&args).current_dir(env!("CARGO_MANIFEST_DIR"));
            for (k, v) in &case.env {
                cmd.env(k, subst(v));
            }
            if let Some(c) = &cache {
                cmd.env("RXLA_CACHE_DIR", c);
            }
            let o = cmd.output().expect("run rxla");
            let stderr = String::from_utf8_lossy(&o.stderr);
            let what = format!("{category}: {} (rxla {})", case.name, args.join(" "));
            let problem = match o.status.code() {
                None => Some("killed by a signal".to_string()),
                Some(0) => Some("exited 0".to_string()),
                Some(_) if stderr.contains("panicked") => Some("panicked".to_string()),
                Some(_) => case
                    .expect
                    .iter()
                    .find(|e| !stderr.contains(e.as_str()))
                    .map(|e| format!("no `{e}` in the message")),
            };
            if let Some(p) = problem {
                failures.push(format!("{what}: {p}\n{stderr}"));
            }
        }
    }
    let total: usize = counts.iter().map(|c| c.1).sum();
    eprintln!("{total} bad inputs: {counts:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        before == snapshot(&good),
        "a failed command changed the good run directory"
    );
    // The good run itself still works: the corpus checked errors, not a broken setup.
    ok(&rxla(&[
        "generate",
        "--run",
        good.to_str().unwrap(),
        "--max-tokens",
        "4",
    ]));
    std::fs::remove_dir_all(&root).unwrap();
}
