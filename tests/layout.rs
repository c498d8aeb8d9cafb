//! The layout stays one-way: each crate depends only on the crates below it, and no crate's
//! top-level modules import each other in a cycle. `.ci/run` runs this first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which workspace crates each crate may depend on (`[dependencies]`):
/// `graph ← nn ← models`, `graph ← lower`, `files ← runtime`, `files ← data`, the trainer on
/// those, and the `rxla` binary on top of everything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("graph", &[]),
    ("lower", &["graph"]),
    ("files", &[]),
    ("runtime", &["files"]),
    ("nn", &["graph"]),
    ("models", &["graph", "nn"]),
    ("data", &["files"]),
    ("dist", &[]),
    (
        "train",
        &["graph", "lower", "runtime", "nn", "data", "files", "dist"],
    ),
    (
        "rxla",
        &[
            "graph", "lower", "files", "runtime", "nn", "models", "data", "train", "dist",
        ],
    ),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifest(dir: &Path) -> toml::Table {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    text.parse().unwrap()
}

/// (crate name, its directory) of every workspace member, the root package included.
fn members() -> Vec<(String, PathBuf)> {
    let ws = manifest(&root());
    let mut out = vec![("rxla".to_string(), root())];
    for m in ws["workspace"]["members"].as_array().unwrap() {
        let dir = root().join(m.as_str().unwrap());
        let name = manifest(&dir)["package"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        out.push((name, dir));
    }
    out
}

/// Workspace crates among a manifest's `[dependencies]`.
fn workspace_deps(dir: &Path, names: &BTreeSet<String>) -> BTreeSet<String> {
    manifest(dir)
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| t.keys().filter(|k| names.contains(*k)).cloned().collect())
        .unwrap_or_default()
}

/// Wrong-way or unlisted crate dependencies, as messages.
fn crate_violations(deps: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut bad = Vec::new();
    for (krate, ds) in deps {
        let Some(ok) = allowed.get(krate.as_str()) else {
            bad.push(format!(
                "crate `{krate}` is not in tests/layout.rs ALLOWED: place it in the layering"
            ));
            continue;
        };
        for d in ds {
            if !ok.contains(&d.as_str()) {
                bad.push(format!(
                    "crate `{krate}` depends on `{d}`, which is not below it (allowed: {ok:?})"
                ));
            }
        }
    }
    bad
}

/// Source text without comments (doc links name paths that are not imports) and without
/// its `#[cfg(test)]` module (tests may reach anything).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("tests.rs") {
            out.push(p);
        }
    }
}

