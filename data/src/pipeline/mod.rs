//! The document pipeline: extract → filter → dedup → tokenize, each stage a plain function
//! over documents run by [`shard`]'s executor on shard `i` of `n` (locally, as N processes, or
//! one task per shard under a cluster scheduler). Stages read and write JSONL.zst documents
//! (`{"id", "url", "text", "metadata"}`), so they compose and re-run.

pub mod dedup;
pub mod docs;
pub mod extract;
pub mod filter;
pub mod packages;
pub mod shard;
pub mod sources;
pub mod stages;
pub mod tokenize;
pub mod wiki;

pub use docs::{read_docs, Doc, DocWriter};
pub use shard::{Report, Shard};
