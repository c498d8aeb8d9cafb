//! Real inputs for the pipeline that ship inside registry packages, pinned by version and
//! sha256 (fetched on first use into the cache, like [`crate::datasets`]).

use std::path::PathBuf;

use anyhow::{bail, Result};
use files::fetch::{ensure_package, PinnedPackage, Registry};

/// (name, package, path inside the unpacked package).
pub const PACKAGES: &[(&str, PinnedPackage, &str)] = &[
    (
        // 206 articles of English Wikipedia, MediaWiki XML, bz2.
        "wiki",
        PinnedPackage {
            registry: Registry::PipWheel,
            name: "gensim",
            version: "4.4.0",
            sha256: "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
        },
        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
    ),
    (
        // ~30 real news pages (html/) with their gold body text (txt/).
        "newspaper4k-pages",
        PinnedPackage {
            registry: Registry::PipSdist,
            name: "newspaper4k",
            version: "0.9.6",
            sha256: "a3f2f0e017dddb6f1019ee77aaa8980e13e6ecea0b949abc7167aae4770d2d0e",
        },
        "newspaper4k-0.9.6/tests/data",
    ),
    (
        // jusText's stop-word lists, one file per language.
        "stoplists",
        PinnedPackage {
            registry: Registry::PipSdist,
            name: "justext",
            version: "3.0.2",
            sha256: "13496a450c44c4cd5b5a75a5efcd9996066d2a189794ea99a49949685a0beb05",
        },
        "justext-3.0.2/justext/stoplists",
    ),
    (
        // An English profanity word list (one word a line).
        "bad-words",
        PinnedPackage {
            registry: Registry::PipWheel,
            name: "better-profanity",
            version: "0.7.0",
            sha256: "bd4c529ea6aa2db1aaa50524be1ed14d0fe5c664f1fd88c8bc388c7e9f9f00e8",
        },
        "better_profanity/profanity_wordlist.txt",
    ),
];

/// Fetches (first use) and returns the path of a pipeline input by name.
pub fn fetch(name: &str) -> Result<PathBuf> {
    match PACKAGES.iter().find(|(n, _, _)| *n == name) {
        Some((_, p, sub)) => {
            let path = ensure_package(p)?.join(sub);
            if !path.exists() {
                bail!("{} is missing from package {}", path.display(), p.name);
            }
            Ok(path)
        }
        None => {
            let known: Vec<&str> = PACKAGES.iter().map(|(n, _, _)| *n).collect();
            bail!(
                "unknown pipeline input `{name}`; known: {}",
                known.join(", ")
            )
        }
    }
}

/// An input path from the config: `package:NAME` is fetched, anything else is a path.
pub fn resolve(input: &str) -> Result<PathBuf> {
    match input.strip_prefix("package:") {
        Some(name) => fetch(name),
        None => Ok(PathBuf::from(input)),
    }
}