/// Top-level modules of a crate (`src/m.rs` or `src/m/`) and the files of each.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            let mut files = Vec::new();
            rs_files(&p, &mut files);
            out.entry(stem).or_default().extend(files);
        } else if p.extension().is_some_and(|x| x == "rs")
            && !["lib", "main"].contains(&stem.as_str())
        {
            out.entry(stem).or_default().push(p);
        }
    }
    out
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Names `text` reaches through `crate::name` or `use crate::{a, b::..}`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `mycrate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // First-level names of a use group.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident_at(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(ident_at(item.trim()));
        } else {
            out.insert(ident_at(rest));
        }
    }
    out.remove("");
    out
}

/// `pub use m::{A, B}` / `pub use m::A` in a crate root: which module each name comes from.
fn reexports(root_file: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let text = code(root_file);
    for stmt in text.split(';') {
        let s = stmt.trim();
        let Some(path) = s
            .strip_prefix("pub use ")
            .or_else(|| s.strip_prefix("use "))
        else {
            continue;
        };
        let path = path.trim().trim_start_matches("crate::");
        let m = ident_at(path);
        let after = &path[m.len()..];
        let names: Vec<String> = match after.find('{') {
            Some(i) => after[i + 1..]
                .trim_end_matches('}')
                .split(',')
                .map(|n| {
                    let n = n.trim();
                    n.rsplit("::").next().unwrap_or(n).to_string()
                })
                .collect(),
            None => vec![after.rsplit("::").next().unwrap_or("").to_string()],
        };
        for n in names {
            let n = n.split(" as ").last().unwrap_or("").trim().to_string();
            if !n.is_empty() {
                out.insert(n, m.clone());
            }
        }
    }
    out
}

/// Module edges `m -> n` (m's code names top-level module n).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let root_file = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.exists());
    let re = root_file.as_deref().map(reexports).unwrap_or_default();
    let mut edges = BTreeMap::new();
    for (m, files) in &mods {
        let mut to = BTreeSet::new();
        for f in files {
            for name in crate_refs(&code(f)) {
                let target = if mods.contains_key(&name) {
                    Some(name)
                } else {
                    re.get(&name).cloned()
                };
                if let Some(t) = target.filter(|t| t != m && mods.contains_key(t)) {
                    to.insert(t);
                }
            }
        }
        edges.insert(m.clone(), to);
    }
    edges
}

/// Groups of modules that reach each other (strongly connected, more than one module),
/// each sorted; Tarjan's algorithm.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, n: &'a str) {
        let i = t.index.len();
        t.index.insert(n, i);
        t.low.insert(n, i);
        t.stack.push(n);
        t.on.insert(n);
        let edges = t.edges;
        for m in edges.get(n).into_iter().flatten() {
            let m = m.as_str();
            if !t.index.contains_key(m) {
                visit(t, m);
                let l = t.low[m].min(t.low[n]);
                t.low.insert(n, l);
            } else if t.on.contains(m) {
                let l = t.index[m].min(t.low[n]);
                t.low.insert(n, l);
            }
        }
        if t.low[n] == t.index[n] {
            let mut group = Vec::new();
            while let Some(x) = t.stack.pop() {
                t.on.remove(x);
                group.push(x.to_string());
                if x == n {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                t.out.push(group);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for n in edges.keys() {
        if !t.index.contains_key(n.as_str()) {
            visit(&mut t, n);
        }
    }
    t.out
}

#[test]
fn crates_depend_one_way() {
    let ms = members();
    let names: BTreeSet<String> = ms.iter().map(|(n, _)| n.clone()).collect();
    let deps: BTreeMap<String, BTreeSet<String>> = ms
        .iter()
        .map(|(n, d)| (n.clone(), workspace_deps(d, &names)))
        .collect();
    let bad = crate_violations(&deps);
    assert!(
        bad.is_empty(),
        "wrong-way crate dependencies:\n{}",
        bad.join("\n")
    );
}

/// The one accepted group: graph's IR core. `ir` dispatches shape and VJP rules to `ops`,
/// whose files add their builders to `Graph` (each op's rules side by side, JAX-style), and
/// autodiff, region tags and inlining are part of building graphs. The group may shrink,
/// never grow: a new module joining it fails here.
const IR_CORE: (&str, &[&str]) = (
    "graph",
    &["autodiff", "error", "ir", "op", "ops", "passes", "rewrite"],
);

#[test]
fn no_module_cycles_in_any_crate() {
    let mut bad = Vec::new();
    for (name, dir) in members() {
        let edges = module_graph(&dir.join("src"));
        for c in cycles(&edges) {
            let accepted = name == IR_CORE.0 && c.iter().all(|m| IR_CORE.1.contains(&m.as_str()));
            if !accepted {
                bad.push(format!("crate `{name}`: {}", c.join(" <-> ")));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "module import cycles (break them by moving the shared item down):\n{}",
        bad.join("\n")
    );
}

/// The checker itself: it sees use groups and re-exports, and reports a planted cycle.
#[test]
fn the_checker_finds_cycles_and_wrong_way_deps() {
    let refs = crate_refs("use crate::{a::X, b, c::{d, e}};\nlet y = crate::f::g(); mycrate::h");
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["a", "b", "c", "f"].map(String::from)
    );
    let dir = std::env::temp_dir().join(format!("rxla-layout-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("m")).unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "mod a; mod m; mod z;\npub use z::Zed;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::m::B; // crate::z in a comment\n",
    )
    .unwrap();
    std::fs::write(src.join("m/mod.rs"), "mod inner;").unwrap();
    std::fs::write(src.join("m/inner.rs"), "use crate::Zed;").unwrap();
    std::fs::write(src.join("z.rs"), "pub struct Zed;").unwrap();
    assert!(cycles(&module_graph(&src)).is_empty());
    std::fs::write(src.join("z.rs"), "pub struct Zed(crate::a::A);").unwrap();
    assert_eq!(
        cycles(&module_graph(&src)),
        vec![["a", "m", "z"].map(String::from).to_vec()],
        "a -> m -> z -> a"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let deps = BTreeMap::from([(
        "nn".to_string(),
        BTreeSet::from(["graph".to_string(), "train".to_string()]),
    )]);
    let bad = crate_violations(&deps);
    assert!(
        bad.len() == 1 && bad[0].contains("`nn` depends on `train`"),
        "{bad:?}"
    );
}
